"""Settings for tests that hand the processor files in a test folder: the processor reads local files only
inside the inbox, so the test's folder has to be it."""

from __future__ import annotations

from pathlib import Path

from stacdrop.config import Settings


def in_inbox(settings: Settings, root: Path) -> Settings:
    """The test's folder is the inbox (the processor reads local files only inside the inbox), unless the
    test chose one."""
    return settings if "inbox" in settings.model_fields_set else settings.replace(inbox=str(root))

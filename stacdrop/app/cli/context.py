"""What every ``stacdrop`` command shares: the settings loaded once per run (``Context``), output masking,
the bus and the ledger opened on demand, and the text table and ``--since`` parsing of the listing commands.

Importing this module loads no stage: commands that need one import it inside their function, so the
ledger and bus commands (``stacdrop jobs``, ``queues``) start fast.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from stacdrop.config import Settings, load_settings
from stacdrop.errors import StacdropError
from stacdrop.logs import configure_logging
from stacdrop.redact import redact_data, secrets_of
from stacdrop.times import parse_since

if TYPE_CHECKING:
    from stacdrop.bus.base import Bus
    from stacdrop.ledger import Ledger


class Context:
    def __init__(self, config: str | None) -> None:
        self.config = config
        self._settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            try:
                self._settings = load_settings(self.config)
            except StacdropError as exc:
                raise click.ClickException(str(exc)) from None
            configure_logging(self._settings.log_format, self._settings.log_level, secrets_of(self._settings))
        return self._settings

    def shown(self, data: Any) -> Any:
        """``data`` as printed for people: URL passwords, signatures and secret settings masked (the
        ledger and the bus keep what the stages need, e.g. a source URL with its credentials)."""
        return redact_data(data, secrets_of(self.settings))

    def bus(self) -> Bus:
        from stacdrop.app.components import open_bus  # noqa: PLC0415 - stages load only for commands that need them

        return open_bus(self.settings)

    def ledger(self) -> Ledger:
        from stacdrop.app.components import open_ledger  # noqa: PLC0415

        return open_ledger(self.settings)


pass_ctx = click.make_pass_decorator(Context)


def failed(exc: StacdropError) -> click.ClickException:
    """A stacdrop error as the command's failure: its message and its error class."""
    return click.ClickException(f"{exc} [{exc.error_class}]")


def parse_since_option(value: str | None) -> datetime | None:
    """``2026-11-27``, an ISO datetime, or a duration like ``30m``, ``2h``, ``7d``."""
    try:
        return parse_since(value)
    except ValueError:
        raise click.BadParameter(f"--since {value!r}: not a date, a datetime or a duration like 2h") from None


def table(rows: list[list[Any]], headers: list[str]) -> str:
    cells = [headers] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)

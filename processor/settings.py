"""What the processor is told: the sections of the settings it reads, and nothing else.

The application assembles this from ``stacdrop.config.Settings`` (stacdrop/app/components.py); the stage
never sees the whole Settings, so a test or another host can run it with exactly what it needs, and a new
setting of another component cannot change what the processor does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stacdrop.config import Collections, CollectionSettings, InboxSettings, LimitsSettings, S3Settings


@dataclass(frozen=True)
class SourceAccess:
    """What fetching a source may use: the URL policy and size limit, S3 access, and the local inbox a local
    source must lie inside (None: local sources are refused)."""

    limits: LimitsSettings = field(default_factory=LimitsSettings)
    s3: S3Settings = field(default_factory=S3Settings)
    inbox: InboxSettings | None = None


@dataclass(frozen=True)
class ProcessorSettings:
    collections: Collections = field(default_factory=lambda: Collections(CollectionSettings(), {}))
    access: SourceAccess = field(default_factory=SourceAccess)
    workers: int = 1  # processor processes on this host: more than the cores, and each conversion is single-threaded
    claim_stale_after: float = 60.0  # see stacdrop/claims.py

"""What the watcher is told: the sections of the settings its inboxes read, and nothing else.

Assembled by the application from ``stacdrop.config.Settings`` (stacdrop/app/components.py): an inbox
never sees the whole Settings (see processor/settings.py for why).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from stacdrop.config import BusSettings, Collections, CollectionSettings, InboxSettings, LimitsSettings, S3Settings


@dataclass(frozen=True)
class WatcherSettings:
    inbox: InboxSettings = field(default_factory=InboxSettings)  # settle, pairing wait, rescans
    limits: LimitsSettings = field(default_factory=LimitsSettings)  # max_sidecar_bytes
    collections: Collections = field(default_factory=lambda: Collections(CollectionSettings(), {}))  # sidecar policy
    s3: S3Settings = field(default_factory=S3Settings)  # the S3 inbox: access, event feeds, reconciler
    bus: BusSettings = field(default_factory=BusSettings)  # the default event broker and queue prefix

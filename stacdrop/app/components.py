"""The components the application runs on, opened from settings in one place: the bus, the ledger, the
store of COGs and the STAC sink. The CLI, the daemon and the API all open them here, so a new engine or a
new option is wired once; the stages receive them ready-made and never read settings to open them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from stacdrop.bus import open_bus as _open_bus
from stacdrop.bus.base import Bus
from stacdrop.config import Settings
from stacdrop.ledger import Ledger
from stacdrop.redact import secrets_of

if TYPE_CHECKING:
    from processor import ProcessorSettings, Store
    from publisher import Sink
    from watcher import WatcherSettings


def open_bus(settings: Settings) -> Bus:
    """RabbitMQ for ``amqp://`` brokers (queues under ``queue_prefix``), else the embedded SQLite bus."""
    bus = settings.bus
    if bus.url.startswith("amqp"):
        return _open_bus(bus.url, prefix=bus.queue_prefix)
    return _open_bus(bus.url, lease_seconds=bus.lease_seconds)


def open_ledger(settings: Settings) -> Ledger:
    """The job ledger; it masks the settings' secrets in every error and event it writes."""
    return Ledger(settings.ledger, secrets=secrets_of(settings))


def open_store(settings: Settings) -> Store:
    """Where COGs go: a local folder or an S3 bucket (``settings.store``)."""
    # Imported here, not above: the CLI's ledger and bus commands (stacdrop jobs, queues) open components
    # too, and loading every stage (rasterio, pystac, ...) would add ~0.6 s to each of them.
    from processor import open_store as _open_store  # noqa: PLC0415

    return _open_store(settings.store, settings.s3, public_url=settings.public_url)


def open_sink(settings: Settings, ledger: Ledger | None = None) -> Sink:
    """The STAC sink: the static catalog on disk, or a STAC API (``settings.stac``)."""
    from publisher import open_sink as _open_sink  # noqa: PLC0415 - see open_store

    return _open_sink(settings.stac, settings.stac_api, ledger)


# -- what each stage is told: its sections of the settings, never the whole Settings ----------------------


def processor_settings(settings: Settings) -> ProcessorSettings:
    from processor import ProcessorSettings, SourceAccess  # noqa: PLC0415 - see open_store

    return ProcessorSettings(
        collections=settings.collection_settings,
        access=SourceAccess(limits=settings.limits, s3=settings.s3, inbox=settings.inbox),
        workers=settings.bus.workers,
        claim_stale_after=settings.bus.claim_stale_after,
    )


def watcher_settings(settings: Settings) -> WatcherSettings:
    from watcher import WatcherSettings  # noqa: PLC0415 - see open_store

    return WatcherSettings(inbox=settings.inbox, limits=settings.limits, collections=settings.collection_settings,
                           s3=settings.s3, bus=settings.bus)

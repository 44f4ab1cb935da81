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
    from processor import Store
    from publisher import Sink


def open_bus(settings: Settings) -> Bus:
    """RabbitMQ for ``amqp://`` brokers (queues under ``queue_prefix``), else the embedded SQLite bus."""
    if settings.broker.startswith("amqp"):
        return _open_bus(settings.broker, prefix=settings.queue_prefix)
    return _open_bus(settings.broker, lease_seconds=settings.lease_seconds)


def open_ledger(settings: Settings) -> Ledger:
    """The job ledger; it masks the settings' secrets in every error and event it writes."""
    return Ledger(settings.ledger, secrets=secrets_of(settings))


def open_store(settings: Settings) -> Store:
    """Where COGs go: a local folder or an S3 bucket (``settings.store``)."""
    # Imported here, not above: the CLI's ledger and bus commands (stacdrop jobs, queues) open components
    # too, and loading every stage (rasterio, pystac, ...) would add ~0.6 s to each of them.
    from processor import open_store as _open_store  # noqa: PLC0415

    return _open_store(settings.store, settings)


def open_sink(settings: Settings, ledger: Ledger | None = None) -> Sink:
    """The STAC sink: the static catalog on disk, or a STAC API (``settings.stac``)."""
    from publisher import open_sink as _open_sink  # noqa: PLC0415 - see open_store

    return _open_sink(settings, ledger)

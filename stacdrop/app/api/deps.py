"""What every route shares: the settings, the ledger, the bus and the intake, opened once per app.

``create_app`` opens an ``ApiState`` in its lifespan and closes it at shutdown; routes (and the metrics
and status-page routers) take it with ``Depends(get_state)``. Both buses and the ledger are safe to use
from FastAPI's worker threads: SQLite and the RabbitMQ publisher serialise on a lock, the RabbitMQ admin
calls (stats, dead letters, replay) open a connection per call.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from fastapi import Request

from stacdrop.app import components
from stacdrop.bus.base import Bus
from stacdrop.config import Settings
from stacdrop.errors import StacdropError
from stacdrop.intake import Intake
from stacdrop.ledger import Ledger

if TYPE_CHECKING:
    from publisher import Sink

log = structlog.get_logger("stacdrop.app.api")


@dataclass
class ApiState:
    settings: Settings
    ledger: Ledger
    bus: Bus
    intake: Intake
    _sink: Any = None
    _sink_lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def open(cls, settings: Settings) -> "ApiState":
        ledger = components.open_ledger(settings)
        bus = components.open_bus(settings)
        try:
            bus.setup()  # idempotent; the API may start before any daemon declared the queues
        except StacdropError:
            bus.close()
            ledger.close()
            raise  # a configuration error (e.g. a topology with other arguments): do not start
        except Exception as exc:  # noqa: BLE001 - a broker that is down now: /readyz says so, publish sets up later
            log.warning("broker unreachable at start; /readyz reports it until it is back", error=type(exc).__name__)
        return cls(settings=settings, ledger=ledger, bus=bus, intake=Intake(ledger, bus))

    def sink(self) -> "Sink":
        """The STAC sink, opened on first use (submissions ask it whether a collection exists)."""
        with self._sink_lock:
            if self._sink is None:
                self._sink = components.open_sink(self.settings)
            return self._sink

    def close(self) -> None:
        if self._sink is not None:
            self._sink.close()
        self.bus.close()
        self.ledger.close()


def get_state(request: Request) -> ApiState:
    return request.app.state.stacdrop


def get_settings(request: Request) -> Settings:
    return request.app.state.settings

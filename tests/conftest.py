"""Shared fixtures. Keep this file small and generic; service helpers live in tests/support/services.py."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from stacdrop.bus import open_bus
from stacdrop.bus.base import Bus
from stacdrop.ledger import Ledger
from tests.support.daemon import base_env
from tests.support.http_server import FileServer
from tests.support.rasters import write_geotiff
from tests.support.rgw import RgwEndpoint, ensure_rgw
from tests.support.services import (
    MotoServer,
    ServiceUnavailable,
    delete_rabbit_prefix,
    ensure_postgres,
    ensure_rabbitmq,
    unique_prefix,
)


E2E_DIR = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/e2e/ is slow (whole daemons as subprocesses): mark it ``e2e`` so the fast
    subset (``-m "not e2e"``) leaves it out even when a new module forgets ``pytestmark``. Tests elsewhere
    keep their own marks."""
    for item in items:
        if item.path.is_relative_to(E2E_DIR):
            item.add_marker(pytest.mark.e2e)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    """Under ``make test`` (STACDROP_REQUIRE_SERVICES=1) every service was installed and started first, so a
    test that skips for a missing service is a broken harness: report it as a failure, never a silent skip."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("STACDROP_REQUIRE_SERVICES") and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, but make test installs and starts every service: {reason}"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FileServer]:
    """A file server on 127.0.0.1 (named localhost) holding a small valid GeoTIFF, ok.tif."""
    root = tmp_path_factory.mktemp("www")
    write_geotiff(root / "ok.tif", width=16, height=16)
    with FileServer(root) as server:
        yield server


@pytest.fixture(scope="session")
def rabbit_url() -> str:
    """amqp:// URL of the local RabbitMQ, started if it is down (skip if it is not installed)."""
    try:
        return ensure_rabbitmq()
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """libpq DSN of the local PostgreSQL superuser, started if it is down (skip if it is not installed)."""
    try:
        return ensure_postgres()
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """A ``moto_server`` (S3 over HTTP, in memory) of this test session on a free 127.0.0.1 port, stopped
    at the end. Any credentials work; region us-east-1. Use unique bucket names per test."""
    try:
        server = MotoServer().start()
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def moto_url(moto_server: MotoServer) -> str:
    """Endpoint URL (``http://127.0.0.1:PORT``) of the session's moto server, for ``AWS_ENDPOINT_URL``."""
    return moto_server.url


@pytest.fixture(scope="session")
def rgw() -> RgwEndpoint:
    """The local Ceph RGW (scripts/ceph-rgw.sh; started if it is down, skip if Ceph is not installed): its
    ``url`` and the test user's ``access_key``/``secret_key``, region "default". Shared by every test and
    by other sessions on the machine: unique bucket and topic names (tests/support/rgw.py unique_name)."""
    try:
        return ensure_rgw()
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def stac_server(postgres_dsn: str) -> Iterator[Any]:
    """A real stac-fastapi-pgstac (tests/support/stac_api.py) on a fresh, migrated database, for the session.
    Mounts: ``url`` (plain), ``url + "/stac"`` (prefix), ``url + "/auth"`` (writes need the token)."""
    from tests.support.stac_api import StacApiServer, check_available

    try:
        check_available(postgres_dsn)
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))
    server = StacApiServer(postgres_dsn).create()
    try:
        server.start()
        yield server
    finally:
        server.drop()


@pytest.fixture(scope="session")
def stac_api_url(stac_server: Any) -> str:
    """URL of the session's stac-fastapi-pgstac (transactions enabled)."""
    return stac_server.url


@dataclass
class BusSpec:
    """How to open (again) the bus of one test: same URL and options give the same queues."""

    engine: str
    url: str
    options: dict[str, Any]
    opened: list[Bus] = field(default_factory=list)

    def open(self, *, liveness: float | None = None, **overrides: Any) -> Bus:
        """A new bus instance on the same queues. ``liveness`` = the engine's keep-alive period
        (RabbitMQ heartbeat, SQLite lease), for tests of handlers that outlive it."""
        options = {**self.options, **overrides}
        if liveness is not None:
            options["heartbeat" if self.engine == "rabbitmq" else "lease_seconds"] = liveness
        bus = open_bus(self.url, **options)
        bus.setup()
        self.opened.append(bus)
        return bus

    def close_all(self) -> None:
        for bus in self.opened:
            bus.close()


@pytest.fixture(params=["sqlite", pytest.param("rabbitmq", marks=pytest.mark.rabbitmq)])
def bus_spec(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BusSpec]:
    if request.param == "sqlite":
        spec = BusSpec("sqlite", f"sqlite:///{tmp_path}/queue.db", {})
        yield spec
        spec.close_all()
        return
    url = request.getfixturevalue("rabbit_url")
    prefix = unique_prefix()
    spec = BusSpec("rabbitmq", url, {"prefix": prefix})
    yield spec
    spec.close_all()
    delete_rabbit_prefix(url, prefix)


@pytest.fixture
def bus(bus_spec: BusSpec) -> Bus:
    """A fresh, empty bus of each engine."""
    return bus_spec.open()


PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(params=["sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest, tmp_path) -> Iterator[Ledger]:
    """A fresh ledger on each engine: SQLite in tmp_path, and PostgreSQL in a database of its own."""
    if request.param == "sqlite":
        led = Ledger(f"sqlite:///{tmp_path}/ledger.db")
        yield led
        led.close()
        return
    ensure_postgres()
    admin_url = PG_ADMIN_URL
    name = f"ledger_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(admin_url.replace("postgresql://", "postgresql+psycopg://"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    led = Ledger(admin_url.rsplit("/", 1)[0] + f"/{name}")
    yield led
    led.close()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def pg_ledger_url() -> Iterator[str]:
    """URL of a fresh PostgreSQL database for a ledger, dropped afterwards."""
    ensure_postgres()
    name = f"stacdrop_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(PG_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://"),
                             isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield f"postgresql://postgres@127.0.0.1:5432/{name}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def rabbit_env(tmp_path: Path, rabbit_url: str, pg_ledger_url: str) -> Iterator[dict[str, str]]:
    """A daemon environment on RabbitMQ (queues under a unique prefix, deleted afterwards) with a
    PostgreSQL ledger."""
    prefix = unique_prefix("e2e")
    env = base_env(tmp_path, STACDROP_BROKER=rabbit_url, STACDROP_QUEUE_PREFIX=prefix,
                   STACDROP_LEDGER=pg_ledger_url)
    yield env
    delete_rabbit_prefix(rabbit_url, prefix)


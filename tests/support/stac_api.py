"""A real stac-fastapi-pgstac for tests: a fresh database, ``pypgstac migrate``, uvicorn on a free port.

``StacApiServer(admin_dsn).create()`` makes the database ``stacdrop_stac_<random>`` and migrates it;
``start()`` runs ``uvicorn tests.support.stac_asgi:make_app --factory`` (transactions on, settings only through
PG* variables, in a temp working directory so no stray ``.env`` is read) and waits for ``/_mgmt/ping``;
``stop()`` terminates it (the database stays: ``start()`` again is an API restart); ``drop()`` removes the
database. Needs PostgreSQL with PostGIS (``scripts/services.sh`` installs it) and the ``test`` extra.
"""

from __future__ import annotations

import importlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

from tests.support.services import ServiceUnavailable, free_port

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "test-token-s3cr3t"


def _dsn_parts(dsn: str) -> dict[str, str]:
    import psycopg

    info = psycopg.conninfo.conninfo_to_dict(dsn)
    return {k: str(v) for k, v in info.items() if v is not None}


def check_available(admin_dsn: str) -> None:
    """Raise ServiceUnavailable when stac-fastapi-pgstac, pypgstac or PostGIS are missing."""
    try:
        for module in ("pypgstac", "stac_fastapi.pgstac"):  # importable, not only present on the path
            importlib.import_module(module)
    except ImportError as exc:
        raise ServiceUnavailable(
            f"stac-fastapi-pgstac / pypgstac not installed ({exc}): pip install -e '.[test]'"
        ) from exc
    import psycopg

    with psycopg.connect(admin_dsn, connect_timeout=3) as conn:
        row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'").fetchone()
    if row is None:
        raise ServiceUnavailable("PostGIS is not installed for this PostgreSQL (bash scripts/services.sh installs it)")


class StacApiServer:
    def __init__(self, admin_dsn: str, *, port: int | None = None) -> None:
        self.admin_dsn = admin_dsn
        self.parts = _dsn_parts(admin_dsn)
        self.dbname = f"stacdrop_stac_{uuid.uuid4().hex[:10]}"
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir = Path(tempfile.mkdtemp(prefix="stacdrop-stac-api-"))
        self.starts = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def dsn(self) -> str:
        p = self.parts
        user = p.get("user", "postgres")
        pw = f":{p['password']}" if p.get("password") else ""
        return f"postgresql://{user}{pw}@{p.get('host', '127.0.0.1')}:{p.get('port', '5432')}/{self.dbname}"

    def create(self) -> "StacApiServer":
        import psycopg

        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.dbname}"')
        pypgstac = shutil.which("pypgstac", path=str(Path(sys.executable).parent)) or "pypgstac"
        # pgstac's roles are server-wide: two migrations at once (overlapping test runs) can fail with
        # "tuple concurrently updated", so they take turns on a lock of this PostgreSQL server.
        with psycopg.connect(self.admin_dsn, autocommit=True) as lock:
            lock.execute("SELECT pg_advisory_lock(4242002)")
            out = subprocess.run([pypgstac, "migrate", "--dsn", self.dsn], capture_output=True, text=True,
                                 timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"pypgstac migrate failed: {out.stderr[-2000:]}")
        return self

    def env(self) -> dict[str, str]:
        p = self.parts
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "POSTGRES_", "STACDROP_"))}
        env.update(
            PGUSER=p.get("user", "postgres"), PGPASSWORD=p.get("password", "unused"),
            PGHOST=p.get("host", "127.0.0.1"), PGPORT=p.get("port", "5432"), PGDATABASE=self.dbname,
            ENABLE_TRANSACTIONS_EXTENSIONS="true", STAC_TEST_TOKEN=TOKEN,
            PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        )
        return env

    @property
    def log_path(self) -> Path:
        return self.workdir / f"uvicorn-{self.starts}.log"

    def start(self, timeout: float = 60) -> "StacApiServer":
        self.starts += 1
        log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "tests.support.stac_asgi:make_app", "--factory", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "warning"],
            env=self.env(), cwd=self.workdir, stdout=log, stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"stac-fastapi-pgstac exited at start:\n{self.log_path.read_text()[-3000:]}")
            try:
                if requests.get(f"{self.url}/_mgmt/ping", timeout=2).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"stac-fastapi-pgstac did not answer /_mgmt/ping within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def drop(self) -> None:
        import psycopg

        self.stop()
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.dbname}" WITH (FORCE)')
        shutil.rmtree(self.workdir, ignore_errors=True)

    def requests_seen(self, clear: bool = False) -> list[list]:
        resp = requests.request("DELETE" if clear else "GET", f"{self.url}/_test/requests", timeout=5)
        return resp.json()

"""Real services for tests: start them when they are down, and keep tests out of each other's way.

``ensure_rabbitmq()`` / ``ensure_postgres()`` connect, start the local server if the connection is
refused, wait until it accepts connections and return the URL/DSN. If the server is not installed on
this machine they raise ``ServiceUnavailable`` (fixtures turn that into a skip); if it is installed but
does not come up, that is a failure.

Isolation: RabbitMQ tests use a unique ``prefix`` per test (``unique_prefix()``): every exchange and
queue of a ``RabbitBus`` starts with it, so tests never see each other's messages, and
``delete_rabbit_prefix()`` removes them afterwards.

S3: ``MotoServer`` runs one ``moto_server`` (in-memory S3 over HTTP) on a free port; the session fixture
``moto_url`` owns one for the whole run. Use unique bucket names per test.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.parse
import uuid

RABBIT_URL = os.environ.get("STACDROP_TEST_AMQP", "amqp://guest:guest@127.0.0.1:5672/%2F")
PG_DSN = os.environ.get("STACDROP_TEST_PG", "host=127.0.0.1 port=5432 user=postgres dbname=postgres")
START_TIMEOUT = 120.0


class ServiceUnavailable(RuntimeError):
    """The service is down and cannot be started on this machine."""


def _wait_for(check, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            check()
            return
        except Exception as exc:  # noqa: BLE001 - keep trying until the deadline
            last = exc
            time.sleep(1.0)
    raise RuntimeError(f"{what} did not accept connections within {timeout:.0f} s: {last!r}")


# -- RabbitMQ -----------------------------------------------------------------------------------------


def _amqp_check(url: str) -> None:
    import pika

    params = pika.URLParameters(url)
    params.connection_attempts = 1
    params.socket_timeout = 3
    pika.BlockingConnection(params).close()


def ensure_rabbitmq(url: str = RABBIT_URL, timeout: float = START_TIMEOUT) -> str:
    try:
        _amqp_check(url)
        return url
    except Exception:  # noqa: BLE001 - down (or starting): try to start it
        pass
    if shutil.which("rabbitmq-server") is None:
        raise ServiceUnavailable("RabbitMQ is not reachable and rabbitmq-server is not installed")
    subprocess.run(["rabbitmq-server", "-detached"], capture_output=True, timeout=60, check=False)
    _wait_for(lambda: _amqp_check(url), "RabbitMQ", timeout)
    return url


def unique_prefix(name: str = "t") -> str:
    """A fresh RabbitMQ name prefix (exchange and queues) for one test."""
    return f"stacdrop-test-{name}-{uuid.uuid4().hex[:10]}"


def delete_rabbit_prefix(url: str, prefix: str, queues: tuple[str, ...] | None = None) -> None:
    """Delete the topology of ``prefix`` and, through the management API when it is up, any leftover
    ``prefix.*`` queue (claim queues also expire by themselves after a few minutes)."""
    from stacdrop.bus.rabbitmq import RabbitBus
    from stacdrop.messages import QUEUES

    RabbitBus(url, prefix=prefix, queues=queues or QUEUES).delete_topology()
    try:
        import requests

        parsed = urllib.parse.urlsplit(url)
        auth = (urllib.parse.unquote(parsed.username or "guest"), urllib.parse.unquote(parsed.password or "guest"))
        vhost = urllib.parse.quote(urllib.parse.unquote(parsed.path[1:]) or "/", safe="")
        base = f"http://{parsed.hostname}:15672/api/queues/{vhost}"
        resp = requests.get(base, params={"page": 1, "page_size": 500, "name": f"^{prefix}\\.", "use_regex": "true"},
                            auth=auth, timeout=3)
        resp.raise_for_status()
        for item in resp.json().get("items", []):
            requests.delete(f"{base}/{urllib.parse.quote(item['name'], safe='')}", auth=auth, timeout=3)
    except Exception:  # noqa: BLE001 - the management plugin is optional
        pass


# -- PostgreSQL ---------------------------------------------------------------------------------------


def _pg_check(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, connect_timeout=3) as conn:
        conn.execute("SELECT 1")


def ensure_postgres(dsn: str = PG_DSN, timeout: float = START_TIMEOUT) -> str:
    try:
        _pg_check(dsn)
        return dsn
    except Exception:  # noqa: BLE001 - down: try to start it
        pass
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions or shutil.which("pg_ctlcluster") is None:
        raise ServiceUnavailable("PostgreSQL is not reachable and no local cluster is installed")
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
                   capture_output=True, timeout=60, check=False)
    _wait_for(lambda: _pg_check(dsn), "PostgreSQL", timeout)
    return dsn


# -- S3: moto server ------------------------------------------------------------------------------------

MOTO_URL = os.environ.get("STACDROP_TEST_S3", "http://127.0.0.1:9000")


def _http_check(url: str) -> None:
    import urllib.request

    with urllib.request.urlopen(url.rstrip("/") + "/moto-api/", timeout=3) as resp:  # loopback
        resp.read(1)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MotoServer:
    """One ``moto_server`` process on 127.0.0.1: ``start()``, ``stop()`` (state is lost: moto keeps it in
    memory), ``start()`` again on the same port. ``url`` is the endpoint for ``AWS_ENDPOINT_URL``."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> "MotoServer":
        # The venv's own moto_server first (pyproject's test extras install it), then one on PATH.
        exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
        if not os.path.exists(exe):
            exe = shutil.which("moto_server") or exe
        if not os.path.exists(exe):
            raise ServiceUnavailable("moto_server is not installed (pip install 'moto[server]')")
        self.proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(self.port)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        try:
            _wait_for(lambda: self._check(), "moto_server", timeout)
        except RuntimeError:
            self.stop()
            raise
        return self

    def _check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ServiceUnavailable(f"moto_server exited with {self.proc.returncode}")
        _http_check(self.url)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None

    def reset(self) -> None:
        """Forget every bucket and object."""
        import urllib.request

        req = urllib.request.Request(self.url + "/moto-api/reset", method="POST")
        urllib.request.urlopen(req, timeout=5).read()  # loopback


def ensure_moto(url: str = MOTO_URL, timeout: float = 30.0) -> str:
    """The URL of a moto server on ``url`` (default 127.0.0.1:9000), started (and left running) when the
    port is closed. Tests prefer the ``moto_url`` fixture, which owns and stops its server."""
    try:
        _http_check(url)
        return url
    except Exception:  # noqa: BLE001 - down: start it
        pass
    port = urllib.parse.urlsplit(url).port or 9000
    MotoServer(port).start(timeout)
    return url

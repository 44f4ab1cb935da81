"""The deployment files, validated without Docker.

- ``docker-compose config`` (Debian's docker-compose 1.29) accepts docker-compose.yml with a ``.env`` made
  from ``.env.example``, which documents exactly the variables the compose file uses; ``hadolint`` finds
  nothing in the Dockerfile.
- The drift test: the compose file, resolved by ``docker-compose config`` from a ``.env`` (``.env.example``
  with this test's unique names), is run service by service on the harness's loopback services. Each
  stacdrop service's ``command`` runs as ``.venv/bin/stacdrop <command>`` with that service's
  ``environment``; host names are mapped: rabbitmq -> the local RabbitMQ, postgres -> the local PostgreSQL
  (the ledger database created by the postgres service's own init script), minio -> a moto server,
  stac-api -> stac-fastapi-pgstac started with the stac-api service's command and environment, nginx ->
  Debian's nginx with the same template rendered by envsubst. Credentials in those URLs become the
  harness's (its RabbitMQ is guest/guest, its PostgreSQL trusts ``postgres``). One GeoTIFF + sidecar
  dropped into the inbox bucket must come out searchable through nginx's ``/stac/``; the processor runs
  twice (``--scale processor=2``).
  MinIO itself is not run (no binary on PyPI or Debian): minio-init's buckets are made with boto3, and the
  test plays MinIO's notification target, publishing MinIO-format events to the exchange, exchange type
  and routing key of the minio service's ``MINIO_NOTIFY_AMQP_*_STACDROP`` environment (declaring the
  exchange as MinIO does first, so a mismatch with the watcher's declaration fails). The collection.json is
  in the bucket before the stack starts and is found by the watcher's start-up reconcile (backfill);
  RECONCILE_INTERVAL=3600 in the test's .env keeps later passes out of the test, so the raster can only
  arrive through the event.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pika
import psycopg
import pytest
import requests
import yaml

from tests.support.daemon import wait_until, write_collection, write_sidecar
from tests.support.rasters import write_geotiff
from tests.support.services import delete_rabbit_prefix, free_port
from tests.support.s3_events import declared, minio_event, publish

pytestmark = pytest.mark.e2e  # slow: daemons, servers or many rasters (the fast suite is -m 'not e2e')

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DOCKERFILE = ROOT / "Dockerfile"
NGINX_TEMPLATE = ROOT / "deploy" / "nginx" / "templates" / "default.conf.template"
LEDGER_INIT = ROOT / "deploy" / "postgres" / "10-stacdrop-ledger.sh"
BIN = Path(sys.executable).parent
STACDROP_SERVICES = ("watcher", "processor", "publisher", "api")
WRITE_TOKEN = "Wr1te-t0ken-" + uuid.uuid4().hex


# -- compose and .env -----------------------------------------------------------------------------------
def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a compose .env file (comments and blank lines skipped)."""
    values = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        assert "=" in line, f"{path}:{number}: not KEY=VALUE: {line!r}"
        key, value = line.split("=", 1)
        values[key.strip()] = value
    return values


def docker_compose() -> str:
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.skip("docker-compose is not installed (bash scripts/services.sh installs Debian's package)")
    return exe


def compose(env_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """docker-compose on the repository's compose file with ``env_file`` as its .env. The process
    environment is emptied (PATH only): compose lets it override .env, and the test must see .env alone."""
    return subprocess.run(
        [docker_compose(), "--project-directory", str(ROOT), "--env-file", str(env_file), "-f", str(COMPOSE), *args],
        capture_output=True, text=True, timeout=120, env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        check=False,
    )


def write_env(path: Path, **overrides: str) -> Path:
    """A .env: .env.example with ``overrides`` (every key must exist in .env.example)."""
    values = read_env_file(ENV_EXAMPLE)
    unknown = set(overrides) - set(values)
    assert not unknown, f"not in .env.example: {sorted(unknown)}"
    values.update(overrides)
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    return path


def resolved_config(env_file: Path) -> dict[str, Any]:
    """The compose file as compose resolves it (variables, defaults, YAML merges), read with pyyaml."""
    out = compose(env_file, "config")
    assert out.returncode == 0, f"docker-compose config failed:\n{out.stderr}"
    return yaml.safe_load(out.stdout)


def test_compose_config_accepts_the_example_env(tmp_path: Path) -> None:
    env_file = write_env(tmp_path / ".env")
    out = compose(env_file, "config", "-q")
    assert out.returncode == 0, out.stderr
    assert "WARNING" not in out.stderr, out.stderr


def test_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    values = read_env_file(ENV_EXAMPLE)
    del values["STAC_WRITE_TOKEN"]
    env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    out = compose(env_file, "config", "-q")
    assert out.returncode != 0
    assert "STAC_WRITE_TOKEN" in out.stderr


def compose_variables(text: str) -> set[str]:
    text = text.replace("$$", "")  # an escaped dollar is for the container's shell, not for compose
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text)) | set(re.findall(r"\$([A-Za-z_][A-Za-z0-9_]*)", text))


def test_env_example_documents_exactly_the_compose_variables() -> None:
    used = compose_variables(COMPOSE.read_text())
    documented = set(read_env_file(ENV_EXAMPLE))
    assert used - documented == set(), "used in docker-compose.yml, missing from .env.example"
    assert documented - used == set(), "in .env.example, used nowhere in docker-compose.yml"
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):  # every variable has a comment above it (or is in a commented group)
        if line and not line.startswith("#"):
            above = [prev for prev in lines[:i] if prev.startswith("#")]
            assert above, f".env.example: {line.split('=')[0]} has no explanation"


def test_processor_is_scalable_and_every_stage_runs_the_one_image(tmp_path: Path) -> None:
    config = resolved_config(write_env(tmp_path / ".env"))
    services = config["services"]
    processor = services["processor"]
    assert "container_name" not in processor and "ports" not in processor, "--scale processor=N needs neither"
    images = {services[name]["image"] for name in (*STACDROP_SERVICES, "backup")}
    assert images == {"stacdrop:latest"}
    assert all(services[name]["build"]["context"] == str(ROOT) for name in STACDROP_SERVICES)
    stac = services["stac-api"]["environment"]
    assert stac["ENABLE_TRANSACTIONS_EXTENSIONS"] == "true"
    assert {"PGUSER", "PGPASSWORD", "PGHOST", "PGPORT", "PGDATABASE"} <= set(stac)


def test_dockerfile_passes_hadolint() -> None:
    hadolint = BIN / "hadolint"
    if not hadolint.exists():
        pytest.skip("hadolint is not installed: pip install -e '.[test]'")
    out = subprocess.run([str(hadolint), "--config", str(ROOT / ".hadolint.yaml"), str(DOCKERFILE)],
                         capture_output=True, text=True, timeout=60, cwd=ROOT, check=False)
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")
    text = DOCKERFILE.read_text()
    assert re.search(r'^ENTRYPOINT \["stacdrop"\]$', text, re.M)
    assert re.search(r"^USER 10001", text, re.M), "the image runs as a non-root user"
    assert "org.opencontainers.image.title" in text


def test_image_build_context_holds_every_package() -> None:
    """The Dockerfile copies, and .dockerignore lets through, exactly the packages pyproject.toml installs
    (a new top-level package must reach the image), plus the two files the build reads."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = set(re.findall(r"^COPY (\S+) \./\S+$", DOCKERFILE.read_text(), re.M))
    assert copied == packages
    assert re.search(r"^COPY pyproject\.toml README\.md \./$", DOCKERFILE.read_text(), re.M)
    allowed = {line[1:].rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.startswith("!")}
    assert allowed == packages | {"pyproject.toml", "README.md"}


def dockerfile_healthcheck() -> list[str]:
    match = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])$", DOCKERFILE.read_text(), re.M)
    assert match, "Dockerfile has no exec-form HEALTHCHECK"
    return json.loads(match.group(1))


# -- the drift test ---------------------------------------------------------------------------------------
@dataclass
class Endpoint:
    """Where a compose service's host name points in the test: ``netloc`` replaces the URL authority."""

    host: str
    port: int
    user: str | None = None
    password: str | None = None

    @property
    def netloc(self) -> str:
        creds = ""
        if self.user:
            creds = urllib.parse.quote(self.user, safe="")
            if self.password:
                creds += ":" + urllib.parse.quote(self.password, safe="")
            creds += "@"
        return f"{creds}{self.host}:{self.port}"


@dataclass
class Mapping:
    """Compose service host names -> loopback endpoints; a service's mounted paths -> host paths (a named
    volume -> a directory of that name under ``volume_root``)."""

    endpoints: dict[str, Endpoint]
    volume_root: Path

    def value(self, value: str, paths: dict[str, str]) -> str:
        value = value.replace("$$", "$")  # compose's escape, as the container sees it
        if "://" in value:
            parts = urllib.parse.urlsplit(value)
            endpoint = self.endpoints.get(parts.hostname or "")
            if endpoint is not None:
                value = urllib.parse.urlunsplit(parts._replace(netloc=endpoint.netloc))
        elif re.fullmatch(r"[a-z][a-z0-9-]*:\d+", value) and value.split(":")[0] in self.endpoints:
            endpoint = self.endpoints[value.split(":")[0]]  # an upstream host:port (nginx)
            value = f"{endpoint.host}:{endpoint.port}"
        for container_path, host_path in paths.items():
            if value == container_path or value.startswith(container_path + "/"):
                value = host_path + value[len(container_path):]
        return value

    def environment(self, service: dict[str, Any]) -> dict[str, str]:
        paths = volume_paths(service, self.volume_root)
        env = {k: self.value(str(v), paths) for k, v in (service.get("environment") or {}).items()}
        pg = self.endpoints.get(env.get("PGHOST", ""))
        if pg is not None:  # libpq settings split over variables (stac-fastapi-pgstac)
            env.update(PGHOST=pg.host, PGPORT=str(pg.port), PGUSER=pg.user or "postgres", PGPASSWORD=pg.password or "")
        for key, value in env.items():
            if "://" in value:
                host = urllib.parse.urlsplit(value).hostname
                assert host not in self.endpoints, f"{key}={value}: host {host} was not mapped"
        return env


def volume_paths(service: dict[str, Any], volume_root: Path) -> dict[str, str]:
    """Mounts of a service: container path -> host path (bind mounts) or ``volume_root/<name>`` (volumes)."""
    paths = {}
    for volume in service.get("volumes") or []:
        parts = volume.split(":") if isinstance(volume, str) else [volume.get("source"), volume.get("target")]
        if parts[0] and parts[0].startswith("/"):
            paths[parts[1]] = parts[0]
        elif parts[0]:
            (volume_root / parts[0]).mkdir(parents=True, exist_ok=True)
            paths[parts[1]] = str(volume_root / parts[0])
    return paths


def process_env(service_env: dict[str, str]) -> dict[str, str]:
    """The service's environment over a clean base: nothing of ours (STACDROP_*, AWS_*, PG*) leaks in."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("STACDROP_", "AWS_", "PG", "ARBUTUS_"))}
    base.pop("AUTHORIZATION_TOKEN_STAC", None)
    return {**base, **service_env}


def with_listen(command: list[str], host: str, port: int) -> list[str]:
    """``command`` with its ``--host``/``--port`` values replaced (a container listens on 0.0.0.0:N)."""
    out = list(command)
    for flag, value in (("--host", host), ("--port", str(port))):
        assert flag in out, f"{command}: no {flag}"
        out[out.index(flag) + 1] = value
    return out


class Proc:
    """One service of the stack as a subprocess, its output in ``<root>/<name>.log``."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, root: Path,
                 group: bool = False) -> None:
        self.name = name
        self.log = root / f"{name}.log"
        self.group = group  # a shell loop: stop its children (sleep) too
        cwd.mkdir(parents=True, exist_ok=True)
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=group)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self) -> str:
        return f"--- {self.name} (exit {self.proc.poll()}) ---\n" + self.log.read_text(errors="replace")[-3000:]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.group:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
        elif self.proc.poll() is None:
            self.proc.send_signal(sig)
        if self.proc.poll() is None:
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@dataclass
class Stack:
    config: dict[str, Any]
    mapping: Mapping
    env: dict[str, str]
    procs: dict[str, Proc]
    nginx_url: str
    s3: Any

    def logs(self) -> str:
        return "\n".join(p.tail() for p in self.procs.values())

    def check_alive(self) -> None:
        dead = [p for p in self.procs.values() if not p.alive()]
        assert not dead, "a service exited:\n" + "\n".join(p.tail() for p in dead)

    def wait(self, predicate: Any, timeout: float, what: str) -> Any:
        def check() -> Any:
            self.check_alive()
            return predicate()

        try:
            return wait_until(check, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.logs()}") from None


def render_nginx(template: Path, env: dict[str, str], out_dir: Path) -> Path:
    """What the nginx image does at start: envsubst over the template with only the variables that are
    set in the container's environment (nginx's own $variables stay)."""
    names = " ".join(f"${{{name}}}" for name in env)
    out = subprocess.run(["envsubst", names], input=template.read_text(), capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=30, check=True)
    conf_d = out_dir / "conf.d"
    conf_d.mkdir(parents=True, exist_ok=True)
    (conf_d / template.name.removesuffix(".template")).write_text(out.stdout)
    main = out_dir / "nginx.conf"
    user = "user root root;\n" if os.geteuid() == 0 else ""
    temp = "\n".join(f"    {kind}_temp_path {out_dir / kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    main.write_text(
        f"{user}daemon off;\npid {out_dir / 'nginx.pid'};\nerror_log {out_dir / 'error.log'} warn;\n"
        f"events {{ worker_connections 256; }}\nhttp {{\n    access_log {out_dir / 'access.log'};\n{temp}\n"
        f"    include {conf_d}/*.conf;\n}}\n"
    )
    return main


@pytest.fixture
def stack(tmp_path: Path, rabbit_url: str, postgres_dsn: str, moto_url: str) -> Iterator[Stack]:
    from tests.support.stac_api import StacApiServer, check_available
    from tests.support.services import ServiceUnavailable

    if shutil.which("nginx") is None:
        pytest.skip("nginx is not installed (bash scripts/services.sh installs Debian's package)")
    try:
        check_available(postgres_dsn)
    except ServiceUnavailable as exc:
        pytest.skip(str(exc))

    unique = uuid.uuid4().hex[:10]
    catalog = StacApiServer(postgres_dsn).create()  # what the pgstac image's init does: a migrated database
    prefix = f"stacdrop-test-deploy-{unique}"
    procs: dict[str, Proc] = {}
    try:
        env_file = write_env(
            tmp_path / ".env",
            STACDROP_QUEUE_PREFIX=prefix, S3_EVENTS_EXCHANGE=f"{prefix}-s3-events",
            INBOX_BUCKET=f"inbox-{unique}", COG_BUCKET=f"cogs-{unique}", STACDROP_LEDGER_DB=f"stacdrop_deploy_{unique}",
            POSTGRES_DB=catalog.dbname, STAC_WRITE_TOKEN=WRITE_TOKEN,
            RECONCILE_INTERVAL="3600",  # the start-up pass only: the raster must come through its bucket event
        )
        config = resolved_config(env_file)
        services = config["services"]

        amqp = urllib.parse.urlsplit(rabbit_url)
        pg = psycopg.conninfo.conninfo_to_dict(postgres_dsn)
        moto = urllib.parse.urlsplit(moto_url)
        ports = {name: free_port() for name in ("stac-api", "api", "nginx")}
        mapping = Mapping({
            "rabbitmq": Endpoint(amqp.hostname or "127.0.0.1", amqp.port or 5672,
                                 urllib.parse.unquote(amqp.username or ""), urllib.parse.unquote(amqp.password or "")),
            "postgres": Endpoint(str(pg.get("host", "127.0.0.1")), int(pg.get("port", 5432)),
                                 str(pg.get("user", "postgres")), str(pg["password"]) if pg.get("password") else None),
            "minio": Endpoint(moto.hostname or "127.0.0.1", moto.port or 80),
            "stac-api": Endpoint("127.0.0.1", ports["stac-api"]),
            "api": Endpoint("127.0.0.1", ports["api"]),
            "nginx": Endpoint("127.0.0.1", ports["nginx"]),
        }, volume_root=tmp_path / "volumes")
        env = {name: mapping.environment(service) for name, service in services.items()}
        assert amqp.path == "/%2F" and urllib.parse.urlsplit(env["watcher"]["STACDROP_BROKER"]).path == amqp.path

        # postgres: its init script creates the ledger database
        pg_env = env["postgres"]
        subprocess.run(["bash", str(LEDGER_INIT)], check=True, capture_output=True, timeout=60, env={
            **process_env({}), "POSTGRES_USER": mapping.endpoints["postgres"].user or "postgres",
            "STACDROP_LEDGER_DB": pg_env["STACDROP_LEDGER_DB"], "PGHOST": mapping.endpoints["postgres"].host,
            "PGPORT": str(mapping.endpoints["postgres"].port)})
        # minio-init: the two buckets (on moto)
        init = env["minio-init"]
        s3 = boto3.client("s3", endpoint_url=moto_url, aws_access_key_id=init["MINIO_ROOT_USER"],
                          aws_secret_access_key=init["MINIO_ROOT_PASSWORD"], region_name="us-east-1")
        for bucket in (init["INBOX_BUCKET"], init["COG_BUCKET"]):
            s3.create_bucket(Bucket=bucket)
        # already in the bucket when the stack starts: the watcher's start-up reconcile must find it
        col = write_collection(tmp_path / "files", "clim")
        s3.put_object(Bucket=init["INBOX_BUCKET"], Key="clim/collection.json", Body=col.read_bytes())

        stac_cmd = with_listen(services["stac-api"]["command"], "127.0.0.1", ports["stac-api"])
        procs["stac-api"] = Proc("stac-api", [str(BIN / stac_cmd[0]), *stac_cmd[1:]], process_env(env["stac-api"]),
                                 tmp_path / "stac-api", tmp_path)
        for name in STACDROP_SERVICES:
            command = [str(c) for c in services[name]["command"]]
            if name == "api":
                command = with_listen(command, "127.0.0.1", ports["api"])
            for replica in range(2 if name == "processor" else 1):  # docker compose up --scale processor=2
                label = f"{name}-{replica + 1}" if name == "processor" else name
                procs[label] = Proc(label, [str(BIN / "stacdrop"), *command], process_env(env[name]),
                                    tmp_path / label, tmp_path)
        # NGINX_PORT is the container's listen port (80): here a free loopback port
        conf = render_nginx(NGINX_TEMPLATE, {**env["nginx"], "NGINX_PORT": f"127.0.0.1:{ports['nginx']}"},
                            tmp_path / "nginx")
        check = subprocess.run(["nginx", "-t", "-p", str(tmp_path / "nginx"), "-c", str(conf), "-e",
                                str(tmp_path / "nginx" / "error.log")], capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        procs["nginx"] = Proc("nginx", ["nginx", "-p", str(tmp_path / "nginx"), "-c", str(conf), "-e",
                                        str(tmp_path / "nginx" / "error.log")], process_env({}), tmp_path / "nginx",
                              tmp_path)
        stack = Stack(config, mapping, env, procs, f"http://127.0.0.1:{ports['nginx']}", s3)

        def answers(url: str) -> bool:
            try:
                return requests.get(url, timeout=3).ok
            except requests.RequestException:
                return False

        stack.wait(lambda: answers(f"http://127.0.0.1:{ports['stac-api']}/_mgmt/ping"), 90, "stac-api up")
        stack.wait(lambda: answers(f"http://127.0.0.1:{ports['api']}/healthz"), 90, "stacdrop api up")
        stack.wait(lambda: answers(f"{stack.nginx_url}/stac/"), 30, "nginx up")
        yield stack
    finally:
        for proc in reversed(list(procs.values())):
            proc.stop(signal.SIGQUIT if proc.name == "nginx" else signal.SIGTERM)
        delete_rabbit_prefix(rabbit_url, prefix)
        conn = pika.BlockingConnection(pika.URLParameters(rabbit_url))
        conn.channel().exchange_delete(f"{prefix}-s3-events")
        conn.close()
        with psycopg.connect(postgres_dsn, autocommit=True) as conn_pg:
            conn_pg.execute(f'DROP DATABASE IF EXISTS "stacdrop_deploy_{unique}" WITH (FORCE)')
        catalog.drop()


def healthcheck_argv(service: dict[str, Any], container_port: int | None, test_port: int | None) -> list[str]:
    """The service's healthcheck command (else the image's HEALTHCHECK), run on this host: the container's
    own port becomes the test's."""
    test = (service.get("healthcheck") or {}).get("test") or ["CMD", *dockerfile_healthcheck()]
    assert test[0] == "CMD", f"exec-form healthcheck expected: {test}"
    argv = [str(a) for a in test[1:]]
    assert argv[0] == "stacdrop", argv
    if container_port is not None:
        argv = [a.replace(f"127.0.0.1:{container_port}", f"127.0.0.1:{test_port}") for a in argv]
    return [str(BIN / "stacdrop"), *argv[1:]]


def test_compose_stack_drops_a_file_through_to_nginx(stack: Stack, tmp_path: Path) -> None:
    services = stack.config["services"]
    api_port = stack.mapping.endpoints["api"].port
    for name in STACDROP_SERVICES:  # each stage's container healthcheck passes with its environment
        command = [str(c) for c in services[name]["command"]]
        container_port = int(command[command.index("--port") + 1]) if "--port" in command else None
        argv = healthcheck_argv(services[name], container_port, api_port)
        out = subprocess.run(argv, env=process_env(stack.env[name]), cwd=tmp_path, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, f"{name}: {shlex.join(argv)}: {out.stdout}{out.stderr}"
    # ... and fails, naming the ledger, when the ledger is not there
    broken = {**stack.env["watcher"], "STACDROP_LEDGER": stack.env["watcher"]["STACDROP_LEDGER"] + "_missing"}
    out = subprocess.run(healthcheck_argv(services["watcher"], None, None), env=process_env(broken),
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "unhealthy: ledger" in out.stderr, out.stderr

    base = stack.nginx_url
    # the collection, in the bucket before the start, was found by the start-up reconcile and published
    stack.wait(lambda: requests.get(f"{base}/stac/collections/clim", timeout=10).ok, 120,
               "the collection (start-up reconcile) through nginx /stac/")

    # one raster + sidecar into the inbox bucket, each announced the way the minio service is configured to
    inbox = stack.env["minio-init"]["INBOX_BUCKET"]
    raster = write_geotiff(tmp_path / "files" / "clim" / "bio1.tif", dtype="uint16", nodata=0)
    side = write_sidecar(raster, id="bio1", datetime="1981-01-01T00:00:00Z", properties={"variable": "bio1"})
    minio = stack.env["minio"]
    amqp_url = minio["MINIO_NOTIFY_AMQP_URL_STACDROP"]
    exchange = minio["MINIO_NOTIFY_AMQP_EXCHANGE_STACDROP"]
    assert minio["MINIO_NOTIFY_AMQP_ENABLE_STACDROP"] == "on"
    declared(amqp_url, exchange, f"{stack.env['watcher']['STACDROP_QUEUE_PREFIX']}.s3-events", timeout=60)
    conn = pika.BlockingConnection(pika.URLParameters(amqp_url))
    try:  # what MinIO's AMQP target does before publishing: a declaration that must match the watcher's
        conn.channel().exchange_declare(exchange, minio["MINIO_NOTIFY_AMQP_EXCHANGE_TYPE_STACDROP"],
                                        durable=minio["MINIO_NOTIFY_AMQP_DURABLE_STACDROP"] == "on")
    finally:
        conn.close()
    for path in (raster, side):
        key = f"clim/{path.name}"
        stack.s3.put_object(Bucket=inbox, Key=key, Body=path.read_bytes())
        publish(amqp_url, exchange, minio_event(stack.s3, inbox, key),
                routing_key=minio["MINIO_NOTIFY_AMQP_ROUTING_KEY_STACDROP"])

    def found() -> dict[str, Any] | None:
        resp = requests.get(f"{base}/stac/search", params={"ids": "bio1", "collections": "clim"}, timeout=10)
        features = resp.json().get("features", []) if resp.ok else []
        return features[0] if features else None

    item = stack.wait(found, 120, "the dropped raster searchable through nginx /stac/")
    assert item["collection"] == "clim" and item["properties"]["variable"] == "bio1"
    links = {link["rel"]: link["href"] for link in item["links"]}
    assert links["self"] == f"{base}/stac/collections/clim/items/bio1"
    assert links["collection"] == f"{base}/stac/collections/clim"
    cogs = stack.env["minio-init"]["COG_BUCKET"]
    href = item["assets"]["data"]["href"]
    assert href == stack.env["processor"]["STACDROP_PUBLIC_URL"].format(bucket=cogs, key="clim/bio1.tif")
    head = stack.s3.head_object(Bucket=cogs, Key="clim/bio1.tif")
    assert head["ContentLength"] > 0
    landing = requests.get(f"{base}/stac/", timeout=10).json()
    assert all(link["href"].startswith(f"{base}/stac") for link in landing["links"] if link["href"].startswith("http"))

    # writes to /stac/ need the token; reads and POST /search do not
    copy = {**item, "id": "bio1-copy", "links": []}
    items_url = f"{base}/stac/collections/clim/items"
    bearer = {"Authorization": f"Bearer {WRITE_TOKEN}"}
    assert requests.post(items_url, json=copy, timeout=10).status_code == 401
    assert requests.post(items_url, json=copy, headers={"Authorization": f"Bearer {WRITE_TOKEN.lower()}"},
                         timeout=10).status_code == 401
    assert requests.post(items_url, json=copy, headers={"Authorization": f"bearer {WRITE_TOKEN}"},
                         timeout=10).status_code == 401
    assert requests.delete(f"{items_url}/bio1", timeout=10).status_code == 401
    assert requests.post(items_url, json=copy, headers=bearer, timeout=10).status_code in (200, 201)
    assert requests.put(f"{items_url}/bio1-copy", json=copy, timeout=10).status_code == 401
    assert requests.get(f"{items_url}/bio1-copy", timeout=10).status_code == 200
    search = requests.post(f"{base}/stac/search", json={"ids": ["bio1", "bio1-copy"]}, timeout=10)
    assert search.status_code == 200 and len(search.json()["features"]) == 2
    assert requests.delete(f"{items_url}/bio1-copy", headers=bearer, timeout=10).status_code == 200
    assert requests.get(f"{items_url}/bio1", timeout=10).status_code == 200

    # backup: the service's own entrypoint + command (a shell loop) dumps the catalog into its volume
    backup = services["backup"]
    loop = [*backup["entrypoint"], *(c.replace("$$", "$") for c in backup["command"])]  # compose's $$ escape
    backup_env = process_env(stack.env["backup"])
    backup_env["PATH"] = f"{BIN}{os.pathsep}{backup_env.get('PATH', '')}"  # the image's stacdrop
    archives = Path(backup_env["STACDROP_BACKUP_DIR"])
    stack.procs["backup"] = Proc("backup", loop, backup_env, tmp_path / "backup", tmp_path, group=True)

    def listed() -> list[str]:
        out = subprocess.run([str(BIN / "stacdrop"), "backup", "list", "--json"], env=backup_env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        return [a["name"] for a in json.loads(out.stdout)]

    names = stack.wait(lambda: archives.is_dir() and listed(), 120, "the backup service's first archive")
    assert len(names) == 1 and stack.env["stac-api"]["PGDATABASE"] in names[0]
    assert [p.name for p in archives.iterdir()] == names  # in the mapped volume, nothing else left there

    # / is stacdrop's own API and status page
    health = requests.get(f"{base}/healthz", timeout=10)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    page = requests.get(f"{base}/", timeout=10)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    stack.check_alive()

"""Secrets never leave the process (stacdrop/redact.py and where it is used).

Unit tests of the redaction functions (hypothesis: passwords of arbitrary printable characters never
come out, raw or percent-encoded), then the real components: ``stacdrop serve`` as a subprocess (/status
``_param`` of a /newitem whose file_source_host holds a password, every read endpoint, the access log of
a ``?token=`` request, an ``s3://`` submission with no credentials against a fake metadata service on
127.0.0.1), ``stacdrop run``'s start log, ``stacdrop config``, and a job failing on a redirect to a
presigned URL (the ledger, the API and the dead letters). New modules are imported inside the unit tests,
so the subprocess tests also run, and fail, against a build without the fix.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests
from hypothesis import HealthCheck, assume, given, settings as hsettings, strategies as st

from tests.support.api_server import ApiServer
from tests.support.daemon import STACDROP, DaemonProcess, base_env, bus_for, ledger_for, wait_until
from tests.support.http_server import FileServer, LocalHttpServer, QuietHandler
from tests.support.services import free_port
from stacdrop.app.components import processor_settings

# A password as an operator pastes it into a URL setting, unescaped '/', '@', ':' and an escape.
STAC_PASSWORD = "p/@:ss%2Fw0rd"
STAC_URL = f"https://stacuser:{STAC_PASSWORD}@127.0.0.1:9/stac"
API_TOKEN = "api-T0KEN-for-secrets-tests"
STAC_TOKEN = "stac-T0KEN-for-secrets-tests"
FILE_PASSWORD = "f1le/p@ssw0rd"  # percent-encoded in the file_source_host, as a valid URL needs it
QUERY_TOKEN = "QUERY-T0KEN-in-the-url"
SIGNATURE = "5ec12e7c0ffee5ec12e7c0ffee5ec12e7c0ffee5ec12e7c0ffee5ec12e7c0ffee0"
CREDENTIAL = "AKIASECRETKEYIDEXAMPLE"
PRINTABLE = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"))
REDACTED_DSN = "postgresql://stacdrop:***@db.internal:5432/ledger?sslmode=***"


def forms(secret: str) -> set[str]:
    """A secret as it may be written: raw, decoded, percent-encoded."""
    from urllib.parse import unquote

    return {secret, unquote(secret), quote(secret, safe=""), quote(unquote(secret), safe="")}


def leaks(text: str, *secrets: str) -> list[str]:
    return sorted(f for s in secrets for f in forms(s) if f in text)


# -- unit: the redaction functions ---------------------------------------------------------------------
def test_redact_url_masks_passwords_queries_and_bare_user_info() -> None:
    from stacdrop.redact import redact_url

    cases = {  # url: (as anyone sees it, as the operator sees it in `stacdrop config`)
        "amqp://user:p/@:ss%2Fw0rd@rabbit:5672/vhost": ("amqp://rabbit:5672/vhost", "amqp://user:***@rabbit:5672/vhost"),
        "postgresql+psycopg://u:p%40ss@db/ledger?sslmode=require": (
            "postgresql+psycopg://db/ledger?...", "postgresql+psycopg://u:***@db/ledger?sslmode=***"),
        "https://ghp_t0ken@github.example/x": ("https://github.example/x", "https://***@github.example/x"),
        "https://h/k.tif?X-Amz-Credential=AKIA%2F1&X-Amz-Signature=abc#t=1": (
            "https://h/k.tif?...", "https://h/k.tif?X-Amz-Credential=***&X-Amz-Signature=***#***"),
        "http://[::1]:8080/x": ("http://[::1]:8080/x", "http://[::1]:8080/x"),
        "s3://bucket/key.tif": ("s3://bucket/key.tif", "s3://bucket/key.tif"),
        "./data/stac": ("./data/stac", "./data/stac"),
        "http://u:a/b?c#d@host/p": ("http://host/p", "http://u:***@host/p"),  # '/', '?', '#' in the password
    }
    for url, (shown, operator) in cases.items():
        assert redact_url(url) == shown, url
        assert redact_url(url, keep_user=True) == operator, url


@given(password=st.text(PRINTABLE, min_size=1, max_size=40), encoded=st.booleans())
@hsettings(max_examples=300, deadline=None)
def test_no_password_comes_out_of_redact_url(password: str, encoded: bool) -> None:
    from stacdrop.redact import redact_url

    written = quote(password, safe="") if encoded else password
    url = f"postgresql://stacdrop:{written}@db.internal:5432/ledger?sslmode=require"
    for shown, expected in ((redact_url(url), "postgresql://db.internal:5432/ledger?..."),
                            (redact_url(url, keep_user=True), REDACTED_DSN)):
        assert shown == expected  # the same for every password: nothing of it is left
        for form in forms(password):
            if form not in expected:  # "a", "5432", ... are in it whatever the password
                assert form not in shown


@given(password=st.text(st.characters(codec="utf-8", exclude_categories=("Cc", "Cs", "Zs", "Zl", "Zp")),
                        min_size=1, max_size=40))
@hsettings(max_examples=300, deadline=None)
def test_url_passwords_in_prose_are_masked_by_shape(password: str) -> None:
    from stacdrop.redact import redact_text

    assume(not any(c.isspace() for c in password))
    text = f"connection to amqp://stacdrop:{password}@rabbit.internal:5672/vhost refused"
    assert redact_text(text) == "connection to amqp://rabbit.internal:5672/vhost refused"


@given(secret=st.text(PRINTABLE, min_size=6, max_size=40))
@hsettings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_known_secrets_never_come_out_of_redact_text(secret: str) -> None:
    from stacdrop.redact import redact_text

    text = (f"POST failed with {secret!r}; sent Authorization {secret} to https://h/x?key={quote(secret, safe='')} "
            f"and {quote(secret)} (form {secret.replace(' ', '+')})")
    out = redact_text(text, [secret])
    assert secret not in out and quote(secret, safe="") not in out and quote(secret) not in out


def test_signatures_and_bearer_tokens_in_prose() -> None:
    from stacdrop.redact import redact_text

    text = ("No connection adapters were found for 's3://b/k.tif?X-Amz-Signature=abc123' (botocore: "
            f"X-Amz-Credential={CREDENTIAL}%2F20240101 Signature=zz9 sig=SAS0sig token=t0k3n); sent "
            "'Authorization: Bearer eyJhbGciOi.J9-x'; Basic auth failed")
    out = redact_text(text)
    for value in ("abc123", CREDENTIAL, "zz9", "SAS0sig", "t0k3n", "eyJhbGciOi"):
        assert value not in out, value
    assert "Basic auth failed" in out and "'s3://b/k.tif?...'" in out and "X-Amz-Credential=***" in out


def test_redact_text_keeps_the_sentence_and_is_idempotent() -> None:
    from stacdrop.config import Settings
    from stacdrop.redact import redact_text, secrets_of

    text = f"http://h/k.tif?X-Amz-Signature={SIGNATURE}: access denied; see 's3://b/k?sig=abc'."
    once = redact_text(text)
    assert once == "http://h/k.tif?...: access denied; see 's3://b/k?...'."
    assert redact_text(once) == once
    # requests cuts an unescaped password at its first '/' and prints the first piece as "host or port".
    secrets = secrets_of(Settings(stac="https://stacuser:longprefix/rest@stac.example/stac"))
    assert redact_text("Failed to parse: 'stacuser:longprefix' is not a valid host", secrets) == \
        "Failed to parse: 'stacuser:***' is not a valid host"


def test_secrets_of_settings() -> None:
    from stacdrop.config import Settings
    from stacdrop.redact import secrets_of

    settings = Settings(
        stac=STAC_URL, broker="amqp://u:br0ker-pw@rabbit/v", ledger="postgresql://u:l%40dger-pw@db/l",
        stac_token=STAC_TOKEN, api_token=API_TOKEN, aws_access_key_id="minio", aws_secret_access_key="s3-secret-key",
        catalog_dsn="host=db password='pg pass 1' dbname=pgstac",
    )
    found = secrets_of(settings)
    for value in (STAC_PASSWORD, "p/@:ss/w0rd", "br0ker-pw", "l%40dger-pw", "l@dger-pw", STAC_TOKEN, API_TOKEN,
                  "s3-secret-key", "pg pass 1"):
        assert value in found, value
    assert "minio" not in found  # an identifier: masked in `stacdrop config`, not searched for in prose


def test_ledger_stores_errors_and_events_redacted(tmp_path: Path) -> None:
    from stacdrop.ledger import Ledger, PendingEvent
    from stacdrop.times import utcnow

    ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db", secrets=[STAC_TOKEN])
    job, _ = ledger.create_job(kind="raster", source="http://h/x.tif", source_key="c/x.tif", content_key="k",
                               collection="c", origin="http", priority=0)
    error = f"https://u:{quote(FILE_PASSWORD, safe='')}@h/x.tif?X-Amz-Signature={SIGNATURE} said {STAC_TOKEN}"
    ledger.add_events(job.id, [PendingEvent(stage="process", step="fetch", status="running", at=utcnow(),
                                            message=error)], step="fetch")
    ledger.record(job.id, stage="process", step="fetch", status="failed", error_class="x", error=error,
                  message=error, state="failed")
    stored = ledger.get(job.id, with_events=True)
    assert stored is not None
    texts = [stored.error or ""] + [e.message or "" for e in stored.events]
    assert not leaks("\n".join(texts), FILE_PASSWORD, SIGNATURE, STAC_TOKEN)
    assert stored.error == "https://h/x.tif?... said ***"


def test_runtime_redacts_a_failure_before_the_log_the_ledger_and_the_dead_letter(tmp_path: Path) -> None:
    """Where errors are recorded: whatever text an exception carries (here requests' error for a redirect
    to an ``s3://`` presigned URL, as the processor raised it before the URL policy), the job error, its
    events, the dead letter and the log line hold no signature."""
    import structlog

    from stacdrop.bus.sqlite import SqliteBus
    from stacdrop.ledger import Ledger
    from stacdrop.messages import Envelope, IngestRequest, Source
    from stacdrop.retry import RetryPolicy
    from stacdrop.runtime import StageRunner

    presigned = (f"s3://bucket/x.tif?X-Amz-Credential={CREDENTIAL}%2F20240101%2Fus-east-1%2Fs3%2Faws4_request"
                 f"&X-Amz-Signature={SIGNATURE}")

    def handler(*_args: Any) -> Any:
        raise ValueError(f"No connection adapters were found for {presigned!r}")

    bus, ledger = SqliteBus(f"sqlite:///{tmp_path}/queue.db"), Ledger(f"sqlite:///{tmp_path}/ledger.db")
    bus.setup()
    job, _ = ledger.create_job(kind="raster", source="http://h/x.tif", source_key="c/x.tif", content_key="k",
                               collection="c", origin="http", priority=0)
    request = IngestRequest(source=Source(url="http://h/x.tif", key="c/x.tif", content_key="k"), collection="c")
    bus.publish("process", Envelope.wrap(job.id, request))
    runner = StageRunner("process", handler, bus=bus, ledger=ledger, policy=RetryPolicy(max_retries=0))
    stop = threading.Event()
    with structlog.testing.capture_logs() as logged:
        thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
        thread.start()
        wait_until(lambda: bus.dead_letters(), 30, "the dead letter")
        stop.set()
        thread.join(20)
    failed = ledger.get(job.id, with_events=True)
    assert failed is not None and failed.state == "failed"
    texts = [failed.error or ""] + [e.message or "" for e in failed.events]
    texts += [d.error for d in bus.dead_letters()] + [json.dumps(event, default=str) for event in logged]
    assert [t for t in texts if SIGNATURE in t or CREDENTIAL in t] == []
    assert "No connection adapters were found for 's3://bucket/x.tif?...'" in (failed.error or "")
    bus.close()
    ledger.close()


def test_api_middleware_redacts_json_and_text_answers() -> None:
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse, PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from stacdrop.app.api.redaction import RedactResponses

    metrics = f'stacdrop_jobs{{collection="{STAC_TOKEN}"}} 1.0\n'
    app = Starlette(routes=[
        Route("/metrics", lambda _r: PlainTextResponse(metrics, media_type="text/plain; version=0.0.4")),
        Route("/status", lambda _r: JSONResponse({"_param": {"file_source_host": "http://u:pw@h", "n": [STAC_TOKEN]}})),
    ])
    client = TestClient(RedactResponses(app, secrets=[STAC_TOKEN]))
    assert client.get("/metrics").text == 'stacdrop_jobs{collection="***"} 1.0\n'
    answer = client.get("/status")
    assert answer.json() == {"_param": {"file_source_host": "http://h", "n": ["***"]}}
    assert int(answer.headers["content-length"]) == len(answer.content)


# -- a fake cloud metadata service ------------------------------------------------------------------------
class _Counting(QuietHandler):
    server: CountingServer

    def _answer(self) -> None:
        self.server.requests.append(f"{self.command} {self.path}")
        self.send_response(404)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_PUT = do_POST = _answer  # noqa: N815


class CountingServer(LocalHttpServer):
    """An HTTP server on 127.0.0.1 that answers 404 to everything and counts what it was asked."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        super().__init__(_Counting)
        self.start()


def no_aws_env(root: Path, metadata: CountingServer, *, container: bool = False) -> dict[str, str]:
    """No AWS credentials anywhere, and the EC2 instance metadata service (with ``container``, the ECS/EKS
    container credentials endpoint too) pointed at ``metadata``."""
    home = root / "home"
    home.mkdir(exist_ok=True)
    env = dict(HOME=str(home), AWS_CONFIG_FILE=str(home / "no-config"),
               AWS_SHARED_CREDENTIALS_FILE=str(home / "no-credentials"),
               AWS_EC2_METADATA_SERVICE_ENDPOINT=metadata.url + "/",
               AWS_ENDPOINT_URL=f"http://127.0.0.1:{free_port()}", AWS_DEFAULT_REGION="us-east-1")
    if container:
        env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = metadata.url + "/container-credentials"
    return env


def without_aws(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if not k.startswith(("AWS_", "ARBUTUS_"))}


def test_fetching_s3_without_credentials_asks_no_metadata_service(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from processor.fetch import fetch_source
    from stacdrop.config import Settings
    from stacdrop.errors import StacdropError

    metadata = CountingServer()
    try:
        for name in [k for k in os.environ if k.startswith(("AWS_", "ARBUTUS_"))]:
            monkeypatch.delenv(name)
        for name, value in no_aws_env(tmp_path, metadata, container=True).items():
            monkeypatch.setenv(name, value)
        with pytest.raises(StacdropError) as raised:
            with fetch_source("s3://bucket/x.tif", tmp_path, processor_settings(Settings()).access):
                pass
        assert "aws_access_key_id" in str(raised.value) and raised.value.transient is False
        assert metadata.requests == []
    finally:
        metadata.close()


# -- the API as a subprocess --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def metadata() -> Iterator[CountingServer]:
    server = CountingServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, metadata: CountingServer) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("api")
    env = without_aws(base_env(root, STACDROP_API_TOKEN=API_TOKEN, STACDROP_STAC=STAC_URL,
                               STACDROP_STAC_TOKEN=STAC_TOKEN, STACDROP_ALLOWED_HOSTS="localhost",
                               STACDROP_COLLECTIONS=json.dumps({"chelsa": {"create_if_missing": True}})))
    env.update(no_aws_env(root, metadata))
    server = ApiServer(root, env).start()
    yield server
    server.stop()


@pytest.mark.e2e
def test_status_and_every_read_answer_hold_no_password(api: ApiServer, files: FileServer) -> None:
    host = files.url.replace("http://", f"http://fileuser:{quote(FILE_PASSWORD, safe='')}@")
    body = {"collection_id": "chelsa", "name": "ok", "date": "2001-01-01", "filename": "ok.tif",
            "file_source_host": host}
    submitted = api.post("/newitem", body)
    assert submitted.status_code == 200, submitted.text
    job_id = submitted.json()["id"]
    answers = {}
    for path in (f"/status?id={job_id}", "/status/all", "/jobs", f"/jobs/{job_id}", "/dead-letters", "/readyz",
                 "/metrics", "/footprints", "/queues"):
        resp = requests.get(api.url + path, timeout=30)  # reads are open: no token
        assert resp.status_code in (200, 503), (path, resp.text)
        answers[path] = resp.text
    status = json.loads(answers[f"/status?id={job_id}"])
    assert status["_param"]["file_source_host"] == files.url  # no user info
    assert status["_param"]["filename"] == "ok.tif"  # the rest of the original body is as it was sent
    leaked = {path: leaks(text, FILE_PASSWORD, STAC_PASSWORD, API_TOKEN, STAC_TOKEN) for path, text in answers.items()}
    assert leaked == {path: [] for path in answers}
    assert not leaks(api.logs(), FILE_PASSWORD, STAC_PASSWORD, API_TOKEN, STAC_TOKEN)


@pytest.mark.e2e
def test_access_log_has_paths_without_query_strings(api: ApiServer) -> None:
    resp = requests.get(f"{api.url}/jobs?token={QUERY_TOKEN}&limit=5", timeout=30)
    assert resp.status_code == 200

    def logged() -> str | None:
        text = api.logs()
        return text if '"GET /jobs HTTP/1.1" 200' in text else None

    log = wait_until(logged, 10, "the access log line of GET /jobs", api)
    assert QUERY_TOKEN not in log and "limit=5" not in log


@pytest.mark.e2e
def test_s3_submission_without_credentials_is_a_422_and_asks_no_metadata_service(
        api: ApiServer, metadata: CountingServer) -> None:
    for path, body in (("/jobs", {"source": "s3://bucket/x.tif", "collection": "chelsa"}),
                       ("/newitem", {"collection_id": "chelsa", "filename": "x.tif", "file_source_host": "s3://bucket"})):
        resp = api.post(path, body)
        assert resp.status_code == 422, resp.text
        detail = resp.json()["detail"]
        assert "aws_access_key_id" in detail and "aws_secret_access_key" in detail, detail
        assert "ARBUTUS_OBJECT_ACCESS_ID" in detail
    assert metadata.requests == []


# -- the daemon and the CLI as subprocesses ----------------------------------------------------------------
@pytest.mark.e2e
def test_daemon_start_log_holds_no_password(tmp_path: Path) -> None:
    env = base_env(tmp_path, STACDROP_STAC=STAC_URL, STACDROP_STAC_TOKEN=STAC_TOKEN)
    with DaemonProcess(tmp_path, env, ["run"], name="run") as daemon:
        wait_until(lambda: "stacdrop started" in daemon.logs(), 60, "the start log", daemon)
        time.sleep(1.0)  # the publisher opens its sink and logs what it can
    log = daemon.logs()
    started = next(json.loads(line) for line in log.splitlines() if '"stacdrop started"' in line)
    assert started["stac"] == "https://127.0.0.1:9/stac"
    assert not leaks(log, STAC_PASSWORD, STAC_TOKEN) and "stacuser" not in log


def test_stacdrop_config_masks_every_password(tmp_path: Path) -> None:
    env = base_env(tmp_path, STACDROP_STAC=STAC_URL, STACDROP_BROKER="amqp://stacdrop:r@bbit/pw:1@rabbit:5672/v",
                   STACDROP_LEDGER="postgresql://stacdrop:l%40dger%2Fpw@db:5432/ledger?sslmode=require",
                   STACDROP_STAC_TOKEN=STAC_TOKEN, STACDROP_API_TOKEN=API_TOKEN,
                   STACDROP_CATALOG_DSN="postgresql://admin:c%40talog-pw@db/pgstac",
                   ARBUTUS_OBJECT_ACCESS_ID="minio", ARBUTUS_OBJECT_ACCESS_KEY="s3-secret-key",
                   STACDROP_S3_EVENTS_AMQP="amqp://events:ev/nts@pw@rabbit/v")
    out = subprocess.run([*STACDROP, "config"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    shown = json.loads(out.stdout)
    assert shown["stac"] == "https://stacuser:***@127.0.0.1:9/stac"
    assert shown["bus"]["url"] == "amqp://stacdrop:***@rabbit:5672/v"
    assert shown["ledger"] == "postgresql://stacdrop:***@db:5432/ledger?sslmode=***"
    assert leaks(out.stdout + out.stderr, STAC_PASSWORD, "r@bbit/pw:1", "l%40dger%2Fpw", STAC_TOKEN, API_TOKEN,
                 "c%40talog-pw", "s3-secret-key", "ev/nts@pw") == []


# -- a job failing on a redirect to a presigned URL ----------------------------------------------------------
class _Presigning(QuietHandler):
    server: PresigningServer

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "4096")
        self.send_header("Last-Modified", formatdate(usegmt=True))
        self.end_headers()

    def do_GET(self) -> None:
        name = self.path.split("?", 1)[0].rsplit("/", 1)[-1]
        query = (f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={CREDENTIAL}%2F20240101%2Fus-east-1"
                 f"%2Fs3%2Faws4_request&X-Amz-Expires=1&X-Amz-SignedHeaders=host&X-Amz-Signature={SIGNATURE}")
        if self.path.startswith("/bucket/"):
            self.send_response(403)
            body = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        target = f"s3://bucket/{name}?{query}" if name.startswith("s3") else f"{self.server.url}/bucket/{name}?{query}"
        self.send_response(302)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()


class PresigningServer(LocalHttpServer):
    """A file host that answers HEAD with the file's headers but redirects GET to a presigned URL that has
    expired by then (403), or to an ``s3://`` presigned URL; like a portal fronting a bucket."""

    def __init__(self) -> None:
        super().__init__(_Presigning)
        self.start()


@pytest.mark.e2e
def test_presigned_redirect_signature_stays_out_of_errors(tmp_path: Path) -> None:
    presigning = PresigningServer()
    env = base_env(tmp_path, STACDROP_API_TOKEN=API_TOKEN, STACDROP_ALLOWED_HOSTS="127.0.0.1",
                   STACDROP_COLLECTIONS=json.dumps({"chelsa": {"create_if_missing": True}}))
    daemon = DaemonProcess(tmp_path, env, ["run"], name="run").start()
    api = ApiServer(tmp_path, env)
    try:
        api.start()
        ids = []
        for name in ("expired.tif", "s3hop.tif"):
            resp = api.post("/jobs", {"source": f"{presigning.url}/{name}", "collection": "chelsa"})
            assert resp.status_code == 202, resp.text
            ids.append(resp.json()["id"])

        def failed() -> list[dict[str, Any]] | None:
            jobs = [api.get(f"/jobs/{i}").json() for i in ids]
            return jobs if all(j["state"] == "failed" for j in jobs) else None

        jobs = wait_until(failed, 90, "both jobs to fail", daemon)
        texts = [json.dumps(jobs), api.get("/jobs").text, api.get("/dead-letters").text,
                 api.get("/status/all").text]
        ledger = ledger_for(env)
        for job_id in ids:
            job = ledger.get(job_id, with_events=True)
            assert job is not None and job.error
            texts += [job.error] + [e.message or "" for e in job.events]
        ledger.close()
        with bus_for(env) as bus:
            letters = bus.dead_letters()
        assert len(letters) == 2
        texts += [d.error for d in letters] + [h.model_dump_json() for d in letters for h in d.envelope.history]
        texts += [daemon.logs(), api.logs()]
        assert [t for t in texts if SIGNATURE in t or CREDENTIAL in t] == []
        assert "access denied (HTTP 403)" in json.dumps(jobs)
    finally:
        api.stop()
        daemon.stop()
        presigning.close()

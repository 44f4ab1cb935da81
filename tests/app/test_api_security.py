"""The API refuses what it must, against ``stacdrop serve`` as a subprocess: writes without the token,
URLs to internal addresses or hosts off the allow-list, oversized bodies, and bad submissions (unknown
collection, invalid sidecar fields, a missing source, another STAC server); each a 4xx naming the field
or URL and the reason, and no job."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.api_server import ApiServer
from tests.support.daemon import base_env
from tests.support.http_server import FileServer

TOKEN = "another-s3cret"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    root = tmp_path_factory.mktemp("api")
    env = base_env(root, STACDROP_API_TOKEN=TOKEN, STACDROP_ALLOWED_HOSTS="localhost",
                   STACDROP_COLLECTIONS=json.dumps({"chelsa": {"create_if_missing": True}}),
                   STACDROP_API_MAX_BODY_BYTES="4096")
    server = ApiServer(root, env).start()
    yield server
    server.stop()


def newitem(files: FileServer, **fields: object) -> dict[str, object]:
    return {"collection_id": "chelsa", "name": "ok", "date": "2001-01-01", "filename": "ok.tif",
            "file_source_host": files.url, "properties": {}, **fields}


def no_jobs(api: ApiServer) -> bool:
    return api.get("/jobs").json()["jobs"] == [] and api.get("/status/all").json() == []


def test_writes_need_the_token(api: ApiServer, files: FileServer) -> None:
    for path, body in (("/newitem", newitem(files)),
                       ("/jobs", {"source": f"{files.url}/ok.tif", "collection": "chelsa"}),
                       ("/dead-letters/replay", {"all": True})):
        bare = requests.post(api.url + path, json=body, timeout=30)
        assert bare.status_code == 401 and bare.headers["WWW-Authenticate"] == "Bearer", bare.text
        assert "Authorization: Bearer" in bare.json()["detail"]
        wrong = requests.post(api.url + path, json=body, headers={"Authorization": "Bearer nope"}, timeout=30)
        assert wrong.status_code == 401 and wrong.json() == {"detail": "invalid token"}
        other_scheme = requests.post(api.url + path, json=body, headers={"Authorization": f"Basic {TOKEN}"}, timeout=30)
        assert other_scheme.status_code == 401
    assert no_jobs(api)
    # Reads are open by default; the token never appears in any answer.
    assert requests.get(api.url + "/jobs", timeout=30).status_code == 200
    assert TOKEN not in api.logs()


@pytest.mark.parametrize("host", ["http://127.0.0.1:8000", "http://169.254.169.254/latest/meta-data",
                                  "http://example.org", "http://[::1]:80", "file:///etc"])
def test_unsafe_urls_refused_without_a_job(api: ApiServer, files: FileServer, host: str) -> None:
    resp = api.post("/newitem", newitem(files, file_source_host=host))
    assert resp.status_code == 422, resp.text
    assert resp.json()["detail"].startswith("source URL refused:")
    resp = api.post("/jobs", {"source": host + "/x.tif", "collection": "chelsa"})
    assert resp.status_code == 422 and "refused" in resp.json()["detail"]
    assert no_jobs(api)


def test_oversized_bodies_refused(api: ApiServer, files: FileServer) -> None:
    big = newitem(files, properties={"pad": "x" * 5000})
    resp = api.post("/newitem", big)
    assert resp.status_code == 413 and "4096 bytes" in resp.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
        yield json.dumps(big).encode()

    resp = requests.post(api.url + "/newitem", data=chunks(),
                         headers={**api.headers(), "Content-Type": "application/json"}, timeout=30)
    assert resp.status_code == 413
    assert no_jobs(api)


def test_bad_submissions_name_the_reason(api: ApiServer, files: FileServer) -> None:
    cases = [
        (newitem(files, collection_id="nope"), "unknown collection 'nope'"),
        (newitem(files, collection_id="bad id"),
         "POST /newitem ok.tif: collection 'bad id' contains forbidden characters"),
        (newitem(files, date="yesterday"), "datetime 'yesterday' is not a date"),
        (newitem(files, name="a/b"), "id 'a/b' contains forbidden characters"),
        (newitem(files, filename="missing.tif"), f"source {files.url}/missing.tif not found (HTTP 404)"),
        (newitem(files, stac_api_server="https://evil.example.com/stac"),
         "is not the STAC destination of this stacdrop; the only one allowed is (a static catalog"),
        ({"collection_id": "chelsa"}, "filename: Field required; file_source_host: Field required"),
    ]
    for body, reason in cases:
        resp = api.post("/newitem", body)
        assert resp.status_code == 422, (body, resp.text)
        assert reason in resp.json()["detail"], (reason, resp.json())
    resp = api.post("/jobs", {"source": f"{files.url}/ok.tif", "collection": "chelsa", "start_datetime": "2001-01-01"})
    assert resp.status_code == 422 and "start_datetime and end_datetime must be given together" in resp.json()["detail"]
    assert no_jobs(api)
    ok = api.post("/newitem", newitem(files))
    assert ok.status_code == 200 and ok.json()["msg"] == "received"


def test_stac_api_server_must_be_the_configured_one() -> None:
    from fastapi import HTTPException

    from stacdrop.app.api.submit import check_stac_server
    from stacdrop.config import Settings

    settings = Settings(stac="https://stac.example.org/stac")
    for same in ("https://stac.example.org/stac", "HTTPS://STAC.example.org:443/stac/", "", None):
        check_stac_server(settings, same)
    for other in ("https://stac.example.org/other", "http://stac.example.org/stac", "https://evil.example.com/stac",
                  "https://stac.example.org:8443/stac"):
        with pytest.raises(HTTPException) as caught:
            check_stac_server(settings, other)
        assert caught.value.status_code == 422 and "https://stac.example.org/stac" in caught.value.detail


def test_unknown_ids_and_bad_queries(api: ApiServer) -> None:
    resp = api.get("/status?id=0123456789abcdef")
    assert resp.status_code == 404 and resp.json() == {"detail": "no job with id '0123456789abcdef'"}
    assert api.get("/jobs/nope").status_code == 404
    assert api.get("/status").json() == {"detail": "query.id: Field required"}
    assert api.get("/jobs?cursor=garbage!").status_code == 422
    assert "since" in api.get("/jobs?since=someday").json()["detail"]
    assert "name dead letter ids" in api.post("/dead-letters/replay", {}).json()["detail"]


def _serve(tmp_path: Path, **env: str) -> ApiServer:
    return ApiServer(tmp_path, base_env(tmp_path, **env)).start()


def test_no_token_configured_refuses_writes_and_opt_out_allows_them(tmp_path: Path, files: FileServer) -> None:
    server = _serve(tmp_path / "a", STACDROP_ALLOWED_HOSTS="localhost")
    try:
        resp = requests.post(server.url + "/dead-letters/replay", json={"all": True, "dry_run": True}, timeout=30)
        assert resp.status_code == 503 and "STACDROP_API_TOKEN" in resp.json()["detail"]
    finally:
        server.stop()
    server = _serve(tmp_path / "b", STACDROP_API_AUTH_DISABLED="true", STACDROP_API_READ_TOKEN_REQUIRED="true")
    try:
        resp = requests.post(server.url + "/dead-letters/replay", json={"all": True, "dry_run": True}, timeout=30)
        assert resp.json() == {"dry_run": True, "matched": [], "replayed": []}
    finally:
        server.stop()


def test_read_token_setting(tmp_path: Path) -> None:
    server = _serve(tmp_path, STACDROP_API_TOKEN=TOKEN, STACDROP_API_READ_TOKEN_REQUIRED="true")
    try:
        for path in ("/jobs", "/status/all", "/queues", "/dead-letters", "/explain?collection=c&key=a.tif"):
            assert requests.get(server.url + path, timeout=30).status_code == 401, path
            assert server.get(path).status_code == 200, path
        assert requests.get(server.url + "/healthz", timeout=30).status_code == 200  # probes stay open
    finally:
        server.stop()

"""The HTTP API against the running service: ``stacdrop serve`` and ``stacdrop run`` as subprocesses with
real jobs flowing, on the embedded default (SQLite bus and ledger) and on RabbitMQ with a PostgreSQL
ledger. Real GeoTIFFs are served by a local HTTP server and submitted by URL; the original system's
request and response shapes are pinned field by field."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.api_server import ApiServer
from tests.support.daemon import DaemonProcess, base_env, catalog_items, wait_until
from tests.support.http_server import FileServer
from tests.support.rasters import write_geotiff
from tests.support.services import delete_rabbit_prefix, unique_prefix

pytestmark = pytest.mark.e2e  # slow: daemons, servers or many rasters (the fast suite is -m 'not e2e')

TOKEN = "s3cret-token-for-tests"
ORIGINAL_STEPS = {"**pending**", "GETCOLLECTION", "GETITEMFILE", "TRANF_COG", "CREATEPYSTACITEM",
                  "UPLOAD_COG_TO_SERVER", "DELETEITEMFILE", "PROCESS FINISHED"}
JOB_FIELDS = {"id", "kind", "state", "stage", "step", "collection", "item_id", "source_key", "origin", "attempts",
              "error_class", "error", "created_at", "updated_at", "finished_at", "duration_s"}


@dataclass
class Deployment:
    root: Path
    api: ApiServer
    daemon: DaemonProcess
    files: FileServer


def api_env(root: Path, **overrides: str) -> dict[str, str]:
    return base_env(
        root, STACDROP_API_TOKEN=TOKEN, STACDROP_ALLOWED_HOSTS="localhost",
        STACDROP_COLLECTIONS=json.dumps({"chelsa": {"create_if_missing": True}}), **overrides,
    )


@pytest.fixture(params=["sqlite", pytest.param("rabbitmq", marks=[pytest.mark.rabbitmq, pytest.mark.postgres])])
def deployment(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Deployment]:
    overrides: dict[str, str] = {}
    prefix = None
    if request.param == "rabbitmq":
        prefix = unique_prefix("api")
        overrides = dict(STACDROP_BROKER=request.getfixturevalue("rabbit_url"), STACDROP_QUEUE_PREFIX=prefix,
                         STACDROP_LEDGER=request.getfixturevalue("pg_ledger_url"))
    env = api_env(tmp_path, **overrides)
    with FileServer(tmp_path / "www") as files:
        daemon = DaemonProcess(tmp_path, env, ["run"], name="run").start()
        api = ApiServer(tmp_path, env)
        try:
            api.start()
            yield Deployment(tmp_path, api, daemon, files)
        finally:
            api.stop()
            daemon.stop()
            if prefix:
                delete_rabbit_prefix(overrides["STACDROP_BROKER"], prefix)


def poll(api: ApiServer, path: str, until, what: str, daemon: DaemonProcess):
    def check():
        resp = api.get(path)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        return body if until(body) else None

    return wait_until(check, 90, what, daemon)


def test_submit_follow_fail_and_replay(deployment: Deployment) -> None:
    api, daemon, www = deployment.api, deployment.daemon, deployment.files
    write_geotiff(www.root / "bio1.tif", width=64, height=48)
    newitem = {"collection_id": "chelsa", "date": "1981-01-01", "name": "bio1", "filename": "bio1.tif",
               "stac_api_server": None, "file_source_host": www.url + "/",
               "properties": {"variable": "bio1", "time_span": "1981-2010"}}
    del newitem["stac_api_server"]

    # POST /newitem: the original response, exactly.
    resp = api.post("/newitem", newitem)
    assert resp.status_code == 200, resp.text
    received = resp.json()
    assert set(received) == {"id", "msg"} and received["msg"] == "received"
    job_id = received["id"]

    # GET /status until PROCESS FINISHED; every _operation seen is one of the original step names.
    seen: set[str] = set()

    def finished(body: dict) -> bool:
        seen.add(body["_operation"])
        assert body["_status"] == "ok", body
        return body["_operation"] == "PROCESS FINISHED"

    status = poll(api, f"/status?id={job_id}", finished, "the job to finish", daemon)
    assert seen <= ORIGINAL_STEPS, seen
    assert list(status) == ["_id", "_operation", "_status", "_param", "_description"]
    assert status["_id"] == job_id and status["_status"] == "ok"
    assert status["_param"] == newitem
    assert status["_description"] == "item chelsa/bio1 published"

    item = catalog_items(deployment.root / "data" / "stac")["chelsa/bio1"]
    assert item["properties"]["datetime"] == "1981-01-01T00:00:00Z"
    assert item["properties"]["variable"] == "bio1" and item["properties"]["time_span"] == "1981-2010"

    # The same file with the same fields again: the same job, no second one.
    again = api.post("/newitem", newitem)
    assert again.status_code == 200 and again.json() == {"id": job_id, "msg": "received"}

    # /status/all: a JSON list of the same records, newest first.
    listed = api.get("/status/all")
    assert listed.status_code == 200 and isinstance(listed.json(), list)
    assert [s["_id"] for s in listed.json()] == [job_id] and listed.json()[0] == status

    # GET /jobs and /jobs/{id}: the summary and the whole history.
    jobs = api.get("/jobs").json()
    assert jobs["next_cursor"] is None and [j["id"] for j in jobs["jobs"]] == [job_id]
    summary = jobs["jobs"][0]
    assert set(summary) >= JOB_FIELDS
    assert (summary["state"], summary["origin"], summary["collection"], summary["item_id"], summary["source_key"]) \
        == ("published", "http", "chelsa", "bio1", "chelsa/bio1.tif")
    assert summary["finished_at"] and summary["duration_s"] >= 0 and summary["created_at"].endswith("+00:00")
    detail = api.get(f"/jobs/{job_id}").json()
    steps = [(e["stage"], e["step"], e["status"]) for e in detail["events"]]
    for expected in [("watch", "queued", "created"), ("process", "convert", "running"),
                     ("process", "metadata", "succeeded"), ("publish", "finished", "succeeded")]:
        assert expected in steps, steps
    assert set(detail["events"][0]) == {"at", "stage", "step", "status", "attempt", "error_class", "message"}

    # A bad raster by POST /jobs: accepted (it exists), then fails with its reason, dead-lettered.
    (www.root / "broken.tif").write_bytes(b"this is not a GeoTIFF\n" * 100)
    resp = api.post("/jobs", {"source": f"{www.url}/broken.tif", "collection": "chelsa", "id": "broken",
                              "datetime": "2000-01-01"})
    assert resp.status_code == 202, resp.text
    bad_id = resp.json()["id"]
    assert set(resp.json()) >= JOB_FIELDS
    failed = poll(api, f"/jobs/{bad_id}", lambda b: b["state"] == "failed", "the bad raster to fail", daemon)
    assert failed["error_class"] == "invalid_raster" and "broken.tif" in failed["error"]
    bad_status = api.get(f"/status?id={bad_id}").json()
    assert bad_status["_status"] == "error" and bad_status["_operation"] == "GETITEMFILE"
    assert "invalid_raster" in bad_status["_description"] and "broken.tif" in bad_status["_description"]
    assert [j["id"] for j in api.get("/jobs?state=failed").json()["jobs"]] == [bad_id]
    assert [j["id"] for j in api.get("/jobs?error_class=invalid_raster&collection=chelsa").json()["jobs"]] == [bad_id]
    assert [j["id"] for j in api.get("/jobs?stage=publish&since=1h").json()["jobs"]] == [job_id]
    assert api.get("/jobs?since=2999-01-01").json()["jobs"] == []
    assert api.get("/jobs?collection=other").json()["jobs"] == []

    letters = poll(api, "/dead-letters", lambda b: b["dead_letters"], "the dead letter", daemon)["dead_letters"]
    assert len(letters) == 1 and letters[0]["job_id"] == bad_id
    letter = letters[0]
    assert set(letter) == {"id", "queue", "job_id", "collection", "error_class", "error", "attempts", "dead_at"}
    assert (letter["queue"], letter["collection"], letter["error_class"]) == ("process", "chelsa", "invalid_raster")
    queues = {q["queue"]: q for q in api.get("/queues").json()["queues"]}
    assert queues["process"]["dead"] == 1 and queues["publish"]["dead"] == 0
    assert set(queues["process"]) == {"queue", "ready", "unacked", "retrying", "dead", "consumers", "publish_rate",
                                      "ack_rate"}

    # Replay: without the token refused; a dry run matches and moves nothing; then fix the file and replay.
    assert api.post("/dead-letters/replay", {"ids": [letter["id"]]}, headers={"Authorization": "Bearer x"}) \
        .status_code == 401
    dry = api.post("/dead-letters/replay", {"error_class": "invalid_raster", "dry_run": True}).json()
    assert dry == {"dry_run": True, "matched": [letter["id"]], "replayed": []}
    assert len(api.get("/dead-letters").json()["dead_letters"]) == 1
    write_geotiff(www.root / "broken.tif", width=32, height=32)
    done = api.post("/dead-letters/replay", {"ids": [letter["id"]]}).json()
    assert done == {"dry_run": False, "matched": [letter["id"]], "replayed": [letter["id"]]}
    replayed = poll(api, f"/jobs/{bad_id}", lambda b: b["state"] == "published", "the replayed job", daemon)
    assert ("process", "queued", "replayed") in [(e["stage"], e["step"], e["status"]) for e in replayed["events"]]
    assert api.get("/dead-letters").json() == {"dead_letters": []}
    assert "chelsa/broken" in catalog_items(deployment.root / "data" / "stac")

    # Cursor pagination, newest first.
    first = api.get("/jobs?limit=1").json()
    assert [j["id"] for j in first["jobs"]] == [bad_id] and first["next_cursor"]
    second = api.get(f"/jobs?limit=1&cursor={first['next_cursor']}").json()
    assert [j["id"] for j in second["jobs"]] == [job_id] and second["next_cursor"] is None

    # /status/all pages: a JSON list each, the next page in the Link header (by cursor), or by offset.
    page1 = api.get("/status/all?limit=1")
    assert [s["_id"] for s in page1.json()] == [bad_id]
    page2 = api.get(page1.links["next"]["url"].removeprefix(api.url))
    assert [s["_id"] for s in page2.json()] == [job_id] and "next" not in page2.links
    assert [s["_id"] for s in api.get("/status/all?limit=1&offset=1").json()] == [job_id]

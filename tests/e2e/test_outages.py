"""Outages are not the job's fault (issue 11): a dependency down for longer than the whole retry budget
dead-letters nothing, and everything publishes once it is back. ``stacdrop run`` as a subprocess against
a real stac-fastapi-pgstac that is stopped and started again, and an S3 store (moto over HTTP) behind a
TCP proxy that refuses connections for a while. The retry budget is shortened to about a second, the
outages last several times that."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path

import pytest
import requests
from rasterio.transform import from_origin

from tests.support.api_server import ApiServer
from tests.support.daemon import (
    DaemonProcess,
    base_env,
    bus_for,
    catalog_items,
    ledger_for,
    settled_jobs,
    wait_until,
    write_collection,
    write_sidecar,
)
from tests.support.http_server import FileServer
from tests.support.rasters import write_geotiff
from tests.support.s3_store import new_bucket, s3, s3_env
from tests.support.s3proxy import Proxy
from tests.support.stac_api import StacApiServer, check_available

pytestmark = pytest.mark.e2e  # slow: daemons, servers or many rasters (the fast suite is -m 'not e2e')

# The suite shortens the retry budget to about a second and the outage to 12 s, ten times that.
# STACDROP_TEST_OUTAGE=600 runs the real thing: a 10-minute outage against the default budget (~1 min).
OUTAGE = float(os.environ.get("STACDROP_TEST_OUTAGE", "12"))
BUDGET = {} if "STACDROP_TEST_OUTAGE" in os.environ else \
    dict(STACDROP_MAX_RETRIES="1", STACDROP_RETRY_BASE="0.3", STACDROP_RETRY_MAX="0.5")
TOKEN = "outage-test-token"


def drop(inbox: Path, cid: str, name: str, west: float) -> None:
    path = write_geotiff(inbox / cid / f"{name}.tif", width=64, height=64, transform=from_origin(west, 10, 0.05, 0.05))
    write_sidecar(path, id=name, datetime="2020-01-01T00:00:00Z")


def waiting_jobs(ledger):
    return [j for j in ledger.list_jobs(limit=100) if j.error and "not counted" in j.error]


@pytest.mark.postgres
def test_stac_api_down_longer_than_the_retry_budget_dead_letters_nothing(tmp_path: Path, postgres_dsn: str) -> None:
    check_available(postgres_dsn)
    server = StacApiServer(postgres_dsn).create().start()
    try:
        cid = f"outage-{uuid.uuid4().hex[:8]}"
        env = base_env(tmp_path, STACDROP_STAC=server.url, **BUDGET)
        inbox = tmp_path / "inbox"
        write_collection(inbox, cid)
        with DaemonProcess(tmp_path, env) as daemon:
            ledger = ledger_for(env)
            wait_until(lambda: settled_jobs(ledger, 1), 60, "the collection published", daemon)
            server.stop()
            down_at = time.monotonic()
            names = [f"item-{i}" for i in range(4)]
            for i, name in enumerate(names):
                drop(inbox, cid, name, west=float(i))
            wait_until(lambda: len(waiting_jobs(ledger)) >= 1, 60, "a job waiting for the STAC API", daemon)
            time.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))
            during = ledger.list_jobs(limit=100)
            assert [j.source_key for j in during if j.state == "failed"] == []
            assert bus_for(env).dead_letters() == []
            server.start()
            jobs = wait_until(lambda: settled_jobs(ledger, 1 + len(names)), 120, "jobs settled", daemon)
            assert [(j.source_key, j.state, j.error) for j in jobs if j.state != "published"] == []
            assert "stage paused" in daemon.logs() and "dependency back" in daemon.logs()
        assert bus_for(env).dead_letters() == []
        resp = requests.post(f"{server.url}/search", json={"collections": [cid], "limit": 50}, timeout=10)
        assert sorted(f["id"] for f in resp.json()["features"]) == names
    finally:
        server.drop()


def test_store_down_longer_than_the_retry_budget_dead_letters_nothing(tmp_path: Path, moto_server) -> None:
    bucket = new_bucket(moto_server.url)
    proxy = Proxy(moto_server.port)
    try:
        env = s3_env(tmp_path, proxy.url, bucket, **BUDGET)
        inbox = tmp_path / "inbox"
        cid = "dem"
        write_collection(inbox, cid)
        with DaemonProcess(tmp_path, env) as daemon:
            ledger = ledger_for(env)
            wait_until(lambda: settled_jobs(ledger, 1), 60, "the collection published", daemon)
            proxy.up = False
            down_at = time.monotonic()
            names = [f"tile-{i}" for i in range(3)]
            for i, name in enumerate(names):
                drop(inbox, cid, name, west=float(i))
            wait_until(lambda: len(waiting_jobs(ledger)) >= 1, 60, "a job waiting for the store", daemon)
            time.sleep(max(0.0, OUTAGE - (time.monotonic() - down_at)))
            assert [j.source_key for j in ledger.list_jobs(limit=100) if j.state == "failed"] == []
            assert bus_for(env).dead_letters() == []
            proxy.up = True
            jobs = wait_until(lambda: settled_jobs(ledger, 1 + len(names)), 120, "jobs settled", daemon)
            assert [(j.source_key, j.state, j.error) for j in jobs if j.state != "published"] == []
        assert bus_for(env).dead_letters() == []
        keys = {o["Key"] for o in s3(moto_server.url).list_objects_v2(Bucket=bucket).get("Contents", [])}
        assert {f"io/{cid}/{n}.tif" for n in names} <= keys
    finally:
        proxy.close()


def test_source_host_down_longer_than_the_retry_budget_dead_letters_nothing(tmp_path: Path) -> None:
    """A job submitted by URL whose host goes down right after the API's HEAD: the processor's GET is refused
    for ten times the retry budget. The job waits uncounted (no pause: other jobs could go ahead) and
    publishes when the host is back; before, each refusal spent an attempt and the job was dead-lettered."""
    env = base_env(tmp_path, STACDROP_API_TOKEN=TOKEN, STACDROP_ALLOWED_HOSTS="localhost",
                   STACDROP_COLLECTIONS=json.dumps({"remote": {"create_if_missing": True}}), **BUDGET)
    with FileServer(tmp_path / "www") as files:
        write_geotiff(files.root / "far.tif", width=64, height=64)
        proxy = Proxy(files.port)
        host = proxy.url.replace("127.0.0.1", "localhost")
        api = ApiServer(tmp_path, env)
        try:
            with DaemonProcess(tmp_path, env) as daemon:
                api.start()
                proxy.down_after_connections = 1  # the API's HEAD gets through, then the host is down
                resp = api.post("/jobs", {"source": f"{host}/far.tif", "collection": "remote", "id": "far",
                                          "datetime": "2020-01-01"})
                assert resp.status_code == 202, resp.text
                ledger = ledger_for(env)
                wait_until(lambda: waiting_jobs(ledger), 60, "the job waiting for its source host", daemon)
                time.sleep(OUTAGE)
                job = next(j for j in ledger.list_jobs(limit=10) if j.kind == "raster")
                assert job.state != "failed" and bus_for(env).dead_letters() == [], job.error
                assert job.error_class == "source_unavailable" and job.attempts == 1, (job.attempts, job.error)
                assert "stage paused" not in daemon.logs()  # one host down does not stop the others' jobs
                proxy.down_after_connections, proxy.up = None, True
                wait_until(lambda: ledger.get(job.id).state == "published", 120, "published", daemon)
        finally:
            api.stop()
            proxy.close()
    assert bus_for(env).dead_letters() == []
    assert "remote/far" in catalog_items(tmp_path / "data" / "stac")

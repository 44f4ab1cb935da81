"""End to end into a real STAC API: ``stacdrop run`` as a subprocess with STACDROP_STAC = a
stac-fastapi-pgstac URL (tests/support/stac_api.py), real GeoTIFFs into the inbox, then what rstac users do:
POST /search by bbox, datetime and a property."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests
from rasterio.transform import from_origin

from tests.support.daemon import STACDROP, DaemonProcess, base_env, ledger_for, settled_jobs, wait_until, write_sidecar
from tests.support.rasters import write_geotiff
from tests.support.stac_api import StacApiServer, check_available

pytestmark = [pytest.mark.postgres, pytest.mark.e2e]


def new_id(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def write_collection(inbox: Path, cid: str) -> None:
    folder = inbox / cid
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "collection.json").write_text(json.dumps({
        "type": "Collection", "stac_version": "1.1.0", "id": cid, "description": f"e2e {cid}",
        "license": "CC-BY-4.0", "links": [],
        "extent": {"spatial": {"bbox": [[0.0, 0.0, 1.0, 1.0]]},
                   "temporal": {"interval": [["2000-01-01T00:00:00Z", "2000-01-01T00:00:00Z"]]}},
    }))


def drop(inbox: Path, cid: str, item_id: str, *, west: float, north: float, dt: str, **props: str) -> Path:
    path = write_geotiff(inbox / cid / f"{item_id}.tif", width=64, height=64,
                         transform=from_origin(west, north, 0.05, 0.05))
    write_sidecar(path, id=item_id, datetime=dt, properties=props)
    return path


def search(url: str, **body) -> list[str]:
    resp = requests.post(f"{url}/search", json={"limit": 500, **body}, timeout=10)
    resp.raise_for_status()
    return sorted(f["id"] for f in resp.json()["features"])


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    root = Path(env["STACDROP_INBOX"]).parent
    return subprocess.run([*STACDROP, *args], env=env, cwd=root, capture_output=True, text=True, check=check,
                          timeout=60)


def test_dropped_rasters_are_searchable_and_unpublish(tmp_path: Path, stac_api_url: str) -> None:
    cid = new_id("clim")
    env = base_env(tmp_path, STACDROP_STAC=stac_api_url)
    inbox = tmp_path / "inbox"
    write_collection(inbox, cid)
    drop(inbox, cid, "alps", west=6.0, north=47.5, dt="1981-01-01T00:00:00Z", variable="bio1")
    drop(inbox, cid, "andes", west=-75.0, north=5.0, dt="2001-06-01T00:00:00Z", variable="bio1")
    drop(inbox, cid, "congo", west=20.0, north=1.0, dt="2018-01-01T00:00:00Z", variable="bio12")
    with DaemonProcess(tmp_path, env) as daemon:
        ledger = ledger_for(env)
        jobs = wait_until(lambda: settled_jobs(ledger, 4), 120, "jobs settled", daemon)
        assert [(j.source_key, j.error) for j in jobs if j.state != "published"] == []

        assert search(stac_api_url, collections=[cid]) == ["alps", "andes", "congo"]
        assert search(stac_api_url, collections=[cid], bbox=[5.0, 45.0, 10.0, 50.0]) == ["alps"]
        assert search(stac_api_url, collections=[cid], bbox=[-80.0, -10.0, 30.0, 10.0]) == ["andes", "congo"]
        assert search(stac_api_url, collections=[cid], datetime="2000-01-01T00:00:00Z/..") == ["andes", "congo"]
        assert search(stac_api_url, collections=[cid], datetime="1981-01-01T00:00:00Z") == ["alps"]
        assert search(stac_api_url, collections=[cid], filter={"op": "=", "args": [{"property": "variable"}, "bio1"]},
                      **{"filter-lang": "cql2-json"}) == ["alps", "andes"]
        assert search(stac_api_url, collections=[cid], query={"variable": {"eq": "bio12"}}) == ["congo"]

        item = requests.get(f"{stac_api_url}/collections/{cid}/items/alps", timeout=10).json()
        asset = item["assets"]["data"]
        assert Path(asset["href"]).exists() and asset["file:checksum"].startswith("1220")
        # the collection's extent grew to cover the items, without a rescan
        col = requests.get(f"{stac_api_url}/collections/{cid}", timeout=10).json()
        w, s, e, n = col["extent"]["spatial"]["bbox"][0]
        assert w <= -75.0 and e >= 23.0 and s <= 1.0 - 3.2 and n >= 47.5
        start, end = col["extent"]["temporal"]["interval"][0]
        assert start.startswith("1981-01-01") and end.startswith("2018-01-01")

        # a changed datetime replaces the item
        write_sidecar(inbox / cid / "andes.tif", id="andes", datetime="2011-03-01T00:00:00Z",
                      properties={"variable": "bio1"})
        wait_until(lambda: search(stac_api_url, collections=[cid], datetime="2011-03-01T00:00:00Z") == ["andes"],
                   60, "andes replaced", daemon)
        assert search(stac_api_url, collections=[cid], datetime="2001-06-01T00:00:00Z") == []

    # unpublish (CLI): the item and its COG go, the ledger says so
    cog = Path(asset["href"])
    out = cli(env, "unpublish", "alps", "--collection", cid, "--delete-cog")
    assert "deleted" in out.stdout, out
    assert requests.get(f"{stac_api_url}/collections/{cid}/items/alps", timeout=10).status_code == 404
    assert not cog.exists()
    states = {(j.kind, j.item_id, j.state) for j in ledger_for(env).list_jobs(collection=cid, limit=100)}
    assert ("unpublish", "alps", "unpublished") in states
    assert ("raster", "alps", "unpublished") in states
    assert search(stac_api_url, collections=[cid]) == ["andes", "congo"]

    # the same file dropped again after an unpublish is new work: it is converted and published again
    tif = inbox / cid / "alps.tif"
    os.utime(tif, ns=(tif.stat().st_atime_ns, tif.stat().st_mtime_ns + 10**9))
    with DaemonProcess(tmp_path, env) as daemon:
        wait_until(lambda: search(stac_api_url, collections=[cid]) == ["alps", "andes", "congo"], 60,
                   "alps published again", daemon)
    again = ledger_for(env).list_jobs(collection=cid, item_id="alps", state="published")
    assert len(again) == 1 and Path(again[0].cog_href).exists()


def test_create_if_missing_on_and_off_and_collection_push(tmp_path: Path, stac_api_url: str) -> None:
    on, off = new_id("on"), new_id("off")
    env = base_env(tmp_path, STACDROP_STAC=stac_api_url,
                   STACDROP_COLLECTIONS=json.dumps({on: {"create_if_missing": True}}))
    inbox = tmp_path / "inbox"
    drop(inbox, on, "a", west=10.0, north=10.0, dt="2020-01-01", variable="x")
    drop(inbox, off, "b", west=10.0, north=10.0, dt="2020-01-01", variable="x")
    with DaemonProcess(tmp_path, env) as daemon:
        ledger = ledger_for(env)
        jobs = wait_until(lambda: settled_jobs(ledger, 2), 120, "jobs settled", daemon)
    by_collection = {j.collection: j for j in jobs}
    assert by_collection[on].state == "published", by_collection[on].error
    assert by_collection[off].state == "failed" and by_collection[off].error_class == "unknown_collection"
    assert off in by_collection[off].error
    assert search(stac_api_url, collections=[on]) == ["a"]
    assert requests.get(f"{stac_api_url}/collections/{off}", timeout=10).status_code == 404

    # stacdrop collection push makes it; the failed job can then be replayed
    col = tmp_path / "col.json"
    col.write_text(json.dumps({"type": "Collection", "stac_version": "1.1.0", "id": off, "description": "pushed",
                               "license": "other", "links": [],
                               "extent": {"spatial": {"bbox": [[-1.0, -1.0, 1.0, 1.0]]},
                                          "temporal": {"interval": [["2020-01-01T00:00:00Z", None]]}}}))
    out = cli(env, "collection", "push", str(col))
    assert f"collection {off} created" in out.stdout, out
    assert requests.get(f"{stac_api_url}/collections/{off}", timeout=10).json()["description"] == "pushed"
    assert "updated" in cli(env, "collection", "push", str(col)).stdout
    assert {j.state for j in ledger_for(env).list_jobs(collection=off) if j.kind == "collection"} == {"published"}


@pytest.fixture
def own_stac_server(postgres_dsn: str):
    """A server of its own: this test stops and restarts it."""
    try:
        check_available(postgres_dsn)
    except Exception as exc:  # noqa: BLE001
        pytest.skip(str(exc))
    server = StacApiServer(postgres_dsn).create()
    server.start()
    yield server
    server.drop()


def test_api_stopped_and_restarted_mid_stream(tmp_path: Path, own_stac_server: StacApiServer) -> None:
    url = own_stac_server.url
    cid = new_id("restart")
    env = base_env(tmp_path, STACDROP_STAC=url, STACDROP_MAX_RETRIES="10", STACDROP_RETRY_BASE="0.5",
                   STACDROP_RETRY_MAX="2", STACDROP_STAC_TIMEOUT="5")
    inbox = tmp_path / "inbox"
    write_collection(inbox, cid)
    n_first, n_total = 6, 16
    for n in range(n_first):
        drop(inbox, cid, f"r{n:02d}", west=n, north=10.0, dt=f"20{10 + n:02d}-01-01", variable="v")
    with DaemonProcess(tmp_path, env) as daemon:
        ledger = ledger_for(env)
        wait_until(lambda: len(search(url, collections=[cid])) >= 3, 120, "first items published", daemon)
        own_stac_server.stop()
        for n in range(n_first, n_total):
            drop(inbox, cid, f"r{n:02d}", west=n, north=10.0, dt=f"20{10 + n:02d}-01-01", variable="v")
        time.sleep(4)  # the publisher meets connection errors and retries
        own_stac_server.start()
        jobs = wait_until(lambda: settled_jobs(ledger, n_total + 1), 180, "all jobs settled", daemon)
        assert [(j.source_key, j.state, j.error) for j in jobs if j.state != "published"] == []
        retried = [j for j in jobs if j.attempts and j.attempts > 1]
        logs = daemon.logs()
    assert retried or "catalog_unavailable" in logs, "the API outage was never seen"
    ids = search(url, collections=[cid])
    assert ids == [f"r{n:02d}" for n in range(n_total)]
    # nothing twice: one job per source, each published once
    assert len(jobs) == n_total + 1
    for job in ledger_for(env).list_jobs(collection=cid, limit=100):
        full = ledger_for(env).get(job.id, with_events=True)
        finished = [e for e in full.events if e.stage == "publish" and e.step == "finished"]
        assert len(finished) == 1, (job.source_key, [(e.step, e.status) for e in full.events])

"""End to end on the embedded default: ``stacdrop run`` as a subprocess, real GeoTIFFs into the inbox,
a static STAC catalog out."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_validate

from publisher.validation import validate_item
from stacdrop.app.api.compat import original_step
from tests.support.daemon import (
    STACDROP,
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
from tests.support.rasters import IGH_WKT, write_geotiff

pytestmark = pytest.mark.e2e  # slow: daemons, servers or many rasters (the fast suite is -m 'not e2e')

COLLECTIONS = {
    "landcover": {"resampling": "mode"},
    "keyonly": {"allow_key_only": True, "key_template": "{variable}_{year}.tif"},
}


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return base_env(tmp_path, STACDROP_COLLECTIONS=json.dumps(COLLECTIONS))


def cli(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    root = Path(env["STACDROP_INBOX"]).parent
    return subprocess.run([*STACDROP, *args], env=env, cwd=root, capture_output=True, text=True, check=check,
                          timeout=60)


def test_good_inputs_become_valid_items(tmp_path: Path, env: dict[str, str]) -> None:
    inbox = tmp_path / "inbox"
    for col in ("clim", "soil", "landcover", "keyonly", "colombia"):
        write_collection(inbox, col)
    expected: dict[str, dict] = {}

    # uint16, striped, nodata, scale/offset/unit, a band description
    p = write_geotiff(inbox / "clim" / "bio1.tif", dtype="uint16", nodata=0, scale=0.1, offset=-273.15,
                      units="K", descriptions=["bio1"], width=600, height=400)
    write_sidecar(p, id="bio1", datetime="1981-01-01T00:00:00Z", properties={"variable": "bio1"})
    expected["clim/bio1"] = {"nodata": 0, "scale": 0.1, "offset": -273.15, "unit": "K", "data_type": "uint16"}

    # float32 in Interrupted Goode Homolosine: no EPSG code, the item must carry WKT2
    p = write_geotiff(inbox / "soil" / "soc_0-5cm.tif", dtype="float32", nodata=-9999.0, crs=IGH_WKT,
                      transform=from_origin(-2_000_000, 2_000_000, 2000, 2000), width=500, height=500)
    write_sidecar(p, id="soc_0-5cm", datetime="2020-01-01", properties={"depth": "0-5cm"})
    expected["soil/soc_0-5cm"] = {"nodata": -9999.0, "data_type": "float32", "wkt2": True}

    # categorical uint8, tiled, internal mask, mode resampling
    p = write_geotiff(inbox / "landcover" / "lc-1992.tif", dtype="uint8", categorical=True, tiled=True,
                      mask=True, width=1024, height=1024)
    write_sidecar(p, collection_id="landcover", name="esacci-lc-1992", date="1992-01-01")  # original aliases
    expected["landcover/esacci-lc-1992"] = {"data_type": "uint8", "categorical": True}

    # RGB, multi-band
    p = write_geotiff(inbox / "clim" / "rgb.tif", dtype="uint8", count=3, width=300, height=300)
    write_sidecar(p, id="rgb", start_datetime="2000-01-01", end_datetime="2000-12-31T23:59:59Z")
    expected["clim/rgb"] = {"bands": 3}

    # int16 in EPSG:3116 (Colombia)
    p = write_geotiff(inbox / "colombia" / "cobertura.tif", dtype="int16", nodata=-1, crs="EPSG:3116",
                      transform=from_origin(1_000_000, 1_100_000, 30, 30), width=400, height=400)
    write_sidecar(p, id="cobertura-2018", datetime="2018-01-01")
    expected["colombia/cobertura-2018"] = {"epsg": 3116}

    # already a COG: stored as is
    src = write_geotiff(tmp_path / "src.tif", dtype="uint16", width=700, height=700)
    with rasterio.open(src) as ds:
        rasterio.shutil.copy(ds, tmp_path / "already.tif", driver="COG", COMPRESS="DEFLATE")
    shutil.copy(tmp_path / "already.tif", inbox / "clim" / "already-cog.tif")
    write_sidecar(inbox / "clim" / "already-cog.tif", id="already-cog", datetime="2001-01-01")
    expected["clim/already-cog"] = {"as_is": True}

    # no sidecar; the collection allows key-only metadata through its key template
    write_geotiff(inbox / "keyonly" / "tas_2010.tif", dtype="float32", width=200, height=100)
    expected["keyonly/tas_2010"] = {"properties": {"variable": "tas"}, "datetime": "2010-01-01T00:00:00Z"}

    with DaemonProcess(tmp_path, env) as daemon:
        ledger = ledger_for(env)
        jobs = wait_until(lambda: settled_jobs(ledger, 5 + len(expected)), 120, "all jobs settled", daemon)
        failed = [(j.source_key, j.error) for j in jobs if j.state != "published"]
        assert not failed, failed
        items = catalog_items(tmp_path / "data" / "stac")
        assert set(items) == set(expected)
        # the ledger keeps each published item's WGS84 bbox (the status page draws it)
        bboxes = {j.item_id: j.item_bbox for j in jobs if j.kind == "raster"}
        assert all(bboxes[item["id"]] == pytest.approx(item["bbox"]) for item in items.values()), bboxes
        out = cli(env, "queues", "--json")
        assert all(q["dead"] == 0 for q in json.loads(out.stdout))

    for key, item in items.items():
        validate_item(item, key)  # core schema (offline) and our extension checks
        asset = item["assets"]["data"]
        assert asset["roles"] == ["data"]
        assert asset["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
        west, south, east, north = item["bbox"]
        assert -180 <= west <= 180 and -90 <= south <= north <= 90
        valid, errors, _ = cog_validate(asset["href"], quiet=True)
        assert valid, (key, errors)
        with rasterio.open(asset["href"]) as ds:
            ds.read(1, window=((0, 16), (0, 16)))
            assert ds.crs is not None
        band = asset["raster:bands"][0]
        want = expected[key]
        for field in ("nodata", "scale", "offset", "unit", "data_type"):
            if field in want:
                assert band[field] == pytest.approx(want[field]) if isinstance(want[field], float) else \
                    band[field] == want[field], (key, field, band)
        assert band.get("spatial_resolution")
        assert "statistics" in band
        assert asset["file:size"] > 0 and asset["file:checksum"].startswith("1220")
        if want.get("wkt2"):
            assert "proj:wkt2" in item["properties"] and not item["properties"].get("proj:code")
        if "epsg" in want:
            assert item["properties"]["proj:code"] == f"EPSG:{want['epsg']}"
        if "bands" in want:
            assert len(asset["raster:bands"]) == want["bands"]
        if "properties" in want:
            for name, value in want["properties"].items():
                assert item["properties"][name] == value
        if "datetime" in want:
            assert item["properties"]["datetime"] == want["datetime"]
        if want.get("categorical"):
            with rasterio.open(asset["href"]) as ds:
                assert ds.overviews(1), "overviews expected"
                small = ds.read(1, out_shape=(64, 64))
                assert set(np.unique(small)) <= {0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140,
                                                 150, 160, 170, 180, 190, 200, 210, 220}
                assert ds.mask_flag_enums[0][0].name in ("per_dataset",), ds.mask_flag_enums
        if want.get("as_is"):
            original = (tmp_path / "already.tif").read_bytes()
            assert Path(asset["href"]).read_bytes() == original

    # the ledger shows each step and maps onto the original system's status steps
    job = ledger_for(env).list_jobs(collection="clim", limit=1)[0]
    full = ledger_for(env).get(job.id, with_events=True)
    steps = [e.step for e in full.events]
    for step in ("queued", "fetch", "validate", "convert", "store", "metadata", "publish", "finished"):
        assert step in steps, steps
    assert original_step(full) == "PROCESS FINISHED"


BAD_CORPUS = [
    # (file name, how to make it, expected error class, text the error must contain)
    ("corrupt.tif", "corrupt", "invalid_raster", "corrupt.tif"),
    ("truncated.tif", "truncated", "invalid_raster", "truncated.tif"),
    ("png-renamed.tif", "png", "invalid_raster", "png-renamed.tif"),
    ("no-crs.tif", "nocrs", "invalid_raster", "no-crs.tif"),
    ("zero.tif", "zero", "invalid_raster", "zero.tif"),
    ("badjson.tif", "badjson", "invalid_sidecar", "badjson.json"),
    ("baddate.tif", "baddate", "invalid_sidecar", "baddate.json"),
    ("forbidden.tif", "forbidden", "invalid_sidecar", "a:b"),
    ("dotdot.tif", "dotdot", "invalid_sidecar", "../"),
    ("ünï cødé spaced.tif", "spaced", "invalid_item", "ünï cødé spaced"),
]


def make_bad(inbox: Path, name: str, how: str, tmp: Path) -> None:
    path = inbox / "clim" / name
    good = {"datetime": "2000-01-01"}
    if how == "corrupt":
        src = write_geotiff(tmp / "c.tif", compress="deflate", tiled=True, width=512, height=512)
        data = bytearray(src.read_bytes())
        mid = len(data) // 2
        data[mid : mid + 4000] = b"\x00\xff" * 2000
        path.write_bytes(bytes(data))
    elif how == "truncated":
        src = write_geotiff(tmp / "t.tif", width=512, height=512)
        path.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    elif how == "png":
        with rasterio.open(tmp / "x.png", "w", driver="PNG", width=64, height=64, count=1, dtype="uint8") as ds:
            ds.write(np.zeros((1, 64, 64), dtype="uint8"))
        shutil.copy(tmp / "x.png", path)
    elif how == "nocrs":
        write_geotiff(path, crs=None)
    elif how == "zero":
        path.write_bytes(b"")
    else:
        write_geotiff(path, width=64, height=64)
    sidecar = path.with_suffix(".json")
    if how == "badjson":
        sidecar.write_text('{"datetime": "2000-01-01",')
    elif how == "baddate":
        sidecar.write_text(json.dumps({"datetime": "the year 2000"}))
    elif how == "forbidden":
        sidecar.write_text(json.dumps({"id": "a:b", **good}))
    elif how == "dotdot":
        sidecar.write_text(json.dumps({"collection": "../etc", **good}))
    else:
        sidecar.write_text(json.dumps(good))


def test_bad_inputs_fail_clearly_and_the_rest_publishes(tmp_path: Path, env: dict[str, str]) -> None:
    inbox = tmp_path / "inbox"
    write_collection(inbox, "clim")
    (tmp_path / "scratch").mkdir()
    for name, how, _, _ in BAD_CORPUS:
        make_bad(inbox, name, how, tmp_path / "scratch")
    # unknown collection: a folder with no collection.json
    p = write_geotiff(inbox / "nowhere" / "orphan.tif", width=64, height=64)
    write_sidecar(p, datetime="2000-01-01")
    # a raster whose sidecar never comes, in a collection that needs one
    write_geotiff(inbox / "clim" / "lonely.tif", width=64, height=64)
    # good neighbours, including unicode and spaces in the file name with a valid id in the sidecar
    p = write_geotiff(inbox / "clim" / "good.tif", width=64, height=64)
    write_sidecar(p, id="good", datetime="2000-01-01")
    p = write_geotiff(inbox / "clim" / "été 2020.tif", width=64, height=64)
    write_sidecar(p, id="ete-2020", datetime="2020-06-01")
    expected_errors = {name: (cls, text) for name, _, cls, text in BAD_CORPUS}
    expected_errors["orphan.tif"] = ("unknown_collection", "nowhere")
    expected_errors["lonely.tif"] = ("missing_sidecar", "lonely.json")

    with DaemonProcess(tmp_path, env) as daemon:
        ledger = ledger_for(env)
        total = 1 + len(expected_errors) + 2
        jobs = wait_until(lambda: settled_jobs(ledger, total), 120, "all jobs settled", daemon)
        by_name = {Path(j.source_key).name: j for j in jobs}
        for name, (cls, text) in expected_errors.items():
            job = by_name[name]
            assert job.state == "failed", (name, job.state, job.error)
            assert job.error_class == cls, (name, job.error_class, job.error)
            assert text in job.error, (name, job.error)
            assert Path(job.source_key).name.split(".")[0] in job.error or name in job.error, job.error
        assert by_name["good.tif"].state == "published"
        assert by_name["été 2020.tif"].state == "published"
        letters = bus_for(env).dead_letters()
        assert {d.envelope.job_id for d in letters} == {by_name[n].id for n in expected_errors}
        for letter in letters:
            # permanent errors are not retried: one attempt each
            assert letter.error and letter.error_class and letter.attempts == 1, letter
        assert daemon.alive()
        # the operator commands show them
        listed = json.loads(cli(env, "dlq", "list", "--json", "--error-class", "invalid_raster").stdout)
        assert len(listed) == 5
        shown = json.loads(cli(env, "dlq", "show", listed[0]["id"]).stdout)
        assert shown["message"]["job_id"] == listed[0]["job_id"] and shown["history"]
        text = cli(env, "job", by_name["zero.tif"].id).stdout
        assert "zero.tif" in text and "invalid_raster" in text

        # Fix the unknown collection, replay its dead letter: it publishes, and the job shows both attempts.
        write_collection(inbox, "nowhere")
        wait_until(lambda: (tmp_path / "data" / "stac" / "nowhere" / "collection.json").exists(), 30,
                   "collection published", daemon)
        out = cli(env, "dlq", "replay", "--collection", "nowhere")
        assert "replayed 1" in out.stdout
        orphan = by_name["orphan.tif"]
        wait_until(lambda: ledger.get(orphan.id).state == "published", 30, "replayed job published", daemon)
        events = ledger.get(orphan.id, with_events=True).events
        statuses = [e.status for e in events]
        assert statuses.count("started") >= 2 and "failed" in statuses and "replayed" in statuses
        assert "nowhere/orphan" in catalog_items(tmp_path / "data" / "stac")
        out = cli(env, "dlq", "purge", "--error-class", "invalid_raster", "--yes")
        assert "purged 5" in out.stdout


def test_same_content_twice_makes_no_second_job_and_changes_update_the_item(tmp_path: Path,
                                                                             env: dict[str, str]) -> None:
    inbox = tmp_path / "inbox"
    write_collection(inbox, "clim")
    raster = write_geotiff(tmp_path / "bio1.tif", width=128, height=128)
    with DaemonProcess(tmp_path, env) as daemon:
        ledger = ledger_for(env)
        shutil.copy(raster, inbox / "clim" / "bio1.tif")
        write_sidecar(inbox / "clim" / "bio1.tif", id="bio1", datetime="1981-01-01")
        wait_until(lambda: settled_jobs(ledger, 2), 60, "first publish", daemon)
        # the same bytes again (new mtime): no second job
        (inbox / "clim" / "bio1.tif").unlink()
        shutil.copy(raster, inbox / "clim" / "bio1.tif")
        time.sleep(3)
        assert len(ledger.list_jobs()) == 2
        # a changed sidecar: the item is updated in place (new datetime)
        write_sidecar(inbox / "clim" / "bio1.tif", id="bio1", datetime="1991-01-01")
        wait_until(lambda: settled_jobs(ledger, 3), 60, "update published", daemon)
        items = catalog_items(tmp_path / "data" / "stac")
        assert list(items) == ["clim/bio1"]
        assert items["clim/bio1"]["properties"]["datetime"] == "1991-01-01T00:00:00Z"
    # a restart scans the inbox and finds nothing new
    with DaemonProcess(tmp_path, env) as daemon:
        time.sleep(3)
        assert len(ledger.list_jobs()) == 3
        assert daemon.alive()


def test_rewriting_a_then_b_then_a_publishes_a(tmp_path: Path, env: dict[str, str]) -> None:
    """The third write equals the first job's content, not the latest's: it is a new job, and A wins."""
    inbox = tmp_path / "inbox"
    write_collection(inbox, "clim")
    shutil.copy(write_geotiff(tmp_path / "bio1.tif", width=64, height=64), inbox / "clim" / "bio1.tif")
    with DaemonProcess(tmp_path, env) as daemon:
        ledger = ledger_for(env)
        started = time.monotonic()
        for n, year in enumerate(["1981", "1991", "1981"]):
            write_sidecar(inbox / "clim" / "bio1.tif", id="bio1", datetime=f"{year}-01-01")
            wait_until(lambda n=n: len(ledger.list_jobs()) >= n + 2, 30, f"job for write {n + 1}", daemon)
        rewrites = time.monotonic() - started
        jobs = wait_until(lambda: settled_jobs(ledger, 4), 60, "all published", daemon)
        raster_jobs = [j for j in jobs if j.kind == "raster"]
        assert len(raster_jobs) == 3 and len({j.content_key for j in raster_jobs}) == 2
        items = catalog_items(tmp_path / "data" / "stac")
        assert items["clim/bio1"]["properties"]["datetime"] == "1981-01-01T00:00:00Z", rewrites


def test_kill9_during_conversions_loses_nothing(tmp_path: Path, env: dict[str, str]) -> None:
    inbox = tmp_path / "inbox"
    write_collection(inbox, "clim")
    count = 10
    for i in range(count):
        p = write_geotiff(inbox / "clim" / f"v{i:02d}.tif", width=3000, height=3000, seed=i)
        write_sidecar(p, id=f"v{i:02d}", datetime="2000-01-01")
    daemon = DaemonProcess(tmp_path, env).start()
    ledger = ledger_for(env)
    kills = 0
    try:
        for _ in range(3):
            # kill while a conversion is running, as long as there is work left
            converting = wait_until(
                lambda: ledger.list_jobs(state="processing", limit=1)
                or len(ledger.list_jobs(state="published", limit=1000)) == count + 1,
                120, "a conversion", daemon)
            if not isinstance(converting, list):
                break
            daemon.kill9()
            kills += 1
            daemon.start()
        wait_until(lambda: len(ledger.list_jobs(state="published", limit=1000)) == count + 1, 240,
                   "everything published after the kills", daemon)
    finally:
        daemon.stop()
    assert kills >= 1
    jobs = ledger.list_jobs(limit=1000)
    assert len(jobs) == count + 1, [(j.source_key, j.state) for j in jobs]
    assert {j.state for j in jobs} == {"published"}
    items = catalog_items(tmp_path / "data" / "stac")
    assert sorted(items) == [f"clim/v{i:02d}" for i in range(count)]
    assert bus_for(env).dead_letters() == []
    cogs = sorted(p.name for p in (tmp_path / "data" / "cogs" / "clim").glob("*"))
    assert cogs == [f"v{i:02d}.tif" for i in range(count)], cogs  # no partial or temporary files left


def test_config_masks_secrets(tmp_path: Path, env: dict[str, str]) -> None:
    env = {**env, "STACDROP_STAC_TOKEN": "s3cr3t", "STACDROP_BROKER": "amqp://user:pw123@host:5672/v"}
    out = cli(env, "config").stdout
    assert "s3cr3t" not in out and "pw123" not in out
    data = json.loads(out)
    assert data["stac_api"]["token"] == "***" and data["bus"]["url"] == "amqp://user:***@host:5672/v"
    assert data["collections"]["landcover"]["resampling"] == "mode"


def test_explain_shows_item_and_rules(tmp_path: Path, env: dict[str, str]) -> None:
    inbox = tmp_path / "inbox"
    p = write_geotiff(inbox / "keyonly" / "pr_2015.tif", width=64, height=64)
    out = cli(env, "explain", str(p)).stdout
    item = json.loads(out.split("\nfield provenance:")[0])
    assert item["id"] == "pr_2015" and item["properties"]["variable"] == "pr"
    assert item["properties"]["datetime"] == "2015-01-01T00:00:00Z"
    assert "key_template" in out.split("field provenance:")[1]
    assert not (tmp_path / "data" / "stac").exists()

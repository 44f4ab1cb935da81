"""A small running deployment for the metrics and status-page tests: ``stacdrop run`` on the embedded
default with one good and one bad raster already settled, and ``stacdrop serve`` beside it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from stacdrop.ledger import Job, Ledger
from tests.support.api_server import ApiServer
from tests.support.daemon import (
    DaemonProcess,
    base_env,
    ledger_for,
    settled_jobs,
    wait_until,
    write_collection,
    write_sidecar,
)
from tests.support.rasters import write_geotiff

TOKEN = "status-page-token"
COLLECTION = "clim"
# A file name with markup in it: the status page must show it as text, never as HTML.
BAD_NAME = "bad<b>raster.tif"


@dataclass
class Flowing:
    root: Path
    env: dict[str, str]
    daemon: DaemonProcess
    api: ApiServer
    ledger: Ledger
    good: Job
    bad: Job


@contextmanager
def flowing(root: Path, **overrides: str) -> Iterator[Flowing]:
    """Daemon and API up, the good raster published and the bad one failed and dead-lettered.
    ``overrides``: settings (e.g. STACDROP_BROKER / STACDROP_LEDGER for RabbitMQ and PostgreSQL)."""
    env = base_env(root, STACDROP_API_TOKEN=TOKEN, **overrides)
    inbox = root / "inbox"
    write_collection(inbox, COLLECTION)
    # A real GeoTIFF over Europe, so its footprint is somewhere recognisable on the map.
    from rasterio.transform import from_origin

    good = write_geotiff(inbox / COLLECTION / "bio1.tif", width=200, height=100,
                         transform=from_origin(-10.0, 60.0, 0.2, 0.2), crs="EPSG:4326")
    write_sidecar(good, id="bio1", datetime="1981-01-01T00:00:00Z")
    bad = inbox / COLLECTION / BAD_NAME
    bad.write_bytes(b"II*\x00" + b"this is not a raster" * 50)
    write_sidecar(bad, id="bad", datetime="1981-01-01T00:00:00Z")

    daemon = DaemonProcess(root, env, ["run"], name="run").start()
    api = ApiServer(root, env)
    ledger = ledger_for(env)
    try:
        jobs = wait_until(lambda: settled_jobs(ledger, 3), 120, "the collection and both rasters to settle", daemon)
        by_key = {j.source_key: j for j in jobs}
        good_job, bad_job = by_key[f"{COLLECTION}/bio1.tif"], by_key[f"{COLLECTION}/{BAD_NAME}"]
        assert good_job.state == "published", json.dumps(good_job.as_dict(), default=str)
        assert bad_job.state == "failed" and bad_job.error_class, json.dumps(bad_job.as_dict(), default=str)
        api.start()
        yield Flowing(root, env, daemon, api, ledger, good_job, bad_job)
    finally:
        api.stop()
        daemon.stop()
        ledger.close()

"""Deletes end to end (issue 13 item 4): ``stacdrop run`` as a subprocess; a raster removed from the inbox,
a local folder on the embedded default (SQLite bus and ledger, local store, static catalog) or a bucket on
the moto server, unpublishes its item and deletes its COG with ``on_delete = "unpublish"``, and changes
nothing but the fingerprint with ``keep``. Dropped again, it publishes again."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path

import boto3
import pytest

from stacdrop.ledger import Job, Ledger
from tests.support.daemon import (
    DaemonProcess,
    base_env,
    catalog_items,
    ledger_for,
    settled_jobs,
    wait_until,
    write_collection,
    write_sidecar,
)
from tests.support.rasters import write_geotiff

pytestmark = pytest.mark.e2e  # slow: daemons, servers or many rasters (the fast suite is -m 'not e2e')

COLLECTIONS = {"gone": {"on_delete": "unpublish"}, "kept": {"on_delete": "keep"}}
REASON = "source removed from the inbox"


def raster_jobs(ledger: Ledger, key: str) -> list[Job]:
    """The raster jobs of one inbox key, oldest first."""
    return sorted((j for j in ledger.list_jobs(limit=1000) if j.kind == "raster" and j.source_key == key),
                  key=lambda j: j.created_at)


def removal_jobs(ledger: Ledger) -> list[Job]:
    return [j for j in ledger.list_jobs(limit=1000) if j.kind == "removal"]


def unpublished(ledger: Ledger, key: str) -> Job | None:
    jobs = raster_jobs(ledger, key)
    return jobs[0] if jobs and jobs[0].state == "unpublished" else None


def test_a_raster_removed_from_the_local_inbox_is_unpublished_and_dropped_again_publishes(tmp_path: Path) -> None:
    env = base_env(tmp_path, STACDROP_COLLECTIONS=json.dumps(COLLECTIONS))
    inbox, cogs, stac = tmp_path / "inbox", tmp_path / "data" / "cogs", tmp_path / "data" / "stac"
    originals = tmp_path / "originals"
    for col in ("gone", "kept"):
        write_collection(inbox, col)
        path = write_geotiff(originals / col / "r.tif", dtype="uint16", nodata=0, width=128, height=128)
        write_sidecar(path, id=f"r-{col}", datetime="2001-01-01T00:00:00Z")
        (inbox / col).mkdir(parents=True, exist_ok=True)
        shutil.copy(originals / col / "r.json", inbox / col / "r.json")
        shutil.copy(path, inbox / col / "r.tif")
    with DaemonProcess(tmp_path, env) as daemon:
        ledger = ledger_for(env)
        jobs = wait_until(lambda: settled_jobs(ledger, 4), 120, "collections and rasters published", daemon)
        assert [j.error for j in jobs if j.state != "published"] == []
        assert sorted(catalog_items(stac)) == ["gone/r-gone", "kept/r-kept"]
        assert (cogs / "gone" / "r.tif").is_file() and (cogs / "kept" / "r.tif").is_file()
        published = raster_jobs(ledger, "gone/r.tif")[0]
        assert ledger.fingerprint("gone/r.tif") is not None

        (inbox / "gone" / "r.tif").unlink()
        (inbox / "kept" / "r.tif").unlink()
        job = wait_until(lambda: unpublished(ledger, "gone/r.tif"), 60, "the removed raster unpublished", daemon)
        assert job.id == published.id
        got = ledger.get(job.id, with_events=True)
        assert got is not None
        assert got.events[-1].status == "unpublished" and REASON in (got.events[-1].message or "")
        assert "item gone/r-gone deleted" in (got.events[-1].message or "")
        assert "COG gone/r.tif deleted" in (got.events[-1].message or "")
        assert sorted(catalog_items(stac)) == ["kept/r-kept"]
        assert not (cogs / "gone" / "r.tif").exists()
        [removal] = removal_jobs(ledger)
        assert (removal.state, removal.source, removal.collection) == (
            "unpublished", str(inbox / "gone" / "r.tif"), "gone")

        # keep: the item and the COG stay, only the fingerprint is forgotten
        wait_until(lambda: "its item is kept (on_delete = keep)" in daemon.logs(), 30, "the kept removal", daemon)
        wait_until(lambda: ledger.fingerprint("kept/r.tif") is None, 30, "kept fingerprint forgotten", daemon)
        assert ledger.fingerprint("gone/r.tif") is None
        assert "kept/r-kept" in catalog_items(stac) and (cogs / "kept" / "r.tif").is_file()
        assert [j.state for j in raster_jobs(ledger, "kept/r.tif")] == ["published"]
        assert len(removal_jobs(ledger)) == 1

        # the same file dropped again publishes again, as a new job
        shutil.copy(originals / "gone" / "r.tif", inbox / "gone" / "r.tif")
        again = wait_until(lambda: [j for j in raster_jobs(ledger, "gone/r.tif")[1:] if j.state == "published"],
                           60, "the re-created raster published", daemon)
        assert len(again) == 1 and again[0].id != published.id
        assert sorted(catalog_items(stac)) == ["gone/r-gone", "kept/r-kept"]
        assert (cogs / "gone" / "r.tif").is_file()


def test_a_key_deleted_from_the_s3_inbox_is_unpublished(tmp_path: Path, moto_url: str) -> None:
    secret = "moto-secret-deletes"
    bucket = f"inbox-{uuid.uuid4().hex[:10]}"
    client = boto3.client("s3", endpoint_url=moto_url, aws_access_key_id="test", aws_secret_access_key=secret,
                          region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    # No event feed: the reconciler, every second, is the only detection (of new keys and of keys gone).
    env = base_env(tmp_path, STACDROP_INBOX=f"s3://{bucket}/drop", AWS_ENDPOINT_URL=moto_url,
                   ARBUTUS_OBJECT_ACCESS_ID="test", ARBUTUS_OBJECT_ACCESS_KEY=secret,
                   AWS_DEFAULT_REGION="us-east-1", STACDROP_S3_EVENTS_AMQP="off", STACDROP_RECONCILE_INTERVAL="1",
                   STACDROP_COLLECTIONS=json.dumps(COLLECTIONS))
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        env.pop(name, None)
    local, cogs, stac = tmp_path / "files", tmp_path / "data" / "cogs", tmp_path / "data" / "stac"
    for col in ("gone", "kept"):
        client.put_object(Bucket=bucket, Key=f"drop/{col}/collection.json",
                          Body=write_collection(local, col).read_bytes())
        path = write_geotiff(local / col / "r.tif", dtype="uint16", nodata=0, width=128, height=128)
        side = write_sidecar(path, id=f"r-{col}", datetime="2001-01-01T00:00:00Z")
        client.put_object(Bucket=bucket, Key=f"drop/{col}/r.json", Body=side.read_bytes())
        client.put_object(Bucket=bucket, Key=f"drop/{col}/r.tif", Body=path.read_bytes())
    ns = f"s3://{bucket}/drop/"
    with DaemonProcess(tmp_path, env) as daemon:
        ledger = ledger_for(env)
        jobs = wait_until(lambda: settled_jobs(ledger, 4), 120, "collections and rasters published", daemon)
        assert [j.error for j in jobs if j.state != "published"] == []
        assert sorted(catalog_items(stac)) == ["gone/r-gone", "kept/r-kept"]
        assert (cogs / "gone" / "r.tif").is_file()

        client.delete_object(Bucket=bucket, Key="drop/gone/r.tif")
        client.delete_object(Bucket=bucket, Key="drop/kept/r.tif")
        job = wait_until(lambda: unpublished(ledger, "gone/r.tif"), 60, "the deleted key unpublished", daemon)
        got = ledger.get(job.id, with_events=True)
        assert got is not None and REASON in (got.events[-1].message or "")
        assert sorted(catalog_items(stac)) == ["kept/r-kept"]
        assert not (cogs / "gone" / "r.tif").exists()
        wait_until(lambda: ledger.fingerprint(ns + "kept/r.tif") is None, 30, "kept fingerprint forgotten", daemon)
        assert ledger.fingerprint(ns + "gone/r.tif") is None
        assert (cogs / "kept" / "r.tif").is_file() and "kept/r-kept" in catalog_items(stac)
        [removal] = removal_jobs(ledger)
        assert removal.state == "unpublished" and removal.source == f"s3://{bucket}/drop/gone/r.tif"

        # the next passes no longer see the key as gone; put back, it publishes again
        client.put_object(Bucket=bucket, Key="drop/gone/r.tif", Body=(local / "gone" / "r.tif").read_bytes())
        wait_until(lambda: [j for j in raster_jobs(ledger, "gone/r.tif")[1:] if j.state == "published"],
                   60, "the re-created key published", daemon)
        assert sorted(catalog_items(stac)) == ["gone/r-gone", "kept/r-kept"]
        assert len(removal_jobs(ledger)) == 1

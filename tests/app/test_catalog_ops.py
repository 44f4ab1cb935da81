"""Changing the catalog by hand (stacdrop/app/catalog_ops.py) with real components: a static catalog, a
local COG store and a SQLite ledger; ``stacdrop collection push`` and ``stacdrop unpublish`` run as the
command (``python -m stacdrop.app.cli``), the library calls directly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from processor.store import LocalStore
from publisher.static_catalog import StaticCatalog
from stacdrop.app.catalog_ops import NotACollection, push_collection, read_collection_file, unpublish_item
from stacdrop.app.components import open_ledger
from stacdrop.config import Settings
from stacdrop.errors import ErrorClass, StacdropError
from tests.support.rasters import write_geotiff
from tests.support.stac_items import make_collection, make_item

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(inbox=str(tmp_path / "inbox"), store=str(tmp_path / "cogs"), stac=str(tmp_path / "stac"),
                    ledger=f"sqlite:///{tmp_path / 'ledger.db'}", broker=f"sqlite:///{tmp_path / 'queue.db'}")


def cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(Path(settings.inbox.path).parent), "PYTHONPATH": str(ROOT),
           "STACDROP_INBOX": settings.inbox.path, "STACDROP_STORE": settings.store, "STACDROP_STAC": settings.stac,
           "STACDROP_LEDGER": settings.ledger, "STACDROP_BROKER": settings.bus.url}
    return subprocess.run([sys.executable, "-m", "stacdrop.app.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60, cwd=Path(settings.inbox.path).parent)


def test_collection_push_creates_then_updates_each_run_its_own_job(settings: Settings, tmp_path: Path) -> None:
    col = tmp_path / "col.json"
    col.write_text(json.dumps(make_collection("chelsa")))
    out = cli(settings, "collection", "push", str(col))
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("collection chelsa created (job ")
    assert "updated" in cli(settings, "collection", "push", str(col)).stdout
    assert StaticCatalog(Path(settings.stac)).get_collection("chelsa")["description"] == "CHELSA"
    found = open_ledger(settings).list_jobs(collection="chelsa")
    assert [(j.kind, j.state, j.origin) for j in found] == [("collection", "published", "cli")] * 2

    # no "id": refused before any job, the message as it always was
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    out = cli(settings, "collection", "push", str(bad))
    assert out.returncode == 1 and f'{bad}: not a STAC collection with an "id"' in out.stderr
    with pytest.raises(NotACollection):
        read_collection_file(bad)
    assert len(open_ledger(settings).list_jobs()) == 2


def test_a_collection_the_publisher_refuses_fails_its_job(settings: Settings, tmp_path: Path) -> None:
    col = tmp_path / "col.json"
    col.write_text(json.dumps({**make_collection("chelsa"), "type": "Feature"}))
    ledger = open_ledger(settings)
    with pytest.raises(StacdropError) as err:
        push_collection(settings, ledger, read_collection_file(col))
    assert err.value.error_class == ErrorClass.INVALID_COLLECTION
    (job,) = ledger.list_jobs(collection="chelsa")
    assert (job.state, job.error_class, job.step) == ("failed", "invalid_collection", "collection")
    out = cli(settings, "collection", "push", str(col))
    assert out.returncode == 1 and out.stderr.rstrip().endswith("[invalid_collection]")


def published_raster(settings: Settings, tmp_path: Path) -> tuple[str, Path]:
    """bio1 in collection chelsa as the stages leave it: its COG in the store, its item in the catalog and a
    published raster job that records the store key."""
    cat = StaticCatalog(Path(settings.stac))
    cat.upsert_collection(make_collection("chelsa"))
    cat.put_item(make_item("bio1", "chelsa"))
    stored = LocalStore(settings.store).put(write_geotiff(tmp_path / "bio1.tif"), "chelsa/bio1.tif",
                                            content_type="image/tiff")
    ledger = open_ledger(settings)
    job, _ = ledger.create_job(kind="raster", source="/inbox/chelsa/bio1.tif", source_key="chelsa/bio1.tif",
                               content_key="c1", collection="chelsa", origin="watch", priority=0)
    ledger.record(job.id, stage="publish", step="finished", status="succeeded", state="published", item_id="bio1",
                  cog_key=stored.key, cog_href=stored.href)
    return job.id, Path(settings.store) / stored.key


def test_unpublish_deletes_item_and_cog_and_marks_the_published_jobs(settings: Settings, tmp_path: Path) -> None:
    raster_job, cog = published_raster(settings, tmp_path)
    out = cli(settings, "unpublish", "bio1", "--collection", "chelsa", "--delete-cog")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("item chelsa/bio1 deleted; COG chelsa/bio1.tif deleted (job ")
    assert StaticCatalog(Path(settings.stac)).get_item("chelsa", "bio1") is None and not cog.exists()
    ledger = open_ledger(settings)
    assert ledger.get(raster_job).state == "unpublished"
    (job,) = [j for j in ledger.list_jobs(collection="chelsa") if j.kind == "unpublish"]
    assert (job.state, job.item_id, job.origin) == ("unpublished", "bio1", "cli")

    # again: nothing left to delete, said so, and a job of its own
    again = unpublish_item(settings, ledger, "chelsa", "bio1", delete_cog=True)
    assert again.message == ("item chelsa/bio1 was not in the catalog; "
                             "no COG deleted: no published job of this item records a store key")
    assert again.unpublished_jobs == [] and again.job_id != job.id

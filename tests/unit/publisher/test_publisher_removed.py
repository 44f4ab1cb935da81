"""The publisher's side of a source removed from the inbox (publisher/handler.py), on a real ledger (SQLite
and PostgreSQL), a real static catalog and a real local store: the races the e2e tests cannot time, a
version converted after its source went, and a source dropped again before its removal was handled."""

from __future__ import annotations

import uuid
from pathlib import Path

from processor import open_store
from publisher import StaticCatalog, make_publish_handler
from stacdrop.config import Collections, CollectionSettings
from stacdrop.ledger import REMOVAL_KIND, EventStatus, Job, JobState, Ledger, Stage
from stacdrop.messages import Envelope, RasterReady, Source, SourceRemoved
from stacdrop.runtime import StepRecorder
from tests.support.raster_ready import make_ready

KEY = "gone/r.tif"
URL = f"/inbox/{KEY}"
COLLECTIONS = Collections(CollectionSettings(create_if_missing=True, on_delete="unpublish"), {})


def _job(ledger: Ledger, kind: str = "raster") -> Job:
    job, _ = ledger.create_job(kind=kind, source=URL, source_key=KEY, content_key=f"{kind}-{uuid.uuid4().hex}",
                               collection="gone", origin="inbox", priority=5)
    return job


def _converted(ledger: Ledger, job: Job) -> Job:
    ledger.record(job.id, stage=Stage.PROCESS, step="start", status=EventStatus.STARTED, state=JobState.PROCESSING)
    ledger.record(job.id, stage=Stage.PROCESS, step="metadata", status=EventStatus.SUCCEEDED,
                  state=JobState.PUBLISHING, cog_key=KEY)
    got = ledger.get(job.id)
    assert got is not None
    return got


def _run(handler, ledger: Ledger, job: Job, body: RasterReady | SourceRemoved):
    outcome = handler(Envelope.wrap(job.id, body), job, StepRecorder(ledger, job.id, Stage.PUBLISH, 1))
    ledger.record(job.id, stage=Stage.PUBLISH, step=outcome.step, status=EventStatus.SUCCEEDED,
                  message=outcome.message, state=outcome.state, **outcome.fields)
    return outcome


def _setup(tmp_path: Path, ledger: Ledger):
    store = open_store(str(tmp_path / "cogs"), None)
    cog = tmp_path / "cogs" / KEY
    cog.parent.mkdir(parents=True)
    cog.write_bytes(b"cog")
    sink = StaticCatalog(tmp_path / "stac")
    return make_publish_handler(COLLECTIONS, sink, ledger, store.delete), sink, cog


def _ready() -> RasterReady:
    return make_ready(KEY, sidecar={"id": "r", "datetime": "2001-01-01"})


def _removed(job_ids: list[str]) -> SourceRemoved:
    return SourceRemoved(source=Source(url=URL, key=KEY, content_key="removed"), collection="gone", job_ids=job_ids)


def test_a_version_converted_after_its_source_was_removed_is_skipped_and_its_cog_deleted(
        tmp_path: Path, ledger: Ledger) -> None:
    handler, sink, cog = _setup(tmp_path, ledger)
    version = _converted(ledger, _job(ledger))
    removal = _job(ledger, REMOVAL_KIND)
    outcome = _run(handler, ledger, removal, _removed([]))
    assert outcome.state == JobState.UNPUBLISHED and "COG gone/r.tif deleted" in outcome.message
    cog.write_bytes(b"cog")  # the version's COG, stored once more by a late processor
    outcome = _run(handler, ledger, version, _ready())
    assert outcome.state == JobState.SKIPPED
    assert outcome.message == f"source removed from the inbox (job {removal.id}): not published; COG {KEY} deleted"
    assert not cog.exists() and sink.get_item("gone", "r") is None


def test_a_source_dropped_again_before_its_removal_is_handled_keeps_its_item_and_cog(
        tmp_path: Path, ledger: Ledger) -> None:
    handler, sink, cog = _setup(tmp_path, ledger)
    first = _converted(ledger, _job(ledger))
    assert _run(handler, ledger, first, _ready()).state == JobState.PUBLISHED
    assert sink.get_item("gone", "r") is not None
    removal = _job(ledger, REMOVAL_KIND)
    _converted(ledger, _job(ledger))  # dropped again: its COG is at the same key
    outcome = _run(handler, ledger, removal, _removed([first.id]))
    assert outcome.state == JobState.UNPUBLISHED and "dropped again since" in outcome.message
    assert sink.get_item("gone", "r") is not None and cog.exists()
    got = ledger.get(first.id, with_events=True)
    assert got is not None and got.state == JobState.UNPUBLISHED
    assert (got.events[-1].message or "").startswith("source removed from the inbox: dropped again since")

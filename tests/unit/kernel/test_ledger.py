"""The job ledger against SQLite and a real PostgreSQL (the ``ledger`` fixture, one per engine, is in
tests/conftest.py)."""

from __future__ import annotations

import sqlalchemy as sa

from stacdrop.app.api.compat import original_step
from stacdrop.ledger import JobState, Ledger


def _create(ledger: Ledger, source: str = "/in/c/a.tif", content: str = "sha1+side1"):
    return ledger.create_job(kind="raster", source=source, source_key="c/a.tif", content_key=content,
                             collection="c", origin="inbox", priority=5, params={"sidecar": "c/a.json"})


def test_same_content_is_one_job_changed_content_a_new_one(ledger: Ledger) -> None:
    job, created = _create(ledger)
    assert created and job.state == "new"
    again, created = _create(ledger)
    assert not created and again.id == job.id
    changed, created = _create(ledger, content="sha1+side2")
    assert created and changed.id != job.id


def test_the_latest_content_wins_a_b_a_is_three_jobs(ledger: Ledger) -> None:
    a, _ = _create(ledger, content="A")
    b, created_b = _create(ledger, content="B")
    a2, created_a2 = _create(ledger, content="A")
    assert created_b and created_a2 and len({a.id, b.id, a2.id}) == 3
    again, created = _create(ledger, content="A")  # the same as the latest: a duplicate
    assert not created and again.id == a2.id


def test_a_failed_job_dropped_again_gets_a_new_job(ledger: Ledger) -> None:
    job, _ = _create(ledger)
    ledger.record(job.id, stage="process", step="validate", status="failed", state=JobState.FAILED,
                  error_class="invalid_raster", error="c/a.tif: no CRS")
    again, created = _create(ledger)
    assert created and again.id != job.id


def test_history_and_fields(ledger: Ledger) -> None:
    job, _ = _create(ledger)
    ledger.record(job.id, stage="watch", step="queued", status="queued", state=JobState.QUEUED)
    ledger.record(job.id, stage="process", step="convert", status="retrying", state="retrying",
                  error_class="network", error="reset", attempt=1)
    ledger.record(job.id, stage="publish", step="finished", status="succeeded", state=JobState.PUBLISHED, attempt=2,
                  item_id="a", cog_sha256="f" * 64, cog_size=10)
    got = ledger.get(job.id, with_events=True)
    assert got.state == JobState.PUBLISHED and got.item_id == "a" and got.cog_size == 10
    assert got.error is None and got.error_class is None  # success clears the last error
    assert got.finished_at is not None and original_step(got) == "PROCESS FINISHED"
    assert [e.status for e in got.events] == ["created", "queued", "retrying", "succeeded"]
    assert got.params == {"sidecar": "c/a.json"}
    assert ledger.count_by_state() == {JobState.PUBLISHED: 1}


def test_list_filters_and_cursor(ledger: Ledger) -> None:
    ids = [_create(ledger, source=f"/in/c/{i}.tif")[0].id for i in range(5)]
    page1 = ledger.list_jobs(limit=2)
    page2 = ledger.list_jobs(limit=2, before=(page1[-1].created_at, page1[-1].id))
    page3 = ledger.list_jobs(limit=2, before=(page2[-1].created_at, page2[-1].id))
    seen = [j.id for j in page1 + page2 + page3]
    assert sorted(seen) == sorted(ids) and len(set(seen)) == 5
    assert ledger.list_jobs(state="new", collection="c", limit=10)
    assert ledger.list_jobs(collection="other") == []


def test_newer_published_version_wins(ledger: Ledger) -> None:
    old, _ = _create(ledger, content="v1")
    new, _ = _create(ledger, content="v2")
    ledger.record(new.id, stage="publish", step="finished", status="succeeded", state=JobState.PUBLISHED)
    assert ledger.newer_published(old) == new.id
    assert ledger.newer_published(new) is None


def test_fingerprints_stream_in_binary_order(ledger: Ledger) -> None:
    keys = ["b/x.tif", "a/é.tif", "a/Z.tif", "a/z.tif", "a b/1.tif"]
    for i, key in enumerate(keys):
        ledger.remember_fingerprint(key, f"fp{i}")
    ledger.remember_fingerprint("a/z.tif", "changed")
    assert ledger.fingerprint("a/z.tif") == "changed"
    streamed = list(ledger.iter_fingerprints(batch=2))
    assert [k for k, _ in streamed] == sorted(keys, key=lambda k: k.encode())
    assert [k for k, _ in ledger.iter_fingerprints(prefix="a/")] == ["a/Z.tif", "a/z.tif", "a/é.tif"]


def test_a_late_outcome_of_an_earlier_stage_does_not_move_the_job_back(ledger: Ledger) -> None:
    """The runtime records a stage's outcome after publishing its output: the next stage may be done first."""
    job, _ = _create(ledger)
    ledger.record(job.id, stage="process", step="start", status="started", state="processing", attempts=1)
    ledger.record(job.id, stage="publish", step="start", status="started", state="publishing", attempts=2)
    ledger.record(job.id, stage="publish", step="finished", status="succeeded", state=JobState.PUBLISHED)
    ledger.record(job.id, stage="process", step="metadata", status="succeeded", state="publishing",
                  cog_key="c/a.tif", cog_size=5)
    ledger.record(job.id, stage="watch", step="queued", status="queued", state=JobState.QUEUED)
    got = ledger.get(job.id, with_events=True)
    assert (got.state, got.stage, got.step) == (JobState.PUBLISHED, "publish", "finished")
    assert got.finished_at is not None
    assert (got.cog_key, got.cog_size) == ("c/a.tif", 5)  # outputs are written all the same
    assert [(e.stage, e.status) for e in got.events][-2:] == [("process", "succeeded"), ("watch", "queued")]
    # An earlier stage still moves its own job on: a process retry, then a success.
    other, _ = _create(ledger, source="/in/c/b.tif")
    ledger.record(other.id, stage="watch", step="queued", status="queued", state=JobState.QUEUED)
    ledger.record(other.id, stage="process", step="convert", status="retrying", state="retrying",
                  error_class="conversion_failed", error="boom")
    ledger.record(other.id, stage="process", step="metadata", status="succeeded", state="publishing")
    got = ledger.get(other.id)
    assert (got.state, got.stage, got.error_class, got.error) == ("publishing", "process", None, None)


def test_published_bbox_is_kept_and_an_older_ledger_gains_the_column(ledger: Ledger) -> None:
    job, _ = _create(ledger)
    ledger.record(job.id, stage="publish", step="finished", status="succeeded", state=JobState.PUBLISHED,
                  item_id="a", item_bbox=[-75.5, 4.0, -74.0, 5.25])
    assert ledger.get(job.id).item_bbox == [-75.5, 4.0, -74.0, 5.25]
    # A ledger written by a stacdrop without the column: opening it adds the column, rows read as None.
    with ledger.engine.begin() as conn:
        conn.execute(sa.text("ALTER TABLE jobs DROP COLUMN item_bbox"))
    reopened = Ledger(ledger.url)
    try:
        assert reopened.get(job.id).item_bbox is None
        reopened.record(job.id, stage="publish", step="finished", status="succeeded", item_bbox=[0, 0, 1, 1])
        assert reopened.get(job.id).item_bbox == [0.0, 0.0, 1.0, 1.0]
    finally:
        reopened.close()

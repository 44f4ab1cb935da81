"""The job states and their one table of allowed moves (stacdrop/ledger/states.py), enforced by the ledger's
writes on a real SQLite and a real PostgreSQL ledger."""

from __future__ import annotations

import json

import pytest

from stacdrop.ledger import TRANSITIONS, EventStatus, JobState, Ledger, Record, Stage, TransitionRefused
from stacdrop.ledger.states import FINAL_STATES, predecessors



def _job(ledger: Ledger, n: int = 0) -> str:
    job, _ = ledger.create_job(kind="raster", source=f"/in/c/{n}.tif", source_key=f"c/{n}.tif",
                               content_key="k", collection="c", origin="inbox", priority=5)
    return job.id


def test_the_enums_are_the_stored_strings() -> None:
    assert JobState.QUEUED == "queued" and Stage.PUBLISH == "publish" and EventStatus.WAITING == "waiting"
    assert json.dumps({"state": JobState.FAILED}) == '{"state": "failed"}'
    assert set(TRANSITIONS) == set(JobState)  # every state is in the table, even those nothing leaves
    assert predecessors(JobState.NEW) == frozenset()  # only create_job makes a "new" job
    assert all(TRANSITIONS[s] <= {s, JobState.UNPUBLISHED} for s in FINAL_STATES if s != JobState.FAILED)


def test_the_pipeline_moves_are_allowed(ledger: Ledger) -> None:
    job_id = _job(ledger)
    for stage, status, state in [
        (Stage.WATCH, EventStatus.QUEUED, JobState.QUEUED),
        (Stage.PROCESS, EventStatus.STARTED, JobState.PROCESSING),
        (Stage.PROCESS, EventStatus.RETRYING, JobState.RETRYING),
        (Stage.PROCESS, EventStatus.STARTED, JobState.PROCESSING),
        (Stage.PROCESS, EventStatus.SUCCEEDED, JobState.PUBLISHING),
        (Stage.PUBLISH, EventStatus.STARTED, JobState.PUBLISHING),
        (Stage.PUBLISH, EventStatus.SUCCEEDED, JobState.PUBLISHED),
        (Stage.PUBLISH, EventStatus.UNPUBLISHED, JobState.UNPUBLISHED),
    ]:
        ledger.record(job_id, stage=stage, step="x", status=status, state=state)
    got = ledger.get(job_id, with_events=True)
    assert got is not None and got.state == JobState.UNPUBLISHED and type(got.state) is str  # stored plain
    assert [e.status for e in got.events][-2:] == ["succeeded", "unpublished"]
    assert ledger.count_by_state() == {"unpublished": 1}


def test_a_move_out_of_a_final_state_is_refused_and_writes_nothing(ledger: Ledger) -> None:
    job_id = _job(ledger)
    ledger.record(job_id, stage=Stage.PUBLISH, step="finished", status=EventStatus.SUCCEEDED,
                  state=JobState.PUBLISHED)
    with pytest.raises(TransitionRefused) as refused:
        ledger.record(job_id, stage=Stage.PUBLISH, step="queued", status=EventStatus.REPLAYED,
                      state=JobState.QUEUED, message="replayed")
    assert (refused.value.job_id, refused.value.before, refused.value.after) == (job_id, "published", "queued")
    assert job_id in str(refused.value) and "'published' to 'queued'" in str(refused.value)
    assert isinstance(refused.value, ValueError)
    got = ledger.get(job_id, with_events=True)
    assert got is not None and (got.state, got.step) == ("published", "finished")
    assert [e.status for e in got.events] == ["created", "succeeded"]  # the refused write's event is not kept


def test_a_refused_move_in_a_batch_writes_none_of_the_batch(ledger: Ledger) -> None:
    ids = [_job(ledger, n) for n in range(30)]
    started = [Record(i, stage=Stage.PROCESS, step="start", status=EventStatus.STARTED,
                      fields={"state": JobState.PROCESSING, "attempts": 1}) for i in ids]
    ledger.record_many(started)  # one statement, 30 parameter sets: every move allowed
    assert ledger.count_by_state() == {"processing": 30}
    outcomes = [Record(i, stage=Stage.PROCESS, step="metadata", status=EventStatus.SUCCEEDED,
                       fields={"state": JobState.PUBLISHING}) for i in ids]
    # "processing" -> "published" skips the publish stage's start: refused, and the batch with it.
    outcomes[17] = Record(ids[17], stage=Stage.PUBLISH, step="finished", status=EventStatus.SUCCEEDED,
                          fields={"state": JobState.PUBLISHED})
    with pytest.raises(TransitionRefused, match=ids[17]):
        ledger.record_many(outcomes)
    assert ledger.count_by_state() == {"processing": 30}
    assert all(len(ledger.get(i, with_events=True).events) == 2 for i in ids)  # type: ignore[union-attr]


def test_what_the_table_does_not_check(ledger: Ledger) -> None:
    job_id = _job(ledger)
    ledger.record(job_id, stage=Stage.PUBLISH, step="finished", status=EventStatus.SUCCEEDED,
                  state=JobState.PUBLISHED)
    # The late outcome of an earlier stage keeps the job's state (the stage guard): it moves nothing.
    ledger.record(job_id, stage=Stage.PROCESS, step="metadata", status=EventStatus.SUCCEEDED,
                  state=JobState.PUBLISHING, cog_key="c/0.tif")
    got = ledger.get(job_id)
    assert got is not None and (got.state, got.cog_key) == ("published", "c/0.tif")
    # A write that sets no state, and a write to a job that does not exist, are not moves.
    ledger.record(job_id, stage=Stage.PUBLISH, step="note", status=EventStatus.RUNNING)
    ledger.record("0" * 32, stage=Stage.PROCESS, step="start", status=EventStatus.STARTED,
                  state=JobState.PROCESSING)
    # A state that is not in the table is refused from anywhere.
    with pytest.raises(TransitionRefused):
        ledger.record(_job(ledger, 1), stage=Stage.WATCH, step="queued", status="queued", state="lost")

"""The ledger's vocabulary: job states, stages, event statuses, and the one table of allowed state moves.

They are ``StrEnum``s, so a member equals the string the ledger already holds (``JobState.QUEUED ==
"queued"``): rows written by an older stacdrop, the JSON of the API and the CLI, and the messages on the
bus keep their plain strings.

``TRANSITIONS`` is checked by the ledger's write path (``Ledger.record``/``record_many``): a write that would
move a job along a pair not in it is refused (``TransitionRefused``) and nothing of it is written. The table
is what the code does, including its races, since several writers may touch one job at once:

- the intake puts a message on the bus *before* recording "queued", and a replay of a dead letter moves the
  message before recording it, so a stage's start (and even its outcome) may be recorded before "queued";
- a redelivered message (a broker connection dropped, the worker did not) runs a second attempt beside the
  first, so any outcome of a stage may follow any other state of that stage ("retrying" then "published");
- a failure the ledger missed (the ledger was down when ``_record_failure`` ran) leaves a dead-lettered job
  "processing", "publishing" or "retrying": a replay moves it to "queued" from there;
- a job made by a command run by hand (``stacdrop collection push``, ``stacdrop unpublish``) goes from
  "new" straight to its outcome;
- a removal job (a source removed from the inbox, ``on_delete = "unpublish"``) is a publish-stage job
  whose outcome is "unpublished": it ends so from wherever the publish stage's other outcomes may.

What stays refused is what no code path does: leaving a final state ("published" only to "unpublished"),
going back to "new", and a stage's outcome without its start ("new" -> "retrying", "processing" ->
"published").

A write whose stage is behind the job's (the late outcome of an earlier stage) keeps the job's state (the
stage guard in ``stacdrop.ledger.jobs``), so it moves nothing and is not checked.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    NEW = "new"  # created but not yet on the bus (a crash there is healed at start-up: Intake.recover)
    QUEUED = "queued"
    PROCESSING = "processing"
    PUBLISHING = "publishing"
    RETRYING = "retrying"
    PUBLISHED = "published"
    FAILED = "failed"
    SKIPPED = "skipped"
    UNPUBLISHED = "unpublished"


class Stage(StrEnum):
    """The pipeline's stages, in order (``STAGES``); also the names of the work queues of the last two."""

    WATCH = "watch"
    PROCESS = "process"
    PUBLISH = "publish"


class EventStatus(StrEnum):
    """The status of an entry of a job's history (``job_events.status``)."""

    CREATED = "created"  # the job was made (Ledger.create_job)
    QUEUED = "queued"  # its message is on the bus (the intake)
    REPLAYED = "replayed"  # a dead letter of it was replayed
    STARTED = "started"  # a stage attempt began (the runtime)
    RUNNING = "running"  # a step of that attempt began (StepRecorder)
    SUCCEEDED = "succeeded"
    WAITING = "waiting"  # failed for a reason that is not the job's: back on the queue, uncounted
    RETRYING = "retrying"
    FAILED = "failed"
    UNPUBLISHED = "unpublished"  # its item was deleted from the catalog (stacdrop unpublish)


STAGES = (Stage.WATCH, Stage.PROCESS, Stage.PUBLISH)
FINAL_STATES = (JobState.PUBLISHED, JobState.FAILED, JobState.SKIPPED, JobState.UNPUBLISHED)
UNFINISHED_STATES = tuple(s for s in JobState if s not in FINAL_STATES)

_S = JobState
# {from: the states a write may move a job to}. A state missing as a key is left by no write.
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    # intake (queued); a stage starting before the intake recorded "queued"; a command run by hand
    _S.NEW: frozenset({_S.QUEUED, _S.PROCESSING, _S.PUBLISHING, _S.PUBLISHED, _S.FAILED, _S.UNPUBLISHED}),
    # queued again (a second submission of a job still "new", a replay); started; a replay's race
    _S.QUEUED: frozenset({_S.QUEUED, _S.PROCESSING, _S.PUBLISHING, _S.RETRYING, _S.FAILED, _S.PUBLISHED,
                          _S.SKIPPED, _S.UNPUBLISHED}),
    # a redelivery or an uncounted wait; processed; retry; failed; replay of a failure the ledger missed
    _S.PROCESSING: frozenset({_S.QUEUED, _S.PROCESSING, _S.PUBLISHING, _S.RETRYING, _S.FAILED}),
    # the publish stage starts (or waits) over the process stage's outcome; its outcomes
    _S.PUBLISHING: frozenset({_S.QUEUED, _S.PUBLISHING, _S.RETRYING, _S.FAILED, _S.PUBLISHED, _S.SKIPPED,
                              _S.UNPUBLISHED}),
    # the next attempt; a second attempt beside it finishing
    _S.RETRYING: frozenset({_S.QUEUED, _S.PROCESSING, _S.PUBLISHING, _S.RETRYING, _S.FAILED, _S.PUBLISHED,
                            _S.SKIPPED, _S.UNPUBLISHED}),
    # replayed; a redelivery (dead-lettering failed after the failure was recorded); a second attempt
    _S.FAILED: frozenset({_S.QUEUED, _S.PROCESSING, _S.PUBLISHING, _S.RETRYING, _S.FAILED, _S.PUBLISHED,
                          _S.SKIPPED, _S.UNPUBLISHED}),
    # a second attempt publishing the same item again; the item deleted from the catalog
    _S.PUBLISHED: frozenset({_S.PUBLISHED, _S.UNPUBLISHED}),
    _S.SKIPPED: frozenset({_S.SKIPPED}),
    _S.UNPUBLISHED: frozenset({_S.UNPUBLISHED}),  # two unpublish commands of one item at once
}


def predecessors(state: str) -> frozenset[JobState]:
    """The states from which a write may move a job to ``state``."""
    return frozenset(before for before, after in TRANSITIONS.items() if state in after)


class TransitionRefused(ValueError):
    """A ledger write would move a job along a pair of states that ``TRANSITIONS`` does not allow."""

    def __init__(self, job_id: str, before: str, after: str) -> None:
        allowed = sorted(TRANSITIONS.get(before, ()))  # type: ignore[call-overload]
        super().__init__(f"job {job_id}: a write may not move it from {before!r} to {after!r} "
                         f"(from {before!r} only to {', '.join(allowed) or 'nothing'}; stacdrop.ledger.states)")
        self.job_id = job_id
        self.before = before
        self.after = after

"""The stage runtime: runs a plain stage handler on every delivery of one queue.

For each delivery it (1) skips work the job has already done (a redelivery after a crash), (2) records
the attempt on the job, (3) calls the handler, (4) on success publishes the handler's next messages,
records the outcome, and only then acks, so an outcome is durable before its message is forgotten;
(5) on failure asks the RetryPolicy: a transient error is retried later with backoff, a permanent one
or the last retry goes to the dead letters, and the job says why.

Outages are not the job's fault. An error that names a dependency (``StacdropError.dependency``: the STAC
API, the store) is checked with that dependency's probe (``probes``, see stacdrop/probes.py) before the
attempt is counted. When the probe fails too, the dependency is down: the message goes back *without*
spending an attempt (``Delivery.retry(counted=False)``, the error kept in its history), the job shows
"waiting", and the stage pauses, probing with backoff up to ``probe_max`` seconds apart, until the
dependency answers again; then it takes the next message. So an outage of any length dead-letters
nothing, and only errors that persist while the dependency answers (a 409/404 loop, a failed read-back,
a bucket that answers 403) count against ``max_retries``. An error that says nothing about the job itself
(``counts_attempt = False``) goes back uncounted without pausing the stage, since other jobs may go ahead:
another live worker holds its claim (stacdrop/claims.py), or its source host is unreachable. A source host
may be gone for good, so that run stays uncounted for ``RetryPolicy.outage_patience`` (an hour) only.
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import structlog

from stacdrop.bus.base import Bus, Delivery
from stacdrop.errors import ErrorClass, classify
from stacdrop.ledger import EventStatus, Job, JobState, Ledger, PendingEvent, Record, Stage
from stacdrop.messages import Envelope
from stacdrop.times import utcnow
from stacdrop.retry import RetryPolicy

log = structlog.get_logger("stacdrop.runtime")


@dataclass
class StageOutcome:
    """What a handler returns on success."""

    state: JobState
    step: str
    message: str
    outputs: list[tuple[str, Envelope]] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)


class StepRecorder:
    """Handed to a handler so that the job shows which step it is in (fetch, convert, store, ...).

    Steps of quick work are kept in memory and written with the stage's outcome in one transaction (a
    ledger write per step would cost more than converting a small raster); once a stage has run for
    ``flush_after`` seconds, every step is written as it starts, so long conversions show live.
    """

    def __init__(self, ledger: Ledger, job_id: str, stage: str, attempt: int, flush_after: float = 0.5) -> None:
        self.ledger = ledger
        self.job_id = job_id
        self.stage = stage
        self.attempt = attempt
        self.current = "start"
        self.started = time.monotonic()
        self.flush_after = flush_after
        self.pending: list[PendingEvent] = []

    def __call__(self, step: str, message: str | None = None) -> None:
        self.current = step
        self.pending.append(PendingEvent(stage=self.stage, step=step, status=EventStatus.RUNNING, attempt=self.attempt,
                                         message=message, at=utcnow()))
        if time.monotonic() - self.started >= self.flush_after:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.ledger.add_events(self.job_id, self.pending, step=self.current)
            self.pending = []


StageHandler = Callable[[Envelope, Job, StepRecorder], StageOutcome]
# Handles several deliveries at once; one result per entry, in order: its outcome or its own error.
BatchStageHandler = Callable[[list[tuple[Envelope, Job, StepRecorder]]], list["StageOutcome | Exception"]]

# A delivery whose attempt is recorded: (delivery, its job, the step recorder, the attempt number).
Started = tuple[Delivery, Job, StepRecorder, int]

# Job states from which a stage's work counts as done: a redelivered message is acked without work.
DONE_STATES = {
    Stage.PROCESS: {JobState.PUBLISHING, JobState.PUBLISHED, JobState.SKIPPED, JobState.UNPUBLISHED},
    Stage.PUBLISH: {JobState.PUBLISHED, JobState.SKIPPED, JobState.UNPUBLISHED},
}
RUNNING_STATE = {Stage.PROCESS: JobState.PROCESSING, Stage.PUBLISH: JobState.PUBLISHING}


class StageRunner:
    def __init__(
        self, stage: str, handler: StageHandler, *, bus: Bus, ledger: Ledger, policy: RetryPolicy,
        batch_handler: BatchStageHandler | None = None, batch_size: int = 1, batch_window: float = 0.0,
        probes: dict[str, Callable[[], None]] | None = None, probe_max: float = 30.0,
    ) -> None:
        self.probes = dict(probes or {})
        self.probe_max = probe_max
        self._stop = threading.Event()
        self._probed: dict[str, bool] = {}  # dependency -> down, probed once per delivery or batch
        self._paused: str | None = None
        self.batch_handler = batch_handler
        self.batch_size = batch_size
        self.batch_window = batch_window
        self.stage = Stage(stage)
        self.queue = str(stage)
        self.handler = handler
        self.bus = bus
        self.ledger = ledger
        self.policy = policy

    def run(self, stop: threading.Event, prefetch: int = 1) -> None:
        self._stop = stop
        log.info("consuming", stage=self.stage, queue=self.queue)
        if self.batch_handler is not None and self.batch_size > 1 and self.batch_window > 0:
            self.bus.consume_batch(self.queue, self.on_batch, stop, max_batch=self.batch_size,
                                   max_wait=self.batch_window)
            return
        self.bus.consume(self.queue, self.on_delivery, stop, prefetch=prefetch)

    def on_delivery(self, delivery: Delivery) -> None:
        self._run([delivery], self._call_single, flush_after=0.5)

    def on_batch(self, deliveries: list[Delivery]) -> None:
        """What ``on_delivery`` does, for several deliveries with one call of the batch handler, one ledger
        transaction for their starts and one for their outcomes.

        Each delivery is checked and settled on its own: one failing entry never fails the others.
        """
        assert self.batch_handler is not None
        if len(deliveries) == 1:
            self.on_delivery(deliveries[0])
            return
        first: list[Delivery] = []
        again: list[Delivery] = []  # a second message of a job in this batch (e.g. an output published twice)
        seen: set[str] = set()
        for delivery in deliveries:
            (again if delivery.envelope.job_id in seen else first).append(delivery)
            seen.add(delivery.envelope.job_id)
        # Steps of a batch are written with its outcome: per-entry flushes would cost a transaction each.
        self._run(first, self._call_batch, flush_after=float("inf"))
        for delivery in again:  # after the batch: usually "already done", acked without work
            self.on_delivery(delivery)

    def _call_single(self, started: list[Started]) -> list[StageOutcome | Exception]:
        (delivery, job, steps, _), = started
        try:
            return [self.handler(delivery.envelope, job, steps)]
        except Exception as exc:  # noqa: BLE001 - every failure is classified and recorded
            return [exc]

    def _call_batch(self, started: list[Started]) -> list[StageOutcome | Exception]:
        assert self.batch_handler is not None
        try:
            results = self.batch_handler([(d.envelope, job, steps) for d, job, steps, _ in started])
            if len(results) != len(started):
                raise RuntimeError(f"batch handler returned {len(results)} results for {len(started)} entries")
        except Exception as exc:  # noqa: BLE001 - the whole batch failed: each entry fails with it
            results = [exc] * len(started)
        return results

    def _run(self, deliveries: list[Delivery],
             call: Callable[[list[Started]], list[StageOutcome | Exception]], flush_after: float) -> None:
        self._probed = {}
        started = self._start(deliveries, flush_after)
        if started:
            self._finish(started, call(started))
        if self._paused is not None:
            self._wait_for(self._paused)

    # -- outages ----------------------------------------------------------------------------------------
    def _down(self, exc: Exception) -> str | None:
        """The dependency ``exc`` names when its probe fails now (once per delivery or batch), else None."""
        dependency: str | None = getattr(exc, "dependency", None)
        probe = self.probes.get(dependency) if dependency else None
        if dependency is None or probe is None:
            return None
        if dependency not in self._probed:
            try:
                probe()
                self._probed[dependency] = False
            except Exception:  # noqa: BLE001 - any failure of the probe means "still down"
                self._probed[dependency] = True
        return dependency if self._probed[dependency] else None

    def _wait_for(self, dependency: str) -> None:
        """Pause this stage until ``dependency``'s probe answers (or the stage is stopped)."""
        probe = self.probes[dependency]
        delay, since = 1.0, time.monotonic()
        log.warning("dependency unreachable; stage paused, probing", dependency=dependency)
        while not self._stop.wait(delay):
            try:
                probe()
            except Exception as exc:  # noqa: BLE001 - still down: probe again later
                delay = min(delay * 2, self.probe_max)
                log.info("dependency still unreachable", dependency=dependency, error=type(exc).__name__,
                         down_for=round(time.monotonic() - since), next_probe_in=delay)
                continue
            log.warning("dependency back; stage resumes", dependency=dependency,
                        down_for=round(time.monotonic() - since, 1))
            break
        self._paused = None

    @contextmanager
    def _bound(self, env: Envelope) -> Iterator[None]:
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(job_id=env.job_id, stage=self.stage,
                                               source=env.body.get("source", {}).get("key"))
        try:
            yield
        finally:
            structlog.contextvars.clear_contextvars()

    def _start(self, deliveries: list[Delivery], flush_after: float) -> list[Started]:
        """Settle the deliveries whose job is unknown or done; record the attempt of the others."""
        found = self.ledger.get_many([d.envelope.job_id for d in deliveries])
        started: list[Started] = []
        records: list[Record] = []
        for delivery in deliveries:
            env = delivery.envelope
            with self._bound(env):
                job = found.get(env.job_id)
                if job is None:
                    delivery.dead_letter(ErrorClass.UNKNOWN_JOB, f"job {env.job_id} is not in the ledger")
                    continue
                if job.state in DONE_STATES[self.stage]:
                    log.info("already done; acking the redelivered message", state=job.state)
                    delivery.ack()
                    continue
                attempt = env.attempts + 1
                records.append(Record(job.id, stage=self.stage, step="start", status=EventStatus.STARTED,
                                      attempt=attempt,
                                      message="redelivered" if delivery.redelivered else None,
                                      # attempts: of the stage the job is in (1 = first try; a replay starts at 1)
                                      fields=dict(state=RUNNING_STATE[self.stage], attempts=attempt)))
                steps = StepRecorder(self.ledger, job.id, self.stage, attempt, flush_after=flush_after)
                started.append((delivery, job, steps, attempt))
        self.ledger.record_many(records)
        return started

    def _finish(self, started: list[Started], results: list[StageOutcome | Exception]) -> None:
        """Publish each entry's outputs, record the outcomes (one transaction), then ack; or retry /
        dead-letter a failure. An outcome is durable before its message is forgotten."""
        done: list[tuple[Delivery, StageOutcome]] = []
        records: list[Record] = []
        for (delivery, job, steps, attempt), result in zip(started, results, strict=True):
            with self._bound(delivery.envelope):
                if isinstance(result, Exception):
                    self._fail(delivery, job, steps, result, attempt)
                    continue
                try:
                    for queue, out in result.outputs:
                        self.bus.publish(queue, out)
                except Exception as exc:  # noqa: BLE001 - every failure is classified and recorded
                    self._fail(delivery, job, steps, exc, attempt)
                    continue
                done.append((delivery, result))
                records.append(Record(job.id, stage=self.stage, step=result.step, status=EventStatus.SUCCEEDED,
                                      attempt=attempt, message=result.message, before=steps.pending,
                                      fields=dict(state=result.state, **result.fields)))
        self.ledger.record_many(records)
        self.bus.ack_many([delivery for delivery, _ in done])
        for delivery, outcome in done:
            with self._bound(delivery.envelope):
                log.info(outcome.message, state=outcome.state)

    def _fail(self, delivery: Delivery, job: Job, steps: StepRecorder, exc: Exception, attempt: int) -> None:
        error_class, transient = classify(exc)
        text = str(exc) or type(exc).__name__
        if not hasattr(exc, "error_class"):
            # An unexpected exception: keep the type and the innermost frame so the operator can act.
            frame = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
            where = f" at {frame[0].filename}:{frame[0].lineno}" if frame else ""
            text = f"{type(exc).__name__}: {text}{where}"
        # Once, before the text goes to the log, the ledger and the bus (retry history, dead letter): an
        # exception's text may carry a URL with its password or a presigned signature.
        text = self.ledger.redact(text) or text
        uncounted = self._uncounted_delay(delivery.envelope, exc, error_class)
        if uncounted is not None:
            # Not the job's fault (another live worker holds it, its source host is down): back on the queue,
            # uncounted, without pausing the stage (other jobs may go ahead).
            text = f"{text} (waiting; this attempt is not counted)"
            log.info("not the job's fault; message put back without spending an attempt",
                     error_class=error_class, error=text, retry_in=round(uncounted, 1))
            self._record_failure(job, steps, attempt, RUNNING_STATE[self.stage], EventStatus.WAITING, error_class, text)
            delivery.retry(uncounted, error_class, text, counted=False)
            return
        dependency = self._down(exc) if transient else None
        if dependency is not None:
            text = f"{text} ({dependency} unreachable: waiting for it; this attempt is not counted)"
            log.warning("dependency down; message put back without spending an attempt", dependency=dependency,
                        error_class=error_class, error=text, step=steps.current)
            self._record_failure(job, steps, attempt, JobState.RETRYING, EventStatus.WAITING, error_class, text)
            delivery.retry(1.0, error_class, text, counted=False)
            self._paused = dependency
            return
        if self.policy.should_retry(attempt, transient):
            delay = self.policy.delay(attempt)
            log.warning("attempt failed; will retry", error_class=error_class, error=text, step=steps.current,
                        attempt=attempt, retry_in=round(delay, 1))
            self._record_failure(job, steps, attempt, JobState.RETRYING, EventStatus.RETRYING, error_class,
                                 f"{text} (retry {attempt} of {self.policy.max_retries} in {delay:.0f}s)")
            delivery.retry(delay, error_class, text)
        else:
            why = "permanent error" if not transient else f"gave up after {attempt} attempts"
            log.error("job failed; message dead-lettered", error_class=error_class, error=text,
                      step=steps.current, attempt=attempt, reason=why)
            self._record_failure(job, steps, attempt, JobState.FAILED, EventStatus.FAILED, error_class, text)
            delivery.dead_letter(error_class, text)

    def _uncounted_delay(self, envelope: Envelope, exc: Exception, error_class: str) -> float | None:
        """Seconds until an uncounted retry of ``exc``, or None when this failure counts as an attempt."""
        if getattr(exc, "counts_attempt", True):
            return None
        run = []  # the latest uninterrupted run of failures of this class (counted ones once patience ran out)
        for record in reversed(envelope.history):
            if record.error_class != error_class or record.replayed:
                break
            run.append(record)
        if getattr(exc, "outage_bounded", False) and run \
                and (utcnow() - run[-1].at).total_seconds() > self.policy.outage_patience:
            return None  # unreachable for longer than the patience: counted from now on
        retry_in = getattr(exc, "retry_in", None)
        return retry_in if retry_in is not None else min(self.policy.delay(len(run) + 1), self.probe_max)

    def _record_failure(self, job: Job, steps: StepRecorder, attempt: int, state: JobState, status: EventStatus,
                        error_class: str, text: str) -> None:
        try:
            self.ledger.record(job.id, stage=self.stage, step=steps.current, status=status, attempt=attempt,
                               state=state, error_class=error_class, error=text, message=text,
                               before=steps.pending)
        except Exception:  # the bus outcome must still happen; the ledger is down
            log.exception("could not record the failure in the ledger")

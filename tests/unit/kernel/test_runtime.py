"""StageRunner (stacdrop/runtime.py) on the real embedded bus and ledger (SQLite files in tmp_path), with a
trivial handler: done work is skipped, a success is published, then recorded, then acked (in that order, so
an outcome is durable before its message is forgotten), a transient error comes back later with the attempt
counted, a permanent one is dead-lettered.

The order is observed by thin subclasses of the real SqliteBus and Ledger that note each call and then do
what the real one does; nothing else is replaced."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stacdrop.bus.base import Delivery
from stacdrop.bus.sqlite import SqliteBus
from stacdrop.errors import InvalidRaster, TransientError
from stacdrop.ledger import JobState, Job, Ledger, Record
from stacdrop.messages import PROCESS_QUEUE, PUBLISH_QUEUE, Envelope, IngestRequest, Source
from stacdrop.retry import RetryPolicy
from stacdrop.runtime import StageOutcome, StageRunner, StepRecorder

Calls = list[tuple[Any, ...]]


class RecordingBus(SqliteBus):
    """The real SQLite bus, noting publishes and acks in ``calls`` (with what ``witness`` sees at the ack)."""

    def __init__(self, url: str, calls: Calls) -> None:
        super().__init__(url)
        self.calls = calls
        self.witness: Callable[[], Any] = lambda: None

    def publish(self, queue: str, envelope: Envelope) -> None:
        self.calls.append(("publish", queue, envelope.job_id))
        super().publish(queue, envelope)

    def ack_many(self, deliveries: list[Delivery]) -> None:
        if deliveries:  # the runtime calls it after every outcome, with nothing to ack after a failure
            self.calls.append(("ack", [d.envelope.job_id for d in deliveries], self.witness()))
        super().ack_many(deliveries)


class RecordingLedger(Ledger):
    """The real SQLite ledger, noting each ``record_many`` (the runtime's only outcome write) in ``calls``."""

    def __init__(self, url: str, calls: Calls) -> None:
        super().__init__(url)
        self.calls = calls

    def record_many(self, records: list[Record]) -> None:
        if records:
            self.calls.append(("record", [(r.job_id, r.status, r.fields.get("state")) for r in records]))
        super().record_many(records)


@dataclass
class Embedded:
    bus: RecordingBus
    ledger: RecordingLedger
    calls: Calls

    def job(self) -> Job:
        """A raster job whose process message is on the bus (the calls list starts empty after it)."""
        job, _ = self.ledger.create_job(kind="raster", source="/inbox/c/x.tif", source_key="c/x.tif",
                                        content_key="k", collection="c", origin="inbox", priority=0)
        request = IngestRequest(source=Source(url="/inbox/c/x.tif", key="c/x.tif", content_key="k"), collection="c")
        self.bus.publish(PROCESS_QUEUE, Envelope.wrap(job.id, request))
        self.calls.clear()
        return job

    def queue(self, name: str) -> tuple[int, int, int]:
        """(ready, retrying, dead) of one queue, as the bus counts them."""
        stats = next(s for s in self.bus.stats() if s.queue == name)
        return stats.ready, stats.retrying, stats.dead


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[Embedded]:
    calls: Calls = []
    bus = RecordingBus(f"sqlite:///{tmp_path}/queue.db", calls)
    ledger = RecordingLedger(f"sqlite:///{tmp_path}/ledger.db", calls)
    yield Embedded(bus, ledger, calls)
    bus.close()
    ledger.close()


def deliver_one(bus: SqliteBus, queue: str, handle: Callable[[Delivery], None], timeout: float = 10.0) -> Delivery:
    """Consume ``queue`` until one delivery was handled (the real consume loop, in this thread)."""
    stop = threading.Event()
    handled: list[Delivery] = []

    def once(delivery: Delivery) -> None:
        try:
            handle(delivery)
        finally:
            handled.append(delivery)
            stop.set()

    timer = threading.Timer(timeout, stop.set)
    timer.start()
    try:
        bus.consume(queue, once, stop)
    finally:
        timer.cancel()
    assert handled, f"no message on {queue!r} within {timeout}s"
    return handled[0]


def runner_for(embedded: Embedded, handler: Callable[[Envelope, Job, StepRecorder], StageOutcome],
               policy: RetryPolicy | None = None) -> StageRunner:
    return StageRunner("process", handler, bus=embedded.bus, ledger=embedded.ledger,
                       policy=policy or RetryPolicy(max_retries=3, base=1.0, jitter=0.0))


def converted(job_id: str) -> StageOutcome:
    out = Envelope(job_id=job_id, body={"kind": "raster_ready", "collection": "c"})
    return StageOutcome(state=JobState.PUBLISHING, step="stored", message="converted", outputs=[(PUBLISH_QUEUE, out)])


def test_a_job_past_the_stage_is_acked_without_calling_the_handler(embedded: Embedded) -> None:
    job = embedded.job()
    embedded.ledger.record(job.id, stage="process", step="stored", status="succeeded", state=JobState.PUBLISHING)
    events_before = len(embedded.ledger.get(job.id, with_events=True).events)
    called: list[str] = []
    runner = runner_for(embedded, lambda env, j, steps: called.append(env.job_id) or converted(j.id))

    delivery = deliver_one(embedded.bus, PROCESS_QUEUE, runner.on_delivery)

    assert called == []
    assert delivery.settled and embedded.queue(PROCESS_QUEUE) == (0, 0, 0)  # acked: gone, not retried or dead
    assert embedded.queue(PUBLISH_QUEUE) == (0, 0, 0)  # nothing published again
    after = embedded.ledger.get(job.id, with_events=True)
    assert after.state == JobState.PUBLISHING and len(after.events) == events_before  # no attempt recorded


def test_a_success_is_published_then_recorded_then_acked(embedded: Embedded) -> None:
    job = embedded.job()
    seen: list[str] = []

    def handler(env: Envelope, j: Job, steps: StepRecorder) -> StageOutcome:
        embedded.calls.append(("handler", env.job_id, j.state))
        seen.append(embedded.ledger.get(j.id).state)
        return converted(j.id)

    # At the ack the outcome must already be durable: the job's state and the next stage's message.
    embedded.bus.witness = lambda: (embedded.ledger.get(job.id).state, embedded.queue(PUBLISH_QUEUE))
    deliver_one(embedded.bus, PROCESS_QUEUE, runner_for(embedded, handler).on_delivery)

    assert embedded.calls == [
        ("record", [(job.id, "started", JobState.PROCESSING)]),
        ("handler", job.id, "new"),  # the job as read before the attempt was recorded
        ("publish", PUBLISH_QUEUE, job.id),
        ("record", [(job.id, "succeeded", JobState.PUBLISHING)]),
        ("ack", [job.id], (JobState.PUBLISHING, (1, 0, 0))),
    ]
    assert seen == [JobState.PROCESSING]  # while the handler runs, the ledger shows the attempt
    assert embedded.queue(PROCESS_QUEUE) == (0, 0, 0)
    done = embedded.ledger.get(job.id, with_events=True)
    assert (done.state, done.step, done.attempts) == (JobState.PUBLISHING, "stored", 1)
    assert [(e.status, e.step, e.message) for e in done.events][-1] == ("succeeded", "stored", "converted")
    published = deliver_one(embedded.bus, PUBLISH_QUEUE, lambda d: d.ack())
    assert published.envelope.job_id == job.id and published.envelope.body["kind"] == "raster_ready"


def test_a_transient_error_comes_back_later_with_the_attempt_counted(embedded: Embedded) -> None:
    job = embedded.job()
    attempts_seen: list[int] = []

    def handler(env: Envelope, j: Job, steps: StepRecorder) -> StageOutcome:
        attempts_seen.append(env.attempts)
        if len(attempts_seen) == 1:
            raise TransientError("http://h/x.tif: HTTP 503")
        return converted(j.id)

    runner = runner_for(embedded, handler, RetryPolicy(max_retries=3, base=1.0, jitter=0.0))
    failed_at = time.monotonic()
    deliver_one(embedded.bus, PROCESS_QUEUE, runner.on_delivery)

    assert embedded.queue(PROCESS_QUEUE) == (0, 1, 0)  # not ready yet: waiting out its delay, not dead
    retrying = embedded.ledger.get(job.id, with_events=True)
    assert (retrying.state, retrying.error_class, retrying.attempts) == (JobState.RETRYING, "transient", 1)
    assert "HTTP 503" in retrying.error and "retry 1 of 3 in 1s" in retrying.events[-1].message
    assert not [c for c in embedded.calls if c[0] in ("publish", "ack")]

    again = deliver_one(embedded.bus, PROCESS_QUEUE, runner.on_delivery)
    assert time.monotonic() - failed_at >= 0.9  # the retry waited its delay (policy.delay(1) = 1 s)
    assert attempts_seen == [0, 1]
    assert [(h.stage, h.error_class, h.counted) for h in again.envelope.history] == [("process", "transient", True)]
    assert embedded.ledger.get(job.id).state == JobState.PUBLISHING


def test_a_permanent_error_is_dead_lettered_and_the_job_fails(embedded: Embedded) -> None:
    job = embedded.job()

    def handler(env: Envelope, j: Job, steps: StepRecorder) -> StageOutcome:
        steps("convert")
        raise InvalidRaster("c/x.tif: not a GeoTIFF (no georeferencing)")

    deliver_one(embedded.bus, PROCESS_QUEUE, runner_for(embedded, handler).on_delivery)

    assert embedded.queue(PROCESS_QUEUE) == (0, 0, 1)  # no retry although 3 were allowed
    (letter,) = embedded.bus.dead_letters()
    assert (letter.queue, letter.error_class, letter.attempts) == (PROCESS_QUEUE, "invalid_raster", 1)
    assert letter.envelope.job_id == job.id and "c/x.tif: not a GeoTIFF" in letter.error
    failed = embedded.ledger.get(job.id, with_events=True)
    assert (failed.state, failed.error_class, failed.step) == (JobState.FAILED, "invalid_raster", "convert")
    assert "c/x.tif: not a GeoTIFF" in failed.error and failed.finished_at is not None
    assert not [c for c in embedded.calls if c[0] in ("publish", "ack")]

"""The bus contract: every engine (``bus`` is parametrised over sqlite and rabbitmq) must pass all of it.

Semantics pinned here:
- a handler that raises or returns without settling hands the message back; so does a consumer that stops
  or dies; the next delivery of it has ``redelivered`` True; a handler exception also ends consume(),
  which re-raises it (the daemon's supervisor restarts the role with backoff: no hot redelivery loop);
- retry(delay) and dead_letter() count the failure: attempts + 1 and an AttemptRecord(stage=queue, ...)
  appended to the history; retry never comes back before ``delay``;
- a DeadLetter's ``attempts`` is the number of failed attempts including the last; its envelope carries the
  whole history; replay resets attempts to 0 and keeps the history, earlier entries marked replayed;
- stats() counts ready, retrying and dead exactly, at once.

The end of the file has RabbitMQ-only tests of what the contract cannot express generically.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest

from stacdrop.bus.base import Bus, DeadLetterFilter, Delivery
from stacdrop.messages import Envelope, IngestRequest, Priority, Source

ROOT = Path(__file__).resolve().parents[2]
PROCESS, PUBLISH = "process", "publish"
SLOW = 20.0  # generous upper bound for anything that should happen "soon"


def make_env(name: str = "a.tif", collection: str = "c1", priority: int = Priority.LIVE) -> Envelope:
    body = IngestRequest(source=Source(url=f"/inbox/{collection}/{name}", key=f"{collection}/{name}",
                                       content_key="sha-" + name), collection=collection)
    return Envelope.wrap(f"job-{name}", body, priority=priority)


def wait_until(predicate: Callable[[], bool], timeout: float = SLOW, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


class Recorder:
    """A handler that records each delivery (with its arrival time), then runs ``action`` (default: ack)."""

    def __init__(self, action: Callable[[Delivery], None] | None = None) -> None:
        self.action = action or (lambda d: d.ack())
        self.deliveries: list[Delivery] = []
        self.times: list[float] = []
        self._lock = threading.Lock()

    def __call__(self, delivery: Delivery) -> None:
        with self._lock:
            self.deliveries.append(delivery)
            self.times.append(time.monotonic())
        self.action(delivery)

    @property
    def ids(self) -> list[str]:
        return [d.envelope.id for d in self.deliveries]

    def wait(self, count: int, timeout: float = SLOW) -> bool:
        return wait_until(lambda: len(self.deliveries) >= count, timeout)


@contextmanager
def running(consume: Callable[[threading.Event], None], name: str) -> Iterator[threading.Event]:
    """Run ``consume(stop)`` in a thread; on exit set stop and require it to return, then raise its error."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def run() -> None:
        try:
            consume(stop)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True, name=name)
    thread.start()
    try:
        yield stop
    finally:
        stop.set()
        thread.join(SLOW)
        assert not thread.is_alive(), f"{name} did not return after stop was set"
    if errors:
        raise errors[0]


def consuming(bus: Bus, queue: str, handler: Callable[[Delivery], None],
              prefetch: int = 1) -> AbstractContextManager[threading.Event]:
    """Run ``bus.consume`` in a thread (see ``running``)."""
    return running(lambda stop: bus.consume(queue, handler, stop, prefetch=prefetch), f"consume-{queue}")


def handle(bus: Bus, queue: str, actions: dict[str, Callable[[Delivery], None]]) -> Recorder:
    """Consume until every message id in ``actions`` was handled once by its action."""
    rec = Recorder(lambda d: actions[d.envelope.id](d))
    with consuming(bus, queue, rec):
        assert wait_until(lambda: set(actions) <= set(rec.ids)), f"handled only {rec.ids}"
    return rec


def dead(error_class: str, error: str) -> Callable[[Delivery], None]:
    return lambda d: d.dead_letter(error_class, error)


def nothing_delivered(bus: Bus, queue: str, seconds: float = 0.7) -> bool:
    rec = Recorder()
    with consuming(bus, queue, rec):
        time.sleep(seconds)
    return not rec.deliveries


def by_queue(bus: Bus) -> dict[str, object]:
    return {s.queue: s for s in bus.stats()}


# -- round trip, loss, redelivery ----------------------------------------------------------------------


def test_round_trip_keeps_the_envelope(bus: Bus) -> None:
    env = make_env("rt.tif", priority=Priority.BACKFILL)
    bus.publish(PROCESS, env)
    rec = Recorder()
    with consuming(bus, PROCESS, rec):
        assert rec.wait(1)
    got = rec.deliveries[0]
    assert got.envelope == env
    assert got.envelope.parsed() == env.parsed()
    assert got.queue == PROCESS and got.settled and not got.redelivered
    assert nothing_delivered(bus, PROCESS)
    assert nothing_delivered(bus, PUBLISH)


@pytest.mark.parametrize("misbehaviour", ["raises", "never_settles"])
def test_message_not_lost_when_handler_fails_to_settle(bus: Bus, misbehaviour: str) -> None:
    env = make_env("bad.tif")
    bus.publish(PROCESS, env)

    def misbehave(_d: Delivery) -> None:
        if misbehaviour == "raises":
            raise RuntimeError("handler bug")

    first = Recorder(misbehave)
    if misbehaviour == "raises":  # like a crash: consume() stops and re-raises (the supervisor restarts it)
        with pytest.raises(RuntimeError, match="handler bug"), consuming(bus, PROCESS, first):
            assert first.wait(1)
    else:  # a forgetful handler: the message goes back, the consumer carries on
        with consuming(bus, PROCESS, first):
            assert first.wait(1)
    second = Recorder()
    with consuming(bus, PROCESS, second):
        assert second.wait(1)
    assert second.deliveries[0].envelope.id == env.id
    assert second.deliveries[0].redelivered
    assert nothing_delivered(bus, PROCESS)


CONSUMER_SCRIPT = """
import json, sys, threading, time
from stacdrop.bus import open_bus
bus = open_bus(sys.argv[1], **json.loads(sys.argv[2]))
def handler(delivery):
    print("got", delivery.envelope.id, flush=True)
    time.sleep(3600)
bus.consume(sys.argv[3], handler, threading.Event())
"""


def start_blocking_consumer(url: str, options: dict, queue: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", CONSUMER_SCRIPT, url, json.dumps(options), queue],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT, env=env)


def read_line(proc: subprocess.Popen, timeout: float = SLOW) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline().strip() if ready else ""


def test_message_redelivered_when_consumer_process_dies(bus_spec, bus: Bus) -> None:
    env = make_env("crash.tif")
    bus.publish(PROCESS, env)
    proc = start_blocking_consumer(bus_spec.url, bus_spec.options, PROCESS)
    try:
        assert read_line(proc) == f"got {env.id}"
    finally:
        proc.kill()
        proc.wait()
    rec = Recorder()
    with consuming(bus, PROCESS, rec):
        assert rec.wait(1, timeout=30)
    assert rec.deliveries[0].envelope.id == env.id and rec.deliveries[0].redelivered


def test_publish_is_durable_across_bus_instances(bus_spec, bus: Bus) -> None:
    env = make_env("durable.tif")
    bus.publish(PUBLISH, env)
    bus.close()
    again = bus_spec.open()
    rec = Recorder()
    with consuming(again, PUBLISH, rec):
        assert rec.wait(1)
    assert rec.deliveries[0].envelope == env


# -- retries and dead letters -------------------------------------------------------------------------


def test_retry_comes_back_after_the_delay_with_the_error(bus: Bus) -> None:
    env = make_env("retry.tif")
    bus.publish(PROCESS, env)
    delay = 1.0
    asked: list[float] = []

    def action(d: Delivery) -> None:
        if d.envelope.attempts == 0:
            asked.append(time.monotonic())
            d.retry(delay, "store", "S3 said 503")
        else:
            d.ack()

    rec = Recorder(action)
    with consuming(bus, PROCESS, rec):
        assert rec.wait(2, timeout=delay + SLOW)
    waited = rec.times[1] - asked[0]
    assert delay - 0.005 <= waited <= delay + SLOW
    again = rec.deliveries[1].envelope
    assert again.id == env.id and again.body == env.body and again.attempts == 1
    assert [(h.stage, h.error_class, h.error, h.replayed) for h in again.history] == [
        (PROCESS, "store", "S3 said 503", False)]


def test_an_uncounted_retry_keeps_the_attempts_and_records_the_error(bus: Bus) -> None:
    """A retry while a dependency is down (runtime "outages") must not spend the retry budget."""
    env = make_env("outage.tif")
    bus.publish(PROCESS, env)

    def action(d: Delivery) -> None:
        if len(d.envelope.history) < 2:
            d.retry(0.0, "catalog_unavailable", "STAC API down", counted=False)
        else:
            d.ack()

    rec = Recorder(action)
    with consuming(bus, PROCESS, rec):
        assert rec.wait(3, timeout=SLOW + 2)
    last = rec.deliveries[2].envelope
    assert last.attempts == 0
    assert [(h.error_class, h.counted) for h in last.history] == [
        ("catalog_unavailable", False), ("catalog_unavailable", False)]


def test_dead_letter_keeps_queue_error_attempts_and_envelope(bus: Bus) -> None:
    env = make_env("dead.tif", collection="landcover")

    def action(d: Delivery) -> None:
        if d.envelope.attempts < 2:
            d.retry(0.0, "network", f"timeout {d.envelope.attempts + 1}")
        else:
            d.dead_letter("invalid_raster", "no CRS in dead.tif")

    before = datetime.now(timezone.utc)
    bus.publish(PROCESS, env)
    rec = Recorder(action)
    with consuming(bus, PROCESS, rec):
        assert rec.wait(3)
        assert wait_until(lambda: rec.deliveries[-1].settled)
    letters = bus.dead_letters()
    assert len(letters) == 1
    letter = letters[0]
    assert letter.id == env.id and letter.queue == PROCESS
    assert letter.error_class == "invalid_raster" and letter.error == "no CRS in dead.tif"
    assert letter.attempts == 3 and letter.collection == "landcover"
    assert before <= letter.dead_at <= datetime.now(timezone.utc)
    assert letter.envelope.id == env.id and letter.envelope.job_id == env.job_id
    assert letter.envelope.body == env.body and letter.envelope.priority == env.priority
    assert [h.error for h in letter.envelope.history] == ["timeout 1", "timeout 2", "no CRS in dead.tif"]
    assert bus.get_dead_letter(env.id) == letter
    assert bus.dead_letters() == letters, "listing dead letters must not consume them"
    assert nothing_delivered(bus, PROCESS)


def test_dead_letter_filters_and_order(bus: Bus) -> None:
    a, b, c = make_env("a.tif", "forest"), make_env("b.tif", "soil"), make_env("c.tif", "forest")
    bus.publish(PROCESS, a)
    handle(bus, PROCESS, {a.id: dead("invalid_raster", "bad a")})
    middle = datetime.now(timezone.utc)
    time.sleep(0.02)
    bus.publish(PROCESS, b)
    bus.publish(PUBLISH, c)
    handle(bus, PROCESS, {b.id: dead("store", "bad b")})
    handle(bus, PUBLISH, {c.id: dead("invalid_item", "bad c")})

    def ids(where: DeadLetterFilter | None = None, limit: int | None = None) -> list[str]:
        return [d.id for d in bus.dead_letters(where, limit)]

    assert ids() == [a.id, b.id, c.id]
    assert ids(limit=2) == [a.id, b.id]
    assert ids(DeadLetterFilter(queue=PROCESS)) == [a.id, b.id]
    assert ids(DeadLetterFilter(queue=PUBLISH)) == [c.id]
    assert ids(DeadLetterFilter(error_class="store")) == [b.id]
    assert ids(DeadLetterFilter(collection="forest")) == [a.id, c.id]
    assert ids(DeadLetterFilter(since=middle)) == [b.id, c.id]
    assert ids(DeadLetterFilter(ids=[c.id, a.id])) == [a.id, c.id]
    assert ids(DeadLetterFilter(queue=PROCESS, collection="forest")) == [a.id]
    assert ids(DeadLetterFilter(ids=["nope"])) == []
    assert ids() == [a.id, b.id, c.id]


def test_replay_resets_attempts_and_keeps_both_rounds(bus: Bus) -> None:
    env = make_env("replay.tif")
    bus.publish(PROCESS, env)
    handle(bus, PROCESS, {env.id: dead("catalog_unavailable", "round 1")})
    assert bus.replay(["unknown-id"]) == []
    assert bus.replay([env.id]) == [env.id]
    assert bus.dead_letters() == []
    rec = handle(bus, PROCESS, {env.id: dead("invalid_item", "round 2")})
    replayed = rec.deliveries[0].envelope
    assert replayed.attempts == 0 and replayed.body == env.body
    assert [(h.error, h.replayed) for h in replayed.history] == [("round 1", True)]
    letter = bus.get_dead_letter(env.id)
    assert letter is not None and letter.attempts == 1 and letter.error == "round 2"
    assert [(h.error, h.replayed) for h in letter.envelope.history] == [("round 1", True), ("round 2", False)]
    assert len(bus.dead_letters()) == 1


def test_purge_deletes_only_the_given_dead_letters(bus: Bus) -> None:
    a, b = make_env("pa.tif"), make_env("pb.tif")
    bus.publish(PUBLISH, a)
    bus.publish(PUBLISH, b)
    handle(bus, PUBLISH, {a.id: dead("invalid_item", "a"), b.id: dead("invalid_item", "b")})
    assert bus.purge([]) == []
    assert bus.purge([a.id, "unknown-id"]) == [a.id]
    assert [d.id for d in bus.dead_letters()] == [b.id]
    assert bus.purge([a.id]) == []
    assert by_queue(bus)[PUBLISH].dead == 1
    assert nothing_delivered(bus, PUBLISH)


def test_stats_count_ready_retrying_and_dead_exactly(bus: Bus) -> None:
    assert [(s.ready, s.retrying, s.dead) for s in bus.stats()] == [(0, 0, 0), (0, 0, 0)]
    waiting, dead1, dead2 = make_env("w.tif"), make_env("d1.tif"), make_env("d2.tif")
    for env in (waiting, dead1, dead2):
        bus.publish(PROCESS, env)
    handle(bus, PROCESS, {waiting.id: lambda d: d.retry(300.0, "store", "later"),
                          dead1.id: dead("invalid_raster", "x"), dead2.id: dead("invalid_raster", "y")})
    for i in range(3):
        bus.publish(PROCESS, make_env(f"ready{i}.tif"))
    bus.publish(PUBLISH, make_env("ready-pub.tif"))
    stats = by_queue(bus)
    assert set(stats) == {PROCESS, PUBLISH}
    process, publish = stats[PROCESS], stats[PUBLISH]
    assert (process.ready, process.retrying, process.dead) == (3, 1, 2)
    assert (publish.ready, publish.retrying, publish.dead) == (1, 0, 0)
    assert process.unacked in (0, None)  # None: the engine cannot tell (documented per engine)


# -- ordering, fairness, long handlers ----------------------------------------------------------------


def test_live_overtakes_backfill(bus: Bus) -> None:
    backfill = [make_env(f"old{i}.tif", priority=Priority.BACKFILL) for i in range(4)]
    live = [make_env(f"new{i}.tif", priority=Priority.LIVE) for i in range(2)]
    for env in backfill + live:
        bus.publish(PROCESS, env)
    rec = Recorder()
    with consuming(bus, PROCESS, rec, prefetch=1):
        assert rec.wait(6)
    assert set(rec.ids[:2]) == {e.id for e in live}
    assert rec.ids[2:] == [e.id for e in backfill], "same priority: first in, first out"


def test_slow_consumer_does_not_hold_a_second_message(bus_spec, bus: Bus) -> None:
    first, second = make_env("m1.tif"), make_env("m2.tif")
    bus.publish(PROCESS, first)
    bus.publish(PROCESS, second)
    release = threading.Event()
    slow = Recorder(lambda d: (release.wait(SLOW), d.ack()))
    fast = Recorder()
    other = bus_spec.open()
    with consuming(bus, PROCESS, slow, prefetch=1):
        assert slow.wait(1)
        time.sleep(0.3)  # time for a greedy engine to push the second message to the slow consumer
        with consuming(other, PROCESS, fast, prefetch=1):
            assert fast.wait(1, timeout=5), "the second message was held by the busy consumer"
        release.set()
    assert len(slow.deliveries) == 1 and len(fast.deliveries) == 1
    assert {slow.ids[0], fast.ids[0]} == {first.id, second.id}


@pytest.mark.e2e
def test_handler_longer_than_the_keepalive_is_not_redelivered(bus_spec) -> None:
    worker, watcher = bus_spec.open(liveness=2), bus_spec.open(liveness=2)
    env = make_env("long.tif")
    worker.publish(PROCESS, env)
    busy = Recorder(lambda d: (time.sleep(6.5), d.ack()))
    idle = Recorder()
    with consuming(worker, PROCESS, busy):
        assert busy.wait(1)
        with consuming(watcher, PROCESS, idle):
            assert wait_until(lambda: busy.deliveries[0].settled, timeout=SLOW)
            time.sleep(1.0)
    assert busy.ids == [env.id] and idle.deliveries == []
    assert not busy.deliveries[0].redelivered
    assert nothing_delivered(worker, PROCESS)


# -- batches ---------------------------------------------------------------------------------------------


def consuming_batches(bus: Bus, queue: str, handler: Callable[[list[Delivery]], None], *, max_batch: int,
                      max_wait: float) -> AbstractContextManager[threading.Event]:
    """Run ``bus.consume_batch`` in a thread (see ``running``)."""
    return running(lambda stop: bus.consume_batch(queue, handler, stop, max_batch=max_batch, max_wait=max_wait),
                   f"consume-batch-{queue}")


class BatchRecorder:
    """Records each batch (the deliveries and the time it arrived), then applies ``action`` to each delivery."""

    def __init__(self, action: Callable[[Delivery], None]) -> None:
        self.action = action
        self.batches: list[list[Delivery]] = []
        self.times: list[float] = []
        self.concurrent = 0
        self.max_concurrent = 0
        self._lock = threading.Lock()

    def __call__(self, batch: list[Delivery]) -> None:
        with self._lock:
            self.batches.append(list(batch))
            self.times.append(time.monotonic())
            self.concurrent += 1
            self.max_concurrent = max(self.max_concurrent, self.concurrent)
        try:
            for d in batch:
                self.action(d)
        finally:
            with self._lock:
                self.concurrent -= 1

    @property
    def ids(self) -> list[str]:
        return [d.envelope.id for b in self.batches for d in b]


def test_consume_batch_bounds_the_batch_and_settles_each_delivery_on_its_own(bus: Bus) -> None:
    envs = {name: make_env(f"{name}.tif") for name in ("a", "b", "bad", "later", "unsettled", "f", "g")}
    for env in envs.values():
        bus.publish(PROCESS, env)
    ids = {env.id: name for name, env in envs.items()}
    seen: set[str] = set()

    def action(d: Delivery) -> None:
        name = ids[d.envelope.id]
        first = name not in seen
        seen.add(name)
        if name == "bad":
            d.dead_letter("invalid_item", "rejected by the catalog")
        elif name == "later":
            d.retry(600, "catalog_unavailable", "503")
        elif name == "unsettled" and first:
            return  # handed back by the bus, delivered again
        else:
            d.ack()

    rec = BatchRecorder(action)
    with consuming_batches(bus, PROCESS, rec, max_batch=3, max_wait=0.5):
        assert wait_until(lambda: rec.ids.count(envs["unsettled"].id) == 2
                          and {e.id for e in envs.values()} <= set(rec.ids)), rec.ids
    assert all(1 <= len(b) <= 3 for b in rec.batches), [len(b) for b in rec.batches]
    assert len(rec.batches[0]) == 3  # everything was ready: the first batch is full
    assert rec.max_concurrent == 1
    again = [d for b in rec.batches for d in b if d.envelope.id == envs["unsettled"].id]
    assert [d.redelivered for d in again] == [False, True]
    assert [letter.envelope.id for letter in bus.dead_letters()] == [envs["bad"].id]
    stats = by_queue(bus)[PROCESS]
    assert (stats.ready, stats.retrying, stats.dead) == (0, 1, 1)


def test_consume_batch_waits_the_window_for_more_then_hands_over_what_it_has(bus: Bus) -> None:
    rec = BatchRecorder(lambda d: d.ack())
    with consuming_batches(bus, PROCESS, rec, max_batch=10, max_wait=0.6):
        time.sleep(0.3)  # the consumer is idle and waiting
        published = time.monotonic()
        bus.publish(PROCESS, make_env("one.tif"))
        time.sleep(0.2)
        bus.publish(PROCESS, make_env("two.tif"))
        assert wait_until(lambda: len(rec.ids) >= 2)
        # one batch of both, handed over about the window after the first message arrived, not later
        assert len(rec.batches) == 1 and len(rec.batches[0]) == 2
        assert 0.4 <= rec.times[0] - published <= 0.6 + 1.5
        single = time.monotonic()
        bus.publish(PROCESS, make_env("three.tif"))
        assert wait_until(lambda: len(rec.ids) >= 3)
        assert len(rec.batches) == 2 and len(rec.batches[1]) == 1
        assert rec.times[1] - single <= 0.6 + 1.5  # a single message is not held beyond the window
    assert by_queue(bus)[PROCESS].ready == 0


# -- RabbitMQ engine specifics ------------------------------------------------------------------------

rabbit_only = pytest.mark.rabbitmq


@pytest.fixture
def rabbit(rabbit_url: str) -> Iterator[Callable[..., Bus]]:
    from tests.support.services import delete_rabbit_prefix, unique_prefix

    prefix = unique_prefix("r")
    opened: list[Bus] = []

    def open_(**options: object) -> Bus:
        from stacdrop.bus.rabbitmq import RabbitBus

        bus = RabbitBus(rabbit_url, prefix=prefix, **options)  # type: ignore[arg-type]
        bus.setup()
        opened.append(bus)
        return bus

    open_.prefix = prefix  # type: ignore[attr-defined]
    yield open_
    for bus in opened:
        bus.close()
    delete_rabbit_prefix(rabbit_url, prefix)


@rabbit_only
def test_rabbit_topology_is_idempotent_and_checked(rabbit) -> None:
    from stacdrop.errors import ConfigError

    bus = rabbit()
    bus.setup()
    assert bus.retry_level(0.0) == 1 and bus.retry_level(1.0) == 1 and bus.retry_level(1.01) == 2
    assert bus.retry_level(600) == 1024 and bus.retry_level(5000) == 1024
    with pytest.raises(ConfigError, match="other arguments"):
        rabbit(max_priority=3).setup()
    from stacdrop.bus import open_bus

    tuned = open_bus(bus.url + "?heartbeat=7&claim_interval=120", prefix=rabbit.prefix)
    assert (tuned.claim_interval, tuned.heartbeat) == (120.0, 7)
    assert [(s.ready, s.dead) for s in tuned.stats()] == [(0, 0), (0, 0)]
    tuned.close()


@pytest.mark.e2e
@rabbit_only
def test_rabbit_long_handler_is_reclaimed_and_not_redelivered(rabbit) -> None:
    worker = rabbit(claim_interval=1.0, claim_ttl=2.0)
    watcher = rabbit()
    env = make_env("reclaim.tif")
    worker.publish(PROCESS, env)
    busy = Recorder(lambda d: (time.sleep(3.5), d.retry(0.0, "store", "once")) if d.envelope.attempts == 0
                    else d.ack())
    idle = Recorder()
    with consuming(worker, PROCESS, busy):
        assert busy.wait(1)
        with consuming(watcher, PROCESS, idle):
            assert wait_until(lambda: len(busy.deliveries) + len(idle.deliveries) >= 2)
            time.sleep(3.0)  # longer than claim_ttl: a leaked claim copy would be back by now
    handled = busy.deliveries + idle.deliveries
    assert len(handled) == 2 and handled[1].envelope.attempts == 1
    assert [(s.ready, s.retrying, s.dead) for s in worker.stats()] == [(0, 0, 0), (0, 0, 0)]


@pytest.mark.e2e
@rabbit_only
def test_rabbit_reclaimed_message_returns_when_the_worker_dies(rabbit, rabbit_url: str) -> None:
    bus = rabbit()
    env = make_env("claimdeath.tif")
    bus.publish(PROCESS, env)
    options = {"prefix": rabbit.prefix, "claim_interval": 1.0, "claim_ttl": 2.0}
    proc = start_blocking_consumer(rabbit_url, options, PROCESS)
    try:
        assert read_line(proc) == f"got {env.id}"
        time.sleep(2.5)  # re-claimed at least once: the message now lives in the claim queue
    finally:
        proc.kill()
        proc.wait()
    rec = Recorder()
    with consuming(bus, PROCESS, rec):
        assert rec.wait(1, timeout=15)
    assert rec.deliveries[0].envelope.id == env.id and rec.deliveries[0].redelivered


def _management(url: str) -> tuple[str, tuple[str, str]] | None:
    import requests

    base, auth = "http://127.0.0.1:15672/api", ("guest", "guest")
    try:
        requests.get(f"{base}/overview", auth=auth, timeout=2).raise_for_status()
    except requests.RequestException:
        return None
    return base, auth


@pytest.mark.e2e
@rabbit_only
def test_rabbit_consumer_reconnects_and_keeps_its_running_message(rabbit, rabbit_url: str) -> None:
    import requests

    mgmt = _management(rabbit_url)
    if mgmt is None:
        pytest.skip("needs the RabbitMQ management API to close a connection from the server side")
    base, auth = mgmt
    bus = rabbit()
    first, second = make_env("conn1.tif"), make_env("conn2.tif")
    bus.publish(PROCESS, first)
    release = threading.Event()
    rec = Recorder(lambda d: (release.wait(SLOW) if d.envelope.id == first.id else None, d.ack()))
    name = f"stacdrop {rabbit.prefix} consume {PROCESS}"

    def consumer_connections() -> list[str]:
        items = requests.get(f"{base}/connections", auth=auth, timeout=3).json()
        return [c["name"] for c in items if (c.get("client_properties") or {}).get("connection_name") == name]

    with consuming(bus, PROCESS, rec):
        assert rec.wait(1)
        assert wait_until(lambda: bool(consumer_connections()), timeout=15, interval=0.5)
        for conn in consumer_connections():
            requests.delete(f"{base}/connections/{conn}", auth=auth, timeout=3)
        time.sleep(1.5)  # reconnected; the first message came back and was re-attached to its handler
        release.set()
        bus.publish(PROCESS, second)
        assert rec.wait(2)
        time.sleep(0.5)
    assert rec.ids == [first.id, second.id]
    assert all(d.settled for d in rec.deliveries)
    assert [(s.ready, s.retrying, s.dead) for s in bus.stats()] == [(0, 0, 0), (0, 0, 0)]


def test_ack_many_settles_a_batch_at_once(bus: Bus) -> None:
    envs = [make_env(f"many{n}.tif") for n in range(6)]
    for env in envs:
        bus.publish(PROCESS, env)
    kept: list[Delivery] = []

    def handler(batch: list[Delivery]) -> None:
        keep = [d for d in batch if d.envelope.id != envs[0].id]
        kept.extend(keep)
        bus.ack_many(keep)
        for d in keep:
            assert d.settled
            with pytest.raises(RuntimeError, match="settled twice"):
                d.ack()
        for d in batch:
            if d not in keep:
                d.dead_letter("invalid_item", "the one left out")

    with consuming_batches(bus, PROCESS, handler, max_batch=6, max_wait=0.5):
        assert wait_until(lambda: len(kept) == 5 and len(bus.dead_letters()) == 1), len(kept)
    assert sorted(d.envelope.id for d in kept) == sorted(e.id for e in envs[1:])
    stats = by_queue(bus)[PROCESS]
    assert (stats.ready, stats.retrying, stats.dead) == (0, 0, 1)
    assert [letter.envelope.id for letter in bus.dead_letters()] == [envs[0].id]

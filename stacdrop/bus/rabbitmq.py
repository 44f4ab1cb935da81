"""The RabbitMQ bus (AMQP 0-9-1 through pika's ``BlockingConnection``). Design notes: docs/rabbitmq.md.

Topology, declared by ``setup()`` (``P`` = prefix, ``q`` = a stage queue)::

    exchange P                      durable direct; every publish goes through it with mandatory=True
    queue    P.q                    work queue: durable, x-max-priority (LIVE overtakes BACKFILL); key "q"
    queue    P.q.retry.<T>s         one per retry level T (1, 2, 4 ... 1024 s): no consumer, x-message-ttl=T,
                                    dead-letters back to key "q"; a retry is published with expiration=delay
                                    into the smallest level T >= delay (see ``_retry_level``)
    queue    P.q.dead               dead letters: durable, headers error_class, error, dead_at, attempts
    queue    P.q.claim.<session>    created only when a handler runs past ``claim_interval``: see below

Messages are persistent, published with publisher confirms, message_id = envelope id.

Consuming: the connection stays on the thread that called ``consume()`` and calls
``process_data_events`` all the time (heartbeats); handlers run in a pool of ``prefetch`` threads and
settle through ``add_callback_threadsafe``, waiting until the broker has the outcome (retry and dead
letter: publish with confirm, then ack).

Long handlers: RabbitMQ 3.10 closes a channel holding a delivery unacked for ``consumer_timeout``
(30 min, server-wide). Before that (``claim_interval``, 10 min) the delivery is *re-claimed*: a copy goes,
with confirm, into this session's private claim queue, which this session consumes; when the copy
arrives the previous delivery is acked. The copy is again an unacked delivery with a fresh clock. If
the worker dies, the copy is requeued in the claim queue, already older than the claim queue's
x-message-ttl, so RabbitMQ dead-letters it back into the work queue at once: it is not lost and no
second worker gets it while the first one is alive.
"""

from __future__ import annotations

import math
import queue as queue_module
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

import pika
import pika.exceptions
import requests
import structlog

from stacdrop.bus.base import (
    BatchHandler, Bus, DeadLetter, DeadLetterFilter, Delivery, DeliveryHandler, QueueStats,
)
from stacdrop.errors import ConfigError
from stacdrop.messages import QUEUES, Envelope
from stacdrop.times import parse_time

log = structlog.get_logger("stacdrop.bus.rabbitmq")

DEFAULT_RETRY_LEVELS: tuple[float, ...] = tuple(float(2**i) for i in range(11))  # 1 s .. 1024 s
CLAIM_HEADER = "x-stacdrop-claim"
HEADER_ERROR_LIMIT = 4000  # chars of the error kept in a header; the full text is in the envelope history
_STOP = object()
# Anything that means "this connection or channel is gone": the session is rebuilt.
_LINK_ERRORS = (pika.exceptions.AMQPError, OSError)


URL_OPTIONS = ("claim_interval",)  # bus options an operator may put in the broker URL's query string


def _split_bus_options(url: str) -> tuple[str, dict[str, float]]:
    """``amqp://...?heartbeat=30&claim_interval=300`` -> pika's URL and {"claim_interval": 300.0}."""
    parts = urllib.parse.urlsplit(url)
    query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: float(v) for k, v in query if k in URL_OPTIONS}
    if not ours:
        return url, {}
    rest = urllib.parse.urlencode([(k, v) for k, v in query if k not in URL_OPTIONS])
    return urllib.parse.urlunsplit(parts._replace(query=rest)), ours


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class RabbitBus(Bus):
    def __init__(
        self,
        url: str,
        *,
        queues: Iterable[str] = QUEUES,
        prefix: str = "stacdrop",
        heartbeat: int = 30,
        retry_levels: Sequence[float] = DEFAULT_RETRY_LEVELS,
        max_priority: int = 5,  # Priority.LIVE; fewer levels are cheaper for the broker
        claim_interval: float = 600.0,
        claim_ttl: float = 30.0,
        management_url: str | None = None,
        reconnect_max: float = 30.0,
    ) -> None:
        url, from_url = _split_bus_options(url)
        self.url = url
        claim_interval = from_url.get("claim_interval", claim_interval)
        self.queues = tuple(queues)
        self.prefix = prefix
        self.exchange = prefix
        self.heartbeat = int(heartbeat)
        self.retry_levels = tuple(sorted(float(t) for t in retry_levels))
        if not self.retry_levels or self.retry_levels[0] <= 0:
            raise ConfigError("retry_levels must be positive seconds")
        self.max_priority = max_priority
        self.claim_interval = claim_interval
        self.claim_ttl = claim_ttl
        self.reconnect_max = reconnect_max
        self._params = pika.URLParameters(url)
        if "heartbeat=" not in url:
            self._params.heartbeat = self.heartbeat
        self.heartbeat = int(self._params.heartbeat or 0)
        self._params.blocked_connection_timeout = 300
        self._params.connection_attempts = 1
        self._mgmt = self._management_base(management_url)
        self._mgmt_down_until = 0.0
        self._pub_lock = threading.Lock()
        self._pub_conn: pika.BlockingConnection | None = None
        self._pub_ch: Any = None
        self._pub_used = 0.0
        self._ready = False

    # -- names ----------------------------------------------------------------------------------------
    def work_queue(self, queue: str) -> str:
        return f"{self.prefix}.{queue}"

    def dead_queue(self, queue: str) -> str:
        return f"{self.prefix}.{queue}.dead"

    def retry_queue(self, queue: str, level: float) -> str:
        return f"{self.prefix}.{queue}.{self._retry_key_suffix(level)}"

    @staticmethod
    def _retry_key_suffix(level: float) -> str:
        return f"retry.{level:g}s"

    def _retry_level(self, delay: float) -> float:
        """The smallest level whose TTL is >= delay, so a retry never comes back early.

        Inside a level each message carries expiration=delay, but RabbitMQ expires only at the head of a
        queue: a message can wait behind an earlier one of the same level with a longer delay. All delays
        of a level lie in (T/2, T], so the actual wait is in [delay, max(2 * delay, smallest level)).
        Delays above the top level are capped to it.
        """
        for level in self.retry_levels:
            if delay <= level:
                return level
        return self.retry_levels[-1]

    def _check_queue(self, queue: str) -> None:
        if queue not in self.queues:
            raise ValueError(f"unknown queue {queue!r}; known: {', '.join(self.queues)}")

    # -- connections ----------------------------------------------------------------------------------
    def _connect(self, role: str, heartbeat: int | None = None) -> pika.BlockingConnection:
        params = pika.URLParameters(self.url)
        params.heartbeat = self._params.heartbeat if heartbeat is None else heartbeat
        params.blocked_connection_timeout = self._params.blocked_connection_timeout
        params.connection_attempts = 1
        params.client_properties = {"connection_name": f"stacdrop {self.prefix} {role}"}
        return pika.BlockingConnection(params)

    @contextmanager
    def _admin(self) -> Iterator[pika.BlockingConnection]:
        conn = self._connect("admin")
        try:
            yield conn
        finally:
            try:
                conn.close()
            except _LINK_ERRORS:
                pass

    # -- topology -------------------------------------------------------------------------------------
    def setup(self) -> None:
        with self._admin() as conn:
            ch = conn.channel()
            try:
                ch.exchange_declare(self.exchange, "direct", durable=True)
                for q in self.queues:
                    work = self.work_queue(q)
                    ch.queue_declare(work, durable=True, arguments={"x-max-priority": self.max_priority})
                    ch.queue_bind(work, self.exchange, routing_key=q)
                    for level in self.retry_levels:
                        name = self.retry_queue(q, level)
                        ch.queue_declare(name, durable=True, arguments={
                            "x-message-ttl": int(level * 1000),
                            "x-dead-letter-exchange": self.exchange,
                            "x-dead-letter-routing-key": q,
                        })
                        ch.queue_bind(name, self.exchange, routing_key=f"{q}.{self._retry_key_suffix(level)}")
                    ch.queue_declare(self.dead_queue(q), durable=True)
                    ch.queue_bind(self.dead_queue(q), self.exchange, routing_key=f"{q}.dead")
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code == 406:
                    raise ConfigError(
                        f"RabbitMQ topology '{self.prefix}' exists with other arguments ({exc.reply_text}); "
                        "delete those queues or use another prefix"
                    ) from None
                raise
        self._ready = True

    def _ensure_setup(self) -> None:
        if not self._ready:
            self.setup()

    def delete_topology(self) -> None:
        """Delete every queue and the exchange of this prefix (tests, uninstall). Loses their messages."""
        names = [self.work_queue(q) for q in self.queues] + [self.dead_queue(q) for q in self.queues]
        names += [self.retry_queue(q, t) for q in self.queues for t in self.retry_levels]
        with self._admin() as conn:
            ch = conn.channel()
            for name in names:
                ch.queue_delete(name)
            ch.exchange_delete(self.exchange)
        self._ready = False

    # -- publishing -----------------------------------------------------------------------------------
    def properties(self, env: Envelope, headers: dict[str, Any] | None = None,
                   expiration: str | None = None) -> pika.BasicProperties:
        return pika.BasicProperties(
            content_type="application/json",
            delivery_mode=pika.DeliveryMode.Persistent,
            message_id=env.id,
            priority=max(0, min(self.max_priority, int(env.priority))),
            timestamp=int(time.time()),
            expiration=expiration,
            headers={"job_id": env.job_id, "attempts": env.attempts, **(headers or {})},
        )

    def publish(self, queue: str, envelope: Envelope) -> None:
        self._check_queue(queue)
        self._ensure_setup()
        body = envelope.to_bytes()
        props = self.properties(envelope)
        with self._pub_lock:
            for attempt in (1, 2):
                try:
                    self._publisher().basic_publish(self.exchange, queue, body, props, mandatory=True)
                    self._pub_used = time.monotonic()
                    return
                except (pika.exceptions.UnroutableError, pika.exceptions.NackError):
                    raise
                except _LINK_ERRORS as exc:
                    self._drop_publisher()
                    if attempt == 2:
                        raise
                    log.warning("rabbitmq publish failed; reconnecting", error=repr(exc))

    def _publisher(self) -> Any:
        conn = self._pub_conn
        if conn is not None and conn.is_open and time.monotonic() - self._pub_used > self.heartbeat / 2:
            try:  # idle for a while: let pika notice a connection the broker has closed
                conn.process_data_events(0)
            except _LINK_ERRORS:
                self._drop_publisher()
        if self._pub_conn is None or not self._pub_conn.is_open or not self._pub_ch.is_open:
            self._drop_publisher()
            self._pub_conn = self._connect("publish")
            self._pub_ch = self._pub_conn.channel()
            self._pub_ch.confirm_delivery()
            self._pub_used = time.monotonic()
        return self._pub_ch

    def _drop_publisher(self) -> None:
        conn, self._pub_conn, self._pub_ch = self._pub_conn, None, None
        if conn is not None:
            try:
                conn.close()
            except _LINK_ERRORS:
                pass

    def close(self) -> None:
        with self._pub_lock:
            self._drop_publisher()

    # -- consuming ------------------------------------------------------------------------------------
    def consume(self, queue: str, handler: DeliveryHandler, stop: threading.Event, *, prefetch: int = 1) -> None:
        """Run up to ``prefetch`` handlers at once; reconnect with exponential backoff until ``stop``.

        A handler that raises is treated like a crash: its message goes back to the queue, the consumer
        stops once the other handlers are done, and the exception propagates from here.
        """
        self._consume(_Runner(self, queue, handler, stop, max(1, prefetch)))

    def consume_batch(self, queue: str, handler: BatchHandler, stop: threading.Event, *, max_batch: int,
                      max_wait: float) -> None:
        """Batches gathered by one thread from ``max_batch`` prefetched deliveries (not a thread each)."""
        if max_batch <= 1:
            super().consume_batch(queue, handler, stop, max_batch=max_batch, max_wait=max_wait)
            return
        self._consume(_Runner(self, queue, None, stop, max_batch, batch=(handler, max_batch, max_wait)))

    def _consume(self, runner: _Runner) -> None:
        queue, stop = runner.queue, runner.stop
        self._check_queue(queue)
        self._ensure_setup()
        backoff = 0.5
        try:
            while True:
                session: _Session | None = None
                try:
                    session = _Session(self, runner)
                    backoff = 0.5
                    session.run()
                    break
                except _LINK_ERRORS as exc:
                    log.warning("rabbitmq consumer lost its connection; reconnecting", queue=queue,
                                error=repr(exc), retry_in=backoff)
                finally:
                    if session is not None:
                        session.close()
                if runner.stopping():
                    break  # handlers still running finish below; their messages are redelivered
                stop.wait(backoff)
                backoff = min(backoff * 2, self.reconnect_max)
                try:
                    self.setup()  # the broker may have restarted without our queues (non-durable setups)
                except _LINK_ERRORS:
                    pass
        finally:
            runner.shutdown()
        if runner.failure is not None:
            raise runner.failure

    def ack_many(self, deliveries: list[Delivery]) -> None:
        """One hand-off to each connection thread for all its deliveries, instead of a round trip per ack
        (500 of them in a publish batch)."""
        by_session: dict[_Session, list[RabbitDelivery]] = {}
        for d in deliveries:
            assert isinstance(d, RabbitDelivery)
            if d.settled:
                raise RuntimeError(f"message {d.envelope.id} settled twice")
            by_session.setdefault(d._session, []).append(d)
        for session, group in by_session.items():
            try:
                session.call(lambda s=session, g=group: s.op_ack_many(g))
            except (_SessionLost, *_LINK_ERRORS):
                pass  # the connection is gone: what it did not ack is settled one by one below
            for d in group:
                if not d.settled:
                    d.ack()  # adoption by a newer connection, or lost (RabbitMQ redelivers)

    # -- operating ------------------------------------------------------------------------------------
    def stats(self) -> list[QueueStats]:
        """Exact ready/retrying/dead/consumers from passive declares.

        ``unacked`` and the rates need the management API (http://host:15672, same credentials); when it
        is not reachable they are None (unknown), never a made-up 0. Its counters lag a few seconds.
        """
        mgmt = self._management_queues()
        out = []
        with self._admin() as conn:
            counter = _Counter(conn)
            for q in self.queues:
                ready, consumers = counter.count(self.work_queue(q))
                retrying = sum(counter.count(self.retry_queue(q, t))[0] for t in self.retry_levels)
                dead = counter.count(self.dead_queue(q))[0]
                unacked = publish_rate = ack_rate = None
                if mgmt is not None:
                    work = mgmt.get(self.work_queue(q), {})
                    claim_prefix = f"{self.prefix}.{q}.claim."
                    unacked = int(work.get("messages_unacknowledged") or 0) + sum(
                        int(info.get("messages_unacknowledged") or 0)
                        for name, info in mgmt.items() if name.startswith(claim_prefix)
                    )
                    rates = work.get("message_stats") or {}
                    publish_rate = (rates.get("publish_details") or {}).get("rate")
                    ack_rate = (rates.get("ack_details") or {}).get("rate")
                out.append(QueueStats(queue=q, ready=ready, unacked=unacked, retrying=retrying, dead=dead,  # type: ignore[arg-type]
                                      consumers=consumers, publish_rate=publish_rate, ack_rate=ack_rate))
        return out

    def _management_base(self, explicit: str | None) -> tuple[str, tuple[str, str], str] | None:
        if explicit == "":
            return None
        parsed = urllib.parse.urlsplit(self.url)
        base = explicit or f"http://{parsed.hostname or '127.0.0.1'}:15672"
        creds = (urllib.parse.unquote(parsed.username or "guest"), urllib.parse.unquote(parsed.password or "guest"))
        vhost = urllib.parse.unquote(parsed.path[1:]) if len(parsed.path) > 1 else "/"
        return base.rstrip("/"), creds, vhost

    def _management_queues(self) -> dict[str, dict[str, Any]] | None:
        if self._mgmt is None or time.monotonic() < self._mgmt_down_until:
            return None
        base, creds, vhost = self._mgmt
        try:
            resp = requests.get(
                f"{base}/api/queues/{urllib.parse.quote(vhost, safe='')}",
                params={"page": 1, "page_size": 500, "name": f"^{self.prefix}\\.", "use_regex": "true"},
                auth=creds, timeout=3,
            )
            resp.raise_for_status()
            items = resp.json().get("items", [])
        except (requests.RequestException, ValueError):
            self._mgmt_down_until = time.monotonic() + 30  # don't stall every stats() call
            return None
        return {item["name"]: item for item in items}

    def dead_letters(self, where: DeadLetterFilter | None = None, limit: int | None = None) -> list[DeadLetter]:
        where = where or DeadLetterFilter()
        found: list[DeadLetter] = []
        with self._admin() as conn:
            for q in self.queues:
                if where.queue is not None and where.queue != q:
                    continue
                mine: list[DeadLetter] = []

                def visit(_ch: Any, _tag: int, letter: DeadLetter, mine: list[DeadLetter] = mine) -> object:
                    if where.matches(letter):
                        mine.append(letter)
                        if limit is not None and len(mine) >= limit:
                            return _STOP
                    return None

                self._scan_dead(conn, q, visit)
                found.extend(mine)
        found.sort(key=lambda d: d.dead_at)
        return found[:limit] if limit is not None else found

    def replay(self, ids: Iterable[str]) -> list[str]:
        def move(ch: Any, tag: int, letter: DeadLetter) -> None:
            env = letter.envelope.for_replay()
            ch.basic_publish(self.exchange, letter.queue, env.to_bytes(), self.properties(env), mandatory=True)
            ch.basic_ack(tag)  # only after the broker confirmed the copy on the work queue

        return self._settle_dead(ids, move)

    def purge(self, ids: Iterable[str]) -> list[str]:
        return self._settle_dead(ids, lambda ch, tag, _letter: ch.basic_ack(tag))

    def _settle_dead(self, ids: Iterable[str], action: Callable[[Any, int, DeadLetter], None]) -> list[str]:
        wanted = set(ids)
        done: list[str] = []
        if not wanted:
            return done
        with self._admin() as conn:
            for q in self.queues:
                if not wanted:
                    break

                def visit(ch: Any, tag: int, letter: DeadLetter) -> object:
                    if letter.id in wanted:
                        action(ch, tag, letter)
                        wanted.discard(letter.id)
                        done.append(letter.id)
                    return _STOP if not wanted else None

                self._scan_dead(conn, q, visit)
        return done

    def _scan_dead(self, conn: pika.BlockingConnection, queue: str,
                   visit: Callable[[Any, int, DeadLetter], object]) -> None:
        """Read a dead queue oldest first without taking anything off it.

        Messages are consumed unacked on a private channel; ``visit`` may ack some (after publishing
        with confirm on the same channel). Closing the channel gives the others back to the queue in
        their original order. The scan ends at the count seen at the start, at ``_STOP``, or when nothing
        arrives for a second (another process took messages meanwhile).
        """
        ch = conn.channel()
        try:
            ch.confirm_delivery()
            try:
                total = ch.queue_declare(self.dead_queue(queue), passive=True).method.message_count
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code == 404:
                    return
                raise
            if total == 0:
                return
            ch.basic_qos(prefetch_count=total if total <= 65535 else 0)
            seen = 0
            for method, props, body in ch.consume(self.dead_queue(queue), auto_ack=False, inactivity_timeout=1.0):
                if method is None:
                    break
                seen += 1
                letter = self._letter(queue, props, body)
                if letter is not None and visit(ch, method.delivery_tag, letter) is _STOP:
                    break
                if seen >= total:
                    break
        finally:
            if ch.is_open:
                ch.close()  # everything still unacked goes back, in order

    def _letter(self, queue: str, props: pika.BasicProperties, body: bytes) -> DeadLetter | None:
        try:
            env = Envelope.from_bytes(body)
        except ValueError:
            log.warning("unreadable message in a dead-letter queue; left there", queue=queue,
                        message_id=props.message_id)
            return None
        headers = props.headers or {}
        last = env.history[-1] if env.history else None
        error_class = _text(headers.get("error_class")) or (last.error_class if last else "unknown")
        error = _text(headers.get("error")) or ""
        if last is not None and last.error_class == error_class and last.error.startswith(error):
            error = last.error  # the header is truncated; the history has the whole text
        dead_at_text = _text(headers.get("dead_at"))
        if dead_at_text:
            dead_at = parse_time(dead_at_text)
        else:
            dead_at = datetime.fromtimestamp(props.timestamp or 0, timezone.utc)
        attempts = headers.get("attempts")
        return DeadLetter(id=env.id, queue=_text(headers.get("queue")) or queue, error_class=error_class,
                          error=error, attempts=int(attempts) if attempts is not None else env.attempts,
                          envelope=env, dead_at=dead_at)

    def dead_letter_properties(self, env: Envelope, queue: str, error_class: str, error: str) -> pika.BasicProperties:
        return self.properties(env, headers={
            "queue": queue,
            "error_class": error_class,
            "error": error[:HEADER_ERROR_LIMIT],
            "dead_at": datetime.now(timezone.utc).isoformat(),
        })


class _Counter:
    """Passive declares on one channel; a missing queue counts 0 (and costs the channel)."""

    def __init__(self, conn: pika.BlockingConnection) -> None:
        self.conn = conn
        self.ch = conn.channel()

    def count(self, name: str) -> tuple[int, int]:
        try:
            ok = self.ch.queue_declare(name, passive=True).method
            return ok.message_count, ok.consumer_count
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code != 404:
                raise
            self.ch = self.conn.channel()
            return 0, 0


# -- consuming machinery ------------------------------------------------------------------------------


class _SessionLost(Exception):
    """The connection a delivery came on is gone: RabbitMQ gives the message to a consumer again."""


class _Call:
    __slots__ = ("fn", "done", "result", "error")

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.done = threading.Event()
        self.result: Any = None
        self.error: BaseException | None = None

    def run(self) -> None:
        if self.done.is_set():
            return
        try:
            self.result = self.fn()
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            self.error = exc
        finally:
            self.done.set()


class RabbitDelivery(Delivery):
    """A delivery bound to (session, channel, delivery tag); the binding moves on re-claim or adoption."""

    def __init__(self, runner: "_Runner", queue: str, envelope: Envelope, redelivered: bool,
                 session: "_Session", channel: Any, tag: int, body: bytes, props: pika.BasicProperties) -> None:
        super().__init__(queue, envelope, redelivered)
        self._runner = runner
        self._session = session
        self._channel = channel
        self._tag = tag
        self._body = body
        self._props = props
        self.lost = False

    def _bind(self, session: "_Session", channel: Any, tag: int) -> None:
        self._channel, self._tag = channel, tag
        self._session = session

    def ack(self) -> None:
        self._settle(lambda s: s.op_ack(self))

    def retry(self, delay: float, error_class: str, error: str, *, counted: bool = True) -> None:
        bus = self._runner.bus
        env = self.envelope.with_failure(self.queue, error_class, error, counted=counted)
        level = bus._retry_level(max(0.0, delay))
        expiration = str(int(math.ceil(min(max(0.0, delay), level) * 1000)))
        key = f"{self.queue}.{bus._retry_key_suffix(level)}"
        props = bus.properties(env, expiration=expiration)
        body = env.to_bytes()
        self._settle(lambda s: s.op_publish_then_ack(self, key, body, props))

    def dead_letter(self, error_class: str, error: str) -> None:
        bus = self._runner.bus
        env = self.envelope.with_failure(self.queue, error_class, error)
        props = bus.dead_letter_properties(env, self.queue, error_class, error)
        body = env.to_bytes()
        self._settle(lambda s: s.op_publish_then_ack(self, f"{self.queue}.dead", body, props))

    def release(self) -> None:
        """Give the message back unsettled (handler raised or returned without settling, or stopping)."""
        self._settle(lambda s: s.op_release(self), release=True)

    def _settle(self, op: Callable[["_Session"], None], release: bool = False) -> None:
        if self.settled:
            raise RuntimeError(f"message {self.envelope.id} settled twice")
        for _ in range(3):
            session = self._session
            try:
                session.call(lambda: op(session))
                self.settled = True
                return
            except (_SessionLost, *_LINK_ERRORS) as exc:
                if isinstance(exc, (pika.exceptions.UnroutableError, pika.exceptions.NackError)):
                    raise
                if self._session is session:  # not adopted by a newer connection meanwhile
                    self.settled = self.lost = True
                    if not release:
                        log.warning("connection lost before the message was settled; RabbitMQ will deliver it "
                                    "again", queue=self.queue, message_id=self.envelope.id)
                    return
        self.settled = self.lost = True


class _Runner:
    """What outlives a connection inside one ``consume()`` call: the handler pool and running deliveries.

    With ``batch`` = (handler, max_batch, max_wait) one thread gathers up to ``max_batch`` deliveries (waiting
    up to ``max_wait`` after the first) and hands them to the batch handler at once: ``prefetch`` is then
    the batch size, not a number of threads.
    """

    def __init__(self, bus: RabbitBus, queue: str, handler: DeliveryHandler | None, stop: threading.Event,
                 prefetch: int, batch: tuple[BatchHandler, int, float] | None = None) -> None:
        self.bus = bus
        self.queue = queue
        self.handler = handler
        self.batch = batch
        self.stop = stop
        self.prefetch = batch[1] if batch else prefetch
        self._inbox: queue_module.SimpleQueue[RabbitDelivery | None] = queue_module.SimpleQueue()
        work, threads = (self._work_batches, 1) if batch else (self._work, prefetch)
        self._threads = [threading.Thread(target=work, name=f"stacdrop-{queue}-{i + 1}", daemon=True)
                         for i in range(threads)]
        for thread in self._threads:
            thread.start()
        self._lock = threading.Lock()
        self._active: dict[str, list[RabbitDelivery]] = {}
        self._count = 0
        self.failure: BaseException | None = None  # a handler raised: stop consuming, re-raise from consume()

    def busy(self) -> bool:
        return self._count > 0

    def stopping(self) -> bool:
        return self.stop.is_set() or self.failure is not None

    def submit(self, delivery: RabbitDelivery) -> None:
        with self._lock:
            self._active.setdefault(delivery.envelope.id, []).append(delivery)
            self._count += 1
        self._inbox.put(delivery)

    def _work(self) -> None:
        while (delivery := self._inbox.get()) is not None:
            self._run([delivery])

    def _work_batches(self) -> None:
        assert self.batch is not None
        _, max_batch, max_wait = self.batch
        closing = False
        while not closing and (first := self._inbox.get()) is not None:
            batch = [first]
            deadline = time.monotonic() + max_wait
            while len(batch) < max_batch and (left := deadline - time.monotonic()) > 0:
                try:
                    more = self._inbox.get(timeout=left)
                except queue_module.Empty:
                    break
                if more is None:
                    closing = True
                    break
                batch.append(more)
            self._run(batch)

    def shutdown(self) -> None:
        """Wait for the running handlers (messages not started yet are handed back)."""
        for _ in self._threads:
            self._inbox.put(None)
        for thread in self._threads:
            thread.join()

    def orphan(self, message_id: str) -> RabbitDelivery | None:
        """A delivery still being handled whose connection died: a redelivery of it is adopted."""
        with self._lock:
            for d in self._active.get(message_id, ()):
                if not d.settled and not d._session.alive:
                    return d
        return None

    def _run(self, deliveries: list[RabbitDelivery]) -> None:
        try:
            if self.stopping():
                for delivery in deliveries:
                    delivery.release()
                return
            try:
                if self.batch is not None:
                    self.batch[0](list(deliveries))
                else:
                    assert self.handler is not None
                    self.handler(deliveries[0])
            except Exception as exc:
                # Like a crash: the messages go back and consume() re-raises once the other handlers are
                # done, so the caller's supervisor restarts it with backoff instead of a hot redelivery loop.
                log.error("handler raised; message returned to the queue, consumer stopping", queue=self.queue,
                          message_ids=[d.envelope.id for d in deliveries], error=repr(exc))
                if self.failure is None:
                    self.failure = exc
            for delivery in deliveries:
                if not delivery.settled:
                    if self.failure is None:
                        log.warning("handler returned without settling; message returned to the queue",
                                    queue=self.queue, message_id=delivery.envelope.id)
                    delivery.release()
        except Exception:  # noqa: BLE001 - never kill a pool thread
            log.exception("could not return the message; RabbitMQ will when the connection closes")
        finally:
            with self._lock:
                for delivery in deliveries:
                    active = self._active.get(delivery.envelope.id, [])
                    if delivery in active:
                        active.remove(delivery)
                    if not active:
                        self._active.pop(delivery.envelope.id, None)
                    self._count -= 1


class _Session:
    """One consuming connection. Everything on it runs on the thread that called ``consume()``."""

    def __init__(self, bus: RabbitBus, runner: _Runner) -> None:
        self.bus = bus
        self.runner = runner
        self.alive = True
        self.thread = threading.get_ident()
        self._lock = threading.Lock()
        self._pending: set[_Call] = set()
        self._wake = threading.Condition(self._lock)
        self._parked = False
        self._handoff: list[_Call] = []
        self.held: dict[RabbitDelivery, float] = {}  # delivery -> when its current AMQP delivery arrived
        self.claims: dict[str, RabbitDelivery] = {}  # claim token -> delivery whose copy is on its way
        self.claim_queue: str | None = None
        self.claim_ch: Any = None
        self.conn = bus._connect(f"consume {runner.queue}")
        try:
            self.ch = self.conn.channel()
            self.ch.basic_qos(prefetch_count=runner.prefetch)
            self.pub = self.conn.channel()
            self.pub.confirm_delivery()
            self.cancelled_by_broker = False
            self.ch.add_on_cancel_callback(self._on_broker_cancel)
            self.tag: str | None = self.ch.basic_consume(bus.work_queue(runner.queue), self._on_message)
        except BaseException:
            self.close()
            raise

    # -- thread plumbing --
    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the connection thread and wait for it."""
        if threading.get_ident() == self.thread:
            return fn()
        call = _Call(fn)
        with self._lock:
            if not self.alive:
                raise _SessionLost()
            self._pending.add(call)
            if self._parked:  # the connection thread is waiting right here: no I/O-loop wake-up needed
                self._handoff.append(call)
                self._wake.notify()
            else:
                try:
                    self.conn.add_callback_threadsafe(call.run)
                except _LINK_ERRORS:
                    self._pending.discard(call)
                    raise _SessionLost() from None
        call.done.wait()
        with self._lock:
            self._pending.discard(call)
        if call.error is not None:
            raise call.error
        return call.result

    def _park(self, seconds: float) -> None:
        """Every slot is busy, so no delivery can come: wait briefly for a settle on a condition variable
        instead of the I/O loop. Releasing the GIL at once lets a quick handler run and settle sooner, and
        the settle skips the loop's wake-up pipe. Short enough to keep heartbeats serviced."""
        with self._lock:
            self._parked = True
            if not self._handoff:
                self._wake.wait(seconds)
            self._parked = False
            calls, self._handoff = self._handoff, []
        for call in calls:
            call.run()

    def close(self) -> None:
        with self._lock:
            self.alive = False
            pending = list(self._pending)
        for call in pending:
            if not call.done.is_set():
                call.error = _SessionLost()
                call.done.set()
        try:
            if self.conn.is_open:
                self.conn.close()
        except _LINK_ERRORS:
            pass

    # -- the loop --
    def run(self) -> None:
        runner = self.runner
        next_check = time.monotonic() + 1.0
        tick = [False]

        def ticked() -> None:
            tick[0] = False

        while True:
            if not tick[0]:  # one timer per 0.2 s wakes the loop, not one per I/O round
                self.conn.call_later(0.2, ticked)
                tick[0] = True
            self.conn.process_data_events(time_limit=None)
            if len(self.held) >= runner.prefetch and not runner.stopping():
                self._park(0.02)
            if self.cancelled_by_broker or self.ch.is_closed or (self.claim_ch is not None and self.claim_ch.is_closed):
                # e.g. consumer_timeout closed the channel, or the queue was deleted: start afresh
                raise pika.exceptions.ChannelWrongStateError("consumer channel closed or cancelled by the broker")
            if runner.stopping():
                if self.tag is not None:
                    self.ch.basic_cancel(self.tag)  # pika nacks (requeues) what was not dispatched yet
                    self.tag = None
                if not runner.busy():
                    return
            now = time.monotonic()
            if now >= next_check:
                next_check = now + 1.0
                self._reclaim_due(now)

    def _on_broker_cancel(self, _frame: Any) -> None:
        self.cancelled_by_broker = True

    def _on_message(self, ch: Any, method: Any, props: pika.BasicProperties, body: bytes) -> None:
        queue = self.runner.queue
        try:
            env = Envelope.from_bytes(body)
        except ValueError as exc:
            self._dead_letter_unreadable(ch, method, props, body, exc)
            return
        deaths = (props.headers or {}).get("x-death") or []
        claim_prefix = f"{self.bus.prefix}.{queue}.claim."
        redelivered = bool(method.redelivered) or any(
            (_text(d.get("queue")) or "").startswith(claim_prefix) for d in deaths
        )
        orphan = self.runner.orphan(env.id)
        if orphan is not None:
            # Our connection dropped while its handler kept working: this is the same message again.
            orphan._bind(self, ch, method.delivery_tag)
            self.held[orphan] = time.monotonic()
            log.info("re-attached a redelivered message to its running handler", queue=queue, message_id=env.id)
            return
        delivery = RabbitDelivery(self.runner, queue, env, redelivered, self, ch, method.delivery_tag, body, props)
        self.held[delivery] = time.monotonic()
        self.runner.submit(delivery)

    def _dead_letter_unreadable(self, ch: Any, method: Any, props: pika.BasicProperties, body: bytes,
                                exc: Exception) -> None:
        queue = self.runner.queue
        env = Envelope(id=props.message_id or uuid.uuid4().hex, job_id="unknown",
                       body={"kind": "unreadable", "raw": body[:100_000].decode("utf-8", "replace")})
        error = f"unreadable message: {exc}"[:2000]
        env = env.with_failure(queue, "unreadable_message", error)
        props_out = self.bus.dead_letter_properties(env, queue, "unreadable_message", error)
        self._publisher().basic_publish(self.bus.exchange, f"{queue}.dead", env.to_bytes(), props_out, mandatory=True)
        ch.basic_ack(method.delivery_tag)
        log.error("unreadable message moved to the dead letters", queue=queue, message_id=env.id)

    def _publisher(self) -> Any:
        if not self.pub.is_open:
            self.pub = self.conn.channel()
            self.pub.confirm_delivery()
        return self.pub

    # -- settling (on the connection thread) --
    def _own(self, d: RabbitDelivery) -> None:
        if d._session is not self or d not in self.held:
            raise _SessionLost()

    @staticmethod
    def _send_ack(channel: Any, tag: int) -> None:
        # The frame is queued on the connection and written by the loop this callback returns to; the
        # BlockingChannel wrapper would spin an extra I/O round first (~0.15 ms per message).
        channel._impl.basic_ack(delivery_tag=tag)

    def op_ack(self, d: RabbitDelivery) -> None:
        self._own(d)
        self._send_ack(d._channel, d._tag)
        self.held.pop(d, None)

    def op_ack_many(self, group: list[RabbitDelivery]) -> None:
        for d in group:
            try:
                self.op_ack(d)
            except _SessionLost:
                continue  # adopted by a newer connection meanwhile: the caller acks it there
            d.settled = True

    def op_publish_then_ack(self, d: RabbitDelivery, key: str, body: bytes, props: pika.BasicProperties) -> None:
        self._own(d)
        self._publisher().basic_publish(self.bus.exchange, key, body, props, mandatory=True)  # waits for confirm
        self._send_ack(d._channel, d._tag)
        self.held.pop(d, None)

    def op_release(self, d: RabbitDelivery) -> None:
        self._own(d)
        d._channel.basic_nack(d._tag, requeue=True)
        self.held.pop(d, None)

    # -- re-claiming long deliveries before consumer_timeout --
    def _reclaim_due(self, now: float) -> None:
        claiming = set(self.claims.values())
        for d, since in list(self.held.items()):
            if now - since >= self.bus.claim_interval and d not in claiming:
                self._reclaim(d)

    def _reclaim(self, d: RabbitDelivery) -> None:
        if self.claim_ch is None:
            bus = self.bus
            name = f"{bus.prefix}.{self.runner.queue}.claim.{uuid.uuid4().hex[:12]}"
            ch = self.conn.channel()
            ch.queue_declare(name, durable=True, arguments={
                "x-message-ttl": int(bus.claim_ttl * 1000),
                "x-dead-letter-exchange": bus.exchange,
                "x-dead-letter-routing-key": self.runner.queue,
                "x-expires": int((2 * bus.claim_ttl + 60) * 1000),
            })
            ch.basic_qos(prefetch_count=0)  # a copy must never wait for a free slot: it would expire
            ch.basic_consume(name, self._on_claim)
            self.claim_queue, self.claim_ch = name, ch
        token = uuid.uuid4().hex
        old = d._props
        props = pika.BasicProperties(
            content_type=old.content_type, delivery_mode=pika.DeliveryMode.Persistent, message_id=old.message_id,
            priority=old.priority, timestamp=old.timestamp,
            headers={**{k: v for k, v in (old.headers or {}).items() if k != "x-death"}, CLAIM_HEADER: token},
        )
        self._publisher().basic_publish("", self.claim_queue, d._body, props, mandatory=True)
        self.claims[token] = d
        log.info("long handler: message re-claimed before the broker's consumer timeout", queue=self.runner.queue,
                 message_id=d.envelope.id)

    def _on_claim(self, ch: Any, method: Any, props: pika.BasicProperties, _body: bytes) -> None:
        token = _text((props.headers or {}).get(CLAIM_HEADER))
        if token not in self.claims:
            ch.basic_nack(method.delivery_tag, requeue=False)  # unknown copy: back to the work queue, not lost
            return
        d = self.claims.pop(token)
        if d not in self.held or d._session is not self:
            ch.basic_ack(method.delivery_tag)  # settled while its copy travelled: drop the copy
            return
        old_ch, old_tag = d._channel, d._tag
        d._bind(self, ch, method.delivery_tag)
        self.held[d] = time.monotonic()
        old_ch.basic_ack(old_tag)


__all__ = ["DEFAULT_RETRY_LEVELS", "RabbitBus", "RabbitDelivery"]

"""Settling RabbitMQ deliveries from handler threads.

pika's connection is not thread-safe and must keep servicing heartbeats while handlers run for hours, so
it stays on the thread that called ``consume()`` (consumer.py) and handlers run in a pool of threads
(``Runner``). A handler settles its ``RabbitDelivery`` by handing the operation to the connection thread
(``SettlingSession.call``, through ``add_callback_threadsafe``) and waiting until the broker has the
outcome: an ack, or for a retry and a dead letter a publish with confirm, then the ack.

A delivery is bound to (session, channel, delivery tag). The binding moves when the delivery is
re-claimed (reclaim.py) or when its connection died and the same message comes back to this consumer
while its handler is still running (the handler is not started twice: the redelivery is adopted).
"""

from __future__ import annotations

import functools
import math
import queue as queue_module
import threading
import time
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import structlog

from stacdrop.bus.base import BatchHandler, Delivery, DeliveryHandler
from stacdrop.bus.rabbitmq.link import LINK_ERRORS, Connector
from stacdrop.bus.rabbitmq.topology import Topology
from stacdrop.messages import Envelope

log = structlog.get_logger("stacdrop.bus.rabbitmq")


class SessionLost(Exception):
    """The connection a delivery came on is gone: RabbitMQ gives the message to a consumer again."""


class Call:
    """A function handed to the connection thread; the handing thread waits on ``done``."""

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


class SettlingSession:
    """One consuming connection as the handler threads see it: they hand it calls and settle through it.
    Everything on it runs on the thread that called ``consume()``; consumer.Session adds the consuming."""

    def __init__(self, runner: Runner, connector: Connector) -> None:
        self.runner = runner
        self.alive = True
        self.thread = threading.get_ident()
        self._lock = threading.Lock()
        self._pending: set[Call] = set()
        self._wake = threading.Condition(self._lock)
        self._parked = False
        self._handoff: list[Call] = []
        self.held: dict[RabbitDelivery, float] = {}  # delivery -> when its current AMQP delivery arrived
        self.pub: Any = None  # the confirming channel for retries, dead letters and claim copies
        self.conn = connector.connect(f"consume {runner.queue}")

    # -- thread plumbing --
    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` on the connection thread and wait for it."""
        if threading.get_ident() == self.thread:
            return fn()
        call = Call(fn)
        with self._lock:
            if not self.alive:
                raise SessionLost()
            self._pending.add(call)
            if self._parked:  # the connection thread is waiting right here: no I/O-loop wake-up needed
                self._handoff.append(call)
                self._wake.notify()
            else:
                try:
                    self.conn.add_callback_threadsafe(call.run)
                except LINK_ERRORS:
                    self._pending.discard(call)
                    raise SessionLost() from None
        call.done.wait()
        with self._lock:
            self._pending.discard(call)
        if call.error is not None:
            raise call.error
        return call.result

    def park(self, seconds: float) -> None:
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
                call.error = SessionLost()
                call.done.set()
        try:
            if self.conn.is_open:
                self.conn.close()
        except LINK_ERRORS:
            pass

    def publisher(self) -> Any:
        if not self.pub.is_open:
            self.pub = self.conn.channel()
            self.pub.confirm_delivery()
        return self.pub

    # -- settling (on the connection thread) --
    def _own(self, d: RabbitDelivery) -> None:
        if d.session is not self or d not in self.held:
            raise SessionLost()

    @staticmethod
    def _send_ack(channel: Any, tag: int) -> None:
        # The frame is queued on the connection and written by the loop this callback returns to; the
        # BlockingChannel wrapper would spin an extra I/O round first (~0.15 ms per message).
        channel._impl.basic_ack(delivery_tag=tag)  # noqa: SLF001 - pika has no public way around the wrapper

    def op_ack(self, d: RabbitDelivery) -> None:
        self._own(d)
        self._send_ack(d.channel, d.tag)
        self.held.pop(d, None)

    def op_ack_many(self, group: list[RabbitDelivery]) -> None:
        for d in group:
            try:
                self.op_ack(d)
            except SessionLost:
                continue  # adopted by a newer connection meanwhile: the caller acks it there
            d.settled = True

    def op_publish_then_ack(self, d: RabbitDelivery, key: str, body: bytes, props: pika.BasicProperties) -> None:
        self._own(d)
        # waits for the confirm
        self.publisher().basic_publish(self.runner.topology.exchange, key, body, props, mandatory=True)
        self._send_ack(d.channel, d.tag)
        self.held.pop(d, None)

    def op_release(self, d: RabbitDelivery) -> None:
        self._own(d)
        d.channel.basic_nack(d.tag, requeue=True)
        self.held.pop(d, None)


class RabbitDelivery(Delivery):
    """A delivery bound to (session, channel, delivery tag); the binding moves on re-claim or adoption."""

    def __init__(self, runner: Runner, queue: str, envelope: Envelope, redelivered: bool,
                 session: SettlingSession, channel: Any, tag: int, body: bytes, props: pika.BasicProperties) -> None:
        super().__init__(queue, envelope, redelivered)
        self.runner = runner
        self.session = session
        self.channel = channel
        self.tag = tag
        self.body = body
        self.props = props
        self.lost = False

    def bind(self, session: SettlingSession, channel: Any, tag: int) -> None:
        self.channel, self.tag = channel, tag
        self.session = session

    def ack(self) -> None:
        self._settle(lambda s: s.op_ack(self))

    def retry(self, delay: float, error_class: str, error: str, *, counted: bool = True) -> None:
        top = self.runner.topology
        env = self.envelope.with_failure(self.queue, error_class, error, counted=counted)
        level = top.retry_level(max(0.0, delay))
        expiration = str(int(math.ceil(min(max(0.0, delay), level) * 1000)))
        key = f"{self.queue}.{top.retry_key_suffix(level)}"
        props = top.properties(env, expiration=expiration)
        body = env.to_bytes()
        self._settle(lambda s: s.op_publish_then_ack(self, key, body, props))

    def dead_letter(self, error_class: str, error: str) -> None:
        top = self.runner.topology
        env = self.envelope.with_failure(self.queue, error_class, error)
        props = top.dead_letter_properties(env, self.queue, error_class, error)
        body = env.to_bytes()
        self._settle(lambda s: s.op_publish_then_ack(self, f"{self.queue}.dead", body, props))

    def release(self) -> None:
        """Give the message back unsettled (handler raised or returned without settling, or stopping)."""
        self._settle(lambda s: s.op_release(self), release=True)

    def _settle(self, op: Callable[[SettlingSession], None], release: bool = False) -> None:
        if self.settled:
            raise RuntimeError(f"message {self.envelope.id} settled twice")
        for _ in range(3):
            session = self.session
            try:
                session.call(functools.partial(op, session))
                self.settled = True
                return
            except (SessionLost, *LINK_ERRORS) as exc:
                if isinstance(exc, (pika.exceptions.UnroutableError, pika.exceptions.NackError)):
                    raise
                if self.session is session:  # not adopted by a newer connection meanwhile
                    self.settled = self.lost = True
                    if not release:
                        log.warning("connection lost before the message was settled; RabbitMQ will deliver it "
                                    "again", queue=self.queue, message_id=self.envelope.id)
                    return
        self.settled = self.lost = True


def ack_many(deliveries: list[Delivery]) -> None:
    """One hand-off to each connection thread for all its deliveries, instead of a round trip per ack
    (500 of them in a publish batch)."""
    by_session: dict[SettlingSession, list[RabbitDelivery]] = {}
    for d in deliveries:
        assert isinstance(d, RabbitDelivery)
        if d.settled:
            raise RuntimeError(f"message {d.envelope.id} settled twice")
        by_session.setdefault(d.session, []).append(d)
    for session, group in by_session.items():
        try:
            session.call(functools.partial(session.op_ack_many, group))
        except (SessionLost, *LINK_ERRORS):
            pass  # the connection is gone: what it did not ack is settled one by one below
        for d in group:
            if not d.settled:
                d.ack()  # adoption by a newer connection, or lost (RabbitMQ redelivers)


class Runner:
    """What outlives a connection inside one ``consume()`` call: the handler pool and running deliveries.

    With ``batch`` = (handler, max_batch, max_wait) one thread gathers up to ``max_batch`` deliveries (waiting
    up to ``max_wait`` after the first) and hands them to the batch handler at once: ``prefetch`` is then
    the batch size, not a number of threads.
    """

    def __init__(self, topology: Topology, queue: str, handler: DeliveryHandler | None, stop: threading.Event,
                 prefetch: int, batch: tuple[BatchHandler, int, float] | None = None) -> None:
        self.topology = topology
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
                if not d.settled and not d.session.alive:
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
            except Exception as exc:  # noqa: BLE001 - kept and re-raised by consume()
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
        except Exception:  # never kill a pool thread
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

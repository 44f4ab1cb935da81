"""The consume loop of the RabbitMQ bus.

The connection stays on the thread that called ``consume()`` and calls ``process_data_events`` all the
time (heartbeats); handlers run in the ``Runner``'s pool of ``prefetch`` threads and settle through the
session (delivery.py). A lost connection is rebuilt with exponential backoff; RabbitMQ redelivers what
was unacked, and a redelivery of a message whose handler is still running is re-attached to it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import pika
import pika.exceptions
import structlog

from stacdrop.bus.rabbitmq.delivery import RabbitDelivery, Runner, SettlingSession
from stacdrop.bus.rabbitmq.link import LINK_ERRORS, Connector
from stacdrop.bus.rabbitmq.reclaim import Reclaimer
from stacdrop.bus.rabbitmq.topology import header_text
from stacdrop.messages import Envelope

log = structlog.get_logger("stacdrop.bus.rabbitmq")


def consume(runner: Runner, connector: Connector, *, setup: Callable[[], None], reconnect_max: float,
            claim_interval: float, claim_ttl: float) -> None:
    """Consume ``runner.queue`` until ``runner.stop``, reconnecting with backoff (up to ``reconnect_max``).

    ``setup`` declares the topology again after a reconnect. Re-raises a handler's exception once the
    other handlers are done.
    """
    queue, stop = runner.queue, runner.stop
    backoff = 0.5
    try:
        while True:
            session: Session | None = None
            try:
                session = Session(runner, connector, claim_interval, claim_ttl)
                backoff = 0.5
                session.run()
                break
            except LINK_ERRORS as exc:
                log.warning("rabbitmq consumer lost its connection; reconnecting", queue=queue,
                            error=repr(exc), retry_in=backoff)
            finally:
                if session is not None:
                    session.close()
            if runner.stopping():
                break  # handlers still running finish below; their messages are redelivered
            stop.wait(backoff)
            backoff = min(backoff * 2, reconnect_max)
            try:
                setup()  # the broker may have restarted without our queues (non-durable setups)
            except LINK_ERRORS:
                pass
    finally:
        runner.shutdown()
    if runner.failure is not None:
        raise runner.failure


class Session(SettlingSession):
    """One consuming connection. Everything on it runs on the thread that called ``consume()``."""

    def __init__(self, runner: Runner, connector: Connector, claim_interval: float, claim_ttl: float) -> None:
        super().__init__(runner, connector)
        self.reclaimer = Reclaimer(self, claim_interval, claim_ttl)
        try:
            self.ch = self.conn.channel()
            self.ch.basic_qos(prefetch_count=runner.prefetch)
            self.pub = self.conn.channel()
            self.pub.confirm_delivery()
            self.cancelled_by_broker = False
            self.ch.add_on_cancel_callback(self._on_broker_cancel)
            self.tag: str | None = self.ch.basic_consume(runner.topology.work_queue(runner.queue), self._on_message)
        except BaseException:
            self.close()
            raise

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
                self.park(0.02)
            if self.cancelled_by_broker or self.ch.is_closed or self.reclaimer.closed():
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
                self.reclaimer.reclaim_due(now)

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
        claim_prefix = self.runner.topology.claim_prefix(queue)
        redelivered = bool(method.redelivered) or any(
            (header_text(d.get("queue")) or "").startswith(claim_prefix) for d in deaths
        )
        orphan = self.runner.orphan(env.id)
        if orphan is not None:
            # Our connection dropped while its handler kept working: this is the same message again.
            orphan.bind(self, ch, method.delivery_tag)
            self.held[orphan] = time.monotonic()
            log.info("re-attached a redelivered message to its running handler", queue=queue, message_id=env.id)
            return
        delivery = RabbitDelivery(self.runner, queue, env, redelivered, self, ch, method.delivery_tag, body, props)
        self.held[delivery] = time.monotonic()
        self.runner.submit(delivery)

    def _dead_letter_unreadable(self, ch: Any, method: Any, props: pika.BasicProperties, body: bytes,
                                exc: Exception) -> None:
        queue = self.runner.queue
        top = self.runner.topology
        env = Envelope(id=props.message_id or uuid.uuid4().hex, job_id="unknown",
                       body={"kind": "unreadable", "raw": body[:100_000].decode("utf-8", "replace")})
        error = f"unreadable message: {exc}"[:2000]
        env = env.with_failure(queue, "unreadable_message", error)
        props_out = top.dead_letter_properties(env, queue, "unreadable_message", error)
        self.publisher().basic_publish(top.exchange, f"{queue}.dead", env.to_bytes(), props_out, mandatory=True)
        ch.basic_ack(method.delivery_tag)
        log.error("unreadable message moved to the dead letters", queue=queue, message_id=env.id)


__all__ = ["Session", "consume"]

"""Re-claiming long handlers before the broker's ``consumer_timeout`` (design: docs/rabbitmq.md).

RabbitMQ 3.10 closes a channel holding a delivery unacked for ``consumer_timeout`` (30 min, server-wide).
Before that (``claim_interval``, 10 min) the delivery is *re-claimed*: a copy goes, with confirm, into this
session's private claim queue, which this session consumes; when the copy arrives the previous delivery
is acked. The copy is again an unacked delivery with a fresh clock. If the worker dies, the copy is
requeued in the claim queue, already older than the claim queue's x-message-ttl, so RabbitMQ
dead-letters it back into the work queue at once: it is not lost and no second worker gets it while the
first one is alive. The claim queue has x-expires, so a dead worker's queue disappears by itself.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pika
import structlog

from stacdrop.bus.rabbitmq.delivery import RabbitDelivery, SettlingSession
from stacdrop.bus.rabbitmq.topology import header_text

log = structlog.get_logger("stacdrop.bus.rabbitmq")

CLAIM_HEADER = "x-stacdrop-claim"


class Reclaimer:
    """The claim queue of one session, created when its first delivery is held ``interval`` seconds."""

    def __init__(self, session: SettlingSession, interval: float, ttl: float) -> None:
        self.session = session
        self.interval = interval
        self.ttl = ttl
        self.claims: dict[str, RabbitDelivery] = {}  # claim token -> delivery whose copy is on its way
        self.queue: str | None = None
        self.channel: Any = None

    def closed(self) -> bool:
        """The claim channel was opened and the broker closed it: the session starts afresh."""
        return self.channel is not None and self.channel.is_closed

    def reclaim_due(self, now: float) -> None:
        claiming = set(self.claims.values())
        for d, since in list(self.session.held.items()):
            if now - since >= self.interval and d not in claiming:
                self._reclaim(d)

    def _reclaim(self, d: RabbitDelivery) -> None:
        session = self.session
        queue = session.runner.queue
        if self.channel is None:
            top = session.runner.topology
            name = f"{top.claim_prefix(queue)}{uuid.uuid4().hex[:12]}"
            ch = session.conn.channel()
            ch.queue_declare(name, durable=True, arguments={
                "x-message-ttl": int(self.ttl * 1000),
                "x-dead-letter-exchange": top.exchange,
                "x-dead-letter-routing-key": queue,
                "x-expires": int((2 * self.ttl + 60) * 1000),
            })
            ch.basic_qos(prefetch_count=0)  # a copy must never wait for a free slot: it would expire
            ch.basic_consume(name, self._on_claim)
            self.queue, self.channel = name, ch
        token = uuid.uuid4().hex
        old = d.props
        props = pika.BasicProperties(
            content_type=old.content_type, delivery_mode=pika.DeliveryMode.Persistent, message_id=old.message_id,
            priority=old.priority, timestamp=old.timestamp,
            headers={**{k: v for k, v in (old.headers or {}).items() if k != "x-death"}, CLAIM_HEADER: token},
        )
        session.publisher().basic_publish("", self.queue, d.body, props, mandatory=True)
        self.claims[token] = d
        log.info("long handler: message re-claimed before the broker's consumer timeout", queue=queue,
                 message_id=d.envelope.id)

    def _on_claim(self, ch: Any, method: Any, props: pika.BasicProperties, _body: bytes) -> None:
        session = self.session
        token = header_text((props.headers or {}).get(CLAIM_HEADER))
        if token not in self.claims:
            ch.basic_nack(method.delivery_tag, requeue=False)  # unknown copy: back to the work queue, not lost
            return
        d = self.claims.pop(token)
        if d not in session.held or d.session is not session:
            ch.basic_ack(method.delivery_tag)  # settled while its copy travelled: drop the copy
            return
        old_ch, old_tag = d.channel, d.tag
        d.bind(session, ch, method.delivery_tag)
        session.held[d] = time.monotonic()
        old_ch.basic_ack(old_tag)

"""The RabbitMQ names of one prefix, declared by ``setup()`` (``P`` = prefix, ``q`` = a stage queue)::

    exchange P                      durable direct; every publish goes through it with mandatory=True
    queue    P.q                    work queue: durable, x-max-priority (LIVE overtakes BACKFILL); key "q"
    queue    P.q.retry.<T>s         one per retry level T (1, 2, 4 ... 1024 s): no consumer, x-message-ttl=T,
                                    dead-letters back to key "q"; a retry is published with expiration=delay
                                    into the smallest level T >= delay (see ``Topology.retry_level``)
    queue    P.q.dead               dead letters: durable, headers error_class, error, dead_at, attempts
    queue    P.q.claim.<session>    created only when a handler runs past ``claim_interval`` (reclaim.py)

Messages are persistent, message_id = envelope id. The properties of a message (priority, headers) are
built here too, so a work message, a retry and a dead letter carry the same fields wherever they are sent.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import datetime, timezone
from typing import Any

import pika
import pika.exceptions

from stacdrop.errors import ConfigError
from stacdrop.messages import Envelope

DEFAULT_RETRY_LEVELS: tuple[float, ...] = tuple(float(2**i) for i in range(11))  # 1 s .. 1024 s
HEADER_ERROR_LIMIT = 4000  # chars of the error kept in a header; the full text is in the envelope history


def header_text(value: Any) -> str | None:
    """A header value as text: pika hands over AMQP long strings as bytes."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class Topology:
    """The exchange, queues and routing keys of one prefix, and how to declare them."""

    def __init__(self, queues: Iterable[str], prefix: str, retry_levels: Sequence[float], max_priority: int) -> None:
        self.queues = tuple(queues)
        self.prefix = prefix
        self.exchange = prefix
        self.retry_levels = tuple(sorted(float(t) for t in retry_levels))
        if not self.retry_levels or self.retry_levels[0] <= 0:
            raise ConfigError("retry_levels must be positive seconds")
        self.max_priority = max_priority

    # -- names ----------------------------------------------------------------------------------------
    def work_queue(self, queue: str) -> str:
        return f"{self.prefix}.{queue}"

    def dead_queue(self, queue: str) -> str:
        return f"{self.prefix}.{queue}.dead"

    def retry_queue(self, queue: str, level: float) -> str:
        return f"{self.prefix}.{queue}.{self.retry_key_suffix(level)}"

    def claim_prefix(self, queue: str) -> str:
        """Every claim queue of ``queue`` starts with this (one per consuming connection)."""
        return f"{self.prefix}.{queue}.claim."

    @staticmethod
    def retry_key_suffix(level: float) -> str:
        return f"retry.{level:g}s"

    def retry_level(self, delay: float) -> float:
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

    def check_queue(self, queue: str) -> None:
        if queue not in self.queues:
            raise ValueError(f"unknown queue {queue!r}; known: {', '.join(self.queues)}")

    # -- declaring ------------------------------------------------------------------------------------
    def declare(self, conn: pika.BlockingConnection) -> None:
        """Declare everything, idempotently; a queue that exists with other arguments is a ConfigError."""
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
                    ch.queue_bind(name, self.exchange, routing_key=f"{q}.{self.retry_key_suffix(level)}")
                ch.queue_declare(self.dead_queue(q), durable=True)
                ch.queue_bind(self.dead_queue(q), self.exchange, routing_key=f"{q}.dead")
        except pika.exceptions.ChannelClosedByBroker as exc:
            if exc.reply_code == 406:
                raise ConfigError(
                    f"RabbitMQ topology '{self.prefix}' exists with other arguments ({exc.reply_text}); "
                    "delete those queues or use another prefix"
                ) from None
            raise

    def delete(self, conn: pika.BlockingConnection) -> None:
        """Delete every queue and the exchange of this prefix. Loses their messages."""
        names = [self.work_queue(q) for q in self.queues] + [self.dead_queue(q) for q in self.queues]
        names += [self.retry_queue(q, t) for q in self.queues for t in self.retry_levels]
        ch = conn.channel()
        for name in names:
            ch.queue_delete(name)
        ch.exchange_delete(self.exchange)

    # -- message properties ---------------------------------------------------------------------------
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

    def dead_letter_properties(self, env: Envelope, queue: str, error_class: str, error: str) -> pika.BasicProperties:
        return self.properties(env, headers={
            "queue": queue,
            "error_class": error_class,
            "error": error[:HEADER_ERROR_LIMIT],
            "dead_at": datetime.now(timezone.utc).isoformat(),
        })

"""The RabbitMQ bus (AMQP 0-9-1 through pika's ``BlockingConnection``). Design notes: docs/rabbitmq.md.

``RabbitBus`` composes the parts, each module explaining its own why:

- topology.py: the exchange and queues of a prefix (work, retry levels, dead letters), declared by
  ``setup()``, and the properties every message carries;
- link.py: connections per role and the shared publishing connection (persistent messages, publisher
  confirms, message_id = envelope id);
- consumer.py: the consume loop; the connection stays on the thread that called ``consume()`` and calls
  ``process_data_events`` all the time (heartbeats);
- delivery.py: handlers run in a pool of ``prefetch`` threads and settle through
  ``add_callback_threadsafe``, waiting until the broker has the outcome (retry and dead letter: publish
  with confirm, then ack);
- reclaim.py: a handler running past ``claim_interval`` is re-claimed through a private claim queue
  before RabbitMQ's ``consumer_timeout`` closes its channel;
- admin.py: queue stats and dead letters (listing, replay, purge) for the operator.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

import pika

from stacdrop.bus.base import BatchHandler, Bus, DeadLetter, DeadLetterFilter, Delivery, DeliveryHandler, QueueStats
from stacdrop.bus.rabbitmq import consumer
from stacdrop.bus.rabbitmq.admin import Admin
from stacdrop.bus.rabbitmq.delivery import RabbitDelivery, Runner, ack_many
from stacdrop.bus.rabbitmq.link import Connector, Publisher, split_bus_options
from stacdrop.bus.rabbitmq.topology import DEFAULT_RETRY_LEVELS, Topology
from stacdrop.messages import QUEUES, Envelope


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
        url, from_url = split_bus_options(url)
        self.url = url
        self.topology = Topology(queues, prefix, retry_levels, max_priority)
        self.queues = self.topology.queues
        self.prefix = prefix
        self.exchange = self.topology.exchange
        self.retry_levels = self.topology.retry_levels
        self.max_priority = max_priority
        self.claim_interval = from_url.get("claim_interval", claim_interval)
        self.claim_ttl = claim_ttl
        self.reconnect_max = reconnect_max
        self.connector = Connector(url, prefix, heartbeat)
        self.heartbeat = self.connector.heartbeat
        self.admin = Admin(self.topology, self.connector, management_url)
        self._publisher = Publisher(self.connector, self.exchange)
        self._ready = False

    # -- names ----------------------------------------------------------------------------------------
    def work_queue(self, queue: str) -> str:
        return self.topology.work_queue(queue)

    def dead_queue(self, queue: str) -> str:
        return self.topology.dead_queue(queue)

    def retry_queue(self, queue: str, level: float) -> str:
        return self.topology.retry_queue(queue, level)

    def retry_level(self, delay: float) -> float:
        return self.topology.retry_level(delay)

    # -- topology -------------------------------------------------------------------------------------
    def setup(self) -> None:
        with self.connector.admin() as conn:
            self.topology.declare(conn)
        self._ready = True

    def _ensure_setup(self) -> None:
        if not self._ready:
            self.setup()

    def delete_topology(self) -> None:
        """Delete every queue and the exchange of this prefix (tests, uninstall). Loses their messages."""
        with self.connector.admin() as conn:
            self.topology.delete(conn)
        self._ready = False

    # -- publishing -----------------------------------------------------------------------------------
    def properties(self, env: Envelope, headers: dict[str, Any] | None = None,
                   expiration: str | None = None) -> pika.BasicProperties:
        return self.topology.properties(env, headers, expiration)

    def dead_letter_properties(self, env: Envelope, queue: str, error_class: str, error: str) -> pika.BasicProperties:
        return self.topology.dead_letter_properties(env, queue, error_class, error)

    def publish(self, queue: str, envelope: Envelope) -> None:
        self.topology.check_queue(queue)
        self._ensure_setup()
        self._publisher.publish(queue, envelope.to_bytes(), self.properties(envelope))

    def close(self) -> None:
        self._publisher.close()

    # -- consuming ------------------------------------------------------------------------------------
    def consume(self, queue: str, handler: DeliveryHandler, stop: threading.Event, *, prefetch: int = 1) -> None:
        """Run up to ``prefetch`` handlers at once; reconnect with exponential backoff until ``stop``.

        A handler that raises is treated like a crash: its message goes back to the queue, the consumer
        stops once the other handlers are done, and the exception propagates from here.
        """
        self.topology.check_queue(queue)
        self._ensure_setup()
        self._consume(Runner(self.topology, queue, handler, stop, max(1, prefetch)))

    def consume_batch(self, queue: str, handler: BatchHandler, stop: threading.Event, *, max_batch: int,
                      max_wait: float) -> None:
        """Batches gathered by one thread from ``max_batch`` prefetched deliveries (not a thread each)."""
        if max_batch <= 1:
            super().consume_batch(queue, handler, stop, max_batch=max_batch, max_wait=max_wait)
            return
        self.topology.check_queue(queue)
        self._ensure_setup()
        self._consume(Runner(self.topology, queue, None, stop, max_batch, batch=(handler, max_batch, max_wait)))

    def _consume(self, runner: Runner) -> None:
        consumer.consume(runner, self.connector, setup=self.setup, reconnect_max=self.reconnect_max,
                         claim_interval=self.claim_interval, claim_ttl=self.claim_ttl)

    def ack_many(self, deliveries: list[Delivery]) -> None:
        ack_many(deliveries)

    # -- operating ------------------------------------------------------------------------------------
    def stats(self) -> list[QueueStats]:
        return self.admin.stats()

    def dead_letters(self, where: DeadLetterFilter | None = None, limit: int | None = None) -> list[DeadLetter]:
        return self.admin.dead_letters(where, limit)

    def replay(self, ids: Iterable[str]) -> list[str]:
        return self.admin.replay(ids)

    def purge(self, ids: Iterable[str]) -> list[str]:
        return self.admin.purge(ids)


__all__ = ["DEFAULT_RETRY_LEVELS", "RabbitBus", "RabbitDelivery"]

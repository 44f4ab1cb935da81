"""The bus interface every engine implements; ``tests/contract/test_bus_contract.py`` is its specification.

A stage consumes one queue. For each delivery the stage's runtime calls exactly one of
``ack()``, ``retry(delay, ...)`` or ``dead_letter(...)``. The bus owns the topology: the work queue,
the delayed retries and the dead letters of each queue. Deciding *whether* to retry is the
``RetryPolicy``'s job (stacdrop/retry.py), not the bus's.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from stacdrop.messages import Envelope


@dataclass
class QueueStats:
    queue: str
    ready: int
    unacked: int | None  # None: the engine cannot tell (RabbitMQ without its management API)
    retrying: int
    dead: int
    consumers: int | None = None
    publish_rate: float | None = None  # messages/s, where the engine knows it
    ack_rate: float | None = None


@dataclass
class DeadLetter:
    id: str
    queue: str
    error_class: str
    error: str
    attempts: int
    envelope: Envelope
    dead_at: datetime

    @property
    def collection(self) -> str | None:
        return self.envelope.collection


@dataclass
class DeadLetterFilter:
    queue: str | None = None
    error_class: str | None = None
    collection: str | None = None
    since: datetime | None = None
    ids: list[str] = field(default_factory=list)

    def matches(self, letter: DeadLetter) -> bool:
        return (
            (not self.ids or letter.id in self.ids)
            and (self.queue is None or letter.queue == self.queue)
            and (self.error_class is None or letter.error_class == self.error_class)
            and (self.collection is None or letter.collection == self.collection)
            and (self.since is None or letter.dead_at >= self.since)
        )


class Delivery(ABC):
    """One message handed to a consumer. Settle it exactly once."""

    def __init__(self, queue: str, envelope: Envelope, redelivered: bool = False) -> None:
        self.queue = queue
        self.envelope = envelope
        self.redelivered = redelivered
        self.settled = False

    @abstractmethod
    def ack(self) -> None:
        """The work is done and its outcome is durable: forget the message."""

    @abstractmethod
    def retry(self, delay: float, error_class: str, error: str, *, counted: bool = True) -> None:
        """Deliver again after ``delay`` seconds, with ``attempts + 1`` and this error in the history.
        ``counted=False`` keeps ``attempts`` (the error is still in the history): a dependency was down."""

    @abstractmethod
    def dead_letter(self, error_class: str, error: str) -> None:
        """Move to the queue's dead letters, keeping the error, the attempts and the original message."""


DeliveryHandler = Callable[[Delivery], None]
BatchHandler = Callable[[list[Delivery]], None]


class Bus(ABC):
    """Durable queues with delayed retries and dead letters."""

    @abstractmethod
    def setup(self) -> None:
        """Declare the topology. Idempotent; every process calls it at start."""

    @abstractmethod
    def publish(self, queue: str, envelope: Envelope) -> None:
        """Store the message durably (confirmed) before returning."""

    @abstractmethod
    def consume(
        self, queue: str, handler: DeliveryHandler, stop: threading.Event, *, prefetch: int = 1
    ) -> None:
        """Deliver messages to ``handler`` until ``stop`` is set, then return.

        The handler may run for hours: the engine keeps its connection and its claim on the message
        alive meanwhile, so the message is not given to a second worker. A message whose consumer
        dies unsettled is delivered again.
        """

    def consume_batch(
        self,
        queue: str,
        handler: BatchHandler,
        stop: threading.Event,
        *,
        max_batch: int,  # noqa: ARG002 - the engines' interface; this default's batches are of one
        max_wait: float,  # noqa: ARG002 - see max_batch
    ) -> None:
        """Deliver messages to ``handler`` in lists of up to ``max_batch`` until ``stop`` is set.

        After the first message of a batch, wait up to ``max_wait`` seconds for more. The handler settles
        each delivery on its own; one it leaves unsettled goes back to the queue. Batches run one at a time.

        This default hands over batches of one, which is correct for any engine; the engines override it
        to gather real batches (SQLite claims several rows at once, RabbitMQ gathers prefetched deliveries).
        """
        self.consume(queue, lambda d: handler([d]), stop, prefetch=1)

    def ack_many(self, deliveries: list[Delivery]) -> None:
        """Ack several deliveries at once (a publish batch). Engines override it to do it in one go."""
        for delivery in deliveries:
            delivery.ack()

    @abstractmethod
    def stats(self) -> list[QueueStats]:
        """Per queue: ready, unacked, retrying, dead (exact counts)."""

    @abstractmethod
    def dead_letters(self, where: DeadLetterFilter | None = None, limit: int | None = None) -> list[DeadLetter]:
        """Dead letters, oldest first."""

    @abstractmethod
    def replay(self, ids: Iterable[str]) -> list[str]:
        """Put dead letters back on their work queue (attempts reset, history kept). Returns the ids moved."""

    @abstractmethod
    def purge(self, ids: Iterable[str]) -> list[str]:
        """Delete dead letters for good. Returns the ids deleted."""

    def close(self) -> None:  # noqa: B027 - optional for engines without resources
        """Release connections."""

    def get_dead_letter(self, letter_id: str) -> DeadLetter | None:
        found = self.dead_letters(DeadLetterFilter(ids=[letter_id]))
        return found[0] if found else None

    def __enter__(self) -> "Bus":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

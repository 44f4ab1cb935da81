"""The bus: durable queues between the stages, with retries and dead letters.

``open_bus(url)`` picks the engine: ``sqlite:///path`` (embedded, the default) or ``amqp://...`` (RabbitMQ).
"""

from __future__ import annotations

from stacdrop.bus.base import Bus, DeadLetter, DeadLetterFilter, Delivery, QueueStats


def open_bus(url: str, **options) -> Bus:  # noqa: ANN003
    if url.startswith("amqp://") or url.startswith("amqps://"):
        from stacdrop.bus.rabbitmq import RabbitBus  # noqa: PLC0415 - only the engine the URL names is loaded

        return RabbitBus(url, **options)
    if url.startswith("sqlite:") or "://" not in url:
        from stacdrop.bus.sqlite import SqliteBus  # noqa: PLC0415 - see RabbitBus

        return SqliteBus(url, **options)
    raise ValueError(f"unknown broker URL scheme: {url.split('://', 1)[0]}")


__all__ = ["Bus", "DeadLetter", "DeadLetterFilter", "Delivery", "QueueStats", "open_bus"]

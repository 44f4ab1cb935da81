"""Replaying dead letters, shared by ``stacdrop dlq replay`` and ``POST /dead-letters/replay``.

A replay puts the message back on its work queue (attempts reset, history kept) and records it on the
job, so ``stacdrop job`` and ``GET /jobs/{id}`` show who replayed what after which error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from stacdrop.bus.base import Bus, DeadLetter, DeadLetterFilter
from stacdrop.ledger import QUEUED, Ledger


@dataclass
class ReplayResult:
    matched: list[DeadLetter] = field(default_factory=list)
    replayed: list[str] = field(default_factory=list)


def replay_dead_letters(
    bus: Bus,
    ledger: Ledger,
    where: DeadLetterFilter,
    *,
    dry_run: bool = False,
    rate: float | None = None,
    on_letter: Callable[[DeadLetter, bool], None] | None = None,
) -> ReplayResult:
    """Replay the dead letters ``where`` matches, one at a time (at most ``rate`` per second).

    ``on_letter(letter, replayed)`` is called for each match (``replayed`` is False on a dry run, or when
    another replayer took the letter first).
    """
    result = ReplayResult(matched=bus.dead_letters(where))
    for letter in result.matched:
        if dry_run:
            if on_letter:
                on_letter(letter, False)
            continue
        moved = bool(bus.replay([letter.id]))
        if moved:
            ledger.record(letter.envelope.job_id, stage=letter.queue, step="queued", status="replayed",
                          state=QUEUED, message=f"dead letter {letter.id} replayed after {letter.attempts} "
                          f"attempts ({letter.error_class}: {letter.error[:200]})")
            result.replayed.append(letter.id)
        if on_letter:
            on_letter(letter, moved)
        if rate:
            time.sleep(1.0 / rate)
    return result


def parse_since(value: str | None) -> datetime | None:
    """``2026-11-27``, an ISO datetime, or a duration like ``30m``, ``2h``, ``7d``. Raises ValueError,
    also for values out of range (a duration longer than the calendar, a year past 9999 in UTC)."""
    if not value:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    try:
        if value[-1] in units and value[:-1].isdigit():
            return datetime.now(timezone.utc) - timedelta(seconds=int(value[:-1]) * units[value[-1]])
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        # In UTC, as the ledgers compare: a time that leaves years 1-9999 there is out of range here.
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
    except OverflowError:
        # 99999999999d (timedelta too large), 9999-12-31T23:00:00-05:00 (year 10000 in UTC)
        raise ValueError(f"{value!r} is out of range") from None

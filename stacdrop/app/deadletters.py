"""Replaying dead letters, shared by ``stacdrop dlq replay`` and ``POST /dead-letters/replay``.

A replay puts the message back on its work queue (attempts reset, history kept) and records it on the
job, so ``stacdrop job`` and ``GET /jobs/{id}`` show who replayed what after which error.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from stacdrop.bus.base import Bus, DeadLetter, DeadLetterFilter
from stacdrop.ledger import EventStatus, JobState, Ledger


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
            ledger.record(letter.envelope.job_id, stage=letter.queue, step="queued",
                          status=EventStatus.REPLAYED, state=JobState.QUEUED,
                          message=f"dead letter {letter.id} replayed after {letter.attempts} "
                          f"attempts ({letter.error_class}: {letter.error[:200]})")
            result.replayed.append(letter.id)
        if on_letter:
            on_letter(letter, moved)
        if rate:
            time.sleep(1.0 / rate)
    return result

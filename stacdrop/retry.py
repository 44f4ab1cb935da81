"""The retry policy: exponential backoff with jitter, in one place.

A transient failure is retried after ``base * 2**(n-1)`` seconds (n = 1 for the first retry), capped at
``maximum``, and shortened by a random fraction up to ``jitter`` so that a burst of failures (an S3
outage, a restarting STAC API) does not come back as a burst. After ``max_retries`` retries, or at once
for a permanent error, the message goes to the dead letters.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from stacdrop.config import BusSettings


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 5
    base: float = 2.0
    maximum: float = 600.0
    jitter: float = 0.5
    # Seconds an error the job does not cause (a source host down) stays uncounted before attempts count
    # again: an outage of up to an hour spends nothing, a host gone for good still ends in the dead letters.
    outage_patience: float = 3600.0

    def delay(self, retry_number: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number ``retry_number`` (1-based)."""
        raw = min(self.maximum, self.base * 2 ** max(0, retry_number - 1))
        spread = (rng or random).uniform(0.0, self.jitter)
        return raw * (1.0 - spread)

    def should_retry(self, failed_attempts: int, transient: bool) -> bool:
        """``failed_attempts`` counts the failure that just happened."""
        return transient and failed_attempts <= self.max_retries

    @classmethod
    def from_bus(cls, bus: BusSettings) -> RetryPolicy:
        """The policy of the ``[bus]`` settings (max_retries, retry_base, retry_max, source_outage_patience)."""
        return cls(max_retries=bus.max_retries, base=bus.retry_base, maximum=bus.retry_max,
                   outage_patience=bus.source_outage_patience)

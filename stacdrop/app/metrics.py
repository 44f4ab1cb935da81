"""Prometheus metrics computed at scrape time from the shared state: the job ledger and the bus.

The API server is not the process doing the work (stages may run on several hosts), so in-process
counters would see nothing: every value is read from the ledger (SQL aggregates, never rows loaded into
Python) and from ``Bus.stats()`` when Prometheus scrapes. The ledger can hold millions of jobs, so:

- gauges over the ``jobs`` table are a few aggregate queries (one scan for counts and byte sums by
  state, kind and collection; the others use the (state, updated_at) index);
- what comes from ``job_events`` (stage durations, retries, the arrival-to-published time) is tallied
  incrementally: each scrape reads only the events appended since the previous one (an id watermark) and
  adds their histogram bucket counts (``SUM(CASE WHEN d <= b ...)`` columns) to totals kept in memory, so
  the cost of a scrape does not grow with the history. The first scrape of an API process reads the
  whole history once (3 s for 2.4 million events in PostgreSQL: bench/bench_metrics.py); its totals are
  the same as the previous process's, so Prometheus sees no counter reset when the API restarts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from stacdrop.bus.base import Bus
from stacdrop.ledger import UNFINISHED_STATES, EventStatus, JobState, Ledger, Reports, Stage

log = structlog.get_logger("stacdrop.app.metrics")

# Stage durations: a small COG converts in a second, a continental mosaic in hours.
STAGE_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200)
# Arrival -> published includes queueing behind a backfill: seconds to a day.
ARRIVAL_BUCKETS = (1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 43200, 86400)
# Events younger than this are tallied at the next scrape: a PostgreSQL transaction may take an event id
# and commit after a later id did, and the watermark must not pass an event that is not visible yet.
EVENT_GRACE = timedelta(seconds=5)
# The stages whose work the runtime times ("started" then "succeeded" / "retrying" / "failed").
TIMED_STAGES = (Stage.PROCESS, Stage.PUBLISH)
OUTCOMES = (EventStatus.SUCCEEDED, EventStatus.RETRYING, EventStatus.FAILED)
UNFINISHED = UNFINISHED_STATES  # new, queued, processing, publishing, retrying


@dataclass
class _Histogram:
    buckets: Sequence[float]
    counts: list[int] = field(default_factory=list)  # cumulative, one per bucket
    total: float = 0.0
    count: int = 0

    def add(self, row: Sequence[Any]) -> None:
        n = len(self.buckets)
        counts = [int(v or 0) for v in row[:n]]
        self.counts = [a + b for a, b in zip(self.counts or [0] * n, counts, strict=True)]
        self.total += float(row[n] or 0.0)
        self.count += int(row[n + 1] or 0)

    def exposition(self) -> tuple[list[tuple[str, float]], float]:
        counts = self.counts or [0] * len(self.buckets)
        points = [(_le(b), float(c)) for b, c in zip(self.buckets, counts, strict=True)]
        return [*points, ("+Inf", float(self.count))], self.total


def _le(bound: float) -> str:
    return str(float(bound))


class EventTally:
    """Stage durations and retries from ``job_events``, kept up to date by reading only new events."""

    def __init__(self) -> None:
        self.watermark = 0  # every event with an id <= watermark is counted
        self.durations: dict[tuple[str, str], _Histogram] = {}
        self.retries: dict[tuple[str, str], int] = {}
        self.arrival: dict[str, _Histogram] = {}  # by collection
        self.lock = threading.Lock()

    def update(self, reports: Reports, now: datetime) -> None:
        with self.lock:
            upper = reports.committed_event_bound(self.watermark, now - EVENT_GRACE)
            if upper is None or upper <= self.watermark:
                return
            # Read everything first and add it up after: a query failing half-way adds nothing, and the
            # next scrape reads the same events again, so nothing is counted twice.
            durations = reports.attempt_durations(self.watermark, upper, TIMED_STAGES, OUTCOMES, STAGE_BUCKETS)
            retries = reports.retries(self.watermark, upper)
            arrivals = reports.arrival_to_published(self.watermark, upper, ARRIVAL_BUCKETS)
            for (stage, outcome), row in durations:
                self.durations.setdefault((stage, outcome), _Histogram(STAGE_BUCKETS)).add(row)
            for (stage, error_class), count in retries:
                key = (stage, error_class or "unknown")
                self.retries[key] = self.retries.get(key, 0) + count
            for collection, row in arrivals:
                self.arrival.setdefault(collection, _Histogram(ARRIVAL_BUCKETS)).add(row)
            self.watermark = upper


def up_gauge(name: str, dependency: str, answered: bool) -> GaugeMetricFamily:
    """The 0/1 gauge ``name`` of one dependency: 1 when ``dependency`` answered this scrape, 0 when asking
    it failed (the scrape itself still succeeds, so the outage is a value an alert can read)."""
    up = GaugeMetricFamily(name, f"1 when {dependency} answered this scrape")
    up.add_metric([], 1 if answered else 0)
    return up


class StacdropCollector(Collector):
    """A prometheus_client collector over one ledger and (optionally) one bus.

    ``bus`` is a callable returning the bus, so a broker that is down at start-up does not stop the
    ledger's metrics; bus errors give ``stacdrop_bus_up 0`` and no queue series.
    """

    def __init__(self, ledger: Ledger, bus: Callable[[], Bus] | Bus | None = None,
                 clock: Callable[[], datetime] | None = None) -> None:
        self.ledger = ledger
        self._bus = bus
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.tally = EventTally()
        self._bus_lock = threading.Lock()  # a RabbitMQ admin connection is not shared between threads

    def describe(self) -> list[Metric]:
        # Registering must not query the ledger; Prometheus learns the names from the first scrape.
        return []

    def collect(self) -> Iterator[Metric]:
        began = time.perf_counter()
        yield from self._ledger_metrics()
        yield from self._bus_metrics()
        scrape = GaugeMetricFamily("stacdrop_metrics_scrape_duration_seconds",
                                   "Time this scrape spent querying the ledger and the bus")
        scrape.add_metric([], time.perf_counter() - began)
        yield scrape

    # -- ledger ----------------------------------------------------------------------------------------
    def _ledger_metrics(self) -> Iterator[Metric]:
        try:
            with self.ledger.reports() as reports:
                metrics, answered = self._query_ledger(reports), True
        except Exception as exc:  # noqa: BLE001 - a scrape reports the outage instead of failing
            log.warning("metrics: ledger query failed", error=str(exc))
            metrics, answered = [], False
        yield up_gauge("stacdrop_ledger_up", "the job ledger", answered)
        yield from metrics

    def _query_ledger(self, reports: Reports) -> list[Metric]:
        now = self.clock()
        out: list[Metric] = []

        by_state = GaugeMetricFamily("stacdrop_jobs", "Jobs in the ledger by state, kind and collection",
                                     labels=["state", "kind", "collection"])
        input_bytes = CounterMetricFamily("stacdrop_converted_input_bytes",
                                          "Bytes of source rasters of published items", labels=["collection"])
        cog_bytes = CounterMetricFamily("stacdrop_converted_cog_bytes",
                                        "Bytes of COGs of published items", labels=["collection"])
        # One scan of the jobs table for the counts and the byte sums.
        for state, kind, collection, count, size_in, size_cog in reports.job_totals():
            by_state.add_metric([state, kind, collection or ""], count)
            if state == JobState.PUBLISHED and kind == "raster":
                input_bytes.add_metric([collection or ""], float(size_in))
                cog_bytes.add_metric([collection or ""], float(size_cog))
        out += [by_state, input_bytes, cog_bytes]

        failed = GaugeMetricFamily("stacdrop_failed_jobs", "Failed jobs by the stage and error class they failed with",
                                   labels=["stage", "error_class"])
        for stage, error_class, count in reports.failed_jobs():
            failed.add_metric([stage, error_class or "unknown"], count)
        out.append(failed)

        oldest = GaugeMetricFamily(
            "stacdrop_unfinished_job_oldest_age_seconds",
            "Per stage and state, seconds since the unfinished job with the oldest last update last changed "
            "(a job stuck in a stage; steps of long conversions are recorded as they start)",
            labels=["stage", "state"],
        )
        for stage, state, at in reports.oldest_updates(UNFINISHED):
            oldest.add_metric([stage, state], max(0.0, (now - at).total_seconds()))
        out.append(oldest)

        self.tally.update(reports, now)
        with self.tally.lock:
            durations = HistogramMetricFamily(
                "stacdrop_stage_duration_seconds",
                "Time a stage attempt took, from its start to its outcome (succeeded, retrying or failed)",
                labels=["stage", "outcome"],
            )
            for (name, outcome), hist in sorted(self.tally.durations.items()):
                buckets, total = hist.exposition()
                durations.add_metric([name, outcome], buckets, total)
            retries = CounterMetricFamily("stacdrop_retries", "Stage attempts that failed and were retried",
                                          labels=["stage", "error_class"])
            for (name, error_class), count in sorted(self.tally.retries.items()):
                retries.add_metric([name, error_class], count)
            arrival = HistogramMetricFamily(
                "stacdrop_arrival_to_published_seconds",
                "From a source's arrival (job created) to its item being published (publish stage succeeded)",
                labels=["collection"],
            )
            for collection, hist in sorted(self.tally.arrival.items()):
                buckets, total = hist.exposition()
                arrival.add_metric([collection], buckets, total)
        out += [durations, retries, arrival]
        return out

    # -- bus -------------------------------------------------------------------------------------------
    def _bus_metrics(self) -> Iterator[Metric]:
        if self._bus is None:
            return
        try:
            with self._bus_lock:
                bus = self._bus() if callable(self._bus) and not isinstance(self._bus, Bus) else self._bus
                stats = bus.stats()
        except Exception as exc:  # noqa: BLE001 - a scrape reports the outage instead of failing
            log.warning("metrics: bus stats failed", error=str(exc))
            stats = None
        yield up_gauge("stacdrop_bus_up", "the bus", answered=stats is not None)
        if stats is None:
            return
        depth = GaugeMetricFamily("stacdrop_queue_messages", "Messages in a stage's queue by status",
                                  labels=["queue", "status"])
        dead = GaugeMetricFamily("stacdrop_dead_letters", "Dead letters of a stage's queue", labels=["queue"])
        consumers = GaugeMetricFamily(
            "stacdrop_queue_consumers",
            "Consumers of a stage's queue (absent where the engine cannot tell: the embedded bus only knows "
            "its own process's consumers)", labels=["queue"],
        )
        for s in stats:
            for status, value in (("ready", s.ready), ("unacked", s.unacked), ("retrying", s.retrying)):
                if value is not None:  # None: the engine cannot tell; no made-up zero
                    depth.add_metric([s.queue, status], value)
            dead.add_metric([s.queue], s.dead)
            if s.consumers is not None:
                consumers.add_metric([s.queue], s.consumers)
        yield from (depth, dead, consumers)


# Every metric name the collector exposes (histograms and counters by their family name); alert rules and
# the dashboard are checked against it (tests/app/test_metrics.py).
METRIC_NAMES = (
    "stacdrop_ledger_up", "stacdrop_jobs", "stacdrop_failed_jobs", "stacdrop_unfinished_job_oldest_age_seconds",
    "stacdrop_converted_input_bytes_total", "stacdrop_converted_cog_bytes_total",
    "stacdrop_arrival_to_published_seconds", "stacdrop_stage_duration_seconds", "stacdrop_retries_total",
    "stacdrop_bus_up", "stacdrop_queue_messages", "stacdrop_dead_letters", "stacdrop_queue_consumers",
    "stacdrop_metrics_scrape_duration_seconds",
)

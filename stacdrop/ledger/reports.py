"""The ledger's read-only aggregates, for the Prometheus metrics (stacdrop/app/metrics.py) and the status
page's map (stacdrop/app/api/page.py).

They live here, beside the tables, so that no module outside the ledger writes SQL against them. Each is
an aggregate computed by the database (the ledger may hold millions of jobs: no rows are loaded into
Python), and they run on one connection (``Ledger.reports()``), so a scrape costs one connection.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from stacdrop.ledger.schema import aware, events, jobs
from stacdrop.ledger.states import EventStatus, JobState, Stage

# (stage, outcome) or (stage, error_class) or a collection, with the histogram columns of ``bucket_columns``:
# one cumulative count per bucket bound, then the sum and the count.
Tallied = list[tuple[Any, Sequence[Any]]]


class Reports:
    """The aggregates, over one open connection to the ledger."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    # -- jobs --------------------------------------------------------------------------------------------
    def job_totals(self) -> list[tuple[str, str, str | None, int, int, int]]:
        """``(state, kind, collection, jobs, input bytes, COG bytes)``: one scan of the jobs table."""
        query = (
            sa.select(jobs.c.state, jobs.c.kind, jobs.c.collection, sa.func.count(),
                      sa.func.coalesce(sa.func.sum(jobs.c.input_size), 0),
                      sa.func.coalesce(sa.func.sum(jobs.c.cog_size), 0))
            .group_by(jobs.c.state, jobs.c.kind, jobs.c.collection)
        )
        return [tuple(row) for row in self.conn.execute(query)]

    def failed_jobs(self) -> list[tuple[str, str | None, int]]:
        """``(stage, error class, jobs)`` of the failed jobs (the (state, updated_at) index)."""
        query = (
            sa.select(jobs.c.stage, jobs.c.error_class, sa.func.count())
            .where(jobs.c.state == JobState.FAILED.value).group_by(jobs.c.stage, jobs.c.error_class)
        )
        return [tuple(row) for row in self.conn.execute(query)]

    def oldest_updates(self, states: Sequence[str]) -> list[tuple[str, str, datetime]]:
        """``(stage, state, the oldest last update)`` of the jobs in ``states``."""
        query = (
            sa.select(jobs.c.stage, jobs.c.state, sa.func.min(jobs.c.updated_at))
            .where(jobs.c.state.in_([str(s) for s in states])).group_by(jobs.c.stage, jobs.c.state)
        )
        return [(stage, state, aware(at)) for stage, state, at in self.conn.execute(query)]  # type: ignore[misc]

    def latest_published_bboxes(self, limit: int) -> list[tuple[str, str | None, str | None, datetime | None, str]]:
        """``(job id, item id, collection, finished_at, bbox JSON)`` of the latest published items with a bbox."""
        query = (
            sa.select(jobs.c.id, jobs.c.item_id, jobs.c.collection, jobs.c.finished_at, jobs.c.item_bbox)
            # (state, updated_at) is indexed; a published job's last update is its publication.
            .where(jobs.c.state == JobState.PUBLISHED.value, jobs.c.item_bbox.is_not(None))
            .order_by(jobs.c.updated_at.desc()).limit(limit)
        )
        return [tuple(row) for row in self.conn.execute(query)]

    # -- events (read by id range: the metrics' watermark) -----------------------------------------------
    def committed_event_bound(self, after: int, recent: datetime) -> int | None:
        """The highest event id below which every event is committed: just before the first event (above
        ``after``) newer than ``recent``, or the last event if none is that new."""
        first_recent = self.conn.execute(
            sa.select(sa.func.min(events.c.id)).where(events.c.id > after, events.c.at > recent)
        ).scalar()
        if first_recent is not None:
            return int(first_recent) - 1
        last = self.conn.execute(sa.select(sa.func.max(events.c.id))).scalar()
        return None if last is None else int(last)

    def attempt_durations(self, low: int, high: int, stages: Sequence[str], outcomes: Sequence[str],
                          buckets: Sequence[float]) -> Tallied:
        """Histograms by ``(stage, outcome)`` of the attempts whose outcome event is in ``(low, high]``."""
        # An attempt is a "started" event followed by its outcome: among a job's started and outcome
        # events of one stage (in id order), an outcome whose previous event is "started" closes that
        # attempt. The window runs over the events of the jobs with an outcome in (low, high] only, so an
        # attempt started before the watermark is still paired; the first pass (low = 0) reads everything.
        stages, outcomes = [str(s) for s in stages], [str(o) for o in outcomes]
        started = EventStatus.STARTED.value
        timed = [events.c.stage.in_(stages), events.c.status.in_((started, *outcomes))]
        if low > 0:
            closing = sa.select(events.c.job_id).where(
                events.c.id > low, events.c.id <= high, events.c.stage.in_(stages), events.c.status.in_(outcomes))
            timed.append(events.c.job_id.in_(closing))
        partition, order = (events.c.job_id, events.c.stage), events.c.id
        attempts = (
            sa.select(events.c.id, events.c.stage, events.c.status, events.c.at,
                      sa.func.lag(events.c.at).over(partition_by=partition, order_by=order).label("started_at"),
                      sa.func.lag(events.c.status).over(partition_by=partition, order_by=order).label("previous"))
            .where(*timed)
            .subquery()
        )
        duration = self._seconds_between(attempts.c.started_at, attempts.c.at)
        query = (
            sa.select(attempts.c.stage, attempts.c.status, *bucket_columns(duration, buckets))
            .where(attempts.c.id > low, attempts.c.id <= high, attempts.c.status.in_(outcomes),
                   attempts.c.previous == started)
            .group_by(attempts.c.stage, attempts.c.status)
        )
        return [((row[0], row[1]), row[2:]) for row in self.conn.execute(query)]

    def retries(self, low: int, high: int) -> list[tuple[tuple[str, str | None], int]]:
        """``((stage, error class), count)`` of the "retrying" events in ``(low, high]``."""
        query = (
            sa.select(events.c.stage, events.c.error_class, sa.func.count())
            .where(events.c.id > low, events.c.id <= high, events.c.status == EventStatus.RETRYING.value)
            .group_by(events.c.stage, events.c.error_class)
        )
        return [((stage, error_class), int(count)) for stage, error_class, count in self.conn.execute(query)]

    def arrival_to_published(self, low: int, high: int, buckets: Sequence[float]) -> Tallied:
        """Histograms by collection of the time from a raster job's creation (its source's arrival) to its
        publication, for the publish successes in ``(low, high]`` of jobs still published."""
        # The publish stage's success is the item's publication (the job's finished_at); the job's
        # created_at is the source's arrival. Joined by primary key, so only new events are read.
        waited = self._seconds_between(jobs.c.created_at, events.c.at)
        query = (
            sa.select(jobs.c.collection, *bucket_columns(waited, buckets))
            .select_from(events.join(jobs, jobs.c.id == events.c.job_id))
            .where(events.c.id > low, events.c.id <= high, events.c.stage == Stage.PUBLISH.value,
                   events.c.status == EventStatus.SUCCEEDED.value, jobs.c.kind == "raster",
                   jobs.c.state == JobState.PUBLISHED.value)
            .group_by(jobs.c.collection)
        )
        return [(row[0] or "", row[1:]) for row in self.conn.execute(query)]

    def _seconds_between(self, start: Any, end: Any) -> Any:
        """A SQL expression for ``end - start`` in seconds (float)."""
        if self.conn.dialect.name == "postgresql":
            return sa.func.extract("epoch", end - start)
        # SQLite keeps datetimes as ISO text, which julianday() reads.
        return (sa.func.julianday(end) - sa.func.julianday(start)) * 86400.0


def bucket_columns(duration: Any, buckets: Sequence[float]) -> list[Any]:
    """Cumulative bucket counts, the sum and the count of ``duration`` as aggregate columns."""
    cols = [sa.func.sum(sa.case((duration <= b, 1), else_=0)) for b in buckets]
    return [*cols, sa.func.coalesce(sa.func.sum(duration), 0.0), sa.func.count()]

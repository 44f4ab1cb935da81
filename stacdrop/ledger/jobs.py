"""Jobs and their history: the records the ledger hands out, and the writes that move a job on.

A job is created when a source (a raster with its sidecar, or a collection.json) is submitted; the same
source with the same content makes no second job, changed content makes a new one. Every write appends
events to the job's history and updates the job's fields in one transaction; a write that changes the
state is checked against ``stacdrop.ledger.states.TRANSITIONS`` in the same UPDATE statement.
"""

from __future__ import annotations

import functools
import json
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from stacdrop.ledger.schema import aware, events, jobs
from stacdrop.ledger.states import (
    FINAL_STATES, STAGES, EventStatus, JobState, Stage, TransitionRefused, predecessors,
)
from stacdrop.times import utcnow

Redact = Callable[[str | None], str | None]


@dataclass
class Event:
    at: datetime
    stage: str
    step: str
    status: str
    attempt: int | None
    error_class: str | None
    message: str | None


@dataclass
class PendingEvent:
    """An event recorded in memory, written later with others in one transaction."""

    stage: str
    step: str
    status: str
    at: datetime
    attempt: int | None = None
    message: str | None = None
    error_class: str | None = None


@dataclass
class Record:
    """One outcome to record on a job: an event and the job fields it changes (see ``Ledger.record``)."""

    job_id: str
    stage: str
    step: str
    status: str
    message: str | None = None
    error_class: str | None = None
    attempt: int | None = None
    before: list[PendingEvent] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass
class Job:
    id: str
    kind: str
    source: str
    source_key: str
    content_key: str
    collection: str | None
    item_id: str | None
    origin: str
    priority: int
    state: str
    stage: str
    step: str
    attempts: int
    error_class: str | None
    error: str | None
    input_sha256: str | None
    input_size: int | None
    cog_href: str | None
    cog_key: str | None
    cog_sha256: str | None
    cog_size: int | None
    params: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    item_bbox: list[float] | None = None
    events: list[Event] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "events"}
        for key in ("created_at", "updated_at", "finished_at"):
            data[key] = data[key].isoformat() if data[key] else None
        data["events"] = [
            {**e.__dict__, "at": e.at.isoformat()} for e in self.events
        ]
        return data


def job_from_row(row: Any) -> Job:
    data = dict(row._mapping)  # noqa: SLF001 - SQLAlchemy's documented Row._mapping (underscored against column clashes)
    data["params"] = json.loads(data["params"] or "{}")
    data["item_bbox"] = json.loads(data["item_bbox"]) if data.get("item_bbox") else None
    for key in ("created_at", "updated_at", "finished_at"):
        data[key] = aware(data[key])
    return Job(**data)


JOB_UPDATABLE = {
    "collection", "item_id", "state", "stage", "step", "attempts", "error_class", "error", "input_sha256",
    "input_size", "cog_href", "cog_key", "cog_sha256", "cog_size", "finished_at", "item_bbox",
}

# The job columns a stage may not overwrite once a later stage wrote them.
GUARDED = {"state", "stage", "step", "finished_at", "error_class", "error"}


def create_job(
    engine: Engine, create_lock: threading.Lock, redact: Redact, *, kind: str, source: str, source_key: str,
    content_key: str, collection: str | None, origin: str, priority: int, params: dict[str, Any] | None,
    input_size: int | None,
) -> tuple[Job, bool]:
    """``Ledger.create_job``."""
    now = utcnow()
    with create_lock, engine.begin() as conn:
        row = conn.execute(
            sa.select(jobs).where(jobs.c.source == source)
            .order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(1)
        ).first()
        if row is not None and row.content_key == content_key \
                and row.state not in (JobState.FAILED, JobState.UNPUBLISHED):
            return job_from_row(row), False
        job_id = uuid.uuid4().hex
        conn.execute(
            jobs.insert().values(
                id=job_id, kind=kind, source=source, source_key=source_key, content_key=content_key,
                collection=collection, origin=origin, priority=priority, state=JobState.NEW.value,
                stage=Stage.WATCH.value, step="queued", attempts=0, params=json.dumps(params or {}),
                input_size=input_size, created_at=now, updated_at=now,
            )
        )
        conn.execute(events.insert().values(job_id=job_id, at=now, stage=Stage.WATCH.value, step="queued",
                                            status=EventStatus.CREATED.value,
                                            message=redact(f"{kind} {source_key} from {origin}")))
    # The row just written, without reading it back.
    job = Job(
        id=job_id, kind=kind, source=source, source_key=source_key, content_key=content_key,
        collection=collection, item_id=None, origin=origin, priority=priority, state=JobState.NEW.value,
        stage=Stage.WATCH.value, step="queued", attempts=0, error_class=None, error=None, input_sha256=None,
        input_size=input_size, cog_href=None, cog_key=None, cog_sha256=None, cog_size=None,
        params=json.loads(json.dumps(params or {})), created_at=now, updated_at=now, finished_at=None,
    )
    return job, True


def get_job(engine: Engine, job_id: str, *, with_events: bool) -> Job | None:
    with engine.connect() as conn:
        row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
        if row is None:
            return None
        job = job_from_row(row)
        if with_events:
            job.events = [
                Event(at=aware(e.at), stage=e.stage, step=e.step, status=e.status,  # type: ignore[arg-type]
                      attempt=e.attempt, error_class=e.error_class, message=e.message)
                for e in conn.execute(
                    sa.select(events).where(events.c.job_id == job_id).order_by(events.c.id)
                )
            ]
    return job


def get_jobs(engine: Engine, job_ids: list[str]) -> dict[str, Job]:
    """The jobs among ``job_ids`` that exist (one query per 500 ids)."""
    found: dict[str, Job] = {}
    with engine.connect() as conn:
        for i in range(0, len(job_ids), 500):
            for row in conn.execute(sa.select(jobs).where(jobs.c.id.in_(job_ids[i:i + 500]))):
                found[row.id] = job_from_row(row)
    return found


def record_many(engine: Engine, records: list[Record], redact: Redact) -> None:
    """``Ledger.record_many``: one transaction; updates with the same stage, columns and new state share one
    compiled statement, executed with many parameter sets. A state change is allowed by the statement's
    WHERE (the job's state is one of the new state's predecessors, or a later stage holds the job); a row
    it leaves unmatched is looked up only then, so a batch whose moves are all allowed costs no extra query."""
    if not records:
        return
    now = utcnow()
    updates: dict[tuple[str, tuple[str, ...], str | None], list[dict[str, Any]]] = {}
    rows: list[dict[str, Any]] = []
    for rec in records:
        values = job_values(rec, now)
        if values.get("error"):
            values["error"] = redact(values["error"])
        columns = tuple(sorted(values))
        updates.setdefault((str(rec.stage), columns, values.get("state")), []).append(
            {"b_id": rec.job_id, **{f"b_{c}": values[c] for c in columns}})
        rows.extend(event_row(rec.job_id, e, redact) for e in rec.before)
        rows.append(dict(job_id=rec.job_id, at=now, stage=str(rec.stage), step=str(rec.step),
                         status=str(rec.status), attempt=rec.attempt, error_class=rec.error_class,
                         message=redact(rec.message)))
    with engine.begin() as conn:
        for (stage, columns, state), params in updates.items():
            matched = conn.execute(update_statement(stage, columns, state), params).rowcount
            if state is not None and matched < len(params):
                _refuse_moves(conn, stage, state, [p["b_id"] for p in params])
        conn.execute(events.insert(), rows)


def _refuse_moves(conn: Connection, stage: str, state: str, job_ids: list[str]) -> None:
    """Raise ``TransitionRefused`` for the first of ``job_ids`` that the guarded update left unmatched
    because its move to ``state`` is not allowed (a job that does not exist is not an error: as before the
    table, its update changes nothing and its events are written)."""
    later = {str(s) for s in _later_stages(stage)}
    allowed = predecessors(state)
    current = {row.id: row for row in conn.execute(
        sa.select(jobs.c.id, jobs.c.state, jobs.c.stage).where(jobs.c.id.in_(job_ids)))}
    for job_id in job_ids:
        row = current.get(job_id)
        if row is not None and row.stage not in later and row.state not in allowed:
            raise TransitionRefused(job_id, row.state, state)


def add_events(engine: Engine, job_id: str, pending: list[PendingEvent], step: str, redact: Redact) -> None:
    with engine.begin() as conn:
        conn.execute(jobs.update().where(jobs.c.id == job_id).values(step=step, updated_at=utcnow()))
        conn.execute(events.insert(), [event_row(job_id, e, redact) for e in pending])


def event_row(job_id: str, event: PendingEvent, redact: Redact) -> dict[str, Any]:
    return dict(job_id=job_id, at=event.at, stage=str(event.stage), step=str(event.step),
                status=str(event.status), attempt=event.attempt, error_class=event.error_class,
                message=redact(event.message))


def list_jobs(
    engine: Engine, *, state: str | None, stage: str | None, collection: str | None, error_class: str | None,
    item_id: str | None, since: datetime | None, before: tuple[datetime, str] | None, limit: int, offset: int,
) -> list[Job]:
    """``Ledger.list_jobs``."""
    query = sa.select(jobs)
    for column, value in (("state", state), ("stage", stage), ("collection", collection),
                          ("error_class", error_class), ("item_id", item_id)):
        if value is not None:
            query = query.where(jobs.c[column] == str(value))
    if since is not None:
        query = query.where(jobs.c.created_at >= since)
    if before is not None:
        at, last_id = before
        query = query.where(
            sa.or_(jobs.c.created_at < at, sa.and_(jobs.c.created_at == at, jobs.c.id < last_id))
        )
    query = query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit).offset(offset or None)
    with engine.connect() as conn:
        return [job_from_row(r) for r in conn.execute(query)]


def count_by_state(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(jobs.c.state, sa.func.count()).group_by(jobs.c.state))
        return {r[0]: r[1] for r in rows}


def newer_published_many(engine: Engine, batch: list[Job]) -> dict[str, str]:
    """``Ledger.newer_published_many``."""
    return _later_of_same_source(engine, batch, jobs.c.state == JobState.PUBLISHED.value)


def _later_of_same_source(engine: Engine, batch: list[Job], condition: Any) -> dict[str, str]:
    """For each job of ``batch``: the id of a job of the same source, matching ``condition``, created
    after it (one query per 500 sources)."""
    by_source: dict[str, list[Job]] = {}
    for job in batch:
        by_source.setdefault(job.source, []).append(job)
    sources = list(by_source)
    later: dict[str, str] = {}
    with engine.connect() as conn:
        for i in range(0, len(sources), 500):
            query = sa.select(jobs.c.id, jobs.c.source, jobs.c.created_at).where(
                jobs.c.source.in_(sources[i:i + 500]), condition)
            for row in conn.execute(query):
                for job in by_source[row.source]:
                    if row.id != job.id and aware(row.created_at) > job.created_at:  # type: ignore[operator]
                        later[job.id] = row.id
    return later


REMOVAL_KIND = "removal"  # the job of a source removed from the inbox (stacdrop.intake.Intake.submit_removal)


def jobs_of_source(engine: Engine, source: str) -> list[Job]:
    """``Ledger.jobs_of_source``."""
    query = sa.select(jobs).where(jobs.c.source == source).order_by(jobs.c.created_at, jobs.c.id)
    with engine.connect() as conn:
        return [job_from_row(r) for r in conn.execute(query)]


def removed_after_many(engine: Engine, batch: list[Job]) -> dict[str, str]:
    """``Ledger.removed_after_many``."""
    return _later_of_same_source(engine, batch, jobs.c.kind == REMOVAL_KIND)


def job_values(rec: Record, now: datetime) -> dict[str, Any]:
    """The job columns a record sets (plain values, enums as their strings; the guard is in the statement)."""
    unknown = set(rec.fields) - JOB_UPDATABLE
    if unknown:
        raise ValueError(f"not job fields: {sorted(unknown)}")
    values = {"stage": str(rec.stage), "step": str(rec.step), "updated_at": now, **rec.fields}
    if rec.fields.get("state") is not None:
        values["state"] = str(rec.fields["state"])
    if rec.fields.get("item_bbox") is not None:
        values["item_bbox"] = json.dumps([float(v) for v in rec.fields["item_bbox"]])
    if rec.error_class is not None:
        values["error_class"] = str(rec.error_class)
    elif rec.status == EventStatus.SUCCEEDED:
        values.update(error_class=None, error=None)
    if rec.fields.get("state") in FINAL_STATES and "finished_at" not in rec.fields:
        values["finished_at"] = now
    return values


def _one_of(column: sa.Column[Any], names: list[str]) -> sa.ColumnElement[bool]:
    """``column IN ('a', 'b')`` with the names inline: an expanding IN parameter cannot be used with
    executemany. The names are our own enum values (letters only), never input."""
    if not names:
        return sa.false()
    assert all(name.isalpha() for name in names), names
    return column.in_([sa.literal_column(f"'{name}'") for name in names])


def _later_stages(stage: str) -> tuple[Stage, ...]:
    return STAGES[STAGES.index(stage) + 1:] if stage in STAGES else ()


@functools.lru_cache(maxsize=256)
def update_statement(stage: str, columns: tuple[str, ...], state: str | None) -> sa.Update:
    """UPDATE jobs SET <columns> WHERE id = :b_id, with the stage guard and the transition check, for
    executemany.

    A stage's outcome is recorded after its output message is published, so the next stage may already have
    recorded its own (a quick publish, an instant wake-up): the guarded columns (state, stage, step, ...) keep
    their value when the job is already in a later stage. Outputs (cog_*, ...) are written either way.
    A write that sets ``state`` matches only a job that is in a later stage (the guard keeps its state) or
    whose state may move to ``state`` (``TRANSITIONS``).
    """
    later = _later_stages(stage)
    ahead = _one_of(jobs.c.stage, [s.value for s in later]) if later else None
    values: dict[str, Any] = {}
    for column in columns:
        param = sa.bindparam(f"b_{column}", type_=jobs.c[column].type)
        values[column] = sa.case((ahead, jobs.c[column]), else_=param) if ahead is not None and column in GUARDED \
            else param
    where = [jobs.c.id == sa.bindparam("b_id")]
    if state is not None:
        allowed = _one_of(jobs.c.state, sorted(s.value for s in predecessors(state)))
        where.append(allowed if ahead is None else sa.or_(ahead, allowed))
    return jobs.update().where(*where).values(values)

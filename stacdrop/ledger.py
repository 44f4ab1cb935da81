"""The job ledger: one job per source version, its stage history, attempts, errors and outputs.

SQLAlchemy Core, so ``sqlite:///data/ledger.db`` (the default) and ``postgresql://...`` (shared by many
hosts) both work. A job is created when a source (a raster with its sidecar, or a collection.json) is
submitted; the same source with the same content makes no second job, changed content makes a new one.

Every error and event message is redacted (``stacdrop.redact``) as it is written, whoever records it (the
stage runtime, the CLI, the intake): the ledger is read by the API, the CLI and backups, so a URL password,
a presigned signature or a secret setting never reaches it. ``Ledger(url, secrets=secrets_of(settings))``
adds the configured secrets to what is masked.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import threading
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from stacdrop.times import utcnow
from stacdrop.private_files import create_private_file, open_private_file, private_dir, sqlite_path
from stacdrop.redact import redact_text

metadata = sa.MetaData()

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),  # raster | collection
    sa.Column("source", sa.Text, nullable=False),  # URL or absolute path: the source's identity
    sa.Column("source_key", sa.Text, nullable=False),  # inbox-relative key, for people and templates
    sa.Column("content_key", sa.Text, nullable=False),
    sa.Column("collection", sa.Text),
    sa.Column("item_id", sa.Text),
    sa.Column("origin", sa.String(16), nullable=False),  # inbox | s3 | http | replay
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("stage", sa.String(16), nullable=False),
    sa.Column("step", sa.String(32), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),  # tries of the current stage (1 = first)
    sa.Column("error_class", sa.Text),
    sa.Column("error", sa.Text),
    sa.Column("input_sha256", sa.String(64)),
    sa.Column("input_size", sa.BigInteger),
    sa.Column("cog_href", sa.Text),
    sa.Column("cog_key", sa.Text),
    sa.Column("cog_sha256", sa.String(64)),
    sa.Column("cog_size", sa.BigInteger),
    sa.Column("item_bbox", sa.Text),  # JSON [w, s, e, n] in WGS84 of the published item (status page map)
    sa.Column("params", sa.Text),  # JSON: what was submitted (sidecar name, original /newitem body, ...)
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Index("jobs_source", "source", "content_key"),
    sa.Index("jobs_state", "state", "updated_at"),
    sa.Index("jobs_created", "created_at"),
    sa.Index("jobs_item", "collection", "item_id"),
)

events = sa.Table(
    "job_events",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("job_id", sa.String(32), nullable=False, index=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("stage", sa.String(16), nullable=False),
    sa.Column("step", sa.String(32), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempt", sa.Integer),
    sa.Column("error_class", sa.Text),
    sa.Column("message", sa.Text),
)

# Who is working on a job right now: one row per job while a worker converts it, renewed by a heartbeat.
# A redelivered message (the broker connection dropped, the worker did not) finds the claim fresh and waits
# instead of converting the same raster a second time; a claim whose heartbeat is stale is taken over.
job_claims = sa.Table(
    "job_claims",
    metadata,
    sa.Column("job_id", sa.String(32), primary_key=True),
    sa.Column("stage", sa.String(16), nullable=False),
    sa.Column("owner", sa.Text, nullable=False),  # stacdrop.claims.owner_id(): host, pid namespace, pid, nonce
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False, index=True),
)
CLAIMS_KEPT = timedelta(hours=1)  # claims left after a success (stacdrop/claims.py) are pruned after this

fingerprints = sa.Table(
    "source_fingerprints",
    metadata,
    # Binary ("C") ordering so that a reconciler can merge-join a sorted S3 listing against it.
    sa.Column("key", sa.Text().with_variant(sa.Text(collation="C"), "postgresql"), primary_key=True),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# Job states. "new" means created but not yet on the bus (a crash there is healed at start-up).
NEW, QUEUED, PROCESSING, PUBLISHING, RETRYING, PUBLISHED, FAILED, SKIPPED, UNPUBLISHED = (
    "new", "queued", "processing", "publishing", "retrying", "published", "failed", "skipped", "unpublished",
)
FINAL_STATES = (PUBLISHED, FAILED, SKIPPED, UNPUBLISHED)

# Our steps, and the original system's status step each one maps onto (GET /status compatibility).
ORIGINAL_STEPS = {
    "queued": "**pending**",
    "collection": "GETCOLLECTION",
    "fetch": "GETITEMFILE",
    "validate": "GETITEMFILE",
    "convert": "TRANF_COG",
    "store": "UPLOAD_COG_TO_SERVER",
    "metadata": "CREATEPYSTACITEM",
    "derive": "CREATEPYSTACITEM",
    "publish": "CREATEPYSTACITEM",
    "cleanup": "DELETEITEMFILE",
    "finished": "PROCESS FINISHED",
}


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

    @property
    def original_step(self) -> str:
        return ORIGINAL_STEPS.get(self.step, self.step)

    def as_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if k != "events"}
        for key in ("created_at", "updated_at", "finished_at"):
            data[key] = data[key].isoformat() if data[key] else None
        data["events"] = [
            {**e.__dict__, "at": e.at.isoformat()} for e in self.events
        ]
        return data


def _aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)  # SQLite forgets the zone; we only ever store UTC
    return value


def _job_from_row(row: Any) -> Job:
    data = dict(row._mapping)
    data["params"] = json.loads(data["params"] or "{}")
    data["item_bbox"] = json.loads(data["item_bbox"]) if data.get("item_bbox") else None
    for key in ("created_at", "updated_at", "finished_at"):
        data[key] = _aware(data[key])
    return Job(**data)


JOB_UPDATABLE = {
    "collection", "item_id", "state", "stage", "step", "attempts", "error_class", "error", "input_sha256",
    "input_size", "cog_href", "cog_key", "cog_sha256", "cog_size", "finished_at", "item_bbox",
}

# Columns added after the first release: (name, SQL type). create_all() does not alter existing tables, so
# _create_schema adds these to a ledger created by an older stacdrop (all nullable, so no backfill).
ADDED_COLUMNS = {"jobs": [("item_bbox", "TEXT")]}


# Stages in pipeline order, and the job columns a stage may not overwrite once a later stage wrote them.
STAGES = ("watch", "process", "publish")
GUARDED = {"state", "stage", "step", "finished_at", "error_class", "error"}


class Ledger:
    def __init__(self, url: str, *, secrets: Iterable[str] = ()) -> None:
        self.url = normalise_db_url(url)
        self.secrets = tuple(secrets)
        kwargs: dict[str, Any] = {}
        if self.url.startswith("sqlite"):
            db_file = sqlite_path(self.url)
            if db_file is not None:
                create_private_file(db_file)  # 0600 before SQLite opens it; its -wal and -shm follow
            kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
        self.engine: Engine = sa.create_engine(self.url, future=True, pool_pre_ping=True, **kwargs)
        if self.url.startswith("sqlite"):
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        self._create_lock = threading.Lock()
        self._memory_locks: dict[int, threading.Lock] = {}
        self._create_schema()

    def _create_schema(self) -> None:
        """Create the tables when missing. Several processes starting at once on a new database race in
        CREATE TABLE: each checks, sees no table, creates, and all but one crash ("table jobs already
        exists"; on SQLite 4 in 6 of simultaneous starts). ``lock`` (an advisory lock on PostgreSQL, a
        file lock beside a SQLite file) makes them take turns, so the later ones find the tables."""
        with self.lock("schema"), self.engine.begin() as conn:
            metadata.create_all(conn)
            inspector = sa.inspect(conn)
            for table, columns in ADDED_COLUMNS.items():
                present = {c["name"] for c in inspector.get_columns(table)}
                for name, sql_type in columns:
                    if name not in present:
                        conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}"))
            for index in jobs.indexes:  # indexes added since (create_all skips existing tables)
                index.create(conn, checkfirst=True)

    def close(self) -> None:
        self.engine.dispose()

    # -- jobs -----------------------------------------------------------------------------------------
    def create_job(
        self,
        *,
        kind: str,
        source: str,
        source_key: str,
        content_key: str,
        collection: str | None,
        origin: str,
        priority: int,
        params: dict[str, Any] | None = None,
        input_size: int | None = None,
    ) -> tuple[Job, bool]:
        """Return ``(job, created)``. A drop whose content equals the source's LATEST job returns that job
        unless it failed or its item was unpublished since: dropping such a file again is how a user asks
        for another try. Only the latest job counts: after A, B, a second A is new content again (the
        latest job holds B), so the last write wins and A is published."""
        now = utcnow()
        with self._create_lock, self.engine.begin() as conn:
            row = conn.execute(
                sa.select(jobs).where(jobs.c.source == source)
                .order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(1)
            ).first()
            if row is not None and row.content_key == content_key and row.state not in (FAILED, UNPUBLISHED):
                return _job_from_row(row), False
            job_id = uuid.uuid4().hex
            conn.execute(
                jobs.insert().values(
                    id=job_id, kind=kind, source=source, source_key=source_key, content_key=content_key,
                    collection=collection, origin=origin, priority=priority, state=NEW, stage="watch",
                    step="queued", attempts=0, params=json.dumps(params or {}), input_size=input_size,
                    created_at=now, updated_at=now,
                )
            )
            conn.execute(events.insert().values(job_id=job_id, at=now, stage="watch", step="queued", status="created",
                                                message=self.redact(f"{kind} {source_key} from {origin}")))
        # The row just written, without reading it back.
        job = Job(
            id=job_id, kind=kind, source=source, source_key=source_key, content_key=content_key,
            collection=collection, item_id=None, origin=origin, priority=priority, state=NEW, stage="watch",
            step="queued", attempts=0, error_class=None, error=None, input_sha256=None, input_size=input_size,
            cog_href=None, cog_key=None, cog_sha256=None, cog_size=None, params=json.loads(json.dumps(params or {})),
            created_at=now, updated_at=now, finished_at=None,
        )
        return job, True

    def get(self, job_id: str, *, with_events: bool = False) -> Job | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(jobs).where(jobs.c.id == job_id)).first()
            if row is None:
                return None
            job = _job_from_row(row)
            if with_events:
                job.events = [
                    Event(at=_aware(e.at), stage=e.stage, step=e.step, status=e.status, attempt=e.attempt,  # type: ignore[arg-type]
                          error_class=e.error_class, message=e.message)
                    for e in conn.execute(
                        sa.select(events).where(events.c.job_id == job_id).order_by(events.c.id)
                    )
                ]
        return job

    def get_many(self, job_ids: list[str]) -> dict[str, Job]:
        """The jobs among ``job_ids`` that exist (one query per 500 ids)."""
        found: dict[str, Job] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(job_ids), 500):
                for row in conn.execute(sa.select(jobs).where(jobs.c.id.in_(job_ids[i:i + 500]))):
                    found[row.id] = _job_from_row(row)
        return found

    def record(
        self,
        job_id: str,
        *,
        stage: str,
        step: str,
        status: str,
        message: str | None = None,
        error_class: str | None = None,
        attempt: int | None = None,
        before: list[PendingEvent] | None = None,
        **fields: Any,
    ) -> None:
        """Append an event to the job's history and update the job's current fields in one transaction.

        ``before``: events recorded in memory earlier (quick steps), written first in the same transaction.
        """
        self.record_many([Record(job_id, stage=stage, step=step, status=status, message=message,
                                 error_class=error_class, attempt=attempt, before=before or [], fields=fields)])

    def record_many(self, records: list[Record]) -> None:
        """``record`` for many jobs in one transaction (a publish batch of 500 items: one commit, not 500).

        Updates with the same columns share one compiled statement, executed with many parameter sets.
        """
        if not records:
            return
        now = utcnow()
        updates: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
        rows: list[dict[str, Any]] = []
        for rec in records:
            values = _job_values(rec, now)
            if values.get("error"):
                values["error"] = self.redact(values["error"])
            columns = tuple(sorted(values))
            updates.setdefault((rec.stage, columns), []).append(
                {"b_id": rec.job_id, **{f"b_{c}": values[c] for c in columns}})
            rows.extend(self._event_row(rec.job_id, e) for e in rec.before)
            rows.append(dict(job_id=rec.job_id, at=now, stage=rec.stage, step=rec.step, status=rec.status,
                             attempt=rec.attempt, error_class=rec.error_class, message=self.redact(rec.message)))
        with self.engine.begin() as conn:
            for (stage, columns), params in updates.items():
                conn.execute(_update_statement(stage, columns), params)
            conn.execute(events.insert(), rows)

    def add_events(self, job_id: str, pending: list[PendingEvent], *, step: str) -> None:
        """Write events recorded in memory, and set the job's current step."""
        with self.engine.begin() as conn:
            conn.execute(jobs.update().where(jobs.c.id == job_id).values(step=step, updated_at=utcnow()))
            conn.execute(events.insert(), [self._event_row(job_id, e) for e in pending])

    def redact(self, text: str | None) -> str | None:
        """``text`` as the ledger stores it: URL passwords, signatures and this ledger's secrets masked."""
        return redact_text(text, self.secrets) if text else text

    def _event_row(self, job_id: str, event: PendingEvent) -> dict[str, Any]:
        return dict(job_id=job_id, at=event.at, stage=event.stage, step=event.step, status=event.status,
                    attempt=event.attempt, error_class=event.error_class, message=self.redact(event.message))

    def list_jobs(
        self,
        *,
        state: str | None = None,
        stage: str | None = None,
        collection: str | None = None,
        error_class: str | None = None,
        item_id: str | None = None,
        since: datetime | None = None,
        before: tuple[datetime, str] | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> list[Job]:
        """Newest first. ``before`` is a cursor: the (created_at, id) of the last job of the previous page."""
        query = sa.select(jobs)
        for column, value in (("state", state), ("stage", stage), ("collection", collection),
                              ("error_class", error_class), ("item_id", item_id)):
            if value is not None:
                query = query.where(jobs.c[column] == value)
        if since is not None:
            query = query.where(jobs.c.created_at >= since)
        if before is not None:
            at, last_id = before
            query = query.where(
                sa.or_(jobs.c.created_at < at, sa.and_(jobs.c.created_at == at, jobs.c.id < last_id))
            )
        query = query.order_by(jobs.c.created_at.desc(), jobs.c.id.desc()).limit(limit).offset(offset or None)
        with self.engine.connect() as conn:
            return [_job_from_row(r) for r in conn.execute(query)]

    def count_by_state(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(jobs.c.state, sa.func.count()).group_by(jobs.c.state))
            return {r[0]: r[1] for r in rows}

    def unqueued_jobs(self) -> list[Job]:
        """Jobs created but never put on the bus (the process died in between)."""
        return self.list_jobs(state=NEW, limit=100000)

    def newer_published(self, job: Job) -> str | None:
        """The id of a later version of the same source that is already published: ``job`` must not
        overwrite it."""
        return self.newer_published_many([job]).get(job.id)

    def newer_published_many(self, batch: list[Job]) -> dict[str, str]:
        """``newer_published`` for many jobs with one query per 500 sources: {job id: newer job id}."""
        by_source: dict[str, list[Job]] = {}
        for job in batch:
            by_source.setdefault(job.source, []).append(job)
        sources = list(by_source)
        newer: dict[str, str] = {}
        with self.engine.connect() as conn:
            for i in range(0, len(sources), 500):
                query = sa.select(jobs.c.id, jobs.c.source, jobs.c.created_at).where(
                    jobs.c.source.in_(sources[i:i + 500]), jobs.c.state == PUBLISHED)
                for row in conn.execute(query):
                    for job in by_source[row.source]:
                        if row.id != job.id and _aware(row.created_at) > job.created_at:
                            newer[job.id] = row.id
        return newer

    # -- claims (one live worker per job; see stacdrop/claims.py) --------------------------------------
    def claim(self, job_id: str, stage: str, owner: str, *, stale_after: float, take_from: str | None = None) -> bool:
        """Take or renew ``owner``'s claim on ``job_id`` in one statement; False when another owner's claim
        is fresher than ``stale_after`` seconds (and is not ``take_from``, an owner known to be dead)."""
        now = utcnow()
        insert = (pg_insert if self.engine.dialect.name == "postgresql" else sqlite_insert)(job_claims)
        free = sa.or_(job_claims.c.owner == owner, job_claims.c.heartbeat_at < now - timedelta(seconds=stale_after))
        if take_from is not None:
            free = sa.or_(free, job_claims.c.owner == take_from)
        statement = insert.values(job_id=job_id, stage=stage, owner=owner, heartbeat_at=now).on_conflict_do_update(
            index_elements=[job_claims.c.job_id], set_=dict(stage=stage, owner=owner, heartbeat_at=now), where=free,
        ).returning(job_claims.c.owner)  # a row comes back only when the claim is ours (rowcount is unreliable)
        with self.engine.begin() as conn:
            conn.execute(job_claims.delete().where(job_claims.c.heartbeat_at < now - CLAIMS_KEPT))
            return conn.execute(statement).scalar() == owner

    def claim_owner(self, job_id: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(job_claims.c.owner).where(job_claims.c.job_id == job_id)).scalar()

    def release(self, job_id: str, owner: str) -> None:
        """Drop ``owner``'s claim (a no-op when someone else took it over)."""
        with self.engine.begin() as conn:
            conn.execute(job_claims.delete().where(job_claims.c.job_id == job_id, job_claims.c.owner == owner))

    # -- source fingerprints (cheap change detection for watchers) ------------------------------------
    def fingerprint(self, key: str) -> str | None:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(fingerprints.c.fingerprint).where(fingerprints.c.key == key)).scalar()

    def remember_fingerprint(self, key: str, fingerprint: str) -> None:
        now = utcnow()
        with self.engine.begin() as conn:
            updated = conn.execute(
                fingerprints.update().where(fingerprints.c.key == key).values(fingerprint=fingerprint, updated_at=now)
            ).rowcount
            if not updated:
                conn.execute(fingerprints.insert().values(key=key, fingerprint=fingerprint, updated_at=now))

    def iter_fingerprints(self, prefix: str = "", batch: int = 5000):  # noqa: ANN201
        """``(key, fingerprint)`` in binary key order, streamed in batches (bounded memory)."""
        last = None
        while True:
            query = sa.select(fingerprints.c.key, fingerprints.c.fingerprint)
            if prefix:
                query = query.where(fingerprints.c.key >= prefix, fingerprints.c.key < prefix + "\U0010ffff")
            if last is not None:
                query = query.where(fingerprints.c.key > last)
            with self.engine.connect() as conn:
                rows = conn.execute(query.order_by(fingerprints.c.key).limit(batch)).fetchall()
            if not rows:
                return
            yield from ((r[0], r[1]) for r in rows)
            last = rows[-1][0]

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive lock named ``name``, shared by every process that uses this ledger: a PostgreSQL
        advisory lock (so across hosts) or, for SQLite, a file lock beside the database (the processes of one
        host). Publishers hold it around read-modify-write cycles on the catalog (collection extents)."""
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        if self.engine.dialect.name == "postgresql":
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": key})
                try:
                    yield
                finally:
                    conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                    conn.commit()
            return
        db_path = self.url.split(":///", 1)[-1]
        if not db_path or db_path == ":memory:":
            with self._memory_locks.setdefault(key, threading.Lock()):
                yield
            return
        folder = Path(db_path).parent / f"{Path(db_path).name}.locks"
        private_dir(folder)
        with os.fdopen(open_private_file(folder / f"{key & 0xFFFFFFFF:08x}.lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))


def _job_values(rec: Record, now: datetime) -> dict[str, Any]:
    """The job columns a record sets (plain values; the stage guard is in the statement)."""
    unknown = set(rec.fields) - JOB_UPDATABLE
    if unknown:
        raise ValueError(f"not job fields: {sorted(unknown)}")
    values = {"stage": rec.stage, "step": rec.step, "updated_at": now, **rec.fields}
    if rec.fields.get("item_bbox") is not None:
        values["item_bbox"] = json.dumps([float(v) for v in rec.fields["item_bbox"]])
    if rec.error_class is not None:
        values["error_class"] = rec.error_class
    elif rec.status == "succeeded":
        values.update(error_class=None, error=None)
    if rec.fields.get("state") in FINAL_STATES and "finished_at" not in rec.fields:
        values["finished_at"] = now
    return values


@functools.lru_cache(maxsize=256)
def _update_statement(stage: str, columns: tuple[str, ...]) -> sa.Update:
    """UPDATE jobs SET <columns> WHERE id = :b_id, with the stage guard, for executemany.

    A stage's outcome is recorded after its output message is published, so the next stage may already have
    recorded its own (a quick publish, an instant wake-up): the guarded columns (state, stage, step, ...) keep
    their value when the job is already in a later stage. Outputs (cog_*, ...) are written either way.
    """
    later = STAGES[STAGES.index(stage) + 1:] if stage in STAGES else ()
    ahead = jobs.c.stage.in_(later) if later else None
    values: dict[str, Any] = {}
    for column in columns:
        param = sa.bindparam(f"b_{column}", type_=jobs.c[column].type)
        values[column] = sa.case((ahead, jobs.c[column]), else_=param) if ahead is not None and column in GUARDED \
            else param
    return jobs.update().where(jobs.c.id == sa.bindparam("b_id")).values(values)


def normalise_db_url(url: str) -> str:
    """Accept plain paths and postgresql:// URLs (psycopg 3 is the driver)."""
    if "://" not in url:
        return f"sqlite:///{url}"
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()

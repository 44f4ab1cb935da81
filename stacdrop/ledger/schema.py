"""The ledger's tables, their migrations, and the engine (URL forms, SQLite pragmas).

Private to ``stacdrop.ledger``: every other module reads and writes the ledger through ``Ledger``'s
methods (``stacdrop.ledger.reports`` holds the aggregate queries of the metrics and the status page), so the
columns can change without hunting SQL across the tree.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import datetime, timezone
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from stacdrop.private_files import create_private_file, sqlite_path

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

fingerprints = sa.Table(
    "source_fingerprints",
    metadata,
    # Binary ("C") ordering so that a reconciler can merge-join a sorted S3 listing against it.
    sa.Column("key", sa.Text().with_variant(sa.Text(collation="C"), "postgresql"), primary_key=True),
    sa.Column("fingerprint", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# Columns added after the first release: (name, SQL type). create_all() does not alter existing tables, so
# create_schema adds these to a ledger created by an older stacdrop (all nullable, so no backfill).
ADDED_COLUMNS = {"jobs": [("item_bbox", "TEXT")]}


def open_engine(url: str) -> Engine:
    """The engine of a normalised ledger URL; a SQLite file is created private (0600) first."""
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        db_file = sqlite_path(url)
        if db_file is not None:
            create_private_file(db_file)  # 0600 before SQLite opens it; its -wal and -shm follow
        kwargs["connect_args"] = {"timeout": 30, "check_same_thread": False}
    engine = sa.create_engine(url, future=True, pool_pre_ping=True, **kwargs)
    if url.startswith("sqlite"):
        sa.event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def create_schema(engine: Engine, lock: Callable[[str], AbstractContextManager[None]]) -> None:
    """Create the tables when missing. Several processes starting at once on a new database race in
    CREATE TABLE: each checks, sees no table, creates, and all but one crash ("table jobs already
    exists"; on SQLite 4 in 6 of simultaneous starts). ``lock`` (``Ledger.lock``: an advisory lock on
    PostgreSQL, a file lock beside a SQLite file) makes them take turns, so the later ones find the tables."""
    with lock("schema"), engine.begin() as conn:
        metadata.create_all(conn)
        inspector = sa.inspect(conn)
        for table, columns in ADDED_COLUMNS.items():
            present = {c["name"] for c in inspector.get_columns(table)}
            for name, sql_type in columns:
                if name not in present:
                    conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {name} {sql_type}"))
        for index in jobs.indexes:  # indexes added since (create_all skips existing tables)
            index.create(conn, checkfirst=True)


def aware(value: datetime | None) -> datetime | None:
    """``value`` with its UTC zone: SQLite forgets the zone; we only ever store UTC."""
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value


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

"""Locks shared by every process of one ledger, and the claims of live workers on jobs.

``named_lock`` is a PostgreSQL advisory lock (so across hosts) or, for SQLite, a file lock beside the database
(the processes of one host). The claims (``job_claims``, see stacdrop/claims.py) say which worker is on a job
right now, so a redelivered message waits instead of converting the same raster a second time.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

from stacdrop.ledger.schema import job_claims
from stacdrop.private_files import open_private_file, private_dir
from stacdrop.times import utcnow

CLAIMS_KEPT = timedelta(hours=1)  # claims left after a success (stacdrop/claims.py) are pruned after this


@contextmanager
def named_lock(engine: Engine, url: str, memory_locks: dict[int, threading.Lock], name: str) -> Iterator[None]:
    """``Ledger.lock``. ``memory_locks``: the ledger's own locks, for an in-memory SQLite database."""
    key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": key})
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                conn.commit()
        return
    db_path = url.split(":///", 1)[-1]
    if not db_path or db_path == ":memory:":
        with memory_locks.setdefault(key, threading.Lock()):
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


def claim(engine: Engine, job_id: str, stage: str, owner: str, *, stale_after: float,
          take_from: str | None) -> bool:
    """``Ledger.claim``."""
    now = utcnow()
    insert = (pg_insert if engine.dialect.name == "postgresql" else sqlite_insert)(job_claims)
    free = sa.or_(job_claims.c.owner == owner, job_claims.c.heartbeat_at < now - timedelta(seconds=stale_after))
    if take_from is not None:
        free = sa.or_(free, job_claims.c.owner == take_from)
    stage = str(stage)
    statement = insert.values(job_id=job_id, stage=stage, owner=owner, heartbeat_at=now).on_conflict_do_update(
        index_elements=[job_claims.c.job_id], set_=dict(stage=stage, owner=owner, heartbeat_at=now), where=free,
    ).returning(job_claims.c.owner)  # a row comes back only when the claim is ours (rowcount is unreliable)
    with engine.begin() as conn:
        conn.execute(job_claims.delete().where(job_claims.c.heartbeat_at < now - CLAIMS_KEPT))
        return conn.execute(statement).scalar() == owner


def claim_owner(engine: Engine, job_id: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(sa.select(job_claims.c.owner).where(job_claims.c.job_id == job_id)).scalar()


def release(engine: Engine, job_id: str, owner: str) -> None:
    with engine.begin() as conn:
        conn.execute(job_claims.delete().where(job_claims.c.job_id == job_id, job_claims.c.owner == owner))

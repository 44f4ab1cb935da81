"""Source fingerprints: a cheap stat fingerprint per source key, so watchers skip hashing unchanged files.

Keys are kept in binary order (``source_fingerprints.key`` is collated "C" on PostgreSQL), so the S3
reconciler can merge-join a sorted bucket listing against ``iter_fingerprints``.
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from stacdrop.ledger.schema import fingerprints
from stacdrop.times import utcnow


def fingerprint(engine: Engine, key: str) -> str | None:
    with engine.connect() as conn:
        return conn.execute(sa.select(fingerprints.c.fingerprint).where(fingerprints.c.key == key)).scalar()


def remember_fingerprint(engine: Engine, key: str, value: str) -> None:
    now = utcnow()
    with engine.begin() as conn:
        updated = conn.execute(
            fingerprints.update().where(fingerprints.c.key == key).values(fingerprint=value, updated_at=now)
        ).rowcount
        if not updated:
            conn.execute(fingerprints.insert().values(key=key, fingerprint=value, updated_at=now))


def iter_fingerprints(engine: Engine, prefix: str, batch: int) -> Iterator[tuple[str, str]]:
    """``(key, fingerprint)`` in binary key order, streamed in batches (bounded memory).

    Keyset pages on the primary key's index with one lower bound each: ``key >= prefix`` for the first,
    ``key > last`` after (SQLite uses only one of two lower bounds for the index range and would filter
    the other, rescanning every earlier row of the prefix per page). One short connection checkout per
    page, so a long bucket listing between pages pins no connection; rows come from the DBAPI cursor as
    plain tuples (a million SQLAlchemy ``Row`` objects cost more than the query)."""
    key = fingerprints.c.key
    query = sa.select(key, fingerprints.c.fingerprint)
    if prefix:
        query = query.where(key < prefix + "\U0010ffff")
    first = query.where(key >= prefix) if prefix else query
    first = first.order_by(key).limit(batch)
    after = query.where(key > sa.bindparam("last")).order_by(key).limit(batch)
    last = None
    while True:
        with engine.connect() as conn:
            result = conn.execute(first) if last is None else conn.execute(after, {"last": last})
            rows = result.cursor.fetchall()
        if not rows:
            return
        yield from rows
        last = rows[-1][0]


def forget_fingerprint(engine: Engine, key: str) -> None:
    """The source at ``key`` was removed: a file that comes back there is read and submitted again."""
    with engine.begin() as conn:
        conn.execute(fingerprints.delete().where(fingerprints.c.key == key))

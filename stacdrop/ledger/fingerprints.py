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
    """``(key, fingerprint)`` in binary key order, streamed in batches (bounded memory)."""
    last = None
    while True:
        query = sa.select(fingerprints.c.key, fingerprints.c.fingerprint)
        if prefix:
            query = query.where(fingerprints.c.key >= prefix, fingerprints.c.key < prefix + "\U0010ffff")
        if last is not None:
            query = query.where(fingerprints.c.key > last)
        with engine.connect() as conn:
            rows = conn.execute(query.order_by(fingerprints.c.key).limit(batch)).fetchall()
        if not rows:
            return
        yield from ((r[0], r[1]) for r in rows)
        last = rows[-1][0]


def forget_fingerprint(engine: Engine, key: str) -> None:
    """The source at ``key`` was removed: a file that comes back there is read and submitted again."""
    with engine.begin() as conn:
        conn.execute(fingerprints.delete().where(fingerprints.c.key == key))

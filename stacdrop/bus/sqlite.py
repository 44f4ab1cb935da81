"""The embedded bus: durable queues in one SQLite file, no server needed.

A delivery is a *lease*: the consumer claims a message until ``lease_until`` and a background thread
renews the lease while the handler works, so a conversion may run for hours without the message being
handed to a second worker. A consumer that dies (kill -9) stops renewing; its messages become
deliverable again when the lease runs out, or at once when its process is known dead on this host.
Retries are the same row with a later ``available_at``; dead letters live in their own table.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import cast

from stacdrop.bus.base import BatchHandler, Bus, DeadLetter, DeadLetterFilter, Delivery, DeliveryHandler, QueueStats
from stacdrop.messages import QUEUES, Envelope
from stacdrop.private_files import create_private_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    priority INTEGER NOT NULL,
    available_at REAL NOT NULL,
    retrying INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until REAL,
    deliveries INTEGER NOT NULL DEFAULT 0,
    envelope TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_next ON messages (queue, priority DESC, available_at, seq);
CREATE TABLE IF NOT EXISTS dead_letters (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    error_class TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    collection TEXT,
    dead_at REAL NOT NULL,
    envelope TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_letters_queue ON dead_letters (queue, dead_at);
"""


def _path_from_url(url: str) -> Path:
    if url.startswith("sqlite:///"):
        return Path(url[len("sqlite:///"):])
    if url.startswith("sqlite://"):
        return Path(url[len("sqlite://"):])
    return Path(url)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SqliteBus(Bus):
    def __init__(
        self,
        url: str,
        *,
        queues: Iterable[str] = QUEUES,
        lease_seconds: float = 60.0,
        poll_interval: float = 0.05,
        max_poll_interval: float = 0.25,
    ) -> None:
        self.path = _path_from_url(url)
        create_private_file(self.path)  # 0600 before SQLite opens it; its -wal and -shm follow
        self.queues = tuple(queues)
        self.lease_seconds = lease_seconds
        self.poll_interval = poll_interval
        self.max_poll_interval = max_poll_interval
        self.owner_prefix = f"{socket.gethostname()}:{os.getpid()}:"
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process crashes
        self._consumers: dict[str, int] = {}
        # Leases held by this bus's consumers, renewed by one long-lived thread (not a thread per delivery).
        self._leases: dict[str, str] = {}  # message id -> lease owner
        self._renewer: threading.Thread | None = None
        self._closed = threading.Event()
        # Wakes this process's idle consumers when it publishes (other processes are found by polling).
        self._published = threading.Condition(threading.Lock())
        self._publish_seq = 0
        self.setup()

    # -- plumbing -------------------------------------------------------------------------------------
    def _tx(self):  # noqa: ANN202
        return _Transaction(self._conn, self._lock)

    def setup(self) -> None:
        with self._lock:
            self._conn.executescript(SCHEMA)

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._conn.close()

    # -- publishing -----------------------------------------------------------------------------------
    def publish(self, queue: str, envelope: Envelope) -> None:
        self._check_queue(queue)
        with self._tx() as cur:
            cur.execute(
                "INSERT OR IGNORE INTO messages (id, queue, priority, available_at, envelope) VALUES (?,?,?,?,?)",
                (envelope.id, queue, envelope.priority, time.time(), envelope.model_dump_json()),
            )
        self._notify_published()

    def _notify_published(self) -> None:
        with self._published:
            self._publish_seq += 1
            self._published.notify_all()

    def _wait_for_publish(self, seq: int, timeout: float) -> None:
        """Sleep up to ``timeout`` unless this process publishes (or has published) after ``seq``."""
        with self._published:
            if self._publish_seq == seq:
                self._published.wait(timeout)

    def _check_queue(self, queue: str) -> None:
        if queue not in self.queues:
            raise ValueError(f"unknown queue {queue!r}; known: {', '.join(self.queues)}")

    # -- consuming ------------------------------------------------------------------------------------
    def consume(
        self,
        queue: str,
        handler: DeliveryHandler,
        stop: threading.Event,
        *,
        prefetch: int = 1,  # noqa: ARG002 - the Bus interface; leases need no buffering
    ) -> None:
        """Claim and handle one message at a time (``prefetch`` is 1 here: leases need no buffering)."""
        self.consume_batch(queue, lambda deliveries: handler(deliveries[0]), stop, max_batch=1, max_wait=0.0)

    def consume_batch(
        self, queue: str, handler: BatchHandler, stop: threading.Event, *, max_batch: int, max_wait: float
    ) -> None:
        """Claim up to ``max_batch`` ready messages (waiting up to ``max_wait`` after the first for more),
        hold their leases while ``handler`` runs, and hand back whatever it left unsettled."""
        self._check_queue(queue)
        max_batch = max(1, max_batch)
        owner = self.owner_prefix + uuid.uuid4().hex[:8]
        self._consumers[queue] = self._consumers.get(queue, 0) + 1
        idle = self.poll_interval
        last_reap = 0.0
        try:
            while not stop.is_set():
                if time.monotonic() - last_reap > 5.0:
                    self._reap_dead_owners()
                    last_reap = time.monotonic()
                seq = self._publish_seq
                claimed = self._claim_many(queue, owner, max_batch)
                if not claimed:
                    self._wait_for_publish(seq, idle)
                    idle = min(self.max_poll_interval, idle * 1.5)
                    continue
                idle = self.poll_interval
                deliveries = [SqliteDelivery(self, queue, env, owner, redelivered=n > 1) for env, n in claimed]
                for d in deliveries:
                    self._hold_lease(d)
                try:
                    deadline = time.monotonic() + max_wait
                    while len(deliveries) < max_batch and not stop.is_set():
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        seq = self._publish_seq
                        more = self._claim_many(queue, owner, max_batch - len(deliveries))
                        if more:
                            for env, n in more:
                                d = SqliteDelivery(self, queue, env, owner, redelivered=n > 1)
                                self._hold_lease(d)
                                deliveries.append(d)
                            continue
                        self._wait_for_publish(seq, min(left, self.poll_interval))
                    handler(cast("list[Delivery]", deliveries))  # list is invariant; the handler only reads
                finally:
                    for d in deliveries:
                        self._leases.pop(d.envelope.id, None)
                        if not d.settled:
                            d.release()
        finally:
            self._consumers[queue] -= 1

    def _claim_many(self, queue: str, owner: str, limit: int) -> list[tuple[Envelope, int]]:
        now = time.time()
        # An empty poll is a plain read: no write lock taken (other processes keep writing meanwhile).
        with self._lock:
            if self._conn.execute(
                "SELECT 1 FROM messages WHERE queue = ? AND available_at <= ? "
                "AND (lease_until IS NULL OR lease_until < ?) LIMIT 1",
                (queue, now, now),
            ).fetchone() is None:
                return []
        with self._tx() as cur:
            rows = cur.execute(
                "SELECT seq, envelope, deliveries FROM messages WHERE queue = ? AND available_at <= ? "
                "AND (lease_until IS NULL OR lease_until < ?) ORDER BY priority DESC, available_at, seq LIMIT ?",
                (queue, now, now, limit),
            ).fetchall()
            cur.executemany(
                "UPDATE messages SET lease_owner = ?, lease_until = ?, retrying = 0, deliveries = deliveries + 1 "
                "WHERE seq = ?",
                [(owner, now + self.lease_seconds, r[0]) for r in rows],
            )
        return [(Envelope.model_validate_json(r[1]), r[2] + 1) for r in rows]

    def _hold_lease(self, delivery: "SqliteDelivery") -> None:
        """Renew the delivery's lease (every ``lease_seconds / 3``) until it is dropped from ``_leases``."""
        with self._lock:
            self._leases[delivery.envelope.id] = delivery.owner
            if self._renewer is None or not self._renewer.is_alive():
                self._renewer = threading.Thread(target=self._renew_leases, name="lease-renewer", daemon=True)
                self._renewer.start()

    def _renew_leases(self) -> None:
        while not self._closed.wait(self.lease_seconds / 3):
            held = list(self._leases.items())
            if not held:
                continue
            try:
                with self._tx() as cur:
                    cur.executemany(
                        "UPDATE messages SET lease_until = ? WHERE id = ? AND lease_owner = ?",
                        [(time.time() + self.lease_seconds, mid, owner) for mid, owner in held],
                    )
            except sqlite3.ProgrammingError:
                return  # the bus was closed
            except sqlite3.Error:
                continue  # busy or locked: try again at the next period, well within the lease

    def _reap_dead_owners(self) -> None:
        """Free the leases of consumers on this host whose process is gone (kill -9)."""
        host = socket.gethostname() + ":"
        with self._lock:
            owners = [
                r[0]
                for r in self._conn.execute(
                    "SELECT DISTINCT lease_owner FROM messages WHERE lease_until >= ? AND lease_owner LIKE ?",
                    (time.time(), host + "%"),
                )
            ]
        dead = [o for o in owners if not _pid_alive(int(o.split(":")[1]))]
        if dead:
            with self._tx() as cur:
                cur.executemany("UPDATE messages SET lease_until = NULL WHERE lease_owner = ?", [(o,) for o in dead])

    # -- settling (called by SqliteDelivery) ----------------------------------------------------------
    def settle_ack(self, d: "SqliteDelivery") -> None:
        with self._tx() as cur:
            cur.execute("DELETE FROM messages WHERE id = ? AND lease_owner = ?", (d.envelope.id, d.owner))

    def ack_many(self, deliveries: list[Delivery]) -> None:
        """One transaction for the whole batch."""
        for d in deliveries:
            assert isinstance(d, SqliteDelivery)
            d.mark_settled()
        with self._tx() as cur:
            cur.executemany("DELETE FROM messages WHERE id = ? AND lease_owner = ?",
                            [(d.envelope.id, d.owner) for d in deliveries])  # type: ignore[attr-defined]

    def settle_release(self, d: "SqliteDelivery") -> None:
        with self._tx() as cur:
            cur.execute(
                "UPDATE messages SET lease_until = NULL WHERE id = ? AND lease_owner = ?", (d.envelope.id, d.owner)
            )

    def settle_retry(
        self, d: "SqliteDelivery", delay: float, error_class: str, error: str, counted: bool = True
    ) -> None:
        env = d.envelope.with_failure(d.queue, error_class, error, counted=counted)
        with self._tx() as cur:
            cur.execute(
                "UPDATE messages SET envelope = ?, available_at = ?, retrying = 1, lease_until = NULL "
                "WHERE id = ? AND lease_owner = ?",
                (env.model_dump_json(), time.time() + max(0.0, delay), env.id, d.owner),
            )

    def settle_dead_letter(self, d: "SqliteDelivery", error_class: str, error: str) -> None:
        env = d.envelope.with_failure(d.queue, error_class, error)
        with self._tx() as cur:
            cur.execute(
                "INSERT OR REPLACE INTO dead_letters (id, queue, error_class, error, attempts, collection, dead_at, "
                "envelope) VALUES (?,?,?,?,?,?,?,?)",
                (env.id, d.queue, error_class, error, env.attempts, env.collection, time.time(), env.model_dump_json()),
            )
            cur.execute("DELETE FROM messages WHERE id = ? AND lease_owner = ?", (env.id, d.owner))

    # -- operating ------------------------------------------------------------------------------------
    def stats(self) -> list[QueueStats]:
        now = time.time()
        with self._lock:
            rows = self._conn.execute(
                "SELECT queue, "
                "SUM(CASE WHEN available_at <= ? AND (lease_until IS NULL OR lease_until < ?) THEN 1 ELSE 0 END), "
                "SUM(CASE WHEN lease_until >= ? THEN 1 ELSE 0 END), "
                "SUM(CASE WHEN retrying = 1 AND available_at > ? THEN 1 ELSE 0 END) "
                "FROM messages GROUP BY queue",
                (now, now, now, now),
            ).fetchall()
            dead = dict(self._conn.execute("SELECT queue, COUNT(*) FROM dead_letters GROUP BY queue").fetchall())
        by_queue = {r[0]: r for r in rows}
        out = []
        for q in self.queues:
            r = by_queue.get(q, (q, 0, 0, 0))
            out.append(
                QueueStats(
                    queue=q, ready=r[1] or 0, unacked=r[2] or 0, retrying=r[3] or 0, dead=dead.get(q, 0),
                    consumers=self._consumers.get(q) or None,
                )
            )
        return out

    def dead_letters(self, where: DeadLetterFilter | None = None, limit: int | None = None) -> list[DeadLetter]:
        where = where or DeadLetterFilter()
        sql = "SELECT id, queue, error_class, error, attempts, dead_at, envelope FROM dead_letters WHERE 1=1"
        args: list[object] = []
        if where.ids:
            sql += f" AND id IN ({','.join('?' * len(where.ids))})"
            args += list(where.ids)
        for column, value in (("queue", where.queue), ("error_class", where.error_class),
                              ("collection", where.collection)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        if where.since is not None:
            sql += " AND dead_at >= ?"
            args.append(where.since.timestamp())
        sql += " ORDER BY dead_at, id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [
            DeadLetter(
                id=r[0], queue=r[1], error_class=r[2], error=r[3], attempts=r[4],
                dead_at=datetime.fromtimestamp(r[5], timezone.utc), envelope=Envelope.model_validate_json(r[6]),
            )
            for r in rows
        ]

    def replay(self, ids: Iterable[str]) -> list[str]:
        moved = []
        with self._tx() as cur:
            for letter_id in ids:
                row = cur.execute("SELECT queue, envelope FROM dead_letters WHERE id = ?", (letter_id,)).fetchone()
                if row is None:
                    continue
                env = Envelope.model_validate_json(row[1]).for_replay()
                cur.execute("DELETE FROM messages WHERE id = ?", (env.id,))
                cur.execute(
                    "INSERT INTO messages (id, queue, priority, available_at, envelope) VALUES (?,?,?,?,?)",
                    (env.id, row[0], env.priority, time.time(), env.model_dump_json()),
                )
                cur.execute("DELETE FROM dead_letters WHERE id = ?", (letter_id,))
                moved.append(letter_id)
        return moved

    def purge(self, ids: Iterable[str]) -> list[str]:
        deleted = []
        with self._tx() as cur:
            for letter_id in ids:
                if cur.execute("DELETE FROM dead_letters WHERE id = ?", (letter_id,)).rowcount:
                    deleted.append(letter_id)
        return deleted


class SqliteDelivery(Delivery):
    def __init__(self, bus: SqliteBus, queue: str, envelope: Envelope, owner: str, redelivered: bool) -> None:
        super().__init__(queue, envelope, redelivered)
        self.bus = bus
        self.owner = owner

    def mark_settled(self) -> None:
        if self.settled:
            raise RuntimeError(f"message {self.envelope.id} settled twice")
        self.settled = True

    def ack(self) -> None:
        self.mark_settled()
        self.bus.settle_ack(self)

    def retry(self, delay: float, error_class: str, error: str, *, counted: bool = True) -> None:
        self.mark_settled()
        self.bus.settle_retry(self, delay, error_class, error, counted)

    def dead_letter(self, error_class: str, error: str) -> None:
        self.mark_settled()
        self.bus.settle_dead_letter(self, error_class, error)

    def release(self) -> None:
        """Hand the message back unsettled (the handler raised or the worker is stopping)."""
        self.settled = True
        self.bus.settle_release(self)


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` under the bus lock: one writer at a time, across processes too."""

    def __init__(self, conn: sqlite3.Connection, lock: threading.RLock) -> None:
        self.conn = conn
        self.lock = lock

    def __enter__(self) -> sqlite3.Cursor:
        self.lock.acquire()
        self.cur = self.conn.cursor()
        self.cur.execute("BEGIN IMMEDIATE")
        return self.cur

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        try:
            self.cur.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self.lock.release()


__all__ = ["SqliteBus", "SqliteDelivery"]

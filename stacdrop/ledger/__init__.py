"""The job ledger: one job per source version, its stage history, attempts, errors and outputs.

SQLAlchemy Core, so ``sqlite:///data/ledger.db`` (the default) and ``postgresql://...`` (shared by many
hosts) both work. A job is created when a source (a raster with its sidecar, or a collection.json) is
submitted; the same source with the same content makes no second job, changed content makes a new one.

Every error and event message is redacted (``stacdrop.redact``) as it is written, whoever records it (the
stage runtime, the CLI, the intake): the ledger is read by the API, the CLI and backups, so a URL password,
a presigned signature or a secret setting never reaches it. ``Ledger(url, secrets=secrets_of(settings))``
adds the configured secrets to what is masked.

``Ledger`` is the one way in; its parts are private modules: ``schema`` (tables, migrations, engine),
``jobs`` (the records and the writes that move a job on), ``states`` (the state, stage and status names and
the table of allowed state moves, enforced by every write), ``fingerprints``, ``locks`` (named locks and
worker claims) and ``reports`` (the aggregates of the metrics and the status page).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from stacdrop.ledger import fingerprints as _fingerprints
from stacdrop.ledger import jobs as _jobs
from stacdrop.ledger import locks as _locks
from stacdrop.ledger.jobs import REMOVAL_KIND, Event, Job, PendingEvent, Record
from stacdrop.ledger.reports import Reports
from stacdrop.ledger.schema import create_schema, normalise_db_url, open_engine
from stacdrop.ledger.states import (
    FINAL_STATES, STAGES, TRANSITIONS, UNFINISHED_STATES, EventStatus, JobState, Stage, TransitionRefused,
)
from stacdrop.redact import redact_text

__all__ = [
    "FINAL_STATES", "STAGES", "TRANSITIONS", "UNFINISHED_STATES", "Event", "EventStatus", "Job", "JobState",
    "Ledger", "PendingEvent", "REMOVAL_KIND", "Record", "Reports", "Stage", "TransitionRefused", "normalise_db_url",
]


class Ledger:
    def __init__(self, url: str, *, secrets: Iterable[str] = ()) -> None:
        self.url = normalise_db_url(url)
        self.secrets = tuple(secrets)
        self.engine: Engine = open_engine(self.url)
        self._create_lock = threading.Lock()
        self._memory_locks: dict[int, threading.Lock] = {}
        create_schema(self.engine, self.lock)

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
        return _jobs.create_job(
            self.engine, self._create_lock, self.redact, kind=kind, source=source, source_key=source_key,
            content_key=content_key, collection=collection, origin=origin, priority=priority, params=params,
            input_size=input_size,
        )

    def get(self, job_id: str, *, with_events: bool = False) -> Job | None:
        return _jobs.get_job(self.engine, job_id, with_events=with_events)

    def get_many(self, job_ids: list[str]) -> dict[str, Job]:
        """The jobs among ``job_ids`` that exist (one query per 500 ids)."""
        return _jobs.get_jobs(self.engine, job_ids)

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
        A ``state`` the job may not move to from its own (``stacdrop.ledger.states.TRANSITIONS``) raises
        ``TransitionRefused`` and writes nothing.
        """
        self.record_many([Record(job_id, stage=stage, step=step, status=status, message=message,
                                 error_class=error_class, attempt=attempt, before=before or [], fields=fields)])

    def record_many(self, records: list[Record]) -> None:
        """``record`` for many jobs in one transaction (a publish batch of 500 items: one commit, not 500).

        Updates with the same columns share one compiled statement, executed with many parameter sets. One
        refused move (``TransitionRefused``) writes nothing of the batch.
        """
        _jobs.record_many(self.engine, records, self.redact)

    def add_events(self, job_id: str, pending: list[PendingEvent], *, step: str) -> None:
        """Write events recorded in memory, and set the job's current step."""
        _jobs.add_events(self.engine, job_id, pending, step, self.redact)

    def redact(self, text: str | None) -> str | None:
        """``text`` as the ledger stores it: URL passwords, signatures and this ledger's secrets masked."""
        return redact_text(text, self.secrets) if text else text

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
        return _jobs.list_jobs(self.engine, state=state, stage=stage, collection=collection,
                               error_class=error_class, item_id=item_id, since=since, before=before, limit=limit,
                               offset=offset)

    def count_by_state(self) -> dict[str, int]:
        return _jobs.count_by_state(self.engine)

    def unqueued_jobs(self) -> list[Job]:
        """Jobs created but never put on the bus (the process died in between)."""
        return self.list_jobs(state=JobState.NEW, limit=100000)

    def newer_published(self, job: Job) -> str | None:
        """The id of a later version of the same source that is already published: ``job`` must not
        overwrite it."""
        return self.newer_published_many([job]).get(job.id)

    def newer_published_many(self, batch: list[Job]) -> dict[str, str]:
        """``newer_published`` for many jobs with one query per 500 sources: {job id: newer job id}."""
        return _jobs.newer_published_many(self.engine, batch)

    def jobs_of_source(self, source: str) -> list[Job]:
        """Every job of one source (its url or path), oldest first: its versions and its removals."""
        return _jobs.jobs_of_source(self.engine, source)

    def removed_after_many(self, batch: list[Job]) -> dict[str, str]:
        """{job id: id of a removal job of the same source created after it}, for the jobs of ``batch``
        whose source was removed from the inbox since (one query per 500 sources)."""
        return _jobs.removed_after_many(self.engine, batch)

    @contextmanager
    def reports(self) -> Iterator[Reports]:
        """The aggregates of the metrics and the status page, over one connection."""
        with self.engine.connect() as conn:
            yield Reports(conn)

    # -- claims (one live worker per job; see stacdrop/claims.py) --------------------------------------
    def claim(self, job_id: str, stage: str, owner: str, *, stale_after: float, take_from: str | None = None) -> bool:
        """Take or renew ``owner``'s claim on ``job_id`` in one statement; False when another owner's claim
        is fresher than ``stale_after`` seconds (and is not ``take_from``, an owner known to be dead)."""
        return _locks.claim(self.engine, job_id, stage, owner, stale_after=stale_after, take_from=take_from)

    def claim_owner(self, job_id: str) -> str | None:
        return _locks.claim_owner(self.engine, job_id)

    def release(self, job_id: str, owner: str) -> None:
        """Drop ``owner``'s claim (a no-op when someone else took it over)."""
        _locks.release(self.engine, job_id, owner)

    # -- source fingerprints (cheap change detection for watchers) ------------------------------------
    def fingerprint(self, key: str) -> str | None:
        return _fingerprints.fingerprint(self.engine, key)

    def remember_fingerprint(self, key: str, fingerprint: str) -> None:
        _fingerprints.remember_fingerprint(self.engine, key, fingerprint)

    def forget_fingerprint(self, key: str) -> None:
        _fingerprints.forget_fingerprint(self.engine, key)

    def iter_fingerprints(self, prefix: str = "", batch: int = 5000) -> Iterator[tuple[str, str]]:
        """``(key, fingerprint)`` in binary key order, streamed in batches (bounded memory)."""
        return _fingerprints.iter_fingerprints(self.engine, prefix, batch)

    @contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """An exclusive lock named ``name``, shared by every process that uses this ledger: a PostgreSQL
        advisory lock (so across hosts) or, for SQLite, a file lock beside the database (the processes of one
        host). Publishers hold it around read-modify-write cycles on the catalog (collection extents)."""
        with _locks.named_lock(self.engine, self.url, self._memory_locks, name):
            yield

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

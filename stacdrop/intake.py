"""Intake: where every source enters, whatever found it (local inbox, S3 bucket, HTTP submission).

It decides in one place whether a source is new work: the same source with the same content (raster
bytes and sidecar) makes no second job; changed content makes a new job that updates the item. A job is
written to the ledger before its message goes on the bus; a crash in between leaves the job "new", and
``recover()`` puts it on the bus at the next start.

A source removed from the inbox, in a collection with ``on_delete = "unpublish"``, enters here too
(``submit_removal``): it becomes a job of its own (kind ``removal``, on the same source, so that the source's
history shows it and a file dropped there again is new work whatever its content) and a ``SourceRemoved``
on the publish queue, where the publisher unpublishes what the source's jobs published. A source that never
made a raster job makes no removal job.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import structlog

from stacdrop.bus.base import Bus
from stacdrop.ledger import REMOVAL_KIND, EventStatus, JobState, Ledger, Stage
from stacdrop.messages import (
    PROCESS_QUEUE,
    PUBLISH_QUEUE,
    CollectionUpdate,
    Envelope,
    IngestRequest,
    Refusal,
    Source,
    SourceRemoved,
)
from stacdrop.sidecar import SidecarDocument

log = structlog.get_logger("stacdrop.intake")
COLLECTION_PRIORITY = 9
# A removal overtakes items too: a file deleted and dropped again is unpublished before it is published again.
REMOVAL_PRIORITY = 9


def sha256_text(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


class Intake:
    def __init__(self, ledger: Ledger, bus: Bus) -> None:
        self.ledger = ledger
        self.bus = bus

    def submit_raster(
        self,
        *,
        source: Source,
        collection: str,
        sidecar: SidecarDocument | None,
        origin: str,
        priority: int,
        params: dict[str, Any] | None = None,
        refused: Refusal | None = None,
    ) -> tuple[str, bool]:
        """Create the job and enqueue it: ``(job id, True)``. When this exact content was already submitted,
        ``(the existing job's id, False)`` and nothing is enqueued (the HTTP API answers with that job).

        ``refused`` (a raster outside the inbox), or a sidecar that was judged invalid, makes a job that the
        processor fails at once with that reason; an invalid sidecar's text is not carried (only its size,
        sha256 and the reason)."""
        if refused is None and sidecar is not None and sidecar.error is not None:
            refused = Refusal(error_class=sidecar.error_class or "invalid_sidecar", error=sidecar.error)
        body = IngestRequest(
            source=source, collection=collection, sidecar_text=sidecar.text if sidecar else None,
            sidecar_name=sidecar.name if sidecar else None, sidecar_sha256=sidecar.sha256 if sidecar else None,
            sidecar_size=sidecar.size if sidecar else None, refused=refused,
        )
        sidecar_key = (sidecar.sha256 or f"unread-{sidecar.size}") if sidecar else "-"
        return self._submit(
            kind="raster", body=body, queue=PROCESS_QUEUE, content_key=f"{source.content_key}+{sidecar_key}",
            collection=collection, origin=origin, priority=priority, params=params,
        )

    def submit_collection(self, *, source: Source, collection: str, text: str, origin: str) -> str | None:
        body = CollectionUpdate(source=source, collection=collection, text=text)
        # Collections overtake items, so that items dropped together with their collection.json find it.
        job_id, new = self._submit(
            kind="collection", body=body, queue=PUBLISH_QUEUE, content_key=sha256_text(text) or "",
            collection=collection, origin=origin, priority=COLLECTION_PRIORITY, params=None,
        )
        return job_id if new else None

    def submit_removal(self, *, url: str, key: str, collection: str, origin: str) -> str | None:
        """The raster at ``url`` (inbox key ``key``) was removed from the inbox: a removal job and its
        ``SourceRemoved`` on the publish queue, returning the job's id; None when the source never made a
        raster job (nothing of it can be in the catalog)."""
        jobs = [j for j in self.ledger.jobs_of_source(url) if j.kind == "raster"]
        if not jobs:
            log.debug("removed source never submitted; nothing to unpublish", source=key)
            return None
        body = SourceRemoved(source=Source(url=url, key=key, content_key="removed"), collection=collection,
                             job_ids=[j.id for j in jobs if j.state == JobState.PUBLISHED])
        job_id, _new = self._submit(
            kind=REMOVAL_KIND, body=body, queue=PUBLISH_QUEUE, content_key=f"removed:{uuid.uuid4().hex}",
            collection=collection, origin=origin, priority=REMOVAL_PRIORITY, params=None,
        )
        return job_id

    def _submit(
        self,
        *,
        kind: str,
        body: IngestRequest | CollectionUpdate | SourceRemoved,
        queue: str,
        content_key: str,
        collection: str,
        origin: str,
        priority: int,
        params: dict[str, Any] | None,
    ) -> tuple[str, bool]:
        """``(job id, new)``; ``new`` is False when the same content already has a job past "new"."""
        source = body.source
        job, created = self.ledger.create_job(
            kind=kind, source=source.url, source_key=source.key, content_key=content_key,
            collection=collection, origin=origin, priority=priority, input_size=source.size,
            params={**(params or {}), "queue": queue, "request": body.model_dump(mode="json")},
        )
        if not created and job.state != JobState.NEW:
            log.debug("unchanged source, no new job", source=source.key, job_id=job.id)
            return job.id, False
        self._enqueue(job.id, queue, Envelope.wrap(job.id, body, priority))
        log.info(f"{kind} job submitted", job_id=job.id, source=source.key, collection=collection, origin=origin)
        return job.id, True

    def _enqueue(self, job_id: str, queue: str, envelope: Envelope) -> None:
        # A fixed message id per job and queue: a re-enqueue after a crash cannot make a second message.
        envelope = envelope.model_copy(update={"id": f"{job_id}-{queue}"})
        self.bus.publish(queue, envelope)
        self.ledger.record(job_id, stage=Stage.WATCH, step="queued", status=EventStatus.QUEUED, state=JobState.QUEUED,
                           message=f"on the {queue} queue")

    def recover(self) -> int:
        """Enqueue the jobs that were created but never reached the bus (a crash in between)."""
        count = 0
        for job in self.ledger.unqueued_jobs():
            queue = job.params["queue"]
            request = job.params["request"]
            body_type: type[IngestRequest | CollectionUpdate | SourceRemoved] = (
                IngestRequest if queue == PROCESS_QUEUE
                else SourceRemoved if request.get("kind") == "removed" else CollectionUpdate
            )
            body = body_type.model_validate(request)
            log.warning("job never reached the bus; enqueueing it now", job_id=job.id, source=job.source_key)
            self._enqueue(job.id, queue, Envelope.wrap(job.id, body, job.priority))
            count += 1
        return count

    # Watchers remember a cheap stat fingerprint per key to skip hashing unchanged files.
    def fingerprint(self, key: str) -> str | None:
        return self.ledger.fingerprint(key)

    def remember_fingerprint(self, key: str, fingerprint: str) -> None:
        self.ledger.remember_fingerprint(key, fingerprint)

    def forget_fingerprint(self, key: str) -> None:
        """The source at ``key`` was removed: forgotten, so a file that comes back there is read again."""
        self.ledger.forget_fingerprint(key)

    def iter_fingerprints(self, prefix: str = "", batch: int = 20000):  # noqa: ANN201
        """``(key, fingerprint)`` under ``prefix`` in binary key order, streamed (the S3 reconciler's join)."""
        return self.ledger.iter_fingerprints(prefix, batch)

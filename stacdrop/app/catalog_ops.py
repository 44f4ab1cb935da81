"""Changing the catalog by hand: pushing a collection and unpublishing an item, each recorded in the ledger.

These are the business rules of ``stacdrop collection push`` and ``stacdrop unpublish``, kept here (beside
stacdrop/app/deadletters.py) and not in the click commands, so the HTTP API can offer the same operations
with the same ledger trail. The rules:

- each run is its own ledger job (``hand_job``: a fresh content key, so running it again is new work), with
  the origin that asked for it;
- a collection push goes through the publisher's own ``publish_collection`` (the same checks as a
  collection.json dropped into the inbox); the job ends published, or failed with the error's class;
- an unpublish deletes the item from the sink and, when asked, the COGs the item's published jobs
  recorded; those jobs become ``unpublished`` (so dropping the same file again is new work, see
  ``Ledger.create_job``), and the unpublish job ends ``unpublished`` too. A failure of the sink or the
  store fails the unpublish job and leaves the published jobs as they are. The deleting and the marking are
  the publisher's (``publisher.delete_items_and_cogs``, ``publisher.mark_unpublished``), shared with the
  unpublishing of a source removed from the inbox.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from pathlib import Path

from publisher import delete_items_and_cogs, mark_unpublished, publish_collection
from stacdrop.app.components import open_sink, open_store
from stacdrop.config import Settings
from stacdrop.errors import ErrorClass, PermanentError, StacdropError
from stacdrop.ledger import EventStatus, Job, JobState, Ledger, Stage
from stacdrop.messages import CollectionUpdate, Source


class NotACollection(PermanentError):
    """The file is not JSON with a string ``"id"``: refused before any job is made."""

    error_class = ErrorClass.INVALID_COLLECTION


@dataclass
class CollectionFile:
    path: Path  # resolved
    text: str
    id: str


@dataclass
class CollectionPushed:
    collection: str
    action: str  # "created" or "updated"
    job_id: str


@dataclass
class Unpublished:
    message: str  # what was deleted, one note per thing, as recorded on the jobs
    job_id: str
    unpublished_jobs: list[str]  # the published jobs of the item, now unpublished


def hand_job(ledger: Ledger, kind: str, source: str, source_key: str, collection: str | None, *,
             origin: str = "cli") -> Job:
    """A ledger job for an operation run by hand (each run is its own job)."""
    job, _ = ledger.create_job(kind=kind, source=source, source_key=source_key,
                               content_key=f"{origin}:{uuid.uuid4().hex}", collection=collection, origin=origin,
                               priority=0)
    return job


def read_collection_file(file: str | Path) -> CollectionFile:
    """The collection in ``file``; ``NotACollection`` when it is not JSON with a string ``"id"`` (the
    publisher checks the rest when it is pushed)."""
    path = Path(file).resolve()
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        cid = json.loads(text).get("id")
    except (json.JSONDecodeError, AttributeError):
        cid = None
    if not isinstance(cid, str) or not cid:
        raise NotACollection(f"{file}: not a STAC collection with an \"id\"")
    return CollectionFile(path=path, text=text, id=cid)


def push_collection(settings: Settings, ledger: Ledger, collection: CollectionFile, *,
                    origin: str = "cli") -> CollectionPushed:
    """Create or update ``collection`` in the configured sink, as a job of its own. A ``StacdropError``
    (an invalid collection, the sink down) is recorded on the job (failed) and raised again."""
    path, text, cid = collection.path, collection.text, collection.id
    job = hand_job(ledger, "collection", str(path), path.name, cid, origin=origin)
    update = CollectionUpdate(source=Source(url=str(path), key=path.name,
                                            content_key=hashlib.sha256(text.encode()).hexdigest()),
                              collection=cid, text=text)
    try:
        with open_sink(settings, ledger) as sink:
            action = publish_collection(update, sink)
    except StacdropError as exc:
        ledger.record(job.id, stage=Stage.PUBLISH, step="collection", status=EventStatus.FAILED, state=JobState.FAILED,
                      error_class=exc.error_class, error=str(exc), message=str(exc))
        raise
    ledger.record(job.id, stage=Stage.PUBLISH, step="finished", status=EventStatus.SUCCEEDED, state=JobState.PUBLISHED,
                  message=f"collection {cid} {action}")
    return CollectionPushed(collection=cid, action=action, job_id=job.id)


def unpublish_item(settings: Settings, ledger: Ledger, collection_id: str, item_id: str, *,
                   delete_cog: bool = False, origin: str = "cli") -> Unpublished:
    """Delete ``collection_id/item_id`` from the catalog (and its COGs with ``delete_cog``), as the module
    docstring says. A ``StacdropError`` of the sink or the store is recorded on the job (failed) and raised
    again."""
    job = hand_job(ledger, "unpublish", f"stac:{collection_id}/{item_id}", f"{collection_id}/{item_id}",
                   collection_id, origin=origin)

    def failed(exc: StacdropError) -> None:
        ledger.record(job.id, stage=Stage.PUBLISH, step="unpublish", status=EventStatus.FAILED, state=JobState.FAILED,
                      item_id=item_id, error_class=exc.error_class, error=str(exc), message=str(exc))

    published = ledger.list_jobs(collection=collection_id, item_id=item_id, state=JobState.PUBLISHED, limit=1000)
    try:
        with open_sink(settings, ledger) as sink:
            notes = delete_items_and_cogs(sink, [(collection_id, item_id)], [j.cog_key for j in published],
                                          open_store(settings).delete if delete_cog else None)
    except StacdropError as exc:
        failed(exc)
        raise
    message = "; ".join(notes)
    mark_unpublished(ledger, published, message, job.id)
    ledger.record(job.id, stage=Stage.PUBLISH, step="finished", status=EventStatus.SUCCEEDED,
                  state=JobState.UNPUBLISHED, item_id=item_id, message=message)
    return Unpublished(message=message, job_id=job.id, unpublished_jobs=[j.id for j in published])

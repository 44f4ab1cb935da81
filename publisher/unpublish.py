"""Unpublishing: items deleted from the catalog, then their COGs from the store, and the jobs that published
them marked ``unpublished``.

The rules of ``stacdrop unpublish`` (stacdrop/app/catalog_ops.py) and of a source removed from the inbox
with ``on_delete = "unpublish"`` (publisher/handler.py) are the same, so they live here once, in the stage
that owns the sink:

- the items go first, then the COGs: no item is left pointing at a missing COG (a failure in between
  leaves a COG without an item, which a retry deletes);
- every write is idempotent (an item already gone is "not in the catalog", a missing COG is no error), so a
  retried or redelivered unpublish finishes what an earlier attempt began;
- the jobs that published the items become ``unpublished`` in one transaction (so dropping the same file
  again is new work, see ``Ledger.create_job``), each event naming what was deleted, why and by which job.

The publisher holds no store: the COGs are deleted through ``CogDeleter`` (the store's ``delete``, handed
in by the application), so this stage does not import the processor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from publisher.sink import Sink
from stacdrop.ledger import EventStatus, Job, JobState, Ledger, Record, Stage

# Removes one COG from the store by its key; no error when it is absent (processor.Store.delete).
CogDeleter = Callable[[str], None]


def delete_items_and_cogs(sink: Sink, items: Iterable[tuple[str, str]], cog_keys: Iterable[str | None],
                          delete_cog: CogDeleter | None) -> list[str]:
    """Delete each ``(collection, item id)`` from ``sink``, then (with ``delete_cog``) each COG key; one note
    per thing, in order. Errors of the sink or the store are raised as they come (nothing after them is
    done)."""
    notes = []
    for collection_id, item_id in dict.fromkeys(items):
        deleted = sink.delete_item(collection_id, item_id)
        notes.append(f"item {collection_id}/{item_id} {'deleted' if deleted else 'was not in the catalog'}")
    if delete_cog is not None:
        keys = list(dict.fromkeys(key for key in cog_keys if key))
        if not keys:
            notes.append("no COG deleted: no published job of this item records a store key")
        for key in keys:
            delete_cog(key)
            notes.append(f"COG {key} deleted")
    return notes


def mark_unpublished(ledger: Ledger, jobs: Iterable[Job], message: str, by_job_id: str) -> None:
    """Record the published ``jobs`` as ``unpublished`` by job ``by_job_id``, in one transaction."""
    ledger.record_many([
        Record(old.id, stage=Stage.PUBLISH, step="unpublished", status=EventStatus.UNPUBLISHED,
               message=f"{message} (job {by_job_id})", fields={"state": JobState.UNPUBLISHED})
        for old in jobs
    ])

"""The publisher stage on the bus: raster-ready and collection messages in, STAC items and collections out;
source-removed messages in, items and COGs deleted.

**A source removed from the inbox** (``SourceRemoved``, collections with ``on_delete = "unpublish"``; its
envelope carries the removal's own job) is unpublished here, by the rules of ``publisher.unpublish``: the
items of the source's published jobs are deleted from the sink, then their COGs from the store, and those
jobs become ``unpublished`` ("source removed from the inbox"); the removal job ends ``unpublished`` too.

The COGs are deleted here, with the store's ``delete`` handed in by the application (``delete_cog``), and
not by a second message to the processor: the item must go before its COG, and one handler doing both in
that order, retried as a whole (both deletions are idempotent), keeps that order through every retry and
redelivery without a second job state to track; the publisher still imports no processor module, it only
gets a callable.

**Versions not yet published when their source goes** (queued or being converted): the removal does not
wait for them and does not cancel them. One whose source is gone before it is read fails in the processor
(the source is missing); one already converted reaches the publisher, which skips it ("source removed from
the inbox") and deletes its COG, since a removal job of its source was created after it
(``Ledger.removed_after_many``). A source dropped again after its removal (a raster job created after the
removal job) is left alone by both: its new version overwrites the item and the COG, so nothing is deleted,
and the older published jobs are only marked ``unpublished``.
"""

from __future__ import annotations

from pathlib import Path

from publisher.sink import Sink
from publisher.stage import (
    PreparedItem,
    PublishResult,
    prepare_raster,
    publish_collection,
    publish_raster,
    put_prepared,
)
from publisher.unpublish import CogDeleter, delete_items_and_cogs, mark_unpublished
from stacdrop.config import Collections, StacApiSettings
from stacdrop.ledger import Job, JobState, Ledger
from stacdrop.messages import CollectionUpdate, Envelope, RasterReady, SourceRemoved
from stacdrop.runtime import BatchStageHandler, StageHandler, StageOutcome, StepRecorder


def open_sink(target: str, stac_api: StacApiSettings | None = None, ledger: Ledger | None = None) -> Sink:
    """The catalog ``target`` (the ``stac`` setting: a folder, or a STAC API reached with ``stac_api``).
    With ``ledger``, publishers in other processes and hosts that share it take turns on catalog
    read-modify-writes (see StacApiSink's ``shared_lock``)."""
    if target.startswith("http://") or target.startswith("https://"):
        from publisher.stac_api import StacApiSink  # noqa: PLC0415 - only needed with a STAC API

        return StacApiSink(target, stac_api, shared_lock=ledger.lock if ledger is not None else None)
    from publisher.static_catalog import StaticCatalog  # noqa: PLC0415

    return StaticCatalog(Path(target.removeprefix("file://")))


def make_publish_handler(collections: Collections, sink: Sink, ledger: Ledger,
                         delete_cog: CogDeleter | None = None) -> StageHandler:
    """``delete_cog``: the store's ``delete``, for the COGs of removed sources (without it they are kept)."""
    def handle(env: Envelope, job: Job, steps: StepRecorder) -> StageOutcome:
        body = env.parsed()
        if isinstance(body, CollectionUpdate):
            steps("collection")
            action = publish_collection(body, sink)
            return StageOutcome(state=JobState.PUBLISHED, step="finished",
                                message=f"collection {body.collection} {action}")
        if isinstance(body, SourceRemoved):
            steps("unpublish")
            return unpublish_removed(body, job, sink, ledger, delete_cog)
        assert isinstance(body, RasterReady), f"publish queue got a {env.kind} message"
        newer = ledger.newer_published(job)
        if newer is not None:
            return _superseded(newer)
        removal = ledger.removed_after_many([job]).get(job.id)
        if removal is not None:
            return _source_gone(body, job, removal, ledger, delete_cog)
        steps("publish")
        return _published(publish_raster(body, collections, sink))

    return handle


def _around(jobs: list[Job], removal_id: str) -> tuple[list[Job], list[Job]]:
    """The raster jobs of a source created before and after its removal job ``removal_id``."""
    at = next(i for i, j in enumerate(jobs) if j.id == removal_id)
    return [j for j in jobs[:at] if j.kind == "raster"], [j for j in jobs[at + 1:] if j.kind == "raster"]


def unpublish_removed(body: SourceRemoved, job: Job, sink: Sink, ledger: Ledger,
                      delete_cog: CogDeleter | None) -> StageOutcome:
    """Unpublish what the versions of a removed source published, as the module docstring says."""
    before, again = _around(ledger.jobs_of_source(body.source.url), job.id)
    published = [j for j in before if j.state == JobState.PUBLISHED]
    if again:
        notes = [f"dropped again since (job {again[-1].id}): its item and COG are left to it"]
    elif not published and not any(j.cog_key for j in before):
        notes = ["nothing of it was published"]
    else:
        items = [(j.collection, j.item_id) for j in published if j.collection and j.item_id]
        # Also the COGs of versions converted but not yet published: the publisher skips those.
        cogs = [j.cog_key for j in before if j.state != JobState.UNPUBLISHED]
        notes = delete_items_and_cogs(sink, items, cogs, delete_cog)
        if delete_cog is None:
            notes.append("COGs kept: this publisher was given no store")
    message = f"{body.reason}: {'; '.join(notes)}"
    mark_unpublished(ledger, published, message, job.id)
    return StageOutcome(state=JobState.UNPUBLISHED, step="finished", message=message)


def _source_gone(body: RasterReady, job: Job, removal_id: str, ledger: Ledger,
                 delete_cog: CogDeleter | None) -> StageOutcome:
    """A version whose source was removed after it was submitted: not published, its COG deleted (unless
    the source was dropped again since: the new version's COG may be at the same key)."""
    _, again = _around(ledger.jobs_of_source(job.source), removal_id)
    note = "COG kept"
    if delete_cog is not None and not again:
        delete_cog(body.cog.key)
        note = f"COG {body.cog.key} deleted"
    return StageOutcome(state=JobState.SKIPPED, step="finished",
                        message=f"source removed from the inbox (job {removal_id}): not published; {note}")


def _superseded(newer_job_id: str) -> StageOutcome:
    return StageOutcome(state=JobState.SKIPPED, step="finished",
                        message=f"superseded: job {newer_job_id} already published a newer version")


def _published(result: PublishResult) -> StageOutcome:
    return StageOutcome(
        state=JobState.PUBLISHED, step="finished", message=f"item {result.collection}/{result.item_id} {result.action}",
        fields=dict(item_id=result.item_id, collection=result.collection, item_bbox=result.item.get("bbox")),
    )


def make_publish_batch_handler(collections: Collections, sink: Sink, ledger: Ledger,
                               delete_cog: CogDeleter | None = None) -> BatchStageHandler:
    """Publish several raster-ready messages with one ``sink.put_items`` call per (collection, policy).

    Collection messages go through the single handler, before the items (an item may need its collection).
    Every entry gets its own result: an item the catalog rejects fails alone.
    """
    single = make_publish_handler(collections, sink, ledger, delete_cog)

    def handle(entries: list[tuple[Envelope, Job, StepRecorder]]) -> list[StageOutcome | Exception]:
        results: list[StageOutcome | Exception | None] = [None] * len(entries)
        prepared: list[tuple[int, PreparedItem]] = []
        newer = ledger.newer_published_many([job for _, job, _ in entries])
        removed = ledger.removed_after_many([job for _, job, _ in entries])
        for i, (env, job, steps) in enumerate(entries):
            try:
                body = env.parsed()
                if not isinstance(body, RasterReady):
                    results[i] = single(env, job, steps)
                    continue
                if job.id in newer:
                    results[i] = _superseded(newer[job.id])
                    continue
                if job.id in removed:
                    results[i] = _source_gone(body, job, removed[job.id], ledger, delete_cog)
                    continue
                steps("publish")
                prepared.append((i, prepare_raster(body, collections)))
            except Exception as exc:  # noqa: BLE001 - this entry's own failure
                results[i] = exc
        stored = put_prepared([p for _, p in prepared], sink)
        for (i, _), result in zip(prepared, stored, strict=True):
            results[i] = result if isinstance(result, Exception) else _published(result)
        return results  # type: ignore[return-value]

    return handle

"""The publisher stage on the bus: raster-ready and collection messages in, STAC items and collections out."""

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
from stacdrop.config import Collections, StacApiSettings
from stacdrop.ledger import Job, JobState, Ledger
from stacdrop.messages import CollectionUpdate, Envelope, RasterReady
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


def make_publish_handler(collections: Collections, sink: Sink, ledger: Ledger) -> StageHandler:
    def handle(env: Envelope, job: Job, steps: StepRecorder) -> StageOutcome:
        body = env.parsed()
        if isinstance(body, CollectionUpdate):
            steps("collection")
            action = publish_collection(body, sink)
            return StageOutcome(state=JobState.PUBLISHED, step="finished",
                                message=f"collection {body.collection} {action}")
        assert isinstance(body, RasterReady), f"publish queue got a {env.kind} message"
        newer = ledger.newer_published(job)
        if newer is not None:
            return _superseded(newer)
        steps("publish")
        return _published(publish_raster(body, collections, sink))

    return handle


def _superseded(newer_job_id: str) -> StageOutcome:
    return StageOutcome(state=JobState.SKIPPED, step="finished",
                        message=f"superseded: job {newer_job_id} already published a newer version")


def _published(result: PublishResult) -> StageOutcome:
    return StageOutcome(
        state=JobState.PUBLISHED, step="finished", message=f"item {result.collection}/{result.item_id} {result.action}",
        fields=dict(item_id=result.item_id, collection=result.collection, item_bbox=result.item.get("bbox")),
    )


def make_publish_batch_handler(collections: Collections, sink: Sink, ledger: Ledger) -> BatchStageHandler:
    """Publish several raster-ready messages with one ``sink.put_items`` call per (collection, policy).

    Collection messages go through the single handler, before the items (an item may need its collection).
    Every entry gets its own result: an item the catalog rejects fails alone.
    """
    single = make_publish_handler(collections, sink, ledger)

    def handle(entries: list[tuple[Envelope, Job, StepRecorder]]) -> list[StageOutcome | Exception]:
        results: list[StageOutcome | Exception | None] = [None] * len(entries)
        prepared: list[tuple[int, PreparedItem]] = []
        newer = ledger.newer_published_many([job for _, job, _ in entries])
        for i, (env, job, steps) in enumerate(entries):
            try:
                body = env.parsed()
                if not isinstance(body, RasterReady):
                    results[i] = single(env, job, steps)
                    continue
                if job.id in newer:
                    results[i] = _superseded(newer[job.id])
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

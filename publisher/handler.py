"""The publisher stage on the bus: raster-ready and collection messages in, STAC items and collections out."""

from __future__ import annotations

from pathlib import Path

from publisher.sink import Sink
from publisher.stage import publish_collection, publish_raster
from stacdrop.config import Settings
from stacdrop.ledger import PUBLISHED, SKIPPED, Job, Ledger
from stacdrop.messages import CollectionUpdate, Envelope, RasterReady
from stacdrop.runtime import StageHandler, StageOutcome, StepRecorder


def open_sink(settings: Settings) -> Sink:
    target = settings.stac
    if target.startswith("http://") or target.startswith("https://"):
        from publisher.stac_api import StacApiSink  # noqa: PLC0415 - only needed with a STAC API

        return StacApiSink(target, settings)
    from publisher.static_catalog import StaticCatalog  # noqa: PLC0415

    return StaticCatalog(Path(target.removeprefix("file://")))


def make_publish_handler(settings: Settings, sink: Sink, ledger: Ledger) -> StageHandler:
    def handle(env: Envelope, job: Job, steps: StepRecorder) -> StageOutcome:
        body = env.parsed()
        if isinstance(body, CollectionUpdate):
            steps("collection")
            action = publish_collection(body, sink)
            return StageOutcome(state=PUBLISHED, step="finished", message=f"collection {body.collection} {action}")
        assert isinstance(body, RasterReady), f"publish queue got a {env.kind} message"
        newer = ledger.newer_published(job)
        if newer is not None:
            return StageOutcome(state=SKIPPED, step="finished",
                                message=f"superseded: job {newer.id} already published a newer version")
        steps("publish")
        result = publish_raster(body, settings, sink)
        return StageOutcome(
            state=PUBLISHED, step="finished",
            message=f"item {result.collection}/{result.item_id} {result.action}",
            fields=dict(item_id=result.item_id, collection=result.collection),
        )

    return handle

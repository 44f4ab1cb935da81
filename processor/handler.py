"""The processor stage on the bus: an ingest message in, a raster-ready message out."""

from __future__ import annotations

import re
from pathlib import Path

from processor.stage import process_raster
from processor.store import Store
from stacdrop.config import Settings
from stacdrop.ledger import PUBLISHING, Job
from stacdrop.messages import PUBLISH_QUEUE, Envelope, IngestRequest
from stacdrop.runtime import StageHandler, StageOutcome, StepRecorder

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def make_process_handler(settings: Settings, store: Store, workdir: Path) -> StageHandler:
    workdir.mkdir(parents=True, exist_ok=True)

    def handle(env: Envelope, job: Job, steps: StepRecorder) -> StageOutcome:
        request = env.parsed()
        assert isinstance(request, IngestRequest), f"process queue got a {env.kind} message"
        ready = process_raster(request, settings, store, workdir=workdir, on_step=steps)
        # One fixed id per job: a conversion redone after a crash cannot queue a second publish message
        # on the embedded bus, and the publisher skips jobs that are already published on any bus.
        out = Envelope(id=f"{job.id}-publish", job_id=job.id, body=ready.model_dump(mode="json"),
                       priority=env.priority, history=env.history)
        content = request.source.content_key
        return StageOutcome(
            state=PUBLISHING,
            step="metadata",
            message=f"{'converted and ' if ready.converted else ''}stored as {ready.cog.key}",
            outputs=[(PUBLISH_QUEUE, out)],
            fields=dict(
                collection=ready.collection, input_sha256=content if _SHA256.match(content) else None,
                cog_href=ready.cog.href, cog_key=ready.cog.key, cog_sha256=ready.cog.sha256,
                cog_size=ready.cog.size,
            ),
        )

    return handle

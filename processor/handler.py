"""The processor stage on the bus: an ingest message in, a raster-ready message out."""

from __future__ import annotations

import re
from contextlib import nullcontext
from pathlib import Path

from processor.settings import ProcessorSettings
from processor.stage import process_raster
from processor.store import Store
from processor.workdir import remove_stale
from stacdrop import claims
from stacdrop.errors import PermanentError, TransientError
from stacdrop.ledger import Job, JobState, Ledger
from stacdrop.messages import PUBLISH_QUEUE, Envelope, IngestRequest
from stacdrop.runtime import StageHandler, StageOutcome, StepRecorder

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


# Transient check failures that, repeated the same way on the same input, are not going to go away.
_REPEAT_PERMANENT = ("cog_check_failed",)
_RETRY_SUFFIX = re.compile(r"\s*\(retry \d+ of \d+ in \d+s\)$")  # stacdrop.runtime appends it to job.error
_VOLATILE = re.compile(r"cog-\d+-[0-9a-f]{16}-|/[^\s:]*/|0x[0-9a-f]+|\d+")


def normalised(message: str | None) -> str:
    """A failure message without what differs between two attempts: temp paths, addresses, numbers."""
    text = _RETRY_SUFFIX.sub("", message or "")
    return _VOLATILE.sub("#", text).strip()


def make_process_handler(
    settings: ProcessorSettings, store: Store, workdir: Path, ledger: Ledger | None = None,
) -> StageHandler:
    """``ledger``, when given, holds the claim that keeps a second processor off a job being converted
    (a redelivery after the broker connection dropped mid-conversion); see stacdrop/claims.py."""
    workdir.mkdir(parents=True, exist_ok=True)
    # Leftovers of killed conversions (partial COGs, *.ovr.tmp) of processes that are gone; see the rule in
    # processor.workdir. Each attempt also removes its own prefix when it ends, whatever the outcome.
    remove_stale(workdir)

    def handle(env: Envelope, job: Job, steps: StepRecorder) -> StageOutcome:
        request = env.parsed()
        assert isinstance(request, IngestRequest), f"process queue got a {env.kind} message"
        try:
            with claims.holding(ledger, job.id, "process", stale_after=settings.claim_stale_after) if ledger \
                    else nullcontext():
                ready = process_raster(request, settings, store, workdir=workdir, on_step=steps)
        except TransientError as exc:
            # job.error_class / job.error hold the previous attempt's failure. The same check failing the
            # same way twice on the same input (the job's content key does not change) is deterministic.
            if (exc.error_class in _REPEAT_PERMANENT and job.error_class == exc.error_class
                    and normalised(job.error) == normalised(str(exc))):
                raise PermanentError(f"{exc} (the same failure twice on the same input: not retried)",
                                     error_class=exc.error_class) from None
            raise
        # One fixed id per job: a conversion redone after a crash cannot queue a second publish message
        # on the embedded bus, and the publisher skips jobs that are already published on any bus.
        out = Envelope(id=f"{job.id}-publish", job_id=job.id, body=ready.model_dump(mode="json"),
                       priority=env.priority, history=env.history)
        content = request.source.content_key
        return StageOutcome(
            state=JobState.PUBLISHING,
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

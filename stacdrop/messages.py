"""Message contracts between the stages.

Stages talk only through these messages on the bus:

    watcher  --IngestRequest-->   queue "process"  --> processor
    processor --RasterReady-->    queue "publish"  --> publisher
    watcher  --CollectionUpdate--> queue "publish" --> publisher
    watcher  --SourceRemoved-->   queue "publish"  --> publisher  (collections with on_delete = "unpublish")

Every message travels in an ``Envelope`` that carries the job id, the delivery attempt count and the
errors of earlier attempts, so a dead letter shows its whole history.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import IntEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from stacdrop.sidecar import Sidecar
from stacdrop.stac_terms import MediaType
from stacdrop.times import utcnow

PROCESS_QUEUE = "process"
PUBLISH_QUEUE = "publish"
QUEUES = (PROCESS_QUEUE, PUBLISH_QUEUE)


class Priority(IntEnum):
    """Live drops overtake a backfill of thousands; the buses order by this."""

    BACKFILL = 1
    LIVE = 5


class Source(BaseModel):
    """Where a raster (or collection file) comes from."""

    url: str = Field(description="Local absolute path, s3://bucket/key or http(s):// URL")
    key: str = Field(description="Path relative to the inbox root, '/'-separated; key templates read it")
    size: int | None = None
    content_key: str = Field(description="sha256 of the bytes (local) or the ETag (S3): what dedup compares")


class Refusal(BaseModel):
    """Why the intake refused a job's input before anything else read it: a file outside the inbox, an
    invalid sidecar. The processor fails the job with it on the first attempt."""

    error_class: str
    error: str = Field(description="One line naming the file and the reason; never the file's content")


class IngestRequest(BaseModel):
    """A raster to convert and store. Emitted by the watcher or the HTTP API."""

    kind: Literal["ingest"] = "ingest"
    source: Source
    collection: str = Field(description="Collection id from the inbox layout; the sidecar may override it")
    sidecar_text: str | None = Field(
        default=None, description="The sidecar JSON, parsed again by the processor; only a valid sidecar's text "
        "travels (an invalid one's could be anything: see ``refused``)",
    )
    sidecar_name: str | None = Field(default=None, description="Sidecar file name or URL, for error messages")
    sidecar_sha256: str | None = None
    sidecar_size: int | None = None
    refused: Refusal | None = None


class BandMetadata(BaseModel):
    data_type: str
    nodata: float | int | str | None = None
    scale: float | None = None
    offset: float | None = None
    unit: str | None = None
    description: str | None = None
    statistics: dict[str, float] | None = None
    spatial_resolution: float | None = None


class RasterMetadata(BaseModel):
    """What the publisher needs to know about a stored COG, read once by the processor."""

    width: int
    height: int
    count: int
    crs_epsg: int | None = None
    crs_wkt2: str | None = None
    transform: list[float] = Field(description="Affine coefficients a, b, c, d, e, f")
    bounds: list[float] = Field(description="left, bottom, right, top in the raster's CRS")
    bands: list[BandMetadata]
    tags: dict[str, str] = Field(default_factory=dict)
    has_mask: bool = False


class StoredObject(BaseModel):
    """A COG in the store."""

    href: str = Field(description="What the item's asset points at")
    key: str = Field(description="Store key (path under the store root)")
    size: int
    sha256: str
    media_type: str = MediaType.COG.value


class RasterReady(BaseModel):
    """A stored COG with everything the publisher needs to derive its item."""

    kind: Literal["raster"] = "raster"
    source: Source
    collection: str
    # Typed, so that the publisher reads checked fields instead of a dict. On the wire it is the same JSON
    # object as ever (Sidecar.model_dump): messages already in the queues, with a plain dict, still validate.
    sidecar: Sidecar | None = Field(default=None, description="The parsed sidecar: ids checked, datetimes "
                                    "normalised to RFC 3339 UTC")
    sidecar_name: str | None = None
    cog: StoredObject
    raster: RasterMetadata
    converted: bool = Field(default=True, description="False when the input already was a valid COG")


class CollectionUpdate(BaseModel):
    """A STAC Collection (``collection.json`` from the inbox) to create or update.

    The raw text travels so that a broken file ends as an error on its job, like any bad input.
    """

    kind: Literal["collection"] = "collection"
    source: Source
    collection: str = Field(description="Collection id from the inbox layout (the folder name)")
    text: str


class SourceRemoved(BaseModel):
    """A raster removed from the inbox (its file deleted or moved out, its object deleted from the bucket)
    in a collection with ``on_delete = "unpublish"``: the publisher unpublishes what its jobs published.

    The envelope's job is the removal's own job (kind ``removal``, on the same source as the raster's
    jobs); the jobs to unpublish are looked up again when it is handled (one may have been published since),
    ``job_ids`` are those the watcher saw at removal time, for the log."""

    kind: Literal["removed"] = "removed"
    source: Source = Field(description="The removed raster: its url and key (content_key is 'removed')")
    collection: str = Field(description="Collection id from the inbox layout (whose on_delete said so)")
    job_ids: list[str] = Field(default_factory=list, description="The source's published jobs at removal")
    reason: str = "source removed from the inbox"


MessageBody = IngestRequest | RasterReady | CollectionUpdate | SourceRemoved
_BODY_TYPES: dict[str, type[BaseModel]] = {
    "ingest": IngestRequest,
    "raster": RasterReady,
    "collection": CollectionUpdate,
    "removed": SourceRemoved,
}


class AttemptRecord(BaseModel):
    """One failed try at a message, kept on the envelope so a dead letter shows every attempt."""

    stage: str
    error_class: str
    error: str
    at: datetime = Field(default_factory=utcnow)
    replayed: bool = False
    # False for a try that failed because a dependency (the STAC API, the store) was down: it is kept in
    # the history but does not spend the message's retry budget (stacdrop/runtime.py, "outages").
    counted: bool = True


class Envelope(BaseModel):
    """What the bus carries: one body plus delivery bookkeeping."""

    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    job_id: str
    body: dict[str, Any]
    priority: int = Priority.LIVE
    attempts: int = Field(default=0, description="Failed attempts so far in the current round")
    history: list[AttemptRecord] = Field(default_factory=list)
    created_at: datetime = Field(default_factory=utcnow)

    @classmethod
    def wrap(cls, job_id: str, body: BaseModel, priority: int = Priority.LIVE) -> "Envelope":
        return cls(job_id=job_id, body=body.model_dump(mode="json"), priority=int(priority))

    @property
    def kind(self) -> str:
        return str(self.body.get("kind", ""))

    def parsed(self) -> MessageBody:
        """The typed body."""
        return _BODY_TYPES[self.kind].model_validate(self.body)  # type: ignore[return-value]

    @property
    def collection(self) -> str | None:
        return self.body.get("collection")

    def with_failure(self, stage: str, error_class: str, error: str, *, counted: bool = True) -> "Envelope":
        """A copy one failed attempt later, the error kept in the history. ``counted=False``: the attempt is
        in the history but the attempts count stays (a dependency outage is not the message's fault)."""
        record = AttemptRecord(stage=stage, error_class=error_class, error=error, counted=counted)
        attempts = self.attempts + 1 if counted else self.attempts
        return self.model_copy(update={"attempts": attempts, "history": [*self.history, record]})

    def for_replay(self) -> "Envelope":
        """Attempts start again from zero; the earlier attempts stay in the history, marked replayed."""
        history = [h.model_copy(update={"replayed": True}) for h in self.history]
        return self.model_copy(update={"attempts": 0, "history": history})

    def to_bytes(self) -> bytes:
        return self.model_dump_json().encode()

    @classmethod
    def from_bytes(cls, data: bytes | str) -> "Envelope":
        return cls.model_validate_json(data)

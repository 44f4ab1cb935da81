"""The modern API: jobs (submit, list, one with its history), queues, dead letters (list, replay), explain.

JSON shapes are the contract the status page codes against; response models publish them in /openapi.json.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from stacdrop.app.api.auth import require_read, require_write
from stacdrop.app.api.deps import ApiState, get_state
from stacdrop.app.api.submit import JsonBodyRoute, key_for, name_from_url, submit_url
from stacdrop.bus.base import DeadLetter, DeadLetterFilter
from stacdrop.app.deadletters import replay_dead_letters
from stacdrop.errors import StacdropError
from stacdrop.ledger import Event, Job, JobState, Stage
from stacdrop.times import parse_since, parse_time, utcnow
from stacdrop.sidecar import shown


class ErrorBody(BaseModel):
    detail: str = Field(description="What was wrong: the field or URL and the reason")


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in ((401, "Missing or wrong token"), (413, "Request body too large"),
                       (422, "Invalid request: the detail names the field and the reason"),
                       (503, "Writes disabled (no token configured) or a backend is unavailable"))
}



class JobSummary(BaseModel):
    id: str
    kind: str
    state: str
    stage: str
    step: str
    collection: str | None
    item_id: str | None
    source_key: str
    origin: str
    attempts: int
    error_class: str | None
    error: str | None
    created_at: str = Field(description="ISO 8601, UTC")
    updated_at: str
    finished_at: str | None
    duration_s: float = Field(description="finished_at (or now) - created_at, seconds")
    source: str = Field(description="The source URL or path, without user info or query")
    item_bbox: list[float] | None = Field(default=None, description="WGS84 bbox of the published item")


# One event of a job's history: the ledger's Event field for field, ``at`` as ISO 8601 text; job_event turns
# one into the other, and tests/app/test_api_jobs.py holds the two field lists equal. (No docstring: it
# would become the OpenAPI schema's description.)
class JobEvent(BaseModel):
    at: str
    stage: str
    step: str
    status: str
    attempt: int | None
    error_class: str | None
    message: str | None


def job_event(event: Event) -> dict[str, Any]:
    """The API's JSON of one ledger event (the fields of ``JobEvent``)."""
    return {**{f.name: getattr(event, f.name) for f in dataclasses.fields(Event)}, "at": event.at.isoformat()}


class JobDetail(JobSummary):
    events: list[JobEvent]


class JobList(BaseModel):
    jobs: list[JobSummary]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next (older) page; null at the end")


class QueueInfo(BaseModel):
    queue: str
    ready: int
    unacked: int | None = Field(description="null: the engine cannot tell (RabbitMQ without its management API)")
    retrying: int
    dead: int
    consumers: int | None
    publish_rate: float | None = Field(description="messages/s in, where the engine knows it")
    ack_rate: float | None


class QueueList(BaseModel):
    queues: list[QueueInfo]


class DeadLetterInfo(BaseModel):
    id: str
    queue: str
    job_id: str
    collection: str | None
    error_class: str
    error: str
    attempts: int
    dead_at: str


class DeadLetterList(BaseModel):
    dead_letters: list[DeadLetterInfo]


class ReplayRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ids: list[str] | None = Field(default=None, description="Dead letter ids; or filters below, or all")
    queue: Literal["process", "publish"] | None = None
    collection: str | None = None
    error_class: str | None = None
    since: str | None = Field(default=None, description="ISO date/time or a duration such as 2h")
    all: bool = Field(default=False, description="Every dead letter (with the filters)")
    dry_run: bool = False


class ReplayResponse(BaseModel):
    dry_run: bool
    matched: list[str]
    replayed: list[str]


class JobSubmission(BaseModel):
    """A raster by URL plus the sidecar fields (all optional where a key template supplies them)."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="http(s):// or s3:// URL of the raster", max_length=4096)
    collection: str = Field(max_length=256)
    key: str | None = Field(default=None, max_length=1024,
                            description="Path inside the collection folder that key templates read (default: "
                                        "the URL's file name)")
    id: str | None = None
    datetime: str | None = None
    start_datetime: str | None = None
    end_datetime: str | None = None
    title: str | None = None
    description: str | None = None
    properties: dict[str, Any] | None = None


class Explanation(BaseModel):
    id: str
    collection: str
    properties: dict[str, Any]
    asset_key: str
    provenance: dict[str, str] = Field(description="field -> the rule that produced it")
    needs_raster: list[str] = Field(description="Fields only the raster itself can give")
    notes: list[str]


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def job_summary(job: Job) -> dict[str, Any]:
    from stacdrop.redact import redact_url  # noqa: PLC0415

    end = job.finished_at or utcnow()
    return {
        "id": job.id, "kind": job.kind, "state": job.state, "stage": job.stage, "step": job.step,
        "collection": job.collection, "item_id": job.item_id, "source_key": job.source_key, "origin": job.origin,
        "attempts": job.attempts, "error_class": job.error_class, "error": job.error,
        "created_at": _iso(job.created_at), "updated_at": _iso(job.updated_at), "finished_at": _iso(job.finished_at),
        "duration_s": round(max(0.0, (end - job.created_at).total_seconds()), 3),
        "source": redact_url(job.source) if "://" in job.source else job.source,
        "item_bbox": job.item_bbox,
    }


def _since(value: str | None, name: str = "since") -> datetime | None:
    try:
        return parse_since(value)
    except ValueError:
        raise HTTPException(422, f"{name}: {shown(value)} is not a date, an ISO datetime or a duration like 2h "
                                 "(within the years 1 to 9999)") from None


def encode_cursor(job: Job) -> str:
    raw = json.dumps([job.created_at.isoformat(), job.id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        at, job_id = json.loads(raw)
        return parse_time(at), str(job_id)
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise HTTPException(422, "cursor: not a cursor this API returned (pass next_cursor as is)") from None


def _letter(d: DeadLetter) -> dict[str, Any]:
    return {"id": d.id, "queue": d.queue, "job_id": d.envelope.job_id, "collection": d.collection,
            "error_class": d.error_class, "error": d.error, "attempts": d.attempts, "dead_at": d.dead_at.isoformat()}


read = APIRouter(dependencies=[Depends(require_read)], responses=ERRORS)
write = APIRouter(dependencies=[Depends(require_write)], responses=ERRORS, route_class=JsonBodyRoute)


@read.get("/jobs", response_model=JobList, tags=["jobs"])
def list_jobs(
    state: JobState | None = None,
    stage: Stage | None = None,
    collection: str | None = None,
    error_class: str | None = None,
    since: str | None = Query(default=None, description="ISO date/time or a duration such as 2h"),
    limit: int = Query(default=50, ge=1, le=500),
    cursor: str | None = None,
    api: ApiState = Depends(get_state),
) -> dict[str, Any]:
    """Jobs, newest first, with cursor pagination."""
    before = decode_cursor(cursor) if cursor else None
    found = api.ledger.list_jobs(state=state, stage=stage, collection=collection, error_class=error_class,
                                 since=_since(since), before=before, limit=limit + 1)
    page = found[:limit]
    return {"jobs": [job_summary(j) for j in page],
            "next_cursor": encode_cursor(page[-1]) if len(found) > limit else None}


@read.get("/jobs/{job_id}", response_model=JobDetail, responses={404: {"model": ErrorBody}}, tags=["jobs"])
def get_job(job_id: str, api: ApiState = Depends(get_state)) -> dict[str, Any]:
    """One job with its full stage history (every step, attempt and error)."""
    job = api.ledger.get(job_id, with_events=True)
    if job is None:
        raise HTTPException(404, f"no job {job_id!r}")
    return {**job_summary(job), "events": [job_event(e) for e in job.events]}


@write.post("/jobs", response_model=JobSummary, status_code=202,
            responses={200: {"model": JobSummary, "description": "The same source and fields: the existing job"},
                       502: {"model": ErrorBody, "description": "The source's host is unreachable"}},
            tags=["jobs"])
def post_job(body: JobSubmission, response: Response, api: ApiState = Depends(get_state)) -> dict[str, Any]:
    """Submit a raster by URL with its sidecar fields. Validated at once: a 4xx and no job if anything is wrong."""
    fields = body.model_dump(exclude={"source", "key"}, exclude_none=True)
    name = body.key or name_from_url(body.source)
    sub = submit_url(api, url=body.source, key=key_for(body.collection, name), collection=body.collection,
                     fields=fields, what=f"POST /jobs {name}", params={"submitted": "POST /jobs"})
    if not sub.new:
        response.status_code = 200
    job = api.ledger.get(sub.job_id)
    assert job is not None
    return job_summary(job)


@read.get("/queues", response_model=QueueList, tags=["queues"])
def queues(api: ApiState = Depends(get_state)) -> dict[str, Any]:
    """Per stage queue: ready, unacked, retrying, dead, consumers and rates (null where the engine cannot tell)."""
    return {"queues": [s.__dict__ for s in api.bus.stats()]}


@read.get("/dead-letters", response_model=DeadLetterList, tags=["dead letters"])
def dead_letters(
    queue: Literal["process", "publish"] | None = None,
    collection: str | None = None,
    error_class: str | None = None,
    since: str | None = Query(default=None, description="ISO date/time or a duration such as 2h"),
    limit: int = Query(default=100, ge=1, le=1000),
    api: ApiState = Depends(get_state),
) -> dict[str, Any]:
    """Dead letters, oldest first."""
    where = DeadLetterFilter(queue=queue, collection=collection, error_class=error_class, since=_since(since))
    return {"dead_letters": [_letter(d) for d in api.bus.dead_letters(where, limit=limit)]}


@write.post("/dead-letters/replay", response_model=ReplayResponse, tags=["dead letters"])
def replay(body: ReplayRequest, api: ApiState = Depends(get_state)) -> dict[str, Any]:
    """Put dead letters back on their queue (by ids, or filters, or all); recorded on each job. dry_run: only match."""
    if not (body.ids or body.all or body.queue or body.collection or body.error_class or body.since):
        raise HTTPException(422, "name dead letter ids, or filters (queue, collection, error_class, since), "
                                 "or all: true")
    where = DeadLetterFilter(queue=body.queue, collection=body.collection, error_class=body.error_class,
                             since=_since(body.since), ids=list(body.ids or []))
    result = replay_dead_letters(api.bus, api.ledger, where, dry_run=body.dry_run)
    return {"dry_run": body.dry_run, "matched": [d.id for d in result.matched], "replayed": result.replayed}


@read.get("/explain", response_model=Explanation, tags=["explain"])
def explain(
    collection: str = Query(max_length=256),
    key: str = Query(max_length=1024, description="Path inside the collection folder, e.g. tas_06_2010.tif"),
    api: ApiState = Depends(get_state),
) -> dict[str, Any]:
    """The item a source at <collection>/<key> would get, field by field with its rule, without the raster."""
    from stacdrop.app.explain import explain_key  # noqa: PLC0415

    try:
        return explain_key(key, collection, api.settings)
    except StacdropError as exc:
        raise HTTPException(422, f"{exc} [{exc.error_class}]") from None


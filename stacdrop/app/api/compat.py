"""The original system's ingestion API, kept so its users' scripts keep working.

``POST /newitem`` takes its body (``collection_id, date, name, filename, stac_api_server, file_source_host,
properties``) and answers ``{"id", "msg": "received"}``; ``GET /status?id=`` answers
``{_id, _operation, _status, _param, _description}`` with its step names; ``GET /status/all`` the list,
newest first (paged by ``?limit=&offset=``, a ``Link: <...>; rel="next"`` header when there is more).
Differences on purpose: an unknown id is a 404 (it was a 500), bad input is refused at once (it failed in
the worker), writes need the token, and ``stac_api_server`` must name the configured destination.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from stacdrop.app.api.auth import require_read, require_write
from stacdrop.app.api.deps import ApiState, get_state
from stacdrop.app.api.jobs import ERRORS, ErrorBody, decode_cursor, encode_cursor
from stacdrop.app.api.submit import JsonBodyRoute, check_stac_server, key_for, submit_url
from stacdrop.ledger import Job, JobState

FINISHED = "PROCESS FINISHED"
# Our steps, and the original system's status step each one maps onto (GET /status compatibility).
ORIGINAL_STEPS = {
    "queued": "**pending**",
    "collection": "GETCOLLECTION",
    "fetch": "GETITEMFILE",
    "validate": "GETITEMFILE",
    "convert": "TRANF_COG",
    "store": "UPLOAD_COG_TO_SERVER",
    "metadata": "CREATEPYSTACITEM",
    "derive": "CREATEPYSTACITEM",
    "publish": "CREATEPYSTACITEM",
    "cleanup": "DELETEITEMFILE",
    "finished": FINISHED,
}
# Steps of ours ORIGINAL_STEPS does not name: where in the original pipeline they fall.
STAGE_STEPS = {"watch": "**pending**", "process": "GETITEMFILE", "publish": "CREATEPYSTACITEM"}


class NewItem(BaseModel):
    """The original system's body. Extra fields are ignored, as it did."""

    collection_id: str = Field(max_length=256)
    filename: str = Field(max_length=1024, description="Joined to file_source_host: the source URL")
    file_source_host: str = Field(max_length=4096, description="http(s):// or s3:// base of the file")
    name: str | None = Field(default=None, description="The item id (default: the file name without extension)")
    date: str | None = Field(default=None, description="The item datetime (start of the period)")
    stac_api_server: str | None = Field(default=None, description="Accepted only if it is the configured STAC API")
    properties: dict[str, Any] | None = None


class Received(BaseModel):
    id: str
    msg: Literal["received"]


class Status(BaseModel):
    id_: str = Field(alias="_id")
    operation: str = Field(alias="_operation", description="Current or failing step: **pending**, GETCOLLECTION, "
                           "GETITEMFILE, TRANF_COG, CREATEPYSTACITEM, UPLOAD_COG_TO_SERVER, DELETEITEMFILE, "
                           "PROCESS FINISHED")
    status: Literal["ok", "error"] = Field(alias="_status")
    param: dict[str, Any] = Field(alias="_param", description="What was submitted")
    description: str = Field(alias="_description")


def source_url(host: str, filename: str) -> str:
    """``file_source_host/filename``, as the original system joined them."""
    return host.rstrip("/") + "/" + filename.lstrip("/")


def original_step(job: Job) -> str:
    """The original system's name of the job's current step, or ours when it has none (``stacdrop job``)."""
    return ORIGINAL_STEPS.get(job.step, job.step)


def original_operation(job: Job) -> str:
    """``_operation`` of GET /status: the original's step, "PROCESS FINISHED" once the job is done."""
    if job.state in (JobState.PUBLISHED, JobState.SKIPPED, JobState.UNPUBLISHED):
        return FINISHED
    return ORIGINAL_STEPS.get(job.step) or STAGE_STEPS.get(job.stage, job.step)


def status_of(job: Job) -> dict[str, Any]:
    failed = job.state == JobState.FAILED
    if failed:
        description = f"{job.error_class}: {job.error}"
    elif job.state == JobState.PUBLISHED:
        description = f"item {job.collection}/{job.item_id} published" if job.item_id else "published"
    elif job.state == JobState.RETRYING:
        description = f"retrying after {job.error_class}: {job.error}"
    else:
        description = f"{job.state} ({job.stage}: {job.step})"
    param = job.params.get("newitem") or {"source": job.source_key, "collection": job.collection}
    return {"_id": job.id, "_operation": original_operation(job), "_status": "error" if failed else "ok",
            "_param": param, "_description": description}


router = APIRouter(tags=["original system"], responses=ERRORS, route_class=JsonBodyRoute)


@router.post("/newitem", response_model=Received, dependencies=[Depends(require_write)],
             responses={502: {"model": ErrorBody, "description": "The source's host is unreachable"}})
def newitem(body: NewItem, api: ApiState = Depends(get_state)) -> dict[str, Any]:
    """Submit ``file_source_host/filename`` as an item of ``collection_id`` (the original system's call)."""
    check_stac_server(api.settings, body.stac_api_server)
    url = source_url(body.file_source_host, body.filename)
    fields = {k: v for k, v in body.model_dump(include={"collection_id", "name", "date", "properties"}).items()
              if v is not None}
    submitted = submit_url(
        api, url=url, key=key_for(body.collection_id, body.filename), collection=body.collection_id,
        fields=fields, what=f"POST /newitem {body.filename}",
        params={"newitem": body.model_dump(exclude_none=True)},
    )
    return {"id": submitted.job_id, "msg": "received"}


@router.get("/status", response_model=Status, response_model_by_alias=True, dependencies=[Depends(require_read)],
            responses={404: {"model": ErrorBody}})
def status(id: str = Query(max_length=64), api: ApiState = Depends(get_state)) -> dict[str, Any]:  # noqa: A002
    """The job's current (or failing) step under the original system's names."""
    job = api.ledger.get(id)
    if job is None:
        raise HTTPException(404, f"no job with id {id!r}")
    return status_of(job)


@router.get("/status/all", response_model=list[Status], response_model_by_alias=True,
            dependencies=[Depends(require_read)])
def status_all(
    request: Request,
    response: Response,
    limit: int = Query(default=100, ge=1, le=1000),
    offset: int = Query(
        default=0, ge=0, le=100_000, description="Skip this many (the database still reads them: prefer the cursor)"
    ),
    cursor: str | None = Query(default=None, description="From the Link header of the previous page"),
    api: ApiState = Depends(get_state),
) -> list[dict[str, Any]]:
    """Every job's status, newest first (a JSON list, as the original); ``Link: rel="next"`` when there is more."""
    if cursor:
        found = api.ledger.list_jobs(before=decode_cursor(cursor), limit=limit + 1)
    else:
        found = api.ledger.list_jobs(limit=limit + 1, offset=offset)
    if len(found) > limit:
        # The next page by cursor: as fast at job 1,000,000 as at job 100 (offset reads every row it skips).
        nxt = request.url.remove_query_params("offset").include_query_params(limit=limit,
                                                                             cursor=encode_cursor(found[limit - 1]))
        response.headers["Link"] = f'<{nxt}>; rel="next"'
    return [status_of(j) for j in found[:limit]]

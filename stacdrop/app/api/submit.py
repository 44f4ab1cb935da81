"""Submissions by URL (``POST /newitem``, ``POST /jobs``): validated at once, then one job through the Intake.

Everything that can be known before the work starts is checked before a job exists, each failure a 4xx
naming the field or URL and the reason: the sidecar fields (the same parser as sidecar files), the
collection (it must exist in the catalog or be allowed to be created, as the publisher decides), the URL
(``check_source_url``: scheme, ``allowed_hosts``, no internal addresses, no ambiguous authority) and the
source itself (a HEAD through ``open_source_url``, the processor's own client: every redirect hop checked,
connections pinned to the checked addresses; 404 means no job). The HEAD also gives the content key (ETag,
else size and Last-Modified), so submitting the same file with the same fields twice returns the first job.
"""

from __future__ import annotations

import json
import posixpath
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute

from stacdrop.app.api.deps import ApiState
from stacdrop.config import Settings
from stacdrop.errors import HostUnreachable, StacdropError
from stacdrop.messages import Priority, Source
from stacdrop.sidecar import SidecarDocument, check_id, load_json, sidecar_from_dict
from stacdrop.urls import check_source_url, open_source_url, redact_url

HEAD_TIMEOUT = (5, 15)  # connect, read


@dataclass
class SourceHead:
    size: int | None
    content_key: str | None


@dataclass
class Submitted:
    job_id: str
    new: bool


class JsonBodyRoute(APIRoute):
    """A route whose JSON request body is parsed by the sidecar rules first (``stacdrop.sidecar.load_json``):
    nesting too deep, NaN/Infinity, lone surrogates, integers too long, bad UTF-8 are a 422 with a one-line
    reason. FastAPI's own parser answers those with a 400 (or lets them through, to fail later as a 500)."""

    def get_route_handler(self):  # noqa: ANN201 - Starlette's handler type
        handle = super().get_route_handler()

        async def checked(request: Request) -> Response:
            body = await request.body()  # cached on the request: FastAPI reads the same bytes after us
            content_type = request.headers.get("content-type", "")
            if body and (not content_type or "json" in content_type):
                try:
                    load_json(body, "request body")
                except StacdropError as exc:
                    raise HTTPException(422, str(exc)) from None
            return await handle(request)

        return checked


def _unreachable(url: str, why: str) -> HTTPException:
    return HTTPException(502, f"source {redact_url(url)}: {why}; nothing was submitted, try again later")


def head_source(url: str, settings: Settings) -> SourceHead:
    """HEAD the source through the one HTTP client of source URLs (``open_source_url``: every hop checked,
    connections pinned to checked addresses). Raises HTTPException 422 (missing, forbidden, unsafe, too
    large) or 502 (the source's host is down: the caller may retry)."""
    if url.startswith("s3://"):
        return _head_s3(url, settings)
    import requests  # noqa: PLC0415

    try:
        with open_source_url(url, settings.limits.allowed_hosts, "HEAD", timeout=HEAD_TIMEOUT) as resp:
            if resp.status_code not in (405, 501):
                return _judge_head(resp)
        # A server without HEAD: the headers of a GET, no body.
        with open_source_url(url, settings.limits.allowed_hosts, "GET", timeout=HEAD_TIMEOUT, stream=True) as resp:
            return _judge_head(resp)
    except HostUnreachable as exc:
        raise _unreachable(url, exc.reason) from None
    except StacdropError as exc:  # UnsafeURL at some hop, TooManyRedirects
        raise HTTPException(422, f"source URL refused: {exc}") from None
    except requests.RequestException as exc:
        raise HTTPException(422, f"source {redact_url(url)}: {type(exc).__name__}") from None


def _judge_head(resp: Any) -> SourceHead:
    status = resp.status_code
    shown = redact_url(resp.url)
    if status in (404, 410):
        raise HTTPException(422, f"source {shown} not found (HTTP {status})")
    if status in (401, 403):
        raise HTTPException(422, f"source {shown}: access denied (HTTP {status})")
    if status >= 500 or status in (408, 429):
        raise _unreachable(resp.url, f"HTTP {status}")
    if status >= 400:
        raise HTTPException(422, f"source {shown}: HTTP {status}")
    length = resp.headers.get("Content-Length")
    size = int(length) if length and length.isdigit() else None
    return SourceHead(size=size, content_key=_content_key(resp.headers.get("ETag"), size,
                                                          resp.headers.get("Last-Modified")))


def _head_s3(url: str, settings: Settings) -> SourceHead:
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    from stacdrop.s3 import S3Failure, classify_s3_error, parse_s3_url, s3_client  # noqa: PLC0415

    _check_url(url, settings)
    bucket, key = parse_s3_url(url)
    try:
        client = s3_client(settings.s3)
    except StacdropError as exc:  # no credentials configured: the operator's to fix, named in the answer
        raise HTTPException(422, f"source {redact_url(url)}: {exc}") from None
    try:
        head = client.head_object(Bucket=bucket, Key=key)
    except (ClientError, BotoCoreError) as exc:
        problem = classify_s3_error(exc)
        assert problem is not None  # every botocore error has a reading
        if problem.failure in (S3Failure.NOT_FOUND, S3Failure.NO_BUCKET):
            raise HTTPException(422, f"source {url} not found ({problem.code or 'HTTP 404'})") from None
        if problem.failure in (S3Failure.FORBIDDEN, S3Failure.NO_CREDENTIALS):
            raise HTTPException(422, f"source {url}: {problem.reason}") from None
        raise _unreachable(url, f"S3 error {problem.reason}") from None
    size = head.get("ContentLength")
    return SourceHead(size=size, content_key=_content_key(head.get("ETag"), size, None))


def _check_url(url: str, settings: Settings) -> None:
    try:
        check_source_url(url, settings.limits.allowed_hosts)
    except StacdropError as exc:
        raise HTTPException(422, f"source URL refused: {exc}") from None


def _content_key(etag: str | None, size: int | None, last_modified: str | None) -> str | None:
    """What identifies this version of the source; None when the server says nothing usable."""
    if etag:
        return "etag:" + etag.removeprefix("W/").strip('"')
    if size is not None and last_modified:
        return f"size:{size}+modified:{last_modified}"
    return None


def check_collection(state: ApiState, collection: str, field: str) -> None:
    """The collection must exist in the catalog, or its settings must allow creating it (the publisher's rule)."""
    try:
        check_id(collection, field, "request body")
        if state.settings.collection(collection).create_if_missing:
            return
        exists = state.sink().has_collection(collection)
    except StacdropError as exc:
        raise HTTPException(422, str(exc)) from None
    if not exists:
        raise HTTPException(
            422,
            f"{field}: unknown collection {collection!r}: it is not in the catalog and its settings do not allow "
            f"creating it. Create it first (stacdrop collection push, or a collection.json in the inbox), or set "
            f"create_if_missing = true under [collections.{collection}]",
        )


def check_stac_server(settings: Settings, value: str | None) -> None:
    """``stac_api_server`` of the original /newitem: accepted only when it names the configured destination.
    stacdrop never publishes to a server a request names."""
    if not value:
        return
    configured = settings.stac
    if _normalise_server(value) != _normalise_server(configured):
        allowed = configured if configured.startswith(("http://", "https://")) else f"(a static catalog: {configured})"
        raise HTTPException(
            422, f"stac_api_server {redact_url(value)!r} is not the STAC destination of this stacdrop; the only "
                 f"one allowed is {allowed} (or omit stac_api_server)",
        )


def _normalise_server(url: str) -> str:
    try:
        parts = urlsplit(url.strip())
    except ValueError:
        return url
    if parts.scheme not in ("http", "https"):
        return url.strip().rstrip("/")
    port = parts.port
    default = {"http": 80, "https": 443}[parts.scheme]
    host = (parts.hostname or "") + (f":{port}" if port and port != default else "")
    return f"{parts.scheme}://{host}{parts.path.rstrip('/')}"


def parse_fields(fields: dict[str, Any], what: str, settings: Settings | None = None, collection: str = "") -> str:
    """Validate sidecar fields with the sidecar parser; returns the sidecar text the processor will read."""
    try:
        sidecar_from_dict(fields, what, settings.collection_settings if settings else None, collection)
    except StacdropError as exc:
        raise HTTPException(422, str(exc)) from None
    # Sorted keys: the same fields give the same text, hence the same content key (a resubmission dedups).
    return json.dumps(fields, sort_keys=True, ensure_ascii=False)


def key_for(collection: str, name: str) -> str:
    """The Source key key templates read: ``<collection>/<path>``, like a file in ``inbox/<collection>/``."""
    path = posixpath.normpath("/" + name).lstrip("/")
    if not path or path == ".":
        raise HTTPException(422, f"no file name in {name!r}")
    return f"{collection}/{path}"


def name_from_url(url: str) -> str:
    if url.startswith("s3://"):
        return url.rsplit("/", 1)[-1]
    try:
        return unquote(urlsplit(url).path.rsplit("/", 1)[-1])
    except ValueError:
        return ""


def submit_url(
    state: ApiState,
    *,
    url: str,
    key: str,
    collection: str,
    fields: dict[str, Any],
    what: str,
    params: dict[str, Any],
) -> Submitted:
    """Validate everything, HEAD the source, submit one raster job. ``fields`` are the sidecar fields."""
    settings = state.settings
    sidecar_text = parse_fields(fields, what, settings, collection)
    _check_url(url, settings)  # before anything that does I/O for the request
    check_collection(state, collection, "collection_id" if "collection_id" in fields else "collection")
    head = head_source(url, settings)
    if head.size is not None and head.size > settings.limits.max_source_bytes:
        raise HTTPException(422, f"source {redact_url(url)} is {head.size} bytes, more than max_source_bytes "
                                 f"({settings.limits.max_source_bytes})")
    # No ETag and no Last-Modified: nothing tells two versions apart, so every submission is new work.
    content_key = head.content_key or f"unversioned:{uuid.uuid4().hex}"
    source = Source(url=url, key=key, size=head.size, content_key=content_key)
    try:
        job_id, new = state.intake.submit_raster(
            source=source, collection=collection, sidecar=SidecarDocument.valid(what, sidecar_text), origin="http",
            priority=int(Priority.LIVE), params=params,
        )
    except Exception as exc:  # noqa: BLE001 - the broker or the ledger is down: the client should retry
        # A job written before the failure stays "new"; the same request again finds it and queues it.
        # Only the type: the text of a driver's error may carry a broker or database URL with its password.
        raise HTTPException(503, f"could not queue the job (broker or ledger unavailable: {type(exc).__name__}); "
                                 "retry the request") from None
    return Submitted(job_id=job_id, new=new)

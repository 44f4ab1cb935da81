"""Bring a source to a local path the converter can read.

- a local absolute path (or ``file://``): used in place, nothing to clean up, and only when its real path
  is inside the local inbox of the settings (``stacdrop.containment``: a message naming a file elsewhere,
  or a symlink leading out, is ``OutsideInbox``, whoever wrote the message);
- ``s3://bucket/key``: GET from the configured S3 endpoint, streamed to a temporary file in the workdir;
- ``http(s)://``: streamed the same way through ``stacdrop.urls.open_source_url``, the one HTTP client of
  source URLs (shared with the API's HEAD): every hop checked and its connection pinned to a checked address.

Every URL passes the policy of ``stacdrop.urls`` (scheme, allowed_hosts, no internal addresses, no
ambiguous authority).
Downloads stop at ``max_source_bytes`` (``[limits]``). Transient failures (connection errors, timeouts, 5xx,
429) are retried in-process a few times, then raised as ``TransientError`` (the job is retried later);
404/410 is ``SourceNotFound`` and 401/403 ``SourceForbidden``, both permanent. Messages name the URL
without user info or query string. The temporary file is removed when the ``with`` block ends.

Download-then-convert was measured against GDAL reading the source remotely (/vsis3/, /vsicurl/) for a
COG conversion: see ``bench/bench_fetch.py`` and the README.
"""

from __future__ import annotations

import os
import posixpath
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlparse

from stacdrop.containment import local_inbox_root, open_inbox_file
from stacdrop.errors import ConfigError, ErrorClass, HostUnreachable, OutsideInbox, PermanentError, SourceNotFound
from processor.settings import SourceAccess
from stacdrop.s3 import S3Failure, classify_s3_error
from stacdrop.urls import check_source_url, open_source_url, parse_source_url, redact_url

from processor.errors import SourceForbidden, SourceTooLarge, SourceUnavailable

ATTEMPTS = 3
BACKOFF = 0.5
CHUNK = 4 << 20
TIMEOUT = (10, 60)  # connect, read (seconds without a byte)
T = TypeVar("T")


class _Retry(Exception):
    """A transient failure of one attempt; ``outage``: the host did not answer, or said it is down."""

    def __init__(self, message: str, *, outage: bool = False) -> None:
        super().__init__(message)
        self.outage = outage


_OUTAGE_STATUS = (429, 502, 503, 504)


def _with_retries(what: str, attempt: Callable[[], T], attempts: int = ATTEMPTS) -> T:
    last = _Retry("")
    for n in range(attempts):
        try:
            return attempt()
        except _Retry as exc:
            last = exc
            if n + 1 < attempts:
                time.sleep(BACKOFF * 2**n)
    raise SourceUnavailable(f"{what}: {last} (after {attempts} attempts)", outage=last.outage)


def _temp_path(workdir: Path, url_path: str) -> Path:
    name = posixpath.basename(unquote(url_path)) or "source"
    ext = posixpath.splitext(name)[1][:10] or ".tif"
    return Path(workdir) / f"src-{uuid.uuid4().hex[:16]}{ext}"


def _limit(access: SourceAccess) -> int:
    return access.limits.max_source_bytes


def _too_large(shown: str, size: int, limit: int) -> SourceTooLarge:
    return SourceTooLarge(f"{shown}: the source is {size} bytes, more than max_source_bytes ({limit})")


def _copy(chunks: Iterator[bytes], dest: Path, shown: str, limit: int) -> int:
    size = 0
    with open(dest, "wb") as f:
        for chunk in chunks:
            size += len(chunk)
            if size > limit:
                raise _too_large(shown, size, limit)
            f.write(chunk)
    return size


def _unlink(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


# -- S3 -----------------------------------------------------------------------------------------------


def _download_s3(url: str, dest: Path, access: SourceAccess) -> None:
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    from stacdrop.s3 import parse_s3_url, s3_client  # noqa: PLC0415

    bucket, key = parse_s3_url(url)
    shown = redact_url(url)
    client = s3_client(access.s3)
    limit = _limit(access)

    def attempt() -> None:
        try:
            resp = client.get_object(Bucket=bucket, Key=key)
            length = int(resp.get("ContentLength") or 0)
            if length > limit:
                resp["Body"].close()
                raise _too_large(shown, length, limit)
            _copy(resp["Body"].iter_chunks(CHUNK), dest, shown, limit)
        except (ClientError, BotoCoreError, OSError) as exc:
            problem = classify_s3_error(exc)
            if problem is None:
                raise
            if problem.failure in (S3Failure.NOT_FOUND, S3Failure.NO_BUCKET):
                raise SourceNotFound(f"{shown}: source not found ({problem.code or 'HTTP 404'})") from None
            if problem.failure is S3Failure.FORBIDDEN:
                raise SourceForbidden(f"{shown}: {problem.reason}") from None
            if problem.failure is S3Failure.NO_CREDENTIALS:
                raise ConfigError(f"{shown}: {problem.reason}") from None
            if problem.retryable:
                raise _Retry(problem.reason, outage=problem.outage) from None
            raise PermanentError(
                f"{shown}: cannot read: {problem.reason}", error_class=ErrorClass.SOURCE_ERROR
            ) from None

    _with_retries(shown, attempt)


# -- HTTP ---------------------------------------------------------------------------------------------


def _download_http(url: str, dest: Path, access: SourceAccess) -> None:
    import requests  # noqa: PLC0415

    limit = _limit(access)
    shown = redact_url(url)

    def attempt() -> None:
        try:
            with open_source_url(url, access.limits.allowed_hosts, "GET", timeout=TIMEOUT, stream=True) as resp:
                where = redact_url(resp.url)
                status = resp.status_code
                if status in (404, 410):
                    raise SourceNotFound(f"{where}: source not found (HTTP {status})")
                if status in (401, 403):
                    raise SourceForbidden(f"{where}: access denied (HTTP {status})")
                if status >= 500 or status in (408, 429):
                    raise _Retry(f"HTTP {status}", outage=status in _OUTAGE_STATUS)
                if status != 200:
                    raise PermanentError(f"{where}: unexpected HTTP {status}", error_class=ErrorClass.SOURCE_ERROR)
                length = resp.headers.get("Content-Length")
                if length and length.isdigit() and int(length) > limit:
                    raise _too_large(where, int(length), limit)
                try:
                    size = _copy(resp.iter_content(CHUNK), dest, where, limit)
                except (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError) as exc:
                    raise _Retry(f"{type(exc).__name__} while downloading") from None
                if length and length.isdigit() and size != int(length):
                    raise _Retry(f"short download: {size} of {length} bytes")
        except HostUnreachable as exc:
            raise _Retry(exc.reason, outage=True) from None

    _with_retries(shown, attempt)


# -- entry point --------------------------------------------------------------------------------------


@contextmanager
def fetch_source(url: str, workdir: Path, access: SourceAccess | None = None, *,
                 name: str | None = None) -> Iterator[str]:
    """Yield a local path for ``url`` (see the module docstring). A downloaded copy is removed after.
    ``name`` (the inbox-relative key) is what errors about a local file name."""
    if url.startswith(("s3://", "http://", "https://")):
        if access is None:
            raise ConfigError(f"{redact_url(url)}: sources by URL need the settings (allowed_hosts, S3)")
        if url.startswith("s3://"):
            check_source_url(url, access.limits.allowed_hosts)
            name = urlparse(url).path
        else:  # every hop is checked where it is requested; its name comes from the URL as parsed
            name = urlparse(parse_source_url(url).url).path
        dest = _temp_path(Path(workdir), name)
        try:
            if url.startswith("s3://"):
                _download_s3(url, dest, access)
            else:
                _download_http(url, dest, access)
            yield str(dest)
        finally:
            _unlink(dest)
        return
    if url.startswith("file://"):
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(f"{url}: file:// URLs must point at this machine")
        path = unquote(parsed.path)
    elif "://" in url:
        check_source_url(url)  # raises: scheme not allowed
        raise ConfigError(f"{redact_url(url)}: unsupported source URL")
    else:
        path = url
    if not os.path.isabs(path):
        raise ConfigError(f"{url}: a local source must be an absolute path")
    shown = name or url
    if access is None or access.inbox is None:
        raise ConfigError(f"{shown}: local sources need the settings (the inbox they must be inside)")
    root = local_inbox_root(access.inbox)
    if root is None:
        raise OutsideInbox(f"{shown}: refused: a local file, but the inbox is not a local folder ({access.inbox.path})")
    try:
        fd, real = open_inbox_file(root, path, shown)
    except FileNotFoundError:
        raise SourceNotFound(f"{shown}: source file not found (moved or deleted before processing)") from None
    # The descriptor stays open while the file is converted: the checked inode cannot be freed and reused.
    try:
        yield real
    finally:
        os.close(fd)

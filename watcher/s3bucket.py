"""The S3 inbox's bucket access: every request it makes to the object store, and the key arithmetic.

Keys relative to the inbox prefix have the local inbox's shape (``<collection-id>/.../NAME.tif``); the
fingerprint of an object (``"<etag>:<size>"``) is remembered under ``s3://bucket/<key>`` (``ns`` + the
relative key). Requests are retried until they go through (the store may be down for a while); a 404 is
an answer, not a failure, and stop ends the wait (``watcher.submission.Stopped``).

Kept apart from the threads that use it (``watcher.s3feeds``' resolver, the reconciler and the worker
of ``watcher.s3``) so that what is asked of the store, and how often, reads in one place: one HEAD per
event key, one listing of ``<stem>.`` per raster or sidecar, paginated ListObjectsV2 for a reconcile
pass (merge-joined with the ledger's fingerprints by ``watcher.s3reconcile``), one GET per sidecar or
collection file, never more than the limit read.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import structlog

from stacdrop.s3 import S3Failure, classify_s3_error, parse_s3_url
from watcher.naming import classify, stem
from watcher.s3reconcile import Group, Obj, group_siblings, merge_diff
from watcher.submission import Stopped

log = structlog.get_logger("stacdrop.watcher.s3")


def etag(value: str | None) -> str:
    """An ETag without its quotes."""
    return (value or "").strip('"')


def not_found(exc: Exception) -> bool:
    """Whether an S3 error says the object (or the bucket) is not there."""
    problem = classify_s3_error(exc)
    return problem is not None and problem.failure is S3Failure.NOT_FOUND


class S3Bucket:
    """The inbox's bucket and prefix, reached through ``client`` (boto3's S3 client)."""

    def __init__(self, url: str, client: Any, stop: Callable[[], threading.Event]) -> None:
        self.bucket, prefix = parse_s3_url(url)
        prefix = prefix.strip("/")
        self.prefix = prefix + "/" if prefix else ""
        self.ns = f"s3://{self.bucket}/{self.prefix}"  # fingerprint keys: ns + relative key
        self.client = client
        self.stop = stop  # read at each use: the inbox gets its stop event only in run()

    # ------------------------------------------------------------------ keys

    def rel_of(self, key: str) -> str | None:
        """The relative key of a full key, None when it is outside the prefix or not an inbox file."""
        if not key.startswith(self.prefix):
            return None
        rel = key[len(self.prefix):]
        return rel if rel and classify(rel) is not None else None

    def key_of(self, rel: str) -> str:
        return self.prefix + rel

    def url_of(self, rel: str) -> str:
        return f"s3://{self.bucket}/{self.key_of(rel)}"

    # ------------------------------------------------------------------ requests

    def retrying(self, what: str, fn: Callable[[], Any]) -> Any:
        """Call an S3 request until it goes through (the store may be down); stop ends the wait."""
        delay = 1.0
        while True:
            try:
                return fn()
            except Exception as exc:
                if not_found(exc):
                    raise
                log.warning("s3 request failed; retrying", what=what, error=repr(exc), retry_in=delay)
                if self.stop().wait(delay):
                    raise Stopped() from None
                delay = min(delay * 2, 60.0)

    def head(self, key: str) -> Obj | None:
        """The object at a full key as it is now; None when it is not there."""
        rel = key[len(self.prefix):]
        try:
            resp = self.retrying(f"HEAD {key}", lambda: self.client.head_object(Bucket=self.bucket, Key=key))
        except Exception as exc:
            if not_found(exc):
                return None
            raise
        return Obj(rel, etag(resp.get("ETag")), int(resp.get("ContentLength", 0)))

    def list_objects(self, prefix: str, counts: dict[str, int] | None = None) -> Iterator[Obj]:
        """Objects under ``prefix`` (a full key prefix) in key order, relative to the inbox prefix;
        ``counts["listed"]``, when given, counts them page by page."""
        token = None
        cut = len(self.prefix)
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": 1000}
            if token:
                kwargs["ContinuationToken"] = token
            resp = self.retrying(f"LIST {prefix}", functools.partial(self.client.list_objects_v2, **kwargs))
            contents = resp.get("Contents", [])
            if counts is not None:
                counts["listed"] += len(contents)
            # A reconcile pass makes a million of these: no per-key helper calls.
            for item in contents:
                yield Obj(item["Key"][cut:], (item.get("ETag") or "").strip('"'), int(item.get("Size", 0)))
            token = resp.get("NextContinuationToken")
            if not resp.get("IsTruncated") or not token:
                return

    def siblings(self, obj: Obj) -> tuple[Obj, ...]:
        """The other rasters and sidecars of a raster's or sidecar's stem (one listing of ``<stem>.``), so
        that a sidecar finds a raster emitted long ago and a raster its unchanged sidecar."""
        if classify(obj.rel) not in ("raster", "sidecar"):
            return ()
        mine = stem(obj.rel)
        return tuple(
            o for o in self.list_objects(self.key_of(mine) + ".")
            if o.rel != obj.rel and stem(o.rel) == mine and classify(o.rel) in ("raster", "sidecar")
        )

    def get(self, rel: str, limit: int) -> tuple[bytes | None, Obj]:
        """The object's bytes (None when larger than ``limit``) and its ETag/size as read."""
        key = self.key_of(rel)
        resp = self.retrying(f"GET {key}", lambda: self.client.get_object(Bucket=self.bucket, Key=key))
        body = resp["Body"]
        try:
            size = int(resp.get("ContentLength", 0))
            data = body.read(limit + 1) if size <= limit else None
        finally:
            body.close()
        if data is not None and len(data) > limit:
            data = None
        return data, Obj(rel, etag(resp.get("ETag")), size)

    # ------------------------------------------------------------------ reconciler, listing side

    def changes(self, known: Iterable[tuple[str, str]], counts: dict[str, int]) -> Iterator[Group | str]:
        """The whole prefix listed and merge-joined with ``known`` (the remembered ``(full key,
        fingerprint)`` pairs under ``ns``, in binary key order): groups of new or changed objects with the
        siblings pairing needs, and the relative keys gone. ``counts["listed"]`` counts the listing.
        Raises ``watcher.s3reconcile.OrderError`` when a side is not sorted."""

        cut = len(self.ns)
        relative = ((key[cut:], fp) for key, fp in known)
        return group_siblings(merge_diff(self.list_objects(self.prefix, counts), relative))

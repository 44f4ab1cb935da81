"""What the local inbox and the S3 inbox share once a file is found: the intake they submit to, the
worker loop that submits paired files and retries failed submissions, and the judging of sidecar and
collection bytes.

Both inboxes pair rasters with sidecars through ``watcher.pairing.Pairer`` and hand each due action to
one worker thread. The thread's rules are the same wherever the bytes live, so they live here once:

* a submission that fails (broker, ledger or store down) is retried with backoff (1 s doubling to 60 s)
  until it goes through: retrying in the worker, not at the next rescan or reconcile, keeps drops
  flowing seconds after an outage, and later files wait behind this one, which keeps their order;
* a file gone before its submission is logged and skipped (what "gone" means is the inbox's: a missing
  path, an S3 404);
* stop ends every wait at once (``Stopped``, raised from deep inside a read or a retried request).

A file removed from an inbox (``Removed``) goes through the same worker, after what was found before it:
``remove`` forgets its fingerprint whatever the collection says, and for a raster of a collection with
``on_delete = "unpublish"`` asks the intake for a removal job first (the publisher unpublishes the item and
deletes the COG). A removal is acted on only when the key has a fingerprint (something was submitted from
it and its removal is not handled yet: a second event for one deletion does nothing) and the file is still
absent when the worker gets to it (deleted and written again at once is an overwrite, not a removal).

This module knows no file system and no bucket, so that the S3 inbox does not depend on the local one.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Generic, Protocol, TypeVar

import structlog

from watcher.settings import WatcherSettings
from stacdrop.messages import Refusal, Source
from stacdrop.sidecar import SidecarDocument, sidecar_document, too_large
from dataclasses import dataclass

from watcher.naming import classify, collection_of
from watcher.pairing import Action, EmitRaster

log = structlog.get_logger("stacdrop.watcher")

COLLECTION_MAX = 16 << 20  # bytes of a collection.json read; larger ones are ignored (and logged)
ORIGIN = "inbox"


class Intake(Protocol):
    """What the watcher needs of ``stacdrop.intake.Intake``."""

    def submit_raster(
        self, *, source: Source, collection: str, sidecar: SidecarDocument | None, origin: str, priority: int,
        refused: Refusal | None = None,
    ) -> tuple[str, bool]: ...

    def submit_collection(self, *, source: Source, collection: str, text: str, origin: str) -> str | None: ...

    def fingerprint(self, key: str) -> str | None: ...

    def remember_fingerprint(self, key: str, fingerprint: str) -> None: ...

    def forget_fingerprint(self, key: str) -> None: ...

    def submit_removal(self, *, url: str, key: str, collection: str, origin: str) -> str | None: ...


class ListingIntake(Intake, Protocol):
    """The intake of an inbox that reconciles a listing with the fingerprints it remembers (S3)."""

    def iter_fingerprints(self, prefix: str = "") -> Iterator[tuple[str, str]]: ...


class Stopped(Exception):
    """Stop was asked while a submission waited or read: the worker ends without finishing it."""


@dataclass(frozen=True)
class Removed:
    """A file (raster, sidecar or collection file; key relative to the inbox) no longer in the inbox."""

    rel: str


def primary(action: Action | Removed) -> str:
    """The file an action is about: the raster of a pair, or the collection file (or the removed file)."""
    return action.raster if isinstance(action, EmitRaster) else action.rel


def remove(removed: Removed, *, intake: Intake, settings: WatcherSettings, fingerprint_key: str, url: str,
           exists: Callable[[], bool], logger: Any = log) -> None:
    """Handle one removed file, as the module docstring says (``fingerprint_key``: the key the inbox
    remembers its fingerprint under; ``url``: its source url, the same as its jobs'; ``exists``: whether it
    is there again)."""
    rel = removed.rel
    if intake.fingerprint(fingerprint_key) is None:
        logger.debug("removed file has no fingerprint; nothing to do", file=rel)
        return
    if exists():
        logger.info("removed file is there again; not a removal", file=rel)
        return
    collection = collection_of(rel) or ""
    if classify(rel) == "raster":
        if settings.collections.get(collection).on_delete == "unpublish":
            job = intake.submit_removal(url=url, key=rel, collection=collection, origin=ORIGIN)
            logger.info("raster removed from the inbox; unpublishing it", file=rel, collection=collection,
                        job_id=job)
        else:
            logger.info("raster removed from the inbox; its item is kept (on_delete = keep)", file=rel,
                        collection=collection)
    intake.forget_fingerprint(fingerprint_key)


def keys_of(action: Action) -> list[str]:
    """Every file an action submits: the raster and its sidecar, or the collection file."""
    if isinstance(action, EmitRaster):
        return [action.raster] + ([action.sidecar] if action.sidecar else [])
    return [action.rel]


Work = TypeVar("Work")


class SubmissionWorker(Generic[Work]):
    """The one worker thread of an inbox: takes work from ``queue`` (``None`` ends it) and submits it.

    ``submit(work)`` does the submission; ``gone(exc)`` says whether a failure means the file went away
    (logged, then ``on_gone(work)``); any other failure is retried with backoff. The
    log messages are the inbox's own (and go to its ``logger``)."""

    def __init__(self, work: queue.Queue[Work | None], stop: Callable[[], threading.Event], *,
                 submit: Callable[[Work], None], rel_of: Callable[[Work], str],
                 gone: Callable[[Exception], bool], on_gone: Callable[[Work], None] = lambda _work: None,
                 gone_message: str, failed_message: str, logger: Any = log) -> None:
        self.work = work
        self.stop = stop  # read at each use: the inbox gets its stop event only in run()
        self.submit = submit
        self.rel_of = rel_of
        self.gone = gone
        self.on_gone = on_gone
        self.gone_message = gone_message
        self.failed_message = failed_message
        self.log = logger

    def run(self) -> None:
        while True:
            work = self.work.get()
            if work is None or self.stop().is_set():
                return
            if not self.submit_retrying(work):
                return

    def submit_retrying(self, work: Work) -> bool:
        """Submit one piece of work until it goes through or its file is gone; False when stopped."""
        rel = self.rel_of(work)
        delay = 1.0
        while True:
            try:
                self.submit(work)
                return True
            except Stopped:
                return False
            except Exception as exc:  # noqa: BLE001 - broker, ledger or store down: wait, try again
                if self.gone(exc):
                    self.log.info(self.gone_message, file=rel)
                    self.on_gone(work)
                    return True
                # Retrying here (not at the next rescan) keeps drops flowing seconds after an outage;
                # later files wait behind this one, which keeps their order.
                self.log.warning(self.failed_message, file=rel, error=repr(exc), retry_in=delay)
                if self.stop().wait(delay):
                    return False
                delay = min(delay * 2, 60.0)


def judge_sidecar(
    data: bytes | None, name: str, size: int, settings: WatcherSettings, collection: str
) -> SidecarDocument:
    """A sidecar's bytes judged by the one sidecar parser; ``data`` None: not read, larger than
    ``max_sidecar_bytes`` (the document carries only its size and why)."""
    if data is None:
        return SidecarDocument.refused(name, too_large(name, size, int(settings.limits.max_sidecar_bytes)), size=size)
    return sidecar_document(data, name, settings.collections, collection, limit=settings.limits.max_sidecar_bytes)


def collection_text(data: bytes, rel: str, logger: Any = log) -> str:
    """A collection file's text: UTF-8 (a BOM allowed); invalid bytes are replaced, and logged."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        logger.warning("collection file is not valid UTF-8", file=rel)
        return data.decode("utf-8", errors="replace")


def collection_source(url: str, rel: str, data: bytes) -> Source:
    """The source of a collection file: its content key is the sha256 of the bytes read."""
    return Source(url=url, key=rel, size=len(data), content_key=hashlib.sha256(data).hexdigest())

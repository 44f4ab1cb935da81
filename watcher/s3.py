"""The S3 inbox (``inbox = "s3://bucket/prefix"``): bucket notifications, a polling reconciler, the same
pairing and submission rules as the local inbox.

Keys relative to the prefix have the local inbox's shape (``<collection-id>/.../NAME.tif``); a raster
becomes ``Source(url="s3://bucket/key", key=<relative key>, size, content_key=<ETag>)``.

``S3Inbox`` composes the parts and keeps the state they share (what the pairer tracks, the event
tokens waiting on it, the fingerprints last submitted), touched by the main loop only:

* **event feeds** (``watcher.s3feeds``): the AMQP consumer and/or the SQS poller, and the resolver that
  turns each event into the object as it is now (HEAD) with its stem's siblings;
* **bucket access** (``watcher.s3bucket``): every request to the store, retried while it is down;
* **reconciler** (here): at start (``Priority.BACKFILL``: work that arrived while stopped) and then every
  ``reconcile_interval`` seconds, the bucket's listing merge-joined with the ledger's fingerprints
  (``watcher.s3reconcile``): only new or changed objects are reported, memory stays bounded. With no
  event source configured it is the only detection;
* **main loop** (here): feeds ``watcher.pairing.Pairer`` (the local inbox's pairing: sidecar in either
  order, ``sidecar_wait``, a rewritten sidecar re-emits its raster) and hands due pairs to the worker;
* **worker** (``watcher.submission.SubmissionWorker``, the local inbox's loop, with the submission
  here): skips a pair whose objects' fingerprints (``"<etag>:<size>"``, one per object, under the key
  ``s3://bucket/<key>``) are those remembered; otherwise GETs the sidecar (at most
  ``max_sidecar_bytes``, judged like the local inbox's by ``stacdrop.sidecar.sidecar_document``: an
  invalid one is carried as its size, sha256 and reason only, and fails the job at once), submits
  through the intake, remembers the fingerprints. A failed submission is retried with backoff until it
  goes through.

* **removals** (here, through the worker): an object deleted (an ``ObjectRemoved`` event whose HEAD of its
  most likely key finds nothing: on Ceph the raw key, whatever its decoded neighbour) or no longer listed
  (the reconciler) becomes a ``watcher.submission.Removed`` for the worker, after the work found before it:
  its fingerprint is forgotten (so the reconciler stops reporting it gone) and, for a raster with
  ``on_delete = "unpublish"``, its item unpublished (``watcher.submission.remove``).
  The worker HEADs it first: an object that is there again was overwritten, not removed.

An event message is acked only once each of its records is settled: submitted (durably: job in the
ledger, message on the bus, fingerprint remembered), or ignored on purpose (duplicate, stale, gone, not
ours). A sidecar whose raster has not arrived is settled once parked: when the raster comes, its
sibling listing finds the sidecar again, even after a restart. A malformed message is logged and acked.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from watcher.settings import WatcherSettings
from stacdrop.messages import Priority, Source
from stacdrop.s3 import s3_client
from stacdrop.sidecar import SidecarDocument
from watcher.naming import classify, collection_of
from watcher.pairing import EmitCollection, EmitRaster, Pairer
from watcher.s3bucket import S3Bucket, not_found
from watcher.s3feeds import LRU, LRU_SIZE, Delivery, EventFeeds, Gone, Observed
from watcher.s3reconcile import Obj, OrderError
from watcher.submission import (
    COLLECTION_MAX,
    ORIGIN,
    ListingIntake,
    Removed,
    Stopped,
    SubmissionWorker,
    collection_source,
    collection_text,
    judge_sidecar,
    keys_of,
    primary,
    remove,
)

log = structlog.get_logger("stacdrop.watcher.s3")

TICK = 0.1
BACKLOG_MAX = 5000  # the reconciler waits while this much work is queued


@dataclass
class _Work:
    action: EmitRaster | EmitCollection | Removed
    objs: dict[str, Obj]
    priority: int
    tokens: list[Delivery] = field(default_factory=list)


@dataclass
class _Done:
    work: _Work
    submitted: dict[str, Obj]  # what was submitted or found unchanged


class S3Inbox:
    def __init__(self, url: str, settings: WatcherSettings, intake: ListingIntake, *, client: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.url = url
        self.settings = settings
        self.intake = intake
        self.clock = clock
        self._stop = threading.Event()
        self.store = S3Bucket(url, client or s3_client(settings.s3), lambda: self._stop)
        self.bucket, self.prefix, self.ns = self.store.bucket, self.store.prefix, self.store.ns
        self._events: queue.Queue[Any] = queue.Queue()  # to the main loop
        self.feeds = EventFeeds(settings, self.store, self._events.put, lambda: self._stop)
        self.amqp_url, self.sqs_url = self.feeds.amqp_url, self.feeds.sqs_url
        self._work: queue.Queue[_Work | None] = queue.Queue()
        self._worker = SubmissionWorker(
            self._work, lambda: self._stop, submit=self._submit, rel_of=lambda work: primary(work.action),
            gone=not_found, on_gone=lambda work: self._events.put(_Done(work, {})),
            gone_message="s3 object gone before submission", failed_message="s3 inbox submission failed; retrying",
            logger=log,
        )
        self._pairer = Pairer(settings.inbox.sidecar_wait)
        self._info: dict[str, Obj] = {}  # objects the pairer tracks
        self._priority: dict[str, int] = {}
        self._waiters: dict[str, list[Delivery]] = {}
        self._recent: LRU = LRU(LRU_SIZE)  # rel -> fingerprint last submitted or found unchanged
        self.reconciles = 0  # finished reconciler passes (tests, diagnostics)

    # ------------------------------------------------------------------ main loop

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        resolver, *consumers = self.feeds.threads()
        threads = [
            threading.Thread(target=self._worker.run, name="stacdrop-s3-worker", daemon=True),
            resolver,
            threading.Thread(target=self._reconciler, name="stacdrop-s3-reconciler", daemon=True),
            *consumers,
        ]
        for thread in threads:
            thread.start()
        log.info("s3 inbox watching", inbox=self.url, amqp=bool(self.amqp_url), sqs=bool(self.sqs_url),
                 reconcile_interval=self.settings.s3.reconcile_interval)
        try:
            while not stop.is_set():
                self._drain(TICK)
                self._guard("pairing", self._dispatch_due, self.clock())
        finally:
            self._work.put(None)
            for thread in threads:
                thread.join(timeout=30)
                if thread.is_alive():
                    log.warning("s3 inbox thread still busy at stop", thread=thread.name)
            log.info("s3 inbox stopped", inbox=self.url)

    def _guard(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:
            log.exception("s3 inbox error", step=what, inbox=self.url)
            return None

    def _drain(self, timeout: float) -> None:
        try:
            item = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._guard("event", self._on_item, item, self.clock())
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                return

    def _on_item(self, item: Any, now: float) -> None:
        if isinstance(item, Observed):
            self._observed(item, now)
        elif isinstance(item, Gone):
            self._gone(item.rel, item.token)
        elif isinstance(item, _Done):
            self._done(item)

    def _observed(self, item: Observed, now: float) -> None:
        group = item.group
        accepted = [obj for obj in group.changed if self._ready(obj, item.priority, item.token, now)]
        changed_kinds = {classify(o.rel) for o in accepted}
        for obj in group.siblings:  # unchanged files of the same stem that pairing needs
            kind = classify(obj.rel)
            if (kind == "sidecar" and "raster" in changed_kinds and self._pairer.sidecar_of(obj.rel) is None) or (
                kind == "raster" and "sidecar" in changed_kinds and not self._pairer.tracks(obj.rel)
            ):
                self._ready(obj, item.priority, None, now, sibling=True)
        for obj in accepted:
            # A sidecar with no raster waiting is parked: settled now (its raster's arrival finds it again).
            if classify(obj.rel) == "sidecar" and not self._pairer.has_pending_raster(obj.rel):
                for token in self._waiters.pop(obj.rel, []):
                    token.settle()

    def _ready(self, obj: Obj, priority: int, token: Delivery | None, now: float, *, sibling: bool = False) -> bool:
        """Report a complete object to the pairer; False when it is a duplicate of what was submitted."""
        rel = obj.rel
        tracked = self._pairer.tracks(rel)
        if not sibling and not tracked and self._recent.get(rel) == obj.fingerprint:
            log.debug("s3 object unchanged (duplicate event)", file=rel)
            if token:
                token.settle()
            return False
        if token:
            self._waiters.setdefault(rel, []).append(token)
        self._priority[rel] = max(self._priority.get(rel, 0), int(priority))
        if tracked and self._info.get(rel) == obj and classify(rel) == "raster":
            return True  # the same version again while it waits: keep its sidecar deadline
        self._info[rel] = obj
        self._pairer.file_ready(rel, now)
        return True

    def _gone(self, rel: str, token: Delivery | None = None) -> None:
        self._pairer.file_gone(rel)
        self._info.pop(rel, None)
        self._priority.pop(rel, None)
        self._recent.pop(rel, None)
        for waiting in self._waiters.pop(rel, []):
            waiting.settle()
        # The event is settled once the removal is (the worker's _Done).
        self._work.put(_Work(Removed(rel), {}, int(Priority.LIVE), [token] if token else []))

    def _dispatch_due(self, now: float) -> None:
        for action in self._pairer.due(now):
            rels = keys_of(action)
            objs = {rel: self._info[rel] for rel in rels if rel in self._info}
            if primary(action) not in objs:
                continue
            priority = max(self._priority.get(rel, Priority.BACKFILL) for rel in rels)
            tokens = [t for rel in rels for t in self._waiters.pop(rel, [])]
            self._work.put(_Work(action, objs, int(priority), tokens))

    def _done(self, done: _Done) -> None:
        for rel, obj in done.submitted.items():
            self._recent.put(rel, obj.fingerprint)
        action = done.work.action
        if isinstance(action, Removed):
            pass  # the pairer forgot it already; it may track a new object at that key by now
        elif isinstance(action, EmitRaster):
            for rel in self._pairer.release(action.raster):
                self._info.pop(rel, None)
                self._priority.pop(rel, None)
        else:
            self._info.pop(action.rel, None)
            self._priority.pop(action.rel, None)
        for token in done.work.tokens:
            token.settle()

    def backlog(self) -> int:
        return self._events.qsize() + self._work.qsize() + len(self._info)

    # ------------------------------------------------------------------ reconciler

    def _reconciler(self) -> None:
        interval = float(self.settings.s3.reconcile_interval)
        priority = Priority.BACKFILL
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                counts = self.reconcile(priority)
                self.reconciles += 1
                log.info("s3 reconcile done", inbox=self.url, seconds=round(time.monotonic() - started, 3), **counts)
            except Stopped:
                return
            except Exception:
                log.exception("s3 reconcile failed", inbox=self.url)
            if interval <= 0:
                return
            priority = Priority.LIVE
            if self._stop.wait(interval):
                return

    def reconcile(self, priority: int) -> dict[str, int]:
        """List the prefix, merge-join with the remembered fingerprints, report what is new or changed."""
        counts = {"listed": 0, "reported": 0, "gone": 0}
        try:
            for item in self.store.changes(self.intake.iter_fingerprints(self.ns), counts):
                if self._stop.is_set():
                    raise Stopped()
                if isinstance(item, str):
                    counts["gone"] += 1
                    self._events.put(Gone(item))
                    continue
                counts["reported"] += len(item.changed)
                self._events.put(Observed(item, priority))
                while self.backlog() > BACKLOG_MAX and not self._stop.is_set():
                    time.sleep(0.05)
        except OrderError as exc:
            log.error("s3 reconcile: keys out of order; is the ledger's key collation binary?", error=str(exc))
            raise
        return counts

    # ------------------------------------------------------------------ submission (worker thread)

    def _submit(self, work: _Work) -> None:
        if isinstance(work.action, Removed):
            rel = work.action.rel
            remove(work.action, intake=self.intake, settings=self.settings, fingerprint_key=self.ns + rel,
                   url=self.store.url_of(rel), exists=lambda: self.store.head(self.store.key_of(rel)) is not None,
                   logger=log)
            submitted: dict[str, Obj] = {}
        elif isinstance(work.action, EmitRaster):
            submitted = self._submit_raster(work)
        else:
            submitted = self._submit_collection(work)
        self._events.put(_Done(work, submitted))

    def _submit_raster(self, work: _Work) -> dict[str, Obj]:
        action = work.action
        assert isinstance(action, EmitRaster)
        raster = work.objs[action.raster]
        sidecar = work.objs.get(action.sidecar) if action.sidecar else None
        if self.intake.fingerprint(self.ns + raster.rel) == raster.fingerprint and (
            sidecar is None or self.intake.fingerprint(self.ns + sidecar.rel) == sidecar.fingerprint
        ):
            log.debug("s3 object unchanged", file=raster.rel)
            return {o.rel: o for o in (raster, sidecar) if o is not None}
        collection = collection_of(raster.rel) or ""
        document: SidecarDocument | None = None
        if sidecar is not None:
            limit = int(self.settings.limits.max_sidecar_bytes)
            try:
                data, sidecar = self.store.get(sidecar.rel, limit)
            except Exception as exc:
                if not not_found(exc):
                    raise
                log.warning("sidecar gone before submission, submitting the raster alone", file=raster.rel,
                            sidecar=action.sidecar)
                sidecar = None
            else:  # data None: not read, larger than the limit
                document = judge_sidecar(data, sidecar.rel, sidecar.size, self.settings, collection)
        source = Source(url=self.store.url_of(raster.rel), key=raster.rel, size=raster.size,
                        content_key=raster.etag)
        job, new = self.intake.submit_raster(
            source=source, collection=collection, sidecar=document, origin=ORIGIN, priority=work.priority,
        )
        self.intake.remember_fingerprint(self.ns + raster.rel, raster.fingerprint)
        if sidecar is not None:
            self.intake.remember_fingerprint(self.ns + sidecar.rel, sidecar.fingerprint)
        log.info("s3 raster submitted" if new else "s3 raster unchanged (duplicate)", file=raster.rel,
                 sidecar=document.name if document else None, collection=collection, job_id=job, priority=work.priority)
        return {o.rel: o for o in (raster, sidecar) if o is not None}

    def _submit_collection(self, work: _Work) -> dict[str, Obj]:
        action = work.action
        assert isinstance(action, EmitCollection)
        obj = work.objs[action.rel]
        if self.intake.fingerprint(self.ns + obj.rel) == obj.fingerprint:
            return {obj.rel: obj}
        data, obj = self.store.get(obj.rel, COLLECTION_MAX)
        if data is None:
            log.error("collection file too large; ignored", file=obj.rel, size=obj.size, limit=COLLECTION_MAX)
            return {obj.rel: obj}
        text = collection_text(data, obj.rel, log)
        source = collection_source(self.store.url_of(obj.rel), obj.rel, data)
        collection = collection_of(obj.rel) or ""
        job = self.intake.submit_collection(source=source, collection=collection, text=text, origin=ORIGIN)
        self.intake.remember_fingerprint(self.ns + obj.rel, obj.fingerprint)
        log.info("s3 collection submitted" if job else "s3 collection unchanged", file=obj.rel,
                 collection=collection, job_id=job)
        return {obj.rel: obj}


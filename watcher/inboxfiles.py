"""The local inbox's submission side: reading its files (contained, limited, hashed) and submitting them.

``watcher.inbox.LocalInbox`` finds files and pairs them; its worker thread (``watcher.submission``'s
loop) hands each due pair here. Kept apart because this side shares no state with detection: it never
sees a watchdog event or a settling file, and the main loop never reads a file's bytes. The one thing it
tells the main loop is that a raster changed while being hashed (``changed(rel)``): the file is then
forgotten and picked up again once it settles.

Rasters and sidecars are read only when their real path is inside the inbox (``stacdrop.containment``):
one outside it (a symlink, a symlinked folder) is submitted unread, as a job the processor fails at once
(``outside_inbox``). Sidecars are read up to ``max_sidecar_bytes`` and judged by the one sidecar parser
(``watcher.submission.judge_sidecar``). A pair is skipped when its stat fingerprint is the one the intake
remembers (restarts stay cheap); otherwise the raster is hashed (sha256, streamed; stop interrupts it).
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path

import structlog

from watcher.settings import WatcherSettings
from stacdrop.containment import open_inbox_file, read_limited
from stacdrop.errors import NotRegularFile, OutsideInbox
from stacdrop.messages import Refusal, Source
from stacdrop.sidecar import SidecarDocument
from watcher.naming import collection_of
from watcher.pairing import Action, EmitRaster
from watcher.submission import (
    COLLECTION_MAX,
    ORIGIN,
    Intake,
    Removed,
    Stopped,
    collection_source,
    collection_text,
    judge_sidecar,
    remove,
)

log = structlog.get_logger("stacdrop.watcher")

CHUNK = 1 << 20  # hashing read size
HASHES_MAX = 10_000  # rasters whose sha256 is cached (a sidecar rewrite does not rehash its raster)

Stat = tuple[int, int]  # size, mtime_ns


class InboxFiles:
    """The worker thread's view of the inbox folder ``root``."""

    def __init__(self, root: Path, settings: WatcherSettings, intake: Intake, stop: Callable[[], threading.Event],
                 changed: Callable[[str], None]) -> None:
        self.root = root
        self.settings = settings
        self.intake = intake
        self.stop = stop  # read at each use: the inbox gets its stop event only in run()
        self.changed = changed
        self._hashes: dict[str, tuple[Stat, str]] = {}  # raster key -> (stat, sha256)

    def _path(self, rel: str) -> Path:
        return self.root / rel

    def submit(self, item: tuple[Action | Removed, int]) -> None:
        """One due action with its priority (what the worker takes from the queue)."""
        action, priority = item
        if isinstance(action, Removed):
            path = self._path(action.rel)
            remove(action, intake=self.intake, settings=self.settings, fingerprint_key=action.rel, url=str(path),
                   exists=lambda: os.path.lexists(path), logger=log)
        elif isinstance(action, EmitRaster):
            self.submit_raster(action.raster, action.sidecar, priority)
        else:
            self.submit_collection(action.rel)

    def _sha256(self, fd: int) -> str:
        digest = hashlib.sha256()
        while chunk := os.read(fd, CHUNK):
            if self.stop().is_set():
                raise Stopped()
            digest.update(chunk)
        return digest.hexdigest()

    def read_sidecar(self, rel: str, collection: str) -> SidecarDocument:
        """The sidecar judged (contained, at most max_sidecar_bytes read). FileNotFoundError when gone."""
        try:
            fd, _real = open_inbox_file(self.root, self._path(rel), rel)
        except (OutsideInbox, NotRegularFile) as exc:
            return SidecarDocument.refused(rel, exc)
        try:
            size = os.fstat(fd).st_size
            limit = int(self.settings.limits.max_sidecar_bytes)
            data = read_limited(fd, limit) if size <= limit else None  # larger: not read at all
        finally:
            os.close(fd)
        return judge_sidecar(data, rel, size, self.settings, collection)

    def submit_raster(self, raster: str, sidecar: str | None, priority: int) -> None:
        """Submit a raster (relative key) with its sidecar, unless their stat fingerprint is remembered."""
        path = self._path(raster)
        st = os.stat(path)
        fingerprint = f"{st.st_size}:{st.st_mtime_ns}"
        if sidecar is not None:
            try:
                sst = os.stat(self._path(sidecar))
            except FileNotFoundError:
                log.warning("sidecar gone before submission, submitting the raster alone", file=raster,
                            sidecar=sidecar)
                sidecar = None
            else:
                fingerprint += f"+{sst.st_size}:{sst.st_mtime_ns}"
        if self.intake.fingerprint(raster) == fingerprint:
            log.debug("inbox file unchanged", file=raster)
            return
        collection = collection_of(raster) or ""
        document: SidecarDocument | None = None
        if sidecar is not None:
            try:
                document = self.read_sidecar(sidecar, collection)
            except FileNotFoundError:
                log.warning("sidecar gone before submission, submitting the raster alone", file=raster,
                            sidecar=sidecar)
        stat = (st.st_size, st.st_mtime_ns)
        refused: Refusal | None = None
        content_key: str | None
        try:
            fd, _real = open_inbox_file(self.root, path, raster)
        except (OutsideInbox, NotRegularFile) as exc:
            # Not read, not hashed: the job only says why (the processor fails it on its first attempt).
            refused = Refusal(error_class=exc.error_class, error=str(exc))
            content_key = f"refused:{exc.error_class}"
            log.error("inbox raster refused", file=raster, error_class=exc.error_class, error=str(exc))
        else:
            try:
                content_key = self._content_key(raster, fd, stat)
            finally:
                os.close(fd)
            if content_key is None:
                return
        source = Source(url=str(path), key=raster, size=st.st_size, content_key=content_key)
        job, new = self.intake.submit_raster(
            source=source, collection=collection, sidecar=document, origin=ORIGIN, priority=priority,
            refused=refused,
        )
        self.intake.remember_fingerprint(raster, fingerprint)
        log.info("inbox raster submitted" if new else "inbox raster unchanged (duplicate)", file=raster,
                 sidecar=document.name if document else None, collection=collection, job_id=job, priority=priority)

    def _content_key(self, raster: str, fd: int, stat: Stat) -> str | None:
        """sha256 of the raster read through ``fd``; None when it changed while being hashed (it is picked
        up again once it settles)."""
        cached = self._hashes.get(raster)
        opened = os.fstat(fd)
        if (opened.st_size, opened.st_mtime_ns) != stat:
            self.changed(raster)
            return None
        if cached is not None and cached[0] == stat:
            return cached[1]  # only the sidecar changed
        content_key = self._sha256(fd)
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns) != stat:
            log.info("raster changed while hashing; waiting for it to settle again", file=raster)
            self.changed(raster)
            return None
        if len(self._hashes) >= HASHES_MAX:
            self._hashes.clear()
        self._hashes[raster] = (stat, content_key)
        return content_key

    def submit_collection(self, rel: str) -> None:
        """Submit a collection file (at most ``COLLECTION_MAX`` bytes), unless its fingerprint is remembered."""
        path = self._path(rel)
        st = os.stat(path)
        fingerprint = f"{st.st_size}:{st.st_mtime_ns}"
        if self.intake.fingerprint(rel) == fingerprint:
            log.debug("inbox file unchanged", file=rel)
            return
        try:
            fd, _real = open_inbox_file(self.root, path, rel)
        except (OutsideInbox, NotRegularFile) as exc:
            log.error("inbox collection file refused", file=rel, error_class=exc.error_class, error=str(exc))
            self.intake.remember_fingerprint(rel, fingerprint)
            return
        try:
            data = read_limited(fd, COLLECTION_MAX)
        finally:
            os.close(fd)
        if len(data) > COLLECTION_MAX:
            log.error("collection file too large; ignored", file=rel, limit=COLLECTION_MAX)
            self.intake.remember_fingerprint(rel, fingerprint)
            return
        text = collection_text(data, rel, log)
        source = collection_source(str(path), rel, data)
        collection = collection_of(rel) or ""
        job = self.intake.submit_collection(source=source, collection=collection, text=text, origin=ORIGIN)
        self.intake.remember_fingerprint(rel, fingerprint)
        log.info("inbox collection submitted" if job else "inbox collection unchanged", file=rel,
                 collection=collection, job_id=job)


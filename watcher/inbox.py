"""The local inbox: watch a folder, pair rasters with sidecars, submit ingest jobs.

``LocalInbox.run(stop)``:

1. starts a recursive watchdog observer first, then scans the tree for work that arrived while stopped
   (start-up scan: ``Priority.BACKFILL``; anything seen while running: ``Priority.LIVE``);
2. counts a file only once fully written: at once on close-after-write, otherwise once its size and
   mtime held still for ``settle_time`` (created/modified/moved-in/scanned files);
3. pairs rasters with sidecars (``watcher.pairing.Pairer``) and hands each pair to one worker thread
   (``watcher.submission.SubmissionWorker``, the S3 inbox's loop too), which reads and submits it
   through ``watcher.inboxfiles.InboxFiles``: skipped when its stat fingerprint is the one the intake
   remembers (restarts stay cheap), otherwise the raster is hashed (sha256, streamed) and
   ``intake.submit_raster`` called;
4. rescans the whole tree every ``rescan_interval`` seconds (0 = off) to catch missed events;
   a submission that fails (broker or ledger down) is retried with backoff until it goes through;
5. never dies because of one file: errors are logged with the file and the loop goes on;
6. hands each raster or collection file that goes away (deleted, moved out or renamed, found missing by
   a rescan) to the same worker as a ``watcher.submission.Removed``, after the work found before it: its
   fingerprint is forgotten and, with ``on_delete = "unpublish"``, its item unpublished
   (``watcher.submission.remove``). A file removed while the daemon is stopped is not noticed: the
   fingerprints hold no inbox root, so telling "removed" from "another inbox's" at start would be a guess
   that could unpublish a whole catalog after a change of ``inbox``.

Rasters and sidecars are read only when their real path is inside the inbox (``stacdrop.containment``):
one outside it (a symlink, a symlinked folder) is submitted unread, as a job the processor fails at once
(``outside_inbox``). Sidecars are read up to ``max_sidecar_bytes`` and judged (``watcher.inboxfiles``) by
the one sidecar parser (``stacdrop.sidecar.sidecar_document``): an invalid one makes a job that fails as
``invalid_sidecar`` at once with the reason, carrying the sidecar's size and sha256 but never its text;
never a key-only item. Symlinked folders are not descended into (a scan reports those that lead outside).
Files directly in the inbox root have no collection folder: they are submitted with ``collection=""``.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from watcher.settings import WatcherSettings
from stacdrop.containment import check_inside
from stacdrop.errors import OutsideInbox
from stacdrop.messages import Priority
from watcher.inboxfiles import InboxFiles, Stat
from watcher.naming import classify
from watcher.pairing import Action, EmitRaster, Pairer
from watcher.submission import Intake, Removed, SubmissionWorker, primary

log = structlog.get_logger("stacdrop.watcher")

TICK = 0.1  # seconds between checks of settling files and sidecar deadlines
WATCHED_EVENTS = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileAttribEvent,
    FileClosedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    DirCreatedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]




@dataclass
class _Settling:
    stat: Stat
    since: float
    priority: int


@dataclass(frozen=True)
class _Failed:
    """Posted by the worker: forget that this file was seen (it changed while being hashed), so that it
    is picked up again once it settles."""

    rel: str


class _Handler(FileSystemEventHandler):
    def __init__(self, events: queue.Queue[Any]) -> None:
        self.events = events

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.events.put(event)


class LocalInbox:
    def __init__(
        self, root: str | os.PathLike[str], settings: WatcherSettings, intake: Intake,
        *, clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = Path(os.path.abspath(root))
        self.settings = settings
        self.intake = intake
        self.clock = clock
        self._events: queue.Queue[Any] = queue.Queue()
        self._work: queue.Queue[tuple[Action | Removed, int] | None] = queue.Queue()
        self._pairer = Pairer(settings.inbox.sidecar_wait)
        self._settling: dict[str, _Settling] = {}
        self._known: dict[str, Stat] = {}  # files declared ready, with their stat at that time
        self._priority: dict[str, int] = {}  # how each known file was found
        self._stop = threading.Event()
        self._reported: set[str] = set()  # symlinked folders already reported as leading outside
        self.files = InboxFiles(self.root, settings, intake, lambda: self._stop,  # the worker thread's side
                                lambda rel: self._events.put(_Failed(rel)))
        self._worker = SubmissionWorker(
            self._work, lambda: self._stop, submit=self.files.submit, rel_of=lambda item: primary(item[0]),
            gone=lambda exc: isinstance(exc, FileNotFoundError), gone_message="inbox file gone before submission",
            failed_message="inbox submission failed; retrying", logger=log,
        )

    # ------------------------------------------------------------------ main loop

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        self.root.mkdir(parents=True, exist_ok=True)
        observer = Observer()
        observer.schedule(_Handler(self._events), str(self.root), recursive=True, event_filter=WATCHED_EVENTS)
        observer.start()  # watch first, then scan: nothing falls in between
        worker = threading.Thread(target=self._worker.run, name="stacdrop-inbox-worker", daemon=True)
        worker.start()
        log.info("inbox watching", inbox=str(self.root))
        try:
            self._guard("start-up scan", None, self._rescan, Priority.BACKFILL)
            interval = float(self.settings.inbox.rescan_interval)
            next_rescan = self.clock() + interval if interval > 0 else None
            while not stop.is_set():
                self._drain_events(TICK)
                now = self.clock()
                self._guard("settle check", None, self._check_settling, now)
                self._guard("pairing", None, self._dispatch_due, now)
                if next_rescan is not None and now >= next_rescan:
                    self._guard("rescan", None, self._rescan, Priority.LIVE)
                    next_rescan = self.clock() + interval
        finally:
            observer.stop()
            self._work.put(None)
            observer.join(timeout=10)
            worker.join(timeout=30)
            if worker.is_alive():
                log.warning("inbox worker still busy at stop", inbox=str(self.root))
            log.info("inbox stopped", inbox=str(self.root))

    def _guard(self, what: str, rel: str | None, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except Exception:
            log.exception("inbox error", step=what, file=rel, inbox=str(self.root))
            return None

    def _drain_events(self, timeout: float) -> None:
        try:
            item = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            now = self.clock()
            if isinstance(item, _Failed):
                self._known.pop(item.rel, None)
            else:
                self._guard("event", getattr(item, "src_path", None), self._on_event, item, now)
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                return

    # ------------------------------------------------------------------ detection

    def _rel(self, path: str | bytes) -> str | None:
        """Key of an absolute path under the root; None for the root itself or outside it."""
        if not path:
            return None
        rel = os.path.relpath(os.fsdecode(path), self.root)
        if rel == "." or rel == ".." or rel.startswith(".." + os.sep) or os.path.isabs(rel):
            return None
        return rel.replace(os.sep, "/")

    def _path(self, rel: str) -> Path:
        return self.root / rel

    def _on_event(self, event: FileSystemEvent, now: float) -> None:
        kind = event.event_type
        src = self._rel(event.src_path)
        dest = self._rel(event.dest_path) if kind == "moved" else None
        if event.is_directory:
            if kind in ("deleted", "moved") and src is not None:
                self._forget_under(src)
            target = src if kind == "created" else dest
            if target is not None:
                self._scan(target, Priority.LIVE, now)
            return
        if kind == "moved":
            if src is not None:
                self._gone(src)
            if dest is not None:
                self._seen(dest, Priority.LIVE, now)
        elif src is None:
            return
        elif kind == "deleted":
            self._gone(src)
        elif kind == "closed":
            self._closed(src, now)
        else:  # created, modified, attrib
            self._seen(src, Priority.LIVE, now)

    @staticmethod
    def _stat(path: Path) -> Stat | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return None
        return (st.st_size, st.st_mtime_ns)

    def _seen(self, rel: str, priority: int, now: float) -> None:
        """A file appeared or changed: it is ready once its size and mtime hold still."""
        if classify(rel) is None:
            return
        stat = self._stat(self._path(rel))
        if stat is None:
            self._gone(rel)
            return
        settling = self._settling.get(rel)
        if settling is not None:
            settling.priority = max(settling.priority, priority)
            if settling.stat != stat:
                settling.stat, settling.since = stat, now
        elif self._known.get(rel) != stat:
            self._settling[rel] = _Settling(stat, now, priority)

    def _closed(self, rel: str, now: float) -> None:
        """Closed after writing: ready at once."""
        if classify(rel) is None:
            return
        stat = self._stat(self._path(rel))
        if stat is None:
            self._gone(rel)
            return
        settling = self._settling.pop(rel, None)
        if settling is None and self._known.get(rel) == stat:
            return
        self._ready(rel, stat, Priority.LIVE, now)

    def _check_settling(self, now: float) -> None:
        settle = float(self.settings.inbox.settle_time)
        for rel, settling in list(self._settling.items()):
            if now - settling.since < settle:
                continue
            stat = self._stat(self._path(rel))
            if stat is None:
                self._gone(rel)
            elif stat != settling.stat:
                settling.stat, settling.since = stat, now
            else:
                del self._settling[rel]
                self._ready(rel, stat, settling.priority, now)

    def _ready(self, rel: str, stat: Stat, priority: int, now: float) -> None:
        self._known[rel] = stat
        self._priority[rel] = priority
        self._pairer.file_ready(rel, now)

    def _gone(self, rel: str) -> None:
        self._settling.pop(rel, None)
        self._priority.pop(rel, None)
        if self._known.pop(rel, None) is not None:
            self._pairer.file_gone(rel)
        if classify(rel) in ("raster", "collection"):  # a sidecar has no fingerprint of its own here
            self._work.put((Removed(rel), int(Priority.LIVE)))

    def _forget_under(self, prefix: str) -> None:
        inside = prefix + "/"
        for rel in [*self._known, *self._settling]:
            if rel == prefix or rel.startswith(inside):
                self._gone(rel)

    def _scan(self, rel_dir: str, priority: int, now: float) -> set[str]:
        """Walk a folder (``""`` = the whole inbox); every file found must settle before it counts."""
        found: set[str] = set()
        top = self._path(rel_dir) if rel_dir else self.root

        def onerror(exc: OSError) -> None:
            log.warning("inbox scan error", file=getattr(exc, "filename", None), error=str(exc))

        for dirpath, dirnames, filenames in os.walk(top, onerror=onerror):
            dirnames[:] = [d for d in dirnames if not d.startswith((".", "~"))]
            for name in dirnames:
                self._report_symlinked_folder(os.path.join(dirpath, name))
            for name in filenames:
                rel = self._rel(os.path.join(dirpath, name))
                if rel is None or classify(rel) is None:
                    continue
                found.add(rel)
                self._guard("scan", rel, self._seen, rel, priority, now)
        return found

    def _report_symlinked_folder(self, path: str) -> None:
        """os.walk does not descend into symlinked folders, so their files are never read; say so once
        for those that lead out of the inbox, naming the folder (not its target)."""
        if not os.path.islink(path):
            return
        rel = self._rel(path)
        if rel is None or rel in self._reported:
            return
        try:
            check_inside(self.root, path, rel)
        except OutsideInbox as exc:
            self._reported.add(rel)
            log.error("inbox folder refused", file=rel, error_class=exc.error_class, error=str(exc))

    def _rescan(self, priority: int) -> None:
        found = self._scan("", priority, self.clock())
        for rel in [rel for rel in self._known if rel not in found]:
            self._gone(rel)  # a deletion whose event was missed

    def _dispatch_due(self, now: float) -> None:
        for action in self._pairer.due(now):
            if isinstance(action, EmitRaster):
                priority = max(self._priority.get(action.raster, Priority.LIVE),
                               self._priority.get(action.sidecar, Priority.BACKFILL) if action.sidecar else 0)
            else:
                priority = self._priority.get(action.rel, Priority.LIVE)
            self._work.put((action, int(priority)))

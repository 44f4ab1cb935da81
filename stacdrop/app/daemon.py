"""Assembles the stages into a running daemon: ``stacdrop run`` (all roles) or one role per process.

Each role runs in its own thread; a role whose loop dies is logged and restarted with backoff, so one
bad moment never stops the daemon. ``--workers N`` for the processor starts N child processes (two
single-threaded converters beat one threaded process on a queue of files).
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import structlog

from processor import make_process_handler
from publisher import make_publish_batch_handler, make_publish_handler
from stacdrop.app import components
from stacdrop.config import Settings
from stacdrop.intake import Intake
from stacdrop.probes import check_stac, check_store
from stacdrop.redact import secrets_of
from stacdrop.retry import RetryPolicy
from stacdrop.runtime import StageRunner
from watcher import LocalInbox, S3Inbox

log = structlog.get_logger("stacdrop.app.daemon")
ROLES = ("watch", "process", "publish")


def workdir_for(settings: Settings) -> Path:
    """Temporary COGs are written next to the store when it is local (so the final move is a rename)."""
    store = settings.store
    if "://" not in store or store.startswith("file://"):
        return Path(store.removeprefix("file://")) / ".work"
    return Path("data/work")


class Daemon:
    def __init__(self, settings: Settings, roles: Iterable[str] = ROLES, workers: int = 1) -> None:
        self.settings = settings
        self.roles = tuple(roles)
        self.workers = workers
        self.stop = threading.Event()
        self.bus = components.open_bus(settings)
        self.ledger = components.open_ledger(settings)
        self.policy = RetryPolicy.from_bus(settings.bus)
        self.threads: list[threading.Thread] = []
        self.children: list[multiprocessing.process.BaseProcess] = []

    # -- roles ----------------------------------------------------------------------------------------
    def _watch(self) -> None:
        intake = Intake(self.ledger, self.bus)
        recovered = intake.recover()
        if recovered:
            log.warning("re-enqueued jobs interrupted before reaching the bus", count=recovered)
        inbox = self.settings.inbox.path
        if inbox.startswith("s3://"):
            S3Inbox(inbox, components.watcher_settings(self.settings), intake).run(self.stop)
            return
        root = Path(inbox.removeprefix("file://"))
        root.mkdir(parents=True, exist_ok=True)
        LocalInbox(root, components.watcher_settings(self.settings), intake).run(self.stop)

    def _process(self) -> None:
        store = components.open_store(self.settings)
        handler = make_process_handler(components.processor_settings(self.settings), store,
                                       workdir_for(self.settings), self.ledger)
        StageRunner("process", handler, bus=self.bus, ledger=self.ledger, policy=self.policy,
                    probes={"store": lambda: check_store(self.settings.store, self.settings.s3)}).run(self.stop)

    def _publish(self) -> None:
        sink = components.open_sink(self.settings, self.ledger)
        # The publisher deletes the COGs of sources removed from the inbox (on_delete = "unpublish") after
        # their items: it gets the store's delete, not the store (see publisher/handler.py).
        delete_cog = components.open_store(self.settings).delete
        collections = self.settings.collection_settings
        StageRunner(
            "publish", make_publish_handler(collections, sink, self.ledger, delete_cog),
            bus=self.bus, ledger=self.ledger, policy=self.policy,
            batch_handler=make_publish_batch_handler(collections, sink, self.ledger, delete_cog),
            batch_size=self.settings.stac_api.batch_size, batch_window=self.settings.stac_api.publish_batch_window,
            probes={"stac_api": lambda: check_stac(self.settings.stac),
                    "store": lambda: check_store(self.settings.store, self.settings.s3)},
        ).run(self.stop)

    def _supervise(self, name: str, target: Callable[[], None]) -> None:
        """Run a role until stop; if its loop dies, log it and start it again with backoff."""
        delay = 1.0
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                target()
                return
            except Exception:  # the daemon keeps running whatever one role hits
                log.exception("role crashed; restarting", role=name, restart_in=delay)
            if time.monotonic() - started > 60:
                delay = 1.0
            self.stop.wait(delay)
            delay = min(delay * 2, 60.0)

    # -- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        self.bus.setup()
        targets = {"watch": self._watch, "process": self._process, "publish": self._publish}
        for role in self.roles:
            if role == "process" and self.workers > 1:
                self._start_children(self.workers)
                continue
            thread = threading.Thread(target=self._supervise, args=(role, targets[role]), name=role, daemon=True)
            thread.start()
            self.threads.append(thread)
        log.info("stacdrop started", roles=list(self.roles), workers=self.workers, inbox=self.settings.inbox.path,
                 store=self.settings.store, stac=self.settings.stac)

    def _start_children(self, count: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        for index in range(count):
            child = ctx.Process(target=_child_processor, args=(self.settings.model_dump(mode="python"),),
                                name=f"processor-{index + 1}", daemon=False)
            child.start()
            self.children.append(child)

    def wait(self) -> None:
        while not self.stop.is_set():
            self.stop.wait(0.5)
            for child in list(self.children):
                if not child.is_alive() and not self.stop.is_set():
                    log.error("processor process died; starting another", name=child.name, exitcode=child.exitcode)
                    self.children.remove(child)
                    self._start_children(1)
        self.shutdown()

    def shutdown(self) -> None:
        self.stop.set()
        for child in self.children:
            if child.is_alive() and child.pid:
                child.terminate()  # SIGTERM: it finishes or hands back its message
        for thread in self.threads:
            thread.join()
        for child in self.children:
            child.join()
        self.bus.close()
        self.ledger.close()
        log.info("stacdrop stopped")

    def install_signal_handlers(self) -> None:
        def handle(signum: int, _frame: object) -> None:
            if self.stop.is_set():
                log.warning("second signal: exiting now; unfinished messages will be delivered again")
                raise SystemExit(1)
            log.info("stopping: finishing current work", signal=signal.Signals(signum).name)
            self.stop.set()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)


def _child_processor(settings_data: dict) -> None:
    from stacdrop.logs import configure_logging  # noqa: PLC0415

    settings = Settings(**settings_data)
    configure_logging(settings.log_format, settings.log_level, secrets_of(settings))
    daemon = Daemon(settings, roles=("process",), workers=1)
    daemon.install_signal_handlers()
    daemon.start()
    daemon.wait()

"""Run the real ``stacdrop`` daemon as a subprocess for end-to-end tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from stacdrop.bus import open_bus
from stacdrop.ledger import Job, Ledger

STACDROP = [sys.executable, "-m", "stacdrop.app.cli"]


def base_env(root: Path, **overrides: Any) -> dict[str, str]:
    """Settings for a daemon whose every file lives under ``root``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STACDROP_")}
    env.update(
        STACDROP_INBOX=str(root / "inbox"),
        STACDROP_STORE=str(root / "data" / "cogs"),
        STACDROP_STAC=str(root / "data" / "stac"),
        STACDROP_BROKER=f"sqlite:///{root / 'data' / 'queue.db'}",
        STACDROP_LEDGER=f"sqlite:///{root / 'data' / 'ledger.db'}",
        STACDROP_SIDECAR_WAIT="3",
        STACDROP_SETTLE_TIME="0.3",
        STACDROP_LOG_FORMAT="json",
        STACDROP_RETRY_BASE="0.5",
        STACDROP_RETRY_MAX="2",
        STACDROP_MAX_RETRIES="2",
    )
    env.update({k: str(v) for k, v in overrides.items()})
    return env


class DaemonProcess:
    def __init__(self, root: Path, env: dict[str, str], args: list[str] | None = None, name: str = "daemon") -> None:
        self.root = root
        self.env = env
        self.args = args or ["run"]
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def log_path(self) -> Path:
        return self.root / f"{self.name}-{self.starts}.log"

    def start(self) -> "DaemonProcess":
        self.starts += 1
        (self.root / "inbox").mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen([*STACDROP, *self.args], env=self.env, cwd=self.root, stdout=log,
                                     stderr=subprocess.STDOUT)
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 60) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
            raise

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.root.glob(f"{self.name}-*.log")))

    def __enter__(self) -> "DaemonProcess":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def ledger_for(env: dict[str, str]) -> Ledger:
    return Ledger(env["STACDROP_LEDGER"])


def bus_for(env: dict[str, str]):
    return open_bus(env["STACDROP_BROKER"])


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, daemon: DaemonProcess | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if daemon is not None and not daemon.alive():
            raise AssertionError(f"daemon exited while waiting for {what}:\n{daemon.logs()[-5000:]}")
        time.sleep(0.2)
    tail = daemon.logs()[-5000:] if daemon else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{tail}")


def settled_jobs(ledger: Ledger, expected: int) -> list[Job] | None:
    """All jobs once ``expected`` of them are in a final state, else None."""
    jobs = ledger.list_jobs(limit=100000)
    final = [j for j in jobs if j.state in ("published", "failed", "skipped")]
    return jobs if len(final) >= expected else None


def catalog_items(stac_root: Path) -> dict[str, dict[str, Any]]:
    """Every item in a static catalog, by ``collection/id``."""
    items = {}
    for path in stac_root.glob("*/*/*.json"):
        data = json.loads(path.read_text())
        if data.get("type") == "Feature":
            items[f"{data['collection']}/{data['id']}"] = data
    return items


def write_collection(inbox: Path, collection_id: str, **extra: Any) -> Path:
    folder = inbox / collection_id
    folder.mkdir(parents=True, exist_ok=True)
    col = {
        "type": "Collection", "stac_version": "1.1.0", "id": collection_id,
        "description": f"Test collection {collection_id}", "license": "CC-BY-4.0",
        "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                   "temporal": {"interval": [["1900-01-01T00:00:00Z", None]]}},
        "links": [], **extra,
    }
    path = folder / "collection.json"
    path.write_text(json.dumps(col))
    return path


def write_sidecar(raster: Path, **fields: Any) -> Path:
    path = raster.with_suffix(".json")
    path.write_text(json.dumps(fields))
    return path

"""Fresh SQLite ledgers and queues opened by several processes at the same moment: schema creation takes
turns (``Ledger.lock``), so no start crashes with "table jobs already exists"."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.daemon import STACDROP, base_env

pytestmark = pytest.mark.e2e  # slow: daemons, servers or many rasters (the fast suite is -m 'not e2e')

ROLES = ("watch", "process", "publish")


def _open_both(root: str, barrier, errors) -> None:
    try:
        barrier.wait(30)
        from stacdrop.bus.sqlite import SqliteBus
        from stacdrop.ledger import Ledger

        ledger, bus = Ledger(f"sqlite:///{root}/ledger.db"), SqliteBus(f"sqlite:///{root}/queue.db")
        ledger.list_jobs()
        ledger.close()
        bus.close()
    except Exception as exc:  # noqa: BLE001 - reported to the test
        errors.put(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")


def test_twenty_rounds_of_six_processes_opening_fresh_files(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    errors = ctx.Queue()
    for n in range(20):
        root = tmp_path / f"round{n}"
        root.mkdir()
        barrier = ctx.Barrier(6)
        procs = [ctx.Process(target=_open_both, args=(str(root), barrier, errors)) for _ in range(6)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(60)
        assert all(p.exitcode == 0 for p in procs)
    found = []
    while not errors.empty():
        found.append(errors.get())
    assert found == []


def _started(proc: subprocess.Popen[bytes], log: Path, deadline: float) -> str:
    """Wait until the role's JSON log says it started; return what it printed otherwise."""
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        for line in text.splitlines():
            try:
                if json.loads(line).get("event") == "stacdrop started":
                    return ""
            except ValueError:
                continue
        if proc.poll() is not None:
            return text[-3000:] or f"exited with {proc.returncode}"
        time.sleep(0.1)
    return "did not start within 60 s"


def test_twenty_simultaneous_starts_of_the_three_roles(tmp_path: Path) -> None:
    failures = []
    for n in range(20):
        root = tmp_path / f"round{n}"
        root.mkdir()
        env = base_env(root)
        logs = [root / f"{role}.log" for role in ROLES]
        procs = [subprocess.Popen([*STACDROP, role], env=env, cwd=root, stdout=subprocess.DEVNULL,
                                  stderr=log.open("wb")) for role, log in zip(ROLES, logs)]
        try:
            deadline = time.monotonic() + 60
            for role, proc, log in zip(ROLES, procs, logs):
                problem = _started(proc, log, deadline)
                if problem:
                    failures.append(f"round {n} {role}: {problem}")
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(30)
    assert failures == []

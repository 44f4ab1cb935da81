"""End to end on RabbitMQ with a PostgreSQL ledger: a watcher, two processors and a publisher as
separate processes, and the faults they must survive (kill -9, broker restart, connections closed by the
server), plus a replay of dead letters after the cause is fixed."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
from pathlib import Path

import pytest
import requests

from tests.support.daemon import (
    STACDROP,
    DaemonProcess,
    ledger_for,
    write_collection,
    write_sidecar,
)
from tests.support.rasters import write_geotiff
from tests.support.stages import (
    MGMT,
    assert_exactly_once,
    bus,
    connections,
    published,
    require_management,
    stop_all,
    wait_stages,
)

pytestmark = pytest.mark.e2e  # slow: daemons, servers or many rasters (the fast suite is -m 'not e2e')


def start_stages(root: Path, env: dict[str, str]) -> dict[str, DaemonProcess]:
    procs = {
        "watch": DaemonProcess(root, env, ["watch"], name="watch"),
        "process-a": DaemonProcess(root, env, ["process"], name="process-a"),
        "process-b": DaemonProcess(root, env, ["process"], name="process-b"),
        "publish": DaemonProcess(root, env, ["publish"], name="publish"),
    }
    for proc in procs.values():
        proc.start()
    return procs


def drop(inbox: Path, count: int, size: int, collection: str = "clim", start: int = 0) -> list[str]:
    ids = []
    for i in range(start, start + count):
        item_id = f"v{i:03d}"
        p = write_geotiff(inbox / collection / f"{item_id}.tif", width=size, height=size, seed=i)
        write_sidecar(p, id=item_id, datetime="2000-01-01")
        ids.append(f"{collection}/{item_id}")
    return ids


def test_separate_stage_processes_publish_every_input_once(tmp_path: Path, rabbit_env: dict[str, str]) -> None:
    inbox = tmp_path / "inbox"
    write_collection(inbox, "clim")
    expected = drop(inbox, 12, 400)
    procs = start_stages(tmp_path, rabbit_env)
    try:
        wait_stages(lambda: published(rabbit_env) >= len(expected) + 1, 180, "all published", procs)
        # both processors took work: prefetch 1 does not let one hold the queue
        ledger = ledger_for(rabbit_env)
        out = subprocess.run([*STACDROP, "queues", "--json"], env=rabbit_env, cwd=tmp_path, capture_output=True,
                             text=True, check=True, timeout=60)
        stats = {q["queue"]: q for q in json.loads(out.stdout)}
        assert stats["process"]["ready"] == 0 and stats["process"]["consumers"] == 2, stats
        assert stats["publish"]["consumers"] == 1 and stats["process"]["dead"] == 0
    finally:
        stop_all(procs)
    for name in ("process-a", "process-b"):
        assert procs[name].proc.returncode == 0, procs[name].logs()[-3000:]  # SIGTERM: clean exit
    assert_exactly_once(rabbit_env, tmp_path, expected)
    assert ledger.list_jobs(limit=1)[0].state == "published"


def test_kill9_processor_mid_conversion(tmp_path: Path, rabbit_env: dict[str, str]) -> None:
    inbox = tmp_path / "inbox"
    write_collection(inbox, "clim")
    expected = drop(inbox, 8, 3000)
    procs = start_stages(tmp_path, rabbit_env)
    ledger = ledger_for(rabbit_env)
    try:
        wait_stages(lambda: ledger.list_jobs(state="processing", limit=1), 120, "a conversion", procs)
        procs["process-a"].kill9()
        time.sleep(1)
        procs["process-a"].start()
        wait_stages(lambda: published(rabbit_env) >= len(expected) + 1, 300, "all published", procs)
    finally:
        stop_all(procs)
    assert_exactly_once(rabbit_env, tmp_path, expected)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


def test_broker_restart_mid_stream(tmp_path: Path, rabbit_env: dict[str, str]) -> None:
    inbox = tmp_path / "inbox"
    write_collection(inbox, "clim")
    expected = drop(inbox, 10, 1500)
    procs = start_stages(tmp_path, rabbit_env)
    try:
        wait_stages(lambda: published(rabbit_env) >= 3, 120, "some published", procs)
        _rabbitmqctl("stop_app")  # every connection drops; the durable queues and persistent messages stay
        time.sleep(3)
        expected += drop(inbox, 4, 400, start=100)  # files dropped while the broker is down
        _rabbitmqctl("start_app")
        _rabbitmqctl("await_startup")
        wait_stages(lambda: published(rabbit_env) >= len(expected) + 1, 300, "all published after the restart",
                    procs)
        for proc in procs.values():
            assert proc.alive(), proc.logs()[-3000:]
    finally:
        stop_all(procs)
    assert_exactly_once(rabbit_env, tmp_path, expected)


def _close_connections(prefix: str) -> int:
    closed = 0
    for conn in connections(prefix):
        requests.delete(f"{MGMT}/connections/{urllib.parse.quote(conn['name'], safe='')}",
                        auth=("guest", "guest"), headers={"X-Reason": "test: closed by the server"}, timeout=10)
        closed += 1
    return closed


def test_connections_closed_by_the_server(tmp_path: Path, rabbit_env: dict[str, str]) -> None:
    require_management()
    inbox = tmp_path / "inbox"
    write_collection(inbox, "clim")
    expected = drop(inbox, 10, 1500)
    procs = start_stages(tmp_path, rabbit_env)
    prefix = rabbit_env["STACDROP_QUEUE_PREFIX"]
    try:
        wait_stages(lambda: published(rabbit_env) >= 2, 120, "some published", procs)
        closed = 0
        for _ in range(2):
            # The management API lists new connections a few seconds late: wait until at least four are
            # listed (the four stage processes hold one or two each), then close them all.
            wait_stages(lambda: len(connections(prefix)) >= 4, 60, "connections of the stages", procs)
            closed += _close_connections(prefix)
            time.sleep(2)
        assert closed >= 8
        wait_stages(lambda: published(rabbit_env) >= len(expected) + 1, 300, "all published", procs)
        for proc in procs.values():
            assert proc.alive(), proc.logs()[-3000:]
    finally:
        stop_all(procs)
    assert_exactly_once(rabbit_env, tmp_path, expected)


def test_replay_after_the_cause_is_fixed(tmp_path: Path, rabbit_env: dict[str, str]) -> None:
    inbox = tmp_path / "inbox"
    # The store's collection folder cannot be created (a file stands in its place): a transient failure
    # that is retried, runs out of retries and ends in the dead letters; then the operator fixes it.
    blocker = tmp_path / "data" / "cogs" / "clim"
    blocker.parent.mkdir(parents=True)
    blocker.write_text("not a directory")
    write_collection(inbox, "clim")
    expected = drop(inbox, 3, 200)
    procs = start_stages(tmp_path, rabbit_env)
    try:
        wait_stages(lambda: len(bus(rabbit_env).dead_letters()) == 3, 120, "dead letters", procs)
        letters = bus(rabbit_env).dead_letters()
        assert all(d.attempts == 3 and d.queue == "process" for d in letters), letters  # 1 try + 2 retries
        blocker.unlink()
        out = subprocess.run([*STACDROP, "dlq", "replay", "--all", "--rate", "20"], env=rabbit_env, cwd=tmp_path,
                             capture_output=True, text=True, check=True, timeout=60)
        assert "replayed 3" in out.stdout, out.stdout + out.stderr
        wait_stages(lambda: published(rabbit_env) >= len(expected) + 1, 120, "replayed jobs published", procs)
    finally:
        stop_all(procs)
    assert_exactly_once(rabbit_env, tmp_path, expected)
    ledger = ledger_for(rabbit_env)
    for job in ledger.list_jobs(limit=100):
        if job.kind != "raster":
            continue
        events = ledger.get(job.id, with_events=True).events
        statuses = [e.status for e in events if e.stage == "process"]
        assert statuses.count("retrying") == 2 and statuses.count("failed") == 1, statuses
        assert statuses[-1] == "succeeded" and "replayed" in statuses
        assert [e.attempt for e in events if e.stage == "process" and e.status == "started"] == [1, 2, 3, 1]
        failure = next(e for e in events if e.status == "failed")
        assert "clim" in failure.message, failure.message

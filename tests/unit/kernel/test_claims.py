"""One live worker per job (stacdrop/claims.py): the claim's semantics on SQLite and PostgreSQL, its
heartbeat, the takeover of a dead owner, and, on a real RabbitMQ, a processor whose broker connection is
cut mid-conversion while a second processor stands by: the job is converted exactly once."""

from __future__ import annotations

import multiprocessing
import os
import re
import signal
import time
from pathlib import Path

import pytest
import requests

from stacdrop import claims
from stacdrop.errors import ClaimedElsewhere
from stacdrop.ledger import Ledger
from tests.support.daemon import DaemonProcess, ledger_for, write_collection, write_sidecar
from tests.support.rasters import write_geotiff
from tests.support.stages import (
    MGMT,
    assert_exactly_once,
    connections,
    published,
    require_management,
    stop_all,
    wait_stages,
)


def test_a_fresh_claim_keeps_others_off_until_it_is_stale(ledger: Ledger) -> None:
    assert ledger.claim("job1", "process", "a", stale_after=0.5)
    assert not ledger.claim("job1", "process", "b", stale_after=0.5)
    assert ledger.claim("job1", "process", "a", stale_after=0.5)  # the owner renews
    assert ledger.claim("job2", "process", "b", stale_after=0.5)  # other jobs are free
    time.sleep(0.7)
    assert ledger.claim("job1", "process", "b", stale_after=0.5)  # stale: taken over
    assert not ledger.claim("job1", "process", "a", stale_after=0.5)  # and the old owner knows it lost it
    ledger.release("job1", "a")  # not a's any more: a no-op
    assert ledger.claim_owner("job1") == "b"
    assert not ledger.claim("job1", "process", "c", stale_after=60)
    assert ledger.claim("job1", "process", "c", stale_after=60, take_from="b")  # b known dead
    ledger.release("job1", "c")
    assert ledger.claim_owner("job1") is None
    assert ledger.claim("job1", "process", "d", stale_after=60)


def _hold_forever(url: str, job_id: str, ready: multiprocessing.synchronize.Event) -> None:
    led = Ledger(url)
    with claims.holding(led, job_id, "process", stale_after=0.8):
        ready.set()
        time.sleep(600)


def test_holding_heartbeats_and_a_dead_owner_is_taken_over_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/ledger.db"
    led = Ledger(url)
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    holder = ctx.Process(target=_hold_forever, args=(url, "job1", ready))
    holder.start()
    try:
        assert ready.wait(60)
        # Three times stale_after: only the heartbeat keeps the claim fresh.
        for _ in range(6):
            time.sleep(0.4)
            with pytest.raises(ClaimedElsewhere, match=f"pid {holder.pid}"):
                with claims.holding(led, "job1", "process", stale_after=0.8):
                    pytest.fail("claimed a job a live worker holds")
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(10)
        started = time.monotonic()
        with claims.holding(led, "job1", "process", stale_after=600) as owner:
            # taken over at once, not after 600 s: the owner's process is gone
            assert time.monotonic() - started < 5
            assert led.claim_owner("job1") == owner
    finally:
        if holder.is_alive():
            holder.kill()
    assert led.claim_owner("job1") == owner  # kept after a success: a redelivery cannot slip in
    with pytest.raises(RuntimeError):
        with claims.holding(led, "job2", "process", stale_after=600):
            raise RuntimeError("conversion failed")
    assert led.claim_owner("job2") is None  # released after a failure: the retry starts at once


# -- a processor's broker connection cut mid-conversion, on RabbitMQ + PostgreSQL ------------------------

def _local_ports(pid: int) -> set[int]:
    """The local TCP ports of ``pid``'s sockets (from /proc: no psutil here)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            match = re.fullmatch(r"socket:\[(\d+)\]", os.readlink(fd))
        except OSError:
            continue
        if match:
            inodes.add(match.group(1))
    ports = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _listed_ports(prefix: str) -> dict[int, str]:
    """peer port -> connection name, of the connections the management API lists for this test's prefix."""
    return {c["peer_port"]: c["name"] for c in connections(prefix)}


def _close_connections_of(pid: int, prefix: str) -> int:
    closed, ports = 0, _local_ports(pid)
    for port, name in _listed_ports(prefix).items():
        if port in ports:
            requests.delete(f"{MGMT}/connections/{requests.utils.quote(name, safe='')}",
                            auth=("guest", "guest"), headers={"X-Reason": "test: cut mid-conversion"}, timeout=10)
            closed += 1
    return closed


@pytest.mark.e2e
def test_a_connection_cut_mid_conversion_converts_once(tmp_path: Path, rabbit_env: dict[str, str]) -> None:
    require_management()
    inbox = tmp_path / "inbox"
    write_collection(inbox, "clim")
    procs = {name: DaemonProcess(tmp_path, rabbit_env, [name.split("-")[0]], name=name)
             for name in ("watch", "publish", "process-a", "process-b")}
    for proc in procs.values():
        proc.start()
    ledger = ledger_for(rabbit_env)
    prefix = rabbit_env["STACDROP_QUEUE_PREFIX"]
    processors = {name: procs[name].proc.pid for name in ("process-a", "process-b")}
    try:
        # Both processors consume, and the management API lists their connections (it lags a few seconds).
        wait_stages(lambda: all(_local_ports(pid) & set(_listed_ports(prefix)) for pid in processors.values()),
                    60, "both processors' connections listed", procs)
        # ~6 s of conversion here: time enough to find the processor that took it and cut its connection.
        staged = write_geotiff(tmp_path / "big.tif", width=9000, height=9000, dtype="uint16", seed=3)
        write_sidecar(inbox / "clim" / "big.tif", id="big", datetime="2000-01-01")
        os.replace(staged, inbox / "clim" / "big.tif")
        job = wait_stages(lambda: next(iter(ledger.list_jobs(state="processing", limit=5)), None), 120,
                          "the conversion", procs)
        holder = wait_stages(lambda: ledger.claim_owner(job.id), 2, "the claim", procs)
        converting = int(holder.split("|")[2])
        assert converting in processors.values()
        # The listing can lag behind a reconnect of the stage's connections: try for a few seconds.
        wait_stages(lambda: _close_connections_of(converting, prefix), 5, "the converting processor's connection",
                    procs)
        assert ledger.get(job.id).state == "processing", "the conversion ended before the cut: use a bigger raster"
        wait_stages(lambda: published(rabbit_env) >= 2, 300, "published", procs)
        for proc in procs.values():
            assert proc.alive(), proc.logs()[-3000:]
    finally:
        stop_all(procs)
    events = ledger.get(job.id, with_events=True).events
    conversions = [e for e in events if e.stage == "process" and e.step == "convert" and e.status == "running"]
    waited = [e for e in events if e.error_class == "claimed_elsewhere"]
    assert len(conversions) == 1, events  # without claims: 2, the second processor converted it again
    assert waited, f"the redelivery never reached the second processor: {events}"  # the case was exercised
    assert ledger.get(job.id).attempts == 1  # the wait was not counted
    assert_exactly_once(rabbit_env, tmp_path, ["clim/big"])

"""Helpers for tests that run the stages as separate processes on RabbitMQ (``rabbit_env`` in conftest):
wait on them with their logs at hand, stop them, count what got published, check every input published
exactly once, and read the broker's connections through the management API."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests

from tests.support.daemon import DaemonProcess, catalog_items, ledger_for

MGMT = "http://127.0.0.1:15672/api"


def bus(env: dict[str, str]):
    from stacdrop.bus.rabbitmq import RabbitBus

    return RabbitBus(env["STACDROP_BROKER"], prefix=env["STACDROP_QUEUE_PREFIX"])


def wait_stages(predicate, timeout: float, what: str, procs: dict[str, DaemonProcess]):
    """wait_until, failing with the tail of every stage's log (and when any stage process died)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        dead = [name for name, proc in procs.items() if not proc.alive()]
        if dead:
            break
        time.sleep(0.2)
    logs = "\n".join(f"--- {name}\n{proc.logs()[-2500:]}" for name, proc in procs.items())
    raise AssertionError(f"{what}: not reached in {timeout}s (dead stages: {dead})\n{logs}")


def stop_all(procs: dict[str, DaemonProcess]) -> None:
    for proc in procs.values():
        proc.stop()


def published(env: dict[str, str]) -> int:
    return len(ledger_for(env).list_jobs(state="published", limit=100000))


def assert_exactly_once(env: dict[str, str], root: Path, expected: list[str]) -> None:
    ledger = ledger_for(env)
    jobs = [j for j in ledger.list_jobs(limit=100000) if j.kind == "raster"]
    assert sorted(j.state for j in jobs) == ["published"] * len(expected), \
        [(j.source_key, j.state, j.error) for j in jobs if j.state != "published"]
    assert len({j.source for j in jobs}) == len(expected)  # one job per source: nothing submitted twice
    assert sorted(catalog_items(root / "data" / "stac")) == sorted(expected)
    for job in jobs:  # each job published once: one "succeeded" publish event
        events = ledger.get(job.id, with_events=True).events
        assert [e.stage for e in events if e.status == "succeeded"].count("publish") == 1, events
    assert bus(env).dead_letters() == []


def require_management() -> None:
    try:
        requests.get(f"{MGMT}/overview", auth=("guest", "guest"), timeout=5).raise_for_status()
    except requests.RequestException:
        pytest.fail("the RabbitMQ management plugin must be enabled (scripts/services.sh does it)")


def connections(prefix: str) -> list[dict]:
    resp = requests.get(f"{MGMT}/connections", auth=("guest", "guest"), timeout=10)
    resp.raise_for_status()
    return [c for c in resp.json() if prefix in (c.get("client_properties") or {}).get("connection_name", "")]


"""GET /metrics with real jobs flowing (``stacdrop run`` + ``stacdrop serve``, embedded default), the
collector's incremental tally on a real ledger, and the drift check of the alert rules and the dashboard
against the metric names the collector exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from stacdrop.ledger import Ledger
from stacdrop.app.metrics import EVENT_GRACE, METRIC_NAMES, StacdropCollector
from tests.support.daemon import wait_until
from tests.support.pipeline import COLLECTION, flowing
from tests.support.services import delete_rabbit_prefix, unique_prefix

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "stacdrop-dashboard.json"
SUFFIXES = ("_bucket", "_count", "_sum")


def parse(text: str) -> dict[str, list[Any]]:
    """Samples by sample name (``x_bucket``, ``x_total``, ...)."""
    samples: dict[str, list[Any]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(sample)
    return samples


def value(samples: dict[str, list[Any]], name: str, **labels: str) -> float | None:
    for s in samples.get(name, []):
        if all(s.labels.get(k) == v for k, v in labels.items()):
            return s.value
    return None


@pytest.fixture(params=["sqlite", pytest.param("rabbitmq", marks=[pytest.mark.rabbitmq, pytest.mark.postgres])])
def engine(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Settings of the deployment: the embedded default, or RabbitMQ with a PostgreSQL ledger."""
    if request.param == "sqlite":
        yield {}
        return
    rabbit_url = request.getfixturevalue("rabbit_url")
    prefix = unique_prefix("metrics")
    yield {"STACDROP_BROKER": rabbit_url, "STACDROP_QUEUE_PREFIX": prefix,
           "STACDROP_LEDGER": request.getfixturevalue("pg_ledger_url")}
    delete_rabbit_prefix(rabbit_url, prefix)


@pytest.mark.e2e
def test_metrics_with_jobs_flowing(tmp_path: Path, engine: dict[str, str]) -> None:
    rabbit = bool(engine)
    with flowing(tmp_path, **engine) as run:
        def scrape() -> dict[str, list[Any]]:
            resp = requests.get(run.api.url + "/metrics", timeout=30)
            assert resp.status_code == 200, resp.text
            assert resp.headers["content-type"].startswith("text/plain")
            return parse(resp.text)

        # The publish event becomes countable once it is older than the grace period.
        samples = wait_until(
            lambda: (s := scrape()) and value(s, "stacdrop_arrival_to_published_seconds_count",
                                              collection=COLLECTION) and s,
            60, "the published raster in the arrival->published histogram", run.daemon,
        )

        # Jobs by state match the ledger.
        by_state: dict[str, float] = {}
        for s in samples["stacdrop_jobs"]:
            by_state[s.labels["state"]] = by_state.get(s.labels["state"], 0) + s.value
        assert by_state == {k: float(v) for k, v in run.ledger.count_by_state().items()}
        assert value(samples, "stacdrop_jobs", state="failed", kind="raster", collection=COLLECTION) == 1
        assert value(samples, "stacdrop_jobs", state="published", kind="collection", collection=COLLECTION) == 1

        # The failed job's error class, and the stage it failed in.
        assert value(samples, "stacdrop_failed_jobs", stage="process", error_class=run.bad.error_class) == 1

        # Queue series for both stages; the bad raster is the process queue's dead letter.
        for queue in ("process", "publish"):
            for status in ("ready", "unacked", "retrying"):
                depth = value(samples, "stacdrop_queue_messages", queue=queue, status=status)
                # RabbitMQ's unacked count comes from its management API, whose counters lag a few seconds.
                assert depth is not None if rabbit and status == "unacked" else depth == 0, (queue, status, depth)
        assert value(samples, "stacdrop_dead_letters", queue="process") == 1
        assert value(samples, "stacdrop_dead_letters", queue="publish") == 0
        assert value(samples, "stacdrop_bus_up") == 1 and value(samples, "stacdrop_ledger_up") == 1

        # Arrival -> published: exactly the one raster, within its own lifetime.
        good = run.ledger.get(run.good.id)
        assert good is not None and good.finished_at is not None
        lifetime = (good.finished_at - good.created_at).total_seconds()
        assert value(samples, "stacdrop_arrival_to_published_seconds_count", collection=COLLECTION) == 1
        assert value(samples, "stacdrop_arrival_to_published_seconds_sum", collection=COLLECTION) == \
            pytest.approx(lifetime, abs=0.01)
        assert value(samples, "stacdrop_arrival_to_published_seconds_bucket", collection=COLLECTION, le="+Inf") == 1

        # Stage durations: two process attempts (one succeeded, one failed) and one publish attempt.
        # (The collection job is published by the publish stage too.)
        assert value(samples, "stacdrop_stage_duration_seconds_count", stage="process", outcome="succeeded") == 1
        assert value(samples, "stacdrop_stage_duration_seconds_count", stage="process", outcome="failed") == 1
        assert value(samples, "stacdrop_stage_duration_seconds_count", stage="publish", outcome="succeeded") == 2

        # Bytes converted: the published raster's source and COG sizes from the ledger.
        assert value(samples, "stacdrop_converted_input_bytes_total", collection=COLLECTION) == good.input_size
        assert value(samples, "stacdrop_converted_cog_bytes_total", collection=COLLECTION) == good.cog_size > 0

        # Every family a real scrape exposes is a documented name (and so checked against the alerts).
        families = {name.removesuffix(sfx) for name in samples for sfx in (*SUFFIXES, "") if name.endswith(sfx)}
        exposed = {f for f in families if f in METRIC_NAMES}
        absent = {"stacdrop_retries_total", "stacdrop_unfinished_job_oldest_age_seconds"}  # nothing to count
        if rabbit:
            # The broker counts every process's consumers: the daemon's stages consume both queues.
            assert value(samples, "stacdrop_queue_consumers", queue="process") >= 1
            assert value(samples, "stacdrop_queue_consumers", queue="publish") >= 1
        else:
            # The API reads the bus from another process: the embedded bus cannot count that process's
            # consumers, so the series is left out rather than reported as 0.
            assert "stacdrop_queue_consumers" not in samples
            absent.add("stacdrop_queue_consumers")
        assert exposed == set(METRIC_NAMES) - absent


# -- the collector on a real SQLite ledger ---------------------------------------------------------------
def test_event_tally_counts_each_event_once_after_the_grace_period(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db")
    now = [datetime.now(timezone.utc)]
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StacdropCollector(ledger, clock=lambda: now[0]))

    def scrape() -> dict[str, list[Any]]:
        return parse(generate_latest(registry).decode())

    job, _ = ledger.create_job(kind="raster", source="/in/c/a.tif", source_key="c/a.tif", content_key="k",
                               collection="c", origin="inbox", priority=0, input_size=1000)
    ledger.record(job.id, stage="process", step="start", status="started", attempt=1, state="processing")
    ledger.record(job.id, stage="process", step="store", status="retrying", attempt=1, state="retrying",
                  error_class="store_unavailable", error="503")
    # Within the grace period nothing from job_events is counted yet (a later commit could still come in).
    assert "stacdrop_retries_total" not in scrape()
    assert value(scrape(), "stacdrop_unfinished_job_oldest_age_seconds", stage="process", state="retrying") == \
        pytest.approx(0, abs=5)

    now[0] += EVENT_GRACE * 2
    first = scrape()
    assert value(first, "stacdrop_retries_total", stage="process", error_class="store_unavailable") == 1
    assert value(first, "stacdrop_stage_duration_seconds_count", stage="process", outcome="retrying") == 1

    ledger.record(job.id, stage="process", step="start", status="started", attempt=2, state="processing")
    now[0] += EVENT_GRACE * 2
    assert value(scrape(), "stacdrop_stage_duration_seconds_count", stage="process", outcome="succeeded") is None
    # The attempt started before the watermark and ends after it: still paired with its start.
    ledger.record(job.id, stage="process", step="finished", status="succeeded", attempt=2, state="publishing",
                  cog_size=400)
    ledger.record(job.id, stage="publish", step="start", status="started", attempt=1, state="publishing")
    ledger.record(job.id, stage="publish", step="finished", status="succeeded", attempt=1, state="published")
    now[0] += EVENT_GRACE * 2
    second = scrape()
    third = scrape()  # nothing new: the same totals, nothing counted twice
    for samples in (second, third):
        assert value(samples, "stacdrop_retries_total", stage="process", error_class="store_unavailable") == 1
        assert value(samples, "stacdrop_stage_duration_seconds_count", stage="process", outcome="retrying") == 1
        assert value(samples, "stacdrop_stage_duration_seconds_count", stage="process", outcome="succeeded") == 1
        assert value(samples, "stacdrop_stage_duration_seconds_count", stage="publish", outcome="succeeded") == 1
        assert value(samples, "stacdrop_arrival_to_published_seconds_count", collection="c") == 1
        assert value(samples, "stacdrop_converted_cog_bytes_total", collection="c") == 400
    assert value(third, "stacdrop_unfinished_job_oldest_age_seconds", stage="publish", state="published") is None
    # The sums are the time between each attempt's start and its outcome, as recorded.
    history = ledger.get(job.id, with_events=True).events  # type: ignore[union-attr]
    at = {(e.stage, e.status, e.attempt): e.at for e in history}
    expected = {
        ("process", "retrying"): at["process", "retrying", 1] - at["process", "started", 1],
        ("process", "succeeded"): at["process", "succeeded", 2] - at["process", "started", 2],
        ("publish", "succeeded"): at["publish", "succeeded", 1] - at["publish", "started", 1],
    }
    for (stage, outcome), took in expected.items():
        assert value(third, "stacdrop_stage_duration_seconds_sum", stage=stage, outcome=outcome) == \
            pytest.approx(took.total_seconds(), abs=0.002)
    assert value(third, "stacdrop_arrival_to_published_seconds_sum", collection="c") == pytest.approx(
        (at["publish", "succeeded", 1] - job.created_at).total_seconds(), abs=0.002)

    # A second collector (an API restart) reads the whole history: the same totals, so no counter reset.
    again = CollectorRegistry(auto_describe=False)
    again.register(StacdropCollector(ledger, clock=lambda: now[0]))
    restarted = parse(generate_latest(again).decode())
    for name in ("stacdrop_retries_total", "stacdrop_stage_duration_seconds_count",
                 "stacdrop_arrival_to_published_seconds_sum"):
        assert sorted((tuple(sorted(s.labels.items())), s.value) for s in restarted[name]) == \
            sorted((tuple(sorted(s.labels.items())), s.value) for s in third[name])
    ledger.close()


def test_ledger_down_is_reported_not_raised(tmp_path: Path) -> None:
    ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db")
    ledger.engine.dispose()
    (tmp_path / "ledger.db").unlink()
    (tmp_path / "ledger.db").mkdir()  # the path is no longer a database file
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StacdropCollector(ledger))
    samples = parse(generate_latest(registry).decode())
    assert value(samples, "stacdrop_ledger_up") == 0
    assert "stacdrop_jobs" not in samples


# -- alert rules and dashboard: every expression names metrics the collector exposes ----------------
def _names_in(expr: str) -> set[str]:
    return set(re.findall(r"\bstacdrop_[a-z0-9_]+", expr))


def _known(name: str) -> bool:
    return name in METRIC_NAMES or any(name.endswith(s) and name.removesuffix(s) in METRIC_NAMES for s in SUFFIXES)


def test_alert_rules_name_exposed_metrics() -> None:
    rules = yaml.safe_load(ALERTS.read_text())
    alerts = [r for g in rules["groups"] for r in g["rules"]]
    assert {r["alert"] for r in alerts} >= {"StacdropDeadLetters", "StacdropJobStuck", "StacdropQueueWithoutConsumer"}
    for rule in alerts:
        names = _names_in(rule["expr"])
        assert names, f"{rule['alert']}: expr names no stacdrop metric: {rule['expr']}"
        unknown = {n for n in names if not _known(n)}
        assert not unknown, f"{ALERTS.name}: alert {rule['alert']} uses {sorted(unknown)}, not exposed by the collector"
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]


def test_alert_rules_with_promtool() -> None:
    """promtool (Debian package prometheus) checks the config and rule syntax and runs the rules' unit
    tests (deploy/prometheus/alerts_test.yml: each alert fires on the series it is for, and only then)."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install --no-install-recommends prometheus); "
                    "the drift check above still ran")
    for args in (["check", "config", "prometheus.yml"], ["test", "rules", "alerts_test.yml"]):
        done = subprocess.run([promtool, *args], cwd=ALERTS.parent, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


def test_dashboard_panels_name_exposed_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 7
    used: set[str] = set()
    for title, expr in exprs:
        unknown = {n for n in _names_in(expr) if not _known(n)}
        assert not unknown, f"{DASHBOARD.name}: panel {title!r} uses {sorted(unknown)}, not exposed by the collector"
        used |= _names_in(expr)
    families = {n.removesuffix(s) for n in used for s in (*SUFFIXES, "") if n.endswith(s) and _known(n)}
    for required in ("stacdrop_queue_messages", "stacdrop_dead_letters", "stacdrop_jobs",
                     "stacdrop_arrival_to_published_seconds", "stacdrop_stage_duration_seconds",
                     "stacdrop_retries_total", "stacdrop_converted_cog_bytes_total"):
        assert required in families, f"no dashboard panel shows {required}"

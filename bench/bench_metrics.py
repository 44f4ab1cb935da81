"""Cost of a /metrics scrape (stacdrop/app/metrics.py) and of GET /footprints on a large PostgreSQL ledger.

Creates a fresh database, lets ``Ledger`` create its schema, then fills it with SQL (generate_series, no
Python loop): N jobs (default 200,000: one collection is up to 229,000 items) with the event history a
real run leaves (created, queued, process started + 5 steps + succeeded, publish started + 2 steps +
succeeded: 12 events per job), 1 % failed and 2 % with a retry. Then it times:

- the first scrape of a fresh collector (it tallies the whole event history once),
- later scrapes with nothing new, and after 1,000 more jobs' events (the steady state),
- the footprints query of the status page.

    .venv/bin/python bench/bench_metrics.py [--jobs 200000] [--dsn "host=127.0.0.1 user=postgres"] [--keep]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from pathlib import Path

import psycopg
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from stacdrop.app.api.page import latest_footprints
from stacdrop.ledger import Ledger
from stacdrop.app.metrics import StacdropCollector

FILL_JOBS = """
INSERT INTO jobs (id, kind, source, source_key, content_key, collection, item_id, origin, priority, state,
                  stage, step, attempts, error_class, error, input_size, cog_size, item_bbox, params,
                  created_at, updated_at, finished_at)
SELECT md5(g::text), 'raster', '/inbox/c/' || g || '.tif', 'c/' || g || '.tif', md5(g::text || 'c'),
       'coll-' || (g % 3), 'item-' || g, 'inbox', 0,
       CASE WHEN g % 100 = 0 THEN 'failed' WHEN g % 997 = 0 THEN 'processing' ELSE 'published' END,
       CASE WHEN g % 100 = 0 THEN 'process' WHEN g % 997 = 0 THEN 'process' ELSE 'publish' END,
       CASE WHEN g % 100 = 0 THEN 'validate' ELSE 'finished' END, 1,
       CASE WHEN g % 100 = 0 THEN 'invalid_raster' END, CASE WHEN g % 100 = 0 THEN 'not a GeoTIFF' END,
       1000000 + g, 800000 + g,
       '[' || (g % 360 - 180) || ', ' || (g % 170 - 85) || ', ' || (g % 360 - 179) || ', ' || (g % 170 - 84) || ']',
       '{{}}', t0 + g * interval '1 second', t0 + g * interval '1 second' + (g % 600) * interval '1 second',
       CASE WHEN g % 100 = 0 OR g % 997 = 0 THEN NULL
            ELSE t0 + g * interval '1 second' + (g % 600) * interval '1 second' END
FROM generate_series({lo}, {hi}) AS g, (SELECT now() - interval '30 days' AS t0) AS base
"""

# Twelve events per job, in order: (offset seconds, stage, step, status, error_class)
EVENTS = [
    (0, "watch", "queued", "created", None), (0, "watch", "queued", "queued", None),
    (1, "process", "start", "started", None), (1, "process", "fetch", "running", None),
    (1, "process", "validate", "running", None), (2, "process", "convert", "running", None),
    (4, "process", "store", "running", None), (4, "process", "metadata", "running", None),
    (5, "process", "finished", "succeeded", None), (6, "publish", "start", "started", None),
    (6, "publish", "derive", "running", None), (7, "publish", "finished", "succeeded", None),
]


def fill_events(lo: int, hi: int) -> str:
    values = ", ".join(
        f"({i}, {off}, '{stage}', '{step}', '{status}')" for i, (off, stage, step, status, _) in enumerate(EVENTS)
    )
    # Every 50th job has a retried process attempt (catalog_unavailable) before its success.
    return f"""
    INSERT INTO job_events (job_id, at, stage, step, status, attempt, error_class, message)
    SELECT md5(g::text), now() - interval '30 days' + g * interval '1 second' + e.off * (g % 90) * interval '1 second',
           e.stage, e.step,
           CASE WHEN g % 50 = 0 AND e.i = 8 THEN 'retrying' ELSE e.status END, 1,
           CASE WHEN g % 50 = 0 AND e.i = 8 THEN 'catalog_unavailable' END, NULL
    FROM generate_series({lo}, {hi}) AS g, (VALUES {values}) AS e(i, off, stage, step, status)
    ORDER BY g, e.i
    """


def timed(fn, repeat: int = 1) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=200_000)
    ap.add_argument("--dsn", default="host=127.0.0.1 user=postgres")
    ap.add_argument("--keep", action="store_true", help="keep the database")
    args = ap.parse_args()
    db = f"bench_metrics_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.dsn + " dbname=postgres", autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {db}")
    url = f"postgresql://postgres@127.0.0.1:5432/{db}"
    try:
        ledger = Ledger(url)
        t = time.perf_counter()
        with psycopg.connect(args.dsn + f" dbname={db}", autocommit=True) as conn:
            conn.execute(FILL_JOBS.format(lo=1, hi=args.jobs))
            conn.execute(fill_events(1, args.jobs))
            conn.execute("ANALYZE")
            (events,) = conn.execute("SELECT count(*) FROM job_events").fetchone()
        print(f"filled {args.jobs:,} jobs and {events:,} events in {time.perf_counter() - t:.1f} s")

        registry = CollectorRegistry(auto_describe=False)
        registry.register(StacdropCollector(ledger))
        first = timed(lambda: generate_latest(registry))[0]
        size = len(generate_latest(registry))
        idle = timed(lambda: generate_latest(registry), repeat=5)
        with psycopg.connect(args.dsn + f" dbname={db}", autocommit=True) as conn:
            # 1,000 jobs of the last hour (their timestamps start an hour ago, not 30 days + N seconds later)
            recent = f"now() - interval '1 hour' - interval '{args.jobs} seconds'"
            conn.execute(FILL_JOBS.format(lo=args.jobs + 1, hi=args.jobs + 1000).replace(
                "now() - interval '30 days'", recent))
            conn.execute(fill_events(args.jobs + 1, args.jobs + 1000).replace("now() - interval '30 days'", recent))
        steady = timed(lambda: generate_latest(registry))[0]
        fresh = CollectorRegistry(auto_describe=False)
        fresh.register(StacdropCollector(ledger))
        footprints = timed(lambda: latest_footprints(ledger, 50), repeat=5)
        print(f"first scrape (whole event history): {first * 1000:.0f} ms, exposition {size:,} bytes")
        print(f"scrape, nothing new:               median {statistics.median(idle) * 1000:.0f} ms "
              f"(min {min(idle) * 1000:.0f}, max {max(idle) * 1000:.0f})")
        print(f"scrape after 1,000 more jobs:      {steady * 1000:.0f} ms")
        print(f"footprints (latest 50):            median {statistics.median(footprints) * 1000:.1f} ms")
        # The totals, against the ledger: every published raster counted once, every stage attempt once.
        samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
                   for fam in text_string_to_metric_families(generate_latest(registry).decode()) for s in fam.samples}
        arrivals = sum(v for (name, _), v in samples.items() if name == "stacdrop_arrival_to_published_seconds_count")
        attempts = sum(v for (name, _), v in samples.items() if name == "stacdrop_stage_duration_seconds_count")
        with psycopg.connect(args.dsn + f" dbname={db}") as conn:
            (published,) = conn.execute("SELECT count(*) FROM jobs WHERE state = 'published'").fetchone()
            (outcomes,) = conn.execute("SELECT count(*) FROM job_events WHERE status IN "
                                       "('succeeded', 'retrying', 'failed') AND stage <> 'watch'").fetchone()
        print(f"arrival->published count {arrivals:,.0f} (published jobs {published:,}); "
              f"stage attempts {attempts:,.0f} (outcome events {outcomes:,})")
        ledger.close()
    finally:
        if not args.keep:
            with psycopg.connect(args.dsn + " dbname=postgres", autocommit=True) as admin:
                admin.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        else:
            print(f"kept database {db}")


if __name__ == "__main__":
    main()

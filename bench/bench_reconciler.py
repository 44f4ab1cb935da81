"""The S3 inbox reconciler's diff on a prefix of 1,000,000 keys, against the ledger holding them.

A synthetic sorted listing (half rasters, half sidecars, as ListObjectsV2 would return them) is merge-
joined with ``Ledger.iter_fingerprints`` on a SQLite ledger seeded with every key, with a few thousand
changes (changed ETags, new keys, deleted keys); the result goes through ``group_siblings`` as the inbox
uses it. Baseline: the same diff done naively, both sides loaded into dicts. Each is timed without
tracemalloc, then run again under tracemalloc for its peak Python memory.

    .venv/bin/python bench/bench_reconciler.py [--keys 1000000] [--changes 3000]
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from stacdrop.ledger import Ledger
from stacdrop.ledger.schema import fingerprints  # seeded in bulk, below the Ledger API
from watcher.s3reconcile import Group, Obj, group_siblings, merge_diff

NS = "s3://inbox/drop/"
BATCH = 20000  # what the inbox asks for (stacdrop.intake.Intake.iter_fingerprints)


def rel(i: int) -> str:
    n = i // 2
    return f"coll{n // 50000:02d}/tile {n:07d}." + ("json" if i % 2 == 0 else "tif")


def etag(i: int, changed: set[int]) -> str:
    return f"{i:032x}" if i not in changed else f"{i + 1:032x}"


def seed(ledger: Ledger, keys: int, deleted: set[int]) -> None:
    now = datetime.now(timezone.utc)
    batch = []
    with ledger.engine.begin() as conn:
        for i in range(keys):
            if i in deleted:
                continue  # deleted from the ledger's point of view = new in the listing (and vice versa below)
            batch.append({"key": NS + rel(i), "fingerprint": f"{i:032x}:{1000 + i}", "updated_at": now})
            if len(batch) == 20000:
                conn.execute(fingerprints.insert(), batch)
                batch.clear()
        if batch:
            conn.execute(fingerprints.insert(), batch)


def listing(keys: int, changed: set[int], gone: set[int]) -> Iterator[Obj]:
    for i in range(keys):
        if i not in gone:
            yield Obj(rel(i), etag(i, changed), 1000 + i)


def streamed(ledger: Ledger, keys: int, changed: set[int], gone: set[int]) -> tuple[int, int]:
    known = ((k[len(NS):], fp) for k, fp in ledger.iter_fingerprints(NS, BATCH))
    reported = deleted = 0
    for item in group_siblings(merge_diff(listing(keys, changed, gone), known)):
        if isinstance(item, Group):
            reported += len(item.changed)
        else:
            deleted += 1
    return reported, deleted


def diff_only(ledger: Ledger, keys: int, changed: set[int], gone: set[int]) -> tuple[int, int]:
    """The merge-join alone, without the sibling grouping (what the naive baseline computes)."""
    known = ((k[len(NS):], fp) for k, fp in ledger.iter_fingerprints(NS, BATCH))
    reported = deleted = 0
    for status, _obj, _rel in merge_diff(listing(keys, changed, gone), known):
        if status in ("new", "changed"):
            reported += 1
        elif status == "gone":
            deleted += 1
    return reported, deleted


def naive(ledger: Ledger, keys: int, changed: set[int], gone: set[int]) -> tuple[int, int]:
    import sqlalchemy as sa

    listed = {o.rel: o.fingerprint for o in listing(keys, changed, gone)}
    with ledger.engine.connect() as conn:
        known = {k[len(NS):]: fp for k, fp in conn.execute(sa.select(fingerprints.c.key, fingerprints.c.fingerprint))}
    reported = sum(1 for k, fp in listed.items() if known.get(k) != fp)
    deleted = sum(1 for k in known if k not in listed)
    return reported, deleted


def measure(fn, *args) -> tuple[float, float, tuple[int, int]]:
    started = time.perf_counter()
    result = fn(*args)
    seconds = time.perf_counter() - started
    tracemalloc.start()
    fn(*args)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return seconds, peak / 2**20, result


def peak_rss_mib() -> float:
    """The process's peak resident set so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--changes", type=int, default=3000)
    args = parser.parse_args()
    rng = random.Random(4)
    picks = rng.sample(range(args.keys), args.changes * 5 // 3)
    third = args.changes // 3
    changed = set(picks[: args.changes])  # new ETag
    new = set(picks[args.changes: args.changes + third])  # not in the ledger yet
    gone = set(picks[args.changes + third:])  # in the ledger, deleted from the bucket
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(f"sqlite:///{tmp}/ledger.db")
        started = time.perf_counter()
        seed(ledger, args.keys, new)
        print(f"seeded {args.keys - len(new):,} fingerprints in {time.perf_counter() - started:.1f} s; listing "
              f"{args.keys - len(gone):,} keys: {len(changed):,} changed, {len(new):,} new, {len(gone):,} deleted")
        seeded_rss = peak_rss_mib()
        s_time, s_mem, s_res = measure(streamed, ledger, args.keys, changed, gone)
        streamed_rss = peak_rss_mib()  # before the naive baseline (which holds both sides) runs
        d_time, d_mem, d_res = measure(diff_only, ledger, args.keys, changed, gone)
        n_time, n_mem, n_res = measure(naive, ledger, args.keys, changed, gone)
        ledger.close()
    expected = len(changed - gone) + len(new - gone)
    print(f"merge-join (streamed):  {s_time:6.2f} s  peak {s_mem:8.1f} MiB  "
          f"reported {s_res[0]:,}  deleted {s_res[1]:,}")
    print(f"peak RSS: {seeded_rss:.0f} MiB after seeding, {streamed_rss:.0f} MiB after the streamed runs "
          f"(the naive baseline runs last)")
    print(f"merge-join, no grouping: {d_time:5.2f} s  peak {d_mem:8.1f} MiB  "
          f"reported {d_res[0]:,}  deleted {d_res[1]:,}")
    print(f"naive (two dicts):      {n_time:6.2f} s  peak {n_mem:8.1f} MiB  "
          f"reported {n_res[0]:,}  deleted {n_res[1]:,}")
    print(f"ratio naive/streamed:   time {n_time / s_time:.2f}x  memory {n_mem / s_mem:.0f}x "
          f"(naive/merge-join alone: time {n_time / d_time:.2f}x  memory {n_mem / d_mem:.0f}x)")
    assert s_res[0] == d_res[0] == n_res[0] == expected, (s_res, d_res, n_res, expected)
    assert s_res[1] == n_res[1] == len(gone - new)


if __name__ == "__main__":
    main()

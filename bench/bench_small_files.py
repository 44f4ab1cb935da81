"""Drop N small rasters (512 x 512 uint16) with sidecars into a running daemon and time drop -> item.

Baseline in the same invocation: the bare GDAL COG driver converting the same files one after another in
this process (no watcher, no queue, no ledger, no item). Prints items per second end to end and the
per-file overhead of the pipeline against the bare conversion.

    .venv/bin/python bench/bench_small_files.py [--count 200] [--workers 1] [--broker amqp://...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import rasterio
import rasterio.shutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.daemon import DaemonProcess, base_env, ledger_for, wait_until, write_collection
from tests.support.rasters import write_geotiff
from processor.cogeo import ENV, cog_creation_options

# The same creation options and GDAL environment as the processor (default "average" resampling).
COG_OPTIONS = dict(driver="COG", **cog_creation_options(resampling="average"))



def make_inputs(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"r{i:04d}.tif"
        if not path.exists():
            write_geotiff(path, width=512, height=512, dtype="uint16", nodata=0, seed=i)
        (folder / f"r{i:04d}.json").write_text(json.dumps({"id": f"r{i:04d}", "datetime": "2000-01-01"}))
        paths.append(path)
    return paths


def bare_conversion(paths: list[Path], out: Path) -> float:
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    for path in paths:
        with rasterio.Env(**ENV):
            rasterio.shutil.copy(str(path), str(out / path.name), **COG_OPTIONS)
    return time.perf_counter() - start


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of ``pid`` and its direct children, from /proc (Linux)."""
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == pid or int(fields[1]) == pid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _idle(pid: int, window: float = 0.5, threshold: float = 0.05) -> bool:
    before = _cpu_seconds(pid)
    time.sleep(window)
    return _cpu_seconds(pid) - before < threshold


def pipeline(paths: list[Path], root: Path, workers: int, broker: str | None) -> tuple[float, float, float]:
    extra = {"STACDROP_WORKERS": str(workers), "STACDROP_LOG_LEVEL": "warning"}
    if broker:
        extra["STACDROP_BROKER"] = broker
    env = base_env(root, **extra)
    inbox = root / "inbox"
    write_collection(inbox, "bench")
    ledger = ledger_for(env)
    with DaemonProcess(root, env) as daemon:
        wait_until(lambda: ledger.list_jobs(state="published", limit=1), 60, "collection published", daemon)
        # A running daemon, not a starting one: processor processes (--workers 2) spend about a second of
        # CPU importing after the collection is already published. Wait until the process tree is idle.
        wait_until(lambda: _idle(daemon.proc.pid), 60, "daemon idle after start-up", daemon)
        staging = inbox / ".staging"  # hidden: the watcher ignores it; renames out of it are atomic drops
        staging.mkdir()
        for path in paths:
            shutil.copy(path, staging / path.name)
            shutil.copy(path.with_suffix(".json"), staging / path.with_suffix(".json").name)
        cpu_before = _cpu_seconds(daemon.proc.pid)
        start = time.perf_counter()
        for path in paths:
            os.rename(staging / path.with_suffix(".json").name, inbox / "bench" / path.with_suffix(".json").name)
            os.rename(staging / path.name, inbox / "bench" / path.name)
        dropped = time.perf_counter() - start
        wait_until(lambda: ledger.count_by_state().get("published", 0) >= len(paths) + 1, 1800,
                   "all items published", daemon)
        elapsed = time.perf_counter() - start
        cpu = _cpu_seconds(daemon.proc.pid) - cpu_before
        failed = ledger.list_jobs(state="failed", limit=5)
        if failed:
            raise SystemExit(f"failures: {[(j.source_key, j.error) for j in failed]}")
    return elapsed, dropped, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--broker", default=None, help="amqp://... to run on RabbitMQ instead of SQLite")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="stacdrop-bench-"))
    try:
        paths = make_inputs(Path(__file__).parent / "out" / "small", args.count)
        bare = statistics.median(bare_conversion(paths, work / f"bare{r}") for r in range(max(1, args.repeat)))
        print(f"bare COG driver: {args.count} files in {bare:.2f} s = {args.count / bare:.1f} files/s, "
              f"{1000 * bare / args.count:.1f} ms/file")
        for workers in args.workers:
            runs = [pipeline(paths, work / f"w{workers}-{r}", workers, args.broker) for r in range(max(1, args.repeat))]
            elapsed = statistics.median(r[0] for r in runs)
            cpu_ms = 1000 * statistics.median(r[2] for r in runs) / args.count
            overhead_ms = 1000 * (elapsed - bare) / args.count
            print(f"pipeline, {workers} processor worker(s): {args.count} items in {elapsed:.2f} s = "
                  f"{args.count / elapsed:.1f} items/s (aim >= 40); overhead vs bare conversion "
                  f"{overhead_ms:+.1f} ms/file; ratio pipeline/bare = {elapsed / bare:.2f}; "
                  f"daemon CPU {cpu_ms:.1f} ms/item")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Items per second into a real stac-fastapi-pgstac: stacdrop's StacApiSink against the baselines.

One invocation starts its own stac-fastapi-pgstac (tests/support/stac_api.py: fresh database, pypgstac migrate,
uvicorn) and publishes N small items (default 2,000) into a fresh collection per method:

- sink.put_items   StacApiSink.put_items (bulk upsert in chunks of --batch, two in flight, existence
                   check, read-back check by POST /search, incremental extent): what a batching
                   publisher gets;
- publisher stage  stacdrop's publish stage end to end: N raster-ready messages already on the bus (embedded
                   SQLite bus and ledger by default; --broker/--ledger for RabbitMQ/PostgreSQL), the
                   StageRunner with the batch handler (derive, validate, put_items, ledger outcome, ack) until
                   the ledger says all N are published: the number the issue's aim is about;
- sink.put_item    StacApiSink.put_item per item (POST, read-back GET; today's publish stage, one item
                   per message): for information;
- requests loop    (a) one POST per item from a plain requests.Session, no checks;
- pypgstac load    (b) pypgstac's Loader straight into the database (the floor: no HTTP at all).

    .venv/bin/python bench/bench_stac_publish.py [--n 2000] [--batch 500] [--dsn "host=127.0.0.1 user=postgres"]

Prints items/s per method and the ratios to the plain requests loop and to pypgstac load.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from publisher.stac_api import StacApiSink
from stacdrop.config import Settings
from tests.support.stac_api import StacApiServer, check_available


def make_collection(cid: str) -> dict:
    return {"type": "Collection", "stac_version": "1.1.0", "stac_extensions": [], "id": cid,
            "description": "bench", "license": "other", "links": [],
            "extent": {"spatial": {"bbox": [[-180.0, -90.0, 180.0, 90.0]]},
                       "temporal": {"interval": [["1970-01-01T00:00:00Z", None]]}}}


def make_items(cid: str, n: int) -> list[dict]:
    items = []
    for i in range(n):
        w, s = -170.0 + (i % 340), -80.0 + (i % 160)
        items.append({
            "type": "Feature", "stac_version": "1.1.0",
            "stac_extensions": ["https://stac-extensions.github.io/file/v2.1.0/schema.json"],
            "id": f"item-{i:05d}", "collection": cid,
            "geometry": {"type": "Polygon", "coordinates": [[[w, s], [w + 1, s], [w + 1, s + 1], [w, s + 1], [w, s]]]},
            "bbox": [w, s, w + 1, s + 1],
            "properties": {"datetime": f"{1980 + i % 40}-01-01T00:00:00Z", "variable": f"v{i % 7}"},
            "links": [],
            "assets": {"data": {"href": f"https://data.example/{cid}/item-{i:05d}.tif",
                                "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                                "roles": ["data"], "file:size": 1000 + i,
                                "file:checksum": "1220" + f"{i:064x}"}},
        })
    return items


def count(url: str, cid: str) -> int:
    resp = requests.get(f"{url}/collections/{cid}/items", params={"limit": 1}, timeout=30)
    resp.raise_for_status()
    body = resp.json()
    matched = body.get("numberMatched") or body.get("context", {}).get("matched")
    if matched is None:
        ids = requests.post(f"{url}/search", json={"collections": [cid], "limit": 10000,
                                                    "fields": {"include": ["id"]}}, timeout=60).json()["features"]
        matched = len(ids)
    return int(matched)


def run_sink_bulk(url: str, items: list[dict], batch: int) -> None:
    sink = StacApiSink(url, Settings(stac_batch_size=batch).stac_api)  # two chunks in flight (the default)
    out = sink.put_items(items, "replace")
    bad = [o for o in out if not o.ok]
    assert not bad, bad[:3]


def run_sink_single(url: str, items: list[dict], batch: int) -> None:  # noqa: ARG001
    sink = StacApiSink(url, Settings().stac_api)
    for item in items:
        sink.put_item(item, "replace")


def make_ready_messages(cid: str, n: int) -> list:
    """Raster-ready bodies as the processor emits them (EPSG:4326 1-degree tiles, a datetime per sidecar)."""
    from stacdrop.messages import BandMetadata, RasterMetadata, RasterReady, Source, StoredObject
    from stacdrop.sidecar import sidecar_from_dict

    bodies = []
    for i in range(n):
        w, s = -170.0 + (i % 340), -80.0 + (i % 160)
        key = f"{cid}/item-{i:05d}.tif"
        sidecar = sidecar_from_dict({"id": f"item-{i:05d}", "datetime": f"{1980 + i % 40}-01-01T00:00:00Z",
                                     "properties": {"variable": f"v{i % 7}"}}, "sidecar.json")
        bodies.append(RasterReady(
            source=Source(url=f"/inbox/{key}", key=key, content_key=f"{i:064x}"), collection=cid,
            sidecar=sidecar.model_dump(), sidecar_name=f"item-{i:05d}.json",
            cog=StoredObject(href=f"https://data.example/{key}", key=key, size=1000 + i, sha256=f"{i:064x}"),
            raster=RasterMetadata(width=120, height=120, count=1, crs_epsg=4326,
                                  transform=[1 / 120, 0.0, w, 0.0, -1 / 120, s + 1], bounds=[w, s, w + 1, s + 1],
                                  bands=[BandMetadata(data_type="int16", nodata=-32768, spatial_resolution=1 / 120,
                                                      statistics={"minimum": 0.0, "maximum": 9.0, "mean": 4.0,
                                                                  "stddev": 1.0, "valid_percent": 100.0})]),
        ))
    return bodies


def run_publisher_stage(url: str, cid: str, n: int, batch: int, broker: str | None, ledger_url: str | None) -> float:
    """Seconds for the publish stage to publish ``n`` queued messages (enqueueing is not timed)."""
    import tempfile
    import threading

    from publisher.handler import make_publish_batch_handler, make_publish_handler, open_sink
    from stacdrop.app.components import open_bus as open_bus_for
    from stacdrop.ledger import JobState, Ledger
    from stacdrop.messages import PUBLISH_QUEUE, Envelope
    from stacdrop.retry import RetryPolicy
    from stacdrop.runtime import StageRunner

    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(stac=url, stac_batch_size=batch, broker=broker or f"sqlite:///{tmp}/bus.db",
                            ledger=ledger_url or f"sqlite:///{tmp}/ledger.db", queue_prefix=f"bench{cid}")
        ledger, bus = Ledger(settings.ledger), open_bus_for(settings)
        if ledger.count_by_state():
            raise SystemExit(f"--ledger {ledger_url}: not empty (the stage is timed by counting its published jobs)")
        bus.setup()
        for body in make_ready_messages(cid, n):
            job, _ = ledger.create_job(kind="raster", source=body.source.url, source_key=body.source.key,
                                       content_key=body.source.content_key, collection=cid, origin="bench",
                                       priority=1)
            bus.publish(PUBLISH_QUEUE, Envelope.wrap(job.id, body))
        sink = open_sink(settings, ledger)
        runner = StageRunner(
            "publish", make_publish_handler(settings.collection_settings, sink, ledger), bus=bus, ledger=ledger,
            policy=RetryPolicy(), batch_handler=make_publish_batch_handler(settings.collection_settings, sink, ledger),
            batch_size=settings.stac_api.batch_size, batch_window=settings.stac_api.publish_batch_window,
        )
        stop = threading.Event()
        done_at: list[float] = []

        def watch() -> None:  # the stage runs in this thread (profilers see it); this one says when it is done
            while not stop.is_set() and ledger.count_by_state().get(JobState.PUBLISHED, 0) < n:
                time.sleep(0.05)
            done_at.append(time.perf_counter())
            stop.set()

        t0 = time.perf_counter()
        threading.Thread(target=watch, daemon=True).start()
        runner.run(stop)
        elapsed = done_at[0] - t0
        counts = ledger.count_by_state()
        assert counts == {JobState.PUBLISHED: n}, counts
        if hasattr(bus, "delete_topology"):
            bus.delete_topology()
        bus.close()
        ledger.close()
    return elapsed


def run_requests_loop(url: str, items: list[dict], batch: int) -> None:  # noqa: ARG001
    session = requests.Session()
    for item in items:
        resp = session.post(f"{url}/collections/{item['collection']}/items", json=item, timeout=30)
        assert resp.status_code in (200, 201), resp.text[:200]


def run_pypgstac(dsn: str, items: list[dict]) -> None:
    from pypgstac.db import PgstacDB
    from pypgstac.load import Loader, Methods

    with PgstacDB(dsn=dsn) as db:
        Loader(db=db).load_items(iter(items), insert_mode=Methods.insert)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=250)
    parser.add_argument("--dsn", default="host=127.0.0.1 port=5432 user=postgres dbname=postgres")
    parser.add_argument("--skip-single", action="store_true", help="skip the sink.put_item-per-item run")
    parser.add_argument("--broker", default=None, help="publisher stage: bus URL (default: embedded SQLite)")
    parser.add_argument("--ledger", default=None,
                        help="publisher stage: URL of an empty ledger database (default: SQLite)")
    args = parser.parse_args()

    check_available(args.dsn)
    server = StacApiServer(args.dsn).create()
    try:
        server.start()
        url = server.url
        methods = [("sink.put_items", run_sink_bulk), ("requests loop (a)", run_requests_loop)]
        if not args.skip_single:
            methods.append(("sink.put_item", run_sink_single))
        results: dict[str, float] = {}
        warm = f"warmup-{uuid.uuid4().hex[:6]}"
        requests.post(f"{url}/collections", json=make_collection(warm), timeout=30).raise_for_status()
        run_requests_loop(url, make_items(warm, 20), 0)
        for name, func in methods:
            cid = f"bench-{uuid.uuid4().hex[:6]}"
            requests.post(f"{url}/collections", json=make_collection(cid), timeout=30).raise_for_status()
            items = make_items(cid, args.n)
            t0 = time.perf_counter()
            func(url, copy.deepcopy(items), args.batch)
            elapsed = time.perf_counter() - t0
            assert count(url, cid) == args.n, (name, count(url, cid))
            results[name] = args.n / elapsed
            print(f"{name:<20} {args.n} items in {elapsed:7.2f} s  {results[name]:8.0f} items/s", flush=True)
        cid = f"bench-{uuid.uuid4().hex[:6]}"
        requests.post(f"{url}/collections", json=make_collection(cid), timeout=30).raise_for_status()
        elapsed = run_publisher_stage(url, cid, args.n, max(args.batch, 500), args.broker, args.ledger)
        assert count(url, cid) == args.n
        results["publisher stage"] = args.n / elapsed
        print(f"{'publisher stage':<20} {args.n} items in {elapsed:7.2f} s  {results['publisher stage']:8.0f} items/s",
              flush=True)
        cid = f"bench-{uuid.uuid4().hex[:6]}"
        requests.post(f"{url}/collections", json=make_collection(cid), timeout=30).raise_for_status()
        items = make_items(cid, args.n)
        t0 = time.perf_counter()
        run_pypgstac(server.dsn, items)
        elapsed = time.perf_counter() - t0
        assert count(url, cid) == args.n
        results["pypgstac load (b)"] = args.n / elapsed
        print(f"{'pypgstac load (b)':<20} {args.n} items in {elapsed:7.2f} s  "
              f"{results['pypgstac load (b)']:8.0f} items/s")

        loop, floor = results["requests loop (a)"], results["pypgstac load (b)"]
        print()
        for name, rate in results.items():
            print(f"{name:<20} {rate:8.0f} items/s  x{rate / loop:5.1f} the requests loop  "
                  f"{100 * rate / floor:5.1f} % of pypgstac load")
    finally:
        server.drop()


if __name__ == "__main__":
    main()

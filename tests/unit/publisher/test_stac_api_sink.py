"""StacApiSink against a real stac-fastapi-pgstac (tests/support/stac_api.py)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import requests

from publisher.errors import CatalogAuthError, CatalogMismatch
from publisher.stac_api import StacApiSink
from publisher.verify import read_back_difference
from stacdrop.config import Settings
from stacdrop.errors import CatalogUnavailable, DuplicateItem, InvalidItem, UnknownCollection
from tests.support.stac_api import TOKEN
from tests.support.services import free_port
from tests.support.stac_items import make_collection, make_item

pytestmark = pytest.mark.postgres


@pytest.fixture
def cid() -> str:
    return f"col-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def sink(stac_api_url: str, cid: str):
    s = StacApiSink(stac_api_url, Settings().stac_api)
    s.upsert_collection(make_collection(cid))
    yield s
    s.close()


def search(url: str, **body):
    resp = requests.post(f"{url}/search", json={"limit": 100, **body}, timeout=10)
    resp.raise_for_status()
    return sorted(f["id"] for f in resp.json()["features"])


def test_collection_created_then_updated(stac_api_url, cid):
    s = StacApiSink(stac_api_url)
    assert not s.has_collection(cid) and s.get_collection(cid) is None
    assert s.upsert_collection(make_collection(cid)) == "created"
    assert s.has_collection(cid)
    s.put_item(make_item("far", collection=cid, dt="1990-01-01T00:00:00Z", bbox=(100.0, 10.0, 110.0, 20.0)))
    # An update keeps an extent that still covers the stored items.
    assert s.upsert_collection(make_collection(cid, description="new words")) == "updated"
    col = s.get_collection(cid)
    assert col["description"] == "new words"
    bbox = col["extent"]["spatial"]["bbox"][0]
    assert bbox[0] <= -10 and bbox[2] >= 110
    assert col["extent"]["temporal"]["interval"][0][0].startswith("1990-01-01")


def test_duplicate_policies(sink, cid):
    assert sink.put_item(make_item("a", collection=cid), "replace") == "created"
    assert sink.put_item(make_item("a", collection=cid, variable="v2"), "replace") == "replaced"
    assert sink.get_item(cid, "a")["properties"]["variable"] == "v2"
    assert sink.put_item(make_item("a", collection=cid, variable="v3"), "skip") == "skipped"
    assert sink.get_item(cid, "a")["properties"]["variable"] == "v2"
    with pytest.raises(DuplicateItem, match="duplicate policy is 'error'"):
        sink.put_item(make_item("a", collection=cid, variable="v4"), "error")
    assert sink.get_item(cid, "a")["properties"]["variable"] == "v2"
    assert sink.put_item(make_item("b", collection=cid), "error") == "created"


def test_datetime_change_is_replaced(sink, cid, stac_api_url):
    sink.put_item(make_item("a", collection=cid, dt="2010-01-01T00:00:00Z"))
    assert sink.put_item(make_item("a", collection=cid, dt="2012-06-01T00:00:00Z")) == "replaced"
    assert sink.get_item(cid, "a")["properties"]["datetime"].startswith("2012-06-01")
    assert search(stac_api_url, collections=[cid], datetime="2012-01-01T00:00:00Z/2013-01-01T00:00:00Z") == ["a"]
    assert search(stac_api_url, collections=[cid], datetime="2009-01-01T00:00:00Z/2011-01-01T00:00:00Z") == []
    interval = sink.get_collection(cid)["extent"]["temporal"]["interval"][0]
    assert interval[1].startswith("2012-06-01")


def test_bulk_put_items_each_policy(sink, cid):
    sink.put_item(make_item("old", collection=cid))
    items = [make_item(f"i{n}", collection=cid) for n in range(5)] + [make_item("old", collection=cid, variable="x")]
    out = sink.put_items(items, "replace")
    assert [o.action for o in out] == ["created"] * 5 + ["replaced"]
    assert sink.get_item(cid, "old")["properties"]["variable"] == "x"
    out = sink.put_items([make_item("i0", collection=cid, variable="y"), make_item("new", collection=cid)], "skip")
    assert [o.action for o in out] == ["skipped", "created"]
    assert "variable" not in sink.get_item(cid, "i0")["properties"]
    out = sink.put_items([make_item("i1", collection=cid), make_item("new2", collection=cid)], "error")
    assert isinstance(out[0].error, DuplicateItem) and out[1].action == "created"


def test_batch_with_one_bad_item_lands_the_others(sink, cid, stac_api_url):
    no_datetime = make_item("nodt", collection=cid)
    del no_datetime["properties"]["datetime"]  # pgstac's bulk load fails the whole batch with a 500
    items = [make_item(f"g{n}", collection=cid) for n in range(4)]
    items.insert(2, no_datetime)
    items.append(make_item("bad:id", collection=cid))  # 400 on its own
    out = sink.put_items(items, "replace")
    assert [o.action for o in out] == ["created", "created", None, "created", "created", None]
    assert isinstance(out[2].error, InvalidItem) and "datetime" in str(out[2].error)
    assert isinstance(out[5].error, InvalidItem) and "cannot contain" in str(out[5].error)
    assert search(stac_api_url, collections=[cid]) == ["g0", "g1", "g2", "g3"]
    # the session survived the 500 (the server drops keep-alive after it)
    assert sink.get_item(cid, "g0") is not None


def test_unknown_collection_single_and_batch(sink, stac_api_url):
    with pytest.raises(UnknownCollection, match="does not exist"):
        sink.put_item(make_item("a", collection="no-such-collection"))
    out = sink.put_items([make_item("a", collection="no-such-collection"), make_item("b", collection="nope-2")])
    assert all(isinstance(o.error, UnknownCollection) for o in out)
    assert sink.has_collection("no-such-collection") is False


def test_extent_grows_without_rereading_the_collection_per_item(stac_server, cid):
    sink = StacApiSink(stac_server.url)
    col = make_collection(cid)
    col["extent"] = {"spatial": {"bbox": [[0.0, 0.0, 1.0, 1.0]]},
                     "temporal": {"interval": [["2010-01-01T00:00:00Z", "2010-01-01T00:00:00Z"]]}}
    sink.upsert_collection(col)
    sink.put_item(make_item("a", collection=cid, dt="2015-01-01T00:00:00Z", bbox=(-5.0, -5.0, 5.0, 5.0)))
    extent = sink.get_collection(cid)["extent"]
    assert extent["spatial"]["bbox"][0] == [-5.0, -5.0, 5.0, 5.0]
    assert extent["temporal"]["interval"][0][1].startswith("2015-01-01")
    stac_server.requests_seen(clear=True)
    sink.put_items([make_item(f"in{n}", collection=cid, dt="2012-01-01T00:00:00Z", bbox=(-1.0, -1.0, 1.0, 1.0))
                    for n in range(3)])
    sink.put_item(make_item("in9", collection=cid, dt="2012-01-01T00:00:00Z", bbox=(-1.0, -1.0, 1.0, 1.0)))
    touched = [r for r in stac_server.requests_seen() if r[1] == f"/collections/{cid}"]
    assert touched == [], touched  # inside the cached extent: no collection GET or PUT


def test_prefix_path(stac_server, cid):
    sink = StacApiSink(stac_server.url + "/stac/")
    assert sink.upsert_collection(make_collection(cid)) == "created"
    assert sink.put_item(make_item("p", collection=cid)) == "created"
    assert [o.action for o in sink.put_items([make_item("q", collection=cid)])] == ["created"]
    assert sink.get_item(cid, "p")["id"] == "p"
    assert sink.delete_item(cid, "p") is True
    paths = {r[1] for r in stac_server.requests_seen() if cid in r[1]}
    assert paths and all(p.startswith("/stac/") for p in paths), paths


def test_auth_header_sent_on_writes_only(stac_server, cid):
    url = stac_server.url + "/auth"
    with pytest.raises(CatalogAuthError) as err:
        StacApiSink(url).upsert_collection(make_collection(cid))
    assert err.value.transient is False
    sink = StacApiSink(url, Settings(stac_token=TOKEN).stac_api)
    stac_server.requests_seen(clear=True)
    assert sink.upsert_collection(make_collection(cid)) == "created"
    assert sink.put_item(make_item("a", collection=cid)) == "created"
    assert sink.put_items([make_item("b", collection=cid)])[0].action == "created"
    assert sink.get_item(cid, "a") is not None
    seen = stac_server.requests_seen()
    writes = [r for r in seen if r[0] in ("POST", "PUT", "DELETE") and r[1] != "/auth/search"]
    reads = [r for r in seen if r[0] == "GET" or r[1] == "/auth/search"]
    assert writes and all(r[2] for r in writes), writes
    assert reads and not any(r[2] for r in reads), reads
    # a custom header carries the token as is
    custom = StacApiSink(url, Settings(stac_token=TOKEN, stac_auth_header="X-Api-Key").stac_api)
    assert custom.put_item(make_item("c", collection=cid)) == "created"


def test_token_never_in_errors(stac_server, cid):
    sink = StacApiSink(stac_server.url + "/auth", Settings(stac_token="wrong-" + TOKEN).stac_api)
    with pytest.raises(CatalogAuthError) as err:
        sink.upsert_collection(make_collection(cid))
    assert TOKEN not in str(err.value)


def test_unreachable_api_is_transient():
    sink = StacApiSink(f"http://127.0.0.1:{free_port()}", Settings(stac_timeout=2).stac_api)
    with pytest.raises(CatalogUnavailable) as err:
        sink.put_item(make_item("a"))
    assert err.value.transient
    out = sink.put_items([make_item("a"), make_item("b")])
    assert all(isinstance(o.error, CatalogUnavailable) for o in out)


def test_read_back_mismatch_is_an_error(sink, cid, monkeypatch):
    real = sink.get_item

    def tampered(c, i):
        item = real(c, i)
        item["assets"]["data"]["file:checksum"] = "1220" + "ff" * 32
        return item

    monkeypatch.setattr(sink, "get_item", tampered)
    with pytest.raises(CatalogMismatch, match="file:checksum"):
        sink.put_item(make_item("m", collection=cid))
    assert read_back_difference(make_item("m"), None) == "not found"


def test_concurrent_writes_to_one_id_are_serialised(sink, cid):
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        for k in range(4):
            try:
                sink.put_item(make_item("same", collection=cid, variable=f"{n}-{k}"))
            except BaseException as exc:  # noqa: BLE001
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_delete_item(sink, cid):
    sink.put_item(make_item("d", collection=cid))
    assert sink.delete_item(cid, "d") is True
    assert sink.get_item(cid, "d") is None
    assert sink.delete_item(cid, "d") is False


def test_collection_deleted_behind_the_cache_is_created_again_when_allowed(stac_api_url, cid, monkeypatch):
    from publisher import stage

    sink = StacApiSink(stac_api_url)
    sink.upsert_collection(make_collection(cid))
    assert sink.has_collection(cid)
    requests.delete(f"{stac_api_url}/collections/{cid}", timeout=10).raise_for_status()
    assert sink.has_collection(cid)  # cached
    item = make_item("a", collection=cid)
    monkeypatch.setattr(stage, "derive_item", lambda ready, cs: type("D", (), {"item": item})())
    monkeypatch.setattr(stage, "validate_item", lambda item, source: None)
    ready = type("R", (), {"source": type("S", (), {"key": "k", "url": "u"})(), "collection": cid})()
    with pytest.raises(UnknownCollection):
        stage.publish_raster(ready, Settings().collection_settings, sink)
    settings = Settings(collections={cid: {"create_if_missing": True}})
    assert sink.has_collection(cid) is False  # the failed write dropped it from the cache
    sink._extents[cid] = {}  # cached again, as after a has_collection before the deletion
    assert stage.publish_raster(ready, settings.collection_settings, sink).action == "created"
    assert sink.get_item(cid, "a") is not None


def test_many_chunks_in_flight(stac_api_url, cid):
    sink = StacApiSink(stac_api_url, batch_size=3, concurrency=3)
    sink.upsert_collection(make_collection(cid))
    items = [make_item(f"m{n:02d}", collection=cid, bbox=(float(n), 0.0, n + 1.0, 1.0)) for n in range(11)]
    items[7]["id"] = "bad#id"
    out = sink.put_items(items)
    assert [o.ok for o in out] == [n != 7 for n in range(11)]
    assert len(search(stac_api_url, collections=[cid])) == 10
    assert sink.get_collection(cid)["extent"]["spatial"]["bbox"][0][2] == 11.0


def test_publisher_batch_with_one_rejected_item_publishes_the_others(tmp_path, sink, cid, stac_api_url,
                                                                     monkeypatch):
    """Bus -> StageRunner.on_batch -> one put_items -> the STAC API -> ledger: the item the API rejects is
    dead-lettered with its error on its job; its neighbours in the same batch are published and acked."""
    from publisher import handler as publish_handler
    from stacdrop.bus.sqlite import SqliteBus
    from stacdrop.ledger import Ledger
    from stacdrop.messages import Envelope
    from stacdrop.retry import RetryPolicy
    from stacdrop.runtime import StageRunner
    from tests.support.raster_ready import make_ready

    real_prepare = publish_handler.prepare_raster

    def prepare(ready, settings):
        prepared = real_prepare(ready, settings)
        if prepared.item["id"] == "r3":
            del prepared.item["properties"]["datetime"]  # passes our checks here; the STAC API rejects it
        return prepared

    monkeypatch.setattr(publish_handler, "prepare_raster", prepare)
    calls: list[int] = []
    put_items = sink.put_items
    monkeypatch.setattr(sink, "put_items", lambda items, policy="replace": calls.append(len(items))
                        or put_items(items, policy))

    settings = Settings()
    bus = SqliteBus(f"sqlite:///{tmp_path}/bus.db")
    ledger = Ledger(f"sqlite:///{tmp_path}/ledger.db")
    jobs = {}
    for n in range(6):
        key = f"{cid}/r{n}.tif"
        job, _ = ledger.create_job(kind="raster", source=f"/inbox/{key}", source_key=key, content_key=f"c{n}",
                                   collection=cid, origin="test", priority=1)
        jobs[f"r{n}"] = job.id
        for _ in range(2 if n == 0 else 1):  # r0's message twice (a stage's output published again)
            bus.publish("publish", Envelope.wrap(job.id, make_ready(key=key, collection=cid,
                                                                     sidecar={"datetime": f"201{n}-01-01"})))
    runner = StageRunner(
        "publish", publish_handler.make_publish_handler(settings.collection_settings, sink, ledger),
        bus=bus, ledger=ledger, policy=RetryPolicy(max_retries=2, base=0.1), batch_size=10, batch_window=0.5,
        batch_handler=publish_handler.make_publish_batch_handler(settings.collection_settings, sink, ledger),
    )
    stop = threading.Event()
    thread = threading.Thread(target=runner.run, args=(stop,), daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            states = {name: ledger.get(job_id).state for name, job_id in jobs.items()}
            if all(s in ("published", "failed") for s in states.values()):
                break
            time.sleep(0.1)
    finally:
        stop.set()
        thread.join(20)
    assert calls == [6]  # one bulk write for the whole batch; r0's second message is acked without work
    events = ledger.get(jobs["r0"], with_events=True).events
    assert [e.step for e in events if e.stage == "publish" and e.status == "succeeded"] == ["finished"]
    assert states == {f"r{n}": "failed" if n == 3 else "published" for n in range(6)}
    bad = ledger.get(jobs["r3"])
    assert bad.error_class == "invalid_item" and "datetime" in bad.error
    assert [letter.envelope.job_id for letter in bus.dead_letters()] == [jobs["r3"]]
    assert {s.queue: s for s in bus.stats()}["publish"].ready == 0
    assert search(stac_api_url, collections=[cid]) == ["r0", "r1", "r2", "r4", "r5"]
    bus.close()
    ledger.close()


def test_publishers_widening_one_extent_at_once_lose_nothing(stac_api_url, cid, ledger):
    """Six publishers (separate sinks, as separate processes would have) each add an item far from the others
    at the same moment: with the ledger's lock every item ends inside the collection's extent."""
    first = StacApiSink(stac_api_url)
    first.upsert_collection(make_collection(cid))
    # pgstac keeps a datetime range constraint per partition: concurrent inserts that widen it can fail with a
    # 500 (CheckViolation; transient, retried by the runtime). Seed the range so only extents race here.
    for year in (2000, 2005):
        first.put_item(make_item(f"seed{year}", collection=cid, dt=f"{year}-01-01T00:00:00Z",
                                 bbox=(0.0, 0.0, 1.0, 1.0)))
    # (Without shared_lock this fails: the read-modify-writes race and the extent misses some items.)
    sinks = [StacApiSink(stac_api_url, shared_lock=ledger.lock) for _ in range(6)]
    barrier = threading.Barrier(len(sinks))
    errors: list[BaseException] = []

    def publish(n: int) -> None:
        try:
            item = make_item(f"far{n}", collection=cid, dt=f"{2000 + n}-01-01T00:00:00Z",
                             bbox=(-170.0 + 60 * n, -80.0 + 30 * n, -165.0 + 60 * n, -75.0 + 30 * n))
            sinks[n].get_collection(cid)  # every publisher knows the extent before anyone widens it
            barrier.wait()
            sinks[n].put_item(item)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=publish, args=(n,)) for n in range(len(sinks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    extent = StacApiSink(stac_api_url).get_collection(cid)["extent"]
    w, s, e, n = extent["spatial"]["bbox"][0]
    def covers_lon(lo: float, hi: float) -> bool:  # the extent may cross the antimeridian (w > e)
        return w <= lo and hi <= e if w <= e else (lo >= w or hi <= e)

    missing = [k for k in range(len(sinks))
               if not (covers_lon(-170.0 + 60 * k, -165.0 + 60 * k) and s <= -80.0 + 30 * k and -75.0 + 30 * k <= n)]
    assert not missing, (missing, extent)

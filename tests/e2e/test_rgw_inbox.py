"""The S3 inbox (watcher.s3.S3Inbox) on the real Ceph RGW with LIVE events: RGW pushes each PUT and DELETE
through a persistent topic into the real RabbitMQ, the inbox consumes them, and the reconciler's interval is
off (its one pass at start finds nothing: every object here is put after it). The intake is the recorder
of tests/support/recording_intake.py: the watcher's part ends at the intake call.

One bucket and one topic for the module (a persistent topic's first events are ~20-30 s late: the module
waits for that once); each test has its own inbox prefix in the bucket and its own queue, bound by the
topic's name (RGW's routing key) on the shared events exchange (tests/support/rgw.py says why it is shared).
Events of other tests' prefixes reach each queue too: the inbox ignores (and acks) them.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pika
import pytest

from stacdrop.app.components import watcher_settings
from stacdrop.config import Settings
from tests.support.recording_intake import RecordingIntake
from tests.support.rgw import (
    EVENTS_EXCHANGE,
    RgwEndpoint,
    RgwEventQueue,
    configure_notifications,
    create_topic,
    delete_bucket,
    delete_topic,
    event_of,
    events_url,
    remove_notifications,
    unique_name,
)
from tests.support.s3_events import wait_for
from watcher.s3 import S3Inbox

pytestmark = pytest.mark.e2e

LIVE = 60.0  # an event once the topic is warm comes in ~0.2 s; a loaded machine and RGW can be slow


@dataclass
class Topic:
    """The module's bucket, notifying ``name`` (persistent, ack level broker) of every create and remove."""

    rgw: RgwEndpoint
    bucket: str
    name: str


@pytest.fixture(scope="module")
def topic(rgw: RgwEndpoint, rabbit_url: str) -> Iterator[Topic]:
    bucket, name = unique_name("inbox"), unique_name("topic")
    client = rgw.s3()
    client.create_bucket(Bucket=bucket)
    arn = create_topic(rgw, name, ack_level="broker", persistent=True)
    try:
        configure_notifications(rgw, bucket, arn)
        with RgwEventQueue(name, rabbit_url) as events:  # the warm-up: the first events can be ~30 s late
            client.put_object(Bucket=bucket, Key="warm-up", Body=b"x")
            events.wait_for(event_of("ObjectCreated:", bucket, "warm-up"), 120, "the warm-up event")
        yield Topic(rgw, bucket, name)
    finally:
        remove_notifications(rgw, bucket)  # first: a bucket notifying a deleted topic refuses writes
        delete_topic(rgw, arn)
        delete_bucket(rgw, bucket)


@dataclass
class Inbox:
    """One test's inbox at ``s3://bucket/<prefix>`` with its own durable queue on the events vhost."""

    topic: Topic
    rabbit_url: str
    prefix: str
    queue: str
    intake: RecordingIntake = field(default_factory=RecordingIntake)

    def settings(self, **kw: Any) -> Settings:
        rgw = self.topic.rgw
        return Settings(inbox=f"s3://{self.topic.bucket}/{self.prefix}", aws_access_key_id=rgw.access_key,
                        aws_secret_access_key=rgw.secret_key, aws_endpoint_url=rgw.url,
                        s3_events_amqp=events_url(self.rabbit_url), s3_events_exchange=EVENTS_EXCHANGE,
                        s3_events_routing_key=self.topic.name, s3_events_queue=self.queue, reconcile_interval=0,
                        sidecar_wait=kw.pop("sidecar_wait", 3.0), **kw)

    def put(self, rel: str, body: bytes) -> str:
        """Put ``rel`` under the prefix; returns its ETag (no quotes)."""
        resp = self.topic.rgw.s3().put_object(Bucket=self.topic.bucket, Key=f"{self.prefix}/{rel}", Body=body)
        return str(resp["ETag"]).strip('"')

    def delete(self, rel: str) -> None:
        self.topic.rgw.s3().delete_object(Bucket=self.topic.bucket, Key=f"{self.prefix}/{rel}")

    def url(self, rel: str) -> str:
        return f"s3://{self.topic.bucket}/{self.prefix}/{rel}"

    def fingerprint_key(self, rel: str) -> str:
        return self.url(rel)

    def depth(self) -> int:
        """Messages ready in the queue (unacked ones count only once the consumer is gone)."""
        conn = pika.BlockingConnection(pika.URLParameters(events_url(self.rabbit_url)))
        try:
            return conn.channel().queue_declare(self.queue, passive=True).method.message_count
        finally:
            conn.close()


@pytest.fixture
def inbox(topic: Topic, rabbit_url: str) -> Iterator[Inbox]:
    made = Inbox(topic, rabbit_url, unique_name("drop"), unique_name("stacdrop-test-rgw-inbox"))
    yield made
    conn = pika.BlockingConnection(pika.URLParameters(events_url(rabbit_url)))
    try:
        conn.channel().queue_delete(made.queue)
    finally:
        conn.close()


class Running:
    """``S3Inbox.run`` in a thread; entering waits for the start-up reconcile (before any object is put)."""

    def __init__(self, inbox: S3Inbox) -> None:
        self.inbox = inbox
        self.stop = threading.Event()
        self.thread = threading.Thread(target=inbox.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> S3Inbox:
        self.thread.start()
        wait_for(lambda: self.inbox.reconciles == 1, 30, what="the start-up reconcile")
        return self.inbox

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive()


def start(inbox: Inbox, **kw: Any) -> Running:
    settings = inbox.settings(**kw)
    return Running(S3Inbox(settings.inbox.path, watcher_settings(settings), inbox.intake))


def submitted(intake: RecordingIntake, predicate: Callable[[dict[str, Any]], bool]) -> Callable[[], bool]:
    def check() -> bool:
        with intake.lock:
            return any(predicate(r) for r in intake.rasters)
    return check


AWKWARD_RASTERS = [
    "c/with space/a b.tif",
    "c/a+b=c&d.tif",
    "c/100%25 and %20 and %.tif",
    "c/中文/文件 名.tif",
    "c/deep/nested/prefix/x/y/z.tif",
]


def test_awkward_keys_are_submitted_paired_with_the_raw_key(inbox: Inbox) -> None:
    """RGW sends keys raw (not URL-encoded): each raster is submitted under its very key with its own
    sidecar. Decoding the key (``+`` -> space, ``%25`` -> ``%``) would find no object, or another one."""
    with start(inbox):
        etags = {}
        for i, rel in enumerate(AWKWARD_RASTERS):
            etags[rel] = inbox.put(rel, f"raster {i}".encode())
            inbox.put(rel[:-4] + ".json", json.dumps({"id": f"item-{i}"}).encode())
        wait_for(lambda: len(inbox.intake.rasters) >= len(AWKWARD_RASTERS), LIVE, what="every raster")
        time.sleep(1.0)  # nothing more comes (no raster twice, none alone)
    rasters = {r["source"].key: r for r in inbox.intake.rasters}
    assert len(inbox.intake.rasters) == len(AWKWARD_RASTERS) and set(rasters) == set(AWKWARD_RASTERS)
    for i, rel in enumerate(AWKWARD_RASTERS):
        r = rasters[rel]
        assert r["source"].url == inbox.url(rel) and r["source"].content_key == etags[rel]
        assert r["source"].size == len(f"raster {i}".encode()) and r["collection"] == "c"
        assert r["sidecar_name"] == rel[:-4] + ".json" and json.loads(r["sidecar_text"]) == {"id": f"item-{i}"}
        assert r["priority"] == 5  # LIVE: from an event, not the (start-up) reconcile
        assert inbox.intake.fingerprints[inbox.fingerprint_key(rel)] == f"{etags[rel]}:{r['source'].size}"
    assert inbox.depth() == 0  # every event acked


def test_overwrite_raster_then_sidecar_within_a_second_submits_the_new_content(inbox: Inbox) -> None:
    """RGW's sequencer is little-endian (seconds, nanoseconds): compared as a string, the event of an
    overwrite in the same second can look older than the first one and be dropped as stale."""
    raster, sidecar = "c/over.tif", "c/over.json"
    intake = inbox.intake
    with start(inbox, sidecar_wait=1.0):
        inbox.put(sidecar, b'{"id": "over", "title": "v1"}')
        t0 = time.monotonic()
        etag1 = inbox.put(raster, b"raster version 1")
        wait_for(submitted(intake, lambda r: r["source"].content_key == etag1), LIVE, what="the first version")
        etag2 = inbox.put(raster, b"raster version 2, longer")
        raster_gap = time.monotonic() - t0
        wait_for(submitted(intake, lambda r: r["source"].content_key == etag2), LIVE, what="the raster overwrite")
        last = intake.rasters[-1]
        assert last["source"].size == len(b"raster version 2, longer")
        assert json.loads(last["sidecar_text"])["title"] == "v1"

        t1 = time.monotonic()
        inbox.put(sidecar, b'{"id": "over", "title": "v2"}')
        wait_for(submitted(intake, lambda r: r["sidecar_text"] and json.loads(r["sidecar_text"])["title"] == "v2"),
                 LIVE, what="the sidecar overwrite")
        sidecar_gap = time.monotonic() - t1
        last = intake.rasters[-1]
        assert last["source"].content_key == etag2 and last["source"].key == raster
        time.sleep(1.5)
    assert [json.loads(r["sidecar_text"])["title"] for r in intake.rasters] == ["v1", "v1", "v2"]
    assert raster_gap < 1.0, f"the overwrite came {raster_gap:.2f} s after the first upload"
    print(f"raster overwrite {raster_gap:.2f} s after the first upload; sidecar re-submitted in {sidecar_gap:.2f} s")
    assert inbox.depth() == 0


def test_delete_of_a_key_that_never_existed_changes_nothing_and_is_acked(inbox: Inbox, rabbit_url: str) -> None:
    """RGW sends ObjectRemoved:Delete (size 0, eTag "") for a key that was never there."""
    intake = inbox.intake
    never = "c/never there+100%.tif"
    with RgwEventQueue(inbox.topic.name, rabbit_url) as observer, start(inbox, sidecar_wait=0.5):
        etag = inbox.put("c/kept.tif", b"kept")
        wait_for(lambda: len(intake.rasters) == 1, LIVE, what="the kept raster")
        before = dict(intake.fingerprints)
        inbox.delete(never)
        record = observer.wait_for(event_of("ObjectRemoved:", inbox.topic.bucket, f"{inbox.prefix}/{never}"),
                                   LIVE, "RGW's event for the never-existing key")
        assert record["eventName"] == "ObjectRemoved:Delete" and record["s3"]["object"]["eTag"] == ""
        inbox.put("c/marker.tif", b"marker")  # events come in order: once it is submitted, the delete was seen
        wait_for(lambda: len(intake.rasters) == 2, LIVE, what="the marker after the delete")
    assert intake.removals == []
    assert {k: v for k, v in intake.fingerprints.items() if not k.endswith("/c/marker.tif")} == before
    assert intake.fingerprints[inbox.fingerprint_key("c/kept.tif")].startswith(etag)
    assert inbox.depth() == 0  # acked: nothing came back when the consumer went away


def test_deleted_raster_is_unpublished_with_on_delete_unpublish(inbox: Inbox) -> None:
    """A raster deleted from the bucket: the inbox asks the intake for its removal and forgets its
    fingerprint. ``c/a+b.tif``'s decoded neighbour ``c/a b.tif`` exists: the raw key decides, so the
    delete is neither taken as stale nor applied to the neighbour."""
    intake = inbox.intake
    rasters = ["c/plain.tif", "c/a+b.tif", "c/a b.tif"]
    with start(inbox, sidecar_wait=0.5, collections={"c": {"on_delete": "unpublish"}}):
        for rel in rasters:
            inbox.put(rel, rel.encode())
        wait_for(lambda: len(intake.rasters) == 3, LIVE, what="three rasters")
        inbox.delete("c/plain.tif")
        wait_for(lambda: len(intake.removals) == 1, LIVE, what="the removal of c/plain.tif")
        inbox.delete("c/a+b.tif")
        wait_for(lambda: len(intake.removals) == 2, LIVE, what="the removal of c/a+b.tif")
        time.sleep(1.0)
    assert intake.removals == [
        {"url": inbox.url(rel), "key": rel, "collection": "c", "origin": "inbox"} for rel in rasters[:2]
    ]
    assert inbox.fingerprint_key("c/plain.tif") not in intake.fingerprints
    assert inbox.fingerprint_key("c/a+b.tif") not in intake.fingerprints
    assert inbox.fingerprint_key("c/a b.tif") in intake.fingerprints  # the neighbour is untouched
    assert len(intake.rasters) == 3
    assert inbox.depth() == 0

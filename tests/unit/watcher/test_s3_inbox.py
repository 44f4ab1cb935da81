"""S3Inbox against moto's S3 server over HTTP and the real RabbitMQ: the test plays the object store,
putting objects into moto and publishing their events (AWS, Ceph, MinIO formats) to the exchange.
The intake is a recorder with an in-memory fingerprint table (the real one is used end to end)."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote_plus

import boto3
import pika
import pytest

from stacdrop.config import Settings
from stacdrop.app.components import watcher_settings
from tests.support.s3_events import aws_event, ceph_event, ceph_sequencer, declared, minio_event, publish, wait_for
from watcher.s3 import S3Inbox


class RecordingIntake:
    def __init__(self) -> None:
        self.rasters: list[dict[str, Any]] = []
        self.collections: list[dict[str, Any]] = []
        self.fingerprints: dict[str, str] = {}
        self.lock = threading.Lock()

    def submit_raster(self, *, source, collection, sidecar, origin, priority, refused=None) -> tuple[str, bool]:
        with self.lock:
            self.rasters.append(dict(source=source, collection=collection,
                                     sidecar_text=sidecar.text if sidecar else None,
                                     sidecar_name=sidecar.name if sidecar else None,
                                     sidecar_error=sidecar.error if sidecar else None, priority=priority))
            return f"job{len(self.rasters)}", True

    def submit_collection(self, *, source, collection, text, origin) -> str:
        with self.lock:
            self.collections.append(dict(source=source, collection=collection, text=text))
            return f"col{len(self.collections)}"

    def fingerprint(self, key: str) -> str | None:
        return self.fingerprints.get(key)

    def remember_fingerprint(self, key: str, fingerprint: str) -> None:
        self.fingerprints[key] = fingerprint

    def iter_fingerprints(self, prefix: str = "") -> Iterator[tuple[str, str]]:
        for key in sorted(self.fingerprints):
            if key.startswith(prefix):
                yield key, self.fingerprints[key]

    def keys(self) -> list[str]:
        return sorted(r["source"].key for r in self.rasters)


def s3(url: str):
    return boto3.client("s3", endpoint_url=url, aws_access_key_id="test", aws_secret_access_key="test",
                        region_name="us-east-1")


@pytest.fixture
def bucket(moto_url: str) -> str:
    name = f"inbox-{uuid.uuid4().hex[:10]}"
    s3(moto_url).create_bucket(Bucket=name)
    return name


@pytest.fixture
def names(rabbit_url: str) -> Iterator[dict[str, str]]:
    tag = uuid.uuid4().hex[:10]
    names = {"exchange": f"stacdrop-test-s3ev-{tag}", "queue": f"stacdrop-test-s3ev-{tag}.q"}
    yield names
    conn = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    ch = conn.channel()
    ch.queue_delete(names["queue"])
    ch.exchange_delete(names["exchange"])
    conn.close()


def settings_for(moto_url: str, bucket: str, **kw: Any) -> Settings:
    return Settings(inbox=f"s3://{bucket}/drop", aws_access_key_id="test", aws_secret_access_key="test",
                    aws_endpoint_url=moto_url, sidecar_wait=kw.pop("sidecar_wait", 2.0), **kw)


class Running:
    def __init__(self, inbox: S3Inbox) -> None:
        self.inbox = inbox
        self.stop = threading.Event()
        self.thread = threading.Thread(target=inbox.run, args=(self.stop,), daemon=True)

    def __enter__(self) -> S3Inbox:
        self.thread.start()
        return self.inbox

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


def queue_depth(rabbit_url: str, queue: str) -> int:
    conn = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    try:
        return conn.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        conn.close()


def test_events_in_three_formats_pair_and_dedup(moto_url, bucket, rabbit_url, names):
    client = s3(moto_url)
    settings = settings_for(moto_url, bucket, s3_events_amqp=rabbit_url, s3_events_exchange=names["exchange"],
                            s3_events_queue=names["queue"], reconcile_interval=0)
    intake = RecordingIntake()
    inbox = S3Inbox(settings.inbox.path, watcher_settings(settings), intake)
    sources = {
        "aws": "clim/sub dir/bio 1+2.tif",  # space and '+': form-encoded by AWS
        "ceph": "clim/ünï cödé.tif",  # raw by Ceph
        "minio": "clim/a/b/c d.tif",  # query-escaped by MinIO (%2F, '+')
    }
    make = {"aws": aws_event, "ceph": ceph_event, "minio": minio_event}
    with Running(inbox):
        wait_for(lambda: inbox.reconciles == 1, what="start-up reconcile")
        declared(rabbit_url, names["exchange"], names["queue"])
        client.put_object(Bucket=bucket, Key="drop/clim/collection.json", Body=b'{"id": "clim"}')
        publish(rabbit_url, names["exchange"], ceph_event(client, bucket, "drop/clim/collection.json"))
        for store, rel in sources.items():
            key = f"drop/{rel}"
            side = key[:-4] + ".json"
            # a multipart initiate (Post) comes first, before the object exists
            publish(rabbit_url, names["exchange"], ceph_event(client, bucket, key, "ObjectCreated:Post"))
            client.put_object(Bucket=bucket, Key=key, Body=f"raster {store}".encode())
            publish(rabbit_url, names["exchange"], make[store](client, bucket, key))
            client.put_object(Bucket=bucket, Key=side, Body=json.dumps({"id": store}).encode())
            publish(rabbit_url, names["exchange"], make[store](client, bucket, side))
        publish(rabbit_url, names["exchange"], {"Service": "Amazon S3", "Event": "s3:TestEvent"})
        publish(rabbit_url, names["exchange"], {"not": "an event"})
        conn = pika.BlockingConnection(pika.URLParameters(rabbit_url))
        conn.channel().basic_publish(names["exchange"], "x", b"\xff garbage")
        conn.close()
        wait_for(lambda: len(intake.rasters) == 3, what="three rasters")
        assert intake.keys() == sorted(sources.values())
        for r in intake.rasters:
            store = next(s for s, rel in sources.items() if rel == r["source"].key)
            assert json.loads(r["sidecar_text"]) == {"id": store}  # paired, not alone after the wait
            assert r["sidecar_name"] == r["source"].key[:-4] + ".json"
            assert r["source"].url == f"s3://{bucket}/drop/{r['source'].key}"
            assert r["collection"] == "clim" and r["source"].content_key and r["source"].size
        assert [c["collection"] for c in intake.collections] == ["clim"]

        # duplicates (same event again) make nothing; a changed sidecar alone re-submits its raster
        publish(rabbit_url, names["exchange"], aws_event(client, bucket, f"drop/{sources['aws']}"))
        key = f"drop/{sources['minio']}"
        client.put_object(Bucket=bucket, Key=key[:-4] + ".json", Body=b'{"id": "minio", "title": "v2"}')
        publish(rabbit_url, names["exchange"], minio_event(client, bucket, key[:-4] + ".json"))
        wait_for(lambda: len(intake.rasters) == 4, what="re-submission with the new sidecar")
        assert intake.rasters[-1]["source"].key == sources["minio"]
        assert json.loads(intake.rasters[-1]["sidecar_text"])["title"] == "v2"

        # a raster whose sidecar is old: the sibling listing pairs it at once
        client.put_object(Bucket=bucket, Key=f"drop/{sources['ceph']}", Body=b"raster ceph v2")
        publish(rabbit_url, names["exchange"], ceph_event(client, bucket, f"drop/{sources['ceph']}"))
        wait_for(lambda: len(intake.rasters) == 5, what="changed raster")
        assert intake.rasters[-1]["sidecar_name"] == sources["ceph"][:-4] + ".json"

        # a stale deletion (the object is there) and an event for a key that is gone are ignored
        publish(rabbit_url, names["exchange"],
                ceph_event(client, bucket, f"drop/{sources['aws']}", "ObjectRemoved:Delete"))
        gone = aws_event(client, bucket, f"drop/{sources['aws']}")
        gone["Records"][0]["s3"]["object"]["key"] = quote_plus("drop/clim/never there.tif")
        publish(rabbit_url, names["exchange"], gone)
        wait_for(lambda: queue_depth(rabbit_url, names["queue"]) == 0, what="all events consumed")
        time.sleep(settings.inbox.sidecar_wait + 0.5)
        assert len(intake.rasters) == 5 and len(intake.collections) == 1
    # every event was acked: nothing comes back when the consumer is gone
    assert queue_depth(rabbit_url, names["queue"]) == 0


def test_raster_alone_after_sidecar_wait_then_sidecar_pairs(moto_url, bucket, rabbit_url, names):
    client = s3(moto_url)
    settings = settings_for(moto_url, bucket, s3_events_amqp=rabbit_url, s3_events_exchange=names["exchange"],
                            s3_events_queue=names["queue"], reconcile_interval=0, sidecar_wait=0.5)
    intake = RecordingIntake()
    inbox = S3Inbox(settings.inbox.path, watcher_settings(settings), intake)
    with Running(inbox):
        declared(rabbit_url, names["exchange"], names["queue"])
        client.put_object(Bucket=bucket, Key="drop/c/x.tif", Body=b"x")
        publish(rabbit_url, names["exchange"], aws_event(client, bucket, "drop/c/x.tif"))
        wait_for(lambda: len(intake.rasters) == 1, what="raster alone")
        assert intake.rasters[0]["sidecar_name"] is None
        client.put_object(Bucket=bucket, Key="drop/c/x.json", Body=b"\xff\xfe not utf-8")
        publish(rabbit_url, names["exchange"], aws_event(client, bucket, "drop/c/x.json"))
        wait_for(lambda: len(intake.rasters) == 2, what="raster with its late sidecar")
        assert intake.rasters[1]["sidecar_name"] == "c/x.json" and intake.rasters[1]["sidecar_text"] is None


def test_reconciler_alone_each_object_once_and_restart_cheap(moto_url, bucket):
    client = s3(moto_url)
    settings = settings_for(moto_url, bucket, s3_events_amqp="off", reconcile_interval=0.5, sidecar_wait=0.3)
    for i in range(3):
        client.put_object(Bucket=bucket, Key=f"drop/c/before {i}.tif", Body=b"r")
        client.put_object(Bucket=bucket, Key=f"drop/c/before {i}.json", Body=b"{}")
    client.put_object(Bucket=bucket, Key="drop/c/notes.txt", Body=b"not ours")
    client.put_object(Bucket=bucket, Key="elsewhere/c/x.tif", Body=b"outside the prefix")
    intake = RecordingIntake()
    inbox = S3Inbox(settings.inbox.path, watcher_settings(settings), intake)
    with Running(inbox):
        wait_for(lambda: len(intake.rasters) == 3, what="objects present before start")
        client.put_object(Bucket=bucket, Key="drop/c/later.tif", Body=b"r")
        client.put_object(Bucket=bucket, Key="drop/c/later.json", Body=b"{}")
        wait_for(lambda: len(intake.rasters) == 4, what="object added later")
        passes = inbox.reconciles
        wait_for(lambda: inbox.reconciles >= passes + 2, what="two more passes")
    assert intake.keys() == ["c/before 0.tif", "c/before 1.tif", "c/before 2.tif", "c/later.tif"]
    assert all(r["sidecar_name"] for r in intake.rasters)
    assert all(r["priority"] == 1 for r in intake.rasters[:3]) and intake.rasters[3]["priority"] == 5

    again = S3Inbox(settings.inbox.path, watcher_settings(settings), intake)  # a restart: same fingerprints
    with Running(again):
        wait_for(lambda: again.reconciles >= 1, what="start-up reconcile after restart")
        time.sleep(settings.inbox.sidecar_wait + 0.3)
    assert len(intake.rasters) == 4


def test_sqs_events_from_moto_notifications(moto_url, bucket):
    """AWS flavour: moto's own S3 -> SQS notifications (a TestEvent first, keys quote_plus-encoded)."""
    client = s3(moto_url)
    sqs = boto3.client("sqs", endpoint_url=moto_url, aws_access_key_id="test", aws_secret_access_key="test",
                       region_name="us-east-1")
    queue_url = sqs.create_queue(QueueName=f"{bucket}-events")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    client.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]}]})
    settings = settings_for(moto_url, bucket, s3_events_amqp="off", s3_events_sqs=queue_url, reconcile_interval=0)
    intake = RecordingIntake()
    inbox = S3Inbox(settings.inbox.path, watcher_settings(settings), intake)
    with Running(inbox):
        wait_for(lambda: inbox.reconciles == 1, what="start-up reconcile")
        client.put_object(Bucket=bucket, Key="drop/c/a b+c ü.tif", Body=b"r")
        client.put_object(Bucket=bucket, Key="drop/c/a b+c ü.json", Body=b'{"id": "abc"}')
        wait_for(lambda: len(intake.rasters) == 1, what="raster from SQS")
        def left() -> int:
            attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
            return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])

        wait_for(lambda: left() == 0, what="events deleted")
    r = intake.rasters[0]
    assert r["source"].key == "c/a b+c ü.tif" and json.loads(r["sidecar_text"]) == {"id": "abc"}
    attrs = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["All"])["Attributes"]
    assert attrs["ApproximateNumberOfMessagesNotVisible"] == "0"  # acked (deleted), not just received


def test_unsettled_event_comes_back_and_deletion_forgets(moto_url, bucket, rabbit_url, names):
    """A raster waiting for its sidecar holds its event unacked: stopped then, the event is delivered
    again. A deletion forgets the waiting raster (nothing submitted) and both events are acked."""
    client = s3(moto_url)
    settings = settings_for(moto_url, bucket, s3_events_amqp=rabbit_url, s3_events_exchange=names["exchange"],
                            s3_events_queue=names["queue"], reconcile_interval=0, sidecar_wait=30)
    intake = RecordingIntake()
    inbox = S3Inbox(settings.inbox.path, watcher_settings(settings), intake)
    with Running(inbox):
        declared(rabbit_url, names["exchange"], names["queue"])
        client.put_object(Bucket=bucket, Key="drop/c/w.tif", Body=b"w")
        publish(rabbit_url, names["exchange"], ceph_event(client, bucket, "drop/c/w.tif"))
        wait_for(lambda: "c/w.tif" in inbox._info, what="raster waiting for its sidecar")
    assert intake.rasters == [] and queue_depth(rabbit_url, names["queue"]) == 1  # not acked: back in the queue

    settings = settings.replace(sidecar_wait=3.0)
    inbox = S3Inbox(settings.inbox.path, watcher_settings(settings), intake)
    with Running(inbox):
        wait_for(lambda: "c/w.tif" in inbox._info, what="the event delivered again")
        client.delete_object(Bucket=bucket, Key="drop/c/w.tif")
        publish(rabbit_url, names["exchange"], ceph_event(client, bucket, "drop/c/w.tif", "ObjectRemoved:Delete"))
        wait_for(lambda: "c/w.tif" not in inbox._info, what="the deletion")
        time.sleep(1.5)
    assert intake.rasters == [] and queue_depth(rabbit_url, names["queue"]) == 0


def test_ceph_overwrite_within_a_second_is_published_not_dropped_as_stale(moto_url, bucket, rabbit_url, names):
    """Ceph's sequencer is little-endian (seconds, nanoseconds): the event of an overwrite in the same
    second can sort *before* the first one as a string. Decoded, it is newer, and the new content is
    submitted; the first event delivered again afterwards is dropped as old."""
    client = s3(moto_url)
    settings = settings_for(moto_url, bucket, s3_events_amqp=rabbit_url, s3_events_exchange=names["exchange"],
                            s3_events_queue=names["queue"], reconcile_interval=0, allow_key_only=True,
                            sidecar_wait=0.5)
    intake = RecordingIntake()
    inbox = S3Inbox(settings.inbox.path, watcher_settings(settings), intake)
    key = "drop/c/over.tif"

    def event_at(ns: int) -> dict:
        event = ceph_event(client, bucket, key)
        event["Records"][0]["s3"]["object"]["sequencer"] = ceph_sequencer(ns)
        return event

    first_ns, second_ns = 1796155964_000000255, 1796155964_000000256
    assert ceph_sequencer(second_ns) < ceph_sequencer(first_ns)  # the trap
    with Running(inbox):
        declared(rabbit_url, names["exchange"], names["queue"])
        client.put_object(Bucket=bucket, Key=key, Body=b"version 1")
        first = event_at(first_ns)
        publish(rabbit_url, names["exchange"], first)
        wait_for(lambda: len(intake.rasters) == 1, what="the first version")
        client.put_object(Bucket=bucket, Key=key, Body=b"version 2, longer")
        publish(rabbit_url, names["exchange"], event_at(second_ns))
        wait_for(lambda: len(intake.rasters) == 2, what="the overwrite")
        assert intake.rasters[1]["source"].size == len(b"version 2, longer")
        publish(rabbit_url, names["exchange"], first)  # redelivered late: older by its sequencer
        wait_for(lambda: queue_depth(rabbit_url, names["queue"]) == 0, what="all events consumed")
        time.sleep(1.5)
    assert len(intake.rasters) == 2

"""Smoke tests of the harness's real Ceph RGW (scripts/ceph-rgw.sh): S3 with awkward keys through boto3,
and a persistent topic that pushes bucket notifications into a real RabbitMQ with the raw key. Later tests
of the S3 inbox and store build on the same fixture and helpers (tests/support/rgw.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import botocore.exceptions
import pytest

from tests.support.rgw import (
    EVENTS_EXCHANGE,
    EVENTS_VHOST,
    RgwEndpoint,
    RgwEventQueue,
    configure_notifications,
    create_topic,
    delete_bucket,
    delete_topic,
    event_of,
    remove_notifications,
    unique_name,
)

pytestmark = pytest.mark.e2e  # a real Ceph cluster (and RabbitMQ); the first events can take ~30 s

AWKWARD_KEYS = [
    "plain.tif",
    "with space/a b.tif",
    "a+b=c&d.tif",
    "100%25 and %20 and %.txt",
    "中文/文件 名.tif",
    "deep/nested/prefix/x/y/z.tif",
    "deep/nested/other.tif",
]


@pytest.fixture
def bucket(rgw: RgwEndpoint) -> Iterator[str]:
    name = unique_name("rgw")
    rgw.s3().create_bucket(Bucket=name)
    yield name
    delete_bucket(rgw, name)


def test_put_get_list_delete_awkward_keys(rgw: RgwEndpoint, bucket: str) -> None:
    client = rgw.s3()
    for i, key in enumerate(AWKWARD_KEYS):
        client.put_object(Bucket=bucket, Key=key, Body=f"body {i} of {key}".encode())
    for i, key in enumerate(AWKWARD_KEYS):
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == f"body {i} of {key}".encode()

    listed = [o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"]]
    assert listed == sorted(AWKWARD_KEYS, key=lambda k: k.encode())  # S3 lists in UTF-8 byte order
    nested = client.list_objects_v2(Bucket=bucket, Prefix="deep/nested/")
    assert [o["Key"] for o in nested["Contents"]] == ["deep/nested/other.tif", "deep/nested/prefix/x/y/z.tif"]
    top = client.list_objects_v2(Bucket=bucket, Delimiter="/")
    assert {p["Prefix"] for p in top["CommonPrefixes"]} == {"with space/", "中文/", "deep/"}
    assert {o["Key"] for o in top["Contents"]} == {"plain.tif", "a+b=c&d.tif", "100%25 and %20 and %.txt"}

    client.delete_object(Bucket=bucket, Key="中文/文件 名.tif")
    result = client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in AWKWARD_KEYS[:3]]})
    assert sorted(d["Key"] for d in result["Deleted"]) == sorted(AWKWARD_KEYS[:3])
    left = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert left == sorted([AWKWARD_KEYS[3], *AWKWARD_KEYS[5:]], key=lambda k: k.encode())
    with pytest.raises(botocore.exceptions.ClientError) as err:
        client.get_object(Bucket=bucket, Key="中文/文件 名.tif")
    assert err.value.response["Error"]["Code"] == "NoSuchKey"


def test_persistent_topic_pushes_raw_keys_to_rabbitmq(rgw: RgwEndpoint, bucket: str, rabbit_url: str) -> None:
    topic = unique_name("topic")
    key = "中文/文件 名+100%.tif"
    client = rgw.s3()
    with RgwEventQueue(topic, rabbit_url) as events:
        arn = create_topic(rgw, topic, ack_level="broker", persistent=True, opaque_data="smoke")
        try:
            configure_notifications(rgw, bucket, arn)
            put = client.put_object(Bucket=bucket, Key=key, Body=b"raster bytes")
            created = events.wait_for(event_of("ObjectCreated:", bucket, key), 120, "the PUT's event")

            assert created["eventName"] == "ObjectCreated:Put"  # no "s3:" prefix
            assert created["eventSource"] == "ceph:s3"
            assert created["opaqueData"] == "smoke"
            obj = created["s3"]["object"]
            assert obj["key"] == key  # raw UTF-8, not URL-encoded
            assert obj["size"] == len(b"raster bytes")
            assert obj["eTag"] == put["ETag"].strip('"')
            assert events.deliveries[0].delivery_mode == 2

            # A multi-object delete on a bucket with a persistent topic: beast kills 16.2.15, civetweb does not.
            client.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": key}]})
            removed = events.wait_for(event_of("ObjectRemoved:", bucket, key), 60, "the delete's event")
            assert removed["eventName"] == "ObjectRemoved:Delete"
            assert client.list_objects_v2(Bucket=bucket)["KeyCount"] == 0
        finally:
            remove_notifications(rgw, bucket)  # first: a bucket notifying a deleted topic refuses writes
            delete_topic(rgw, arn)


def test_password_in_push_endpoint_needs_forwarded_https(rgw: RgwEndpoint) -> None:
    """16.2.15 refuses a push endpoint with a password over plain http (HTTP 400, "Unknown" to boto3); the
    X-Forwarded-Proto: https hook, trusted by the script's conf, gets it through, and reading such a topic
    back needs the hook too."""
    topic = unique_name("topic")
    endpoint = f"amqp://guest:guest@127.0.0.1:5672/{EVENTS_VHOST}"
    with pytest.raises(botocore.exceptions.ClientError) as err:
        rgw.sns().create_topic(Name=topic, Attributes={"push-endpoint": endpoint, "amqp-exchange": EVENTS_EXCHANGE})
    assert err.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    arn = create_topic(rgw, topic, push_endpoint=endpoint)
    try:
        with pytest.raises(botocore.exceptions.ClientError):
            rgw.sns().get_topic_attributes(TopicArn=arn)
        attributes = rgw.sns(forwarded_https=True).get_topic_attributes(TopicArn=arn)["Attributes"]
        stored = json.loads(attributes["EndPoint"])
        assert stored["HasStoredSecret"] == "true" and stored["Persistent"] == "true"
        assert stored["EndpointAddress"] == endpoint
    finally:
        delete_topic(rgw, arn)

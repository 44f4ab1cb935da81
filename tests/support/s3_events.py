"""S3 bucket notifications as each store sends them (AWS, MinIO, Ceph RGW), and publishing them to
RabbitMQ the way the store would, for the S3 inbox tests: the records are copied from real events; the
``*_event`` helpers fill in the bucket, ETag and size of an object really put into moto."""

from __future__ import annotations

import json
import struct
import time
from typing import Any
from urllib.parse import quote_plus

import pika


def aws_record(key: str, name: str = "ObjectCreated:Put", **obj) -> dict:
    return {
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": "2026-11-27T03:00:00.000Z", "eventName": name,
        "userIdentity": {"principalId": "AWS:AIDAEXAMPLE"}, "requestParameters": {"sourceIPAddress": "10.0.0.1"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810",
                             "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "stacdrop",
               "bucket": {"name": "inbox", "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                          "arn": "arn:aws:s3:::inbox"},
               "object": {"key": quote_plus(key, safe="/"), "size": 10, "eTag": "abc", "sequencer": "0A1B", **obj}},
    }


def minio_message(key: str, name: str = "s3:ObjectCreated:Put") -> dict:
    return {
        "EventName": name, "Key": f"inbox/{key}",
        "Records": [{
            "eventVersion": "2.0", "eventSource": "minio:s3", "awsRegion": "", "eventTime": "2026-11-27T03:00:00Z",
            "eventName": name, "userIdentity": {"principalId": "minioadmin"},
            "requestParameters": {"principalId": "minioadmin", "region": "", "sourceIPAddress": "127.0.0.1"},
            "responseElements": {"x-amz-request-id": "17A", "x-minio-deployment-id": "d1", "x-minio-origin-endpoint": "http://m"},
            "s3": {"s3SchemaVersion": "1.0", "configurationId": "Config",
                   "bucket": {"name": "inbox", "ownerIdentity": {"principalId": "minioadmin"},
                              "arn": "arn:aws:s3:::inbox"},
                   "object": {"key": quote_plus(key), "size": 10, "eTag": "abc", "contentType": "image/tiff",
                              "userMetadata": {}, "sequencer": "17A9"}},
            "source": {"host": "127.0.0.1", "port": "", "userAgent": "MinIO"},
        }],
    }


def ceph_record(key: str, name: str = "ObjectCreated:Put") -> dict:
    return {
        "eventVersion": "2.2", "eventSource": "ceph:s3", "awsRegion": "default",
        "eventTime": "2026-11-27T03:00:00.124724Z", "eventName": name, "userIdentity": {"principalId": "tester"},
        "requestParameters": {"sourceIPAddress": ""},
        "responseElements": {"x-amz-request-id": "503a4c37.5330.903595", "x-amz-id-2": "14d2-zone1-zonegroup1"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "stacdrop",
               "bucket": {"name": "inbox", "ownerIdentity": {"principalId": "tester"}, "arn": "arn:aws:s3:::inbox",
                          "id": "503a4c37.5330.1"},
               "object": {"key": key, "size": 10, "eTag": "abc", "versionId": "", "sequencer": "F7E6D75DC742D108",
                          "metadata": [], "tags": []}},
        "eventId": "1574430455.124724.abc", "opaqueData": "",
    }



def wait_for(predicate, timeout: float = 15.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")



def publish(rabbit_url: str, exchange: str, message: dict, routing_key: str = "stacdrop") -> None:
    conn = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    ch = conn.channel()
    ch.basic_publish(exchange, routing_key, json.dumps(message).encode())
    conn.close()


def with_etag(record: dict, client, bucket: str, key: str) -> dict:
    head = client.head_object(Bucket=bucket, Key=key)
    record["s3"]["bucket"]["name"] = bucket
    record["s3"]["object"].update(eTag=head["ETag"].strip('"'), size=head["ContentLength"])
    return record


def aws_event(client, bucket: str, key: str, name: str = "ObjectCreated:Put") -> dict:
    rec = aws_record(key, name)
    rec["s3"]["object"].pop("sequencer")  # like moto: no sequencer
    return {"Records": [with_etag(rec, client, bucket, key) if name != "ObjectRemoved:Delete" else rec]}


def ceph_sequencer(ns: int) -> str:
    """Ceph RGW's sequencer: the hex of the little-endian bytes of (seconds, nanoseconds)."""
    return struct.pack("<II", ns // 1_000_000_000, ns % 1_000_000_000).hex().upper()


def ceph_event(client, bucket: str, key: str, name: str = "ObjectCreated:Put") -> dict:
    rec = ceph_record(key, name)
    rec["s3"]["object"]["sequencer"] = ceph_sequencer(time.time_ns())
    if name.startswith("ObjectCreated") and name != "ObjectCreated:Post":
        with_etag(rec, client, bucket, key)
    else:
        rec["s3"]["bucket"]["name"] = bucket
    return {"Records": [rec]}


def minio_event(client, bucket: str, key: str) -> dict:
    msg = minio_message(key)
    msg["Key"] = f"{bucket}/{key}"
    msg["Records"][0]["s3"]["object"]["sequencer"] = f"{time.monotonic_ns():X}"
    with_etag(msg["Records"][0], client, bucket, key)
    return msg


def declared(rabbit_url: str, exchange: str, queue: str, timeout: float = 15.0) -> None:
    """Wait until the inbox has declared and bound its queue."""
    def ready() -> bool:
        conn = pika.BlockingConnection(pika.URLParameters(rabbit_url))
        try:
            ch = conn.channel()
            ch.queue_declare(queue, passive=True)
            return True
        except pika.exceptions.ChannelClosedByBroker:
            return False
        finally:
            if conn.is_open:
                conn.close()
    wait_for(ready, timeout, "the events queue")


"""A real Ceph RADOS Gateway for tests (the S3 server behind Arbutus), and its bucket notifications.

moto pushes no notifications; RGW does, and its events differ from what the documentation suggests (raw
keys, little-endian sequencers, late first events: ../shared/reference/ceph-rgw.md). scripts/ceph-rgw.sh
runs one on 127.0.0.1:7480 with a fixed test user; ``scripts/services.sh`` starts it for ``make test``.

* ``ensure_rgw()`` -> ``RgwEndpoint`` (URL and keys): starts the cluster through the script when RGW does
  not answer and Ceph is installed, else raises ``ServiceUnavailable`` (the ``rgw`` fixture skips, which
  fails under STACDROP_REQUIRE_SERVICES=1).
* ``create_topic()`` / ``delete_topic()``: a topic through RGW's SNS-compatible API that pushes to
  RabbitMQ; ``configure_notifications()`` connects a bucket to it, ``remove_notifications()`` disconnects
  it (before the topic goes: see there), ``delete_bucket()`` does both and empties the bucket.
* ``RgwEventQueue``: a queue of this test bound to the events exchange by the topic's name (RGW's
  routing key), and ``wait_for()`` its records.

One vhost and one exchange for every RGW test (``EVENTS_VHOST``, ``EVENTS_EXCHANGE``): RGW keeps one AMQP
connection per broker (host, port, vhost), whatever the rest of the push-endpoint URL, and ties it to the
exchange of the first topic that used it; a topic with the same broker and another exchange then fails
with "exchange mismatch" (RGW log only) until radosgw restarts. Tests therefore share the exchange, tell
their events apart by topic (routing key), and keep to a vhost of their own so topics made elsewhere on
the default vhost cannot take the connection.
Use unique bucket and topic names per test (``unique_name()``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika

from tests.support.services import RABBIT_URL, ServiceUnavailable

# The fixed test user of scripts/ceph-rgw.sh (change both together).
RGW_URL = os.environ.get("STACDROP_TEST_RGW", "http://127.0.0.1:7480")
RGW_ACCESS_KEY = os.environ.get("STACDROP_TEST_RGW_ACCESS_KEY", "STACDROPTESTACCESSKEY")
RGW_SECRET_KEY = os.environ.get("STACDROP_TEST_RGW_SECRET_KEY", "stacdrop-test-secret-key-0123456789abcdef")
RGW_REGION = "default"  # RGW's zonegroup; its SNS API wants it as the region
SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "ceph-rgw.sh"
START_TIMEOUT = 180.0

EVENTS_VHOST = "stacdrop-test-rgw"
EVENTS_EXCHANGE = "stacdrop-test.rgw-events"
# No user info: 16.2.15 refuses a password in the push endpoint over plain http, and logs in as guest/guest.
PUSH_ENDPOINT = f"amqp://127.0.0.1:5672/{EVENTS_VHOST}"
ALL_EVENTS = ("s3:ObjectCreated:*", "s3:ObjectRemoved:*")


@dataclass(frozen=True)
class RgwEndpoint:
    """Where the test RGW answers and the keys of its test user."""

    url: str = RGW_URL
    access_key: str = RGW_ACCESS_KEY
    secret_key: str = RGW_SECRET_KEY
    region: str = RGW_REGION

    def s3(self) -> Any:
        """A boto3 S3 client (default settings: they work against 16.2.15 over http)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.url, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region)

    def sns(self, *, forwarded_https: bool = False) -> Any:
        """A boto3 client of RGW's SNS-compatible topic API. ``forwarded_https`` adds ``X-Forwarded-Proto:
        https`` to every call, which (with the script's ``rgw trust forwarded https``) lets a push endpoint
        carry a password over plain http."""
        import boto3

        client = boto3.client("sns", endpoint_url=self.url, aws_access_key_id=self.access_key,
                              aws_secret_access_key=self.secret_key, region_name=self.region)
        if forwarded_https:
            def add_header(request: Any, **_: Any) -> None:
                request.headers["X-Forwarded-Proto"] = "https"

            client.meta.events.register("before-sign.sns.*", add_header)
        return client


def unique_name(prefix: str = "t") -> str:
    """A bucket or topic name of one test (lowercase, S3-valid)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def _answers(url: str, attempts: int = 3) -> bool:
    """RGW answers its anonymous bucket list. A few tries: a busy RGW (2 shared cores) can be slow."""
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:  # loopback
                resp.read(1)
            return True
        except Exception:  # noqa: BLE001 - down, or not yet answering
            if attempt + 1 < attempts:
                time.sleep(1.0)
    return False


def ensure_rgw(endpoint: RgwEndpoint | None = None, timeout: float = START_TIMEOUT) -> RgwEndpoint:
    """The test RGW, started through scripts/ceph-rgw.sh (never installed from a test) when it does not
    answer; the script never re-creates a cluster whose daemons all run, so a slow answer costs time, not
    other sessions' buckets. A missing Ceph is ``ServiceUnavailable``; one that does not come up fails."""
    endpoint = endpoint or RgwEndpoint()
    if _answers(endpoint.url):
        return endpoint
    if shutil.which("radosgw") is None or shutil.which("ceph-mon") is None:
        raise ServiceUnavailable("Ceph RGW is not reachable and Ceph is not installed "
                                 "(bash scripts/ceph-rgw.sh install)")
    proc = subprocess.run(["bash", str(SCRIPT), "start"], capture_output=True, text=True, timeout=timeout,
                          check=False)
    if proc.returncode != 0 or not _answers(endpoint.url, attempts=1):
        raise RuntimeError(f"scripts/ceph-rgw.sh start failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return endpoint


# -- topics and bucket notifications --------------------------------------------------------------------


def events_url(rabbit_url: str = RABBIT_URL, vhost: str = EVENTS_VHOST) -> str:
    """``rabbit_url`` on ``vhost``: where consumers read what RGW pushes to ``PUSH_ENDPOINT``."""
    parts = urllib.parse.urlsplit(rabbit_url)
    return urllib.parse.urlunsplit(parts._replace(path="/" + urllib.parse.quote(vhost, safe="")))


def ensure_vhost(rabbit_url: str = RABBIT_URL, vhost: str = EVENTS_VHOST) -> None:
    """Create ``vhost`` (idempotent) and give the URL's user all rights on it, through the management API
    (``scripts/services.sh`` enables it); RGW, logging in as guest, needs the same rights."""
    import requests

    parts = urllib.parse.urlsplit(rabbit_url)
    auth = (urllib.parse.unquote(parts.username or "guest"), urllib.parse.unquote(parts.password or "guest"))
    base = f"http://{parts.hostname}:15672/api"
    name = urllib.parse.quote(vhost, safe="")
    requests.put(f"{base}/vhosts/{name}", auth=auth, timeout=10).raise_for_status()
    for user in {auth[0], "guest"}:
        requests.put(f"{base}/permissions/{name}/{urllib.parse.quote(user, safe='')}", auth=auth, timeout=10,
                     json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()


def declare_exchange(rabbit_url: str = RABBIT_URL, exchange: str = EVENTS_EXCHANGE,
                     vhost: str = EVENTS_VHOST) -> None:
    """The vhost and the durable topic exchange RGW pushes to: RGW declares neither, and a missing one
    drops the events."""
    ensure_vhost(rabbit_url, vhost)
    conn = pika.BlockingConnection(pika.URLParameters(events_url(rabbit_url, vhost)))
    try:
        conn.channel().exchange_declare(exchange, "topic", durable=True)
    finally:
        conn.close()


def create_topic(rgw: RgwEndpoint, name: str, *, exchange: str = EVENTS_EXCHANGE,
                 push_endpoint: str = PUSH_ENDPOINT, ack_level: str = "broker", persistent: bool = True,
                 opaque_data: str = "") -> str:
    """A topic pushing to ``exchange`` at ``push_endpoint``; returns its ARN. Events arrive with the
    routing key ``name``. With a password in ``push_endpoint`` the calls carry X-Forwarded-Proto: https.
    boto3 shows RGW's SNS errors as "Unknown": the RGW log ($STACDROP_CEPH_DIR/log/rgw.log) says why."""
    attributes = {"push-endpoint": push_endpoint, "amqp-exchange": exchange, "amqp-ack-level": ack_level,
                  "persistent": "true" if persistent else "false"}
    if opaque_data:
        attributes["OpaqueData"] = opaque_data
    has_password = "@" in push_endpoint.split("//", 1)[-1].split("/", 1)[0]
    response = rgw.sns(forwarded_https=has_password).create_topic(Name=name, Attributes=attributes)
    return str(response["TopicArn"])


def delete_topic(rgw: RgwEndpoint, arn: str) -> None:
    rgw.sns().delete_topic(TopicArn=arn)


def configure_notifications(rgw: RgwEndpoint, bucket: str, topic_arn: str, *, events: Iterable[str] = ALL_EVENTS,
                            config_id: str = "stacdrop") -> None:
    """Notify ``topic_arn`` of ``events`` on ``bucket``. RGW merges configurations by Id (AWS replaces
    them), and an empty one is MalformedXML: remove one with ``delete_bucket_notification``."""
    rgw.s3().put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={"TopicConfigurations": [
            {"Id": config_id, "TopicArn": topic_arn, "Events": list(events)}]},
    )


def remove_notifications(rgw: RgwEndpoint, bucket: str) -> None:
    """Remove every notification of ``bucket``: RGW's ``DELETE /BUCKET?notification`` (not in AWS, so not in
    boto3; signed here with S3 SigV4). Do this before deleting a persistent topic a bucket still notifies: every
    write and delete on the bucket fails afterwards with 400 InvalidArgument ("failed to reserve
    notification on queue", RGW log)."""
    import requests
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    url = f"{rgw.url}/{urllib.parse.quote(bucket)}?notification"
    request = AWSRequest(method="DELETE", url=url)
    S3SigV4Auth(Credentials(rgw.access_key, rgw.secret_key), "s3", rgw.region).add_auth(request)
    response = requests.delete(url, headers=dict(request.headers), timeout=30)
    if response.status_code not in (200, 204):
        raise RuntimeError(f"DELETE {url}: HTTP {response.status_code} {response.text[:300]}")


def delete_bucket(rgw: RgwEndpoint, bucket: str) -> None:
    """Remove a test bucket: its notifications first (so a deleted topic cannot block the deletes), then
    its objects, then the bucket."""
    remove_notifications(rgw, bucket)
    client = rgw.s3()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])
    client.delete_bucket(Bucket=bucket)


# -- consuming the events -------------------------------------------------------------------------------


@dataclass
class RgwEventQueue:
    """An exclusive queue on ``vhost`` bound to ``exchange`` with the topic's name as routing key (use as a
    context manager; entering declares the vhost and the exchange). ``records`` holds every record received
    so far, in arrival order; ``deliveries`` the AMQP properties of each message."""

    routing_key: str
    rabbit_url: str = RABBIT_URL
    exchange: str = EVENTS_EXCHANGE
    vhost: str = EVENTS_VHOST
    records: list[dict[str, Any]] = field(default_factory=list)
    deliveries: list[pika.BasicProperties] = field(default_factory=list)
    _conn: Any = None
    _channel: Any = None
    _queue: str = ""

    def __enter__(self) -> "RgwEventQueue":
        declare_exchange(self.rabbit_url, self.exchange, self.vhost)
        self._conn = pika.BlockingConnection(pika.URLParameters(events_url(self.rabbit_url, self.vhost)))
        self._channel = self._conn.channel()
        self._queue = self._channel.queue_declare("", exclusive=True).method.queue
        self._channel.queue_bind(self._queue, self.exchange, routing_key=self.routing_key)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._conn is not None and self._conn.is_open:
            self._conn.close()

    def drain(self) -> list[dict[str, Any]]:
        """Take whatever is in the queue now; returns the new records."""
        new: list[dict[str, Any]] = []
        while True:
            method, properties, body = self._channel.basic_get(self._queue, auto_ack=True)
            if method is None:
                break
            self.deliveries.append(properties)
            new.extend(json.loads(body)["Records"])
        self.records.extend(new)
        return new

    def wait_for(self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 120.0,
                 what: str = "an RGW event") -> dict[str, Any]:
        """The first record (received before or during the wait) ``predicate`` accepts. The default
        timeout is long: a persistent topic's first events can be ~30 s late (~90 s after an RGW restart)."""
        deadline = time.monotonic() + timeout
        while True:
            for record in self.records:
                if predicate(record):
                    return record
            if time.monotonic() > deadline:
                seen = [(r.get("eventName"), r["s3"]["object"].get("key")) for r in self.records]
                raise AssertionError(f"no {what} within {timeout:.0f} s; received {seen}")
            if not self.drain():
                self._conn.sleep(0.1)  # keeps the connection's heartbeats going


def event_of(name_prefix: str, bucket: str, key: str) -> Callable[[dict[str, Any]], bool]:
    """A ``wait_for`` predicate: an event named ``name_prefix``... (e.g. "ObjectCreated:") for ``key``."""
    def matches(record: dict[str, Any]) -> bool:
        return (str(record.get("eventName", "")).startswith(name_prefix)
                and record["s3"]["bucket"]["name"] == bucket and record["s3"]["object"]["key"] == key)
    return matches

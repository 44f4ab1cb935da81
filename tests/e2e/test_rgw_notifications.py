"""``stacdrop s3 notifications setup | show | remove`` on the real Ceph RGW (scripts/ceph-rgw.sh) with
the real RabbitMQ: the topic through RGW's SNS API (persistent, ack level broker, the password through
the X-Forwarded-Proto route), the bucket's notification under the inbox prefix, a real event with the
raw key, then everything removed again, leaving the bucket usable."""

from __future__ import annotations

import json

import pytest

from stacdrop.app import s3_notifications as wiring
from stacdrop.config import Settings
from tests.support.rgw import EVENTS_EXCHANGE, RgwEndpoint, RgwEventQueue, delete_bucket, event_of, events_url, \
    unique_name

pytestmark = pytest.mark.e2e


def test_setup_show_remove_on_rgw(rgw: RgwEndpoint, rabbit_url: str) -> None:
    bucket, topic = unique_name("wire"), unique_name("topic")
    s3 = rgw.s3()
    s3.create_bucket(Bucket=bucket)
    amqp = events_url(rabbit_url)  # guest:guest on the test vhost: a password RGW must accept
    settings = Settings(inbox=f"s3://{bucket}/drop", aws_access_key_id=rgw.access_key,
                        aws_secret_access_key=rgw.secret_key, aws_endpoint_url=rgw.url, s3_events_amqp=amqp,
                        s3_events_exchange=EVENTS_EXCHANGE, s3_events_routing_key=topic)
    try:
        assert wiring.detect_flavour(settings, s3, bucket) is wiring.Flavour.CEPH
        with RgwEventQueue(routing_key=topic) as events:
            made = wiring.setup(settings)
            again = wiring.setup(settings)  # idempotent
            assert made.flavour is wiring.Flavour.CEPH and again.target == made.target
            assert made.target.endswith(f":{topic}")
            endpoint = json.loads(made.details["topic"]["EndPoint"])
            assert endpoint["Persistent"] == "true" and endpoint["EndpointTopic"] == topic
            assert "guest" not in json.dumps(made.as_dict())  # RGW keeps the password; nothing shows it
            config = s3.get_bucket_notification_configuration(Bucket=bucket)["TopicConfigurations"]
            assert [c["Id"] for c in config] == ["stacdrop"]

            key = "drop/c/a b+c%20ü.tif"
            s3.put_object(Bucket=bucket, Key=key, Body=b"raster")
            record = events.wait_for(event_of("ObjectCreated:", bucket, key), what="the PUT's event")
            assert record["s3"]["object"]["key"] == key  # raw, as RGW sends it
            s3.put_object(Bucket=bucket, Key="elsewhere/x.tif", Body=b"x")  # outside the prefix: no event
            s3.put_object(Bucket=bucket, Key="drop/c/second.tif", Body=b"x")
            events.wait_for(event_of("ObjectCreated:", bucket, "drop/c/second.tif"), what="the second PUT's event")
            assert not [r for r in events.records if r["s3"]["object"]["key"].startswith("elsewhere/")]

        shown = wiring.show(settings)
        assert shown.target == made.target and shown.details["events"] == wiring.EVENTS
        removed = wiring.remove(settings)
        assert removed.target == made.target
        assert wiring.show(settings).target == ""
        s3.put_object(Bucket=bucket, Key="drop/c/after.tif", Body=b"x")  # the bucket still takes writes
    finally:
        delete_bucket(rgw, bucket)

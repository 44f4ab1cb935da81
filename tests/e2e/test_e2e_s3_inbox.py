"""End to end with the S3 inbox: ``stacdrop run`` as a subprocess watching ``s3://BUCKET/drop`` on the moto
server, bucket events pushed (by the test, playing Ceph RGW / MinIO / AWS) through the real RabbitMQ,
COGs into a local store, items into a static catalog. A restart re-submits nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pika
import pytest
import rasterio

from tests.support.daemon import (
    DaemonProcess,
    base_env,
    catalog_items,
    ledger_for,
    settled_jobs,
    wait_until,
    write_collection,
    write_sidecar,
)
from tests.support.rasters import write_geotiff
from tests.support.services import delete_rabbit_prefix, unique_prefix
from tests.support.s3_events import aws_event, ceph_event, declared, minio_event, publish

pytestmark = pytest.mark.e2e  # slow: daemons, servers or many rasters (the fast suite is -m 'not e2e')

SECRET = "moto-secret-inbox"


@pytest.fixture
def setup(tmp_path: Path, moto_url: str, rabbit_url: str) -> Iterator[tuple[dict[str, str], str, str]]:
    bucket = f"inbox-{uuid.uuid4().hex[:10]}"
    client = boto3.client("s3", endpoint_url=moto_url, aws_access_key_id="test", aws_secret_access_key=SECRET,
                          region_name="us-east-1")
    client.create_bucket(Bucket=bucket)
    prefix = unique_prefix("s3in")
    exchange = f"{prefix}-events"
    env = base_env(tmp_path, STACDROP_INBOX=f"s3://{bucket}/drop", AWS_ENDPOINT_URL=moto_url,
                   ARBUTUS_OBJECT_ACCESS_ID="test", ARBUTUS_OBJECT_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1",
                   STACDROP_BROKER=rabbit_url, STACDROP_QUEUE_PREFIX=prefix, STACDROP_S3_EVENTS_EXCHANGE=exchange,
                   STACDROP_RECONCILE_INTERVAL="0")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        env.pop(name, None)
    yield env, bucket, exchange
    delete_rabbit_prefix(rabbit_url, prefix)
    conn = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    conn.channel().exchange_delete(exchange)
    conn.close()


def test_events_from_three_stores_become_items(tmp_path: Path, moto_url: str, rabbit_url: str, setup) -> None:
    env, bucket, exchange = setup
    client = boto3.client("s3", endpoint_url=moto_url, aws_access_key_id="test", aws_secret_access_key=SECRET,
                          region_name="us-east-1")
    local = tmp_path / "files"
    col = write_collection(local, "clim")
    rasters = {  # store -> key relative to the inbox
        "aws": "clim/sub dir/bio 1+2.tif",
        "ceph": "clim/ünï cödé.tif",
        "minio": "clim/a/b/c d.tif",
    }
    events = {"aws": aws_event, "ceph": ceph_event, "minio": minio_event}
    with DaemonProcess(tmp_path, env) as daemon:
        declared(rabbit_url, exchange, f"{env['STACDROP_QUEUE_PREFIX']}.s3-events", timeout=60)
        client.put_object(Bucket=bucket, Key="drop/clim/collection.json", Body=col.read_bytes())
        publish(rabbit_url, exchange, ceph_event(client, bucket, "drop/clim/collection.json"))
        for store, rel in rasters.items():
            path = write_geotiff(local / rel, dtype="uint16", nodata=0, width=256, height=256)
            side = write_sidecar(path, id=f"bio-{store}", datetime="1981-01-01T00:00:00Z")
            for file, key in ((path, f"drop/{rel}"), (side, f"drop/{rel[:-4]}.json")):
                client.put_object(Bucket=bucket, Key=key, Body=file.read_bytes())
                publish(rabbit_url, exchange, events[store](client, bucket, key))
        ledger = ledger_for(env)
        jobs = wait_until(lambda: settled_jobs(ledger, 4), 120, "jobs settled", daemon)
        assert [j.error for j in jobs if j.state != "published"] == []
        assert len(jobs) == 4
        assert SECRET not in daemon.logs()
    items = catalog_items(tmp_path / "data" / "stac")
    assert sorted(items) == ["clim/bio-aws", "clim/bio-ceph", "clim/bio-minio"]
    for store, rel in rasters.items():
        job = next(j for j in jobs if j.source_key == rel)
        assert job.source == f"s3://{bucket}/drop/{rel}"
        href = items[f"clim/bio-{store}"]["assets"]["data"]["href"]
        with rasterio.open(href) as ds:
            assert (ds.width, ds.height) == (256, 256)

    # a restart lists the prefix, finds every object remembered, and submits nothing
    with DaemonProcess(tmp_path, env) as daemon:
        wait_until(lambda: "s3 reconcile done" in daemon.logs().split("stacdrop stopped")[-1], 60,
                   "start-up reconcile", daemon)
    assert len(ledger_for(env).list_jobs(limit=100)) == 4
    done = [json.loads(line) for line in daemon.logs().splitlines() if "s3 reconcile done" in line]
    assert done[-1]["reported"] == 0 and done[-1]["listed"] == 7

"""``stacdrop s3 notifications setup | show | remove`` against moto's S3 and SQS over HTTP (the AWS
flavour: a queue, its policy, the bucket's notification), and what MinIO's operator is told to run.
The Ceph RGW flavour runs against the real RGW in tests/e2e/test_rgw.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import unquote_plus

import boto3
import pytest

from stacdrop.app import s3_notifications as wiring
from stacdrop.config import Settings
from stacdrop.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def settings_for(moto_url: str, bucket: str, **kw: object) -> Settings:
    return Settings(inbox=f"s3://{bucket}/drop", aws_access_key_id="test", aws_secret_access_key="test",
                    aws_endpoint_url=moto_url, **kw)


@pytest.fixture
def bucket(moto_url: str) -> str:
    name = f"wire-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto_url, aws_access_key_id="test", aws_secret_access_key="test",
                 region_name="us-east-1").create_bucket(Bucket=name)
    return name


def test_aws_setup_makes_a_queue_the_bucket_sends_to_then_show_and_remove(moto_url: str, bucket: str) -> None:
    settings = settings_for(moto_url, bucket)
    assert wiring.detect_flavour(settings, wiring.s3_client(settings.s3), bucket) is wiring.Flavour.AWS
    assert wiring.show(settings, wiring.Flavour.AWS).target == ""  # nothing wired yet
    made = wiring.setup(settings, wiring.Flavour.AWS)
    again = wiring.setup(settings, wiring.Flavour.AWS)  # idempotent: one notification, one queue
    assert again.target == made.target and made.target.startswith("arn:aws:sqs:")
    queue_url = made.details["queue_url"]
    assert made.details["events"] == wiring.EVENTS
    s3 = boto3.client("s3", endpoint_url=moto_url, aws_access_key_id="test", aws_secret_access_key="test",
                      region_name="us-east-1")
    config = s3.get_bucket_notification_configuration(Bucket=bucket)["QueueConfigurations"]
    assert [c["Id"] for c in config] == ["stacdrop"]
    assert config[0]["Filter"]["Key"]["FilterRules"] == [{"Name": "Prefix", "Value": "drop/"}] or \
        config[0]["Filter"]["Key"]["FilterRules"] == [{"Name": "prefix", "Value": "drop/"}]
    sqs = boto3.client("sqs", endpoint_url=moto_url, aws_access_key_id="test", aws_secret_access_key="test",
                       region_name="us-east-1")
    policy = json.loads(sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["Policy"])["Attributes"]["Policy"])
    assert policy["Statement"][0]["Condition"]["ArnLike"]["aws:SourceArn"] == f"arn:aws:s3:::{bucket}"

    s3.put_object(Bucket=bucket, Key="drop/c/a b.tif", Body=b"r")
    keys: list[str] = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not keys:
        for msg in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
                "Messages", []):
            keys += [r["s3"]["object"]["key"] for r in json.loads(msg["Body"]).get("Records", [])]
    assert [unquote_plus(k) for k in keys] == ["drop/c/a b.tif"]  # the bucket really sends to the queue

    removed = wiring.remove(settings, wiring.Flavour.AWS)
    assert removed.target == made.target and wiring.show(settings, wiring.Flavour.AWS).target == ""


def test_minio_setup_prints_the_commands_with_the_password_masked(moto_url: str, bucket: str) -> None:
    settings = settings_for(moto_url, bucket, s3_events_amqp="amqp://stacdrop:s3cr3t-pw@rabbit:5672/v",
                            s3_events_routing_key="inbox-topic")
    made = wiring.setup(settings, wiring.Flavour.MINIO)
    text = "\n".join(made.commands)
    assert "s3cr3t-pw" not in text and "amqp://stacdrop:***@rabbit:5672/v" in text
    assert f"mc event add ALIAS/{bucket} arn:minio:sqs::stacdrop:amqp --event put,delete --prefix drop/" in text
    assert "exchange=stacdrop.s3-events" in text and "routing_key=inbox-topic" in text


def test_a_local_inbox_has_no_bucket_to_wire() -> None:
    with pytest.raises(ConfigError, match="not an s3:// inbox"):
        wiring.show(Settings(inbox="/srv/inbox"))


def test_cli_show_and_a_clear_failure(moto_url: str, bucket: str, tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHONPATH": str(ROOT),
           "STACDROP_INBOX": f"s3://{bucket}/drop", "AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test",
           "STACDROP_AWS_ENDPOINT_URL": moto_url}
    cli = [sys.executable, "-m", "stacdrop.app.cli", "s3", "notifications"]
    out = subprocess.run([*cli, "setup", "--store", "aws"], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["target"].startswith("arn:aws:sqs:")
    shown = subprocess.run([*cli, "show"], env=env, capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["flavour"] == "aws" and json.loads(shown.stdout)["target"]
    env["STACDROP_INBOX"] = "s3://no-such-bucket-here/drop"
    bad = subprocess.run([*cli, "show", "--store", "aws"], env=env, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "no-such-bucket-here" in bad.stderr and "[config]" in bad.stderr
    assert "Traceback" not in bad.stderr

"""A bucket of the moto server for the S3 store, and a daemon environment that writes its COGs there with
the Arbutus credential names (the secret is one the tests look for in logs and errors)."""

from __future__ import annotations

import uuid
from pathlib import Path

import boto3

from tests.support.daemon import base_env

SECRET = "moto-secret-not-in-logs"


def s3(url: str):
    return boto3.client("s3", endpoint_url=url, aws_access_key_id="test", aws_secret_access_key=SECRET,
                        region_name="us-east-1")


def new_bucket(url: str) -> str:
    name = f"cogs-{uuid.uuid4().hex[:12]}"
    s3(url).create_bucket(Bucket=name)
    return name


def s3_env(root: Path, endpoint: str, bucket: str, **extra: str) -> dict[str, str]:
    env = base_env(root, STACDROP_STORE=f"s3://{bucket}/io", AWS_ENDPOINT_URL=endpoint,
                   ARBUTUS_OBJECT_ACCESS_ID="test", ARBUTUS_OBJECT_ACCESS_KEY=SECRET, AWS_DEFAULT_REGION="us-east-1",
                   **extra)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        env.pop(name, None)
    return env

"""S3 access shared by the stages: one client factory, one URL parser, one GDAL environment.

Credentials come from the standard AWS chain (environment, profile, instance role); settings
``aws_access_key_id`` / ``aws_secret_access_key`` (or the original system's ``ARBUTUS_OBJECT_ACCESS_ID`` /
``ARBUTUS_OBJECT_ACCESS_KEY``) and ``aws_endpoint_url`` (or ``AWS_ENDPOINT_URL``, for Ceph, MinIO, moto)
override it. Secrets never leave this module in logs or error messages.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from stacdrop.config import Settings


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``."""
    # Not urlsplit: '?' and '#' are legal in S3 keys and must stay part of the key.
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url}")
    bucket, _, key = url[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"not an s3:// URL: {url}")
    return bucket, key


def _credentials(settings: Settings) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if settings.aws_access_key_id and settings.aws_secret_access_key:
        kwargs["aws_access_key_id"] = settings.aws_access_key_id.get_secret_value()
        kwargs["aws_secret_access_key"] = settings.aws_secret_access_key.get_secret_value()
    return kwargs


def s3_client(settings: Settings, **config: Any) -> Any:
    """A boto3 S3 client for the configured endpoint and credentials."""
    import boto3  # noqa: PLC0415 - only S3 deployments pay for the import
    from botocore.config import Config  # noqa: PLC0415

    session = boto3.session.Session(**_credentials(settings))
    return session.client(
        "s3",
        endpoint_url=settings.aws_endpoint_url or None,
        config=Config(**{"retries": {"max_attempts": 5, "mode": "standard"}, **config}),  # callers may set retries
    )


@contextlib.contextmanager
def rasterio_env(settings: Settings) -> Iterator[None]:
    """A rasterio/GDAL environment that can open ``s3://`` hrefs on the configured endpoint."""
    import rasterio  # noqa: PLC0415
    from rasterio.session import AWSSession  # noqa: PLC0415

    creds = _credentials(settings)
    options: dict[str, Any] = {}
    endpoint = settings.aws_endpoint_url
    if endpoint:
        parts = urlsplit(endpoint)
        options["AWS_HTTPS"] = "NO" if parts.scheme == "http" else "YES"
        options["AWS_VIRTUAL_HOSTING"] = "FALSE"
        endpoint = parts.netloc
    session = AWSSession(**creds, endpoint_url=endpoint) if (creds or endpoint) else AWSSession()
    with rasterio.Env(session=session, **options):
        yield

"""Which store a setting names: a local folder or an S3 bucket.

Apart from processor.store so that the S3 store, which builds on the Store protocol there, and the
local store do not import each other; boto3 is imported only by S3 deployments.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlparse

from processor.store import LocalStore, Store
from stacdrop.errors import ConfigError


def open_store(url: str, settings: Any = None) -> Store:
    """LocalStore for a plain path or ``file://``, S3Store for ``s3://bucket/prefix``."""
    public_url = getattr(settings, "public_url", None) if settings is not None else None
    if "://" not in url:
        return LocalStore(url, public_url=public_url)
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(f"store {url!r}: file:// URLs must point at this machine")
        return LocalStore(unquote(parsed.path), public_url=public_url)
    if parsed.scheme == "s3":
        from processor.s3store import open_s3_store  # noqa: PLC0415 - only S3 deployments import boto3

        if not parsed.netloc:
            raise ConfigError(f"store {url!r}: no bucket (use s3://bucket/prefix)")
        return open_s3_store(url, settings)
    raise ConfigError(f"store {url!r}: unsupported scheme {parsed.scheme!r} (use a local directory or s3://)")

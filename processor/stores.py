"""Which store a setting names: a local folder or an S3 bucket.

Apart from processor.store so that the S3 store, which builds on the Store protocol there, and the
local store do not import each other; boto3 is imported only by S3 deployments.
"""

from __future__ import annotations

from urllib.parse import unquote, urlparse

from processor.store import LocalStore, Store
from stacdrop.config import S3Settings
from stacdrop.errors import ConfigError


def open_store(url: str, s3: S3Settings | None = None, *, public_url: str | None = None) -> Store:
    """LocalStore for a plain path or ``file://``, S3Store for ``s3://bucket/prefix`` (reached with ``s3``).
    ``public_url`` is the asset href template (the ``public_url`` setting)."""
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
        return open_s3_store(url, s3 or S3Settings(), public_url=public_url)
    raise ConfigError(f"store {url!r}: unsupported scheme {parsed.scheme!r} (use a local directory or s3://)")

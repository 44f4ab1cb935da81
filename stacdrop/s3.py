"""S3 access shared by the stages: one client factory, one URL parser, one GDAL environment.

Credentials come from settings ``aws_access_key_id`` / ``aws_secret_access_key`` (or the original
system's ``ARBUTUS_OBJECT_ACCESS_ID`` / ``ARBUTUS_OBJECT_ACCESS_KEY``), else from the AWS chain *without
its metadata services*: the environment (``AWS_ACCESS_KEY_ID`` ...), the shared credentials and config
files, ``credential_process``. ``aws_endpoint_url`` (or ``AWS_ENDPOINT_URL``, for Ceph, MinIO, moto) picks
the endpoint. Secrets never leave this module in logs or error messages.

No metadata service is ever queried. boto3's chain would otherwise ask the EC2 instance metadata
address (169.254.169.254) and the ECS/EKS container credentials endpoint for the host's role when nothing
else is configured: a submitted ``s3://`` URL would then be read with whatever role the machine has, and
the request itself reaches an internal service. ``s3_client`` removes those providers from the chain and
sets ``AWS_EC2_METADATA_DISABLED=true`` for the process (assume-role credential sources and the IMDS
region lookup read only that); with no credentials at all it raises ``MissingCredentials`` naming the
settings, so an ``s3://`` submission is a 422 and an ``s3://`` job a permanent, explained failure.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from stacdrop.config import S3Settings
from stacdrop.errors import MissingCredentials


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/key`` -> ``("bucket", "some/key")``."""
    # Not urlsplit: '?' and '#' are legal in S3 keys and must stay part of the key.
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url}")
    bucket, _, key = url[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"not an s3:// URL: {url}")
    return bucket, key


# The chain's providers that ask a metadata service (botocore's names for them).
METADATA_PROVIDERS = ("iam-role", "container-role")
MISSING_CREDENTIALS = (
    "no S3 credentials configured: set aws_access_key_id and aws_secret_access_key (STACDROP_AWS_ACCESS_KEY_ID "
    "and STACDROP_AWS_SECRET_ACCESS_KEY, or ARBUTUS_OBJECT_ACCESS_ID and ARBUTUS_OBJECT_ACCESS_KEY); "
    "instance and container metadata services are never used"
)


def s3_credentials(s3: S3Settings) -> dict[str, Any]:
    """The configured key pair as boto3 keyword arguments; {} to use the (metadata-free) AWS chain."""
    key_id, secret = s3.access_key_id, s3.secret_access_key
    if bool(key_id) != bool(secret):
        missing = "aws_secret_access_key (STACDROP_AWS_SECRET_ACCESS_KEY or ARBUTUS_OBJECT_ACCESS_KEY)" if key_id \
            else "aws_access_key_id (STACDROP_AWS_ACCESS_KEY_ID or ARBUTUS_OBJECT_ACCESS_ID)"
        raise MissingCredentials(f"incomplete S3 credentials: {missing} is not set")
    if key_id and secret:
        return {"aws_access_key_id": key_id.get_secret_value(), "aws_secret_access_key": secret.get_secret_value()}
    return {}


def _session(s3: S3Settings) -> Any:
    """A boto3 session whose credential chain asks no metadata service; MissingCredentials if it finds none."""
    import boto3  # noqa: PLC0415 - only S3 deployments pay for the import
    from botocore.exceptions import BotoCoreError  # noqa: PLC0415

    os.environ["AWS_EC2_METADATA_DISABLED"] = "true"
    session = boto3.session.Session(**s3_credentials(s3))
    resolver = session._session.get_component("credential_provider")  # noqa: SLF001 - boto3 exposes no other way
    for name in METADATA_PROVIDERS:
        resolver.remove(name)  # silent when absent
    try:
        found = session.get_credentials()
    except BotoCoreError as exc:  # e.g. AWS_PROFILE names a profile that does not exist
        raise MissingCredentials(f"{MISSING_CREDENTIALS} ({exc})") from None
    if found is None:
        raise MissingCredentials(MISSING_CREDENTIALS)
    return session


def s3_client(s3: S3Settings, **config: Any) -> Any:
    """A boto3 S3 client for the configured endpoint and credentials. Raises MissingCredentials (a
    permanent ConfigError naming the settings) when there are none; never asks a metadata service."""
    from botocore.config import Config  # noqa: PLC0415

    return _session(s3).client(
        "s3",
        endpoint_url=s3.endpoint_url or None,
        config=Config(**{"retries": {"max_attempts": 5, "mode": "standard"}, **config}),  # callers may set retries
    )


@contextlib.contextmanager
def rasterio_env(s3: S3Settings) -> Iterator[None]:
    """A rasterio/GDAL environment that can open ``s3://`` hrefs on the configured endpoint."""
    import rasterio  # noqa: PLC0415
    from rasterio.session import AWSSession  # noqa: PLC0415

    creds = s3_credentials(s3)
    options: dict[str, Any] = {}
    endpoint = s3.endpoint_url
    if endpoint:
        parts = urlsplit(endpoint)
        options["AWS_HTTPS"] = "NO" if parts.scheme == "http" else "YES"
        options["AWS_VIRTUAL_HOSTING"] = "FALSE"
        endpoint = parts.netloc
    session = AWSSession(**creds, endpoint_url=endpoint) if (creds or endpoint) else AWSSession()
    with rasterio.Env(session=session, **options):
        yield


# -- errors -------------------------------------------------------------------------------------------
# One reading of what S3 said, for every caller (the fetcher, the store, the inbox, HTTP submissions,
# backups). Each caller turns the kind into its own error, because "not found" means a bad submission to
# the API, a permanent source error to the processor and "gone, forget it" to the inbox; but what counts as
# "not found" or "overloaded" is decided here once. Codes cover AWS, Ceph RGW and MinIO: RGW answers a HEAD
# of a missing key with a bare 404 and no code; boto3 then reports the code as "404".


class S3Failure(StrEnum):
    NOT_FOUND = "not_found"  # the key (or, for a read, the bucket) does not exist
    NO_BUCKET = "no_bucket"
    FORBIDDEN = "forbidden"  # credentials refused or the policy denies
    NO_CREDENTIALS = "no_credentials"
    OVERLOADED = "overloaded"  # 429/502/503/504, SlowDown: the store is up but shedding load (an outage)
    SERVER_ERROR = "server_error"  # another 5xx, RequestTimeout, InternalError: try again
    UNREACHABLE = "unreachable"  # no answer at all: connection refused, DNS, timeout
    OTHER = "other"  # any other 4xx: the request is wrong, retrying will not help


_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_FORBIDDEN_CODES = frozenset({"401", "403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"})
_OVERLOADED_STATUS = frozenset({429, 502, 503, 504})
_RETRY_CODES = frozenset({"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable"})


@dataclass(frozen=True)
class S3Error:
    failure: S3Failure
    code: str  # S3's error code, "" when there was no answer
    status: int  # HTTP status, 0 when there was no answer
    reason: str  # short, for an error message: never credentials, URLs with signatures or request dumps

    @property
    def retryable(self) -> bool:
        return self.failure in (S3Failure.OVERLOADED, S3Failure.SERVER_ERROR, S3Failure.UNREACHABLE)

    @property
    def outage(self) -> bool:
        """The store is down or shedding load, not refusing this request: an outage, not the job's fault."""
        return self.failure in (S3Failure.OVERLOADED, S3Failure.UNREACHABLE)


def classify_s3_error(exc: BaseException) -> S3Error | None:
    """What a botocore/boto3 exception (or an OSError on the wire) says, or None for anything else."""
    from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError  # noqa: PLC0415

    if isinstance(exc, ClientError):
        code = str((exc.response.get("Error") or {}).get("Code") or "")
        status = int((exc.response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
        shown = f"{code or 'error'} (HTTP {status})" if code else f"HTTP {status}"
        if code == "NoSuchBucket":
            return S3Error(S3Failure.NO_BUCKET, code, status, "the bucket does not exist")
        if status == 404 or code in _NOT_FOUND_CODES:
            return S3Error(S3Failure.NOT_FOUND, code, status, f"not found ({code or 'HTTP 404'})")
        if status in (401, 403) or code in _FORBIDDEN_CODES:
            return S3Error(S3Failure.FORBIDDEN, code, status,
                           f"access denied ({code or f'HTTP {status}'}): check the S3 credentials and bucket policy")
        if status in _OVERLOADED_STATUS or code == "SlowDown":
            return S3Error(S3Failure.OVERLOADED, code, status, shown)
        if status >= 500 or code in _RETRY_CODES:
            return S3Error(S3Failure.SERVER_ERROR, code, status, shown)
        return S3Error(S3Failure.OTHER, code, status, shown)
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return S3Error(S3Failure.NO_CREDENTIALS, "", 0,
                       "no S3 credentials configured (AWS_ACCESS_KEY_ID / ARBUTUS_OBJECT_ACCESS_ID)")
    if isinstance(exc, BotoCoreError):
        return S3Error(S3Failure.UNREACHABLE, "", 0, f"{type(exc).__name__}: cannot reach the S3 endpoint")
    if isinstance(exc, OSError):
        return S3Error(S3Failure.UNREACHABLE, "", 0, f"{type(exc).__name__}: {exc.strerror or exc}")
    return None

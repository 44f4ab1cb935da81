"""The S3 store: COGs in a bucket (AWS, Ceph RGW, MinIO, moto), ``open_store("s3://bucket/prefix")``.

Keys are ``<prefix>/<store_key>``. An object is visible only once complete: small files go up in one PUT,
large ones as a multipart upload (``part_size`` parts, ``concurrency`` in flight) that is completed only
when every part is in, and aborted on any failure. An upload that could not even be aborted (the endpoint
went away) is aborted by the next ``put`` of the same key, before it starts.

Integrity: every request carries the MD5 of its body (``Content-MD5``: the server refuses a corrupted
part or object), the response ETags are compared with the local MD5s, and after completion a HEAD checks
the size, the ETag (``md5`` or ``md5(md5s)-N``) and the ``sha256`` metadata. A multipart upload also
carries a CRC32 per part (``ChecksumAlgorithm=CRC32``, a composite checksum, as boto3's own uploader
sends): the server checks each part's, and a server that keeps checksums keeps one per part instead of
re-reading the whole object for a full-object checksum at completion (moto does that; it cost a third
of the upload). Each part is read once, by the thread that sends it, and hashed (MD5; botocore adds
the CRC32 and, over plain http, the SigV4 payload sha256) as it goes up.

The whole-file sha256 is the one pass before the upload (~0.45 s per 550 MB with SHA-NI): S3 fixes an
object's metadata when the multipart upload is created, and the digest goes into that metadata (and
lets a retry skip an upload whose object is already there, identical), so it cannot wait for the parts.

Errors are ``StoreError`` (transient): network failures and 5xx, and also 403 and a missing bucket, which
are the operator's to fix (credentials, bucket policy) and then replay. Messages name the bucket, key,
S3 error code and HTTP status, never credentials.
"""

from __future__ import annotations

import base64
import concurrent.futures
import hashlib
import os
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

from stacdrop.config import S3Settings
from stacdrop.errors import ErrorClass, ConfigError, StoreError
from stacdrop.messages import StoredObject
from stacdrop.s3 import S3Failure, classify_s3_error

from processor.store import Store, check_key, sha256_file
from stacdrop.stac_terms import MediaType

PART_SIZE = 16 << 20  # bench/bench_s3_upload.py: 16 MiB x 4 beat 64 MiB x 4 and 8 MiB x 10 on moto
CONCURRENCY = 4
MAX_PARTS = 10_000
MIN_PART = 5 << 20
_ETAG_MD5_LEN = 32


_STORE_CLASSES = {
    S3Failure.FORBIDDEN: ErrorClass.STORE_ACCESS_DENIED,
    S3Failure.NO_CREDENTIALS: ErrorClass.STORE_ACCESS_DENIED,
    S3Failure.NO_BUCKET: ErrorClass.STORE_NO_BUCKET,
}


def describe_s3_error(exc: BaseException) -> tuple[ErrorClass, str]:
    """``(error_class, short reason)`` of a botocore/boto3 exception, without credentials or request dumps."""
    problem = classify_s3_error(exc)
    if problem is None:
        return ErrorClass.STORE, type(exc).__name__
    return _STORE_CLASSES.get(problem.failure, ErrorClass.STORE), problem.reason


def _store_error(where: str, what: str, exc: BaseException) -> StoreError:
    error_class, reason = describe_s3_error(exc)
    return StoreError(f"{where}: {what}: {reason}", error_class=error_class)


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


class S3Store(Store):
    """COGs in ``s3://bucket/prefix``. href = ``public_url.format(key=, bucket=)`` when set, else s3://."""

    remote = True

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any,
        public_url: str | None = None,
        acl: str | None = None,
        part_size: int = PART_SIZE,
        concurrency: int = CONCURRENCY,
        multipart_threshold: int | None = None,
    ) -> None:
        if part_size < MIN_PART:
            raise ConfigError(f"S3 part size {part_size} is below the S3 minimum of 5 MiB")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client
        self.public_url = public_url
        self.acl = acl
        self.part_size = part_size
        self.concurrency = max(1, concurrency)
        self.multipart_threshold = part_size if multipart_threshold is None else multipart_threshold

    # -- keys and hrefs -------------------------------------------------------------------------------

    def object_key(self, key: str) -> str:
        check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.object_key(key)}"

    def href(self, key: str) -> str:
        if self.public_url:  # an http(s) URL: the key percent-encoded (spaces, unicode), slashes kept
            return self.public_url.format(key=quote(self.object_key(key), safe="/~"), bucket=self.bucket)
        return self.url(key)

    def local_path_or_url(self, key: str) -> str:
        return self.url(key)

    # -- reads and deletes ------------------------------------------------------------------------------

    def _head(self, obj: str) -> dict[str, Any] | None:
        from botocore.exceptions import ClientError  # noqa: PLC0415

        try:
            return self.client.head_object(Bucket=self.bucket, Key=obj)
        except ClientError as exc:
            if (problem := classify_s3_error(exc)) is not None and problem.failure is S3Failure.NOT_FOUND:
                return None
            raise

    def exists(self, key: str) -> bool:
        obj = self.object_key(key)
        try:
            return self._head(obj) is not None
        except Exception as exc:  # noqa: BLE001 - classified
            raise _store_error(self.url(key), "cannot check the object", exc) from None

    def delete(self, key: str) -> None:
        obj = self.object_key(key)
        try:
            self.client.delete_object(Bucket=self.bucket, Key=obj)
        except Exception as exc:  # noqa: BLE001 - classified
            raise _store_error(self.url(key), "cannot delete", exc) from None

    # -- put ------------------------------------------------------------------------------------------

    def put(
        self,
        local_path: Path,
        key: str,
        *,
        content_type: str = MediaType.COG,
        move: bool = False,  # noqa: ARG002 - the Store interface; an upload always leaves the local file alone
    ) -> StoredObject:
        obj = self.object_key(key)
        where = self.url(key)
        local_path = Path(local_path)
        try:
            size = os.path.getsize(local_path)
        except FileNotFoundError:
            raise StoreError(f"{where}: the local file {local_path} is gone") from None
        extra: dict[str, Any] = {"ContentType": content_type}
        if self.acl:
            extra["ACL"] = self.acl
        try:
            if size <= self.multipart_threshold:
                with open(local_path, "rb") as f:
                    body = f.read()
                digest = hashlib.sha256(body).hexdigest()
                if self._already_there(obj, size, digest):
                    return self._stored(key, size, digest, content_type)
                md5 = hashlib.md5(body, usedforsecurity=False).digest()
                extra["Metadata"] = {"sha256": digest}
                resp = self.client.put_object(
                    Bucket=self.bucket, Key=obj, Body=body, ContentMD5=_b64(md5), **extra
                )
                etag = md5.hex()
                self._check_etag(where, resp.get("ETag"), etag, what="upload")
            else:
                digest = sha256_file(local_path)
                if self._already_there(obj, size, digest):
                    return self._stored(key, size, digest, content_type)
                extra["Metadata"] = {"sha256": digest}
                self._abort_stale(obj)
                etag = self._multipart(local_path, size, obj, where, extra)
            self._verify(obj, where, size, digest, etag)
        except StoreError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified
            raise _store_error(where, "upload failed", exc) from None
        return self._stored(key, size, digest, content_type)

    def _stored(self, key: str, size: int, digest: str, content_type: str) -> StoredObject:
        return StoredObject(href=self.href(key), key=key, size=size, sha256=digest, media_type=content_type)

    def _already_there(self, obj: str, size: int, digest: str) -> bool:
        """A retry after the object was completed (a crash or a lost response): nothing to upload."""
        head = self._head(obj)
        return head is not None and head.get("ContentLength") == size \
            and (head.get("Metadata") or {}).get("sha256") == digest

    def _abort_stale(self, obj: str) -> None:
        """Abort the multipart uploads of this exact key left by an earlier attempt that died."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": obj}
        while True:
            resp = self.client.list_multipart_uploads(**kwargs)
            for upload in resp.get("Uploads", []) or []:
                if upload.get("Key") == obj:
                    self._abort(obj, upload["UploadId"])
            if not resp.get("IsTruncated"):
                return
            kwargs["KeyMarker"] = resp.get("NextKeyMarker")
            kwargs["UploadIdMarker"] = resp.get("NextUploadIdMarker")

    def _abort(self, obj: str, upload_id: str) -> bool:
        from botocore.exceptions import ClientError  # noqa: PLC0415

        for attempt in range(3):
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=obj, UploadId=upload_id)
                return True
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") == "NoSuchUpload":
                    return True
            except Exception:  # noqa: BLE001, S110 - the endpoint is down: the next put of this key aborts it
                pass
            time.sleep(0.2 * (attempt + 1))
        return False

    def _part_size(self, size: int) -> int:
        part = self.part_size
        while (size + part - 1) // part > MAX_PARTS:
            part *= 2
        return part

    def _multipart(self, local_path: Path, size: int, obj: str, where: str, extra: dict[str, Any]) -> str:
        part_size = self._part_size(size)
        upload_id = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=obj, ChecksumAlgorithm="CRC32", **extra
        )["UploadId"]
        parts: dict[int, tuple[dict[str, Any], bytes]] = {}  # number -> (its entry for complete, MD5)
        failed = threading.Event()

        def send(number: int, offset: int, length: int) -> None:
            if failed.is_set():
                return
            with open(local_path, "rb") as f:
                f.seek(offset)
                body = f.read(length)
            if len(body) != length:
                raise StoreError(f"{where}: {local_path} changed while uploading")
            md5 = hashlib.md5(body, usedforsecurity=False).digest()
            resp = self.client.upload_part(
                Bucket=self.bucket, Key=obj, UploadId=upload_id, PartNumber=number, Body=body,
                ContentMD5=_b64(md5), ChecksumAlgorithm="CRC32",
            )
            self._check_etag(where, resp.get("ETag"), md5.hex(), what=f"part {number}")
            entry = {"PartNumber": number, "ETag": resp["ETag"]}
            if resp.get("ChecksumCRC32"):  # a server without checksums (older RGW) returns none
                entry["ChecksumCRC32"] = resp["ChecksumCRC32"]
            parts[number] = (entry, md5)

        try:
            spans = [(i + 1, off, min(part_size, size - off)) for i, off in enumerate(range(0, size, part_size))]
            # At most ``concurrency`` parts are read into memory at a time: one per worker thread.
            with concurrent.futures.ThreadPoolExecutor(self.concurrency, thread_name_prefix="s3-part") as pool:
                futures = [pool.submit(send, *span) for span in spans]
                for future in concurrent.futures.as_completed(futures):
                    try:
                        future.result()
                    except BaseException:
                        failed.set()
                        for f in futures:
                            f.cancel()
                        raise
            ordered = [parts[n][0] for n in sorted(parts)]
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=obj, UploadId=upload_id, MultipartUpload={"Parts": ordered}
            )
        except BaseException:
            self._abort(obj, upload_id)
            raise
        combined = hashlib.md5(b"".join(parts[n][1] for n in sorted(parts)), usedforsecurity=False).hexdigest()
        return f"{combined}-{len(parts)}"

    @staticmethod
    def _check_etag(where: str, etag: str | None, expected: str, *, what: str) -> None:
        got = (etag or "").strip('"')
        # Encrypted objects (SSE-KMS/C) have ETags that are no MD5: nothing to compare then.
        if len(got.split("-", 1)[0]) == _ETAG_MD5_LEN and got != expected:
            raise StoreError(f"{where}: {what}: the server's ETag {got} does not match the local MD5 {expected}",
                             error_class=ErrorClass.STORE_CHECKSUM)

    def _verify(self, obj: str, where: str, size: int, digest: str, etag: str) -> None:
        head = self._head(obj)
        if head is None:
            raise StoreError(f"{where}: the object is not there after the upload")
        problems = []
        if head.get("ContentLength") != size:
            problems.append(f"size {head.get('ContentLength')} != {size}")
        if (head.get("Metadata") or {}).get("sha256") != digest:
            problems.append("sha256 metadata differs")
        got = (head.get("ETag") or "").strip('"')
        if len(got.split("-", 1)[0]) == _ETAG_MD5_LEN and got != etag:
            problems.append(f"ETag {got} != {etag}")
        if problems:
            raise StoreError(
                f"{where}: check after upload failed: {'; '.join(problems)}", error_class=ErrorClass.STORE_CHECKSUM
            )


def open_s3_store(url: str, s3: S3Settings, *, public_url: str | None = None) -> S3Store:
    from stacdrop.s3 import parse_s3_url, s3_client  # noqa: PLC0415

    bucket, prefix = parse_s3_url(url)
    if public_url:
        try:
            public_url.format(key="k", bucket="b")
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(f"public_url {public_url!r}: only {{key}} and {{bucket}} may be used ({exc})") from None
    return S3Store(
        bucket,
        prefix,
        client=s3_client(s3, max_pool_connections=max(10, CONCURRENCY * 2)),
        public_url=public_url,
        acl=s3.store_acl,
    )

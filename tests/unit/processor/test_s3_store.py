"""S3Store against moto's S3 server over HTTP (the ``moto_url`` fixture): single PUT and multipart,
content type, ACL, checksums, hrefs, awkward keys, and an upload whose endpoint goes away mid-way.

The tests that apply to any S3 server run on moto and on the real Ceph RGW (the ``rgw`` fixture, the
store behind Arbutus) through the ``endpoint`` fixture; the RGW runs are marked ``e2e``. The ones that
stop or cut moto itself stay moto-only."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from processor.s3store import S3Store
from stacdrop.stac_terms import MediaType
from processor.stores import open_store
from stacdrop.config import Settings
from stacdrop.errors import StoreError
from tests.support.s3proxy import Proxy

MIB = 1 << 20


@dataclass(frozen=True)
class Endpoint:
    """An S3 server of a test: where it answers and the keys it takes."""

    url: str
    access_key: str = "test"
    secret_key: str = "test"
    region: str = "us-east-1"


def client_for(url: "str | Endpoint", **config):
    endpoint = url if isinstance(url, Endpoint) else Endpoint(url)
    return boto3.client("s3", endpoint_url=endpoint.url, aws_access_key_id=endpoint.access_key,
                        aws_secret_access_key=endpoint.secret_key, region_name=endpoint.region,
                        config=Config(**config))


@pytest.fixture(params=["moto", pytest.param("rgw", marks=pytest.mark.e2e)])
def endpoint(request) -> Endpoint:
    """moto, then the real Ceph RGW (tests/support/rgw.py; skipped without Ceph unless services are required)."""
    if request.param == "moto":
        return Endpoint(request.getfixturevalue("moto_url"))
    rgw = request.getfixturevalue("rgw")
    return Endpoint(rgw.url, rgw.access_key, rgw.secret_key, rgw.region)


@pytest.fixture
def bucket(endpoint: Endpoint) -> Iterator[str]:
    name = f"cogs-{uuid.uuid4().hex[:12]}"
    client = client_for(endpoint)
    client.create_bucket(Bucket=name)
    yield name
    for upload in client.list_multipart_uploads(Bucket=name).get("Uploads", []) or []:
        client.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=obj["Key"])
    client.delete_bucket(Bucket=name)


@pytest.fixture
def moto_bucket(moto_url: str) -> str:
    """A bucket on moto, for the tests that stop or cut moto itself."""
    name = f"cogs-{uuid.uuid4().hex[:12]}"
    client_for(moto_url).create_bucket(Bucket=name)
    return name


def multipart_etag(data: bytes, part_size: int) -> str:
    """S3's ETag of a multipart object: the MD5 of the parts' MD5s, then the part count."""
    parts = [data[i:i + part_size] for i in range(0, len(data), part_size)]
    combined = hashlib.md5(b"".join(hashlib.md5(p).digest() for p in parts)).hexdigest()
    return f"{combined}-{len(parts)}"


def settings_for(endpoint: "str | Endpoint", **kw) -> Settings:
    endpoint = endpoint if isinstance(endpoint, Endpoint) else Endpoint(endpoint)
    return Settings(aws_access_key_id=endpoint.access_key, aws_secret_access_key=endpoint.secret_key,
                    aws_endpoint_url=endpoint.url, **kw)


def random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def test_small_put_content_type_checksum_and_href(endpoint, bucket, tmp_path):
    store = open_store(f"s3://{bucket}/io", settings_for(endpoint).s3)
    src = random_file(tmp_path / "a.tif", 100_000)
    stored = store.put(src, "coll/a.tif", content_type=MediaType.COG)
    assert stored.href == f"s3://{bucket}/io/coll/a.tif" and stored.key == "coll/a.tif"
    assert stored.size == 100_000 and stored.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    s3 = client_for(endpoint)
    head = s3.head_object(Bucket=bucket, Key="io/coll/a.tif")
    assert head["ContentType"] == MediaType.COG
    assert head["Metadata"]["sha256"] == stored.sha256
    assert s3.get_object(Bucket=bucket, Key="io/coll/a.tif")["Body"].read() == src.read_bytes()
    assert store.exists("coll/a.tif") and not store.exists("coll/b.tif")
    assert src.exists()  # move=False never touches the source
    # a second put of the same bytes finds the object there and uploads nothing
    stored2 = store.put(src, "coll/a.tif")
    assert stored2 == stored
    store.delete("coll/a.tif")
    store.delete("coll/a.tif")  # absent: no error
    assert not store.exists("coll/a.tif")


def test_multipart_put_acl_and_public_url(endpoint, bucket, tmp_path):
    settings = settings_for(endpoint, store_acl="public-read", public_url="https://obj.example/{bucket}/{key}")
    store = open_store(f"s3://{bucket}/io/", settings.s3, public_url=settings.public_url)
    assert isinstance(store, S3Store)
    store.part_size = store.multipart_threshold = 5 * MIB
    store.concurrency = 2
    src = random_file(tmp_path / "big.tif", 12 * MIB + 123)
    stored = store.put(src, "c/big.tif")
    assert stored.href == f"https://obj.example/{bucket}/io/c/big.tif"
    s3 = client_for(endpoint)
    head = s3.head_object(Bucket=bucket, Key="io/c/big.tif")
    assert head["ETag"].strip('"') == multipart_etag(src.read_bytes(), 5 * MIB)  # md5 of 3 parts' md5s, "-3"
    assert head["ContentType"] == MediaType.COG and head["ContentLength"] == src.stat().st_size
    assert s3.get_object(Bucket=bucket, Key="io/c/big.tif")["Body"].read() == src.read_bytes()
    grants = s3.get_object_acl(Bucket=bucket, Key="io/c/big.tif")["Grants"]
    assert any(g["Grantee"].get("URI", "").endswith("/AllUsers") and g["Permission"] == "READ" for g in grants)
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert store.href("c/bio 1 é.tif") == f"https://obj.example/{bucket}/io/c/bio%201%20%C3%A9.tif"


AWKWARD_KEYS = [
    "c/with space/a b.tif",
    "c/a+b=c&d.tif",
    "c/100%25 and %20 and %.tif",
    "c/中文/文件 名.tif",
    "c/deep/nested/prefix/x/y/z.tif",
]


@pytest.mark.parametrize("size", [1000, 6 * MIB], ids=["put", "multipart"])
def test_awkward_keys_put_exists_delete(endpoint, bucket, tmp_path, size):
    """Spaces, ``+``, ``%``, unicode and nested prefixes reach the server as the very key (never
    form-decoded or double-encoded), in one PUT and in a multipart upload; exists and delete find them."""
    store = open_store(f"s3://{bucket}/io", settings_for(endpoint).s3)
    assert isinstance(store, S3Store)
    store.part_size = store.multipart_threshold = 5 * MIB
    s3 = client_for(endpoint)
    for i, key in enumerate(AWKWARD_KEYS):
        src = random_file(tmp_path / f"{i}.tif", size + i)
        stored = store.put(src, key)
        assert stored.key == key and stored.href == f"s3://{bucket}/io/{key}"
        head = s3.head_object(Bucket=bucket, Key=f"io/{key}")
        assert head["ContentLength"] == size + i and head["Metadata"]["sha256"] == stored.sha256
        if size > store.part_size:
            assert head["ETag"].strip('"') == multipart_etag(src.read_bytes(), 5 * MIB)
        else:
            assert head["ETag"].strip('"') == hashlib.md5(src.read_bytes()).hexdigest()
    listed = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert listed == sorted(f"io/{k}" for k in AWKWARD_KEYS)
    # the decoded or encoded neighbours of a key are other keys, not there
    assert not store.exists("c/a b=c&d.tif") and not store.exists("c/100% and   and %.tif")
    assert not store.exists("c/a%2Bb%3Dc%26d.tif")
    for key in AWKWARD_KEYS:
        assert store.exists(key)
        store.delete(key)
        assert not store.exists(key)
    assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")


def test_checksum_mismatch_is_detected(endpoint, bucket, tmp_path, monkeypatch):
    """An ETag that does not match the local MD5 (corruption on the way) fails the put."""
    store = open_store(f"s3://{bucket}", settings_for(endpoint).s3)
    src = random_file(tmp_path / "a.tif", 1000)
    real = store.client.put_object
    monkeypatch.setattr(store.client, "put_object", lambda **kw: {**real(**kw), "ETag": '"' + "0" * 32 + '"'})
    with pytest.raises(StoreError, match="does not match") as err:
        store.put(src, "c/a.tif")
    assert err.value.transient and err.value.error_class == "store_checksum"


def test_errors_are_transient_and_name_no_secret(moto_url, moto_bucket, tmp_path):
    bucket = moto_bucket
    secret = "s3cr3t-never-shown"
    settings = Settings(aws_access_key_id="id", aws_secret_access_key=secret, aws_endpoint_url="http://127.0.0.1:9")
    store = open_store(f"s3://{bucket}/io", settings.s3)
    store.client = client_for("http://127.0.0.1:9", retries={"max_attempts": 1}, connect_timeout=1)
    src = random_file(tmp_path / "a.tif", 1000)
    with pytest.raises(StoreError) as err:
        store.put(src, "c/a.tif")
    assert err.value.transient and f"s3://{bucket}/io/c/a.tif" in str(err.value) and secret not in str(err.value)
    # a bucket that does not exist: transient (the operator creates it, the retry or a replay succeeds)
    store = open_store("s3://no-such-bucket-here/io", settings_for(moto_url).s3)
    with pytest.raises(StoreError, match="bucket does not exist") as err:
        store.put(src, "c/a.tif")
    assert err.value.error_class == "store_no_bucket"


def test_interrupted_multipart_upload_retries_cleanly(moto_server, moto_bucket, tmp_path):
    """The endpoint goes away after ~8 MiB of a 3-part upload: the put fails (transient), no object is
    visible; when it is back, the retry completes and no multipart upload is left behind."""
    proxy = Proxy(moto_server.port)
    try:
        client = client_for(proxy.url, retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=2,
                            read_timeout=5)
        store = S3Store(moto_bucket, "io", client=client, part_size=5 * MIB, concurrency=2)
        src = random_file(tmp_path / "big.tif", 14 * MIB)
        direct = client_for(moto_server.url)
        proxy.cut_after = 8 * MIB
        with pytest.raises(StoreError) as err:
            store.put(src, "c/big.tif")
        assert err.value.transient
        assert "Contents" not in direct.list_objects_v2(Bucket=moto_bucket)  # nothing partial is visible
        # (the abort could not reach the endpoint either: the upload may dangle until the next put)
        proxy.up = True
        stored = store.put(src, "c/big.tif")
        assert stored.size == 14 * MIB
        assert direct.get_object(Bucket=moto_bucket, Key="io/c/big.tif")["Body"].read() == src.read_bytes()
        assert not direct.list_multipart_uploads(Bucket=moto_bucket).get("Uploads")
    finally:
        proxy.close()


def test_failed_part_aborts_the_upload(endpoint, bucket, tmp_path, monkeypatch):
    store = S3Store(bucket, "", client=client_for(endpoint), part_size=5 * MIB)
    src = random_file(tmp_path / "big.tif", 11 * MIB)
    real = store.client.upload_part
    calls = []

    def flaky(**kw):
        calls.append(kw["PartNumber"])
        if kw["PartNumber"] == 2:
            raise ConnectionResetError("reset by peer")
        return real(**kw)

    monkeypatch.setattr(store.client, "upload_part", flaky)
    with pytest.raises(StoreError, match="upload failed"):
        store.put(src, "c/big.tif")
    direct = client_for(endpoint)
    assert not direct.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert "Contents" not in direct.list_objects_v2(Bucket=bucket)


def test_moto_stopped_mid_upload_then_started_again(tmp_path):
    """The S3 server process itself stops in the middle of a multipart upload and starts again (empty:
    moto keeps no state; the bucket is created again as an operator would): the put fails transiently,
    the retry completes, and no multipart upload is left."""
    from tests.support.services import MotoServer

    server = MotoServer().start()
    try:
        client = client_for(server.url, retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=2,
                            read_timeout=5)
        client.create_bucket(Bucket="restart-bucket")
        store = S3Store("restart-bucket", "io", client=client, part_size=5 * MIB, concurrency=1)
        src = random_file(tmp_path / "big.tif", 30 * MIB)
        real = client.upload_part
        errors: list[BaseException] = []

        def stop_after_first_part(**kw):
            if kw["PartNumber"] == 2:
                server.stop()
            return real(**kw)

        client.upload_part = stop_after_first_part
        try:
            store.put(src, "c/big.tif")
        except StoreError as exc:
            errors.append(exc)
        assert errors and errors[0].transient
        client.upload_part = real
        server.start()
        client.create_bucket(Bucket="restart-bucket")
        stored = store.put(src, "c/big.tif")
        assert stored.size == 30 * MIB
        assert client.get_object(Bucket="restart-bucket", Key="io/c/big.tif")["Body"].read() == src.read_bytes()
        assert not client.list_multipart_uploads(Bucket="restart-bucket").get("Uploads")
    finally:
        server.stop()

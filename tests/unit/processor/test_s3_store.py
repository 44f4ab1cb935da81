"""S3Store against moto's S3 server over HTTP (the ``moto_url`` fixture): single PUT and multipart,
content type, ACL, checksums, hrefs, and an upload whose endpoint goes away mid-way."""

from __future__ import annotations

import hashlib
import os
import uuid
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


def client_for(url: str, **config):
    return boto3.client("s3", endpoint_url=url, aws_access_key_id="test", aws_secret_access_key="test",
                        region_name="us-east-1", config=Config(**config))


@pytest.fixture
def bucket(moto_url: str) -> str:
    name = f"cogs-{uuid.uuid4().hex[:12]}"
    client_for(moto_url).create_bucket(Bucket=name)
    return name


def settings_for(moto_url: str, **kw) -> Settings:
    return Settings(aws_access_key_id="test", aws_secret_access_key="test", aws_endpoint_url=moto_url, **kw)


def random_file(path: Path, size: int) -> Path:
    path.write_bytes(os.urandom(size))
    return path


def test_small_put_content_type_checksum_and_href(moto_url, bucket, tmp_path):
    store = open_store(f"s3://{bucket}/io", settings_for(moto_url).s3)
    src = random_file(tmp_path / "a.tif", 100_000)
    stored = store.put(src, "coll/a.tif", content_type=MediaType.COG)
    assert stored.href == f"s3://{bucket}/io/coll/a.tif" and stored.key == "coll/a.tif"
    assert stored.size == 100_000 and stored.sha256 == hashlib.sha256(src.read_bytes()).hexdigest()
    s3 = client_for(moto_url)
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


def test_multipart_put_acl_and_public_url(moto_url, bucket, tmp_path):
    settings = settings_for(moto_url, store_acl="public-read", public_url="https://obj.example/{bucket}/{key}")
    store = open_store(f"s3://{bucket}/io/", settings.s3, public_url=settings.public_url)
    assert isinstance(store, S3Store)
    store.part_size = store.multipart_threshold = 5 * MIB
    store.concurrency = 2
    src = random_file(tmp_path / "big.tif", 12 * MIB + 123)
    stored = store.put(src, "c/big.tif")
    assert stored.href == f"https://obj.example/{bucket}/io/c/big.tif"
    s3 = client_for(moto_url)
    head = s3.head_object(Bucket=bucket, Key="io/c/big.tif")
    assert head["ETag"].strip('"').endswith("-3")  # three parts
    assert head["ContentType"] == MediaType.COG and head["ContentLength"] == src.stat().st_size
    assert s3.get_object(Bucket=bucket, Key="io/c/big.tif")["Body"].read() == src.read_bytes()
    grants = s3.get_object_acl(Bucket=bucket, Key="io/c/big.tif")["Grants"]
    assert any(g["Grantee"].get("URI", "").endswith("/AllUsers") and g["Permission"] == "READ" for g in grants)
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert store.href("c/bio 1 é.tif") == f"https://obj.example/{bucket}/io/c/bio%201%20%C3%A9.tif"


def test_checksum_mismatch_is_detected(moto_url, bucket, tmp_path, monkeypatch):
    """An ETag that does not match the local MD5 (corruption on the way) fails the put."""
    store = open_store(f"s3://{bucket}", settings_for(moto_url).s3)
    src = random_file(tmp_path / "a.tif", 1000)
    real = store.client.put_object
    monkeypatch.setattr(store.client, "put_object", lambda **kw: {**real(**kw), "ETag": '"' + "0" * 32 + '"'})
    with pytest.raises(StoreError, match="does not match") as err:
        store.put(src, "c/a.tif")
    assert err.value.transient and err.value.error_class == "store_checksum"


def test_errors_are_transient_and_name_no_secret(moto_url, bucket, tmp_path):
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


def test_interrupted_multipart_upload_retries_cleanly(moto_server, bucket, tmp_path):
    """The endpoint goes away after ~8 MiB of a 3-part upload: the put fails (transient), no object is
    visible; when it is back, the retry completes and no multipart upload is left behind."""
    proxy = Proxy(moto_server.port)
    try:
        client = client_for(proxy.url, retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=2,
                            read_timeout=5)
        store = S3Store(bucket, "io", client=client, part_size=5 * MIB, concurrency=2)
        src = random_file(tmp_path / "big.tif", 14 * MIB)
        direct = client_for(moto_server.url)
        proxy.cut_after = 8 * MIB
        with pytest.raises(StoreError) as err:
            store.put(src, "c/big.tif")
        assert err.value.transient
        assert "Contents" not in direct.list_objects_v2(Bucket=bucket)  # nothing partial is visible
        # (the abort could not reach the endpoint either: the upload may dangle until the next put)
        proxy.up = True
        stored = store.put(src, "c/big.tif")
        assert stored.size == 14 * MIB
        assert direct.get_object(Bucket=bucket, Key="io/c/big.tif")["Body"].read() == src.read_bytes()
        assert not direct.list_multipart_uploads(Bucket=bucket).get("Uploads")
    finally:
        proxy.close()


def test_failed_part_aborts_the_upload(moto_url, bucket, tmp_path, monkeypatch):
    store = S3Store(bucket, "", client=client_for(moto_url), part_size=5 * MIB)
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
    direct = client_for(moto_url)
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

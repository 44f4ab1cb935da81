"""End to end with the S3 store: ``stacdrop run`` as a subprocess, a local inbox, COGs into a bucket of
the moto server (over HTTP), items whose hrefs rasterio opens through ``stacdrop.s3.rasterio_env``."""

from __future__ import annotations

from pathlib import Path

import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from stacdrop.stac_terms import MediaType
from stacdrop.config import Settings
from stacdrop.s3 import rasterio_env
from tests.support.daemon import (
    DaemonProcess,
    catalog_items,
    ledger_for,
    settled_jobs,
    wait_until,
    write_collection,
    write_sidecar,
)
from tests.support.rasters import write_geotiff
from tests.support.s3_store import SECRET, new_bucket, s3, s3_env
from tests.support.s3proxy import Proxy

pytestmark = pytest.mark.e2e  # slow: daemons, servers or many rasters (the fast suite is -m 'not e2e')

def test_cogs_land_in_the_bucket_and_hrefs_read(tmp_path: Path, moto_url: str) -> None:
    bucket = new_bucket(moto_url)
    env = s3_env(tmp_path, moto_url, bucket, STACDROP_STORE_ACL="public-read")
    inbox = tmp_path / "inbox"
    write_collection(inbox, "clim")
    p = write_geotiff(inbox / "clim" / "bio 1.tif", dtype="uint16", nodata=0, width=600, height=400)
    write_sidecar(p, id="bio1", datetime="1981-01-01T00:00:00Z")

    with DaemonProcess(tmp_path, env) as daemon:
        jobs = wait_until(lambda: settled_jobs(ledger_for(env), 2), 90, "jobs settled", daemon)
        assert [j.error for j in jobs if j.state != "published"] == []
        logs = daemon.logs()
    assert SECRET not in logs

    head = s3(moto_url).head_object(Bucket=bucket, Key="io/clim/bio 1.tif")
    assert head["ContentType"] == MediaType.COG
    item = catalog_items(tmp_path / "data" / "stac")["clim/bio1"]
    asset = item["assets"]["data"]
    assert asset["href"] == f"s3://{bucket}/io/clim/bio 1.tif"
    assert asset["file:size"] == head["ContentLength"]
    assert head["Metadata"]["sha256"] == asset["file:checksum"][4:]  # multihash 1220 + sha256 hex
    settings = Settings(aws_access_key_id="test", aws_secret_access_key=SECRET, aws_endpoint_url=moto_url)
    with rasterio_env(settings.s3):
        valid, errors, _ = cog_validate(asset["href"], quiet=True)
        assert valid, errors
        with rasterio.open(asset["href"]) as ds:
            assert (ds.width, ds.height) == (600, 400) and ds.read(1, window=((0, 8), (0, 8))).shape == (8, 8)


def test_endpoint_down_during_upload_then_back(tmp_path: Path, moto_server) -> None:
    """The S3 endpoint goes away in the middle of the COG's upload and stays down for a while: the job
    is retried with backoff and completes once it is back; nothing partial, no multipart upload left."""
    bucket = new_bucket(moto_server.url)
    proxy = Proxy(moto_server.port)
    try:
        env = s3_env(tmp_path, proxy.url, bucket, STACDROP_MAX_RETRIES="6", STACDROP_RETRY_BASE="1",
                     STACDROP_RETRY_MAX="3", STACDROP_PUBLIC_URL="https://objects.example/{bucket}/{key}")
        inbox = tmp_path / "inbox"
        write_collection(inbox, "dem")
        proxy.cut_after = 20_000  # past the HEAD requests, inside the PUT of the ~1 MB COG
        p = write_geotiff(inbox / "dem" / "dem.tif", dtype="float32", width=512, height=512)
        write_sidecar(p, id="dem", datetime="2020-01-01")
        with DaemonProcess(tmp_path, env) as daemon:
            ledger = ledger_for(env)

            def failed_once():
                return [j for j in ledger.list_jobs(limit=10) if j.source_key.endswith("dem.tif") and j.error]

            wait_until(lambda: not proxy.up, 60, "the endpoint cut mid-upload", daemon)
            failed = wait_until(failed_once, 60, "a failed upload attempt", daemon)
            assert failed[0].error_class.startswith("store") and "s3://" in failed[0].error
            assert SECRET not in failed[0].error
            proxy.up = True
            jobs = wait_until(lambda: settled_jobs(ledger, 2), 90, "jobs settled", daemon)
            assert [j.error for j in jobs if j.state != "published"] == []
        direct = s3(moto_server.url)
        assert not direct.list_multipart_uploads(Bucket=bucket).get("Uploads")
        item = catalog_items(tmp_path / "data" / "stac")["dem/dem"]
        assert item["assets"]["data"]["href"] == f"https://objects.example/{bucket}/io/dem/dem.tif"
        assert direct.head_object(Bucket=bucket, Key="io/dem/dem.tif")["ContentLength"] == \
            item["assets"]["data"]["file:size"]
    finally:
        proxy.close()

"""Sources by URL: http(s) from a local http.server thread, s3:// from the moto server; URL safety."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

import processor.fetch as fetch
from processor.errors import SourceForbidden, SourceTooLarge, SourceUnavailable
from processor.fetch import fetch_source
from processor.s3store import S3Store
from processor.stage import process_raster
from stacdrop.config import Settings
from stacdrop.errors import SourceNotFound
from stacdrop.messages import IngestRequest, Source
from stacdrop.urls import UnsafeURL, check_source_url
from stacdrop.app.components import processor_settings
from tests.support.http_server import LocalHttpServer, QuietHandler
from tests.support.rasters import write_geotiff

LOCAL = Settings(allowed_hosts=["127.0.0.1"])


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(fetch, "BACKOFF", 0.01)


class Files(LocalHttpServer):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.hits: dict[str, int] = {}
        super().__init__(Handler)


class Handler(QuietHandler):
    server: Files

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        hits = self.server.hits[path] = self.server.hits.get(path, 0) + 1
        if path == "/forbidden.tif":
            return self.send_error(403)
        if path == "/broken.tif":
            return self.send_error(503)
        if path == "/flaky.tif" and hits <= 2:
            return self.send_error(500)
        if path == "/to-metadata":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/latest/meta-data/")
            self.send_header("Content-Length", "0")
            return self.end_headers()
        if path == "/moved.tif":
            self.send_response(301)
            self.send_header("Location", "/data/a.tif")
            self.send_header("Content-Length", "0")
            return self.end_headers()
        name = "a.tif" if path == "/flaky.tif" else path.rsplit("/", 1)[-1]
        file = self.server.root / name
        if not file.is_file():
            return self.send_error(404)
        body = file.read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def web(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "a.tif").write_bytes(os.urandom(300_000))
    with Files(root) as server:
        yield server


def leftovers(workdir: Path) -> list[str]:
    return sorted(p.name for p in workdir.iterdir()) if workdir.exists() else []


def test_http_source_streamed_and_removed(web, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    with fetch_source(f"{web.url}/data/a.tif?sig=abc", work, processor_settings(LOCAL).access) as local:
        assert Path(local).read_bytes() == (web.root / "a.tif").read_bytes()
        assert local.endswith(".tif") and Path(local).parent == work
    assert leftovers(work) == []
    # a redirect on an allowed host
    with fetch_source(f"{web.url}/moved.tif", work, processor_settings(LOCAL).access) as local:
        assert Path(local).stat().st_size == 300_000
    # two 500s, then the file
    with fetch_source(f"{web.url}/flaky.tif", work, processor_settings(LOCAL).access) as local:
        assert Path(local).stat().st_size == 300_000
    assert web.hits["/flaky.tif"] == 3


def test_http_errors(web, tmp_path):
    work = tmp_path
    with pytest.raises(SourceNotFound, match=r"missing\.tif: source not found \(HTTP 404\)"):
        with fetch_source(f"{web.url}/missing.tif", work, processor_settings(LOCAL).access):
            pass
    with pytest.raises(SourceForbidden, match="HTTP 403") as err:
        with fetch_source(f"{web.url}/forbidden.tif", work, processor_settings(LOCAL).access):
            pass
    assert not err.value.transient
    with pytest.raises(SourceUnavailable, match="HTTP 503 .after 3 attempts") as err:
        with fetch_source(f"{web.url}/broken.tif?token=secret", work, processor_settings(LOCAL).access):
            pass
    assert err.value.transient and "secret" not in str(err.value)
    assert web.hits["/broken.tif"] == 3
    with pytest.raises(SourceTooLarge, match="max_source_bytes"):
        access = processor_settings(Settings(allowed_hosts=["127.0.0.1"], max_source_bytes=1000)).access
        with fetch_source(f"{web.url}/a.tif", work, access):
            pass
    with pytest.raises(UnsafeURL, match="169.254.169.254 is not on allowed_hosts"):  # redirects are checked too
        with fetch_source(f"{web.url}/to-metadata", work, processor_settings(LOCAL).access):
            pass
    with pytest.raises(SourceUnavailable, match="ConnectionError"):  # nothing listens there
        with fetch_source("http://127.0.0.1:9/x.tif", work, processor_settings(LOCAL).access):
            pass
    assert [n for n in leftovers(work) if n.startswith("src-")] == []


def test_url_safety():
    nobody = Settings()
    for url in ("http://127.0.0.1/x.tif", "http://localhost:8080/x.tif", "http://169.254.169.254/latest/meta-data/",
                "http://[::1]/x", "http://[fe80::1]/x", "http://10.1.2.3/x", "http://192.168.0.1/x",
                "http://0.0.0.0/x", "http://[::ffff:127.0.0.1]/x", "https://100.64.0.1/x"):
        with pytest.raises(UnsafeURL, match="loopback, link-local or private"):
            check_source_url(url, nobody.limits.allowed_hosts)
    for url in ("ftp://example.org/x.tif", "file:///etc/passwd", "gopher://x/", "x.tif"):
        with pytest.raises(UnsafeURL, match="not allowed"):
            check_source_url(url, nobody.limits.allowed_hosts)
    listed = Settings(allowed_hosts=["data.example.org", "127.0.0.1"])
    with pytest.raises(UnsafeURL, match="not on allowed_hosts"):
        check_source_url("https://evil.example.com/x.tif", listed.limits.allowed_hosts)
    with pytest.raises(UnsafeURL, match="not on allowed_hosts"):
        check_source_url("http://169.254.169.254/latest", listed.limits.allowed_hosts)
    check_source_url("http://127.0.0.1:8000/x.tif", listed.limits.allowed_hosts)  # listed explicitly: allowed
    check_source_url("https://8.8.8.8/x.tif", nobody.limits.allowed_hosts)  # a public address, no list: allowed
    check_source_url("s3://bucket/key.tif", listed.limits.allowed_hosts)  # goes to the configured endpoint
    with pytest.raises(UnsafeURL) as err:
        check_source_url("http://user:hunter2@127.0.0.1/x", nobody.limits.allowed_hosts)
    assert "hunter2" not in str(err.value)


# -- s3:// --------------------------------------------------------------------------------------------


@pytest.fixture
def s3env(moto_url):
    settings = Settings(aws_access_key_id="test", aws_secret_access_key="test", aws_endpoint_url=moto_url)
    client = boto3.client("s3", endpoint_url=moto_url, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")
    bucket = f"src-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    return settings, client, bucket


def test_s3_source(s3env, tmp_path):
    settings, client, bucket = s3env
    data = os.urandom(200_000)
    client.put_object(Bucket=bucket, Key="in/a b+c.tif", Body=data)
    with fetch_source(f"s3://{bucket}/in/a b+c.tif", tmp_path, processor_settings(settings).access) as local:
        assert Path(local).read_bytes() == data
    assert leftovers(tmp_path) == []
    with pytest.raises(SourceNotFound, match=f"s3://{bucket}/in/nope.tif: source not found"):
        with fetch_source(f"s3://{bucket}/in/nope.tif", tmp_path, processor_settings(settings).access):
            pass
    with pytest.raises(SourceNotFound):
        with fetch_source("s3://no-such-bucket-xyz/in/a.tif", tmp_path, processor_settings(settings).access):
            pass
    with pytest.raises(SourceTooLarge):
        access = processor_settings(settings.replace(max_source_bytes=10)).access
        with fetch_source(f"s3://{bucket}/in/a b+c.tif", tmp_path, access):
            pass
    assert leftovers(tmp_path) == []


def test_s3_source_forbidden(s3env, tmp_path, monkeypatch):
    """A 403 from the object store (moto does not enforce policies: the answer is stubbed)."""
    settings, client, bucket = s3env
    stubbed = boto3.client("s3", endpoint_url=settings.s3.endpoint_url, aws_access_key_id="x",
                           aws_secret_access_key="y", region_name="us-east-1")
    stub = Stubber(stubbed)
    stub.add_client_error("get_object", service_error_code="AccessDenied", http_status_code=403)
    stub.activate()
    monkeypatch.setattr("stacdrop.s3.s3_client", lambda settings, **kw: stubbed)
    with pytest.raises(SourceForbidden, match="access denied") as err:
        with fetch_source(f"s3://{bucket}/in/a.tif", tmp_path, processor_settings(settings).access):
            pass
    assert f"s3://{bucket}/in/a.tif" in str(err.value)  # names the source


def test_process_raster_from_http_into_s3(web, s3env, tmp_path):
    """A whole processor run: source over HTTP, COG into the S3 store, metadata read before the upload."""
    settings, client, bucket = s3env
    write_geotiff(web.root / "dem.tif", width=300, height=200)
    settings = settings.replace(allowed_hosts=["127.0.0.1"])
    store = S3Store(bucket, "io", client=client)
    request = IngestRequest(source=Source(url=f"{web.url}/dem.tif", key="coll/dem.tif", content_key="x"),
                            collection="coll", sidecar_text=json.dumps({"id": "dem", "datetime": "2020-01-01"}))
    steps: list[str] = []
    ready = process_raster(request, processor_settings(settings), store, workdir=tmp_path / "work",
                           on_step=steps.append)
    assert steps == ["fetch", "validate", "convert", "store", "metadata"]
    assert ready.cog.href == f"s3://{bucket}/io/coll/dem.tif" and ready.raster.width == 300
    assert client.head_object(Bucket=bucket, Key="io/coll/dem.tif")["ContentLength"] == ready.cog.size
    assert leftovers(tmp_path / "work") == []

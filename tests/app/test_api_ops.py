"""Operations endpoints against ``stacdrop serve`` (/healthz, /readyz, /explain), and the mapping of our steps
onto the original system's status step names."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from stacdrop.app.api.compat import ORIGINAL_STEPS, original_operation, source_url
from stacdrop.ledger import Job
from tests.support.api_server import ApiServer
from tests.support.daemon import base_env
from tests.support.http_server import FileServer
from tests.support.rasters import write_geotiff
from tests.support.services import free_port


def test_readyz_names_what_is_unreachable(tmp_path: Path) -> None:
    ok = ApiServer(tmp_path / "ok", base_env(tmp_path / "ok")).start()
    try:
        resp = ok.get("/readyz")
        assert resp.status_code == 200
        assert resp.json() == {"ready": True, "checks": {"broker": "ok", "ledger": "ok", "store": "ok", "stac": "ok"},
                               "detail": None}
        assert ok.get("/healthz").json() == {"status": "ok"}
    finally:
        ok.stop()
    dead_api = f"http://user:pw@127.0.0.1:{free_port()}/stac"  # nothing listens there
    down = ApiServer(tmp_path / "down", base_env(tmp_path / "down", STACDROP_STAC=dead_api)).start()
    try:
        resp = down.get("/readyz")
        assert resp.status_code == 503
        body = resp.json()
        assert body["ready"] is False and body["detail"] == "not ready: stac"
        assert body["checks"]["ledger"] == "ok" and body["checks"]["broker"] == "ok"
        assert "ConnectionError" in body["checks"]["stac"] and "pw" not in body["checks"]["stac"]
        assert down.get("/healthz").status_code == 200  # alive, just not ready
    finally:
        down.stop()


def test_broker_down_serve_starts_readyz_says_so_and_submissions_get_503(tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    write_geotiff(www / "a.tif", width=8, height=8)
    env = base_env(tmp_path, STACDROP_BROKER=f"amqp://guest:guest@127.0.0.1:{free_port()}/",  # nothing listens
                   STACDROP_API_TOKEN="t", STACDROP_ALLOWED_HOSTS="localhost",
                   STACDROP_COLLECTION_DEFAULTS=json.dumps({"create_if_missing": True}))
    with FileServer(www) as files:
        api = ApiServer(tmp_path, env).start()
        try:
            ready = api.get("/readyz")
            assert ready.status_code == 503 and ready.json()["detail"] == "not ready: broker"
            resp = api.post("/jobs", {"source": f"{files.url}/a.tif", "collection": "c", "datetime": "2000"})
            assert resp.status_code == 503 and "retry the request" in resp.json()["detail"]
            # The job written before the failure waits as "new"; the same request again would queue it.
            assert [j["state"] for j in api.get("/jobs").json()["jobs"]] == ["new"]
        finally:
            api.stop()


def test_explain_a_key_without_the_raster(tmp_path: Path) -> None:
    collections = {"chelsa-tas": {"key_template": "tas_{month}_{year}.tif", "properties": {"variable": "tas"},
                                  "asset_key": "cog"}}
    api = ApiServer(tmp_path, base_env(tmp_path, STACDROP_COLLECTIONS=json.dumps(collections))).start()
    try:
        body = api.get("/explain", params={"collection": "chelsa-tas", "key": "tas_06_2010.tif"}).json()
        assert body["id"] == "tas_06_2010" and body["collection"] == "chelsa-tas" and body["asset_key"] == "cog"
        assert body["properties"] == {"datetime": "2010-06-01T00:00:00Z", "variable": "tas", "year": 2010, "month": 6}
        assert body["provenance"] == {"id": "file_name", "collection": "inbox", "variable": "default",
                                      "year": "key_template", "month": "key_template", "datetime": "key_template"}
        assert "geometry" in body["needs_raster"] and "assets.<key>.raster:bands" in body["needs_raster"]
        assert body["notes"] == []
        # No datetime from any rule but the raster's tags: said so, not invented.
        other = api.get("/explain", params={"collection": "misc", "key": "dem.tif"}).json()
        assert other["properties"] == {"datetime": None}
        assert other["provenance"]["datetime"] == "raster_tags (needs the raster)" and other["notes"]
        bad = api.get("/explain", params={"collection": "chelsa-tas", "key": "tas_13_2010.tif"})
        assert bad.status_code == 422 and "month='13'" in bad.json()["detail"]
    finally:
        api.stop()


def _job(state: str, stage: str, step: str) -> Job:
    now = datetime.now(timezone.utc)
    return Job(id="j", kind="raster", source="s", source_key="c/s.tif", content_key="k", collection="c", item_id=None,
               origin="http", priority=5, state=state, stage=stage, step=step, attempts=1, error_class=None,
               error=None, input_sha256=None, input_size=None, cog_href=None, cog_key=None, cog_sha256=None,
               cog_size=None, params={}, created_at=now, updated_at=now, finished_at=None)


@pytest.mark.parametrize(("state", "stage", "step", "expected"), [
    ("queued", "watch", "queued", "**pending**"),
    ("processing", "process", "start", "GETITEMFILE"),
    ("processing", "process", "fetch", "GETITEMFILE"),
    ("failed", "process", "validate", "GETITEMFILE"),
    ("processing", "process", "convert", "TRANF_COG"),
    ("processing", "process", "store", "UPLOAD_COG_TO_SERVER"),
    ("publishing", "process", "metadata", "CREATEPYSTACITEM"),
    ("publishing", "publish", "start", "CREATEPYSTACITEM"),
    ("failed", "publish", "publish", "CREATEPYSTACITEM"),
    ("published", "publish", "finished", "PROCESS FINISHED"),
    ("skipped", "publish", "finished", "PROCESS FINISHED"),
    ("queued", "process", "queued", "**pending**"),  # a replayed dead letter waits again
])
def test_original_step_names(state: str, stage: str, step: str, expected: str) -> None:
    assert original_operation(_job(state, stage, step)) == expected
    assert expected in set(ORIGINAL_STEPS.values())


def test_source_url_joins_host_and_filename_like_the_original() -> None:
    assert source_url("https://files.example.org/data", "chelsa/bio1.tif") == "https://files.example.org/data/chelsa/bio1.tif"
    assert source_url("https://files.example.org/data/", "/bio1.tif") == "https://files.example.org/data/bio1.tif"


def test_s3_sources_by_etag(tmp_path: Path, moto_url: str) -> None:
    """An s3:// source on the configured endpoint: HEAD by boto3, the ETag is the content key (a resubmission
    is the same job), a missing key is a 422 naming it."""
    import uuid

    import boto3

    client = boto3.client("s3", endpoint_url=moto_url, aws_access_key_id="test", aws_secret_access_key="test",
                          region_name="us-east-1")
    bucket = f"api-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=bucket)
    client.put_object(Bucket=bucket, Key="chelsa/bio1.tif", Body=b"not read by the API")
    env = base_env(tmp_path, STACDROP_API_TOKEN="t", AWS_ENDPOINT_URL=moto_url, AWS_ACCESS_KEY_ID="test",
                   AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1",
                   STACDROP_COLLECTION_DEFAULTS=json.dumps({"create_if_missing": True}))
    api = ApiServer(tmp_path, env).start()
    try:
        body = {"collection_id": "chelsa", "name": "bio1", "date": "1981", "filename": "chelsa/bio1.tif",
                "file_source_host": f"s3://{bucket}"}
        first = api.post("/newitem", body)
        assert first.status_code == 200, first.text
        assert api.post("/newitem", body).json()["id"] == first.json()["id"]
        job = api.get(f"/jobs/{first.json()['id']}").json()
        assert job["source"] == f"s3://{bucket}/chelsa/bio1.tif" and job["source_key"] == "chelsa/chelsa/bio1.tif"
        client.put_object(Bucket=bucket, Key="chelsa/bio1.tif", Body=b"changed content")  # new ETag: new job
        assert api.post("/newitem", body).json()["id"] != first.json()["id"]
        missing = api.post("/newitem", {**body, "filename": "chelsa/none.tif"})
        assert missing.status_code == 422
        assert missing.json()["detail"].startswith(f"source s3://{bucket}/chelsa/none.tif not found")
    finally:
        api.stop()

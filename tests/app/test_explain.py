"""``stacdrop explain`` of a key (no raster) against the full derivation of a real GeoTIFF: the rules and
values explain reports are the ones derive_item uses, without the raster's fields."""

from __future__ import annotations

import json
from pathlib import Path

from processor import read_raster_metadata
from publisher import derive_item, derive_metadata
from stacdrop.app.explain import explain_file, explain_key
from stacdrop.config import Settings
from stacdrop.messages import RasterReady, Source, StoredObject
from stacdrop.sidecar import parse_sidecar
from tests.support.rasters import write_geotiff

COLLECTIONS = {"chelsa-tas": {"key_template": "tas_{month}_{year}.tif", "properties": {"variable": "tas"},
                              "asset_key": "cog"},
               "dated": {"properties": {"datetime": "2001-01-01"}}}
RASTER_KEYS = ("geometry", "bbox", "assets")


def _settings(tmp_path: Path) -> Settings:
    return Settings(inbox=str(tmp_path / "inbox"), collections=COLLECTIONS)


def test_explain_key_reports_what_derive_item_takes_from_key_and_sidecar(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    sidecar_text = json.dumps({"title": "Mean temperature", "properties": {"rcp": "8.5"}})
    explained = explain_key("tas_06_2010.tif", "chelsa-tas", settings, sidecar_text)
    assert explained["id"] == "tas_06_2010" and explained["asset_key"] == "cog" and explained["notes"] == []
    assert explained["properties"] == {"datetime": "2010-06-01T00:00:00Z", "title": "Mean temperature",
                                       "variable": "tas", "year": 2010, "month": 6, "rcp": "8.5"}

    path = write_geotiff(tmp_path / "inbox" / "chelsa-tas" / "tas_06_2010.tif", width=16, height=16)
    ready = RasterReady(source=Source(url=str(path), key="chelsa-tas/tas_06_2010.tif", content_key="k"),
                        collection="chelsa-tas",
                        sidecar=parse_sidecar(sidecar_text, "sidecar", settings.collection_settings),
                        cog=StoredObject(href="/store/x.tif", key="x.tif", size=1, sha256="ab" * 32),
                        raster=read_raster_metadata(str(path)))
    derived = derive_item(ready, settings.collection("chelsa-tas"))
    from_raster = {k for k in derived.provenance if k in RASTER_KEYS or k.startswith("proj:")}
    assert {k: v for k, v in derived.provenance.items() if k not in from_raster} == explained["provenance"]
    assert {k: v for k, v in derived.item["properties"].items() if not k.startswith("proj:")} \
        == explained["properties"]
    # The half without the raster is the same function explain calls.
    meta = derive_metadata(ready.source.key, "chelsa-tas", settings.collection("chelsa-tas"), ready.sidecar,
                           raster_tags=ready.raster.tags)
    assert (meta.id, meta.properties, meta.provenance) == (
        derived.item["id"], {k: v for k, v in derived.item["properties"].items() if not k.startswith("proj:")},
        {k: v for k, v in derived.provenance.items() if k not in from_raster})


def test_explain_key_leaves_a_datetime_the_raster_tags_would_give_open(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    for collection in ("misc", "dated"):  # the tags come before the collection defaults
        explained = explain_key("dem.tif", collection, settings)
        assert explained["properties"]["datetime"] is None
        assert explained["provenance"]["datetime"] == "raster_tags (needs the raster)" and explained["notes"]
        assert not any(k in RASTER_KEYS or k.startswith("proj:") for k in explained["provenance"])
    # With the file: no tags, so the collection default.
    path = write_geotiff(tmp_path / "inbox" / "dated" / "dem.tif", width=16, height=16)
    derived = explain_file(str(path), settings)
    assert derived.item["properties"]["datetime"] == "2001-01-01T00:00:00Z"
    assert derived.provenance["datetime"] == "default"

import json
import math

import pytest
import rasterio
from rasterio.transform import from_origin

from publisher.derive import derive_item
from publisher.validation import validate_item
from stacdrop.config import CollectionSettings
from stacdrop.errors import InvalidItem
from stacdrop.messages import BandMetadata, RasterMetadata
from tests.support.raster_ready import SHA, TEMPLATE, make_raster, make_ready
from tests.support.rasters import IGH_WKT, write_geotiff


def test_template_item_is_complete_and_valid():
    d = derive_item(make_ready(), CollectionSettings(key_template=TEMPLATE))
    item = d.item
    validate_item(item, "x")
    assert item["type"] == "Feature" and item["stac_version"] == "1.1.0" and item["links"] == []
    assert item["id"] == "CHELSA_tas_06_2010" and item["collection"] == "chelsa"
    assert item["bbox"] == [-10.0, 45.0, 0.0, 50.0]
    p = item["properties"]
    assert p["datetime"] == "2010-06-01T00:00:00Z"
    assert p["variable"] == "tas" and p["year"] == 2010 and p["month"] == 6
    assert p["proj:code"] == "EPSG:4326" and p["proj:shape"] == [50, 100]
    assert p["proj:transform"] == [0.1, 0.0, -10.0, 0.0, -0.1, 50.0] and p["proj:bbox"] == [-10.0, 45.0, 0.0, 50.0]
    assert set(item["stac_extensions"]) == {
        "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
        "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
        "https://stac-extensions.github.io/file/v2.1.0/schema.json",
    }
    asset = item["assets"]["data"]
    assert asset["href"] == "https://s3.example/bucket/chelsa/CHELSA_tas_06_2010.tif"
    assert asset["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
    assert asset["roles"] == ["data"] and asset["file:size"] == 1234
    assert asset["file:checksum"] == "1220" + SHA
    band = asset["raster:bands"][0]
    assert band == {
        "data_type": "int16", "nodata": -32768, "scale": 0.1, "offset": -273.15, "unit": "K",
        "statistics": {"minimum": 1.0, "maximum": 5.0, "mean": 3.0, "stddev": 1.0, "valid_percent": 90.0},
        "spatial_resolution": 0.1,
    }
    assert d.provenance["id"] == "file_name"
    assert d.provenance["datetime"] == "key_template" and d.provenance["variable"] == "key_template"
    assert d.provenance["bbox"] == "raster" and d.provenance["proj:code"] == "raster"


def test_precedence_sidecar_over_template_over_tags_over_defaults():
    settings = CollectionSettings(
        key_template="{id}_{variable}_{year}.tif",
        properties={"variable": "default-var", "model": "default-model", "rcp": "none", "datetime": "1900-01-01"},
    )
    raster = make_raster(tags={"TIFFTAG_DATETIME": "2001:02:03 04:05:06"})
    ready = make_ready(
        "c/bio1_tas_2010.tif", raster=raster,
        sidecar={"title": "Mean temperature", "properties": {"rcp": "8.5"}},
    )
    d = derive_item(ready, settings)
    p = d.item["properties"]
    assert d.item["id"] == "bio1" and d.provenance["id"] == "key_template"
    assert p["datetime"] == "2010-01-01T00:00:00Z" and d.provenance["datetime"] == "key_template"
    assert p["variable"] == "tas" and d.provenance["variable"] == "key_template"
    assert p["model"] == "default-model" and d.provenance["model"] == "default"
    assert p["rcp"] == "8.5" and d.provenance["rcp"] == "sidecar"
    assert p["title"] == "Mean temperature" and d.provenance["title"] == "sidecar"
    assert d.item["assets"]["data"]["title"] == "Mean temperature"

    # the sidecar's id and datetime win over the template
    ready = make_ready("c/bio1_tas_2010.tif", raster=raster, sidecar={"id": "custom", "datetime": "2015-05-05"})
    d = derive_item(ready, settings)
    assert d.item["id"] == "custom" and d.provenance["id"] == "sidecar"
    assert d.item["properties"]["datetime"] == "2015-05-05T00:00:00Z" and d.provenance["datetime"] == "sidecar"

    # without template and sidecar: the TIFF tag, then the defaults
    d = derive_item(make_ready("c/x.tif", raster=raster), CollectionSettings(properties={"datetime": "1900-01-01"}))
    assert d.item["properties"]["datetime"] == "2001-02-03T04:05:06Z"
    assert d.provenance["datetime"].startswith("raster_tags")
    d = derive_item(make_ready("c/x.tif"), CollectionSettings(properties={"datetime": "1900"}))
    assert d.item["properties"]["datetime"] == "1900-01-01T00:00:00Z" and d.provenance["datetime"] == "default"


def test_datetime_tag_beats_tifftag_datetime():
    raster = make_raster(tags={"TIFFTAG_DATETIME": "2001:02:03 04:05:06", "DATETIME": "1999-12-31"})
    d = derive_item(make_ready("c/x.tif", raster=raster), CollectionSettings())
    assert d.item["properties"]["datetime"] == "1999-12-31T00:00:00Z"


def test_bad_tag_datetime_names_file_and_tag():
    raster = make_raster(tags={"TIFFTAG_DATETIME": "yesterday"})
    with pytest.raises(InvalidItem, match=r"c/x\.tif.*TIFFTAG_DATETIME"):
        derive_item(make_ready("c/x.tif", raster=raster), CollectionSettings())


def test_temporal_fields_come_as_one_group():
    # the sidecar's period is not mixed with the template's year
    ready = make_ready(
        "c/bio1_2010.tif", sidecar={"start_datetime": "1981-01-01", "end_datetime": "2010-12-31"}
    )
    d = derive_item(ready, CollectionSettings(key_template="{id}_{year}.tif"))
    p = d.item["properties"]
    assert p["datetime"] is None
    assert p["start_datetime"] == "1981-01-01T00:00:00Z" and p["end_datetime"] == "2010-12-31T00:00:00Z"
    assert p["year"] == 2010  # still a property
    validate_item(d.item, "x")


def test_no_datetime_is_a_permanent_error_naming_file_and_fixes():
    ready = make_ready("mammals/Panthera leo.tif".replace(" ", "_"), sidecar_name="Panthera_leo.json")
    with pytest.raises(InvalidItem) as exc:
        derive_item(ready, CollectionSettings())
    msg = str(exc.value)
    assert "mammals/Panthera_leo.tif" in msg and "Panthera_leo.json" in msg
    assert "datetime" in msg and "key_template" in msg
    assert exc.value.transient is False and exc.value.error_class == "invalid_item"


def test_no_datetime_mentions_a_template_that_does_not_match():
    with pytest.raises(InvalidItem, match="does not match"):
        derive_item(make_ready("c/other.tif"), CollectionSettings(key_template=TEMPLATE))


@pytest.mark.parametrize("name, bad", [("my file.tif", "' '"), ("a+b.tif", "'+'"), ("x:y.tif", "':'")])
def test_bad_ids_are_not_rewritten(name, bad):
    with pytest.raises(InvalidItem) as exc:
        derive_item(make_ready(f"c/{name}", sidecar={"datetime": "2020-01-01"}), CollectionSettings())
    msg = str(exc.value)
    assert f"c/{name}" in msg and bad in msg and "sidecar" in msg


def test_bad_id_from_template():
    with pytest.raises(InvalidItem, match="key template"):
        derive_item(
            make_ready("c/a(b)_2010.tif"), CollectionSettings(key_template="{id}_{year}.tif")
        )


def test_start_after_end_is_invalid():
    settings = CollectionSettings(key_template="{start_datetime}_{end_datetime}.tif")
    with pytest.raises(InvalidItem, match="after"):
        derive_item(make_ready("c/2010_2000.tif"), settings)


def test_asset_key_and_nodata_strings():
    raster = make_raster(
        count=3,
        bands=[
            BandMetadata(data_type="float32", nodata=float("nan")),
            BandMetadata(data_type="float32", nodata=float("-inf"), spatial_resolution=250.0),
            BandMetadata(data_type="float64", nodata="NaN", statistics={"min": 0, "max": float("nan")}),
        ],
    )
    d = derive_item(make_ready("c/x.tif", raster=raster, sidecar={"datetime": "2020"}),
                    CollectionSettings(asset_key="cog"))
    bands = d.item["assets"]["cog"]["raster:bands"]
    assert [b["nodata"] for b in bands] == ["nan", "-inf", "nan"]
    assert bands[1]["spatial_resolution"] == 250.0 and bands[0]["spatial_resolution"] == 0.1
    assert bands[2]["statistics"] == {"minimum": 0.0}  # NaN statistics are dropped
    json.dumps(d.item, allow_nan=False)
    validate_item(d.item, "x")


def test_igh_writes_wkt2_not_code():
    raster = make_raster(crs_epsg=None, crs_wkt2=IGH_WKT, transform=[250.0, 0, -1e6, 0, -250.0, 5e6],
                         width=400, height=400)
    d = derive_item(make_ready("soil/x.tif", raster=raster, sidecar={"datetime": "2020"}), CollectionSettings())
    p = d.item["properties"]
    assert "proj:code" not in p and p["proj:wkt2"].startswith("PROJCRS[")
    validate_item(d.item, "x")


def test_from_a_real_raster_epsg3116(tmp_path):
    path = write_geotiff(
        tmp_path / "colombia" / "lc_2018.tif", width=64, height=32, dtype="uint8", crs="EPSG:3116",
        transform=from_origin(1000000, 1100000, 30, 30), nodata=0, tags={"TIFFTAG_DATETIME": "2018:01:01 00:00:00"},
    )
    with rasterio.open(path) as src:
        raster = RasterMetadata(
            width=src.width, height=src.height, count=src.count, crs_epsg=src.crs.to_epsg(),
            transform=list(src.transform)[:6], bounds=list(src.bounds),
            bands=[BandMetadata(data_type=src.dtypes[0], nodata=src.nodata)], tags=src.tags(),
        )
    d = derive_item(make_ready("colombia/lc_2018.tif", raster=raster), CollectionSettings())
    item = d.item
    assert item["properties"]["proj:code"] == "EPSG:3116" and item["properties"]["datetime"] == "2018-01-01T00:00:00Z"
    assert -80 < item["bbox"][0] < -70  # WGS84, not the native CRS
    assert item["properties"]["proj:bbox"] == pytest.approx(list(raster.bounds))
    assert item["assets"]["data"]["raster:bands"][0]["nodata"] == 0
    assert math.isclose(item["assets"]["data"]["raster:bands"][0]["spatial_resolution"], 30.0)
    validate_item(item, "x")


def test_output_is_stable_and_json():
    ready = make_ready()
    a = derive_item(ready, CollectionSettings(key_template=TEMPLATE))
    b = derive_item(ready, CollectionSettings(key_template=TEMPLATE))
    assert json.dumps(a.item, allow_nan=False) == json.dumps(b.item, allow_nan=False)
    assert a.provenance == b.provenance

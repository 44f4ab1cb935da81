import copy
import socket

import pytest

from publisher.derive import derive_item
from publisher.errors import InvalidCollection
from publisher.validation import _validator, validate_collection, validate_item
from stacdrop.config import CollectionSettings
from stacdrop.errors import InvalidItem
from tests.support.raster_ready import TEMPLATE, make_ready


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("validation tried to use the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def item():
    return derive_item(make_ready(), CollectionSettings(key_template=TEMPLATE)).item


def collection(**kw):
    col = {
        "type": "Collection", "stac_version": "1.1.0", "stac_extensions": [], "id": "chelsa",
        "description": "CHELSA climatologies", "license": "CC-BY-4.0",
        "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                   "temporal": {"interval": [["1981-01-01T00:00:00Z", None]]}},
        "links": [],
    }
    col.update(kw)
    return col


def test_valid_item_offline(no_network, item):
    validate_item(item, "chelsa/x.tif")  # declares 3 extension schemas: none is fetched
    item_with_links = {**item,
                       "links": [{"rel": "collection", "href": "../collection.json", "type": "application/json"}]}
    validate_item(item_with_links, "chelsa/x.tif")


def test_valid_collection_offline(no_network):
    scientific = "https://stac-extensions.github.io/scientific/v1.0.0/schema.json"
    validate_collection(collection(stac_extensions=[scientific]), "c.json")


def test_validator_is_compiled_once():
    assert _validator("item") is _validator("item")


def _broken(item, path, value):
    doc = copy.deepcopy(item)
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    "path, value, field",
    [
        (("bbox",), [-10, 45, 200, 50], "bbox"),
        (("bbox",), [-10, 50, 0, 45], "bbox"),
        (("bbox",), [-10, 45, 0], "bbox"),
        (("geometry",), None, "geometry"),
        (("id",), "a/b", "id"),
        (("id",), "with space", "id"),
        (("collection",), KeyError, "collection"),
        (("properties", "datetime"), None, "properties.datetime"),
        (("properties", "datetime"), "2010-13-01", "datetime"),
        (("properties", "proj:shape"), [1, 2, 3], "proj:shape"),
        (("properties", "proj:transform"), [1, 2, 3], "proj:transform"),
        (("properties", "proj:code"), 4326, "proj:code"),
        (("properties", "variable"), float("nan"), "JSON"),
        (("stac_extensions",), [], "stac_extensions"),
        (("assets", "data", "roles"), "data", "roles"),
        (("assets", "data", "roles"), ["metadata"], "data"),
        (("assets", "data", "file:checksum"), "ab" * 32, "file:checksum"),
        (("assets", "data", "file:checksum"), "1220XYZ", "file:checksum"),
        (("assets", "data", "file:size"), -1, "file:size"),
        (("assets", "data", "raster:bands"), [{"data_type": "int"}], "data_type"),
        (("assets", "data", "raster:bands"), [{"data_type": "float32", "nodata": "NaN"}], "nodata"),
        (("assets", "data", "raster:bands"), [{"spatial_resolution": 0}], "spatial_resolution"),
        (("assets", "data", "raster:bands"), [{"statistics": {"minimum": 5, "maximum": 1}}], "statistics"),
        (("assets", "data", "href"), "", "href"),
        (("assets",), {}, "assets"),
        (("type",), "Collection", "type"),
    ],
)
def test_invalid_items_name_source_and_field(item, path, value, field):
    with pytest.raises(InvalidItem) as exc:
        validate_item(_broken(item, path, value), "chelsa/CHELSA_tas_06_2010.tif")
    msg = str(exc.value)
    assert msg.startswith("chelsa/CHELSA_tas_06_2010.tif: ") and field in msg


def test_antimeridian_bbox_is_valid(item):
    validate_item(_broken(item, ("bbox",), [170, 0, -170, 10]), "x")


@pytest.mark.parametrize(
    "change, field",
    [
        ({"license": None}, "license"),
        ({"id": "bad id"}, "id"),
        ({"type": "Catalog"}, "type"),
        ({"extent": {"spatial": {"bbox": [[-200, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}}},
         "extent.spatial.bbox[0]"),
        ({"extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]},
                     "temporal": {"interval": [["2010-01-01T00:00:00Z", "2000-01-01T00:00:00Z"]]}}},
         "interval"),
    ],
)
def test_invalid_collections(change, field):
    col = collection(**change)
    if change.get("license", 1) is None:
        del col["license"]
    with pytest.raises(InvalidCollection) as exc:
        validate_collection(col, "inbox/chelsa/collection.json")
    assert "inbox/chelsa/collection.json" in str(exc.value) and field in str(exc.value)

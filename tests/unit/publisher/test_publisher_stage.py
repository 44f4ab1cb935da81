import json

import pytest

from publisher.stage import publish_collection, publish_raster
from publisher.static_catalog import StaticCatalog
from publisher.errors import InvalidCollection
from publisher.validation import validate_collection
from stacdrop.config import Settings
from stacdrop.errors import DuplicateItem, UnknownCollection
from stacdrop.messages import CollectionUpdate, Source
from tests.support.raster_ready import TEMPLATE, make_ready

COLLECTION = {
    "type": "Collection", "stac_version": "1.1.0", "id": "chelsa", "description": "CHELSA climatologies",
    "license": "CC-BY-4.0",
    "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [["1981-01-01T00:00:00Z", None]]}},
    "links": [],
}


def update(text, folder="chelsa"):
    key = f"{folder}/collection.json"
    return CollectionUpdate(source=Source(url=f"/inbox/{key}", key=key, content_key="x"), collection=folder, text=text)


@pytest.fixture
def sink(tmp_path):
    return StaticCatalog(tmp_path / "stac")


def settings(**chelsa):
    return Settings(collections={"chelsa": {"key_template": TEMPLATE, **chelsa}})


def test_unknown_collection_says_how_to_fix(sink):
    with pytest.raises(UnknownCollection) as exc:
        publish_raster(make_ready(), settings().collection_settings, sink)
    msg = str(exc.value)
    assert "chelsa/CHELSA_tas_06_2010.tif" in msg and "'chelsa'" in msg
    assert "inbox/chelsa/collection.json" in msg and "create_if_missing" in msg


def test_create_if_missing_makes_a_minimal_valid_collection(sink):
    result = publish_raster(make_ready(), settings(create_if_missing=True).collection_settings, sink)
    assert (result.collection, result.item_id, result.action) == ("chelsa", "CHELSA_tas_06_2010", "created")
    col = sink.get_collection("chelsa")
    validate_collection(col, "x")
    assert col["description"] == "Created by stacdrop" and col["license"] == "other"
    assert col["extent"]["spatial"]["bbox"] == [[-10.0, 45.0, 0.0, 50.0]]
    assert col["extent"]["temporal"]["interval"] == [["2010-06-01T00:00:00Z", "2010-06-01T00:00:00Z"]]
    assert sink.get_item("chelsa", "CHELSA_tas_06_2010")["properties"]["variable"] == "tas"


def test_duplicate_policy_comes_from_settings(sink):
    publish_collection(update(json.dumps(COLLECTION)), sink)
    assert publish_raster(make_ready(), settings().collection_settings, sink).action == "created"
    assert publish_raster(make_ready(), settings().collection_settings, sink).action == "replaced"
    assert publish_raster(make_ready(), settings(duplicate_policy="skip").collection_settings, sink).action == "skipped"
    with pytest.raises(DuplicateItem):
        publish_raster(make_ready(), settings(duplicate_policy="error").collection_settings, sink)


def test_publish_collection_bad_json_names_the_file(sink):
    with pytest.raises(InvalidCollection) as exc:
        publish_collection(update('{"id": "chelsa",'), sink)
    assert "chelsa/collection.json" in str(exc.value) and "not valid JSON" in str(exc.value)
    with pytest.raises(InvalidCollection, match="JSON object"):
        publish_collection(update("[1, 2]"), sink)


def test_publish_collection_id_must_match_folder(sink):
    with pytest.raises(InvalidCollection, match="does not match its folder"):
        publish_collection(update(json.dumps({**COLLECTION, "id": "other"})), sink)


def test_publish_collection_sets_a_missing_id_and_updates(sink):
    doc = {k: v for k, v in COLLECTION.items() if k != "id"}
    assert publish_collection(update(json.dumps(doc)), sink) == "created"
    assert sink.get_collection("chelsa")["id"] == "chelsa"
    publish_raster(make_ready(), settings().collection_settings, sink)
    # an update with fewer fields keeps the stored ones and the item links
    assert publish_collection(update(json.dumps({"title": "CHELSA", "description": "new"})), sink) == "updated"
    col = sink.get_collection("chelsa")
    assert col["title"] == "CHELSA" and col["description"] == "new" and col["license"] == "CC-BY-4.0"
    item_hrefs = [link["href"] for link in col["links"] if link["rel"] == "item"]
    assert item_hrefs == ["./CHELSA_tas_06_2010/CHELSA_tas_06_2010.json"]


def test_publish_collection_invalid_fields_are_named(sink):
    with pytest.raises(InvalidCollection, match="license"):
        publish_collection(update(json.dumps({k: v for k, v in COLLECTION.items() if k != "license"})), sink)
    assert not sink.has_collection("chelsa")


def test_put_prepared_one_put_items_per_collection_and_policy_each_item_its_own_result(sink, monkeypatch):
    from publisher.stage import prepare_raster, put_prepared

    publish_collection(update(json.dumps(COLLECTION)), sink)
    s = Settings(collections={"chelsa": {"key_template": TEMPLATE},
                              "other": {"key_template": TEMPLATE, "duplicate_policy": "error"}})
    keys = ["chelsa/CHELSA_tas_01_2010.tif", "chelsa/CHELSA_tas_02_2010.tif", "other/CHELSA_tas_01_2010.tif",
            "chelsa/CHELSA_tas_03_2010.tif", "chelsa/CHELSA_tas_01_2010.tif"]
    prepared = [prepare_raster(make_ready(key=k), s.collection_settings) for k in keys]
    calls = []
    put_items = sink.put_items
    monkeypatch.setattr(sink, "put_items", lambda items, policy="replace": calls.append(
        ([i["id"] for i in items], policy)) or put_items(items, policy))
    results = put_prepared(prepared, sink)
    # the first two writes of chelsa in one call; "other" does not exist and fails alone, before any write;
    # the second write of CHELSA_tas_01_2010 comes alone, after the batch (it replaces the first)
    assert calls[0] == (["CHELSA_tas_01_2010", "CHELSA_tas_02_2010", "CHELSA_tas_03_2010"], "replace")
    assert all(len(ids) == 1 for ids, _ in calls[1:])  # (a sink may write one item as a batch of one)
    assert isinstance(results[2], UnknownCollection)
    assert [r.action for r in (results[0], results[1], results[3], results[4])] == [
        "created", "created", "created", "replaced"]

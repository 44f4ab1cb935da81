import json
import multiprocessing
import os

import pystac
import pytest

from publisher.extents import union_lon
from publisher.static_catalog import StaticCatalog
from publisher.validation import validate_collection, validate_item
from stacdrop.errors import DuplicateItem, InvalidItem, UnknownCollection
from tests.support.stac_items import make_collection, make_item


@pytest.fixture
def cat(tmp_path):
    c = StaticCatalog(tmp_path / "stac", title="Test catalog")
    c.upsert_collection(make_collection())
    return c


def extent(cat, cid="chelsa"):
    return cat.get_collection(cid)["extent"]


def item_links(cat, cid="chelsa"):
    return [link["href"] for link in cat.get_collection(cid)["links"] if link["rel"] == "item"]


def test_policies(cat):
    assert cat.put_item(make_item(), "replace") == "created"
    assert cat.put_item(make_item(variable="a"), "replace") == "replaced"
    assert cat.get_item("chelsa", "bio1")["properties"]["variable"] == "a"
    assert cat.put_item(make_item(variable="b"), "skip") == "skipped"
    assert cat.get_item("chelsa", "bio1")["properties"]["variable"] == "a"
    with pytest.raises(DuplicateItem, match="bio1"):
        cat.put_item(make_item(variable="c"), "error")
    assert cat.get_item("chelsa", "bio1")["properties"]["variable"] == "a"
    assert cat.put_item(make_item("bio2"), "error") == "created"
    assert item_links(cat) == ["./bio1/bio1.json", "./bio2/bio2.json"]
    assert cat.get_item("chelsa", "nope") is None


def test_unknown_collection(cat):
    with pytest.raises(UnknownCollection, match="other"):
        cat.put_item(make_item(collection="other"))
    assert not cat.has_collection("other") and cat.has_collection("chelsa")


def test_unsafe_ids_never_become_paths(cat):
    with pytest.raises(InvalidItem):
        cat.put_item(make_item(item_id="../../etc"))
    with pytest.raises(InvalidItem):
        cat.upsert_collection(make_collection(cid=".."))


def test_extents_grow_incrementally(cat):
    cat.put_item(make_item("a", dt="2010-01-01T00:00:00Z", bbox=(-10, 45, 0, 50)))
    cat.put_item(make_item("b", dt="1990-06-01T00:00:00Z", bbox=(5, -5, 20, 10)))
    cat.put_item(make_item("c", dt=None, start_datetime="2015-01-01T00:00:00Z", end_datetime="2020-12-31T00:00:00Z"))
    ext = extent(cat)
    assert ext["spatial"]["bbox"] == [[-10, -5, 20, 50]]
    assert ext["temporal"]["interval"] == [["1990-06-01T00:00:00Z", "2020-12-31T00:00:00Z"]]


def test_replace_with_changed_datetime_keeps_covering(cat):
    cat.put_item(make_item("a", dt="2010-01-01T00:00:00Z"))
    assert cat.put_item(make_item("a", dt="2012-03-01T00:00:00Z")) == "replaced"
    assert extent(cat)["temporal"]["interval"] == [["2010-01-01T00:00:00Z", "2012-03-01T00:00:00Z"]]
    assert item_links(cat) == ["./a/a.json"]


def test_extent_across_the_antimeridian(tmp_path):
    cat = StaticCatalog(tmp_path)
    cat.upsert_collection(make_collection("pacific", extent={
        "spatial": {"bbox": [[170.0, -10.0, 175.0, 0.0]]}, "temporal": {"interval": [[None, None]]}}))
    cat.put_item(make_item("a", collection="pacific", bbox=(-178.0, -5.0, -170.0, 5.0)))
    assert extent(cat, "pacific")["spatial"]["bbox"] == [[170.0, -10.0, -170.0, 5.0]]
    assert extent(cat, "pacific")["temporal"]["interval"] == [[None, None]]  # open stays open


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ((-10, 0), (5, 20), (-10, 20)),
        ((170, 175), (-178, -170), (170, -170)),
        ((170, -170), (-175, -172), (170, -170)),
        ((-180, 180), (0, 1), (-180, 180)),
        ((-170, 170), (175, -175), (-170, -175)),  # 355 degrees, leaving out the gap -175..-170
        ((0, 170), (170, 0), (-180, 180)),
    ],
)
def test_union_lon(a, b, expected):
    assert union_lon(a, b) == expected


def test_upsert_collection_keeps_item_links_and_merges(cat):
    cat.put_item(make_item("a", bbox=(-10, 45, 0, 50)))
    new = make_collection(title="CHELSA v2", keywords=["climate"],
                          extent={"spatial": {"bbox": [[0, 0, 1, 1]]},
                                  "temporal": {"interval": [["2011-01-01T00:00:00Z", None]]}})
    del new["license"]
    assert cat.upsert_collection(new) == "updated"
    col = cat.get_collection("chelsa")
    assert col["title"] == "CHELSA v2" and col["keywords"] == ["climate"] and col["license"] == "CC-BY-4.0"
    assert item_links(cat) == ["./a/a.json"]
    # with items, the new extent is widened to still cover them
    assert col["extent"]["spatial"]["bbox"] == [[-10, 0, 1, 50]]
    assert col["extent"]["temporal"]["interval"] == [["2010-01-01T00:00:00Z", None]]
    assert [link["rel"] for link in col["links"]].count("license") == 1
    cat_json = json.loads((cat.root / "catalog.json").read_text())
    assert [link for link in cat_json["links"] if link["rel"] == "child"] == [
        {"rel": "child", "href": "./chelsa/collection.json", "type": "application/json", "title": "CHELSA v2"}
    ]


def test_delete_item(cat):
    cat.put_item(make_item("a"))
    assert cat.delete_item("chelsa", "a") is True
    assert cat.get_item("chelsa", "a") is None and item_links(cat) == []
    assert not (cat.root / "chelsa" / "a").exists()
    assert cat.delete_item("chelsa", "a") is False


def test_put_items_batch(cat):
    results = cat.put_items([make_item(f"i{n}") for n in range(5)] + [make_item("i0")], "skip")
    assert [r.action for r in results] == ["created"] * 5 + ["skipped"]
    assert len(item_links(cat)) == 5


def test_put_items_one_bad_item_does_not_fail_its_neighbours(cat):
    cat.put_item(make_item("dup"))
    items = [make_item("a"), make_item("dup"), make_item("b", collection="nowhere"), make_item("c")]
    results = cat.put_items(items, "error")
    assert [r.action for r in results] == ["created", None, None, "created"]
    assert [r.error.error_class if r.error else None for r in results] == [
        None, "duplicate_item", "unknown_collection", None]
    assert cat.get_item("chelsa", "a") and cat.get_item("chelsa", "c")
    assert len(item_links(cat)) == 3


def test_pystac_reads_it_and_every_object_validates_offline(cat):
    cat.put_item(make_item("a"))
    cat.put_item(make_item("b", bbox=(170.0, 0.0, -170.0, 10.0)))
    cat.upsert_collection(make_collection("second"))
    cat.put_item(make_item("c", collection="second"))
    root = pystac.Catalog.from_file(str(cat.root / "catalog.json"))
    assert root.title == "Test catalog"
    seen = {}
    for child in root.get_children():
        assert isinstance(child, pystac.Collection)
        validate_collection(child.to_dict(include_self_link=False, transform_hrefs=False), child.id)
        validate_collection(json.loads((cat.root / child.id / "collection.json").read_text()), child.id)
        for item in child.get_items():
            assert item.collection_id == child.id
            assert item.get_parent().id == child.id and item.get_root().id == root.id
            validate_item(item.to_dict(include_self_link=False, transform_hrefs=False), item.id)
            validate_item(cat.get_item(child.id, item.id), item.id)
            seen.setdefault(child.id, []).append(item.id)
    assert {k: sorted(v) for k, v in seen.items()} == {"chelsa": ["a", "b"], "second": ["c"]}
    items = {i.id: i for i in root.get_items(recursive=True)}
    assert items["a"].assets["data"].href == "https://x/a.tif"


def test_failed_write_leaves_the_old_file_and_no_temp(cat, monkeypatch):
    cat.put_item(make_item("a", variable="old"))
    before = (cat.root / "chelsa" / "a" / "a.json").read_text()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        cat.put_item(make_item("a", variable="new"))
    monkeypatch.undo()
    assert (cat.root / "chelsa" / "a" / "a.json").read_text() == before
    leftovers = [p for p in cat.root.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_skip_repairs_a_missing_link(cat):
    cat.put_item(make_item("a"))
    col = cat.get_collection("chelsa")
    col["links"] = [link for link in col["links"] if link["rel"] != "item"]
    (cat.root / "chelsa" / "collection.json").write_text(json.dumps(col))  # as if a crash hit between writes
    assert cat.put_item(make_item("a"), "skip") == "skipped"
    assert item_links(cat) == ["./a/a.json"]


def _writer(root, prefix, n):
    cat = StaticCatalog(root)
    for i in range(n):
        cat.put_item(make_item(f"{prefix}{i}", dt=f"20{10 + i % 10}-01-01T00:00:00Z"))


def test_two_processes_do_not_lose_links(cat):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(cat.root, p, 15)) for p in ("x", "y")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    links = item_links(cat)
    assert len(links) == 30 and len(set(links)) == 30
    validate_collection(cat.get_collection("chelsa"), "chelsa")
    assert extent(cat)["temporal"]["interval"] == [["2010-01-01T00:00:00Z", "2019-01-01T00:00:00Z"]]


def test_reopening_keeps_the_catalog(cat):
    cat.put_item(make_item("a"))
    again = StaticCatalog(cat.root)
    assert again.get_item("chelsa", "a") is not None and again.has_collection("chelsa")
    root = json.loads((cat.root / "catalog.json").read_text())
    assert root["title"] == "Test catalog"

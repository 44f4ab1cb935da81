"""LocalStore, store keys, open_store; plus the cheap TIFF structure check and metadata details."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio

from processor import store as store_mod
from processor.cogeo import convert_to_cog
from processor.errors import ConversionFailed, InvalidStoreKey, TiffStructureError
from processor.metadata import read_raster_metadata
from processor.store import LocalStore, check_key, store_key
from processor.stores import open_store
from processor.tiff import tiff_layout
from stacdrop.config import Settings
from stacdrop.errors import ConfigError, StoreError
from tests.support.rasters import write_geotiff


def blob(path: Path, size: int = (9 << 20) + 123) -> Path:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, size, dtype="uint8").tobytes())
    return path


def test_put_copy_sha256_and_size(tmp_path):
    src = blob(tmp_path / "a.bin")
    store = LocalStore(tmp_path / "store")
    obj = store.put(src, "c/x.tif", content_type="image/tiff")
    data = src.read_bytes()
    assert obj.sha256 == hashlib.sha256(data).hexdigest()
    assert obj.size == len(data)
    assert obj.key == "c/x.tif" and obj.media_type == "image/tiff"
    assert obj.href == str((tmp_path / "store" / "c" / "x.tif").resolve())
    assert Path(store.local_path_or_url("c/x.tif")).read_bytes() == data
    assert src.exists(), "move=False never touches the source"
    assert store.exists("c/x.tif") and not store.exists("c/y.tif")
    assert [p.name for p in (tmp_path / "store" / "c").iterdir()] == ["x.tif"]


def test_put_move_same_filesystem(tmp_path):
    src = blob(tmp_path / "a.bin")
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    store = LocalStore(tmp_path / "store")
    obj = store.put(src, "x.tif", content_type="image/tiff", move=True)
    assert not src.exists()
    assert obj.sha256 == digest == hashlib.sha256(Path(obj.href).read_bytes()).hexdigest()


def test_put_replaces_existing(tmp_path):
    store = LocalStore(tmp_path / "store")
    (tmp_path / "a").write_bytes(b"old")
    (tmp_path / "b").write_bytes(b"new")
    store.put(tmp_path / "a", "k.tif", content_type="x")
    obj = store.put(tmp_path / "b", "k.tif", content_type="x")
    assert Path(obj.href).read_bytes() == b"new" and obj.size == 3


def test_put_is_atomic(tmp_path, monkeypatch):
    """While the bytes are written and flushed the final name does not exist; a failure leaves nothing."""
    src = blob(tmp_path / "a.bin")
    store = LocalStore(tmp_path / "store")
    final = tmp_path / "store" / "c" / "x.tif"
    seen = []
    real_fsync = os.fsync

    def fsync(fd):
        seen.append(final.exists())
        real_fsync(fd)

    monkeypatch.setattr(store_mod.os, "fsync", fsync)
    store.put(src, "c/x.tif", content_type="x")
    assert seen[0] is False, "the data is flushed before the final name appears"
    assert final.exists()

    def failing_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(store_mod.os, "fsync", failing_fsync)
    with pytest.raises(StoreError, match="No space left") as info:
        store.put(src, "c/y.tif", content_type="x")
    assert info.value.transient
    assert sorted(p.name for p in final.parent.iterdir()) == ["x.tif"], "no partial file, no temp file"
    with pytest.raises(StoreError):
        store.put(src, "c/z.tif", content_type="x", move=True)
    assert src.exists() and sorted(p.name for p in final.parent.iterdir()) == ["x.tif"]


def test_delete(tmp_path):
    store = LocalStore(tmp_path / "store")
    (tmp_path / "a").write_bytes(b"x")
    store.put(tmp_path / "a", "k/a.tif", content_type="x")
    store.delete("k/a.tif")
    assert not store.exists("k/a.tif")
    store.delete("k/a.tif")  # absent: no error


@pytest.mark.parametrize("key", ["../x.tif", "a/../../x.tif", "/etc/passwd", "a//b.tif", "./a.tif", "a\\..\\b", "",
                                 "s3://b/k", "a/./b", "C:/x"])
def test_keys_escaping_the_root_refused(tmp_path, key):
    store = LocalStore(tmp_path / "store")
    (tmp_path / "a").write_bytes(b"x")
    with pytest.raises(InvalidStoreKey) as info:
        store.put(tmp_path / "a", key, content_type="x")
    assert f"store key {key!r}" in str(info.value)  # names the refused key
    with pytest.raises(InvalidStoreKey):
        check_key(key)
    assert not (tmp_path / "store").exists() or not any((tmp_path / "store").rglob("*"))


def test_symlink_out_of_root_refused(tmp_path):
    (tmp_path / "store").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "store" / "link").symlink_to(tmp_path / "outside")
    store = LocalStore(tmp_path / "store")
    with pytest.raises(InvalidStoreKey):
        store.href("link/x.tif")


def test_store_key_template():
    assert store_key("{collection}/{filename}", collection="c", filename="x.tif", item_id=None) == "c/x.tif"
    assert store_key("{collection}/{id}{ext}", collection="c", filename="x.tiff", item_id="it") == "c/it.tiff"
    assert store_key("{collection}/{id}.tif", collection="c", filename="x.tif", item_id=None) == "c/x.tif"
    assert store_key("cogs/{collection}/{stem}.tif", collection="c", filename="sub/x.tif",
                     item_id=None) == "cogs/c/x.tif"
    for template in ("/{collection}/{filename}", "{collection}/../../{filename}", "../{filename}"):
        with pytest.raises(InvalidStoreKey, match="x.tif"):
            store_key(template, collection="c", filename="x.tif", item_id=None)
    with pytest.raises(InvalidStoreKey):
        store_key("{collection}/{filename}", collection="..", filename="x.tif", item_id=None)
    with pytest.raises(InvalidStoreKey):
        store_key("{id}", collection="c", filename="x.tif", item_id="..")
    with pytest.raises(ConfigError, match="unknown"):
        store_key("{nope}/{filename}", collection="c", filename="x.tif", item_id=None)


def test_open_store(tmp_path):
    s = open_store(str(tmp_path / "cogs"), public_url="https://h/{key}")
    assert isinstance(s, LocalStore) and s.href("a/b.tif") == "https://h/a/b.tif"
    s = open_store(f"file://{tmp_path}/cogs")
    assert isinstance(s, LocalStore) and s.root == (tmp_path / "cogs").resolve()
    # no connection yet
    s3 = open_store("s3://bucket/prefix", Settings(aws_access_key_id="k", aws_secret_access_key="s").s3)
    assert s3.href("c/x.tif") == "s3://bucket/prefix/c/x.tif"
    with pytest.raises(ConfigError, match="aws_secret_access_key"):  # named at once, not at the first upload
        open_store("s3://bucket/prefix", Settings(aws_access_key_id="k").s3)
    with pytest.raises(ConfigError):
        open_store("ftp://host/x")


# --- TIFF structure check -----------------------------------------------------------------------

def test_tiff_layout_reads_cog_ifds(tmp_path):
    src = write_geotiff(tmp_path / "a.tif", width=1024, height=1024, mask=True)
    layout = tiff_layout(src)
    assert len(layout.ifds) == 2 and not layout.ifds[0].tiled and layout.ifds[1].subfile_type == 4
    out = tmp_path / "cog.tif"
    convert_to_cog(str(src), str(out), resampling="average")
    layout = tiff_layout(out)
    assert [i.subfile_type for i in layout.ifds] == [0, 4, 1, 5]  # image, mask, overview, mask overview
    assert all(i.tiled and i.compression == 8 and i.predictor == (2 if i.subfile_type in (0, 1) else 1)
               for i in layout.ifds)
    assert max(i.data_end for i in layout.ifds) <= layout.size


@pytest.mark.parametrize("cut", [0.25, 0.5, 0.9, 0.999])
def test_tiff_layout_catches_any_truncation(tmp_path, cut):
    src = write_geotiff(tmp_path / "a.tif", width=512, height=512, tiled=True, compress="deflate")
    data = src.read_bytes()
    bad = tmp_path / "bad.tif"
    bad.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(TiffStructureError):
        tiff_layout(bad)


def test_tiff_layout_big_endian(tmp_path):
    src = tmp_path / "be.tif"
    with rasterio.open(src, "w", driver="GTiff", width=300, height=300, count=1, dtype="uint16", crs="EPSG:4326",
                       transform=rasterio.transform.from_origin(0, 10, 0.1, 0.1), ENDIANNESS="BIG") as ds:
        ds.write(np.ones((1, 300, 300), "uint16"))
    assert src.read_bytes()[:2] == b"MM"
    assert tiff_layout(src).ifds[0].blocks >= 1
    data = src.read_bytes()
    (tmp_path / "bad.tif").write_bytes(data[: len(data) // 2])
    with pytest.raises(TiffStructureError):
        tiff_layout(tmp_path / "bad.tif")


def test_conversion_failure_not_caused_by_input_is_transient(tmp_path):
    src = write_geotiff(tmp_path / "a.tif")
    with pytest.raises(ConversionFailed) as info:
        convert_to_cog(str(src), str(tmp_path / "missing-dir" / "out.tif"), resampling="average", name="coll/a.tif")
    assert info.value.transient and "coll/a.tif" in str(info.value)


# --- metadata details ---------------------------------------------------------------------------

def test_metadata_nan_nodata_and_float_stats(tmp_path):
    data = np.linspace(0, 1, 300 * 200, dtype="float32").reshape(1, 200, 300)
    data[0, :10] = np.nan
    src = write_geotiff(tmp_path / "f.tif", width=300, height=200, dtype="float32", data=data, nodata=float("nan"))
    meta = read_raster_metadata(str(src))
    band = meta.bands[0]
    assert band.nodata == "nan"
    valid = data[0, 10:]
    assert band.statistics["valid_percent"] == pytest.approx(95.0)
    assert band.statistics["mean"] == pytest.approx(float(valid.mean()), rel=1e-6)
    assert band.statistics["minimum"] == pytest.approx(float(valid.min()))
    assert band.scale is None and band.offset is None and band.unit is None


def test_metadata_stats_from_overview(tmp_path):
    src = write_geotiff(tmp_path / "a.tif", width=1024, height=1024, nodata=0)
    out = tmp_path / "cog.tif"
    convert_to_cog(str(src), str(out), resampling="average")
    meta = read_raster_metadata(str(out))
    with rasterio.open(src) as ds:
        full = ds.read(1, masked=True)
    stats = meta.bands[0].statistics
    assert stats["mean"] == pytest.approx(float(full.mean()), rel=0.01)
    assert stats["valid_percent"] == pytest.approx(100 * full.count() / full.size, abs=0.5)
    assert meta.bands[0].nodata == 0

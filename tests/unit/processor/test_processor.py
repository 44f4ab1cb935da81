"""The processor stage end to end, with real GeoTIFFs written into tmp_path."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.control import GroundControlPoint
from rasterio.transform import from_origin

from processor.cogeo import check_output, convert_to_cog, is_valid_cog
from processor.stage import process_raster
from processor.store import LocalStore
from processor.validate import validate_input
from stacdrop.config import Settings
from stacdrop.errors import (
    InvalidRaster,
    InvalidSidecar,
    MissingSidecar,
    PermanentError,
    SourceNotFound,
)
from stacdrop.messages import IngestRequest, Source
from stacdrop.app.components import processor_settings
from tests.support.inbox import in_inbox
from tests.support.rasters import IGH_WKT, write_geotiff

CLASSES = {10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160, 170, 180, 190, 200, 210, 220}
SIDECAR = json.dumps({"id": "item-1", "datetime": "2020-01-01"})


def classes_data(size: int = 1024) -> np.ndarray:
    """Class codes in 3x5 patches, so that overview windows straddle class borders."""
    rng = np.random.default_rng(1)
    patches = rng.choice(sorted(CLASSES), size=(size // 3 + 1, size // 5 + 1)).astype("uint8")
    return np.repeat(np.repeat(patches, 3, axis=0), 5, axis=1)[None, :size, :size].copy()


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def env(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    store = LocalStore(tmp_path / "store")
    return {"inbox": inbox, "store": store, "work": tmp_path / "work", "tmp": tmp_path}


def run(env, path: Path, *, collection="coll", sidecar: str | None = SIDECAR, settings: Settings | None = None,
        steps: list[str] | None = None, key: str | None = None):
    key = key or f"{collection}/{Path(path).name}"
    request = IngestRequest(
        source=Source(url=str(path), key=key, content_key="x"),
        collection=collection,
        sidecar_text=sidecar,
        sidecar_name=None if sidecar is None else key.rsplit(".", 1)[0] + ".json",
    )
    settings = in_inbox(settings or Settings(store=str(env["store"].root)), env["tmp"])
    on_step = steps.append if steps is not None else (lambda step: None)
    return process_raster(request, processor_settings(settings), env["store"], workdir=env["work"], on_step=on_step)


def assert_clean(env):
    """No leftovers in the workdir or the store after a failure."""
    work = env["work"]
    assert not work.exists() or list(work.iterdir()) == []
    root = env["store"].root
    assert not root.exists() or [p for p in root.rglob("*") if p.is_file()] == []


# --- good inputs ---------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "dtype,nodata,predictor",
    [("uint8", 0, "2"), ("int16", -32768, "2"), ("uint16", 0, "2"), ("float32", -9999.0, "3")],
)
def test_convert_data_types(env, dtype, nodata, predictor):
    src = write_geotiff(env["inbox"] / f"{dtype}.tif", width=700, height=600, dtype=dtype, nodata=nodata)
    steps: list[str] = []
    ready = run(env, src, steps=steps)
    assert steps == ["fetch", "validate", "convert", "store", "metadata"]
    assert ready.converted is True
    assert ready.collection == "coll"
    assert ready.sidecar.id == "item-1" and ready.sidecar.datetime == "2020-01-01T00:00:00Z"
    out = Path(ready.cog.href)
    assert out == env["store"].root / "coll" / f"{dtype}.tif"
    assert ready.cog.key == f"coll/{dtype}.tif"
    assert ready.cog.size == out.stat().st_size
    assert ready.cog.sha256 == sha256(out)
    assert src.exists(), "the inbox file is never consumed"
    assert is_valid_cog(str(out))
    check_output(str(out))
    with rasterio.open(out) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE")["PREDICTOR"] == predictor
        assert ds.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
        assert ds.block_shapes[0] == (512, 512)
        assert ds.nodata == nodata
        assert ds.overviews(1) == [2]
        with rasterio.open(src) as s:
            np.testing.assert_array_equal(ds.read(), s.read())
    band = ready.raster.bands[0]
    assert band.data_type == dtype
    assert band.nodata == nodata and type(band.nodata) is (float if dtype == "float32" else int)
    assert band.spatial_resolution == pytest.approx(0.01)
    stats = band.statistics
    with rasterio.open(src) as s:
        data = s.read(1, masked=True)
    assert stats["valid_percent"] == pytest.approx(100 * data.count() / data.size)
    assert stats["minimum"] == pytest.approx(float(data.min()))
    assert stats["maximum"] == pytest.approx(float(data.max()))
    assert stats["mean"] == pytest.approx(float(data.mean()), rel=1e-5)
    assert stats["stddev"] == pytest.approx(float(data.std()), rel=1e-4)
    assert ready.raster.crs_epsg == 4326
    assert ready.raster.width == 700 and ready.raster.height == 600 and ready.raster.count == 1
    assert ready.raster.transform == pytest.approx([0.01, 0.0, -10.0, 0.0, -0.01, 50.0])
    assert ready.raster.bounds == pytest.approx([-10.0, 44.0, -3.0, 50.0])
    assert list(env["work"].iterdir()) == []


def test_crs_without_epsg(env):
    src = write_geotiff(env["inbox"] / "igh.tif", crs=IGH_WKT, transform=from_origin(-2e6, 5e6, 1000, 1000))
    ready = run(env, src)
    assert ready.raster.crs_epsg is None
    assert ready.raster.crs_wkt2.startswith("PROJCRS[") and "Goode" in ready.raster.crs_wkt2
    assert ready.raster.bands[0].spatial_resolution == 1000


def test_utm_epsg(env):
    src = write_geotiff(env["inbox"] / "utm.tif", crs="EPSG:32633", transform=from_origin(3e5, 6e6, 10, 10))
    assert run(env, src).raster.crs_epsg == 32633


def test_internal_mask_kept(env):
    src = write_geotiff(env["inbox"] / "mask.tif", width=600, height=600, mask=True, tiled=True)
    ready = run(env, src)
    assert ready.raster.has_mask is True
    with rasterio.open(ready.cog.href) as ds:
        assert [f.name for f in ds.mask_flag_enums[0]] == ["per_dataset"]
        assert ds.files == [ready.cog.href], "the mask is internal, no .msk side file"
        m = ds.read_masks(1)
        assert m[:300, :300].all() and not m[300:, 300:].any()
    assert ready.raster.bands[0].statistics["valid_percent"] == pytest.approx(75.0)


def test_multiband_scale_offset_units_descriptions_tags(env):
    src = write_geotiff(
        env["inbox"] / "multi.tif", count=3, dtype="int16", scale=0.1, offset=-5.0, units="degC",
        descriptions=["red", "green", "blue"], tags={"SOURCE": "unit test", "VERSION": "2"},
    )
    ready = run(env, src)
    with rasterio.open(ready.cog.href) as ds:
        assert ds.count == 3
        assert ds.descriptions == ("red", "green", "blue")
        assert ds.scales == (0.1,) * 3 and ds.offsets == (-5.0,) * 3
        assert ds.units == ("degC",) * 3
        assert ds.tags()["SOURCE"] == "unit test"
    meta = ready.raster
    assert [b.description for b in meta.bands] == ["red", "green", "blue"]
    assert all(b.scale == 0.1 and b.offset == -5.0 and b.unit == "degC" for b in meta.bands)
    assert meta.tags["SOURCE"] == "unit test" and meta.tags["VERSION"] == "2"
    assert meta.bands[0].nodata is None and meta.has_mask is False


@pytest.mark.parametrize("tiled", [False, True])
def test_striped_and_tiled(env, tiled):
    src = write_geotiff(env["inbox"] / f"t{tiled}.tif", width=1024, height=512, tiled=tiled, compress="lzw")
    ready = run(env, src)
    assert ready.converted
    with rasterio.open(ready.cog.href) as ds, rasterio.open(src) as s:
        np.testing.assert_array_equal(ds.read(), s.read())


def test_already_cog_stored_as_is(env):
    plain = write_geotiff(env["tmp"] / "plain.tif", width=1000, height=800)
    src = env["inbox"] / "cog.tif"
    convert_to_cog(str(plain), str(src), resampling="average")
    before = sha256(src)
    ready = run(env, src)
    assert ready.converted is False
    assert ready.cog.sha256 == before == sha256(ready.cog.href)
    assert src.exists() and sha256(src) == before


def test_any_compression_cog_stored_as_is_but_striped_small_file_converted(env):
    # A small striped GeoTIFF passes cog_validate; we still convert it (not tiled).
    small = write_geotiff(env["inbox"] / "small.tif", width=200, height=200)
    assert not is_valid_cog(str(small))
    plain = write_geotiff(env["tmp"] / "plain.tif", width=600, height=600)
    lzw = env["inbox"] / "lzw.tif"
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        rasterio.shutil.copy(str(plain), str(lzw), driver="COG", COMPRESS="LZW", BLOCKSIZE=256)
    assert is_valid_cog(str(lzw))
    assert run(env, lzw).converted is False


def test_categorical_collection_stores_cog_as_is_only_with_categorical_overviews(env):
    from rio_cogeo.cogeo import cog_translate
    from rio_cogeo.profiles import cog_profiles

    plain = write_geotiff(env["tmp"] / "plain.tif", width=1024, height=1024, dtype="uint8", data=classes_data())
    ours = env["inbox"] / "average.tif"
    convert_to_cog(str(plain), str(ours), resampling="average")
    moded = env["inbox"] / "mode.tif"
    cog_translate(str(plain), str(moded), cog_profiles.get("deflate"), overview_resampling="mode", quiet=True)
    settings = Settings(collections={"coll": {"resampling": "mode"}})
    assert run(env, ours, settings=settings).converted is True
    assert run(env, moded, settings=settings).converted is False
    assert run(env, ours).converted is False  # an "average" collection takes any overviews


def test_corrupt_input_with_reprojection(env):
    src = _corrupt(env["inbox"] / "corrupt.tif")
    settings = Settings(collections={"coll": {"target_crs": "EPSG:3857"}})
    with pytest.raises(InvalidRaster, match="coll/corrupt.tif"):
        run(env, src, settings=settings)
    assert_clean(env)


def test_uncompressed_cog_is_converted(env):
    plain = write_geotiff(env["tmp"] / "plain.tif", width=600, height=600)
    raw = env["inbox"] / "raw.tif"
    rasterio.shutil.copy(str(plain), str(raw), driver="COG", COMPRESS="NONE")
    assert not is_valid_cog(str(raw))
    assert run(env, raw).converted is True


def test_target_crs_reprojects_even_a_cog(env):
    plain = write_geotiff(env["tmp"] / "plain.tif", width=600, height=600)
    src = env["inbox"] / "cog.tif"
    convert_to_cog(str(plain), str(src), resampling="average")
    settings = Settings(collections={"coll": {"target_crs": "EPSG:3857", "resampling": "bilinear"}})
    ready = run(env, src, settings=settings)
    assert ready.converted is True and ready.raster.crs_epsg == 3857
    assert is_valid_cog(ready.cog.href)


@pytest.mark.parametrize("resampling", ["mode", "nearest"])
def test_categorical_overviews_keep_class_values(env, resampling):
    src = write_geotiff(env["inbox"] / "lc.tif", width=1024, height=1024, dtype="uint8", data=classes_data(), nodata=0)
    settings = Settings(collections={"coll": {"resampling": resampling}})
    ready = run(env, src, settings=settings)
    with rasterio.open(ready.cog.href) as ds:
        levels = len(ds.overviews(1))
        assert levels >= 1
    with rasterio.open(ready.cog.href, overview_level=levels - 1) as ov:
        values = set(np.unique(ov.read(1)).tolist())
    assert values <= CLASSES | {0}
    stats = ready.raster.bands[0].statistics
    assert set(int(v) for v in (stats["minimum"], stats["maximum"])) <= CLASSES


def test_average_would_invent_classes(env):
    """Sanity check of the test above: 'average' does create values that are no class."""
    src = write_geotiff(env["inbox"] / "lc.tif", width=1024, height=1024, dtype="uint8", data=classes_data())
    ready = run(env, src)
    with rasterio.open(ready.cog.href, overview_level=0) as ov:
        assert not set(np.unique(ov.read(1)).tolist()) <= CLASSES


def test_store_key_template_and_sidecar_collection(env):
    src = write_geotiff(env["inbox"] / "x.tif")
    settings = Settings(collections={"other": {"store_key": "{collection}/{id}{ext}"}})
    sidecar = json.dumps({"collection": "other", "id": "my-item", "datetime": "2021"})
    ready = run(env, src, sidecar=sidecar, settings=settings)
    assert ready.collection == "other"
    assert ready.cog.key == "other/my-item.tif"
    assert Path(ready.cog.href) == env["store"].root / "other" / "my-item.tif"


def test_key_only_when_allowed(env):
    src = write_geotiff(env["inbox"] / "x.tif")
    settings = Settings(collections={"coll": {"allow_key_only": True}})
    ready = run(env, src, sidecar=None, settings=settings)
    assert ready.sidecar is None and ready.sidecar_name is None and ready.cog.key == "coll/x.tif"


def test_public_url_href(env, tmp_path):
    src = write_geotiff(env["inbox"] / "x.tif")
    env["store"] = LocalStore(tmp_path / "pub", public_url="https://cdn.example/cogs/{key}")
    ready = run(env, src)
    assert ready.cog.href == "https://cdn.example/cogs/coll/x.tif"


# --- bad inputs: each one is a PermanentError naming the file ----------------------------------

def _png(path: Path) -> Path:
    with rasterio.open(path, "w", driver="PNG", width=64, height=64, count=1, dtype="uint8") as ds:
        ds.write(np.zeros((1, 64, 64), "uint8"))
    for side in path.parent.glob(path.name + ".aux.xml"):
        side.unlink()
    return path


def _no_transform(path: Path) -> Path:
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8", crs="EPSG:4326") as ds:
        ds.write(np.ones((1, 64, 64), "uint8"))
    return path


def _gcps_only(path: Path) -> Path:
    gcps = [GroundControlPoint(0, 0, 10, 50), GroundControlPoint(0, 64, 11, 50), GroundControlPoint(64, 0, 10, 49)]
    with rasterio.open(path, "w", driver="GTiff", width=64, height=64, count=1, dtype="uint8", gcps=gcps,
                       crs="EPSG:4326") as ds:
        ds.write(np.ones((1, 64, 64), "uint8"))
    return path


def _truncate(path: Path, **kw) -> Path:
    full = write_geotiff(path.with_name("full-" + path.name), width=512, height=512, **kw)
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    full.unlink()
    return path


def _truncated_cog(path: Path) -> Path:
    plain = write_geotiff(path.with_name("plain-" + path.name), width=1024, height=1024)
    cog = path.with_name("cog-" + path.name)
    convert_to_cog(str(plain), str(cog), resampling="average")
    data = cog.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    plain.unlink()
    cog.unlink()
    return path


def _truncated_bigtiff(path: Path) -> Path:
    full = path.with_name("full-" + path.name)
    with rasterio.open(full, "w", driver="GTiff", width=512, height=512, count=1, dtype="uint16", crs="EPSG:4326",
                       transform=from_origin(10, 50, 0.01, 0.01), BIGTIFF="YES", tiled=True) as ds:
        ds.write(np.arange(512 * 512, dtype="uint16").reshape(1, 512, 512))
    data = full.read_bytes()
    assert data[2] == 43
    path.write_bytes(data[: len(data) * 2 // 3])
    full.unlink()
    return path


def _corrupt(path: Path, *, cog: bool = False) -> Path:
    """Flip bytes in the middle of the DEFLATE-compressed pixel data."""
    full = write_geotiff(path.with_name("full-" + path.name), width=512, height=512, compress="deflate", tiled=True)
    if cog:
        as_cog = path.with_name("cog-" + path.name)
        convert_to_cog(str(full), str(as_cog), resampling="average")
        full.unlink()
        full = as_cog
    data = bytearray(full.read_bytes())
    mid = len(data) * 3 // 4
    for i in range(mid, mid + 64):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))
    full.unlink()
    return path


BAD_RASTERS = {
    "zero-bytes.tif": (lambda p: (p.write_bytes(b""), p)[1], "empty"),
    "png-renamed.tif": (_png, "PNG"),
    "no-crs.tif": (lambda p: write_geotiff(p, crs=None), "no CRS"),
    "no-transform.tif": (_no_transform, "no geotransform"),
    "gcps-only.tif": (_gcps_only, "ground control points"),
    "truncated-striped.tif": (lambda p: _truncate(p), "truncated"),
    "truncated-tiled.tif": (lambda p: _truncate(p, tiled=True, compress="deflate"), "truncated"),
    "truncated-cog.tif": (_truncated_cog, "truncated"),
    "truncated-header.tif": (lambda p: (p.write_bytes(write_geotiff(p).read_bytes()[:100]), p)[1], "truncated"),
    "truncated-bigtiff.tif": (_truncated_bigtiff, "truncated"),
    "corrupt.tif": (_corrupt, "cannot be read"),
    "corrupt-cog.tif": (lambda p: _corrupt(p, cog=True), "cannot be read"),
    "not-a-raster.tif": (lambda p: (p.write_text("hello, I am text\n" * 20), p)[1], "not a raster"),
}


@pytest.mark.parametrize("filename", sorted(BAD_RASTERS))
def test_bad_rasters(env, filename):
    make, reason = BAD_RASTERS[filename]
    src = make(env["inbox"] / filename)
    with pytest.raises(InvalidRaster) as info:
        run(env, src)
    assert f"coll/{filename}" in str(info.value)
    assert reason in str(info.value)
    assert_clean(env)


def test_corrupt_detected_by_conversion_not_by_validation(env):
    """validate_input is cheap: it does not decode blocks; the conversion does and names the file."""
    src = _corrupt(env["inbox"] / "corrupt.tif")
    validate_input(str(src), "coll/corrupt.tif")
    with pytest.raises(InvalidRaster, match="coll/corrupt.tif"):
        convert_to_cog(str(src), str(env["tmp"] / "out.tif"), resampling="average", name="coll/corrupt.tif")


def test_missing_sidecar(env):
    src = write_geotiff(env["inbox"] / "lonely.tif")
    with pytest.raises(MissingSidecar) as info:
        run(env, src, sidecar=None)
    assert "coll/lonely.tif" in str(info.value) and "coll/lonely.json" in str(info.value)
    assert_clean(env)


@pytest.mark.parametrize(
    "text,reason",
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"datetime": "yesterday"}), "datetime"),
        (json.dumps({"id": "a:b"}), "forbidden"),
        (json.dumps({"collection": "../escape"}), "forbidden"),
        (json.dumps({"collection": ".."}), "forbidden"),
    ],
)
def test_bad_sidecars_fail_before_conversion(env, monkeypatch, text, reason):
    src = write_geotiff(env["inbox"] / "x.tif")
    called = []
    monkeypatch.setattr("processor.stage.convert_to_cog", lambda *a, **k: called.append(1))
    monkeypatch.setattr("processor.stage.validate_input", lambda *a, **k: called.append(1))
    with pytest.raises(InvalidSidecar) as info:
        run(env, src, sidecar=text)
    assert "coll/x.json" in str(info.value) and reason in str(info.value)
    assert called == []
    assert_clean(env)


def test_source_gone(env):
    with pytest.raises(SourceNotFound, match="gone.tif"):
        run(env, env["inbox"] / "gone.tif")


def test_url_source_scheme_not_allowed(env):
    request = IngestRequest(
        source=Source(url="ftp://host/coll/x.tif", key="coll/x.tif", content_key="etag"), collection="coll",
        sidecar_text=SIDECAR,
    )
    with pytest.raises(PermanentError, match="not allowed"):
        process_raster(request, processor_settings(Settings()), env["store"], workdir=env["work"])


def test_workdir_cleaned_when_conversion_fails(env, monkeypatch):
    src = write_geotiff(env["inbox"] / "x.tif")

    def boom(src, dst, **kw):
        Path(dst).write_bytes(b"partial")
        raise RuntimeError("disk full")

    monkeypatch.setattr("processor.stage.convert_to_cog", boom)
    with pytest.raises(RuntimeError):
        run(env, src)
    assert_clean(env)


def test_output_check_failure_is_transient(tmp_path):
    from processor.errors import OutputCheckFailed

    src = write_geotiff(tmp_path / "a.tif", width=1024, height=1024)
    out = tmp_path / "out.tif"
    convert_to_cog(str(src), str(out), resampling="average")
    data = out.read_bytes()
    out.write_bytes(data[: len(data) - 1000])
    with pytest.raises(OutputCheckFailed) as info:
        check_output(str(out))
    assert info.value.transient


def test_inbox_file_untouched_after_as_is_store(env):
    plain = write_geotiff(env["tmp"] / "plain.tif", width=600, height=600)
    src = env["inbox"] / "cog.tif"
    convert_to_cog(str(plain), str(src), resampling="average")
    copy = env["tmp"] / "copy.tif"
    shutil.copy(src, copy)
    run(env, src)
    assert src.read_bytes() == copy.read_bytes()

"""Hostile and awkward rasters (issue 11): bombs and resource limits, the 512-px-wide COG, leftovers of
killed conversions, names too long, a full disk. Every file here is a real TIFF written by rasterio, some
patched afterwards the way an attacker would."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from processor.cogeo import check_output, convert_to_cog, is_valid_cog
from processor.handler import normalised
from processor.metadata import read_raster_metadata
from processor.stage import process_raster
from processor.store import LocalStore
from processor.validate import validate_input
from processor.workdir import cog_prefix, remove_stale
from stacdrop.config import CollectionSettings, Settings
from stacdrop.errors import DiskFull, NameTooLong, RasterTooLarge, SuspiciousRaster
from stacdrop.messages import IngestRequest, Source
from stacdrop.app.components import processor_settings
from tests.support.rasters import write_geotiff
from tests.support.inbox import in_inbox

SIDECAR = json.dumps({"id": "item-1", "datetime": "2020-01-01"})


def _write_tiled(path: Path, width: int, height: int, data: np.ndarray | None = None, **extra) -> None:
    profile = dict(driver="GTiff", width=width, height=height, count=1, dtype="uint8", crs="EPSG:4326",
                   transform=from_origin(0, 50, 0.001, 0.001), tiled=True, blockxsize=512, blockysize=512,
                   compress="deflate", **extra)
    with rasterio.open(path, "w", **profile) as ds:
        if data is not None:
            ds.write(data, 1, window=rasterio.windows.Window(0, 0, data.shape[1], data.shape[0]))


def _point_every_tile_at_the_first(path: Path) -> None:
    """Rewrite TileOffsets/TileByteCounts (classic little-endian TIFF, IFD 0) so that every tile uses the
    bytes of tile 0: the 'one incompressible tile, referenced N times' bomb."""
    raw = bytearray(path.read_bytes())
    assert raw[:4] == b"II*\x00"
    ifd = struct.unpack_from("<I", raw, 4)[0]
    n = struct.unpack_from("<H", raw, ifd)[0]
    arrays = {}
    for i in range(n):
        tag, ftype, count, value = struct.unpack_from("<HHII", raw, ifd + 2 + 12 * i)
        if tag in (324, 325):
            arrays[tag] = (ftype, count, value)
    for ftype, count, value in arrays.values():
        size = {3: 2, 4: 4, 16: 8}[ftype]
        fmt = {2: "<H", 4: "<I", 8: "<Q"}[size]
        first = struct.unpack_from(fmt, raw, value)[0]
        for k in range(count):
            struct.pack_into(fmt, raw, value + k * size, first)
    path.write_bytes(bytes(raw))


def _dir_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.exists() else 0


def _run(tmp_path: Path, path: Path, settings: Settings | None = None, key: str | None = None):
    store = LocalStore(tmp_path / "store")
    key = key or f"coll/{path.name}"
    request = IngestRequest(source=Source(url=str(path), key=key, content_key="x"), collection="coll",
                            sidecar_text=SIDECAR, sidecar_name=key.rsplit(".", 1)[0] + ".json")
    settings = in_inbox(settings or Settings(store=str(store.root)), tmp_path)
    return process_raster(request, processor_settings(settings), store, workdir=tmp_path / "work")


# -- bombs and limits -----------------------------------------------------------------------------------


def test_shared_tile_bomb_is_refused_in_milliseconds_writing_nothing(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.tif"
    noise = np.random.default_rng(0).integers(0, 256, (512, 512), dtype="uint8")
    _write_tiled(bomb, 16384, 16384, noise)  # 1024 tiles; only tile 0 holds bytes worth the name
    _point_every_tile_at_the_first(bomb)
    with rasterio.open(bomb) as ds:  # GDAL reads it happily: every tile decodes to the noise
        assert ds.read(1, window=rasterio.windows.Window(8192, 8192, 512, 512)).std() > 50
    started = time.process_time()
    with pytest.raises(SuspiciousRaster) as err:
        _run(tmp_path, bomb)
    cpu = time.process_time() - started
    assert "bomb.tif" in str(err.value) and "allow_shared_blocks" in str(err.value)
    assert _dir_bytes(tmp_path / "work") == 0 and _dir_bytes(tmp_path / "store") == 0
    print(f"bomb {bomb.stat().st_size} bytes refused in {cpu:.3f} s CPU")


def test_shared_blocks_may_be_allowed_per_collection(tmp_path: Path) -> None:
    bomb = tmp_path / "shared.tif"
    _write_tiled(bomb, 1024, 1024, np.full((512, 512), 7, dtype="uint8"))
    _point_every_tile_at_the_first(bomb)
    with pytest.raises(SuspiciousRaster):
        validate_input(str(bomb), "coll/shared.tif", CollectionSettings())
    validate_input(str(bomb), "coll/shared.tif", CollectionSettings(allow_shared_blocks=True))


def test_declared_huge_raster_is_refused_naming_the_setting(tmp_path: Path) -> None:
    huge = tmp_path / "huge.tif"
    _write_tiled(huge, 200_000, 200_000, sparse_ok=True, bigtiff="yes")  # nothing written: all sparse
    assert huge.stat().st_size < 4 << 20
    started = time.monotonic()
    with pytest.raises(RasterTooLarge) as err:
        _run(tmp_path, huge)
    assert time.monotonic() - started < 60  # generous: the point is "not minutes of conversion"
    assert "huge.tif" in str(err.value) and "max_pixels_per_band" in str(err.value)
    # raised for one collection, it passes the limit (and then fails only later, not on the limit)
    validate_input(str(huge), "coll/huge.tif", CollectionSettings(max_pixels_per_band=1 << 36))


def test_the_original_systems_largest_grid_fits_the_default_limits() -> None:
    limits = CollectionSettings()
    assert limits.max_pixels_per_band >= 129_600 * 64_800
    assert limits.max_output_bytes >= 129_600 * 64_800 * 4 * 1.34  # four bands of uint8


def test_sparse_tiff_is_not_a_bomb(tmp_path: Path) -> None:
    sparse = tmp_path / "sparse.tif"
    _write_tiled(sparse, 2048, 2048, np.ones((512, 512), dtype="uint8"), sparse_ok=True)
    validate_input(str(sparse), "coll/sparse.tif", CollectionSettings())
    ready = _run(tmp_path, sparse)
    assert ready.raster.width == 2048


def test_too_many_bands_is_refused_and_metadata_is_linear_in_bands(tmp_path: Path) -> None:
    many = tmp_path / "bands.tif"
    count = 5000
    with rasterio.open(many, "w", driver="GTiff", width=1, height=1, count=count, dtype="uint8",
                       crs="EPSG:4326", transform=from_origin(0, 1, 1, 1)) as ds:
        ds.write(np.ones((count, 1, 1), dtype="uint8"))
    with pytest.raises(RasterTooLarge) as err:
        validate_input(str(many), "coll/bands.tif", CollectionSettings())
    assert "5000 bands" in str(err.value) and "max_bands" in str(err.value)
    validate_input(str(many), "coll/bands.tif", CollectionSettings(max_bands=count))
    timings = {}
    for n in (1000, 4000):
        path = tmp_path / f"b{n}.tif"
        with rasterio.open(path, "w", driver="GTiff", width=1, height=1, count=n, dtype="uint8",
                           crs="EPSG:4326", transform=from_origin(0, 1, 1, 1)) as ds:
            ds.write(np.ones((n, 1, 1), dtype="uint8"))
        started = time.perf_counter()
        meta = read_raster_metadata(str(path))
        timings[n] = time.perf_counter() - started
        assert meta.count == n and meta.bands[-1].statistics["maximum"] == 1.0
    print(f"metadata: 1000 bands {timings[1000]:.2f} s, 4000 bands {timings[4000]:.2f} s")


def test_output_size_limit(tmp_path: Path) -> None:
    path = tmp_path / "big.tif"
    write_geotiff(path, width=1000, height=1000, dtype="uint16")
    with pytest.raises(RasterTooLarge) as err:
        validate_input(str(path), "coll/big.tif", CollectionSettings(max_output_bytes=1_000_000))
    assert "max_output_bytes" in str(err.value)


# -- the 512-px-wide raster -----------------------------------------------------------------------------


@pytest.mark.parametrize("width,height", [(512, 1300), (512, 600), (1300, 512)])
def test_a_raster_exactly_512_px_wide_converts_and_checks(tmp_path: Path, width: int, height: int) -> None:
    src = tmp_path / "narrow.tif"
    write_geotiff(src, width=width, height=height, dtype="uint16")
    dst = tmp_path / "narrow-cog.tif"
    convert_to_cog(str(src), str(dst), resampling="average")
    check_output(str(dst))  # raised cog_check_failed ("not tiled") before
    assert is_valid_cog(str(dst))
    ready = _run(tmp_path, src)
    assert (ready.raster.width, ready.raster.height) == (width, height)


def test_a_striped_file_is_still_not_taken_as_a_cog(tmp_path: Path) -> None:
    src = tmp_path / "striped.tif"
    write_geotiff(src, width=1300, height=1300, dtype="uint16")
    assert not is_valid_cog(str(src))


def test_same_failure_message_normalised_across_attempts() -> None:
    first = ("/w/.work/cog-123-0123456789abcdef-cog.tif: the written COG does not validate: x at 4096 "
             "(retry 1 of 5 in 2s)")
    second = "/w/.work/cog-987-fedcba9876543210-cog.tif: the written COG does not validate: x at 4096"
    assert normalised(first) == normalised(second)
    assert normalised(first) != normalised("/w/x.tif: the written COG does not read back: y")


# -- leftovers, names, disk -----------------------------------------------------------------------------


def test_leftovers_of_dead_processes_are_removed_live_ones_kept(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = work / f"cog-{dead.pid}-0123456789abcdef-cog.tif"
    stale_ovr = work / f"cog-{dead.pid}-0123456789abcdef-cog.tif.ovr.tmp"
    live = work / f"{cog_prefix()}cog.tif"
    sibling = subprocess.Popen(["sleep", "30"])
    try:
        live_sibling = work / f"cog-{sibling.pid}-fedcba9876543210-cog.tif"
        legacy_old = work / "src-0123456789abcdef.tif"
        legacy_new = work / "src-fedcba9876543210.tif"
        foreign = work / "notes.txt"
        for p in (stale, stale_ovr, live, live_sibling, legacy_old, legacy_new, foreign):
            p.write_bytes(b"x")
        old = time.time() - 7200
        os.utime(legacy_old, (old, old))
        removed = set(remove_stale(work))
    finally:
        sibling.kill()
        sibling.wait()
    assert removed == {stale.name, stale_ovr.name, legacy_old.name}
    assert live.exists() and live_sibling.exists() and legacy_new.exists() and foreign.exists()


def test_a_file_name_too_long_is_permanent(tmp_path: Path) -> None:
    name = "n" * 240 + ".tif"  # fits the inbox (255) but not the store's temp name beside it
    src = tmp_path / name
    write_geotiff(src, width=64, height=64)
    with pytest.raises(NameTooLong) as err:
        _run(tmp_path, src)
    assert name[:40] in str(err.value) and "too long" in str(err.value)


@pytest.fixture
def tiny_fs(tmp_path: Path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_is_transient_and_says_so(tmp_path: Path, tiny_fs: Path) -> None:
    src = tmp_path / "noise.tif"
    data = np.random.default_rng(1).integers(0, 65535, (1, 1500, 1500), dtype="uint16")
    write_geotiff(src, width=1500, height=1500, dtype="uint16", data=data)  # ~4.5 MB that does not compress
    with pytest.raises(DiskFull) as err:
        convert_to_cog(str(src), str(tiny_fs / "out.tif"), resampling="average", name="coll/noise.tif")
    assert err.value.transient
    assert "no space left on device" in str(err.value) and "coll/noise.tif" in str(err.value)

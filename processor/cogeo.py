"""GeoTIFF -> Cloud Optimized GeoTIFF with GDAL's COG driver, in-process.

The COG driver through ``rasterio.shutil.copy`` is the fastest and leanest way (see
/work/shared/reference/performance.md): no in-memory copy, threaded compression and overviews.
It copies nodata, the internal mask, scale/offset, band descriptions, units and dataset tags.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

import rasterio
import rasterio.shutil
from rasterio._err import CPLE_BaseError
from rasterio.errors import RasterioError
from rasterio.windows import Window
from rio_cogeo.cogeo import cog_validate

from stacdrop.errors import DiskFull, InvalidRaster, SourceNotFound
from processor.errors import ConversionFailed, OutputCheckFailed, TiffStructureError
from processor.tiff import TiffLayout, tiff_layout
from processor.validate import check_blocks_readable, gdal_message

BLOCKSIZE = 512
# Overviews are regenerated with the collection's resampling even when the input has some: an input's
# own overviews may have been made with "average" on categorical data.
OVERVIEWS = "IGNORE_EXISTING"
ENV = {"GDAL_TIFF_INTERNAL_MASK": True}


def cog_creation_options(
    *, resampling: str, target_crs: str | None = None, threads: str = "ALL_CPUS"
) -> dict[str, Any]:
    """The COG driver creation options the converter uses (the bench passes the same to the bare driver).

    PREDICTOR=YES makes the driver pick 2 (horizontal differencing) for integer types and 3 (floating point)
    for float types.
    """
    options: dict[str, Any] = {
        "COMPRESS": "DEFLATE",
        "PREDICTOR": "YES",
        "BLOCKSIZE": BLOCKSIZE,
        "OVERVIEW_RESAMPLING": resampling,
        "OVERVIEWS": OVERVIEWS,
        "BIGTIFF": "IF_SAFER",
        "NUM_THREADS": threads,
    }
    if target_crs:
        options["TARGET_SRS"] = target_crs
        options["RESAMPLING"] = _warp_resampling(resampling)
    return options


def _warp_resampling(resampling: str) -> str:
    # The warper knows neither "gauss" nor "rms" as kernels for reprojection; fall back to close ones.
    return {"gauss": "cubic", "rms": "average"}.get(resampling, resampling)


def convert_to_cog(
    src: str,
    dst: str,
    *,
    resampling: str,
    target_crs: str | None = None,
    threads: str = "ALL_CPUS",
    name: str | None = None,
) -> None:
    """Write ``dst`` as a COG from ``src``.

    A failure caused by the input (a block that does not decode, data past the end of the file) raises
    ``InvalidRaster`` naming ``name`` (default: the file name); any other failure ``ConversionFailed``
    (transient). A failed conversion may leave a partial ``dst``: the caller owns its cleanup.
    """
    name = name or os.path.basename(src)
    options = cog_creation_options(resampling=resampling, target_crs=target_crs, threads=threads)
    try:
        with rasterio.Env(**ENV):
            rasterio.shutil.copy(src, dst, driver="COG", **options)
    except (CPLE_BaseError, RasterioError) as exc:
        raise _blame(src, dst, name, exc) from None


def _blame(src: str, dst: str, name: str, exc: BaseException) -> Exception:
    """Decide whether a failed conversion is the input's fault (permanent) or ours (transient)."""
    message = gdal_message(exc)
    if disk_full(os.path.dirname(os.path.abspath(dst)), message):
        return DiskFull(f"{name}: COG conversion failed: no space left on device ({os.path.dirname(dst)}): {message}")
    if not os.path.exists(src):
        return SourceNotFound(f"{name}: the source file disappeared during the conversion")
    src_base = os.path.basename(src)
    if src_base in message and ("IReadBlock failed" in message or "TIFFRead" in message):
        return InvalidRaster(f"{name}: pixel data cannot be read (corrupt or truncated): {message}")
    # Not obviously the input: read it all once to tell (only on this failure path).
    try:
        check_blocks_readable(src, name, overviews=False)
    except InvalidRaster as bad:
        return bad
    return ConversionFailed(f"{name}: COG conversion failed: {message}")


# GDAL reports a full disk in its own words ("Free disk space available is ...", "Write error",
# "TIFFAppendToStrip"...), never "no space left on device": a write failure is judged by the free space.
_DISK_FULL_FREE = 4 << 20


def disk_full(folder: str, message: str = "") -> bool:
    """True when ``folder``'s file system is (nearly) full, or ``message`` says so."""
    if "no space left" in message.lower() or "free disk space" in message.lower():
        return True
    try:
        return shutil.disk_usage(folder).free < _DISK_FULL_FREE
    except OSError:
        return False


CATEGORICAL = ("nearest", "mode")
# rio-cogeo calls a level "not tiled" when its block width equals its width: a 512-px-wide raster with
# 512 x 512 tiles is reported although it is tiled. Tiling is judged from the file's own TIFF tags instead
# (``tiff_layout``: TileOffsets present in every IFD), and these two errors dropped when the tags say tiled.
_NOT_TILED = "The file is greater than 512xH or 512xW, but is not tiled"


def _is_not_tiled_error(error: str) -> bool:
    return error == _NOT_TILED or (error.startswith("Overview of index ") and error.endswith(" is not tiled"))


def cog_errors(path: str, layout: TiffLayout) -> tuple[bool, list[str], list[str]]:
    """``cog_validate`` with its "not tiled" errors judged from the TIFF tags (see ``_NOT_TILED``)."""
    valid, errors, warnings = cog_validate(path, quiet=True)
    if all(ifd.tiled for ifd in layout.ifds):
        errors = [e for e in errors if not _is_not_tiled_error(e)]
        valid = not errors
    return valid, errors, warnings


def is_valid_cog(path: str, *, resampling: str | None = None) -> bool:
    """True when ``path`` can be stored as is: a valid COG by ``cog_validate`` (no errors) and ours.

    Our requirements on top: tiled TIFF (cog_validate lets a striped file of <= 512 px pass), compressed
    (any codec), internal overviews when larger than 512 px, nothing in side files (.ovr, .msk, .aux.xml
    would be lost when only the .tif is stored). The tile size is not required to be 512, the codec may
    be any. When ``resampling`` is categorical (nearest/mode), existing overviews must say they were made
    that way (rio-cogeo's ``OVERVIEW_RESAMPLING`` tag): "average" overviews would invent classes.
    """
    try:
        # The TIFF header first (no GDAL open): a striped or uncompressed input, the usual case, ends here.
        layout = tiff_layout(path)
        if not all(ifd.tiled and ifd.compression not in (None, 1) for ifd in layout.ifds):
            return False
        with rasterio.Env(**ENV):
            with rasterio.open(path) as ds:
                if ds.driver != "GTiff" or len(ds.files) != 1:
                    return False
                # Tiling was judged from the TIFF tags above: rasterio's profile["tiled"] is False when the
                # block width equals the width (a 512-px-wide raster of 512 x 512 tiles).
                if resampling in CATEGORICAL and ds.overviews(1):
                    made_with = ds.tags().get("OVERVIEW_RESAMPLING", "").lower()
                    if made_with not in CATEGORICAL:
                        return False
            valid, errors, warnings = cog_errors(path, layout)
        if not valid or errors or warnings:
            return False
    except (CPLE_BaseError, RasterioError, TiffStructureError, OSError):
        return False
    return True


def check_output(path: str) -> None:
    """Check a COG we wrote: structure, ``cog_validate`` without errors, and a read of the last
    full-resolution block (the end of the file in a COG) and of the smallest overview.

    Raises ``OutputCheckFailed`` (transient): a bad output is our bug or the disk, not the input.
    """
    try:
        layout = tiff_layout(path)
        valid, errors, _warnings = cog_errors(path, layout)
        if not valid or errors:
            raise OutputCheckFailed(f"{path}: the written COG does not validate: {'; '.join(errors)}")
        with rasterio.Env(**ENV), rasterio.open(path) as ds:
            bh, bw = ds.block_shapes[0]
            row = (ds.height - 1) // bh * bh
            col = (ds.width - 1) // bw * bw
            win = Window(col, row, min(bw, ds.width - col), min(bh, ds.height - row))
            ds.read(window=win)
            ds.read_masks(1, window=win)
            overviews = ds.overviews(1)
        if overviews:
            with rasterio.open(path, overview_level=len(overviews) - 1) as ov:
                ov.read()
                ov.read_masks(1)
    except OutputCheckFailed:
        raise
    except TiffStructureError as exc:
        raise OutputCheckFailed(f"{path}: the written COG is broken: {exc}") from None
    except (CPLE_BaseError, RasterioError, OSError) as exc:
        raise OutputCheckFailed(f"{path}: the written COG does not read back: {gdal_message(exc)}") from None

"""Input validation: refuse what is not a usable GeoTIFF, cheaply, before any conversion.

What is checked up front (milliseconds, whatever the file size):

- zero bytes;
- GDAL can open it and its driver is GTiff (a PNG renamed ``.tif`` opens with the PNG driver);
- a CRS and a real geotransform (not the identity that GDAL returns for "none", not GCPs/RPCs only);
- the TIFF structure: every IFD and every strip/tile (offset + byte count) lies inside the file. This is
  what catches a truncated upload without reading the pixels.

What is not checked here: that every block *decodes* (corrupt compressed bytes in the middle of a file).
Reading every block up front would double the I/O of the conversion; the conversion reads every block
anyway and fails on the first one that does not decode, and ``processor.cogeo.convert_to_cog`` maps that
failure to ``InvalidRaster``. An input stored as is (already a COG) has no conversion, so the stage reads
its blocks with ``check_blocks_readable`` instead.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np
import rasterio
from rasterio._err import CPLE_BaseError
from rasterio.errors import NotGeoreferencedWarning, RasterioError
from rasterio.windows import Window

from processor.limits import check_limits
from processor.errors import TiffStructureError
from processor.tiff import tiff_layout
from stacdrop.errors import InvalidRaster

def validate_input(path: str, name: str, limits: Any = None) -> None:
    """Raise ``InvalidRaster`` (permanent) naming ``name`` and the reason when ``path`` is not usable.

    With ``limits`` (a ``CollectionSettings``), also the resource limits of ``processor.limits``: from the
    headers only, so a bomb is refused in milliseconds without writing a byte.
    """
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise InvalidRaster(f"{name}: cannot read the file ({exc.strerror})") from None
    if size == 0:
        raise InvalidRaster(f"{name}: the file is empty (0 bytes)")
    with open(path, "rb") as f:
        magic = f.read(4)
    is_tiff = magic in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            ds = rasterio.open(path)
        except RasterioError as exc:
            if is_tiff:
                raise InvalidRaster(
                    f"{name}: not a readable GeoTIFF (truncated or corrupt?): {gdal_message(exc)}"
                ) from None
            raise InvalidRaster(f"{name}: not a raster GDAL can read ({gdal_message(exc)})") from None
        with ds:
            if ds.driver != "GTiff" or not is_tiff:
                raise InvalidRaster(f"{name}: not a GeoTIFF: the file is a {ds.driver} raster despite its name")
            if ds.count < 1 or ds.width < 1 or ds.height < 1:
                raise InvalidRaster(f"{name}: no raster bands ({ds.count} bands, {ds.width}x{ds.height})")
            t = ds.transform
            if t.is_identity or t.determinant == 0 or not all(np.isfinite(list(t)[:6])):
                if ds.gcps[0]:
                    raise InvalidRaster(
                        f"{name}: georeferenced only by {len(ds.gcps[0])} ground control points (GCPs), no "
                        "geotransform; warp it first (gdalwarp)"
                    )
                if ds.rpcs:
                    raise InvalidRaster(f"{name}: georeferenced only by RPCs, no geotransform; orthorectify it first")
                raise InvalidRaster(f"{name}: no geotransform (pixel-to-map transform); georeference it first")
            if not ds.crs:
                raise InvalidRaster(f"{name}: no CRS (coordinate reference system); georeference it first")
            shape = dict(width=ds.width, height=ds.height, count=ds.count,
                         itemsize=max(np.dtype(d).itemsize for d in set(ds.dtypes)))
    try:
        layout = tiff_layout(path, size)
    except TiffStructureError as exc:
        raise InvalidRaster(f"{name}: truncated or corrupt TIFF: {exc}") from None
    if limits is not None:
        check_limits(name, layout, limits=limits, **shape)


def check_blocks_readable(path: str, name: str, *, overviews: bool = True, threads: str = "ALL_CPUS") -> None:
    """Decode every block (all bands, the mask and, by default, the overviews). ``InvalidRaster`` on failure.

    Used for inputs stored as is, which no conversion reads. Reads windows of whole block rows so the GTiff
    driver can decode with several threads.
    """
    levels: list[int | None] = [None]
    level: int | None = None
    try:
        with rasterio.Env(GDAL_NUM_THREADS=threads):
            with rasterio.open(path) as ds:
                if overviews:
                    levels += list(range(len(ds.overviews(1))))
            for level in levels:
                kwargs = {} if level is None else {"overview_level": level}
                with rasterio.Env(GDAL_NUM_THREADS=threads), rasterio.open(path, **kwargs) as ds:
                    _read_all(ds)
    except (RasterioError, CPLE_BaseError) as exc:
        where = "full resolution" if level is None else f"overview {level}"
        raise InvalidRaster(
            f"{name}: pixel data cannot be read at {where} (corrupt or truncated): {gdal_message(exc)}"
        ) from None


def _read_all(ds: rasterio.io.DatasetReader) -> None:
    bh = ds.block_shapes[0][0]
    itemsize = np.dtype(ds.dtypes[0]).itemsize * ds.count
    rows = max(bh, (32 << 20) // max(1, ds.width * itemsize) // bh * bh)  # ~32 MB per read
    buf = None
    mask_flags = ds.mask_flag_enums[0]
    per_dataset = any(f.name == "per_dataset" for f in mask_flags) and not any(f.name == "nodata" for f in mask_flags)
    for row in range(0, ds.height, rows):
        h = min(rows, ds.height - row)
        win = Window(0, row, ds.width, h)
        if buf is None or buf.shape[1] != h:
            buf = np.empty((ds.count, h, ds.width), dtype=ds.dtypes[0])
        ds.read(window=win, out=buf)
        if per_dataset:
            ds.read_masks(1, window=win)


def gdal_message(exc: BaseException) -> str:
    text = str(exc).strip()
    cause = exc.__cause__ or exc.__context__
    if cause is not None and ("See previous" in text or not text):
        text = str(cause).strip() or text
    return text

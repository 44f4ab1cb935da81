"""What the publisher needs to know about a stored COG, read once and cheaply.

Statistics come from the smallest overview whose long side still has >= 512 px (or from the full data
when the raster is that small), so a 10000x10000 COG costs one ~625x625 read.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import rasterio
from rasterio.enums import MaskFlags
from rasterio.enums import WktVersion
from rasterio.errors import NotGeoreferencedWarning

from stacdrop.messages import BandMetadata, RasterMetadata

STATS_MIN_SIDE = 512
# pyproj's identification confidence: 100 = same definition with the EPSG authority, 90 = equivalent
# definition, 70 = equivalent up to names. Below 90 a CRS is only "close to" the EPSG code.
EPSG_CONFIDENCE = 90


def read_raster_metadata(path: str) -> RasterMetadata:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path) as ds:
            return _metadata(ds)


def _metadata(ds: rasterio.io.DatasetReader) -> RasterMetadata:
    crs = ds.crs
    crs_epsg = crs_wkt2 = None
    if crs:
        crs_epsg = crs.to_epsg(confidence_threshold=EPSG_CONFIDENCE)
        crs_wkt2 = crs.to_wkt(version=WktVersion.WKT2_2019)
    flags = ds.mask_flag_enums  # once per dataset: linear
    has_mask = (
        bool(flags)
        and MaskFlags.per_dataset in flags[0]
        and MaskFlags.nodata not in flags[0]
        and MaskFlags.alpha not in flags[0]
    )
    res_x, res_y = ds.res
    resolution = float(res_x) if math.isclose(res_x, res_y, rel_tol=1e-9) else float((res_x + res_y) / 2)
    band_info = _BandInfo(ds)
    stats = _statistics(ds, band_info)
    bands = []
    for i in range(ds.count):
        scale, offset = band_info.scales[i], band_info.offsets[i]
        dtype = band_info.dtypes[i]
        bands.append(
            BandMetadata(
                data_type=dtype,
                nodata=_nodata(band_info.nodatavals[i], dtype),
                scale=None if scale in (None, 1.0) else float(scale),
                offset=None if offset in (None, 0.0) else float(offset),
                unit=band_info.units[i] or None,
                description=band_info.descriptions[i] or None,
                statistics=stats[i],
                spatial_resolution=resolution,
            )
        )
    return RasterMetadata(
        width=ds.width,
        height=ds.height,
        count=ds.count,
        crs_epsg=crs_epsg,
        crs_wkt2=crs_wkt2,
        transform=[float(v) for v in list(ds.transform)[:6]],
        bounds=[float(v) for v in ds.bounds],
        bands=bands,
        tags={str(k): str(v) for k, v in ds.tags().items()},
        has_mask=has_mask,
    )


class _BandInfo:
    """rasterio's per-band properties read once: each of ``ds.scales``, ``ds.nodatavals``,
    ``ds.mask_flag_enums``... builds a tuple over *all* bands on every access, so indexing them in a loop
    over the bands was quadratic (5000 bands of 1 x 1: minutes)."""

    def __init__(self, ds: rasterio.io.DatasetReader) -> None:
        self.dtypes = ds.dtypes
        self.nodatavals = ds.nodatavals
        self.scales = ds.scales
        self.offsets = ds.offsets
        self.units = ds.units
        self.descriptions = ds.descriptions
        self.mask_flags = ds.mask_flag_enums


def _nodata(value: float | None, dtype: str) -> float | int | str | None:
    if value is None:
        return None
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if np.issubdtype(np.dtype(dtype), np.integer):
        return int(value)
    return float(value)


def _stats_shape(ds: rasterio.io.DatasetReader) -> tuple[int, int]:
    """(height, width) to read: the smallest overview with >= STATS_MIN_SIDE px on its long side."""
    long_side = max(ds.width, ds.height)
    best = 1
    for factor in ds.overviews(1):
        if long_side / factor >= STATS_MIN_SIDE:
            best = max(best, factor)
    if best == 1 and long_side > 4 * STATS_MIN_SIDE:
        # No usable overview on a big raster: let GDAL decimate rather than hold it all in memory.
        best = long_side // (2 * STATS_MIN_SIDE)
    return math.ceil(ds.height / best), math.ceil(ds.width / best)


def _valid_mask(ds: rasterio.io.DatasetReader, data: np.ndarray, band_index: int, info: _BandInfo) -> np.ndarray | None:
    """Valid pixels of one band (True = valid), or None when all are valid.

    A nodata mask is computed from the data already read (asking GDAL would read the pixels again); a real
    mask band (internal mask, alpha) is read at the same reduced size.
    """
    flags = info.mask_flags[band_index]
    band = data[band_index]
    valid: np.ndarray | None = None
    if MaskFlags.nodata in flags:
        nodata = info.nodatavals[band_index]
        if nodata is not None and math.isnan(nodata):
            valid = ~np.isnan(band)
        else:
            valid = band != np.array(nodata).astype(band.dtype)
    elif MaskFlags.all_valid not in flags:
        masks = ds.read_masks(band_index + 1, out_shape=band.shape)
        valid = masks != 0
    if np.issubdtype(band.dtype, np.floating):
        finite = np.isfinite(band)
        valid = finite if valid is None else valid & finite
    return valid


def _statistics(ds: rasterio.io.DatasetReader, info: _BandInfo) -> list[dict[str, float] | None]:
    height, width = _stats_shape(ds)
    data = ds.read(out_shape=(ds.count, height, width))
    shared: np.ndarray | None = None
    shared_done = False
    out: list[dict[str, float] | None] = []
    for i in range(ds.count):
        flags = info.mask_flags[i]
        if MaskFlags.per_dataset in flags and not np.issubdtype(data.dtype, np.floating):
            if not shared_done:  # one mask for all bands: read it once
                shared, shared_done = _valid_mask(ds, data, i, info), True
            valid = shared
        else:
            valid = _valid_mask(ds, data, i, info)
        band = data[i]
        values = band.ravel() if valid is None else band[valid]
        total = band.size
        if values.size == 0:
            out.append({"valid_percent": 0.0})
            continue
        centered = values.astype(np.float64)
        mean = float(centered.mean())
        centered -= mean
        # Squares summed by numpy, not np.dot: a BLAS dot of this size wakes OpenBLAS's thread pool,
        # whose threads then spin and burn a core for milliseconds after every call.
        np.square(centered, out=centered)
        out.append(
            {
                "minimum": float(values.min()),
                "maximum": float(values.max()),
                "mean": mean,
                "stddev": float(np.sqrt(centered.sum() / centered.size)),
                "valid_percent": float(100.0 * values.size / total),
            }
        )
    return out

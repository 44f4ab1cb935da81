"""Real GeoTIFFs written by rasterio, for tests and benches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import Affine, from_origin

# Interrupted Goode Homolosine (SoilGrids): a projection with no EPSG code.
IGH_WKT = (
    'PROJCS["Interrupted_Goode_Homolosine",GEOGCS["GCS_WGS_1984",DATUM["D_WGS_1984",'
    'SPHEROID["WGS_1984",6378137.0,298.257223563]],PRIMEM["Greenwich",0.0],UNIT["Degree",0.0174532925199433]],'
    'PROJECTION["Interrupted_Goode_Homolosine"],PARAMETER["central_meridian",0.0],UNIT["Meter",1.0]]'
)
IGH_PROJ4 = "+proj=igh +lon_0=0 +x_0=0 +y_0=0 +datum=WGS84 +units=m +no_defs"


def write_geotiff(
    path: str | Path,
    *,
    width: int = 256,
    height: int = 256,
    count: int = 1,
    dtype: str = "uint16",
    crs: str | CRS | None = "EPSG:4326",
    transform: Affine | None = None,
    nodata: float | int | None = None,
    tiled: bool = False,
    blocksize: int = 256,
    mask: bool = False,
    scale: float | None = None,
    offset: float | None = None,
    units: str | None = None,
    descriptions: list[str] | None = None,
    categorical: bool = False,
    data: np.ndarray | None = None,
    compress: str | None = None,
    tags: dict[str, str] | None = None,
    seed: int = 0,
) -> Path:
    """Write a GeoTIFF and return its path. Data is a smooth gradient plus noise (or class codes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if transform is None:
        transform = from_origin(-10.0, 50.0, 0.01, 0.01)
    if data is None:
        data = make_data(width, height, count, dtype, categorical=categorical, seed=seed)
        if nodata is not None:
            data[:, : height // 8, : width // 8] = np.array(nodata).astype(dtype)
    profile: dict[str, Any] = dict(
        driver="GTiff", width=width, height=height, count=count, dtype=dtype, transform=transform
    )
    if crs is not None:
        profile["crs"] = crs
    if nodata is not None:
        profile["nodata"] = nodata
    if tiled:
        profile.update(tiled=True, blockxsize=blocksize, blockysize=blocksize)
    if compress:
        profile["compress"] = compress
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True):
        with rasterio.open(path, "w", **profile) as dst:
            dst.write(data)
            if mask:
                m = np.full((height, width), 255, dtype="uint8")
                m[height // 2 :, width // 2 :] = 0
                dst.write_mask(m)
            if scale is not None or offset is not None:
                dst.scales = [scale if scale is not None else 1.0] * count
                dst.offsets = [offset if offset is not None else 0.0] * count
            if units:
                dst.units = [units] * count
            if descriptions:
                dst.descriptions = descriptions
            if tags:
                dst.update_tags(**tags)
    return path


def make_data(
    width: int, height: int, count: int, dtype: str, *, categorical: bool = False, seed: int = 0
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if categorical:
        classes = np.array([10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110,
                            120, 130, 140, 150, 160, 170, 180, 190, 200, 210, 220])
        idx = (np.add.outer(np.arange(height) // 16, np.arange(width) // 16)) % len(classes)
        band = classes[idx]
        return np.stack([band] * count).astype(dtype)
    yy, xx = np.mgrid[0:height, 0:width]
    base = (np.sin(xx / 37.0) + np.cos(yy / 23.0) + 2.0) / 4.0  # 0..1, smooth
    bands = []
    for b in range(count):
        noise = rng.normal(0, 0.01, size=(height, width))
        v = np.clip(base + noise + b * 0.05, 0, 1)
        if np.issubdtype(np.dtype(dtype), np.integer):
            info = np.iinfo(dtype)
            lo, hi = max(info.min, 0), min(info.max, 10000)
            bands.append((lo + v * (hi - lo - 1)).astype(dtype))
        else:
            bands.append((v * 100.0 - 20.0).astype(dtype))
    return np.stack(bands)

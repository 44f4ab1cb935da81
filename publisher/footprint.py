"""The WGS84 footprint of a raster: geometry and bbox for its STAC item.

How it is built:

* The outline is the pixel-grid rectangle mapped through the affine transform (so rotated and sheared
  grids work), densified with ``densify_points`` points per edge, and reprojected to EPSG:4326 with pyproj
  (``always_xy``). Latitudes are clamped to [-90, 90].
* Longitudes are unwrapped along the ring (no jump > 180 degrees between neighbours), so an outline that
  crosses the antimeridian becomes one continuous polygon in "unwrapped" longitudes, e.g. 170..190. It is
  then cut into 360-degree windows and shifted back: the geometry is a MultiPolygon split at +-180
  (RFC 7946 section 3.1.9) and the bbox has west > east (RFC 7946 section 5.2, which STAC follows).
* An outline whose unwrapped ring winds once around the globe encloses a pole (a polar stereographic
  grid): the ring is closed over that pole, the bbox is [-180, lat, 180, 90] (or -90 for the south pole).
* An outline spanning 360 degrees of longitude or more (a global grid, also -180.0001..179.9999 style
  grids) gives the geometry [-180, south, 180, north], so a global raster gives [-180, -90, 180, 90].
* Projections with interruptions or limited domains (Interrupted Goode Homolosine, no EPSG code): points
  that do not project (inf) are dropped. When any are, the footprint falls back to the bbox of a grid of
  sample points over the whole raster (a rectangle, never an invalid polygon).
* Exterior rings are counter-clockwise, holes clockwise (RFC 7946); coordinates are rounded to 1e-9
  degrees so output is stable.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer
from pyproj.exceptions import CRSError
from shapely import affinity
from shapely.geometry import Polygon, box
from shapely.geometry.polygon import orient

from stacdrop.errors import InvalidItem
from stacdrop.messages import RasterMetadata

DIGITS = 9
_GLOBAL_TOL = 1e-6


def raster_crs(raster: RasterMetadata) -> CRS:
    """The raster's CRS from ``crs_epsg`` or ``crs_wkt2``. InvalidItem when neither works."""
    try:
        if raster.crs_epsg is not None:
            return _crs_from_epsg(int(raster.crs_epsg))
        if raster.crs_wkt2:
            return _crs_from_wkt(raster.crs_wkt2)
    except CRSError as exc:
        raise InvalidItem(f"the raster's CRS is not understood: {exc}") from None
    raise InvalidItem("the raster has no CRS (neither an EPSG code nor WKT): cannot place it on the map")


@lru_cache(maxsize=64)
def _crs_from_epsg(code: int) -> CRS:
    return CRS.from_epsg(code)


@lru_cache(maxsize=64)
def _crs_from_wkt(wkt: str) -> CRS:
    return CRS.from_wkt(wkt)


@lru_cache(maxsize=64)
def _to_wgs84(crs: CRS) -> Transformer:
    return Transformer.from_crs(crs, CRS.from_epsg(4326), always_xy=True)


@lru_cache(maxsize=64)
def _from_wgs84(crs: CRS) -> Transformer:
    return Transformer.from_crs(CRS.from_epsg(4326), crs, always_xy=True)


def _affine(raster: RasterMetadata) -> tuple[float, float, float, float, float, float]:
    t = raster.transform
    if len(t) not in (6, 9):
        raise InvalidItem(f"the raster's transform has {len(t)} coefficients, expected 6 or 9")
    a, b, c, d, e, f = (float(v) for v in t[:6])
    if not all(map(math.isfinite, (a, b, c, d, e, f))) or a * e - b * d == 0:
        raise InvalidItem(f"the raster's transform {list(t)} is not a usable geotransform")
    return a, b, c, d, e, f


def _apply(aff: tuple[float, ...], cols: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a, b, c, d, e, f = aff
    return a * cols + b * rows + c, d * cols + e * rows + f


def native_outline(raster: RasterMetadata, densify_points: int = 21) -> tuple[np.ndarray, np.ndarray]:
    """The outline ring in native coordinates, densified, closed (last point == first)."""
    w, h = raster.width, raster.height
    if w <= 0 or h <= 0:
        raise InvalidItem(f"the raster has no pixels ({w} x {h})")
    k = max(int(densify_points), 2)
    t = np.linspace(0.0, 1.0, k)[:-1]
    corners = [(0.0, 0.0), (w, 0.0), (w, h), (0.0, h)]
    cols, rows = [], []
    for (c0, r0), (c1, r1) in zip(corners, corners[1:] + corners[:1]):
        cols.append(c0 + (c1 - c0) * t)
        rows.append(r0 + (r1 - r0) * t)
    col = np.concatenate(cols + [np.array([0.0])])
    row = np.concatenate(rows + [np.array([0.0])])
    return _apply(_affine(raster), col, row)


def native_bbox(raster: RasterMetadata) -> list[float]:
    """[minx, miny, maxx, maxy] of the four corners in the raster's CRS (for proj:bbox)."""
    w, h = float(raster.width), float(raster.height)
    xs, ys = _apply(_affine(raster), np.array([0.0, w, w, 0.0]), np.array([0.0, 0.0, h, h]))
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]


def _unwrap(lons: np.ndarray) -> np.ndarray:
    out = lons.astype(float).copy()
    for i in range(1, len(out)):
        delta = out[i] - out[i - 1]
        if delta > 180 or delta < -180:
            out[i] -= 360.0 * round(delta / 360.0)
    return out


def _norm_west(x: float) -> float:
    return ((x + 180.0) % 360.0) - 180.0  # [-180, 180)


def _norm_east(x: float) -> float:
    return -(((-x + 180.0) % 360.0) - 180.0)  # (-180, 180]


def _r(v: float) -> float:
    v = round(float(v), DIGITS)
    return 0.0 if v == 0 else v


def _pole_enclosed(crs: CRS, ring_x: np.ndarray, ring_y: np.ndarray, mean_lat: float) -> float:
    """+90 or -90: which pole the winding outline goes around."""
    native = Polygon(zip(ring_x, ring_y))
    for lat in (90.0, -90.0):
        try:
            px, py = _from_wgs84(crs).transform(0.0, lat, errcheck=True)
        except Exception:  # noqa: BLE001, S112 - pole not representable in the CRS
            continue
        if math.isfinite(px) and math.isfinite(py) and native.buffer(0).covers(shapely.Point(px, py)):
            return lat
    return 90.0 if mean_lat >= 0 else -90.0


def _polygons(geom: Any) -> list[Polygon]:
    if geom.is_empty:
        return []
    if isinstance(geom, Polygon):
        return [geom] if geom.area > 0 else []
    if hasattr(geom, "geoms"):
        out: list[Polygon] = []
        for g in geom.geoms:
            out.extend(_polygons(g))
        return out
    return []


def _split_windows(poly: Polygon) -> list[Polygon]:
    """Cut an unwrapped-longitude polygon at the antimeridian and shift the pieces into [-180, 180]."""
    minx, _, maxx, _ = poly.bounds
    kmin = math.floor((minx + 180.0) / 360.0)
    kmax = math.floor((maxx + 180.0) / 360.0)
    pieces: list[Polygon] = []
    for k in range(kmin, kmax + 1):
        window = box(-180.0 + 360.0 * k, -90.0, 180.0 + 360.0 * k, 90.0)
        for part in _polygons(poly.intersection(window)):
            pieces.append(affinity.translate(part, xoff=-360.0 * k) if k else part)
    return pieces


def _geojson(pieces: list[Polygon]) -> dict[str, Any]:
    merged = shapely.unary_union(pieces) if len(pieces) > 1 else pieces[0]
    # simplify(0) drops collinear points (a densified north-up rectangle in degrees keeps its 4 corners).
    polys = [orient(p.simplify(0.0) if p.simplify(0.0).is_valid else p, sign=1.0) for p in _polygons(merged)]
    polys.sort(key=lambda p: (p.bounds[0], p.bounds[1]))

    def ring(coords: Any) -> list[list[float]]:
        pts = [[_r(x), _r(y)] for x, y in coords]
        dedup = [pts[0]] + [p for prev, p in zip(pts, pts[1:]) if p != prev]
        return dedup

    def poly_coords(p: Polygon) -> list[list[list[float]]]:
        return [ring(p.exterior.coords)] + [ring(i.coords) for i in p.interiors]

    if len(polys) == 1:
        return {"type": "Polygon", "coordinates": poly_coords(polys[0])}
    return {"type": "MultiPolygon", "coordinates": [poly_coords(p) for p in polys]}


def _box_geojson(west: float, south: float, east: float, north: float) -> dict[str, Any]:
    if west <= east:
        return _geojson([box(west, south, east, north)])
    return _geojson([box(west, south, 180.0, north), box(-180.0, south, east, north)])


def _fallback(raster: RasterMetadata, crs: CRS, densify_points: int) -> tuple[dict[str, Any], list[float]]:
    """Footprint from a grid of sample points when the outline does not fully project."""
    k = max(int(densify_points), 2) * 4 + 1
    cols, rows = np.meshgrid(np.linspace(0, raster.width, k), np.linspace(0, raster.height, k))
    xs, ys = _apply(_affine(raster), cols.ravel(), rows.ravel())
    lons, lats = _to_wgs84(crs).transform(xs, ys)
    ok = np.isfinite(lons) & np.isfinite(lats)
    if not ok.any():
        raise InvalidItem("no point of the raster projects to longitude/latitude: cannot compute its footprint")
    lons, lats = np.clip(lons[ok], -180.0, 180.0), np.clip(lats[ok], -90.0, 90.0)
    west, east = float(lons.min()), float(lons.max())
    south, north = float(lats.min()), float(lats.max())
    if east - west < 1e-9:  # a single column of valid points: give it some width
        west, east = max(west - 1e-9, -180.0), min(east + 1e-9, 180.0)
    if north - south < 1e-9:
        south, north = max(south - 1e-9, -90.0), min(north + 1e-9, 90.0)
    bbox = [_r(west), _r(south), _r(east), _r(north)]
    return _box_geojson(*bbox), bbox


def _plain_lonlat_grid(raster: RasterMetadata, nbbox: list[float]) -> bool:
    """EPSG:4326, north up, no rotation, inside [-180, 180] x [-90, 90]: no reprojection or wrapping needed."""
    a, b, _, d, e, _ = raster.transform[:6]
    west, south, east, north = nbbox
    return (raster.crs_epsg == 4326 and b == 0 and d == 0 and a > 0 and e < 0
            and -180.0 <= west < east <= 180.0 and -90.0 <= south < north <= 90.0)


def footprint_wgs84(raster: RasterMetadata, densify_points: int = 21) -> tuple[dict[str, Any], list[float]]:
    """(GeoJSON geometry, [west, south, east, north]) of the raster in EPSG:4326."""
    geometry, bbox, _ = footprint(raster, densify_points)
    return geometry, bbox


def footprint(
    raster: RasterMetadata, densify_points: int = 21
) -> tuple[dict[str, Any], list[float], list[float]]:
    """(GeoJSON geometry, WGS84 bbox, native bbox for proj:bbox)."""
    crs = raster_crs(raster)
    nbbox = native_bbox(raster)
    if _plain_lonlat_grid(raster, nbbox):
        # The common case (global and regional lon/lat grids): the footprint is the grid's own rectangle, so
        # skip densifying, projecting and simplifying the outline (most of a small item's publish cost).
        bbox = [_r(v) for v in nbbox]
        return _box_geojson(*bbox), bbox, nbbox
    xs, ys = native_outline(raster, densify_points)
    lons, lats = _to_wgs84(crs).transform(xs, ys)  # EPSG:4326 -> 4326 keeps 0..360 longitudes as they are
    lons, lats = np.asarray(lons, dtype=float), np.asarray(lats, dtype=float)
    if not (np.isfinite(lons).all() and np.isfinite(lats).all()):
        geometry, bbox = _fallback(raster, crs, densify_points)
        return geometry, bbox, nbbox
    lats = np.clip(lats, -90.0, 90.0)
    ulons = _unwrap(lons)
    winding = round((ulons[-1] - ulons[0]) / 360.0)
    if winding:
        pole = _pole_enclosed(crs, xs, ys, float(lats.mean()))
        pts = list(zip(ulons, lats))
        pts += [(ulons[-1], pole), (ulons[0], pole)]
        poly = Polygon(pts)
    else:
        ulons[-1] = ulons[0]
        poly = Polygon(zip(ulons, lats))
    if not poly.is_valid:
        poly = shapely.make_valid(poly)
    polys = _polygons(poly)
    if not polys:
        geometry, bbox = _fallback(raster, crs, densify_points)
        return geometry, bbox, nbbox
    minx = min(p.bounds[0] for p in polys)
    maxx = max(p.bounds[2] for p in polys)
    south = max(min(p.bounds[1] for p in polys), -90.0)
    north = min(max(p.bounds[3] for p in polys), 90.0)
    if maxx - minx >= 360.0 - _GLOBAL_TOL:
        west, east = -180.0, 180.0
        if winding:
            pieces = [q for p in polys for q in _split_windows(p)]
            geometry = _geojson(pieces)
        else:
            geometry = _box_geojson(west, _r(south), east, _r(north))
    else:
        west, east = _norm_west(minx), _norm_east(maxx)
        pieces = [q for p in polys for q in _split_windows(p)]
        geometry = _geojson(pieces)
    bbox = [_r(west), _r(south), _r(east), _r(north)]
    return geometry, bbox, nbbox


import math

import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.transform import Affine, from_origin
from shapely.geometry import shape

from publisher.footprint import footprint, footprint_wgs84
from stacdrop.errors import InvalidItem
from stacdrop.messages import BandMetadata, RasterMetadata
from tests.support.rasters import IGH_WKT, write_geotiff


def meta(transform, width, height, epsg=None, wkt=None):
    t = list(transform)[:6]
    return RasterMetadata(
        width=width, height=height, count=1, crs_epsg=epsg, crs_wkt2=wkt, transform=t,
        bounds=[0, 0, 0, 0], bands=[BandMetadata(data_type="uint8")],
    )


def meta_from_file(path):
    with rasterio.open(path) as src:
        epsg = src.crs.to_epsg()
        return RasterMetadata(
            width=src.width, height=src.height, count=src.count, crs_epsg=epsg,
            crs_wkt2=None if epsg else src.crs.to_wkt(version="WKT2_2019"), transform=list(src.transform)[:6],
            bounds=list(src.bounds), bands=[BandMetadata(data_type=d) for d in src.dtypes],
        )


def check_geojson(geometry, bbox):
    """Valid, CCW exterior rings, closed, inside [-180,180]x[-90,90], bbox consistent."""
    geom = shape(geometry)
    assert geom.is_valid and not geom.is_empty and geom.area > 0
    polys = geometry["coordinates"] if geometry["type"] == "MultiPolygon" else [geometry["coordinates"]]
    for poly in polys:
        ext = poly[0]
        assert ext[0] == ext[-1] and len(ext) >= 4
        assert shape({"type": "Polygon", "coordinates": [ext]}).exterior.is_ccw
        for x, y in ext:
            assert -180 <= x <= 180 and -90 <= y <= 90
    w, s, e, n = bbox
    assert -180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= n <= 90
    minx, miny, maxx, maxy = geom.bounds
    assert math.isclose(miny, s, abs_tol=1e-7) and math.isclose(maxy, n, abs_tol=1e-7)
    if w <= e:
        assert math.isclose(minx, w, abs_tol=1e-7) and math.isclose(maxx, e, abs_tol=1e-7)


def test_north_up_geographic():
    geometry, bbox = footprint_wgs84(meta(from_origin(-10, 50, 0.01, 0.01), 256, 128, 4326))
    assert bbox == [-10.0, 48.72, -7.44, 50.0]
    assert geometry["type"] == "Polygon"
    assert len(geometry["coordinates"][0]) == 5  # collinear densified points dropped
    check_geojson(geometry, bbox)


def test_projected_utm_covers_reprojected_corners():
    m = meta(from_origin(500000, 5600000, 30, 30), 1000, 800, 32633)
    geometry, bbox = footprint_wgs84(m)
    check_geojson(geometry, bbox)
    t = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True)
    xs, ys = t.transform([500000, 530000, 530000, 500000], [5600000, 5600000, 5576000, 5576000])
    for x, y in zip(xs, ys):
        assert bbox[0] - 1e-9 <= x <= bbox[2] + 1e-9 and bbox[1] - 1e-9 <= y <= bbox[3] + 1e-9
    _, _, native = footprint(m)
    assert native == [500000.0, 5576000.0, 530000.0, 5600000.0]


def test_colombia_epsg3116_is_wgs84():
    geometry, bbox = footprint_wgs84(meta(from_origin(1000000, 1100000, 30, 30), 2000, 2000, 3116))
    check_geojson(geometry, bbox)
    assert -80 < bbox[0] < bbox[2] < -70 and 0 < bbox[1] < bbox[3] < 10


def test_antimeridian_geographic_grid_is_split():
    geometry, bbox = footprint_wgs84(meta(from_origin(170, 10, 0.1, 0.1), 200, 100, 4326))
    assert geometry["type"] == "MultiPolygon" and len(geometry["coordinates"]) == 2
    assert bbox == [170.0, 0.0, -170.0, 10.0]  # west > east: crosses the antimeridian
    check_geojson(geometry, bbox)
    assert math.isclose(shape(geometry).area, 200.0)


def test_antimeridian_projected_utm60():
    geometry, bbox = footprint_wgs84(meta(from_origin(600000, 7000000, 1000, 1000), 300, 100, 32660))
    assert geometry["type"] == "MultiPolygon"
    assert bbox[0] > bbox[2] and 175 < bbox[0] < 180 and -180 < bbox[2] < -170
    check_geojson(geometry, bbox)


def test_touching_the_antimeridian_is_not_split():
    geometry, bbox = footprint_wgs84(meta(from_origin(179, 10, 0.1, 0.1), 10, 100, 4326))
    assert geometry["type"] == "Polygon" and bbox == [179.0, 0.0, 180.0, 10.0]


def test_rotated_grid():
    rot = Affine.translation(10, 50) @ Affine.rotation(30) @ Affine.scale(0.01, -0.01)
    m = meta(rot, 100, 100, 4326)
    geometry, bbox = footprint_wgs84(m)
    check_geojson(geometry, bbox)
    corners = [rot @ (0, 0), rot @ (100, 0), rot @ (100, 100), rot @ (0, 100)]
    assert math.isclose(bbox[0], min(c[0] for c in corners)) and math.isclose(bbox[3], max(c[1] for c in corners))
    assert math.isclose(shape(geometry).area, 1.0, rel_tol=1e-6)  # a rotated 1x1 degree square
    _, _, native = footprint(m)
    assert math.isclose(native[0], min(c[0] for c in corners))


def test_sheared_grid():
    geometry, bbox = footprint_wgs84(meta(Affine(0.01, 0.005, 0, 0, -0.01, 10), 100, 100, 4326))
    check_geojson(geometry, bbox)
    assert bbox == [0.0, 9.0, 1.5, 10.0]


@pytest.mark.parametrize(
    "transform, w, h",
    [
        (from_origin(-180, 90, 1, 1), 360, 180),
        (from_origin(-180.0001388888, 90.0001388888, 1 / 120, 1 / 120), 43200, 21602),  # CHELSA-style edges
        (from_origin(0, 90, 0.5, 0.5), 720, 360),  # 0..360 longitudes
        (from_origin(-180.5, 90, 1, 1), 362, 180),  # wider than the globe
    ],
)
def test_global_geographic(transform, w, h):
    geometry, bbox = footprint_wgs84(meta(transform, w, h, 4326))
    assert bbox == [-180.0, -90.0, 180.0, 90.0]
    assert geometry["type"] == "Polygon"
    check_geojson(geometry, bbox)


def test_global_web_mercator():
    size = 2 * 20037508.342789244
    geometry, bbox = footprint_wgs84(meta(from_origin(-size / 2, size / 2, size / 256, size / 256), 256, 256, 3857))
    assert bbox[0] == -180.0 and bbox[2] == 180.0 and math.isclose(bbox[3], 85.0511287798, abs_tol=1e-6)
    check_geojson(geometry, bbox)


@pytest.mark.parametrize("epsg, lat", [(3413, 90.0), (3031, -90.0)])
def test_polar_grid_containing_the_pole(epsg, lat):
    geometry, bbox = footprint_wgs84(meta(from_origin(-2e6, 2e6, 1e4, 1e4), 400, 400, epsg))
    assert bbox[0] == -180.0 and bbox[2] == 180.0
    assert (bbox[3] if lat > 0 else bbox[1]) == lat
    check_geojson(geometry, bbox)
    assert shape(geometry).covers(shape({"type": "Point", "coordinates": [12.0, lat * 0.999]}))


def test_polar_grid_off_the_pole_crossing_the_antimeridian():
    # EPSG:3413 (north polar stereographic, lon0 = -45): the 180 meridian runs to the upper left
    geometry, bbox = footprint_wgs84(meta(from_origin(-2e6, 2e6, 1e4, 1e4), 100, 100, 3413))
    check_geojson(geometry, bbox)
    assert geometry["type"] == "MultiPolygon"
    assert bbox[0] > bbox[2] and bbox[3] < 90


def test_igh_global_from_a_real_geotiff(tmp_path):
    # SoilGrids' IGH extent, at a coarse resolution: its edges fall into the interruptions (inf).
    path = write_geotiff(
        tmp_path / "igh.tif", width=160, height=58, crs=IGH_WKT,
        transform=from_origin(-19949750, 8361000, 250000, 250000),
    )
    m = meta_from_file(path)
    assert m.crs_epsg is None and m.crs_wkt2
    geometry, bbox = footprint_wgs84(m)
    check_geojson(geometry, bbox)
    assert all(np.isfinite(bbox))
    assert bbox[0] < -170 and bbox[2] > 170 and bbox[1] < -50 and bbox[3] > 80
    _, _, native = footprint(m)
    with rasterio.open(path) as src:
        assert native == pytest.approx(list(src.bounds))


def test_igh_tile_inside_one_lobe():
    geometry, bbox = footprint_wgs84(meta(from_origin(-1e6, 5e6, 250, 250), 400, 400, wkt=IGH_WKT))
    check_geojson(geometry, bbox)
    assert geometry["type"] == "Polygon" and len(geometry["coordinates"][0]) > 5
    assert bbox[2] - bbox[0] < 3 and bbox[3] - bbox[1] < 2


def test_densify_points_changes_only_detail():
    m = meta(from_origin(500000, 5600000, 1000, 1000), 500, 500, 32633)
    g2, b2 = footprint_wgs84(m, densify_points=2)
    g50, b50 = footprint_wgs84(m, densify_points=50)
    assert len(g2["coordinates"][0]) == 5 and len(g50["coordinates"][0]) > 5
    assert all(abs(a - b) < 0.1 for a, b in zip(b2, b50))


def test_deterministic():
    m = meta(from_origin(600000, 7000000, 1000, 1000), 300, 100, 32660)
    assert footprint(m) == footprint(m)


def test_no_crs_is_invalid_item():
    with pytest.raises(InvalidItem, match="no CRS"):
        footprint_wgs84(meta(from_origin(0, 0, 1, 1), 10, 10))


def test_bad_wkt_is_invalid_item():
    with pytest.raises(InvalidItem, match="CRS"):
        footprint_wgs84(meta(from_origin(0, 0, 1, 1), 10, 10, wkt="NOT A CRS"))


@pytest.mark.parametrize("transform, w, h", [
    (from_origin(-10, 50, 0.01, 0.01), 256, 128),
    (from_origin(-180, 90, 1 / 120, 1 / 120), 43200, 20880),  # CHELSA-like global grid
    (from_origin(-180, 90, 0.25, 0.25), 1440, 720),
    (from_origin(179, 10, 0.5, 0.5), 2, 4),  # touching the antimeridian
    (from_origin(-74.123456789, 4.987654321, 0.000277, 0.000277), 3001, 1999),
])
def test_lonlat_fast_path_gives_what_the_general_path_gives(monkeypatch, transform, w, h):
    raster = meta(transform, w, h, 4326)
    fast = footprint(raster)
    monkeypatch.setattr("publisher.footprint._plain_lonlat_grid", lambda *_: False)
    geometry, bbox, nbbox = footprint(raster)
    assert (bbox, nbbox) == fast[1:]
    assert geometry["type"] == fast[0]["type"] and shape(geometry).equals(shape(fast[0]))  # same ring, any start
    check_geojson(*fast[:2])

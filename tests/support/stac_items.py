"""STAC items and collections as plain dicts, small and valid, for the catalog and sink tests."""

from __future__ import annotations

def make_item(item_id="bio1", collection="chelsa", dt="2010-01-01T00:00:00Z", bbox=(-10.0, 45.0, 0.0, 50.0), **props):
    w, s, e, n = bbox
    return {
        "type": "Feature", "stac_version": "1.1.0",
        "stac_extensions": ["https://stac-extensions.github.io/file/v2.1.0/schema.json"],
        "id": item_id, "collection": collection,
        "geometry": {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]},
        "bbox": [w, s, e, n],
        "properties": {"datetime": dt, **props},
        "links": [],
        "assets": {"data": {"href": f"https://x/{item_id}.tif",
                            "type": "image/tiff; application=geotiff; profile=cloud-optimized",
                            "roles": ["data"], "file:size": 10, "file:checksum": "1220" + "00" * 32}},
    }


def make_collection(cid="chelsa", **kw):
    col = {
        "type": "Collection", "stac_version": "1.1.0", "stac_extensions": [], "id": cid,
        "description": "CHELSA", "license": "CC-BY-4.0",
        "extent": {"spatial": {"bbox": [[-10.0, 45.0, 0.0, 50.0]]},
                   "temporal": {"interval": [["2010-01-01T00:00:00Z", "2010-01-01T00:00:00Z"]]}},
        "links": [{"rel": "license", "href": "https://creativecommons.org/licenses/by/4.0/"}],
    }
    col.update(kw)
    return col


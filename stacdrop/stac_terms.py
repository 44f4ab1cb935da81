"""The STAC vocabulary stacdrop writes: the version, media types, extension schema URIs, link relations.

One home for these words, the way pystac keeps ``MediaType`` and ``RelType``: the processor stores a COG
with the media type the publisher writes into the item, and the static catalog and the STAC API sink agree
on the version and on which links are structural (they are rewritten on every write; any other link an
operator or a sidecar adds is kept).
"""

from __future__ import annotations

from enum import StrEnum

STAC_VERSION = "1.1.0"


class MediaType(StrEnum):
    COG = "image/tiff; application=geotiff; profile=cloud-optimized"
    GEOTIFF = "image/tiff; application=geotiff"
    JSON = "application/json"
    GEOJSON = "application/geo+json"
    PNG = "image/png"
    PARQUET = "application/vnd.apache.parquet"


class Extension(StrEnum):
    """The schema URIs of the STAC extensions stacdrop's items use."""

    PROJECTION = "https://stac-extensions.github.io/projection/v2.0.0/schema.json"
    RASTER = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
    FILE = "https://stac-extensions.github.io/file/v2.1.0/schema.json"


# The field prefix each extension owns: an item using "proj:" fields must list the projection schema.
EXTENSION_PREFIXES = {"proj:": Extension.PROJECTION, "raster:": Extension.RASTER, "file:": Extension.FILE}


class RelType(StrEnum):
    SELF = "self"
    ROOT = "root"
    PARENT = "parent"
    CHILD = "child"
    ITEM = "item"
    COLLECTION = "collection"
    ITEMS = "items"
    NEXT = "next"
    PREV = "prev"
    LICENSE = "license"


# Links stacdrop owns and rewrites; every other link is the author's and is kept as it is.
STRUCTURAL_RELS = frozenset({RelType.SELF, RelType.ROOT, RelType.PARENT, RelType.CHILD, RelType.ITEM,
                             RelType.COLLECTION})

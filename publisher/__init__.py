"""The publisher stage: RasterReady -> STAC item, CollectionUpdate -> STAC collection, into a Sink."""

from publisher.derive import DerivedItem, ItemMetadata, derive_item, derive_metadata
from publisher.errors import CatalogAuthError, CatalogMismatch, CatalogRejected, InvalidCollection
from publisher.footprint import footprint_wgs84
from publisher.handler import make_publish_batch_handler, make_publish_handler, open_sink
from publisher.sink import Sink
from publisher.stage import PublishResult, publish_collection, publish_raster
from publisher.static_catalog import StaticCatalog
from publisher.templates import KeyTemplate, compile_template
from publisher.unpublish import CogDeleter, delete_items_and_cogs, mark_unpublished
from publisher.validation import validate_collection, validate_item

__all__ = [
    "CatalogAuthError", "CatalogMismatch", "CatalogRejected", "CogDeleter", "DerivedItem", "InvalidCollection",
    "ItemMetadata", "KeyTemplate", "PublishResult", "Sink", "StaticCatalog",
    "compile_template", "delete_items_and_cogs", "derive_item", "derive_metadata", "footprint_wgs84",
    "make_publish_batch_handler", "make_publish_handler", "mark_unpublished", "open_sink", "publish_collection",
    "publish_raster", "validate_collection", "validate_item",
]

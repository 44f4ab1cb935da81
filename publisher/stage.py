"""The publisher stage's handlers: a RasterReady becomes an item, a CollectionUpdate a collection.

Plain functions over a Sink; the worker loop (bus, retries, ledger) calls them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from publisher.derive import STAC_VERSION, derive_item
from publisher.sink import Sink
from publisher.static_catalog import item_extent
from publisher.validation import InvalidCollection, validate_collection, validate_item
from stacdrop.config import Settings
from stacdrop.errors import UnknownCollection
from stacdrop.messages import CollectionUpdate, RasterReady

CREATED_DESCRIPTION = "Created by stacdrop"


@dataclass
class PublishResult:
    collection: str
    item_id: str
    action: str  # "created" | "replaced" | "skipped"
    item: dict[str, Any]


def minimal_collection(collection_id: str, item: dict[str, Any]) -> dict[str, Any]:
    """The collection made for ``create_if_missing``: valid, with the first item's extent."""
    return {
        "type": "Collection",
        "stac_version": STAC_VERSION,
        "stac_extensions": [],
        "id": collection_id,
        "description": CREATED_DESCRIPTION,
        "license": "other",
        "extent": item_extent(item),
        "links": [],
    }


def publish_raster(ready: RasterReady, settings: Settings, sink: Sink) -> PublishResult:
    """Derive, validate and store the item of a stored COG."""
    source = ready.source.key or ready.source.url
    col_settings = settings.collection(ready.collection)
    derived = derive_item(ready, col_settings)
    item = derived.item
    validate_item(item, source)
    collection = item["collection"]

    def create_collection() -> None:
        if not col_settings.create_if_missing:
            raise UnknownCollection(
                f"{source}: collection {collection!r} does not exist in the catalog. Drop a STAC collection "
                f"file at inbox/{collection}/collection.json, or set create_if_missing = true under "
                f"[collections.{collection}] (or [collection_defaults]) in the config"
            )
        col = minimal_collection(collection, item)
        validate_collection(col, f"{source} (collection {collection} created for it)")
        sink.upsert_collection(col)

    if not sink.has_collection(collection):
        create_collection()
    try:
        action = sink.put_item(item, col_settings.duplicate_policy)
    except UnknownCollection:
        # A sink may answer has_collection from a cache (the STAC API sink): the collection was deleted
        # since. Create it (when allowed) and write once more.
        if not col_settings.create_if_missing:
            raise
        create_collection()
        action = sink.put_item(item, col_settings.duplicate_policy)
    return PublishResult(collection=collection, item_id=item["id"], action=action, item=item)


def publish_collection(update: CollectionUpdate, sink: Sink) -> str:
    """Create or update a collection from the inbox's collection.json. Returns "created" or "updated"."""
    source = update.source.key or update.source.url
    try:
        doc = json.loads(update.text)
    except json.JSONDecodeError as exc:
        raise InvalidCollection(
            f"{source}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        ) from None
    if not isinstance(doc, dict):
        raise InvalidCollection(f"{source}: a collection must be a JSON object, got {type(doc).__name__}")
    if doc.get("id") is None:
        doc["id"] = update.collection
    elif doc["id"] != update.collection:
        raise InvalidCollection(
            f"{source}: the collection id {doc['id']!r} does not match its folder {update.collection!r}; "
            f"set \"id\": \"{update.collection}\" or move the file to inbox/{doc['id']}/collection.json"
        )
    if doc.get("type", "Collection") != "Collection":
        raise InvalidCollection(f"{source}: \"type\" must be \"Collection\", got {doc.get('type')!r}")
    doc["type"] = "Collection"
    doc["stac_version"] = STAC_VERSION  # stored and validated as STAC 1.1.0 (1.0.0 collections are compatible)
    doc.setdefault("links", [])
    existing = sink.get_collection(update.collection)
    check = {**{k: v for k, v in (existing or {}).items() if k != "links"}, **doc}
    validate_collection(check, source)
    return sink.upsert_collection(doc)

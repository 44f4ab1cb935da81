"""The publisher stage's handlers: a RasterReady becomes an item, a CollectionUpdate a collection.

Plain functions over a Sink; the worker loop (bus, retries, ledger) calls them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from publisher.derive import derive_item
from publisher.errors import InvalidCollection
from publisher.extents import item_extent
from publisher.sink import DuplicatePolicy, Sink
from publisher.validation import validate_collection, validate_item
from stacdrop.config import Collections
from stacdrop.errors import UnknownCollection
from stacdrop.messages import CollectionUpdate, RasterReady
from stacdrop.stac_terms import STAC_VERSION

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


@dataclass
class PreparedItem:
    """A derived and validated item, ready for ``Sink.put_item(s)``."""

    source: str
    item: dict[str, Any]
    policy: DuplicatePolicy
    create_if_missing: bool

    @property
    def collection(self) -> str:
        return self.item["collection"]

    def create_collection(self, sink: Sink) -> None:
        collection = self.collection
        if not self.create_if_missing:
            raise UnknownCollection(
                f"{self.source}: collection {collection!r} does not exist in the catalog. Drop a STAC collection "
                f"file at inbox/{collection}/collection.json, or set create_if_missing = true under "
                f"[collections.{collection}] (or [collection_defaults]) in the config"
            )
        col = minimal_collection(collection, self.item)
        validate_collection(col, f"{self.source} (collection {collection} created for it)")
        sink.upsert_collection(col)

    def ensure_collection(self, sink: Sink) -> None:
        if not sink.has_collection(self.collection):
            self.create_collection(sink)

    def put(self, sink: Sink) -> PublishResult:
        """Store the item alone (the collection must have been ensured)."""
        try:
            action = self.put_item(sink)
        except UnknownCollection:
            # A sink may answer has_collection from a cache (the STAC API sink): the collection was deleted
            # since. Create it (when allowed) and write once more.
            if not self.create_if_missing:
                raise
            self.create_collection(sink)
            action = self.put_item(sink)
        return self.result(action)

    def put_item(self, sink: Sink) -> str:
        return sink.put_item(self.item, self.policy)

    def result(self, action: str) -> PublishResult:
        return PublishResult(collection=self.collection, item_id=self.item["id"], action=action, item=self.item)


def prepare_raster(ready: RasterReady, collections: Collections) -> PreparedItem:
    """Derive and validate the item of a stored COG."""
    source = ready.source.key or ready.source.url
    col_settings = collections.get(ready.collection)
    item = derive_item(ready, col_settings).item
    validate_item(item, source)
    return PreparedItem(source=source, item=item, policy=col_settings.duplicate_policy,
                        create_if_missing=col_settings.create_if_missing)


def publish_raster(ready: RasterReady, collections: Collections, sink: Sink) -> PublishResult:
    """Derive, validate and store the item of a stored COG."""
    prepared = prepare_raster(ready, collections)
    prepared.ensure_collection(sink)
    return prepared.put(sink)


def put_prepared(prepared: list[PreparedItem], sink: Sink) -> list[PublishResult | Exception]:
    """Store many prepared items: one ``sink.put_items`` call per (collection, policy) group.

    One result per item, in order: its PublishResult, or its own error (a failed collection check fails
    the items of that collection only). An item whose collection vanished meanwhile is written again alone.
    """
    results: list[PublishResult | Exception | None] = [None] * len(prepared)
    groups: dict[tuple[str, str], list[int]] = {}
    seen: set[tuple[str, str]] = set()
    later: list[int] = []  # a second write of an item id in this batch: alone, in order, after the batch
    for i, p in enumerate(prepared):
        if (p.collection, p.item["id"]) in seen:
            later.append(i)
            continue
        seen.add((p.collection, p.item["id"]))
        groups.setdefault((p.collection, p.policy), []).append(i)
    ensured: dict[str, Exception | None] = {}
    for (collection, policy), indexes in groups.items():
        if collection not in ensured:
            try:
                prepared[indexes[0]].ensure_collection(sink)
                ensured[collection] = None
            except Exception as exc:  # noqa: BLE001 - the error of every item of this collection
                ensured[collection] = exc
        if ensured[collection] is not None:
            for i in indexes:
                results[i] = ensured[collection]
            continue
        try:
            outcomes = sink.put_items([prepared[i].item for i in indexes], policy)  # type: ignore[arg-type]
        except Exception as exc:  # noqa: BLE001 - a failure of the whole request is each item's error
            outcomes = None
            for i in indexes:
                results[i] = exc
        if outcomes is None:
            continue
        for i, outcome in zip(indexes, outcomes, strict=True):
            if outcome.ok:
                results[i] = prepared[i].result(outcome.result())
            elif isinstance(outcome.error, UnknownCollection):
                try:
                    results[i] = prepared[i].put(sink)
                except Exception as exc:  # noqa: BLE001
                    results[i] = exc
            else:
                assert outcome.error is not None
                results[i] = outcome.error
    for i in later:
        try:
            prepared[i].ensure_collection(sink)
            results[i] = prepared[i].put(sink)
        except Exception as exc:  # noqa: BLE001
            results[i] = exc
    return results  # type: ignore[return-value]


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

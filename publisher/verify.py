"""Read-back checks of the STAC API sink: is the item the catalog holds the one that was sent?

After a write the items are read back (one GET, or one ``POST /search`` by ids per batch) and their id,
collection, asset hrefs and ``file:checksum`` compared with what was sent; a difference is a
CatalogMismatch (transient: a concurrent writer in another process is the likely cause, and the runtime's
"newer version already published" check decides on the retry). Only these fields are compared: the server
may add links, normalise numbers or reorder properties without the item being another one.
"""

from __future__ import annotations

from typing import Any

from publisher.errors import CatalogMismatch
from publisher.sink import PutOutcome
from publisher.stac_http import StacHttp
from stacdrop.errors import CatalogUnavailable, StacdropError


def read_back_difference(sent: dict[str, Any], stored: dict[str, Any] | None) -> str | None:
    """What differs between the item sent and the one read back (id, collection, asset href and
    checksum), or None."""
    if stored is None:
        return "not found"
    for key in ("id", "collection"):
        if stored.get(key) != sent.get(key):
            return f"{key} is {stored.get(key)!r}, sent {sent.get(key)!r}"
    stored_assets = stored.get("assets") or {}
    for name, asset in (sent.get("assets") or {}).items():
        got = stored_assets.get(name)
        if got is None:
            return f"asset {name!r} is missing"
        for field in ("href", "file:checksum"):
            if field in asset and got.get(field) != asset[field]:
                return f"asset {name!r} {field} is {got.get(field)!r}, sent {asset[field]!r}"
    return None


def check_read_back(sent: dict[str, Any], stored: dict[str, Any] | None, display_url: str) -> None:
    """Raise CatalogMismatch when the item read back from ``display_url`` is not the one sent."""
    problem = read_back_difference(sent, stored)
    if problem:
        raise CatalogMismatch(f"item {sent.get('collection')}/{sent.get('id')}: read back from {display_url}: "
                              f"{problem}")


def verify_batch(http: StacHttp, cid: str, written: list[tuple[dict[str, Any], PutOutcome]]) -> None:
    """Read the written items of one collection back with one search; an item that differs (or the whole
    batch, when the read fails) gets an error outcome instead of its action."""
    try:
        stored = {f.get("id"): f for f in http.search(
            {"collections": [cid], "ids": [it["id"] for it, _ in written], "limit": len(written),
             # only what is compared: pgstac hydrates and serialises less (~4x faster than full items)
             "fields": {"include": ["id", "collection", "assets"],
                        "exclude": ["geometry", "bbox", "properties", "links"]}})}
    except StacdropError as exc:
        for _, o in written:
            o.action, o.error = None, CatalogUnavailable(f"published, but could not be read back: {exc}")
        return
    for item, outcome in written:
        problem = read_back_difference(item, stored.get(item["id"]))
        if problem:
            outcome.action, outcome.error = None, CatalogMismatch(
                f"item {cid}/{item['id']}: read back from {http.display_url}: {problem}")

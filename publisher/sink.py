"""Where published items and collections go: the interface every catalog backend implements.

Implementations: ``StaticCatalog`` (a static STAC catalog on disk). A STAC API sink (stac-fastapi
Transactions) comes later; the interface maps onto it directly (GET/POST/PUT/DELETE), and ``put_items``
is the hook for its bulk endpoint.

Errors: a backend that is unreachable raises a TransientError (CatalogUnavailable); ``put_item`` with
policy "error" on an existing item raises DuplicateItem (permanent). Items and collections are plain
STAC JSON dicts; backends add their own links.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Literal

DuplicatePolicy = Literal["replace", "skip", "error"]
POLICIES = ("replace", "skip", "error")


class Sink(ABC):
    @abstractmethod
    def has_collection(self, collection_id: str) -> bool:
        """True when the collection exists."""

    @abstractmethod
    def get_collection(self, collection_id: str) -> dict[str, Any] | None:
        """The stored collection (with its links), or None."""

    @abstractmethod
    def upsert_collection(self, col: dict[str, Any]) -> str:
        """Create or update a collection; returns "created" or "updated".

        An update merges the new document's fields over the stored ones and keeps the stored item links
        (and, for backends that keep extents, an extent that still covers the stored items).
        """

    @abstractmethod
    def get_item(self, collection_id: str, item_id: str) -> dict[str, Any] | None:
        """The stored item, or None."""

    @abstractmethod
    def put_item(self, item: dict[str, Any], policy: DuplicatePolicy = "replace") -> str:
        """Store an item in ``item["collection"]``; returns "created", "replaced" or "skipped".

        policy "replace" overwrites an existing item, "skip" leaves it alone, "error" raises DuplicateItem.
        The collection must exist (UnknownCollection otherwise).
        """

    @abstractmethod
    def delete_item(self, collection_id: str, item_id: str) -> bool:
        """Delete an item; False when it did not exist."""

    def put_items(self, items: list[dict[str, Any]], policy: DuplicatePolicy = "replace") -> list[str]:
        """Store several items; one result per item, in order. Backends may batch this."""
        return [self.put_item(item, policy) for item in items]

    def close(self) -> None:
        """Release connections or locks. The default has nothing to release."""

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

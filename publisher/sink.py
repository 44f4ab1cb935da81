"""Where published items and collections go: the interface every catalog backend implements.

Implementations: ``StaticCatalog`` (a static STAC catalog on disk) and ``StacApiSink`` (a STAC API with
the Transactions extension, e.g. stac-fastapi-pgstac; ``put_items`` uses its bulk endpoint).

Errors: a backend that is unreachable raises a TransientError (CatalogUnavailable); ``put_item`` with
policy "error" on an existing item raises DuplicateItem (permanent). Items and collections are plain
STAC JSON dicts; backends add their own links.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Literal

from stacdrop.errors import ConfigError, StacdropError

DuplicatePolicy = Literal["replace", "skip", "error"]
POLICIES = ("replace", "skip", "error")


def check_policy(policy: str) -> None:
    """Refuse a duplicate policy that is not one of POLICIES (a ConfigError)."""
    if policy not in POLICIES:
        raise ConfigError(f"duplicate_policy {policy!r} is not one of {', '.join(POLICIES)}")


@dataclass
class PutOutcome:
    """What happened to one item of a ``put_items`` batch: an action, or the error of that item alone."""

    item_id: str | None
    collection: str | None
    action: str | None = None  # "created" | "replaced" | "skipped"
    error: StacdropError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def result(self) -> str:
        """The action, or raise the item's error."""
        if self.error is not None:
            raise self.error
        assert self.action is not None
        return self.action


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

    def put_items(self, items: list[dict[str, Any]], policy: DuplicatePolicy = "replace") -> list[PutOutcome]:
        """Store several items; one outcome per item, in order. Backends may batch this.

        An item's permanent or transient StacdropError is its own outcome: it never fails its neighbours.
        Other exceptions (bugs, a broken disk) propagate.
        """
        out = []
        for item in items:
            outcome = PutOutcome(item.get("id"), item.get("collection"))
            try:
                outcome.action = self.put_item(item, policy)
            except StacdropError as exc:
                outcome.error = exc
            out.append(outcome)
        return out

    def close(self) -> None:  # noqa: B027 - an optional hook with a default, not an abstract method
        """Release connections or locks. The default has nothing to release."""

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

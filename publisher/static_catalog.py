"""A static STAC catalog on disk (a Sink).

Layout (all link hrefs relative, no self links: the catalog can be moved or served from any URL, and
pystac sets each object's self href from the file it reads)::

    <root>/catalog.json                       rel root, child -> ./<collection>/collection.json
    <root>/<collection>/collection.json       rel root, parent -> ../catalog.json, item -> ./<id>/<id>.json
    <root>/<collection>/<id>/<id>.json        rel root, parent, collection -> ../collection.json

Every write goes to a temporary file in the same directory, is fsynced, then ``os.replace``d over the
target: readers see the old or the new file, never half of one. Read-modify-write sequences (an item
plus its collection's links and extent, a collection merge, the root's child links) hold an exclusive
``fcntl.flock`` on ``<root>/.stacdrop.lock``, so several publisher processes (or threads) can share one
catalog.

Extents are updated incrementally from each item (no rescan). They only grow: replacing an item whose
datetime or footprint changed widens the extent to cover the new values but never shrinks it, and
deleting an item leaves it alone. A collection's first bbox / first interval are the ones maintained
(publisher/extents.py, shared with the STAC API sink).

Cost: collection.json lists every item link, so adding one item rewrites it (O(items)). Use
``put_items`` for batches (one collection write per batch) and the STAC API sink for very large
collections.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from publisher.extents import item_extent, union_extents
from publisher.sink import DuplicatePolicy, PutOutcome, Sink, check_policy
from stacdrop.errors import (
    DuplicateItem,
    InvalidItem,
    InvalidSidecar,
    PermanentError,
    StacdropError,
    UnknownCollection,
)
from stacdrop.sidecar import check_id
from stacdrop.stac_terms import STAC_VERSION, STRUCTURAL_RELS, MediaType, RelType

LOCK_FILE = ".stacdrop.lock"


class StaticCatalog(Sink):
    def __init__(
        self,
        root: str | os.PathLike[str],
        title: str = "stacdrop catalog",
        *,
        catalog_id: str = "stacdrop",
        description: str = "Rasters published by stacdrop",
    ) -> None:
        self.root = Path(root)
        self.title = title
        self.catalog_id = catalog_id
        self.description = description
        self._tlock = threading.RLock()
        self._depth = 0
        self.root.mkdir(parents=True, exist_ok=True)
        with self._locked():
            if not self.catalog_path.exists():
                self._write(self.catalog_path, self._new_root())

    # ----------------------------------------------------------------- paths and io
    @property
    def catalog_path(self) -> Path:
        return self.root / "catalog.json"

    def collection_path(self, collection_id: str) -> Path:
        return self.root / _safe(collection_id, "collection id") / "collection.json"

    def item_path(self, collection_id: str, item_id: str) -> Path:
        item_id = _safe(item_id, "item id")
        return self.root / _safe(collection_id, "collection id") / item_id / f"{item_id}.json"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with self._tlock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            with open(self.root / LOCK_FILE, "a+b") as fh:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
                self._depth = 1
                try:
                    yield
                finally:
                    self._depth = 0
                    fcntl.flock(fh.fileno(), fcntl.LOCK_UN)

    @staticmethod
    def _read(path: Path) -> dict[str, Any] | None:
        try:
            with open(path, encoding="utf-8") as fh:
                return json.load(fh)
        except FileNotFoundError:
            return None
        except json.JSONDecodeError as exc:
            raise PermanentError(f"{path}: the static catalog file is not valid JSON: {exc}") from None

    @staticmethod
    def _write(path: Path, doc: dict[str, Any]) -> None:
        """Atomic write: temp file in the same directory, fsync, os.replace."""
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _dumps(doc)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(fd, 0o644)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def _new_root(self) -> dict[str, Any]:
        return {
            "type": "Catalog",
            "stac_version": STAC_VERSION,
            "id": self.catalog_id,
            "title": self.title,
            "description": self.description,
            "links": [{"rel": RelType.ROOT.value, "href": "./catalog.json", "type": MediaType.JSON.value,
                       "title": self.title}],
        }

    # ----------------------------------------------------------------- collections
    def has_collection(self, collection_id: str) -> bool:
        return self.collection_path(collection_id).exists()

    def get_collection(self, collection_id: str) -> dict[str, Any] | None:
        return self._read(self.collection_path(collection_id))

    def upsert_collection(self, col: dict[str, Any]) -> str:
        cid = _safe(col.get("id"), "collection id")
        path = self.collection_path(cid)
        with self._locked():
            existing = self._read(path)
            new = copy.deepcopy(col)
            new["type"] = "Collection"
            new.setdefault("stac_version", STAC_VERSION)
            new.setdefault("stac_extensions", [])
            other_links = [link for link in new.get("links", []) if link.get("rel") not in STRUCTURAL_RELS]
            item_links: list[dict[str, Any]] = []
            if existing is not None:
                item_links = [link for link in existing.get("links", []) if link.get("rel") == RelType.ITEM]
                merged = {**existing, **new}
                if item_links and "extent" in existing:
                    # The stored extent covers the stored items: the new one may only widen it.
                    merged["extent"] = union_extents(new.get("extent") or existing["extent"], existing["extent"])
                new = merged
            new["links"] = (
                [
                    {"rel": RelType.ROOT.value, "href": "../catalog.json", "type": MediaType.JSON.value},
                    {"rel": RelType.PARENT.value, "href": "../catalog.json", "type": MediaType.JSON.value},
                ]
                + other_links
                + item_links
            )
            self._write(path, new)
            self._add_child(cid, new.get("title"))
        return "created" if existing is None else "updated"

    def _add_child(self, cid: str, title: Any) -> None:
        cat = self._read(self.catalog_path) or self._new_root()
        href = f"./{cid}/collection.json"
        links = cat.setdefault("links", [])
        for link in links:
            if link.get("rel") == RelType.CHILD and link.get("href") == href:
                if isinstance(title, str) and link.get("title") != title:
                    link["title"] = title
                    self._write(self.catalog_path, cat)
                return
        link = {"rel": RelType.CHILD.value, "href": href, "type": MediaType.JSON.value}
        if isinstance(title, str):
            link["title"] = title
        links.append(link)
        self._write(self.catalog_path, cat)

    # ----------------------------------------------------------------- items
    def get_item(self, collection_id: str, item_id: str) -> dict[str, Any] | None:
        return self._read(self.item_path(collection_id, item_id))

    def put_item(self, item: dict[str, Any], policy: DuplicatePolicy = "replace") -> str:
        return self.put_items([item], policy)[0].result()

    def put_items(self, items: list[dict[str, Any]], policy: DuplicatePolicy = "replace") -> list[PutOutcome]:
        """Store items; each collection.json is read and written once per call. One item's error (unknown
        collection, duplicate, bad id) is that item's outcome; the others are stored."""
        check_policy(policy)
        results: list[PutOutcome] = []
        with self._locked():
            cols: dict[str, dict[str, Any] | None] = {}
            changed: set[str] = set()
            try:
                for item in items:
                    outcome = PutOutcome(item.get("id"), item.get("collection"))
                    results.append(outcome)
                    try:
                        outcome.action = self._put_one(item, policy, cols, changed)
                    except StacdropError as exc:
                        outcome.error = exc
            finally:
                for cid in changed:
                    col = cols[cid]
                    assert col is not None
                    self._write(self.collection_path(cid), col)
        return results

    def _put_one(self, item: dict[str, Any], policy: DuplicatePolicy, cols: dict[str, dict[str, Any] | None],
                 changed: set[str]) -> str:
        cid = _safe(item.get("collection"), "item collection")
        iid = _safe(item.get("id"), "item id")
        if cid not in cols:
            cols[cid] = self._read(self.collection_path(cid))
        col = cols[cid]
        if col is None:
            raise UnknownCollection(f"item {iid}: collection {cid!r} does not exist in the static catalog {self.root}")
        path = self.item_path(cid, iid)
        stored = self._read(path)
        if stored is not None and policy == "error":
            raise DuplicateItem(
                f"item {iid} already exists in collection {cid} and the duplicate policy is 'error' "
                "(set duplicate_policy = 'replace' or 'skip', or delete the item first)"
            )
        if stored is not None and policy == "skip":
            action = "skipped"
        else:
            action = "created" if stored is None else "replaced"
            stored = self._item_with_links(item)
            self._write(path, stored)
        # Also on skip: repairs a link or extent lost to a crash between the two writes.
        if _register_item(col, stored, iid):
            changed.add(cid)
        return action

    def _item_with_links(self, item: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(item)
        keep = [link for link in out.get("links", []) if link.get("rel") not in STRUCTURAL_RELS]
        out["links"] = [
            {"rel": RelType.ROOT.value, "href": "../../catalog.json", "type": MediaType.JSON.value},
            {"rel": RelType.PARENT.value, "href": "../collection.json", "type": MediaType.JSON.value},
            {"rel": RelType.COLLECTION.value, "href": "../collection.json", "type": MediaType.JSON.value},
        ] + keep
        return out

    def delete_item(self, collection_id: str, item_id: str) -> bool:
        path = self.item_path(collection_id, item_id)
        with self._locked():
            existed = path.exists()
            if existed:
                path.unlink()
                try:
                    path.parent.rmdir()
                except OSError:
                    shutil.rmtree(path.parent, ignore_errors=True)
            col = self._read(self.collection_path(collection_id))
            if col is not None:
                href = f"./{item_id}/{item_id}.json"
                links = col.get("links", [])
                kept = [link for link in links if not (link.get("rel") == RelType.ITEM and link.get("href") == href)]
                if len(kept) != len(links):
                    col["links"] = kept
                    self._write(self.collection_path(collection_id), col)
        return existed


# --------------------------------------------------------------------- helpers
def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def _dumps(doc: dict[str, Any]) -> str:
    """JSON text with one top-level field per line and one element per line in lists of objects (links).

    Readable and diff-friendly like ``indent=2`` but made by the C encoder (``indent`` makes json use its
    pure-Python encoder: the collection.json of a large collection cost milliseconds per item).
    """
    lines = []
    for key, value in doc.items():
        name = _compact(str(key))
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            inner = ",\n    ".join(_compact(v) for v in value)
            lines.append(f"  {name}: [\n    {inner}\n  ]")
        else:
            lines.append(f"  {name}: {_compact(value)}")
    return "{\n" + ",\n".join(lines) + "\n}\n" if lines else "{}\n"


def _safe(value: Any, what: str) -> str:
    """Ids become path segments: refuse anything check_id refuses (no '/', '..', ...)."""
    try:
        return check_id(value, what, "static catalog")
    except InvalidSidecar as exc:
        raise InvalidItem(str(exc)) from None


def _register_item(col: dict[str, Any], item: dict[str, Any], item_id: str) -> bool:
    """Add the item link and widen the extent; True when the collection changed."""
    changed = False
    href = f"./{item_id}/{item_id}.json"
    links = col.setdefault("links", [])
    if not any(link.get("rel") == RelType.ITEM and link.get("href") == href for link in links):
        links.append({"rel": RelType.ITEM.value, "href": href, "type": MediaType.GEOJSON.value})
        changed = True
    extent = col.get("extent") or {}
    new_extent = union_extents(extent, item_extent(item))
    if new_extent != extent:
        col["extent"] = new_extent
        changed = True
    return changed

"""A STAC API with the Transactions extension as the Sink (written against stac-fastapi-pgstac 7).

The HTTP plumbing (session, auth header, retry on a fresh connection, status -> error) is in
publisher/stac_http.py, the read-back checks in publisher/verify.py, the extent maths (shared with the
static catalog) in publisher/extents.py.

Writes
    Collections: POST, on 409 read the stored one, merge (the stored extent, which covers the stored
    items, may only grow) and PUT. Items: POST; on 409 the duplicate policy decides: replace -> PUT,
    skip -> keep, error -> DuplicateItem. ``put_items`` sends one ``bulk_items`` request per collection and
    chunk (``method=upsert`` for replace, ``insert`` of the missing ids otherwise; two chunks in flight);
    a rejected batch falls back to single writes so that the one bad item gets its own error and its
    neighbours land. Writes of the same item id are serialised inside the process (a lock per id,
    publisher/locks.py): concurrent PUTs of one item race in pgstac (spurious 404s).

Errors
    Those of publisher/stac_http.py, and: a failed write to a collection that ``GET /collections/{id}``
    says is missing (pgstac answers such a POST with a bare 500) -> UnknownCollection.

Read-back
    After a write the items are read back and compared with what was sent (publisher/verify.py).

Extents
    Kept current as items arrive: the last known stored extent of each collection is cached; only when an
    item falls outside it is the collection read, widened and PUT under a lock shared by all publishers
    (``shared_lock``: the ledger's, a PostgreSQL advisory lock across hosts), so two publishers widening it
    at once cannot lose each other's update. Extents only grow, as in the static catalog. A failed widening is logged
    and tried again with the next item (the cache is not updated).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import requests
import structlog

from publisher.extents import item_extent, union_extents
from publisher.locks import KeyedLocks
from publisher.sink import DuplicatePolicy, PutOutcome, Sink, check_policy
from publisher.stac_http import StacHttp, quote_segment, server_message
from publisher.verify import check_read_back, read_back_difference, verify_batch
from stacdrop.config import StacApiSettings
from stacdrop.errors import (
    CatalogUnavailable,
    ConfigError,
    DuplicateItem,
    InvalidItem,
    StacdropError,
    UnknownCollection,
)
from stacdrop.redact import redact_url
from stacdrop.stac_terms import STAC_VERSION, STRUCTURAL_RELS, RelType

log = structlog.get_logger("stacdrop.publisher.stac_api")

# Links the server makes itself; stored documents come back with them and they are not sent again.
SERVER_RELS = STRUCTURAL_RELS | {RelType.ITEMS, "queryables", "aggregate", "aggregations"}

class StacApiSink(Sink):
    def __init__(self, url: str, stac_api: StacApiSettings | None = None, *, timeout: float | None = None,
                 batch_size: int | None = None, verify: bool | None = None, concurrency: int = 2,
                 shared_lock: Callable[[str], AbstractContextManager[None]] | None = None) -> None:
        settings = stac_api or StacApiSettings()
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"stac {redact_url(url)!r}: a STAC API URL starts with http:// or https://")
        self.timeout = timeout if timeout is not None else settings.timeout
        self._http = StacHttp(url, settings, timeout=self.timeout)
        self.base = self._http.base
        self.display_url = self._http.display_url
        self.batch_size = batch_size if batch_size is not None else settings.batch_size
        self.verify = settings.verify if verify is None else verify
        self.concurrency = max(1, concurrency)
        self._item_locks = KeyedLocks()
        self._collection_locks = KeyedLocks()
        self._extents: dict[str, dict[str, Any]] = {}  # last known stored extent (also: "exists")
        # Other publisher processes write to the same catalog: a lock they share (Ledger.lock) serialises
        # extent read-modify-writes and single-item writes across them; the keyed locks do it between threads.
        self._shared = shared_lock or (lambda _name: nullcontext())

    def _error(self, resp: requests.Response, what: str, *, collection: str | None = None) -> StacdropError:
        """The error for an unexpected response to a request about ``what``: UnknownCollection when a
        request about ``collection`` failed because the collection is gone, else the status's error."""
        status = resp.status_code
        if collection is not None and (status >= 500 or status == 404) and self._collection_missing(collection):
            return UnknownCollection(f"{what}: collection {collection!r} does not exist in the STAC API "
                                     f"{self.display_url}")
        return self._http.error(resp, what)

    def _collection_missing(self, collection: str) -> bool:
        try:
            resp = self._http.request("GET", f"collections/{quote_segment(collection)}")
        except StacdropError:
            return False
        if resp.status_code == 404:
            self._extents.pop(collection, None)
            return True
        return False

    # ------------------------------------------------------------------ collections
    def has_collection(self, collection_id: str) -> bool:
        if collection_id in self._extents:
            return True  # cached; a write to a deleted collection still reports UnknownCollection
        return self.get_collection(collection_id) is not None

    def get_collection(self, collection_id: str) -> dict[str, Any] | None:
        resp = self._http.request("GET", f"collections/{quote_segment(collection_id)}")
        if resp.status_code == 404:
            self._extents.pop(collection_id, None)
            return None
        if not resp.ok:
            raise self._error(resp, f"collection {collection_id}")
        doc = resp.json()
        self._extents[collection_id] = copy.deepcopy(doc.get("extent") or {})
        return doc

    def _has_items(self, collection_id: str) -> bool:
        resp = self._http.request("GET", f"collections/{quote_segment(collection_id)}/items", params={"limit": 1})
        if not resp.ok:
            raise self._error(resp, f"items of collection {collection_id}")
        return bool(resp.json().get("features"))

    def upsert_collection(self, col: dict[str, Any]) -> str:
        cid = col.get("id")
        if not isinstance(cid, str) or not cid:
            raise InvalidItem(f"collection id {cid!r}: must be a non-empty string")
        new = _without_server_links(col)
        new["type"] = "Collection"
        new.setdefault("stac_version", STAC_VERSION)
        new.setdefault("stac_extensions", [])
        with self._collection_locks.hold([cid]):
            resp = self._http.request("POST", "collections", json=new, write=True)
            if resp.status_code in (200, 201):
                self._extents[cid] = copy.deepcopy(new.get("extent") or {})
                return "created"
            if resp.status_code != 409:
                raise self._error(resp, f"collection {cid}")
            existing = self.get_collection(cid) or {}
            merged = {**_without_server_links(existing), **new}
            if existing.get("extent") and self._has_items(cid):
                # The stored extent covers the stored items: the new one may only widen it.
                merged["extent"] = union_extents(new.get("extent") or existing["extent"], existing["extent"])
            resp = self._http.request("PUT", f"collections/{quote_segment(cid)}", json=merged, write=True)
            if not resp.ok:
                raise self._error(resp, f"collection {cid}")
            self._extents[cid] = copy.deepcopy(merged.get("extent") or {})
            return "updated"

    # ------------------------------------------------------------------ items
    def get_item(self, collection_id: str, item_id: str) -> dict[str, Any] | None:
        resp = self._http.request("GET", _item_path(collection_id, item_id))
        if resp.status_code == 404:
            return None
        if not resp.ok:
            raise self._error(resp, f"item {collection_id}/{item_id}")
        return resp.json()

    def delete_item(self, collection_id: str, item_id: str) -> bool:
        with self._item_locks.hold([(collection_id, item_id)]):
            resp = self._http.request("DELETE", _item_path(collection_id, item_id), write=True)
        if resp.status_code == 404:
            return False
        if not resp.ok:
            raise self._error(resp, f"item {collection_id}/{item_id}")
        return True

    def put_item(self, item: dict[str, Any], policy: DuplicatePolicy = "replace") -> str:
        check_policy(policy)
        cid, iid = _ids(item)
        with self._item_locks.hold([(cid, iid)]), self._shared(f"stac-item:{cid}/{iid}"):
            action = self._write_one(item, policy)
            if action != "skipped" and self.verify:
                check_read_back(item, self.get_item(cid, iid), self.display_url)
        if action != "skipped":
            self._grow_extent(cid, [item])
        return action

    def _write_one(self, item: dict[str, Any], policy: DuplicatePolicy) -> str:
        """POST, then what the policy says on 409. The caller holds the item's lock."""
        cid, iid = _ids(item)
        what = f"item {cid}/{iid}"
        items_path = f"collections/{quote_segment(cid)}/items"
        resp = self._http.request("POST", items_path, json=item, write=True)
        for _ in range(3):
            if resp.status_code in (200, 201):
                return "created"
            if resp.status_code != 409:
                raise self._error(resp, what, collection=cid)
            if policy == "skip":
                return "skipped"
            if policy == "error":
                if getattr(resp, "stacdrop_retried", False) and not read_back_difference(item, self.get_item(cid, iid)):
                    return "created"  # our own first POST landed before the connection dropped
                raise DuplicateItem(
                    f"{what} already exists in the STAC API and the duplicate policy is 'error' "
                    "(set duplicate_policy = 'replace' or 'skip', or unpublish the item first)"
                )
            resp = self._http.request("PUT", f"{items_path}/{quote_segment(iid)}", json=item, write=True)
            if resp.ok:
                return "replaced"
            if resp.status_code != 404:
                raise self._error(resp, what, collection=cid)
            # Deleted in between (or pgstac's spurious 404 of racing PUTs): create it again.
            resp = self._http.request("POST", items_path, json=item, write=True)
        raise CatalogUnavailable(f"{what}: the STAC API kept answering 409 to POST and 404 to PUT")

    def put_items(self, items: list[dict[str, Any]], policy: DuplicatePolicy = "replace") -> list[PutOutcome]:
        """One bulk request per collection and chunk; one outcome per item, in order."""
        check_policy(policy)
        outcomes = [PutOutcome(it.get("id") if isinstance(it, dict) else None,
                               it.get("collection") if isinstance(it, dict) else None) for it in items]
        groups: dict[str, list[int]] = {}
        for n, item in enumerate(items):
            try:
                cid, _ = _ids(item)
            except StacdropError as exc:
                outcomes[n].error = exc
                continue
            groups.setdefault(cid, []).append(n)
        chunks = [(cid, idxs[start:start + self.batch_size]) for cid, idxs in groups.items()
                  for start in range(0, len(idxs), self.batch_size)]

        def run(chunk: tuple[str, list[int]]) -> None:
            cid, idx = chunk
            self._put_chunk(cid, [items[n] for n in idx], [outcomes[n] for n in idx], policy)

        if len(chunks) > 1 and self.concurrency > 1:
            # Chunks in flight together: one chunk's read-back overlaps another's bulk write.
            with ThreadPoolExecutor(min(self.concurrency, len(chunks)), thread_name_prefix="stac-bulk") as pool:
                list(pool.map(run, chunks))
        else:
            for chunk in chunks:
                run(chunk)
        return outcomes

    def _put_chunk(self, cid: str, items: list[dict[str, Any]], outcomes: list[PutOutcome],
                   policy: DuplicatePolicy) -> None:
        ids = [it["id"] for it in items]
        with self._item_locks.hold((cid, iid) for iid in ids):
            if len(set(ids)) != len(ids):  # the bulk body is keyed by id: keep each write, in order
                self._singles(items, outcomes, policy)
            else:
                self._bulk(cid, items, outcomes, policy)
            written = [(it, o) for it, o in zip(items, outcomes) if o.ok and o.action != "skipped"]
            if written and self.verify:
                verify_batch(self._http, cid, written)
        landed = [it for it, o in zip(items, outcomes) if o.ok and o.action != "skipped"]
        if landed:
            self._grow_extent(cid, landed)

    def _bulk(self, cid: str, items: list[dict[str, Any]], outcomes: list[PutOutcome],
              policy: DuplicatePolicy) -> None:
        try:
            existing = self._existing_ids(cid, [it["id"] for it in items])
        except StacdropError as exc:
            for o in outcomes:
                o.error = exc
            return
        send: list[tuple[dict[str, Any], PutOutcome]] = []
        for item, outcome in zip(items, outcomes):
            if item["id"] in existing and policy == "skip":
                outcome.action = "skipped"
            elif item["id"] in existing and policy == "error":
                outcome.error = DuplicateItem(
                    f"item {cid}/{item['id']} already exists in the STAC API and the duplicate policy is 'error' "
                    "(set duplicate_policy = 'replace' or 'skip', or unpublish the item first)")
            else:
                send.append((item, outcome))
        if not send:
            return
        body = {"items": {it["id"]: it for it, _ in send}, "method": "upsert" if policy == "replace" else "insert"}
        try:
            resp = self._http.request("POST", f"collections/{quote_segment(cid)}/bulk_items", json=body, write=True)
        except StacdropError as exc:
            for _, o in send:
                o.error = exc
            return
        if resp.ok:
            failed = _bulk_errors(resp)
            retry = []
            for item, outcome in send:
                if item["id"] in failed:
                    retry.append((item, outcome))
                else:
                    outcome.action = "replaced" if item["id"] in existing else "created"
            if retry:
                log.info("stac_bulk_partial", collection=cid, rejected=len(retry), of=len(send))
                self._singles([it for it, _ in retry], [o for _, o in retry], policy)
            return
        if resp.status_code in (401, 403) or (resp.status_code >= 500 and self._collection_missing(cid)):
            error = self._error(resp, f"{len(send)} items of collection {cid}", collection=cid)
            for _, o in send:
                o.error = error
            return
        # Rejected batch (one bad item, a race with another writer, a 500): find the bad one(s) by writing
        # each item alone.
        log.info("stac_bulk_rejected", collection=cid, status=resp.status_code, items=len(send),
                 reason=server_message(resp, 200))
        self._singles([it for it, _ in send], [o for _, o in send], policy)

    def _singles(self, items: list[dict[str, Any]], outcomes: list[PutOutcome], policy: DuplicatePolicy) -> None:
        """Write each item alone; stop early (the rest transient too) when the API itself is down."""
        successes = transient = 0
        for n, (item, outcome) in enumerate(zip(items, outcomes)):
            try:
                outcome.action = self._write_one(item, policy)
                successes += 1
            except StacdropError as exc:
                outcome.error = exc
                transient = transient + 1 if exc.transient else 0
                if transient >= 3 and not successes:
                    for rest in outcomes[n + 1:]:
                        rest.error = CatalogUnavailable(f"not sent: the STAC API {self.display_url} failed "
                                                        f"{transient} writes in a row ({exc})")
                    return

    def _existing_ids(self, cid: str, ids: list[str]) -> set[str]:
        body = {"collections": [cid], "ids": ids, "limit": len(ids),
                "fields": {"include": ["id"], "exclude": ["geometry", "bbox", "assets", "properties", "links"]}}
        return {str(f["id"]) for f in self._http.search(body) if f.get("id")}

    # ------------------------------------------------------------------ extents
    def _grow_extent(self, cid: str, items: list[dict[str, Any]]) -> None:
        add: dict[str, Any] = {}
        for item in items:
            try:
                add = union_extents(add, item_extent(item)) if add else item_extent(item)
            except (KeyError, TypeError, ValueError):
                continue
        if not add:
            return
        with self._collection_locks.hold([cid]):
            cached = self._extents.get(cid)
            if cached and union_extents(cached, add) == cached:
                return
            with self._shared(f"stac-extent:{cid}"):
                self._widen_extent(cid, add)

    def _widen_extent(self, cid: str, add: dict[str, Any]) -> None:
        """Read, widen and PUT the collection's extent; the caller holds the collection's locks. The loop
        re-reads after a PUT in case a writer that does not take our lock changed it in between."""
        try:
            for _ in range(3):
                col = self.get_collection(cid)
                if col is None:
                    return
                stored = col.get("extent") or {}
                grown = union_extents(stored, add)
                if grown == stored:
                    return  # get_collection cached it
                col = _without_server_links(col)
                col["extent"] = grown
                resp = self._http.request("PUT", f"collections/{quote_segment(cid)}", json=col, write=True)
                if not resp.ok:
                    raise self._error(resp, f"collection {cid} (extent)")
                self._extents.pop(cid, None)
            log.warning("stac_extent_contended", collection=cid)
        except StacdropError as exc:
            self._extents.pop(cid, None)
            log.warning("stac_extent_not_widened", collection=cid, error=str(exc))

    def close(self) -> None:
        self._http.close()


# ---------------------------------------------------------------------- helpers
def _item_path(collection_id: str, item_id: str) -> str:
    return f"collections/{quote_segment(collection_id)}/items/{quote_segment(item_id)}"


def _ids(item: Any) -> tuple[str, str]:
    if not isinstance(item, dict):
        raise InvalidItem(f"an item must be a JSON object, got {type(item).__name__}")
    cid, iid = item.get("collection"), item.get("id")
    if not isinstance(cid, str) or not cid:
        raise InvalidItem(f"item {iid!r}: no collection")
    if not isinstance(iid, str) or not iid:
        raise InvalidItem(f"an item of collection {cid} has no id")
    return cid, iid


def _without_server_links(doc: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["links"] = [link for link in out.get("links", []) if link.get("rel") not in SERVER_RELS]
    return out


def _bulk_errors(resp: requests.Response) -> set[str]:
    try:
        body = resp.json()
    except ValueError:
        return set()
    errors = body.get("errors") if isinstance(body, dict) else None
    return {str(e.get("id")) for e in errors or [] if isinstance(e, dict)}

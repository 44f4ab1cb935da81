"""A STAC API with the Transactions extension as the Sink (written against stac-fastapi-pgstac 7).

Requests
    One ``requests.Session`` (keep-alive). stac-fastapi-pgstac drops the keep-alive connection after any
    500, so after a 5xx the pooled connections are discarded, and a request that fails with a connection
    error (reset, refused) is sent once more on a fresh connection before it counts as an outage. The
    base URL may carry a path prefix (``https://host/stac``): every path is joined below it.

Auth
    ``stac_token`` goes in ``stac_auth_header`` (``Authorization: Bearer <token>`` by default) on write
    requests only (POST/PUT/DELETE of collections and items; ``POST /search`` is a read). The token never
    appears in a log line or an error message.

Writes
    Collections: POST, on 409 read the stored one, merge (the stored extent, which covers the stored
    items, may only grow) and PUT. Items: POST; on 409 the duplicate policy decides: replace -> PUT,
    skip -> keep, error -> DuplicateItem. ``put_items`` sends one ``bulk_items`` request per collection and
    chunk (``method=upsert`` for replace, ``insert`` of the missing ids otherwise; two chunks in flight);
    a rejected batch falls back to single writes so that the one bad item gets its own error and its
    neighbours land. Writes of
    the same item id are serialised inside the process (a lock per id): concurrent PUTs of one item race
    in pgstac (spurious 404s).

Errors
    5xx, connection errors and timeouts -> CatalogUnavailable (transient); 400/422 -> InvalidItem with the
    server's message; 401/403 -> a permanent ``catalog_auth`` error; a failed write to a collection that
    ``GET /collections/{id}`` says is missing (pgstac answers such a POST with a bare 500) ->
    UnknownCollection.

Read-back
    After a write the items are read back (one GET, or one ``POST /search`` by ids per batch) and their
    id, collection, asset hrefs and ``file:checksum`` compared with what was sent; a difference is a
    CatalogMismatch (transient: a concurrent writer in another process is the likely cause, and the
    runtime's "newer version already published" check decides on the retry).

Extents
    Kept current as items arrive: the last known stored extent of each collection is cached; only when an
    item falls outside it is the collection read, widened and PUT under a lock shared by all publishers
    (``shared_lock``: the ledger's, a PostgreSQL advisory lock across hosts), so two publishers widening it
    at once cannot lose each other's update. Extents only grow, as in the static catalog. A failed widening is logged
    and tried again with the next item (the cache is not updated).
"""

from __future__ import annotations

import copy
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import requests
import structlog

from publisher.sink import POLICIES, DuplicatePolicy, PutOutcome, Sink
from publisher.static_catalog import STRUCTURAL_RELS, _union_extents, item_extent
from stacdrop.config import Settings
from stacdrop.errors import (
    ErrorClass,    CatalogUnavailable,
    ConfigError,
    DuplicateItem,
    InvalidItem,
    PermanentError,
    StacdropError,
    TransientError,
    UnknownCollection,
)
from stacdrop.redact import redact_url

log = structlog.get_logger("stacdrop.publisher.stac_api")

SERVER_RELS = STRUCTURAL_RELS | {"items", "queryables", "aggregate", "aggregations"}


class CatalogMismatch(TransientError):
    """The item read back from the STAC API is not the one sent."""

    error_class = ErrorClass.CATALOG_MISMATCH


class CatalogAuthError(PermanentError):
    error_class = ErrorClass.CATALOG_AUTH


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


class _KeyedLocks:
    """One lock per key, created on demand and dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._locks: dict[Any, list[Any]] = {}  # key -> [lock, users]

    @contextmanager
    def hold(self, keys: Iterable[Any]) -> Iterator[None]:
        ordered = sorted(set(keys))  # one global order: no deadlock between overlapping batches
        entries = []
        with self._mutex:
            for key in ordered:
                entry = self._locks.setdefault(key, [threading.Lock(), 0])
                entry[1] += 1
                entries.append((key, entry))
        acquired = []
        try:
            for _, entry in entries:
                entry[0].acquire()
                acquired.append(entry)
            yield
        finally:
            for entry in reversed(acquired):
                entry[0].release()
            with self._mutex:
                for key, entry in entries:
                    entry[1] -= 1
                    if entry[1] == 0:
                        self._locks.pop(key, None)


def server_message(resp: requests.Response, limit: int = 800) -> str:
    """The server's own explanation of an error response, short."""
    try:
        body = resp.json()
    except ValueError:
        text = (resp.text or "").strip()
        return (text or resp.reason or "")[:limit]
    if isinstance(body, dict):
        detail = body.get("detail")
        if isinstance(detail, list):  # pydantic errors
            parts = []
            for err in detail[:5]:
                if isinstance(err, dict):
                    loc = ".".join(str(p) for p in err.get("loc", []) if p not in ("body",))
                    parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
                else:
                    parts.append(str(err))
            return "; ".join(parts)[:limit]
        if detail:
            return str(detail)[:limit]
        text = " ".join(str(body[k]) for k in ("code", "description") if body.get(k))
        return (text or str(body))[:limit]
    return str(body)[:limit]


class StacApiSink(Sink):
    def __init__(self, url: str, settings: Settings | None = None, *, timeout: float | None = None,
                 batch_size: int | None = None, verify: bool | None = None, concurrency: int = 2,
                 shared_lock: Callable[[str], AbstractContextManager[None]] | None = None) -> None:
        settings = settings or Settings()
        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"stac {redact_url(url)!r}: a STAC API URL starts with http:// or https://")
        self.base = url.rstrip("/") + "/"
        self.display_url = redact_url(url)
        self.timeout = timeout if timeout is not None else settings.stac_timeout
        self.batch_size = batch_size if batch_size is not None else settings.stac_batch_size
        self.verify = settings.stac_verify if verify is None else verify
        self.concurrency = max(1, concurrency)
        self._auth: dict[str, str] = {}
        if settings.stac_token is not None and settings.stac_token.get_secret_value():
            token = settings.stac_token.get_secret_value().strip()
            header = settings.stac_auth_header
            if header.lower() == "authorization" and " " not in token:
                token = f"Bearer {token}"
            self._auth = {header: token}
        self._session = requests.Session()
        self._session.headers["Accept"] = "application/json"
        self._item_locks = _KeyedLocks()
        self._collection_locks = _KeyedLocks()
        self._extents: dict[str, dict[str, Any]] = {}  # last known stored extent (also: "exists")
        # Other publisher processes write to the same catalog: a lock they share (Ledger.lock) serialises
        # extent read-modify-writes and single-item writes across them; the keyed locks do it between threads.
        self._shared = shared_lock or (lambda _name: nullcontext())

    # ------------------------------------------------------------------ http
    def _reset_connections(self) -> None:
        """Discard pooled connections: the next request opens a fresh one."""
        for adapter in self._session.adapters.values():
            adapter.close()

    def _request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                 write: bool = False) -> requests.Response:
        url = self.base + path.lstrip("/")
        headers = dict(self._auth) if write else {}
        for attempt in (1, 2):
            try:
                resp = self._session.request(method, url, json=json, params=params, headers=headers,
                                             timeout=self.timeout)
            except requests.exceptions.Timeout:
                self._reset_connections()
                raise CatalogUnavailable(
                    f"STAC API {self.display_url}: {method} /{path} timed out after {self.timeout:g} s"
                ) from None
            except requests.exceptions.ConnectionError as exc:
                self._reset_connections()
                if attempt == 1:
                    continue  # a reset keep-alive connection (after a 500) or a restart: once more, fresh
                raise CatalogUnavailable(
                    f"STAC API {self.display_url}: {method} /{path} failed: {_reason(exc)}"
                ) from None
            if resp.status_code >= 500:
                self._reset_connections()  # the server drops keep-alive connections after a 500
            resp.stacdrop_retried = attempt == 2  # type: ignore[attr-defined]
            return resp
        raise AssertionError("unreachable")

    def _error(self, resp: requests.Response, what: str, *, collection: str | None = None) -> StacdropError:
        """The error for an unexpected response to a request about ``what``."""
        status = resp.status_code
        method = resp.request.method if resp.request is not None else "?"
        msg = server_message(resp)
        where = f"STAC API {self.display_url}: {method} {what}"
        if collection is not None and (status >= 500 or status == 404) and self._collection_missing(collection):
            return UnknownCollection(f"{what}: collection {collection!r} does not exist in the STAC API "
                                     f"{self.display_url}")
        if status in (400, 422):
            return InvalidItem(f"{what}: the STAC API rejected it ({status}): {msg}")
        if status in (401, 403):
            return CatalogAuthError(f"{where}: {status} {msg} (check stac_token / AUTHORIZATION_TOKEN_STAC and "
                                    "stac_auth_header)")
        if status >= 500 or status in (404, 408, 425, 429):
            return CatalogUnavailable(f"{where}: {status} {msg}")
        return PermanentError(f"{where}: unexpected {status} {msg}", error_class=ErrorClass.CATALOG_REJECTED)

    def _collection_missing(self, collection: str) -> bool:
        try:
            resp = self._request("GET", f"collections/{_q(collection)}")
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
        resp = self._request("GET", f"collections/{_q(collection_id)}")
        if resp.status_code == 404:
            self._extents.pop(collection_id, None)
            return None
        if not resp.ok:
            raise self._error(resp, f"collection {collection_id}")
        doc = resp.json()
        self._extents[collection_id] = copy.deepcopy(doc.get("extent") or {})
        return doc

    def _has_items(self, collection_id: str) -> bool:
        resp = self._request("GET", f"collections/{_q(collection_id)}/items", params={"limit": 1})
        if not resp.ok:
            raise self._error(resp, f"items of collection {collection_id}")
        return bool(resp.json().get("features"))

    def upsert_collection(self, col: dict[str, Any]) -> str:
        cid = col.get("id")
        if not isinstance(cid, str) or not cid:
            raise InvalidItem(f"collection id {cid!r}: must be a non-empty string")
        new = _without_server_links(col)
        new["type"] = "Collection"
        new.setdefault("stac_version", "1.1.0")
        new.setdefault("stac_extensions", [])
        with self._collection_locks.hold([cid]):
            resp = self._request("POST", "collections", json=new, write=True)
            if resp.status_code in (200, 201):
                self._extents[cid] = copy.deepcopy(new.get("extent") or {})
                return "created"
            if resp.status_code != 409:
                raise self._error(resp, f"collection {cid}")
            existing = self.get_collection(cid) or {}
            merged = {**_without_server_links(existing), **new}
            if existing.get("extent") and self._has_items(cid):
                # The stored extent covers the stored items: the new one may only widen it.
                merged["extent"] = _union_extents(new.get("extent") or existing["extent"], existing["extent"])
            resp = self._request("PUT", f"collections/{_q(cid)}", json=merged, write=True)
            if not resp.ok:
                raise self._error(resp, f"collection {cid}")
            self._extents[cid] = copy.deepcopy(merged.get("extent") or {})
            return "updated"

    # ------------------------------------------------------------------ items
    def get_item(self, collection_id: str, item_id: str) -> dict[str, Any] | None:
        resp = self._request("GET", f"collections/{_q(collection_id)}/items/{_q(item_id)}")
        if resp.status_code == 404:
            return None
        if not resp.ok:
            raise self._error(resp, f"item {collection_id}/{item_id}")
        return resp.json()

    def delete_item(self, collection_id: str, item_id: str) -> bool:
        with self._item_locks.hold([(collection_id, item_id)]):
            resp = self._request("DELETE", f"collections/{_q(collection_id)}/items/{_q(item_id)}", write=True)
        if resp.status_code == 404:
            return False
        if not resp.ok:
            raise self._error(resp, f"item {collection_id}/{item_id}")
        return True

    def put_item(self, item: dict[str, Any], policy: DuplicatePolicy = "replace") -> str:
        _check_policy(policy)
        cid, iid = _ids(item)
        with self._item_locks.hold([(cid, iid)]), self._shared(f"stac-item:{cid}/{iid}"):
            action = self._write_one(item, policy)
            if action != "skipped" and self.verify:
                stored = self.get_item(cid, iid)
                problem = _compare(item, stored)
                if problem:
                    raise CatalogMismatch(f"item {cid}/{iid}: read back from {self.display_url}: {problem}")
        if action != "skipped":
            self._grow_extent(cid, [item])
        return action

    def _write_one(self, item: dict[str, Any], policy: DuplicatePolicy) -> str:
        """POST, then what the policy says on 409. The caller holds the item's lock."""
        cid, iid = _ids(item)
        what = f"item {cid}/{iid}"
        items_path = f"collections/{_q(cid)}/items"
        resp = self._request("POST", items_path, json=item, write=True)
        for _ in range(3):
            if resp.status_code in (200, 201):
                return "created"
            if resp.status_code != 409:
                raise self._error(resp, what, collection=cid)
            if policy == "skip":
                return "skipped"
            if policy == "error":
                if getattr(resp, "stacdrop_retried", False) and not _compare(item, self.get_item(cid, iid)):
                    return "created"  # our own first POST landed before the connection dropped
                raise DuplicateItem(
                    f"{what} already exists in the STAC API and the duplicate policy is 'error' "
                    "(set duplicate_policy = 'replace' or 'skip', or unpublish the item first)"
                )
            resp = self._request("PUT", f"{items_path}/{_q(iid)}", json=item, write=True)
            if resp.ok:
                return "replaced"
            if resp.status_code != 404:
                raise self._error(resp, what, collection=cid)
            # Deleted in between (or pgstac's spurious 404 of racing PUTs): create it again.
            resp = self._request("POST", items_path, json=item, write=True)
        raise CatalogUnavailable(f"{what}: the STAC API kept answering 409 to POST and 404 to PUT")

    def put_items(self, items: list[dict[str, Any]], policy: DuplicatePolicy = "replace") -> list[PutOutcome]:
        """One bulk request per collection and chunk; one outcome per item, in order."""
        _check_policy(policy)
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
                self._verify_batch(cid, written)
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
            resp = self._request("POST", f"collections/{_q(cid)}/bulk_items", json=body, write=True)
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

    def _search(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every feature of a POST /search, following next links."""
        request: dict[str, Any] | None = body
        method, url = "POST", "search"
        pages = 0
        while request is not None and pages < 1000:
            pages += 1
            if method == "POST":
                resp = self._request("POST", url, json=request)
            else:
                resp = self._request("GET", url)
            if not resp.ok:
                raise self._error(resp, "search")
            page = resp.json()
            yield from page.get("features", [])
            nxt = next((link for link in page.get("links", []) if link.get("rel") == "next"), None)
            if nxt is None or not page.get("features"):
                return
            href = nxt.get("href", "")
            url = href[len(self.base):] if href.startswith(self.base) else href
            if nxt.get("method", "GET").upper() == "POST":
                link_body = nxt.get("body") or {}
                method, request = "POST", ({**request, **link_body} if nxt.get("merge") else link_body or request)
            else:
                method, request = "GET", {}
            if url.startswith(("http://", "https://")):
                return  # a next link to another host: not followed

    def _existing_ids(self, cid: str, ids: list[str]) -> set[str]:
        body = {"collections": [cid], "ids": ids, "limit": len(ids),
                "fields": {"include": ["id"], "exclude": ["geometry", "bbox", "assets", "properties", "links"]}}
        return {f.get("id") for f in self._search(body)}

    def _verify_batch(self, cid: str, written: list[tuple[dict[str, Any], PutOutcome]]) -> None:
        try:
            stored = {f.get("id"): f for f in self._search(
                {"collections": [cid], "ids": [it["id"] for it, _ in written], "limit": len(written),
                 # only what is compared: pgstac hydrates and serialises less (~4x faster than full items)
                 "fields": {"include": ["id", "collection", "assets"],
                            "exclude": ["geometry", "bbox", "properties", "links"]}})}
        except StacdropError as exc:
            for _, o in written:
                o.action, o.error = None, CatalogUnavailable(f"published, but could not be read back: {exc}")
            return
        for item, outcome in written:
            problem = _compare(item, stored.get(item["id"]))
            if problem:
                outcome.action, outcome.error = None, CatalogMismatch(
                    f"item {cid}/{item['id']}: read back from {self.display_url}: {problem}")

    # ------------------------------------------------------------------ extents
    def _grow_extent(self, cid: str, items: list[dict[str, Any]]) -> None:
        add: dict[str, Any] = {}
        for item in items:
            try:
                add = _union_extents(add, item_extent(item)) if add else item_extent(item)
            except (KeyError, TypeError, ValueError):
                continue
        if not add:
            return
        with self._collection_locks.hold([cid]):
            cached = self._extents.get(cid)
            if cached and _union_extents(cached, add) == cached:
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
                grown = _union_extents(stored, add)
                if grown == stored:
                    return  # get_collection cached it
                col = _without_server_links(col)
                col["extent"] = grown
                resp = self._request("PUT", f"collections/{_q(cid)}", json=col, write=True)
                if not resp.ok:
                    raise self._error(resp, f"collection {cid} (extent)")
                self._extents.pop(cid, None)
            log.warning("stac_extent_contended", collection=cid)
        except StacdropError as exc:
            self._extents.pop(cid, None)
            log.warning("stac_extent_not_widened", collection=cid, error=str(exc))

    def close(self) -> None:
        self._session.close()


# ---------------------------------------------------------------------- helpers
def _reason(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "Connection reset", "Connection aborted", "Name or service not known",
                   "Temporary failure in name resolution", "Remote end closed connection"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__


def _check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise ConfigError(f"duplicate_policy {policy!r} is not one of {', '.join(POLICIES)}")


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
    out["links"] = [l for l in out.get("links", []) if l.get("rel") not in SERVER_RELS]
    return out


def _bulk_errors(resp: requests.Response) -> set[str]:
    try:
        body = resp.json()
    except ValueError:
        return set()
    errors = body.get("errors") if isinstance(body, dict) else None
    return {str(e.get("id")) for e in errors or [] if isinstance(e, dict)}


def _compare(sent: dict[str, Any], stored: dict[str, Any] | None) -> str | None:
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

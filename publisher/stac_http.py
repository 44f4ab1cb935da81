"""HTTP plumbing of the STAC API sink: one session, the auth header, one retry, status -> error, search pages.

Requests
    One ``requests.Session`` (keep-alive). stac-fastapi-pgstac drops the keep-alive connection after any
    500, so after a 5xx the pooled connections are discarded, and a request that fails with a connection
    error (reset, refused) is sent once more on a fresh connection before it counts as an outage. The
    base URL may carry a path prefix (``https://host/stac``): every path is joined below it.

Auth
    ``stac_token`` goes in ``stac_auth_header`` (``Authorization: Bearer <token>`` by default) on write
    requests only (POST/PUT/DELETE of collections and items; ``POST /search`` is a read). The token never
    appears in a log line or an error message.

Errors
    5xx, connection errors and timeouts -> CatalogUnavailable (transient); 400/422 -> InvalidItem with the
    server's message; 401/403 -> CatalogAuthError (permanent ``catalog_auth``); any other 4xx ->
    CatalogRejected. Telling a missing collection from a plain 5xx needs a look at the collection: the sink
    does that (publisher/stac_api.py).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator
from typing import Any

import requests

from publisher.errors import CatalogAuthError, CatalogRejected
from stacdrop.config import StacApiSettings
from stacdrop.errors import CatalogUnavailable, InvalidItem, StacdropError
from stacdrop.redact import redact_url
from stacdrop.stac_terms import MediaType, RelType


def quote_segment(value: str) -> str:
    """An id as one URL path segment ('/' and every other reserved character escaped)."""
    return urllib.parse.quote(value, safe="")


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


def connection_reason(exc: BaseException) -> str:
    """A connection error in a few words, without the URL (which may carry credentials)."""
    text = str(exc)
    for marker in ("Connection refused", "Connection reset", "Connection aborted", "Name or service not known",
                   "Temporary failure in name resolution", "Remote end closed connection"):
        if marker in text:
            return marker.lower()
    return type(exc).__name__


class StacHttp:
    """Requests to one STAC API: joins paths below the base URL, adds the auth header to writes, maps
    timeouts and connection errors to CatalogUnavailable. Thread-safe as ``requests.Session`` is for this use
    (one session shared by the bulk threads)."""

    def __init__(self, url: str, settings: StacApiSettings, *, timeout: float) -> None:
        self.base = url.rstrip("/") + "/"
        self.display_url = redact_url(url)
        self.timeout = timeout
        self._auth: dict[str, str] = {}
        if settings.token is not None and settings.token.get_secret_value():
            token = settings.token.get_secret_value().strip()
            header = settings.auth_header
            if header.lower() == "authorization" and " " not in token:
                token = f"Bearer {token}"
            self._auth = {header: token}
        self._session = requests.Session()
        self._session.headers["Accept"] = MediaType.JSON.value

    def reset_connections(self) -> None:
        """Discard pooled connections: the next request opens a fresh one."""
        for adapter in self._session.adapters.values():
            adapter.close()

    def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None,
                write: bool = False) -> requests.Response:
        url = self.base + path.lstrip("/")
        headers = dict(self._auth) if write else {}
        for attempt in (1, 2):
            try:
                resp = self._session.request(method, url, json=json, params=params, headers=headers,
                                             timeout=self.timeout)
            except requests.exceptions.Timeout:
                self.reset_connections()
                raise CatalogUnavailable(
                    f"STAC API {self.display_url}: {method} /{path} timed out after {self.timeout:g} s"
                ) from None
            except requests.exceptions.ConnectionError as exc:
                self.reset_connections()
                if attempt == 1:
                    continue  # a reset keep-alive connection (after a 500) or a restart: once more, fresh
                raise CatalogUnavailable(
                    f"STAC API {self.display_url}: {method} /{path} failed: {connection_reason(exc)}"
                ) from None
            if resp.status_code >= 500:
                self.reset_connections()  # the server drops keep-alive connections after a 500
            resp.stacdrop_retried = attempt == 2  # type: ignore[attr-defined]
            return resp
        raise AssertionError("unreachable")

    def error(self, resp: requests.Response, what: str) -> StacdropError:
        """The error for an unexpected response to a request about ``what``."""
        status = resp.status_code
        method = resp.request.method if resp.request is not None else "?"
        msg = server_message(resp)
        where = f"STAC API {self.display_url}: {method} {what}"
        if status in (400, 422):
            return InvalidItem(f"{what}: the STAC API rejected it ({status}): {msg}")
        if status in (401, 403):
            return CatalogAuthError(f"{where}: {status} {msg} (check stac_token / AUTHORIZATION_TOKEN_STAC and "
                                    "stac_auth_header)")
        if status >= 500 or status in (404, 408, 425, 429):
            return CatalogUnavailable(f"{where}: {status} {msg}")
        return CatalogRejected(f"{where}: unexpected {status} {msg}")

    def search(self, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every feature of a POST /search, following next links."""
        request: dict[str, Any] | None = body
        method, url = "POST", "search"
        pages = 0
        while request is not None and pages < 1000:
            pages += 1
            if method == "POST":
                resp = self.request("POST", url, json=request)
            else:
                resp = self.request("GET", url)
            if not resp.ok:
                raise self.error(resp, "search")
            page = resp.json()
            yield from page.get("features", [])
            nxt = next((link for link in page.get("links", []) if link.get("rel") == RelType.NEXT), None)
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

    def close(self) -> None:
        self._session.close()

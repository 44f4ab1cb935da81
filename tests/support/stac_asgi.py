"""The stac-fastapi-pgstac app for tests, wrapped so that one server offers three mounts:

- ``/``        the plain API;
- ``/stac/``   the same API under a path prefix (``root_path`` set, so its links carry the prefix);
- ``/auth/``   under a prefix too, and write requests (anything but GET/HEAD/OPTIONS and POST /search)
               without ``Authorization: Bearer $STAC_TEST_TOKEN`` or ``X-Api-Key: $STAC_TEST_TOKEN``
               are answered 401.

``GET /_test/requests`` lists every request seen so far as ``[method, path, auth header present]`` (the
header's value is never recorded), ``DELETE /_test/requests`` clears the list. Started by
``tests/support/stac_api.py`` with ``uvicorn tests.support.stac_asgi:make_app --factory``.
"""

from __future__ import annotations

import json
import os
from typing import Any

READS = {"GET", "HEAD", "OPTIONS"}


def make_app() -> Any:
    from stac_fastapi.pgstac.app import create_app

    inner = create_app()
    token = os.environ.get("STAC_TEST_TOKEN", "test-token")
    seen: list[list[Any]] = []

    async def send_json(send: Any, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]})
        await send({"type": "http.response.body", "body": data})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await inner(scope, receive, send)
            return
        path: str = scope["path"]
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        has_auth = "authorization" in headers or "x-api-key" in headers
        if path == "/_test/requests":
            if scope["method"] == "DELETE":
                seen.clear()
            await send_json(send, 200, seen)
            return
        seen.append([scope["method"], path, has_auth])
        for prefix in ("/stac", "/auth"):
            if path == prefix or path.startswith(prefix + "/"):
                rest = path[len(prefix):] or "/"
                if prefix == "/auth" and scope["method"] not in READS and rest != "/search":
                    ok = headers.get("authorization") == f"Bearer {token}" or headers.get("x-api-key") == token
                    if not ok:
                        await send_json(send, 401, {"code": "Unauthorized", "description": "a token is required"})
                        return
                scope = {**scope, "path": rest, "raw_path": rest.encode(), "root_path": prefix}
                break
        await inner(scope, receive, send)

    return app

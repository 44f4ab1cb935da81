"""The API token and the request body size limit.

One way to authenticate: ``Authorization: Bearer <api_token>``. Write endpoints always need it unless
``api_auth_disabled`` is set (an explicit opt-out); with no token configured writes are refused (503)
rather than left open. Read endpoints need it only when ``api_read_token_required`` is set. The token is
compared in constant time and never logged or echoed.
"""

from __future__ import annotations

import json
import secrets

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stacdrop.app.api.deps import get_settings
from stacdrop.config import ApiSettings, Settings

# auto_error=False: a missing header is our 401 with our message, not FastAPI's 403.
bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <api_token> (STACDROP_API_TOKEN)")
NO_TOKEN = (
    "writes are disabled: no API token is configured. Set STACDROP_API_TOKEN (api_token) and send "  # noqa: S105 - a message, not a password
    "'Authorization: Bearer <token>', or set STACDROP_API_AUTH_DISABLED=true to allow writes without a token"
)


def _check(api: ApiSettings, credentials: HTTPAuthorizationCredentials | None) -> None:
    if api.auth_disabled:
        return
    if api.token is None or not api.token.get_secret_value():
        raise HTTPException(503, NO_TOKEN)
    if credentials is None:
        raise HTTPException(401, "missing token: send 'Authorization: Bearer <api_token>'",
                            headers={"WWW-Authenticate": "Bearer"})
    expected = api.token.get_secret_value().encode()
    if not secrets.compare_digest(credentials.credentials.encode(), expected):
        raise HTTPException(401, "invalid token", headers={"WWW-Authenticate": "Bearer"})


def require_write(
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
    settings: Settings = Depends(get_settings),
) -> None:
    _check(settings.api, credentials)


def require_read(
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),
    settings: Settings = Depends(get_settings),
) -> None:
    if settings.api.read_token_required:
        _check(settings.api, credentials)


class BodySizeLimit:
    """Refuse request bodies over ``limit`` bytes with 413, whether Content-Length says so or the chunks do.

    The body is read before the app sees it (bodies here are small JSON documents), so an over-long
    chunked upload is refused without the route parsing a byte of it.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            await self._refuse(send, int(length))
            return
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(send, None)
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body = b"".join(chunks)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send, length: int | None) -> None:
        said = f" ({length} bytes)" if length is not None else ""
        payload = json.dumps({"detail": f"request body too large{said}: the limit is {self.limit} bytes "
                                        "(api_max_body_bytes)"}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})

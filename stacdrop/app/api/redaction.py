"""Every JSON and plain-text answer of the API passes through ``stacdrop.redact`` on its way out.

Reads are open by default (docs/security.md), so nothing they return may carry a secret: the original
``/newitem`` body kept in ``/status`` ``_param`` (its ``file_source_host`` may hold a password), job
errors and sources, dead letters, ``/readyz`` reasons, ``/metrics`` labels and the status page's data. One
middleware instead of a call in each route: a route added later is covered too. Static files (the page's
HTML, JS and CSS) hold no data and pass untouched.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stacdrop.redact import redact_data, redact_text

REDACTED_TYPES = (b"application/json", b"text/plain")


class RedactResponses:
    def __init__(self, app: ASGIApp, secrets: Iterable[str] = ()) -> None:
        self.app = app
        self.secrets = tuple(secrets)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") == "HEAD":  # HEAD: no body, a length to keep
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        chunks: list[bytes] = []

        async def redacting_send(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                content_type = dict(message.get("headers") or []).get(b"content-type", b"")
                if content_type.split(b";")[0].strip() in REDACTED_TYPES:
                    start = message  # held until the whole body is known: its length changes
                    return
                await send(message)
                return
            if message["type"] != "http.response.body" or start is None:
                await send(message)
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            body = self._redact(b"".join(chunks), start)
            headers = [(k, v) for k, v in start.get("headers") or [] if k != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": body, "more_body": False})

        await self.app(scope, receive, redacting_send)

    def _redact(self, body: bytes, start: Message) -> bytes:
        content_type = dict(start.get("headers") or []).get(b"content-type", b"")
        text = body.decode("utf-8", errors="replace")
        if content_type.startswith(b"application/json"):
            try:
                data = json.loads(text)
            except ValueError:
                return redact_text(text, self.secrets).encode()
            # Separators as FastAPI writes them: an answer without secrets keeps its bytes.
            return json.dumps(redact_data(data, self.secrets), ensure_ascii=False,
                              separators=(",", ":")).encode()
        return redact_text(text, self.secrets).encode()

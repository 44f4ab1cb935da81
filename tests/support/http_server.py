"""The one HTTP server of the tests: a real ``ThreadingHTTPServer`` on 127.0.0.1 (a free port the OS picks)
serving from a daemon thread, so a test talks real HTTP to a host it controls. A test writes only its
handler: what the handler needs (files, counters, redirects) lives on the server, ``self.server`` in the
handler. ``FileServer`` is the common case, a directory served as files."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Self


class QuietHandler(http.server.BaseHTTPRequestHandler):
    """A request handler that logs nothing: the test output keeps to the test."""

    def log_message(self, *args: Any) -> None:
        pass


class LocalHttpServer(http.server.ThreadingHTTPServer):
    """``handler`` over HTTP on 127.0.0.1; ``url`` names the host ``host_name``. ``with`` (or ``start`` and
    ``close``) runs it in a daemon thread and stops it."""

    def __init__(self, handler: Callable[..., http.server.BaseHTTPRequestHandler],
                 host_name: str = "127.0.0.1") -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.port: int = self.server_address[1]
        self.url = f"http://{host_name}:{self.port}"

    def start(self) -> Self:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def close(self) -> None:
        self.shutdown()
        self.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


class _QuietFiles(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


class FileServer(LocalHttpServer):
    """A directory over HTTP on 127.0.0.1 (HEAD and GET, Content-Length and Last-Modified, no ETag).

    ``url`` names the host ``localhost`` so that listing ``localhost`` in allowed_hosts lets it through
    the SSRF check, as an operator would list an internal file host by name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        super().__init__(functools.partial(_QuietFiles, directory=str(root)), host_name="localhost")

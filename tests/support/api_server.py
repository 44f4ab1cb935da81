"""Run ``stacdrop serve`` as a subprocess on a free port, and serve files over HTTP, for the API tests."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path
from typing import Any

import requests

from tests.support.daemon import DaemonProcess, wait_until
from tests.support.services import free_port


class ApiServer(DaemonProcess):
    """``stacdrop serve --port <free>`` with the given environment; ``url`` once /healthz answers."""

    def __init__(self, root: Path, env: dict[str, str], name: str = "serve") -> None:
        self.port = free_port()
        super().__init__(root, env, ["serve", "--port", str(self.port)], name=name)
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = env.get("STACDROP_API_TOKEN")

    def start(self) -> "ApiServer":
        super().start()
        wait_until(self._healthy, 60, "stacdrop serve to answer /healthz", self)
        return self

    def _healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except requests.ConnectionError:
            return False

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url + path, headers=self.headers(), timeout=30, **kwargs)

    def post(self, path: str, json: Any = None, **kwargs: Any) -> requests.Response:  # noqa: A002
        headers = {**self.headers(), **kwargs.pop("headers", {})}
        return requests.post(self.url + path, json=json, headers=headers, timeout=60, **kwargs)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


class FileServer:
    """A directory over HTTP on 127.0.0.1 (HEAD and GET, Content-Length and Last-Modified, no ETag).

    ``url`` names the host ``localhost`` so that listing ``localhost`` in allowed_hosts lets it through
    the SSRF check, as an operator would list an internal file host by name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
        self.url = f"http://localhost:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "FileServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

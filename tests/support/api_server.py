"""Run ``stacdrop serve`` as a subprocess on a free port, for the API tests (files over HTTP:
tests/support/http_server.py)."""

from __future__ import annotations

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

    def post(self, path: str, json: Any = None, **kwargs: Any) -> requests.Response:
        headers = {**self.headers(), **kwargs.pop("headers", {})}
        return requests.post(self.url + path, json=json, headers=headers, timeout=60, **kwargs)

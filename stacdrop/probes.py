"""Probes of the dependencies a stage needs: is the store, is the STAC sink answering right now?

One home for the checks that ``GET /readyz`` reports and that the stage runtime runs while a dependency
is down (``StageRunner(probes=...)``: a stage pauses and probes instead of spending the jobs' attempts).
A probe returns when the dependency answers and raises otherwise; it is quick (``PROBE_TIMEOUT``) and
reads nothing of the catalog.
"""

from __future__ import annotations

import os
from pathlib import Path

from stacdrop.config import S3Settings

PROBE_TIMEOUT = 5.0


def check_store(store: str, s3: S3Settings) -> None:
    """The COG store ``store`` (the ``store`` setting) answers; S3 is reached with ``s3``."""
    if store.startswith("s3://"):
        from stacdrop.s3 import parse_s3_url, s3_client  # noqa: PLC0415

        bucket, _ = parse_s3_url(store)
        s3_client(s3, connect_timeout=PROBE_TIMEOUT, read_timeout=PROBE_TIMEOUT,
                  retries={"max_attempts": 1}).head_bucket(Bucket=bucket)
        return
    _check_dir(Path(store.removeprefix("file://")))


def check_stac(target: str) -> None:
    """The catalog ``target`` (the ``stac`` setting) answers: a STAC API's landing page, or the folder."""
    if target.startswith(("http://", "https://")):
        import requests  # noqa: PLC0415

        resp = requests.get(target.rstrip("/") + "/", timeout=PROBE_TIMEOUT)
        if resp.status_code >= 500:
            raise RuntimeError(f"{target} answered HTTP {resp.status_code}")
        return
    _check_dir(Path(target.removeprefix("file://")))


def _check_dir(path: Path) -> None:
    """The directory, or the nearest existing parent it would be created in, must be writable."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise RuntimeError(f"{path}: not a writable directory")

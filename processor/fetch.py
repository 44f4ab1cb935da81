"""Bring a source to a local path the converter can read.

For now sources are local absolute paths (or ``file://`` URLs); S3 and HTTP sources come later.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import unquote, urlparse

from stacdrop.errors import ConfigError, SourceNotFound


@contextmanager
def fetch_source(url: str, workdir: Path) -> Iterator[str]:
    """Yield a local path for ``url``. A local file is used in place (nothing to clean up).

    ``SourceNotFound`` (permanent) when the file is gone; ``ConfigError`` for URL schemes not built yet.
    """
    if url.startswith("file://"):
        parsed = urlparse(url)
        if parsed.netloc not in ("", "localhost"):
            raise ConfigError(f"{url}: file:// URLs must point at this machine")
        path = unquote(parsed.path)
    elif "://" in url:
        scheme = url.split("://", 1)[0]
        raise ConfigError(f"{url}: sources by URL ({scheme}://) are not supported yet; only local files")
    else:
        path = url
    if not os.path.isabs(path):
        raise ConfigError(f"{url}: a local source must be an absolute path")
    if not os.path.exists(path):
        raise SourceNotFound(f"{url}: source file not found (moved or deleted before processing)")
    if not os.path.isfile(path):
        raise SourceNotFound(f"{url}: source is not a regular file")
    yield path

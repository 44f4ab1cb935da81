"""What a path in the inbox is. Pure functions over '/'-separated keys relative to the inbox root.

Layout::

    inbox/<collection-id>/collection.json     the collection (created or updated)
    inbox/<collection-id>/.../NAME.tif|tiff   a raster (extension case-insensitive)
    inbox/<collection-id>/.../NAME.json       its sidecar (same path without extension)

Hidden names (any segment starting with '.' or '~') and partial uploads (``*.part``, ``*.tmp``) are ignored.
"""

from __future__ import annotations

import posixpath
from typing import Literal

Kind = Literal["raster", "sidecar", "collection"]

RASTER_SUFFIXES = (".tif", ".tiff")
SIDECAR_SUFFIX = ".json"
COLLECTION_FILE = "collection.json"
PARTIAL_SUFFIXES = (".part", ".tmp")


def segments(rel_path: str) -> list[str]:
    return [s for s in rel_path.split("/") if s]


def is_ignored(rel_path: str) -> bool:
    """Hidden names in any segment, ``~*`` names, and partial uploads (``*.part``, ``*.tmp``)."""
    parts = segments(rel_path)
    if not parts:
        return True
    if any(p.startswith((".", "~")) for p in parts):
        return True
    return parts[-1].lower().endswith(PARTIAL_SUFFIXES)


def classify(rel_path: str) -> Kind | None:
    """``"raster"``, ``"sidecar"``, ``"collection"`` or None (not ours, or ignored).

    ``collection.json`` is the collection file when it sits directly in a collection folder, and also
    at the inbox root (the publisher then fails it for want of a collection folder); deeper down it is
    an ordinary sidecar (of ``collection.tif``).
    """
    if is_ignored(rel_path):
        return None
    parts = segments(rel_path)
    name = parts[-1].lower()
    if name.endswith(RASTER_SUFFIXES):
        return "raster"
    if name == COLLECTION_FILE and len(parts) <= 2:
        return "collection"
    if name.endswith(SIDECAR_SUFFIX):
        return "sidecar"
    return None


def stem(rel_path: str) -> str:
    """The pairing key: the path without its extension (``a/b.tif`` and ``a/b.json`` -> ``a/b``)."""
    root, _ext = posixpath.splitext("/".join(segments(rel_path)))
    return root


def collection_of(rel_path: str) -> str | None:
    """The collection folder (first segment); None for files directly in the inbox root."""
    parts = segments(rel_path)
    return parts[0] if len(parts) > 1 else None

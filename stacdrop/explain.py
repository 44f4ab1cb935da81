"""``stacdrop explain PATH``: the item a file would get, rule by rule, without processing anything."""

from __future__ import annotations

import hashlib
from pathlib import Path

from processor.metadata import read_raster_metadata
from publisher.derive import DerivedItem, derive_item
from stacdrop.config import Settings
from stacdrop.messages import RasterReady, Source, StoredObject
from stacdrop.sidecar import parse_sidecar


def inbox_key(path: Path, inbox: Path) -> str:
    """The file's key relative to the inbox, or its bare name when it lies outside the inbox."""
    try:
        return path.resolve().relative_to(inbox.resolve()).as_posix()
    except ValueError:
        return path.name


def explain_file(path: str, settings: Settings) -> DerivedItem:
    file = Path(path)
    key = inbox_key(file, Path(settings.inbox))
    collection = key.split("/", 1)[0] if "/" in key else ""
    sidecar_path = file.with_suffix(".json")
    sidecar = None
    sidecar_name = None
    if sidecar_path.exists():
        sidecar_name = inbox_key(sidecar_path, Path(settings.inbox))
        sidecar = parse_sidecar(sidecar_path.read_text(encoding="utf-8"), sidecar_name)
        collection = sidecar.collection or collection
    size = file.stat().st_size
    ready = RasterReady(
        source=Source(url=str(file.resolve()), key=key, size=size, content_key="(not hashed)"),
        collection=collection,
        sidecar=sidecar.model_dump(mode="json") if sidecar else None,
        sidecar_name=sidecar_name,
        # The stored COG does not exist yet: the href and checksum say so.
        cog=StoredObject(href=f"(not stored yet: {key})", key=key, size=size,
                         sha256=hashlib.sha256(b"").hexdigest()),
        raster=read_raster_metadata(str(file)),
    )
    return derive_item(ready, settings.collection(collection))

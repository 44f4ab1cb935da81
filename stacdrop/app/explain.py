"""``stacdrop explain PATH``: the item a file would get, rule by rule, without processing anything."""

from __future__ import annotations

import hashlib
from pathlib import Path

from processor import read_raster_metadata
from publisher import DerivedItem, derive_item, derive_metadata
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
    key = inbox_key(file, Path(settings.inbox.path))
    collection = key.split("/", 1)[0] if "/" in key else ""
    sidecar_path = file.with_suffix(".json")
    sidecar = None
    sidecar_name = None
    if sidecar_path.exists():
        sidecar_name = inbox_key(sidecar_path, Path(settings.inbox.path))
        sidecar = parse_sidecar(sidecar_path.read_bytes(), sidecar_name, settings.collection_settings, collection)
        collection = sidecar.collection or collection
    size = file.stat().st_size
    ready = RasterReady(
        source=Source(url=str(file.resolve()), key=key, size=size, content_key="(not hashed)"),
        collection=collection,
        sidecar=sidecar,
        sidecar_name=sidecar_name,
        # The stored COG does not exist yet: the href and checksum say so.
        cog=StoredObject(href=f"(not stored yet: {key})", key=key, size=size,
                         sha256=hashlib.sha256(b"").hexdigest()),
        raster=read_raster_metadata(str(file)),
    )
    return derive_item(ready, settings.collection(collection))


# Fields that only the raster itself can give; explaining a key without the file leaves them out.
RASTER_FIELDS = ("geometry", "bbox", "proj:*", "assets.<key>.href", "assets.<key>.file:size",
                 "assets.<key>.file:checksum", "assets.<key>.raster:bands")


def explain_key(key: str, collection: str, settings: Settings, sidecar_text: str | None = None) -> dict:
    """The item a source at ``<collection>/<key>`` would get, without the raster: id, collection, datetime and
    properties from the sidecar (if given), the key template and the collection settings, each with the rule
    that produced it. Raster-derived fields are listed under ``needs_raster``. Raises the derivation's
    errors (InvalidItem, InvalidSidecar, ConfigError) naming the key."""
    source_key = f"{collection}/{key.lstrip('/')}"
    sidecar = parse_sidecar(sidecar_text, "sidecar", settings.collection_settings, collection) if sidecar_text else None
    collection = (sidecar.collection if sidecar else None) or collection
    col_settings = settings.collection(collection)
    # No raster_tags: the part of the derivation that needs no raster, and a datetime only the tags could
    # give is marked as such.
    meta = derive_metadata(source_key, collection, col_settings, sidecar,
                           sidecar_name="sidecar" if sidecar else None)
    props = {k: v for k, v in meta.properties.items() if not k.startswith("proj:")}
    prov = {k: v for k, v in meta.provenance.items() if not k.startswith("proj:")}
    notes = []
    if prov.get("datetime", "").startswith("raster_tags"):
        notes.append("no datetime from the sidecar, the key template or the collection defaults: it must come "
                     "from the raster's tags (DATETIME, TIFFTAG_DATETIME, ...), else the job fails")
    return {
        "id": meta.id, "collection": meta.collection, "properties": props,
        "asset_key": col_settings.asset_key, "provenance": prov,
        "needs_raster": list(RASTER_FIELDS), "notes": notes,
    }

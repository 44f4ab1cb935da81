"""``stacdrop explain PATH``: the item a file would get, rule by rule, without processing anything."""

from __future__ import annotations

import hashlib
from pathlib import Path

from processor import read_raster_metadata
from publisher import DerivedItem, derive_item
from stacdrop.config import Settings
from stacdrop.messages import BandMetadata, RasterMetadata, RasterReady, Source, StoredObject
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
        sidecar = parse_sidecar(sidecar_path.read_bytes(), sidecar_name, settings, collection)
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


# Fields that only the raster itself can give; explaining a key without the file leaves them out.
RASTER_FIELDS = ("geometry", "bbox", "proj:*", "assets.<key>.href", "assets.<key>.file:size",
                 "assets.<key>.file:checksum", "assets.<key>.raster:bands")
_NO_TIME_TAG = "1970-01-01T00:00:00Z"


def explain_key(key: str, collection: str, settings: Settings, sidecar_text: str | None = None) -> dict:
    """The item a source at ``<collection>/<key>`` would get, without the raster: id, collection, datetime and
    properties from the sidecar (if given), the key template and the collection settings, each with the rule
    that produced it. Raster-derived fields are listed under ``needs_raster``. Raises the derivation's
    errors (InvalidItem, InvalidSidecar, ConfigError) naming the key."""
    source_key = f"{collection}/{key.lstrip('/')}"
    sidecar = parse_sidecar(sidecar_text, "sidecar", settings, collection) if sidecar_text else None
    # A one-pixel stand-in for the raster; its only tag marks a datetime that would come from the file's tags.
    raster = RasterMetadata(width=1, height=1, count=1, crs_epsg=4326, transform=[1, 0, 0, 0, -1, 1],
                            bounds=[0, 0, 1, 1], bands=[BandMetadata(data_type="uint8")],
                            tags={"datetime": _NO_TIME_TAG})
    ready = RasterReady(
        source=Source(url=source_key, key=source_key, content_key="(not read)"),
        collection=(sidecar.collection if sidecar else None) or collection,
        sidecar=sidecar.model_dump(mode="json") if sidecar else None, sidecar_name="sidecar" if sidecar else None,
        cog=StoredObject(href="(not stored)", key=source_key, size=0, sha256=hashlib.sha256(b"").hexdigest()),
        raster=raster,
    )
    derived = derive_item(ready, settings.collection(ready.collection))
    item, prov = derived.item, dict(derived.provenance)
    props = {k: v for k, v in item["properties"].items() if not k.startswith("proj:")}
    notes = []
    if prov.get("datetime", "").startswith("raster_tags"):
        for k in ("datetime", "start_datetime", "end_datetime"):
            if k in props:
                props[k] = None
                prov[k] = "raster_tags (needs the raster)"
        notes.append("no datetime from the sidecar, the key template or the collection defaults: it must come "
                     "from the raster's tags (DATETIME, TIFFTAG_DATETIME, ...), else the job fails")
    for k in list(prov):
        if k in ("geometry", "bbox", "assets") or k.startswith("proj:"):
            del prov[k]
    return {
        "id": item["id"], "collection": item["collection"], "properties": props,
        "asset_key": next(iter(item["assets"])), "provenance": prov,
        "needs_raster": list(RASTER_FIELDS), "notes": notes,
    }

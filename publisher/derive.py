"""Derive a STAC 1.1.0 item from a stored COG, its sidecar, its path and the collection settings.

Precedence, highest first, per field:

1. the sidecar (``RasterReady.sidecar``, a ``stacdrop.sidecar.Sidecar`` parsed and normalised by the processor),
2. the collection's key template over the path inside the collection folder,
3. raster tags (``datetime`` / ``DATETIME`` / ``start_datetime`` / ``end_datetime`` / ``TIFFTAG_DATETIME``),
4. defaults: the collection settings' ``properties``; the id defaults to the file name without extension.

The temporal fields (datetime, start_datetime, end_datetime) are taken together from the first rule that
gives any of them, so a sidecar's datetime is never mixed with a period read from the file name. The
current time is never used: no datetime from any rule is an InvalidItem. Geometry, bbox and the
projection, raster and file fields always come from the raster itself ("raster").

``provenance`` maps ``id``, ``collection``, ``datetime``/``start_datetime``/``end_datetime``, every
property name and ``geometry``/``bbox``/``assets`` to the rule that produced it.

Two halves: ``derive_metadata`` (the key, the sidecar, the settings and, when known, the raster's tags:
id, collection, datetimes, title, properties) needs no raster, so ``stacdrop explain`` of a key calls it
alone; ``with_raster_fields`` adds what only the stored COG gives. ``derive_item`` is both in turn.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pyproj import CRS

from publisher.footprint import footprint, raster_crs
from publisher.templates import TemplateFields, compile_template, interpret, parse_time_text
from stacdrop.config import CollectionSettings
from stacdrop.errors import InvalidItem, InvalidSidecar
from stacdrop.messages import BandMetadata, RasterMetadata, RasterReady
from stacdrop.sidecar import Sidecar, check_id, parse_datetime
from stacdrop.stac_terms import STAC_VERSION, Extension, MediaType
from stacdrop.times import parse_time

TIME_KEYS = ("datetime", "start_datetime", "end_datetime")
RASTER_DATA_TYPES = {
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
    "float16", "float32", "float64", "cint16", "cint32", "cfloat32", "cfloat64", "other",
}
_DATA_TYPE_ALIASES = {
    "byte": "uint8", "complex64": "cfloat32", "complex128": "cfloat64",
    "complex_int16": "cint16", "complex_int32": "cint32", "cint16": "cint16", "cint32": "cint32",
}
_STAT_KEYS = {
    "minimum": "minimum", "min": "minimum", "maximum": "maximum", "max": "maximum", "mean": "mean",
    "stddev": "stddev", "std": "stddev", "valid_percent": "valid_percent",
}
_TIFF_DATETIME = re.compile(r"^(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})$")


@dataclass
class DerivedItem:
    item: dict[str, Any]
    provenance: dict[str, str] = field(default_factory=dict)


def path_in_collection(key: str) -> str:
    """The Source key minus its first segment (the collection folder)."""
    parts = [p for p in key.strip("/").split("/") if p]
    return "/".join(parts[1:]) if len(parts) > 1 else "/".join(parts)


def file_stem(key: str) -> str:
    name = key.rstrip("/").rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name


def _times_from_tags(tags: Mapping[str, str], source: str) -> tuple[dict[str, str | None], str | None]:
    """Datetimes from raster tags and the tag that gave them (or empty)."""
    lower = {k.lower(): (k, v) for k, v in tags.items()}
    out: dict[str, str | None] = {}
    used: list[str] = []
    for key in TIME_KEYS:
        if key in lower and str(lower[key][1]).strip():
            name, value = lower[key]
            out[key] = _tag_time(value, name, source)
            used.append(name)
    if not out and "tifftag_datetime" in lower and str(lower["tifftag_datetime"][1]).strip():
        name, value = lower["tifftag_datetime"]
        out["datetime"] = _tag_time(value, name, source)
        used.append(name)
    return out, ",".join(used) or None


def _tag_time(value: str, name: str, source: str) -> str:
    text = str(value).strip()
    m = _TIFF_DATETIME.match(text)
    try:
        if m:
            return parse_datetime(f"{m[1]}-{m[2]}-{m[3]}T{m[4]}:{m[5]}:{m[6]}Z", name, source)
        return parse_time_text(text, name, source)
    except (InvalidItem, InvalidSidecar):
        raise InvalidItem(
            f"{source}: raster tag {name}={text!r} is not a date or datetime; fix the tag or set "
            "'datetime' in the sidecar (which takes precedence)"
        ) from None


def _band(band: BandMetadata, default_resolution: float | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    dtype = str(band.data_type).lower()
    dtype = _DATA_TYPE_ALIASES.get(dtype, dtype)
    out["data_type"] = dtype if dtype in RASTER_DATA_TYPES else "other"
    if band.nodata is not None:
        out["nodata"] = nodata_value(band.nodata, out["data_type"])
    if band.scale is not None:
        out["scale"] = band.scale
    if band.offset is not None:
        out["offset"] = band.offset
    if band.unit:
        out["unit"] = band.unit
    if band.statistics:
        stats = {}
        for k, v in band.statistics.items():
            name = _STAT_KEYS.get(k.lower())
            if name and v is not None and math.isfinite(float(v)):
                stats[name] = float(v)
        if stats:
            out["statistics"] = stats
    resolution = band.spatial_resolution if band.spatial_resolution else default_resolution
    if resolution:
        out["spatial_resolution"] = resolution
    return out


def nodata_value(value: float | int | str, data_type: str) -> float | int | str:
    """Nodata for raster:bands: a number, or "nan" / "inf" / "-inf" (the raster extension's strings)."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("nan", "inf", "-inf", "+inf"):
            return text.lstrip("+")
        try:
            value = float(text)
        except ValueError:
            raise InvalidItem(f"nodata {value!r} is not a number") from None
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if value.is_integer() and not data_type.startswith(("float", "cfloat")):
            return int(value)
    return value


def _resolution(raster: RasterMetadata) -> float | None:
    a, b, _, d, e, _ = raster.transform[:6]
    rx, ry = math.hypot(a, d), math.hypot(b, e)
    res = rx if math.isclose(rx, ry, rel_tol=1e-9) else min(rx, ry)
    return float(res) if res > 0 else None


def _checksum(sha256: str, source: str) -> str:
    text = sha256.strip().lower()
    if re.fullmatch(r"[0-9a-f]{64}", text):
        return "1220" + text
    if re.fullmatch(r"1220[0-9a-f]{64}", text):
        return text
    raise InvalidItem(f"{source}: the stored COG's sha256 {sha256!r} is not 64 hex digits")


def _check_id(value: str, what: str, rule: str, source: str, hint: str) -> str:
    try:
        return check_id(value, f"{what} (from {rule.replace('_', ' ')})", source)
    except InvalidSidecar as exc:
        raise InvalidItem(f"{exc}; {hint}") from None


@dataclass
class ItemMetadata:
    """What an item takes from its key, its sidecar and the collection settings: everything but the raster's
    fields. ``properties`` holds the temporal fields first, then title and description, then the rest."""

    id: str
    collection: str
    properties: dict[str, Any]
    provenance: dict[str, str] = field(default_factory=dict)


NEEDS_RASTER = "raster_tags (needs the raster)"


def derive_metadata(source: str, collection: str, settings: CollectionSettings, sidecar: Sidecar | None = None,
                    *, sidecar_name: str | None = None,
                    raster_tags: Mapping[str, str] | None = None) -> ItemMetadata:
    """The id, collection, datetime(s), title and properties of the item for ``source`` (the inbox key),
    with the rule behind each (see the module docstring). Raises InvalidItem naming the file.

    ``raster_tags`` are the raster's tags, the third rule for the datetimes. None: the raster has not been
    read (``stacdrop explain`` of a key): when neither the sidecar nor the key template gives a datetime,
    it would come from the tags (or, without any, the defaults), so it is left None with the provenance
    NEEDS_RASTER.
    """
    sidecar_name = sidecar_name or f"{file_stem(source)}.json"
    prov: dict[str, str] = {}

    # Key template.
    tmpl = TemplateFields()
    template_note = ""
    if settings.key_template:
        values = compile_template(settings.key_template).match(path_in_collection(source))
        if values is None:
            template_note = f" (the key template {settings.key_template!r} does not match this path)"
        else:
            tmpl = interpret(values, source)

    # Id.
    if sidecar is not None and sidecar.id:
        item_id, prov["id"] = sidecar.id, "sidecar"
    elif tmpl.id:
        item_id, prov["id"] = tmpl.id, "key_template"
    else:
        item_id, prov["id"] = file_stem(source), "file_name"
    _check_id(
        item_id, "item id", prov["id"], source,
        "rename the file, or set \"id\" in the sidecar, or add an {id} field to the key template",
    )
    _check_id(collection, "collection id", "inbox", source, "rename the collection folder")
    prov["collection"] = "sidecar" if sidecar is not None and sidecar.collection == collection else "inbox"

    # Properties, lowest precedence first.
    defaults = dict(settings.properties)
    described = {k: getattr(sidecar, k) for k in ("title", "description")} if sidecar is not None else {}
    props: dict[str, Any] = {}
    for rule, layer in (
        ("default", {k: v for k, v in defaults.items() if k not in TIME_KEYS}),
        ("key_template", tmpl.properties),
        ("sidecar", {k: v for k, v in (sidecar.properties if sidecar is not None else {}).items()
                     if k not in TIME_KEYS}),
        ("sidecar", {k: v for k, v in described.items() if v is not None}),
    ):
        for k, v in layer.items():
            props[k] = v
            prov[k] = rule

    # Temporal fields: one group, from the first rule that has any.
    tag_times, tag_names = _times_from_tags(raster_tags, source) if raster_tags is not None else ({}, None)
    default_times: dict[str, str | None] = {}
    for key in TIME_KEYS:
        if defaults.get(key) is not None:
            try:
                default_times[key] = parse_datetime(
                    defaults[key], f"properties.{key}", f"collection {collection} settings"
                )
            except InvalidSidecar as exc:
                raise InvalidItem(f"{source}: {exc}") from None
    # The sidecar's datetimes are normalised already (stacdrop.sidecar.Sidecar): taken as they are.
    candidates: list[tuple[str, dict[str, str | None]]] = [
        ("sidecar", {k: getattr(sidecar, k) for k in TIME_KEYS} if sidecar is not None else {}),
        (
            "key_template",
            {"datetime": tmpl.datetime, "start_datetime": tmpl.start_datetime, "end_datetime": tmpl.end_datetime},
        ),
        ("raster_tags", tag_times),
        ("default", default_times),
    ]
    times: dict[str, str | None] = {}
    time_rule = None
    for rule, cand in candidates:
        if rule == "raster_tags" and raster_tags is None:
            time_rule = NEEDS_RASTER  # the tags would decide here: unknown without the raster
            break
        if any(cand.get(k) for k in TIME_KEYS):
            times, time_rule = {k: cand.get(k) for k in TIME_KEYS}, rule
            break
    if time_rule is None:
        raise InvalidItem(
            f"{source}: no datetime for this item: the sidecar, the key template{template_note}, the raster "
            f"tags and the defaults of collection {collection!r} give none (stacdrop never uses the current "
            f"time). Add \"datetime\": \"YYYY-MM-DD\" (the start of the period) to the sidecar {sidecar_name}, "
            "or set the collection's key_template with a {datetime}, {date} or {year} field"
        )
    properties: dict[str, Any] = {"datetime": times.get("datetime")}
    if time_rule == NEEDS_RASTER:
        prov["datetime"] = NEEDS_RASTER
    else:
        start, end = times.get("start_datetime"), times.get("end_datetime")
        if times.get("datetime") is None and not (start and end):
            raise InvalidItem(
                f"{source}: the {time_rule.replace('_', ' ')} gives only "
                f"{'start_datetime' if start else 'end_datetime'}: "
                "give both start_datetime and end_datetime, or a datetime"
            )
        if start and end and parse_time(start) > parse_time(end):
            raise InvalidItem(f"{source}: start_datetime {start} is after end_datetime {end} (from the {time_rule})")
        prov["datetime"] = time_rule if times.get("datetime") else time_rule + " (null: start/end given)"
        for key in ("start_datetime", "end_datetime"):
            if times.get(key):
                properties[key] = times[key]
                prov[key] = time_rule
        if time_rule == "raster_tags" and tag_names:
            prov["datetime"] = f"raster_tags:{tag_names}"
    for k in ("title", "description"):
        if k in props:
            properties[k] = props.pop(k)
    properties.update(props)
    return ItemMetadata(id=item_id, collection=collection, properties=properties, provenance=prov)


def derive_item(ready: RasterReady, settings: CollectionSettings) -> DerivedItem:
    """Build the STAC item for ``ready``. Raises InvalidItem (permanent) naming the file."""
    source = ready.source.key or ready.source.url
    meta = derive_metadata(source, ready.collection, settings, ready.sidecar, sidecar_name=ready.sidecar_name,
                           raster_tags=ready.raster.tags)
    return with_raster_fields(meta, ready, settings)


def with_raster_fields(meta: ItemMetadata, ready: RasterReady, settings: CollectionSettings) -> DerivedItem:
    """The item of ``meta`` with what only the stored COG gives: geometry, bbox, the projection fields, the
    asset with its file and raster:bands fields."""
    source = ready.source.key or ready.source.url
    properties = dict(meta.properties)
    prov = dict(meta.provenance)
    raster = ready.raster
    try:
        geometry, bbox, native = footprint(raster)
        crs = raster_crs(raster)
    except InvalidItem as exc:
        raise InvalidItem(f"{source}: {exc}") from None
    if raster.crs_epsg is not None:
        properties["proj:code"] = f"EPSG:{int(raster.crs_epsg)}"
    else:  # no code (e.g. Interrupted Goode Homolosine): the projection as WKT2
        properties["proj:wkt2"] = _wkt2(crs, raster.crs_wkt2 or "")
    properties["proj:shape"] = [int(raster.height), int(raster.width)]
    properties["proj:transform"] = [float(v) for v in raster.transform]
    properties["proj:bbox"] = native
    for k in ("geometry", "bbox", "assets", *(k for k in properties if k.startswith("proj:"))):
        prov[k] = "raster"

    resolution = _resolution(raster)
    asset: dict[str, Any] = {
        "href": ready.cog.href,
        "type": ready.cog.media_type or MediaType.COG,
        "title": properties.get("title") if isinstance(properties.get("title"), str) else source.rsplit("/", 1)[-1],
        "roles": ["data"],
        "file:size": int(ready.cog.size),
        "file:checksum": _checksum(ready.cog.sha256, source),
    }
    try:
        asset["raster:bands"] = [_band(b, resolution) for b in raster.bands]
    except InvalidItem as exc:
        raise InvalidItem(f"{source}: {exc}") from None

    item = {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": sorted([Extension.FILE.value, Extension.PROJECTION.value, Extension.RASTER.value]),
        "id": meta.id,
        "collection": meta.collection,
        "geometry": geometry,
        "bbox": bbox,
        "properties": properties,
        "links": [],
        "assets": {settings.asset_key: asset},
    }
    return DerivedItem(item=item, provenance=prov)


def _wkt2(crs: CRS, original: str) -> str:
    """The CRS as WKT2 (2019); the original text when pyproj cannot write it."""
    try:
        return crs.to_wkt("WKT2_2019") or original
    except Exception:  # noqa: BLE001
        return original

"""Offline validation of the items and collections stacdrop publishes.

Two layers:

* the STAC 1.1.0 core JSON schema, bundled with pystac. ``stac_extensions`` is stripped for this check
  (extension schemas would be downloaded). The registry has no retrieve function: a ``$ref`` that is not
  bundled raises instead of fetching, so this never touches the network. Compiled validators are cached.
* our own checks of the extension fields we write (projection v2.0.0, raster v1.1.0, file v2.1.0) and of
  what stac-fastapi-pgstac needs (a geometry, a datetime or a start/end pair, ids without forbidden chars).

Errors are InvalidItem naming the source (file) and the field.
"""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from functools import lru_cache
from typing import Any, NoReturn

from jsonschema import Draft7Validator
from jsonschema.exceptions import best_match
from pystac.validation.local_validator import get_local_schema_cache
from referencing import Registry, Resource

from publisher.derive import RASTER_DATA_TYPES
from publisher.errors import InvalidCollection
from stacdrop.errors import InvalidItem, InvalidSidecar
from stacdrop.sidecar import check_id
from stacdrop.stac_terms import EXTENSION_PREFIXES, RelType
from stacdrop.times import NoTimeZone, parse_time


@lru_cache(maxsize=4)
def _validator(kind: str) -> Any:
    cache = get_local_schema_cache()
    registry: Registry = Registry().with_resources(  # no retrieve=: unknown refs fail, never download
        [(uri, Resource.from_contents(schema)) for uri, schema in cache.items()]
    )
    uri = f"https://schemas.stacspec.org/v1.1.0/{kind}-spec/json-schema/{kind}.json"
    schema = cache[uri]
    Draft7Validator.check_schema(schema)
    return Draft7Validator(schema, registry=registry, format_checker=Draft7Validator.FORMAT_CHECKER)


@lru_cache(maxsize=4)
def _fast_validator(kind: str) -> Any:
    """The same schema compiled by jsonschema-rs (hundreds of times faster), or None when not installed.

    Used only to accept: a document it finds valid is valid (it checks formats at least as strictly as the
    Python validator); anything else is decided and explained by the Python validator. Offline: the
    registry holds the bundled schemas and nothing is retrieved.
    """
    try:
        import jsonschema_rs  # noqa: PLC0415 - optional at run time: without it the Python validator decides
    except ImportError:  # pragma: no cover - a declared dependency; the Python validator still works
        return None

    cache = get_local_schema_cache()
    uri = f"https://schemas.stacspec.org/v1.1.0/{kind}-spec/json-schema/{kind}.json"
    try:
        registry = jsonschema_rs.Registry(resources=list(cache.items()))
        return jsonschema_rs.Draft7Validator(cache[uri], registry=registry, validate_formats=True, offline=True)
    except Exception:  # noqa: BLE001 - the fast path is optional; the Python validator decides
        return None


def _core(doc: dict[str, Any], kind: str, source: str, error: type[InvalidItem]) -> None:
    stripped = {**doc, "stac_extensions": []}
    links = doc.get("links")
    # The core schema wants a rel=collection link whenever "collection" is set. Derived items have
    # links [] and each sink adds its own (relative file, API URL): check the item as stored.
    if (
        kind == "item"
        and isinstance(links, list)
        and doc.get("collection") is not None
        and not any(isinstance(link, dict) and link.get("rel") == RelType.COLLECTION for link in links)
    ):
        stripped["links"] = [*links, {"rel": RelType.COLLECTION.value, "href": "./collection.json"}]
    fast = _fast_validator(kind)
    if fast is not None and fast.is_valid(stripped):
        return
    validator = _validator(kind)
    if validator.is_valid(stripped):
        return  # the common case; best_match costs 4x a validation and is only needed to explain errors
    err = best_match(validator.iter_errors(stripped))
    if err is not None:
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise error(f"{source}: {kind} field {where}: {err.message} (STAC 1.1.0 {kind} schema)")


def _fail(source: str, field: str, why: str, error: type[InvalidItem] = InvalidItem) -> NoReturn:
    raise error(f"{source}: {field}: {why}")


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _json_safe(doc: dict[str, Any], source: str, error: type[InvalidItem]) -> None:
    try:
        json.dumps(doc, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise error(f"{source}: not JSON-serialisable (NaN, inf or a non-JSON value?): {exc}") from None


def _check_bbox(bbox: Any, field: str, source: str, error: type[InvalidItem] = InvalidItem) -> None:
    if not isinstance(bbox, list) or len(bbox) not in (4, 6) or not all(_is_num(v) for v in bbox):
        _fail(source, field, f"must be 4 (or 6) finite numbers, got {bbox!r}", error)
    if len(bbox) == 6:
        west, south, east, north = bbox[0], bbox[1], bbox[3], bbox[4]
    else:
        west, south, east, north = bbox
    if not (-180 <= west <= 180 and -180 <= east <= 180):
        _fail(source, field, f"longitudes must be within [-180, 180] (WGS84), got {bbox!r}", error)
    if not (-90 <= south <= 90 and -90 <= north <= 90):
        _fail(source, field, f"latitudes must be within [-90, 90] (WGS84), got {bbox!r}", error)
    if south > north:
        _fail(source, field, f"south {south} is north of north {north}", error)


def _dt(value: Any, field: str, source: str, error: type[InvalidItem] = InvalidItem) -> datetime:
    if not isinstance(value, str):
        _fail(source, field, f"must be an RFC 3339 string, got {value!r}", error)
    try:
        return parse_time(value, naive_as_utc=False)  # RFC 3339 requires the offset
    except NoTimeZone:
        _fail(source, field, f"{value!r} has no time zone (use Z)", error)
    except (ValueError, OverflowError):
        _fail(source, field, f"{value!r} is not an RFC 3339 datetime", error)


def _check_id(value: Any, field: str, source: str, error: type[InvalidItem]) -> None:
    try:
        check_id(value, field, source)
    except InvalidSidecar as exc:
        raise error(str(exc)) from None


def validate_item(item: dict[str, Any], source: str) -> None:
    """Validate a STAC item we are about to publish. Raises InvalidItem naming ``source`` and the field."""
    if not isinstance(item, dict):
        raise InvalidItem(f"{source}: an item must be a JSON object")
    _json_safe(item, source, InvalidItem)
    if item.get("geometry") is None:
        _fail(source, "geometry", "is null; the STAC API (pgstac) requires a geometry")
    _core(item, "item", source, InvalidItem)
    _check_id(item.get("id"), "id", source, InvalidItem)
    if not isinstance(item.get("collection"), str):
        _fail(source, "collection", "is missing (every published item belongs to a collection)")
    _check_id(item["collection"], "collection", source, InvalidItem)
    _check_bbox(item.get("bbox"), "bbox", source)

    props = item["properties"]
    dt, start, end = props.get("datetime"), props.get("start_datetime"), props.get("end_datetime")
    if dt is None and (start is None or end is None):
        _fail(source, "properties.datetime", "is null and start_datetime/end_datetime are not both set")
    if dt is not None:
        _dt(dt, "properties.datetime", source)
    if (
        start is not None
        and end is not None
        and _dt(start, "properties.start_datetime", source) > _dt(end, "properties.end_datetime", source)
    ):
        _fail(source, "properties.start_datetime", f"{start} is after end_datetime {end}")

    used = _extension_prefixes(item)
    declared = set(item.get("stac_extensions") or [])
    for prefix, schema in EXTENSION_PREFIXES.items():
        if prefix in used and schema not in declared:
            _fail(source, "stac_extensions", f"fields {prefix}* are used but {schema} is not declared")

    _check_projection(props, "properties", source)
    assets = item.get("assets") or {}
    if not assets:
        _fail(source, "assets", "the item has no asset")
    data_assets = 0
    for key, asset in assets.items():
        where = f"assets.{key}"
        if not isinstance(asset.get("href"), str) or not asset["href"].strip():
            _fail(source, f"{where}.href", "must be a non-empty string")
        roles = asset.get("roles")
        if roles is not None and (not isinstance(roles, list) or not all(isinstance(r, str) and r for r in roles)):
            _fail(source, f"{where}.roles", f"must be a list of non-empty strings, got {roles!r}")
        if roles and "data" in roles:
            data_assets += 1
        _check_projection(asset, where, source)
        _check_file(asset, where, source)
        if "raster:bands" in asset:
            _check_bands(asset["raster:bands"], f"{where}.raster:bands", source)
    if not data_assets:
        _fail(source, "assets", "no asset has the role \"data\" (clients look for it)")


def _extension_prefixes(doc: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(doc, dict):
        for k, v in doc.items():
            for prefix in EXTENSION_PREFIXES:
                if isinstance(k, str) and k.startswith(prefix):
                    found.add(prefix)
            found |= _extension_prefixes(v)
    elif isinstance(doc, list):
        for v in doc:
            found |= _extension_prefixes(v)
    return found


def _check_projection(obj: dict[str, Any], where: str, source: str) -> None:
    code = obj.get("proj:code")
    if code is not None and (not isinstance(code, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+:\S+", code)):
        _fail(source, f"{where}.proj:code", f"must be an 'AUTHORITY:CODE' string, got {code!r}")
    wkt2 = obj.get("proj:wkt2")
    if wkt2 is not None and (not isinstance(wkt2, str) or not wkt2.strip()):
        _fail(source, f"{where}.proj:wkt2", "must be a non-empty string")
    if "proj:shape" in obj:
        shape = obj["proj:shape"]
        if not (
            isinstance(shape, list)
            and len(shape) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape)
        ):
            _fail(source, f"{where}.proj:shape", f"must be [rows, columns] positive integers, got {shape!r}")
    if "proj:transform" in obj:
        t = obj["proj:transform"]
        if not (isinstance(t, list) and len(t) in (6, 9) and all(_is_num(v) for v in t)):
            _fail(source, f"{where}.proj:transform", f"must be 6 or 9 finite numbers, got {t!r}")
    if "proj:bbox" in obj:
        b = obj["proj:bbox"]
        if not (isinstance(b, list) and len(b) in (4, 6) and all(_is_num(v) for v in b)):
            _fail(source, f"{where}.proj:bbox", f"must be 4 or 6 finite numbers, got {b!r}")


def _check_file(asset: dict[str, Any], where: str, source: str) -> None:
    if "file:size" in asset:
        size = asset["file:size"]
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            _fail(source, f"{where}.file:size", f"must be a non-negative integer, got {size!r}")
    if "file:checksum" in asset:
        cs = asset["file:checksum"]
        if not isinstance(cs, str) or not re.fullmatch(r"(?:[0-9a-f]{2})+", cs) or not _is_multihash(bytes.fromhex(cs)):
            _fail(
                source,
                f"{where}.file:checksum",
                f"must be a lowercase hex multihash (sha256: '1220' + 64 hex digits), got {cs!r}",
            )
        if cs.startswith("12") and not re.fullmatch(r"1220[0-9a-f]{64}", cs):
            _fail(source, f"{where}.file:checksum", f"sha2-256 multihash must be '1220' + 64 hex digits, got {cs!r}")


def _varint(data: bytes, pos: int) -> tuple[int, int] | None:
    value, shift = 0, 0
    while pos < len(data) and shift < 63:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None


def _is_multihash(data: bytes) -> bool:
    """<varint hash code><varint digest length><digest>."""
    code = _varint(data, 0)
    if code is None:
        return False
    length = _varint(data, code[1])
    return length is not None and length[0] > 0 and len(data) - length[1] == length[0]


def _check_bands(bands: Any, where: str, source: str) -> None:
    if not isinstance(bands, list) or not bands:
        _fail(source, where, "must be a non-empty list")
    for i, band in enumerate(bands):
        at = f"{where}[{i}]"
        if not isinstance(band, dict):
            _fail(source, at, "must be an object")
        if "data_type" in band and band["data_type"] not in RASTER_DATA_TYPES:
            _fail(source, f"{at}.data_type", f"{band['data_type']!r} is not one of {sorted(RASTER_DATA_TYPES)}")
        if "nodata" in band:
            nd = band["nodata"]
            if not (_is_num(nd) or nd in ("nan", "inf", "-inf")):
                _fail(source, f"{at}.nodata", f"must be a number or \"nan\", \"inf\", \"-inf\", got {nd!r}")
        for key in ("scale", "offset"):
            if key in band and not _is_num(band[key]):
                _fail(source, f"{at}.{key}", f"must be a number, got {band[key]!r}")
        resolution = band.get("spatial_resolution", 0)
        if "spatial_resolution" in band and not (_is_num(resolution) and resolution > 0):
            _fail(source, f"{at}.spatial_resolution", f"must be a positive number, got {resolution!r}")
        if "unit" in band and not isinstance(band["unit"], str):
            _fail(source, f"{at}.unit", "must be a string")
        if "statistics" in band:
            stats = band["statistics"]
            if not isinstance(stats, dict) or not all(_is_num(v) for v in stats.values()):
                _fail(source, f"{at}.statistics", f"must be an object of numbers, got {stats!r}")
            if "minimum" in stats and "maximum" in stats and stats["minimum"] > stats["maximum"]:
                _fail(source, f"{at}.statistics", "minimum is greater than maximum")
            if "valid_percent" in stats and not 0 <= stats["valid_percent"] <= 100:
                _fail(source, f"{at}.statistics.valid_percent", "must be within [0, 100]")


def validate_collection(col: dict[str, Any], source: str) -> None:
    """Validate a STAC collection. Raises InvalidCollection (an InvalidItem) naming ``source`` and the field."""
    if not isinstance(col, dict):
        raise InvalidCollection(f"{source}: a collection must be a JSON object")
    _json_safe(col, source, InvalidCollection)
    if col.get("type") != "Collection":
        _fail(source, "type", f"must be \"Collection\", got {col.get('type')!r}", InvalidCollection)
    _core(col, "collection", source, InvalidCollection)
    _check_id(col.get("id"), "id", source, InvalidCollection)
    bboxes = col["extent"]["spatial"]["bbox"]
    for i, bbox in enumerate(bboxes):
        _check_bbox(bbox, f"extent.spatial.bbox[{i}]", source, InvalidCollection)
    for i, interval in enumerate(col["extent"]["temporal"]["interval"]):
        where = f"extent.temporal.interval[{i}]"
        start = _dt(interval[0], where + "[0]", source, InvalidCollection) if interval[0] is not None else None
        end = _dt(interval[1], where + "[1]", source, InvalidCollection) if interval[1] is not None else None
        if start and end and start > end:
            _fail(source, where, f"start {interval[0]} is after end {interval[1]}", InvalidCollection)

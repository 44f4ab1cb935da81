"""The sidecar: ``NAME.json`` next to ``NAME.tif``, the user's word on the item.

Every field is optional. The original system's ``/newitem`` fields are accepted as aliases:
``collection_id`` -> ``collection``, ``name`` -> ``id``, ``date`` -> ``datetime``.
"""

from __future__ import annotations

import json
import re
from datetime import date, datetime, timezone
from typing import Any

from pydantic import BaseModel, Field

from stacdrop.errors import InvalidSidecar

# Characters that stac-fastapi-pgstac rejects in ids (it answers 400), and that break paths and URLs.
FORBIDDEN_ID_CHARS = set(":/?#[]@!$&'()*+,;=")
ALIASES = {"collection_id": "collection", "name": "id", "date": "datetime"}
KNOWN_FIELDS = {
    "collection", "id", "datetime", "start_datetime", "end_datetime", "title", "description", "properties",
}
# Fields of the original /newitem body that carry no item metadata.
IGNORED_FIELDS = {"filename", "stac_api_server", "file_source_host"}


class Sidecar(BaseModel):
    collection: str | None = None
    id: str | None = None
    datetime: str | None = Field(default=None, description="ISO 8601, UTC, normalised")
    start_datetime: str | None = None
    end_datetime: str | None = None
    title: str | None = None
    description: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


def check_id(value: str, what: str, source: str) -> str:
    """Reject ids that a STAC API, a URL or a path cannot carry. Never rewrite them silently."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidSidecar(f"{source}: {what} must be a non-empty string")
    bad = sorted({c for c in value if c in FORBIDDEN_ID_CHARS or c.isspace() or ord(c) < 32})
    if bad or value in (".", "..") or value.startswith("."):
        shown = " ".join(repr(c) for c in bad) if bad else repr(value)
        raise InvalidSidecar(f"{source}: {what} {value!r} contains forbidden characters: {shown}")
    return value


_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_YEAR_ONLY = re.compile(r"^\d{4}$")


def parse_datetime(value: Any, what: str, source: str) -> str:
    """Normalise a date or datetime to RFC 3339 UTC (``...Z``). A naive time is taken as UTC."""
    if isinstance(value, (int,)) and not isinstance(value, bool) and 1000 <= value <= 9999:
        value = str(value)
    if not isinstance(value, str):
        raise InvalidSidecar(f"{source}: {what} must be a string like 2018-01-01T00:00:00Z, got {value!r}")
    text = value.strip()
    try:
        if _YEAR_ONLY.match(text):
            parsed = datetime(int(text), 1, 1, tzinfo=timezone.utc)
        elif _DATE_ONLY.match(text):
            d = date.fromisoformat(text)
            parsed = datetime(d.year, d.month, d.day, tzinfo=timezone.utc)
        else:
            parsed = parse_iso_utc(text)
    except ValueError:
        raise InvalidSidecar(f"{source}: {what} {value!r} is not a date or an RFC 3339 datetime") from None
    return format_datetime(parsed)


def parse_iso_utc(text: str) -> datetime:
    """An ISO 8601 / RFC 3339 datetime; ``Z`` accepted, a naive time taken as UTC. Raises ValueError."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=timezone.utc)


def format_datetime(value: datetime) -> str:
    value = value.astimezone(timezone.utc)
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def sidecar_from_dict(data: Any, source: str) -> Sidecar:
    """Validate and normalise sidecar fields (also used for HTTP submissions)."""
    if not isinstance(data, dict):
        raise InvalidSidecar(f"{source}: the sidecar must be a JSON object, got {type(data).__name__}")
    fields: dict[str, Any] = {}
    for name, value in data.items():
        target = ALIASES.get(name, name)
        if name in IGNORED_FIELDS:
            continue
        if target not in KNOWN_FIELDS:
            # Unknown top-level fields are kept as properties rather than dropped.
            fields.setdefault("_extra", {})[name] = value
            continue
        if target in fields and fields[target] != value:
            raise InvalidSidecar(f"{source}: both {target!r} and its alias {name!r} are set, to different values")
        fields[target] = value
    extra = fields.pop("_extra", {})
    props = fields.get("properties", {})
    if props is None:
        props = {}
    if not isinstance(props, dict):
        raise InvalidSidecar(f"{source}: 'properties' must be a JSON object")
    props = {**extra, **props}
    # Dates the original system put inside properties stay where users filter on them, but a
    # properties.datetime also sets the item datetime when no top-level one is given.
    for key in ("datetime", "start_datetime", "end_datetime"):
        if key in props and key not in fields:
            fields[key] = props.pop(key)
        elif key in props:
            props.pop(key)
    fields["properties"] = props
    for key in ("collection", "id"):
        if fields.get(key) is not None:
            check_id(fields[key], key, source)
    for key in ("datetime", "start_datetime", "end_datetime"):
        if fields.get(key) is not None:
            fields[key] = parse_datetime(fields[key], key, source)
    for key in ("title", "description"):
        if fields.get(key) is not None and not isinstance(fields[key], str):
            raise InvalidSidecar(f"{source}: {key} must be a string")
    start, end = fields.get("start_datetime"), fields.get("end_datetime")
    if (start is None) != (end is None) and fields.get("datetime") is None:
        raise InvalidSidecar(f"{source}: start_datetime and end_datetime must be given together")
    if start and end and start > end:
        raise InvalidSidecar(f"{source}: start_datetime {start} is after end_datetime {end}")
    return Sidecar(**fields)


def parse_sidecar(text: str, source: str) -> Sidecar:
    """Parse sidecar JSON text; errors name ``source`` (the file) and the reason."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidSidecar(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    return sidecar_from_dict(data, source)

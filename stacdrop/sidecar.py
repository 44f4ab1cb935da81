"""The sidecar: ``NAME.json`` next to ``NAME.tif``, the user's word on the item.

This module is the one place where sidecar bytes and fields are judged, for every way in: files of the
local and S3 inboxes, the HTTP API's request bodies (``POST /jobs``, ``POST /newitem``) and the processor.
Whatever the input, the answer is a ``Sidecar`` or an ``InvalidSidecar`` with a one-line reason that
names the file and never holds its content; nothing else escapes (``tests/unit/kernel/test_sidecar_strict.py`` checks
it with hypothesis). Each of these is refused at once, on the first attempt:

- more bytes than ``max_sidecar_bytes`` (the readers stop at that many + 1: ``stacdrop.containment.read_limited``);
- not UTF-8 (a UTF-8 byte order mark is dropped; a UTF-16/32 one is named);
- not JSON: syntax, NaN/Infinity (JSON has neither; Python's parser takes them and 1e400 becomes inf),
  integers too long for Python to convert, nesting deeper than ``MAX_DEPTH``, strings with lone UTF-16
  surrogate escapes (``"\\ud800"`` parses, then fails to encode much later) or U+0000 (PostgreSQL's
  jsonb cannot store it);
- unknown top-level fields: item properties go under ``properties``; the per-collection setting
  ``sidecar_extra_fields = "properties"`` brings back the old behaviour (unknown fields become properties);
- ids that a STAC API, a URL or a path cannot carry, datetimes that are not RFC 3339 or fall outside
  years 1-9999 once in UTC (``9999-12-31T23:00:00-05:00``).

Every field is optional. The original system's ``/newitem`` fields are accepted as aliases:
``collection_id`` -> ``collection``, ``name`` -> ``id``, ``date`` -> ``datetime``.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from stacdrop.errors import InvalidSidecar
from stacdrop.times import format_time, parse_time

if TYPE_CHECKING:
    from stacdrop.config import Collections

# Characters that stac-fastapi-pgstac rejects in ids (it answers 400), and that break paths and URLs.
FORBIDDEN_ID_CHARS = set(":/?#[]@!$&'()*+,;=")
ALIASES = {"collection_id": "collection", "name": "id", "date": "datetime"}
KNOWN_FIELDS = {
    "collection", "id", "datetime", "start_datetime", "end_datetime", "title", "description", "properties",
}
# Fields of the original /newitem body that carry no item metadata.
IGNORED_FIELDS = {"filename", "stac_api_server", "file_source_host"}
ALLOWED_FIELDS = (
    "collection", "id", "datetime", "start_datetime", "end_datetime", "title", "description", "properties",
    *ALIASES, *sorted(IGNORED_FIELDS),
)
# Deeper than any real sidecar; shallow enough that no parser or serializer down the line recurses too far.
MAX_DEPTH = 64
_BOMS = {b"\xff\xfe\x00\x00": "UTF-32", b"\x00\x00\xfe\xff": "UTF-32", b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}


class Sidecar(BaseModel):
    """A parsed sidecar (``parse_sidecar``, ``sidecar_from_dict``): the ids checked, the datetimes normalised
    to RFC 3339 UTC strings (``...Z``, as ``parse_datetime`` writes them), aliases resolved, datetimes out of
    ``properties``. It travels on RasterReady as it is, so the publisher reads these fields without parsing
    them again."""

    collection: str | None = None
    id: str | None = None
    datetime: str | None = Field(default=None, description="RFC 3339, UTC, normalised")
    start_datetime: str | None = Field(default=None, description="RFC 3339, UTC, normalised")
    end_datetime: str | None = Field(default=None, description="RFC 3339, UTC, normalised")
    title: str | None = None
    description: str | None = None
    properties: dict[str, Any] = Field(default_factory=dict)


def shown(value: Any, limit: int = 60) -> str:
    """A value for an error message: its repr on one line, cut at ``limit`` characters."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_id(value: str, what: str, source: str) -> str:
    """Reject ids that a STAC API, a URL or a path cannot carry. Never rewrite them silently."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidSidecar(f"{source}: {what} must be a non-empty string")
    bad = sorted({c for c in value if c in FORBIDDEN_ID_CHARS or c.isspace() or ord(c) < 32})
    if bad or value in (".", "..") or value.startswith("."):
        chars = " ".join(repr(c) for c in bad[:10]) if bad else shown(value)
        raise InvalidSidecar(f"{source}: {what} {shown(value)} contains forbidden characters: {chars}")
    return value


_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_YEAR_ONLY = re.compile(r"^\d{4}$")


def parse_datetime(value: Any, what: str, source: str) -> str:
    """Normalise a date or datetime to RFC 3339 UTC (``...Z``). A naive time is taken as UTC."""
    if isinstance(value, (int,)) and not isinstance(value, bool) and 1000 <= value <= 9999:
        value = str(value)
    if not isinstance(value, str):
        raise InvalidSidecar(f"{source}: {what} must be a string like 2018-01-01T00:00:00Z, got {shown(value)}")
    text = value.strip()
    try:
        if _YEAR_ONLY.match(text):
            parsed = datetime(int(text), 1, 1, tzinfo=timezone.utc)
        elif _DATE_ONLY.match(text):
            d = date.fromisoformat(text)
            parsed = datetime(d.year, d.month, d.day, tzinfo=timezone.utc)
        else:
            parsed = parse_time(text)
        return format_time(parsed)
    except ValueError:
        raise InvalidSidecar(f"{source}: {what} {shown(value)} is not a date or an RFC 3339 datetime") from None
    except OverflowError:
        # 9999-12-31T23:00:00-05:00 is year 10000 in UTC; 0001-01-01T00:00:00+01:00 is year 0.
        raise InvalidSidecar(f"{source}: {what} {shown(value)} is out of range: in UTC it falls outside the "
                             "years 1 to 9999") from None


# -- bytes and JSON -----------------------------------------------------------------------------------


def decode_text(data: bytes, source: str) -> str:
    """Sidecar bytes as text: UTF-8, a UTF-8 byte order mark dropped. Raises InvalidSidecar."""
    for bom, encoding in _BOMS.items():
        if data.startswith(bom):
            raise InvalidSidecar(f"{source}: the sidecar is {encoding} text (byte order mark); save it as UTF-8")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidSidecar(f"{source}: the sidecar is not UTF-8 text (invalid byte at offset {exc.start}); "
                             "save it as UTF-8") from None


class _NonFinite(ValueError):
    pass


def _refuse_constant(name: str) -> Any:
    raise _NonFinite(name)


def load_json(raw: str | bytes, source: str) -> Any:
    """Parse JSON text (or UTF-8 bytes) as the sidecar rules allow it; see the module docstring."""
    text = decode_text(raw, source) if isinstance(raw, (bytes, bytearray)) else raw
    try:
        data = json.loads(text, parse_constant=_refuse_constant)
    except json.JSONDecodeError as exc:
        raise InvalidSidecar(f"{source}: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except _NonFinite as exc:
        raise InvalidSidecar(f"{source}: {exc} is not a JSON number (NaN and Infinity are not allowed)") from None
    except RecursionError:
        raise InvalidSidecar(f"{source}: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError:
        # The only other ValueError of the parser: an integer longer than Python converts (4300 digits).
        raise InvalidSidecar(f"{source}: not valid JSON (a number with too many digits)") from None
    check_json_values(data, source)
    return data


def _where(path: tuple[str | int, ...]) -> str:
    parts: list[str] = []
    for part in path:
        parts.append(f"[{part}]" if isinstance(part, int) else ("." if parts else "") + shown(part, 40).strip("'\""))
    return "".join(parts) or "the top level"


def _bad_string(value: str) -> str | None:
    if "\x00" in value:
        return "holds U+0000 (not storable)"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"holds a lone surrogate \\u{ord(value[exc.start]):04x} (not valid Unicode)"
    return None


def check_json_values(data: Any, source: str) -> None:
    """Refuse what JSON text may hold but nothing after us can store: see the module docstring. Iterative,
    so that it never recurses however deep the input (Python objects from elsewhere, e.g. a parsed body)."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(data, ())]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_DEPTH:
            raise InvalidSidecar(f"{source}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                if not isinstance(key, str):
                    raise InvalidSidecar(f"{source}: a key at {_where(path)} is not a string")
                problem = _bad_string(key)
                if problem:
                    raise InvalidSidecar(f"{source}: a key at {_where(path)} {problem}")
                stack.append((item, (*path, key)))
        elif isinstance(value, list):
            stack.extend((item, (*path, i)) for i, item in enumerate(value))
        elif isinstance(value, str):
            problem = _bad_string(value)
            if problem:
                raise InvalidSidecar(f"{source}: the string at {_where(path)} {problem}")
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidSidecar(f"{source}: the number at {_where(path)} is out of range (NaN and Infinity "
                                     "are not allowed)")
        elif not (value is None or isinstance(value, (bool, int))):
            raise InvalidSidecar(f"{source}: {type(value).__name__} at {_where(path)} is not a JSON value")


# -- fields -------------------------------------------------------------------------------------------


def extra_fields_policy(data: dict[str, Any], collections: Collections | None, collection: str) -> str:
    """``reject`` or ``properties``: the setting of the collection the sidecar names, else of ``collection``."""
    if collections is None:
        return "reject"
    named = data.get("collection", data.get("collection_id"))
    target = named if isinstance(named, str) and named else collection
    return collections.get(target).sidecar_extra_fields


def sidecar_from_dict(data: Any, source: str, collections: Collections | None = None, collection: str = "") -> Sidecar:
    """Validate and normalise sidecar fields (also used for HTTP submissions). ``collections`` and
    ``collection`` (the inbox folder's) choose the unknown-field policy; without them they are refused."""
    if not isinstance(data, dict):
        raise InvalidSidecar(f"{source}: the sidecar must be a JSON object, got {type(data).__name__}")
    check_json_values(data, source)
    return _sidecar_from_checked(data, source, collections, collection)


def _sidecar_from_checked(
    data: dict[str, Any], source: str, collections: Collections | None, collection: str
) -> Sidecar:
    unknown = [name for name in data if ALIASES.get(name, name) not in KNOWN_FIELDS and name not in IGNORED_FIELDS]
    keep_unknown = bool(unknown) and extra_fields_policy(data, collections, collection) == "properties"
    if unknown and not keep_unknown:
        names = ", ".join(shown(n, 40) for n in unknown[:10])
        if len(unknown) > 10:
            names += f" and {len(unknown) - 10} more"
        raise InvalidSidecar(
            f"{source}: unknown top-level field{'s' if len(unknown) > 1 else ''} {names}; allowed: "
            f"{', '.join(ALLOWED_FIELDS)}. Put item properties under \"properties\" (or set "
            f"sidecar_extra_fields = \"properties\" for the collection)"
        )
    fields: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for name, value in data.items():
        target = ALIASES.get(name, name)
        if name in IGNORED_FIELDS:
            continue
        if target not in KNOWN_FIELDS:
            extra[name] = value  # sidecar_extra_fields = "properties": kept as properties, not dropped
            continue
        if target in fields and fields[target] != value:
            raise InvalidSidecar(f"{source}: both {target!r} and its alias {name!r} are set, to different values")
        fields[target] = value
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


def parse_sidecar(
    raw: str | bytes, source: str, collections: Collections | None = None, collection: str = ""
) -> Sidecar:
    """Parse sidecar JSON text or bytes; errors name ``source`` (the file) and the reason."""
    data = load_json(raw, source)
    if not isinstance(data, dict):
        raise InvalidSidecar(f"{source}: the sidecar must be a JSON object, got {type(data).__name__}")
    return _sidecar_from_checked(data, source, collections, collection)


# -- what the intake carries --------------------------------------------------------------------------


@dataclass(frozen=True)
class SidecarDocument:
    """A sidecar as a job carries it: its text only when it is a valid sidecar; otherwise its size, its
    sha256 and why it was refused. An invalid sidecar's text is never stored: it may be anything (a
    symlinked secret, a binary) and it would be copied into the ledger, the messages and the dead letters."""

    name: str
    size: int | None  # None: not read at all (outside the inbox, not a regular file)
    sha256: str | None
    text: str | None = None
    error_class: str | None = None
    error: str | None = None

    @classmethod
    def valid(cls, name: str, text: str) -> SidecarDocument:
        data = text.encode("utf-8")
        return cls(name=name, size=len(data), sha256=hashlib.sha256(data).hexdigest(), text=text)

    @classmethod
    def refused(cls, name: str, exc: Exception, *, size: int | None = None, sha256: str | None = None,
                error_class: str | None = None) -> SidecarDocument:
        return cls(name=name, size=size, sha256=sha256, error=str(exc),
                   error_class=error_class or getattr(exc, "error_class", InvalidSidecar.error_class))


def too_large(name: str, size: int, limit: int) -> InvalidSidecar:
    return InvalidSidecar(f"{name}: the sidecar is {size} bytes or more, over max_sidecar_bytes ({limit}); "
                          "raise the setting if such sidecars are expected")


def sidecar_document(data: bytes, name: str, collections: Collections | None, collection: str, *,
                     limit: int | None) -> SidecarDocument:
    """Judge a sidecar file's bytes (at most ``limit`` (``max_sidecar_bytes``) + 1 of them, see
    ``read_limited``)."""
    sha = hashlib.sha256(data).hexdigest()
    if limit is not None and len(data) > limit:
        return SidecarDocument.refused(name, too_large(name, len(data), limit), size=len(data), sha256=sha)
    try:
        text = decode_text(data, name)
        parse_sidecar(text, name, collections, collection)
    except InvalidSidecar as exc:
        return SidecarDocument.refused(name, exc, size=len(data), sha256=sha)
    return SidecarDocument(name=name, size=len(data), sha256=sha, text=text)

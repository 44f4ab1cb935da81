"""Key templates: item fields read from the path of a raster inside its collection folder.

Syntax (``CollectionSettings.key_template``)::

    {name}          one or more characters except '/', as few as possible (non-greedy)
    {name:REGEX}    a custom pattern, e.g. {year:\\d{4}} or {tile:[0-9]+[NS]}; braces may nest in REGEX
    *               zero or more characters except '/', greedy, not captured (a wildcard within one segment)
    {{  }}          a literal '{' or '}'
    anything else   literal text (regex metacharacters need no escaping)

The template must match the whole path. A template without '/' is matched against the file name (the
last segment), so files in sub-folders of the collection folder match it too; a template with '/' is
matched against the whole path inside the collection folder (the Source key minus its first segment).
A name used twice must match the same text both times (``{year}/tas_{year}.tif``).

Understood fields (they build the item, see ``interpret``): ``id``, ``datetime``, ``start_datetime``,
``end_datetime``, ``date`` (YYYY-MM-DD or YYYYMMDD), ``year``, ``month``, ``day``. Every other field becomes an
item property with the matched text as a string (``"06"`` stays ``"06"``); ``year``, ``month`` and ``day``
also become integer properties (the original catalog's users filter on them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache

from stacdrop.errors import ConfigError, InvalidItem
from stacdrop.times import format_time, parse_time

ID_FIELDS = {"id"}
TIME_FIELDS = {"datetime", "start_datetime", "end_datetime", "date", "year", "month", "day"}
INT_PROPERTIES = ("year", "month", "day")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_DEFAULT_PATTERN = r"[^/]+?"
_WILDCARD = r"[^/]*"


@dataclass(frozen=True)
class KeyTemplate:
    template: str
    regex: re.Pattern[str]
    fields: tuple[str, ...]
    basename_only: bool

    def match(self, path: str) -> dict[str, str] | None:
        """The fields read from ``path`` (the path inside the collection folder), or None."""
        target = path.rsplit("/", 1)[-1] if self.basename_only else path.strip("/")
        m = self.regex.fullmatch(target)
        if m is None:
            return None
        return {name: m.group(name) for name in self.fields}


@lru_cache(maxsize=256)
def compile_template(template: str) -> KeyTemplate:
    """Compile a key template. Raises ConfigError naming the template and the problem."""
    if not isinstance(template, str) or not template.strip():
        raise ConfigError(f"key_template {template!r}: must be a non-empty string")
    parts: list[str] = []
    names: list[str] = []
    i, n = 0, len(template)
    while i < n:
        c = template[i]
        if c == "{":
            if template.startswith("{{", i):
                parts.append(re.escape("{"))
                i += 2
                continue
            end, depth = i + 1, 1
            while end < n and depth:
                if template[end] == "\\":
                    end += 2
                    continue
                depth += {"{": 1, "}": -1}.get(template[end], 0)
                end += 1
            if depth:
                raise ConfigError(f"key_template {template!r}: unclosed '{{' at position {i}")
            body = template[i + 1 : end - 1]
            name, sep, pattern = body.partition(":")
            name = name.strip()
            if not _NAME.match(name):
                raise ConfigError(
                    f"key_template {template!r}: field name {name!r} at position {i} must be a word "
                    "(letters, digits, '_'), e.g. {year} or {year:\\d{4}}"
                )
            if sep and not pattern:
                raise ConfigError(f"key_template {template!r}: field {{{name}:}} has an empty pattern")
            if name in names:
                parts.append(f"(?P={name})")
            else:
                if sep:
                    try:
                        re.compile(pattern)
                    except re.error as exc:
                        raise ConfigError(
                            f"key_template {template!r}: field {name!r} has an invalid pattern {pattern!r}: {exc}"
                        ) from None
                    parts.append(f"(?P<{name}>(?:{pattern}))")
                else:
                    parts.append(f"(?P<{name}>{_DEFAULT_PATTERN})")
                names.append(name)
            i = end
        elif c == "}":
            if template.startswith("}}", i):
                parts.append(re.escape("}"))
                i += 2
                continue
            raise ConfigError(f"key_template {template!r}: unmatched '}}' at position {i} (write '}}}}' for a literal)")
        elif c == "*":
            parts.append(_WILDCARD)
            i += 1
        else:
            parts.append(re.escape(c))
            i += 1
    try:
        regex = re.compile("".join(parts))
    except re.error as exc:  # e.g. a custom pattern that defines a clashing group name
        raise ConfigError(f"key_template {template!r}: {exc}") from None
    found = set(names)
    if ("start_datetime" in found) != ("end_datetime" in found) and not found & {"datetime", "date", "year"}:
        raise ConfigError(
            f"key_template {template!r}: start_datetime and end_datetime must be used together "
            "(or add a datetime, date or year field)"
        )
    return KeyTemplate(template=template, regex=regex, fields=tuple(names), basename_only="/" not in template)


@dataclass
class TemplateFields:
    """What a matched template contributes to the item."""

    id: str | None = None
    datetime: str | None = None
    start_datetime: str | None = None
    end_datetime: str | None = None
    properties: dict[str, str | int] = field(default_factory=dict)

    @property
    def has_time(self) -> bool:
        return any((self.datetime, self.start_datetime, self.end_datetime))


_COMPACT = re.compile(r"^(\d{4})(\d{2})(\d{2})(?:[T_ ]?(\d{2})(\d{2})(\d{2})?)?(Z)?$")
_YEAR_MONTH = re.compile(r"^(\d{4})-?(\d{2})$")


def parse_time_text(text: str, what: str, source: str) -> str:
    """A date or datetime read from a file name, as RFC 3339 UTC.

    Accepts YYYY, YYYY-MM, YYYYMM, YYYY-MM-DD, YYYYMMDD, YYYYMMDDTHHMM[SS], and RFC 3339 / ISO 8601.
    """
    value = text.strip()
    try:
        if re.fullmatch(r"\d{4}", value):
            parsed = datetime(int(value), 1, 1, tzinfo=timezone.utc)
        elif m := _YEAR_MONTH.match(value):
            parsed = datetime(int(m[1]), int(m[2]), 1, tzinfo=timezone.utc)
        elif m := _COMPACT.match(value):
            parsed = datetime(
                int(m[1]), int(m[2]), int(m[3]), int(m[4] or 0), int(m[5] or 0), int(m[6] or 0), tzinfo=timezone.utc
            )
        else:
            parsed = parse_time(value)
    except ValueError:
        raise InvalidItem(f"{source}: key template field {what}={text!r} is not a date or datetime") from None
    return format_time(parsed)


def interpret(values: dict[str, str], source: str) -> TemplateFields:
    """Turn matched template fields into an id, datetimes and properties. Errors name ``source``."""
    out = TemplateFields()
    for name, text in values.items():
        if name not in ID_FIELDS | TIME_FIELDS:
            out.properties[name] = text
    ints: dict[str, int] = {}
    for name in INT_PROPERTIES:
        if name in values:
            text = values[name]
            if not text.isdigit():
                raise InvalidItem(f"{source}: key template field {name}={text!r} is not a number")
            ints[name] = int(text)
            out.properties[name] = ints[name]
    if "month" in ints and not 1 <= ints["month"] <= 12:
        raise InvalidItem(f"{source}: key template field month={values['month']!r} is not a month (01-12)")
    if "id" in values:
        out.id = values["id"]
    if "datetime" in values:
        out.datetime = parse_time_text(values["datetime"], "datetime", source)
    elif "date" in values:
        text = values["date"]
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}|\d{8}", text):
            raise InvalidItem(f"{source}: key template field date={text!r} is not YYYY-MM-DD or YYYYMMDD")
        out.datetime = parse_time_text(text, "date", source)
    elif "year" in ints:
        try:
            out.datetime = format_time(
                datetime(ints["year"], ints.get("month", 1), ints.get("day", 1), tzinfo=timezone.utc)
            )
        except ValueError as exc:
            raise InvalidItem(f"{source}: key template fields year/month/day make no date: {exc}") from None
    for name in ("start_datetime", "end_datetime"):
        if name in values:
            setattr(out, name, parse_time_text(values[name], name, source))
    return out

"""Time, the one pair of helpers (as pystac has): parse an RFC 3339 / ISO 8601 text, format a UTC time.

Every time stacdrop stores, compares or shows is timezone-aware UTC. A naive time read from outside (a
sidecar, a query parameter, an old ledger row) is taken as UTC, never as the host's local time, so two
hosts in different zones agree on what a job's ``created_at`` means. Formatting never uses ``strftime``:
its ``%Y`` does not pad years below 1000 to four digits on every platform.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

UTC = timezone.utc
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def utcnow() -> datetime:
    """Now, timezone-aware UTC."""
    return datetime.now(UTC)


class NoTimeZone(ValueError):
    """A datetime without an offset where RFC 3339 requires one (a STAC item's datetimes)."""


def parse_time(text: str, *, naive_as_utc: bool = True) -> datetime:
    """An RFC 3339 / ISO 8601 datetime as aware UTC; ``Z`` or ``z`` accepted, a naive time taken as UTC
    (or refused with NoTimeZone when ``naive_as_utc`` is false). Raises ValueError for a text that is not
    one, OverflowError when UTC leaves the years 1-9999."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None and not naive_as_utc:
        raise NoTimeZone(text)
    return as_utc(parsed)


def as_utc(value: datetime) -> datetime:
    """The same instant in UTC; a naive value is taken as UTC. OverflowError outside years 1-9999."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 UTC (``2026-12-03T10:00:00Z``, fractions only when present, trailing zeros dropped).
    Raises OverflowError when the UTC time falls outside the years 1-9999."""
    value = as_utc(value)
    text = (f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
            f"T{value.hour:02d}:{value.minute:02d}:{value.second:02d}")
    if value.microsecond:
        text += f".{value.microsecond:06d}".rstrip("0")
    return text + "Z"


def parse_since(value: str | None, *, now: datetime | None = None) -> datetime | None:
    """An operator's "since": ``2026-11-27``, an ISO datetime, or a duration back from now like ``30m``,
    ``2h``, ``7d``. None for an empty value. Raises ValueError, also for values out of range (a duration
    longer than the calendar, a year past 9999 in UTC)."""
    if not value:
        return None
    try:
        if value[-1] in _DURATION_UNITS and value[:-1].isdigit():
            return (now or utcnow()) - timedelta(seconds=int(value[:-1]) * _DURATION_UNITS[value[-1]])
        return parse_time(value)
    except OverflowError:
        # 99999999999d (timedelta too large), 9999-12-31T23:00:00-05:00 (year 10000 in UTC)
        raise ValueError(f"{value!r} is out of range") from None

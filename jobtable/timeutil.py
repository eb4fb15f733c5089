"""Time helpers: everything jobtable stores is UTC."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from jobtable.errors import InvalidJobError

_RELATIVE = re.compile(r"^\+?\s*(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def utcnow() -> datetime:
    """The current time as an aware UTC datetime."""
    return datetime.now(UTC)


def require_aware(value: datetime, what: str = "due") -> datetime:
    """Return ``value`` in UTC, refusing naive datetimes."""
    if not isinstance(value, datetime):
        raise InvalidJobError(f"{what} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        raise InvalidJobError(
            f"{what} is a naive datetime ({value.isoformat()}); an aware datetime is needed, "
            "e.g. datetime.now(UTC) or datetime(..., tzinfo=UTC)"
        )
    return value.astimezone(UTC)


def to_timedelta(value: timedelta | float | int | None, what: str) -> timedelta | None:
    """Accept a timedelta or a number of seconds; refuse negatives."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (timedelta, int, float)):
        raise InvalidJobError(
            f"{what} must be a timedelta or a number of seconds, got {type(value).__name__}"
        )
    delta = value if isinstance(value, timedelta) else timedelta(seconds=value)
    if delta < timedelta(0):
        raise InvalidJobError(f"{what} must not be negative, got {delta}")
    return delta


def to_millis(delta: timedelta) -> int:
    """Whole milliseconds of a timedelta."""
    return int(delta / timedelta(milliseconds=1))


def parse_due(text: str, now: datetime | None = None) -> datetime:
    """Parse ``+10s``/``+5m``/``+2h``/``+1d`` or an ISO-8601 time with an offset."""
    text = text.strip()
    match = _RELATIVE.match(text)
    if match and (text.startswith("+") or text[-1] in _UNITS):
        amount, unit = match.groups()
        return (now or utcnow()) + timedelta(seconds=float(amount) * _UNITS[unit])
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        raise InvalidJobError(
            f"cannot read due time {text!r}; use +N with a unit s, m, h or d (e.g. +10s) "
            "or an ISO-8601 time with an offset (e.g. 2030-01-01T09:00:00+00:00)"
        ) from None
    return require_aware(value, "due")


def parse_duration(text: str, what: str = "duration") -> timedelta:
    """Parse ``30``, ``30s``, ``5m``, ``2h`` or ``7d`` into a timedelta."""
    text = text.strip()
    match = _RELATIVE.match(text if text[-1:] in _UNITS else text + "s")
    if not match:
        raise InvalidJobError(
            f"cannot read {what} {text!r}; use a number with a unit s, m, h or d (e.g. 30s, 7d)"
        )
    amount, unit = match.groups()
    return timedelta(seconds=float(amount) * _UNITS[unit])


def format_sqlite(value: datetime) -> str:
    """The one sortable text form SQLite stores: fixed-width ISO-8601 in UTC."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


def parse_sqlite(value: str | None) -> datetime | None:
    """Read a timestamp stored by ``format_sqlite``."""
    if value is None:
        return None
    return datetime.fromisoformat(value)

"""Cron expressions: 6-field (seconds first) and classic 5-field, in any time zone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from jobtable.errors import InvalidCronError

FIELDS_6 = ("second", "minute", "hour", "day of month", "month", "day of week")
FIELDS_5 = FIELDS_6[1:]
_FORMS = (
    "6 fields 'second minute hour day-of-month month day-of-week' (e.g. '0 */5 * * * *') "
    "or 5 fields 'minute hour day-of-month month day-of-week' (e.g. '*/5 * * * *')"
)


@dataclass(frozen=True, slots=True)
class CronSchedule:
    """A parsed cron expression bound to a time zone."""

    expression: str
    timezone: str | None = None

    @property
    def has_seconds(self) -> bool:
        """True for a 6-field expression."""
        return len(self.expression.split()) == 6

    def next_after(self, moment: datetime) -> datetime:
        """The first occurrence strictly after ``moment``, in UTC."""
        zone = ZoneInfo(self.timezone) if self.timezone else UTC
        it = croniter(
            self.expression,
            moment.astimezone(zone),
            second_at_beginning=self.has_seconds,
        )
        nxt: datetime = it.get_next(datetime)
        return nxt.astimezone(UTC)


def _valid(expression: str, six: bool) -> bool:
    try:
        croniter(expression, datetime(2000, 1, 1, tzinfo=UTC), second_at_beginning=six)
    except (ValueError, KeyError, TypeError, AttributeError):
        return False
    return True


def parse_cron(expression: str, timezone: str | None = None) -> CronSchedule:
    """Validate ``expression`` and ``timezone``; raise ``InvalidCronError`` naming the bad field."""
    if not isinstance(expression, str) or not expression.strip():
        raise InvalidCronError(f"cron expression must be a non-empty string; use {_FORMS}")
    expr = " ".join(expression.split())
    if timezone is not None:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError):
            raise InvalidCronError(
                f"unknown time zone {timezone!r}; use an IANA name such as 'UTC' or 'Europe/Paris'"
            ) from None
    fields = expr.split()
    if expr.startswith("@"):
        if not _valid(expr, False):
            raise InvalidCronError(
                f"invalid cron expression {expression!r}: unknown macro; use @yearly, @monthly, "
                f"@weekly, @daily, @hourly or {_FORMS}"
            )
        return CronSchedule(expr, timezone)
    if len(fields) not in (5, 6):
        raise InvalidCronError(
            f"invalid cron expression {expression!r}: it has {len(fields)} fields; use {_FORMS}"
        )
    six = len(fields) == 6
    names = FIELDS_6 if six else FIELDS_5
    for index, (name, value) in enumerate(zip(names, fields, strict=True)):
        probe = ["*"] * len(fields)
        probe[index] = value
        if not _valid(" ".join(probe), six):
            raise InvalidCronError(
                f"invalid cron expression {expression!r}: field {index + 1} ({name}) "
                f"{value!r} is not valid; use {_FORMS}"
            )
    if not _valid(expr, six):
        raise InvalidCronError(f"invalid cron expression {expression!r}; use {_FORMS}")
    schedule = CronSchedule(expr, timezone)
    try:
        schedule.next_after(datetime(2000, 1, 1, tzinfo=UTC))
    except Exception as exc:  # e.g. '0 0 30 2 *' never occurs
        raise InvalidCronError(
            f"invalid cron expression {expression!r}: it never occurs ({exc})"
        ) from None
    return schedule

"""What a job can raise to steer its own row: ``Retry``, ``Discard``, ``Snooze``.

``from jobtable import Retry, Discard, Snooze``. Each is an ``Exception``, so it passes
through a plain ``def run`` (run in a thread) as well as an ``async def run``.
"""

from __future__ import annotations

from datetime import timedelta

from jobtable.errors import InvalidJobError


def _delay(value: object, what: str, *, required: bool) -> timedelta | None:
    if value is None:
        if required:
            raise InvalidJobError(
                f"{what} needs a delay: a number of seconds or a timedelta of at least 0, "
                "e.g. Snooze(60) or Snooze(timedelta(minutes=5))")
        return None
    if isinstance(value, timedelta):
        delta = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if value != value or value in (float("inf"), float("-inf")):
            raise InvalidJobError(f"{what} must be a finite number of seconds, got {value!r}")
        delta = timedelta(seconds=value)
    else:
        raise InvalidJobError(
            f"{what} must be a number of seconds or a timedelta, got {type(value).__name__}")
    if delta < timedelta(0):
        raise InvalidJobError(
            f"{what} must not be negative (seconds or a timedelta of at least 0), got "
            f"{delta.total_seconds():g}s")
    return delta


class JobSignal(Exception):
    """Base of the exceptions a job raises to steer its own row."""


class Retry(JobSignal):
    """Fail this run and schedule a retry row, even when ``auto_reschedule_on_failure``
    is off. Due after ``after`` (seconds or a timedelta), or the job's delay and backoff
    when None. It counts against ``max_retries``: once they are used up the run fails
    as exhausted, with no retry."""

    def __init__(self, after: timedelta | float | None = None,
                 reason: str | None = None) -> None:
        self.after = _delay(after, "Retry(after=...)", required=False)
        self.reason = reason
        super().__init__(reason or "retry requested by the job")


class Discard(JobSignal):
    """Fail this run for good: no retry row, even with ``auto_reschedule_on_failure``
    on. ``reason`` becomes the result's ``error``. A cron chain still continues."""

    def __init__(self, reason: str = "discarded by the job") -> None:
        self.reason = str(reason)
        super().__init__(self.reason)


class Snooze(JobSignal):
    """Not a failure and not a retry: the same row goes back to pending, due after
    ``after`` (seconds or a timedelta). Snoozes count against neither ``max_retries``
    nor ``max_attempts``."""

    def __init__(self, after: timedelta | float | None = None) -> None:
        delta = _delay(after, "Snooze(after)", required=True)
        assert delta is not None
        self.after = delta
        super().__init__(f"snoozed for {delta.total_seconds():g}s")

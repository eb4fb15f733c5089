"""Small helpers that show times, durations and outcomes to people (CLI and dashboard)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from jobtable.model import WorkerJob
from jobtable.timeutil import utcnow


def human_duration(delta: timedelta | float) -> str:
    """A short duration for people: ``850 ms``, ``12 s``, ``4 min``, ``3 h 5 min``, ``2 d``."""
    seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
    seconds = abs(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        hours, rest = divmod(int(seconds), 3600)
        return f"{hours} h {rest // 60} min" if rest >= 60 else f"{hours} h"
    return f"{seconds / 86400:.0f} d"


# Row fields that hold a duration in milliseconds.
MILLISECOND_FIELDS = frozenset({"remove_delay", "auto_reschedule_on_failure_delay",
                                "max_backoff"})
_UNITS = (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000))


def setting_duration(ms: int | float) -> str:
    """A stored duration (milliseconds) in the form it is written in: ``1h``, ``30s``,
    ``90m``, ``1500ms``; the largest unit that says it exactly."""
    value = int(ms)
    if value != ms or value == 0:
        return f"{ms:g}ms" if value != ms else "0s"
    for unit, size in _UNITS:
        if value % size == 0:
            return f"{value // size}{unit}"
    return f"{value}ms"


def human_bytes(n: int) -> str:
    """A size for people: ``712 B``, ``44.0 MB``, ``1.2 GB``."""
    size = float(n)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """``5 min ago``, ``in 10 s`` or ``just now``; empty for None."""
    if moment is None:
        return ""
    delta = (now or utcnow()) - moment
    if abs(delta.total_seconds()) < 1:
        return "just now"
    text = human_duration(delta)
    return f"{text} ago" if delta.total_seconds() > 0 else f"in {text}"


def runtime(job: WorkerJob) -> timedelta | None:
    """How long a finished job ran (None if it never started or is unfinished)."""
    if job.started is None or job.finished is None:
        return None
    return job.finished - job.started


def summary(job: WorkerJob, width: int = 100) -> str:
    """One line about a row's outcome: its error, or its result, shortened."""
    if job.error is not None:
        text = job.error
    elif job.result is not None and job.finished is not None:
        text = json.dumps(job.result, ensure_ascii=False)
    else:
        text = ""
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"


def retry_policy(job: WorkerJob) -> str:
    """``retry 2 of 5, exponential backoff (at most 1 h)``: which retry the row is and
    how failures are retried."""
    limit = "unlimited" if job.max_retries is None else str(job.max_retries)
    if job.retry_count:
        text = f"retry {job.retry_count} of {limit}"
    else:
        text = f"first run, up to {limit} retries"
    text += ", retried on failure" if job.auto_reschedule_on_failure else \
        ", retried only when the job raises Retry"
    delay = human_duration(job.auto_reschedule_on_failure_delay / 1000)
    if job.backoff == "exponential":
        text += (f"; exponential backoff from {delay} up to "
                 f"{human_duration(job.max_backoff / 1000)}")
    else:
        text += f"; constant backoff of {delay}"
    return text

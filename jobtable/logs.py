"""Log output: the human format, or one JSON object per line (``log_format = "json"``).

A job's log records (and any record logged while the job runs, in its task or its
thread) carry the job's id and type, which the JSON format writes as ``job_id`` and
``job_type``.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, TextIO

from jobtable.errors import ConfigError

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

_current_job: contextvars.ContextVar[tuple[int, str] | None] = contextvars.ContextVar(
    "jobtable_current_job", default=None)


def enter_job(job_id: int, job_type: str) -> contextvars.Token[tuple[int, str] | None]:
    """Mark what is logged from here (this task, and the threads it copies its context
    to) as belonging to a job, until ``leave_job(token)``."""
    return _current_job.set((job_id, job_type))


def leave_job(token: contextvars.Token[tuple[int, str] | None]) -> None:
    """Undo ``enter_job``."""
    _current_job.reset(token)


@contextlib.contextmanager
def job_context(job_id: int, job_type: str) -> Iterator[None]:
    """``enter_job`` ... ``leave_job`` as a ``with`` block."""
    token = enter_job(job_id, job_type)
    try:
        yield
    finally:
        leave_job(token)


def current_job() -> tuple[int, str] | None:
    """(id, type) of the job whose code is running here, if any."""
    return _current_job.get()


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time (UTC, ISO 8601), level, logger, message;
    job_id and job_type inside a job; exception (the formatted traceback) when the
    record carries one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job = getattr(record, "job", None) or current_job()
        if job is not None:
            entry["job_id"], entry["job_type"] = job
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def check_log_format(value: str) -> str:
    """``value`` lower-cased if it names a log format; a ``ConfigError`` naming the
    accepted ones otherwise."""
    name = str(value).strip().lower()
    if name not in LOG_FORMATS:
        raise ConfigError(f"unknown log format {value!r}; use {' or '.join(LOG_FORMATS)}")
    return name


def formatter(log_format: str) -> logging.Formatter:
    """The formatter of ``log_format`` ("text" or "json")."""
    if check_log_format(log_format) == "json":
        return JsonFormatter()
    return logging.Formatter(TEXT_FORMAT)


def configure(level: str, log_format: str = "text", stream: TextIO | None = None) -> None:
    """Send log records at ``level`` and above to ``stream`` (standard error) in
    ``log_format``. Like ``logging.basicConfig``, leaves logging that the application
    configured itself alone."""
    fmt = formatter(log_format)
    root = logging.getLogger()
    ours = [h for h in root.handlers if h.get_name() == "jobtable"]
    if not ours and root.handlers:
        return
    if not ours:
        handler: logging.Handler = logging.StreamHandler(stream or sys.stderr)
        handler.set_name("jobtable")
        root.addHandler(handler)
        ours = [handler]
    root.setLevel(level)
    for handler in ours:
        handler.setFormatter(fmt)


__all__ = ["LOG_FORMATS", "JsonFormatter", "check_log_format", "configure", "current_job",
           "enter_job", "formatter", "job_context", "leave_job"]

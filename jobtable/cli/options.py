"""What the commands share: logging set-up, common options, error reporting, opening
the table."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from jobtable import logs
from jobtable.client import JobTable
from jobtable.errors import JobTableError
from jobtable.settings import Settings, load_settings

F = TypeVar("F", bound=Callable[..., Any])


def setup_logging(level: str | None, log_format: str | None = None) -> str:
    """Configure standard logging for the command line (``JOBTABLE_LOG_LEVEL``;
    ``--log-format``, ``JOBTABLE_LOG_FORMAT`` or ``[tool.jobtable] log_format``).
    Returns the log format in use."""
    name = (level or os.environ.get("JOBTABLE_LOG_LEVEL")
            or os.environ.get("WORKER_LOG_LEVEL") or "INFO").upper()
    if name not in logging.getLevelNamesMapping():
        raise click.BadParameter(
            f"unknown log level {name!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    chosen = load_settings(log_format=log_format).log_format
    logs.configure(name, chosen, sys.stderr)
    logging.getLogger("jobtable").setLevel(name)
    if name != "DEBUG":
        # The worker reports an outage once; the pool would log every reconnect attempt.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    return chosen


def database_options(fn: F) -> F:
    """--database and --jobs, shared by every command that opens the table."""
    fn = click.option("--jobs", "jobs", metavar="DIR|PACKAGE",
                      help="Jobs folder or dotted package [env JOBTABLE_JOBS; default ./jobs].")(fn)
    fn = click.option("--database", "-d", "database", metavar="URL",
                      help="sqlite:///file.db or postgresql://user@host/db "
                           "[env JOBTABLE_DATABASE_URL; default sqlite:///jobtable.db].")(fn)
    return fn


def worker_options(fn: F) -> F:
    """--app, --concurrency and --processes, shared by ``worker`` and ``dev``."""
    fn = click.option("--processes", "-p", metavar="N|cpus",
                      help="Worker processes to supervise; a dead one is restarted "
                           "[env JOBTABLE_WORKER_COUNT; default 1].")(fn)
    fn = click.option("--concurrency", "-c", type=int,
                      help="Jobs run at once per process "
                           "[env JOBTABLE_CONCURRENCY; default 10].")(fn)
    fn = click.option("--app", metavar="MODULE:FACTORY",
                      help="Bootstrap factory whose return value jobs receive as params.app "
                           "[env JOBTABLE_APP].")(fn)
    return fn


def log_level_option(fn: F) -> F:
    """--log-level (``JOBTABLE_LOG_LEVEL``)."""
    return click.option("--log-level", metavar="LEVEL",
                        help="DEBUG, INFO, WARNING or ERROR "
                             "[env JOBTABLE_LOG_LEVEL; default INFO].")(fn)


def log_format_option(fn: F) -> F:
    """--log-format (``JOBTABLE_LOG_FORMAT``, ``[tool.jobtable] log_format``)."""
    return click.option("--log-format", metavar="text|json",
                        help="Log lines for people (text) or one JSON object per line "
                             "(json) [env JOBTABLE_LOG_FORMAT; default text].")(fn)


def friendly_errors(fn: F) -> F:
    """Turn jobtable's errors into one readable line and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except JobTableError as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


def open_table(database: str | None, jobs: str | None, **settings: Any) -> JobTable:
    """A ``JobTable`` from command-line options, environment and pyproject."""
    resolved = load_settings(database=database, jobs=jobs, **settings)
    return JobTable(settings=resolved)


@contextmanager
def checked_table(settings: Settings) -> Iterator[JobTable]:
    """A ``JobTable`` on the database of ``settings``, checked (or migrated) up front."""
    table = JobTable(settings=settings)
    try:
        table.ready()
        yield table
    finally:
        table.close()


def hooks_options(fn: F) -> F:
    """--hooks MODULE (repeatable) and --otel/--no-otel: the ``hooks`` and ``otel``
    settings, passed on as ``JOBTABLE_HOOKS`` / ``JOBTABLE_OTEL`` so that supervised and
    isolated child processes see them too."""

    @functools.wraps(fn)
    def wrapper(*args: Any, hooks: tuple[str, ...], otel: bool | None, **kwargs: Any) -> Any:
        if hooks:
            os.environ["JOBTABLE_HOOKS"] = ",".join(hooks)
        if otel is not None:
            os.environ["JOBTABLE_OTEL"] = "true" if otel else "false"
        return fn(*args, **kwargs)

    wrapper = click.option(
        "--otel/--no-otel", default=None,
        help="Trace jobs with OpenTelemetry (needs the otel extra) [env JOBTABLE_OTEL].")(
        wrapper)
    wrapper = click.option(
        "--hooks", "hooks", multiple=True, metavar="MODULE",
        help="A module of job hooks (around, on_success, on_failure, ...) applied to every "
             "job; repeatable, first is outermost [env JOBTABLE_HOOKS, comma-separated].")(
        wrapper)
    return wrapper  # type: ignore[return-value]

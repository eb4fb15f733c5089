"""The ``jobtable`` command line: thin over the library."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from jobtable.errors import JobTableError

F = TypeVar("F", bound=Callable[..., Any])
log = logging.getLogger("jobtable.cli")


def setup_logging(level: str | None) -> None:
    """Configure standard logging for the command line (``JOBTABLE_LOG_LEVEL``)."""
    name = (level or os.environ.get("JOBTABLE_LOG_LEVEL")
            or os.environ.get("WORKER_LOG_LEVEL") or "INFO").upper()
    if name not in logging.getLevelNamesMapping():
        raise click.BadParameter(
            f"unknown log level {name!r}; use DEBUG, INFO, WARNING, ERROR or CRITICAL")
    logging.basicConfig(level=name, stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("jobtable").setLevel(name)
    if name != "DEBUG":
        # The worker reports an outage once; the pool would log every reconnect attempt.
        logging.getLogger("psycopg.pool").setLevel(logging.ERROR)


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


def open_table(database: str | None, jobs: str | None, **settings: Any) -> Any:
    """A ``JobTable`` from command-line options, environment and pyproject."""
    from jobtable.client import JobTable
    from jobtable.settings import load_settings

    resolved = load_settings(database=database, jobs=jobs, **settings)
    return JobTable(settings=resolved)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="jobtable")
def main() -> None:
    """jobtable: background jobs whose queue is a database table.

    Add a job type by dropping a module with run(params) into ./jobs, schedule it with
    'jobtable schedule', and run 'jobtable worker'. SQLite by default; PostgreSQL with
    --database postgresql://...
    """


@main.command()
@database_options
@worker_options
@click.option("--burst", is_flag=True, help="Run every job that is due now, then exit 0.")
@click.option("--stale-limit", metavar="DURATION",
              help="A started job unfinished after this is pending again; also the longest "
                   "a job may run [default 1h].")
@click.option("--grace-period", metavar="DURATION",
              help="On SIGTERM/SIGINT, how long running jobs may finish [default 30s].")
@click.option("--rescue-after", metavar="DURATION",
              help="A worker silent this long is dead; its jobs become pending again "
                   "[default 30s].")
@click.option("--poll-interval", metavar="DURATION",
              help="Longest idle sleep between checks for due jobs [default 1s].")
@log_level_option
@friendly_errors
def worker(database: str | None, jobs: str | None, app: str | None, concurrency: int | None,
           processes: str | None, burst: bool, stale_limit: str | None,
           grace_period: str | None, rescue_after: str | None, poll_interval: str | None,
           log_level: str | None) -> None:
    """Run jobs until SIGTERM/SIGINT (or, with --burst, until none is due).

    On a stop signal the worker stops claiming, lets running jobs finish within the
    grace period, fails what is left with a clear error, and exits 0.
    """
    from jobtable.settings import load_settings
    from jobtable.supervisor import Supervisor, child_command, resolve_processes

    setup_logging(log_level)
    settings = load_settings(database=database, jobs=jobs, app=app, concurrency=concurrency,
                             processes=processes, stale_limit=stale_limit,
                             grace_period=grace_period, rescue_after=rescue_after,
                             poll_interval=poll_interval, log_level=log_level)
    count = resolve_processes(settings.processes)
    if count > 1 and not burst:
        argv = [a for a in sys.argv[1:]]
        argv = _strip_option(argv, ("--processes", "-p"))
        os.environ["JOBTABLE_WORKER_COUNT"] = "1"
        code = Supervisor(child_command(argv), count,
                          settings.grace_period.total_seconds()).run()
        sys.exit(code)
    if count > 1 and burst:
        raise click.UsageError("--burst runs in one process; drop --processes")
    code = asyncio.run(_run_worker_process(settings, burst))
    sys.exit(code)


def _strip_option(argv: list[str], names: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in names:
            skip = True
            continue
        if any(arg.startswith(n + "=") for n in names):
            continue
        out.append(arg)
    return out


async def _run_worker_process(settings: Any, burst: bool) -> int:
    import signal

    from jobtable.client import JobTable
    from jobtable.supervisor import PARENT_ENV, watch_parent
    from jobtable.worker import Worker

    jt = await asyncio.to_thread(JobTable, settings=settings)
    worker = Worker(jt, burst=burst)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.request_stop)
    parent = os.environ.get(PARENT_ENV)

    async def orphan_guard() -> None:
        while True:
            await asyncio.sleep(1)
            if not watch_parent(int(parent) if parent else None):
                log.error("supervisor went away; stopping")
                worker.request_stop()
                return

    guard = asyncio.create_task(orphan_guard())
    try:
        await worker.run()
    finally:
        guard.cancel()
        await asyncio.to_thread(jt.close)
    if worker.lingering_threads:
        log.warning("%d plain-def jobs were still running in threads at exit",
                    worker.lingering_threads)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0


@main.command()
@click.argument("job_type")
@database_options
@click.option("--user-id", "-u", type=int, default=0, show_default=True,
              help="Whom the job is for (0 = system).")
@click.option("--data", metavar="JSON", default="{}", show_default=True,
              help="Job data as a JSON object.")
@click.option("--due", metavar="WHEN",
              help="ISO-8601 time with offset, or +N with a unit s, m, h or d (e.g. +10s).")
@click.option("--cron", metavar="EXPR",
              help="Start a cron chain: 6 fields with seconds ('0 * * * * *') or 5 fields.")
@click.option("--timezone", metavar="TZ", help="Time zone of --cron (default UTC).")
@click.option("--retry/--no-retry", default=None,
              help="Reschedule automatically after a failure [default: the job module's "
                   "AUTO_RESCHEDULE_ON_FAILURE, else no].")
@click.option("--retry-delay", metavar="DURATION", help="Delay before that retry.")
@click.option("--remove-delay", metavar="DURATION",
              help="How long a succeeded job is kept [default 1h].")
@click.option("--json", "as_json", is_flag=True, help="Print the new row as JSON.")
@friendly_errors
def schedule(job_type: str, database: str | None, jobs: str | None, user_id: int, data: str,
             due: str | None, cron: str | None, timezone: str | None, retry: bool | None,
             retry_delay: str | None, remove_delay: str | None, as_json: bool) -> None:
    """Schedule a job of JOB_TYPE (cancelling matching pending jobs first)."""
    from jobtable.errors import InvalidDataError
    from jobtable.model import WorkerJobConfig
    from jobtable.timeutil import parse_due, parse_duration

    try:
        payload = json.loads(data)
    except json.JSONDecodeError as exc:
        raise InvalidDataError(f"--data is not valid JSON: {exc}") from None
    config = WorkerJobConfig(
        type=job_type, user_id=user_id, data=payload,
        due=parse_due(due) if due else None, auto_reschedule_on_failure=retry,
        auto_reschedule_on_failure_delay=parse_duration(retry_delay, "--retry-delay")
        if retry_delay else None,
        remove_delay=parse_duration(remove_delay, "--remove-delay") if remove_delay else None)
    with open_table(database, jobs) as jt:
        if cron:
            job = jt.schedule_cron_job(config, cron, timezone)
        elif timezone:
            raise click.UsageError("--timezone goes with --cron")
        else:
            job = jt.schedule_job(config)
    if as_json:
        click.echo(json.dumps(job.to_dict()))
    else:
        click.echo(f"scheduled job {job.id} ({job.type}, user {job.user_id}) due "
                   f"{job.due.isoformat()}" + (f", cron {job.cron_schedule}" if cron else ""))


@main.command()
@database_options
@click.option("--list", "list_only", is_flag=True, help="Show applied and pending migrations.")
@friendly_errors
def migrate(database: str | None, jobs: str | None, list_only: bool) -> None:
    """Create or upgrade the worker_jobs table (each migration in its own transaction)."""
    from jobtable.settings import load_settings
    from jobtable.store import open_store

    settings = load_settings(database=database)
    with open_store(settings.database) as store:
        if list_only:
            for _version, name in store.applied_migrations():
                click.echo(f"applied  {name}")
            for name in store.pending_migrations():
                click.echo(f"pending  {name}")
            return
        applied = store.migrate()
    click.echo("applied " + ", ".join(applied) if applied else "database is up to date")


@main.command()
@click.option("--keep", is_flag=True, help="Keep the demo's temporary folder.")
@click.option("--database", "-d", metavar="URL",
              help="Run the demo on this database instead of a temporary SQLite file.")
@friendly_errors
def demo(keep: bool, database: str | None) -> None:
    """Show jobtable at work on SQLite in a temporary folder: a one-off job, a job that
    fails and is retried, and a cron job, then a table of the rows."""
    from jobtable.demo import run_demo

    sys.exit(run_demo(keep=keep, database=database))


def _register_optional_commands() -> None:
    """Commands that live in their own modules."""
    import importlib

    for module_name, names in (("jobtable.ops_cli", ("jobs", "stats", "dashboard")),
                               ("jobtable.dev", ("codegen", "dev", "init"))):
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            continue
        for name in names:
            command = getattr(module, f"{name}_command", None)
            if isinstance(command, click.Command):
                main.add_command(command, name)


_register_optional_commands()

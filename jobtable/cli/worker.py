"""``jobtable worker``: run jobs, in one process or several under a supervisor."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from typing import Any

import click

from jobtable import _early
from jobtable.cli.options import (
    database_options,
    friendly_errors,
    hooks_options,
    log_format_option,
    log_level_option,
    setup_logging,
    worker_options,
)
from jobtable.client import JobTable
from jobtable.settings import load_settings
from jobtable.supervisor import (
    PARENT_ENV,
    WORKER_ID_ENV,
    Supervisor,
    child_command,
    resolve_processes,
    watch_parent,
)
from jobtable.worker import Worker

log = logging.getLogger("jobtable.cli")


@click.command("worker")
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
@click.option("--queues", metavar="NAME=SLOTS,...",
              help="Serve only these queues, each with its own slots in this process "
                   "(e.g. default=10,reports=2) [env JOBTABLE_QUEUES; default every queue, "
                   "sharing --concurrency].")
@click.option("--poll-interval", metavar="DURATION",
              help="Longest idle sleep between checks for due jobs [default 1s].")
@log_level_option
@log_format_option
@hooks_options
@friendly_errors
def worker(database: str | None, jobs: str | None, app: str | None, concurrency: int | None,
           processes: str | None, burst: bool, stale_limit: str | None,
           grace_period: str | None, rescue_after: str | None, queues: str | None,
           poll_interval: str | None, log_level: str | None, log_format: str | None) -> None:
    """Run jobs until SIGTERM/SIGINT (or, with --burst, until none is due).

    On a stop signal the worker stops claiming, lets running jobs finish within the
    grace period, fails what is left with a clear error, and exits 0.
    """
    setup_logging(log_level, log_format)
    settings = load_settings(database=database, jobs=jobs, app=app, concurrency=concurrency,
                             processes=processes, stale_limit=stale_limit,
                             grace_period=grace_period, rescue_after=rescue_after,
                             poll_interval=poll_interval, log_level=log_level,
                             log_format=log_format, queues=queues)
    count = resolve_processes(settings.processes)
    if count > 1 and not burst:
        argv = [a for a in sys.argv[1:]]
        argv = _strip_option(argv, ("--processes", "-p"))
        os.environ["JOBTABLE_WORKER_COUNT"] = "1"
        releaser = _Releaser(settings)
        try:
            code = Supervisor(child_command(argv), count,
                              settings.grace_period.total_seconds(),
                              on_death=releaser.release).run()
        finally:
            releaser.close()
        sys.exit(code)
    if count > 1 and burst:
        raise click.UsageError("--burst runs in one process; drop --processes")
    if _early.stop_requested():
        log.info("stopped while starting")
        sys.exit(0)
    code = asyncio.run(_run_worker_process(settings, burst))
    sys.exit(code)


class _Releaser:
    """The supervisor's side of a child's death: release that worker's running jobs
    through a ``JobTable`` opened on first use."""

    def __init__(self, settings: Any) -> None:
        self.settings = settings
        self._table: JobTable | None = None

    def release(self, worker_id: str) -> None:
        if self._table is None:
            self._table = JobTable(settings=self.settings)
        report = self._table.release_worker(worker_id)
        if report.reset:
            log.warning("released jobs %s of worker %s, which died", report.reset, worker_id)
        if report.cancelled:
            log.warning("cancelled jobs %s of worker %s, which died: cancelled or "
                        "superseded while they ran", report.cancelled, worker_id)
        if report.failed:
            log.error("gave up on jobs %s of worker %s, which died", report.failed, worker_id)

    def close(self) -> None:
        if self._table is not None:
            self._table.close()


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
    jt = await asyncio.to_thread(JobTable, settings=settings)
    # A supervisor names its child's worker id, so that it can release the child's
    # jobs when it dies; the variable is not passed on (to isolated children).
    worker = Worker(jt, burst=burst, worker_id=os.environ.pop(WORKER_ID_ENV, None) or None)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.request_stop)
    if _early.stop_requested():
        worker.request_stop()
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

"""``jobtable demo``: one-off, failing-then-retried and cron jobs on SQLite."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from rich.console import Console
from rich.table import Table

from jobtable.client import JobTable
from jobtable.model import JobStatus, WorkerJob, WorkerJobConfig
from jobtable.settings import Settings
from jobtable.worker import Worker

_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "pending": "cyan",
          "running": "magenta"}


def _done(jt: JobTable) -> bool:
    rows = jt.list_jobs(limit=100)
    greeted = any(r.type == "greet" and r.status == JobStatus.SUCCEEDED for r in rows)
    retried = any(r.type == "flaky" and r.status == JobStatus.SUCCEEDED
                  and r.rescheduled_from_job for r in rows)
    ticks = sum(1 for r in rows if r.type == "tick" and r.status == JobStatus.SUCCEEDED)
    exhausted = any(r.type == "doomed" and isinstance(r.result, dict)
                    and "retries_exhausted" in r.result for r in rows)
    return greeted and retried and ticks >= 3 and exhausted


def _short(result: object) -> str:
    if isinstance(result, dict) and "no_retry" in result:
        return f"error: {result['error']}; no retry: {result['no_retry']}"
    if isinstance(result, dict) and "error" in result:
        return f"error: {result['error']}"
    text = "" if result is None else result if isinstance(result, str) else json.dumps(result)
    return text if len(text) <= 40 else text[:39] + "…"


def rows_table(rows: list[WorkerJob], title: str) -> Table:
    """A rich table of job rows (cron jobs marked with *)."""
    table = Table(title=title, caption="* a cron job: each run is a row of its own")
    for column in ("id", "type", "status", "due", "from", "result"):
        table.add_column(column, no_wrap=column != "result", overflow="fold")
    for r in sorted(rows, key=lambda r: r.id):
        table.add_row(
            str(r.id), r.type + ("*" if r.cron_schedule else ""),
            f"[{_STYLE.get(r.status.value, '')}]{r.status.value}[/]",
            r.due.strftime("%H:%M:%S"), str(r.rescheduled_from_job or ""), _short(r.result))
    return table


async def _demo(jt: JobTable, console: Console) -> None:
    console.print("scheduling: [bold]greet[/] (one-off), [bold]flaky[/] (fails, retried "
                  "after 1s), [bold]doomed[/] (always fails: at most 2 retries, after 0.5s "
                  "then 1s), [bold]tick[/] (cron '*/2 * * * * *', every 2 seconds)")
    await jt.schedule_job_async(WorkerJobConfig(type="greet", user_id=1, data={"name": "Ada"}))
    await jt.schedule_job_async(WorkerJobConfig(
        type="flaky", user_id=1, data={"to": "ada@example.com"},
        auto_reschedule_on_failure=True, auto_reschedule_on_failure_delay=timedelta(seconds=1)))
    await jt.schedule_job_async(WorkerJobConfig(
        type="doomed", user_id=1, auto_reschedule_on_failure=True,
        auto_reschedule_on_failure_delay=0.5, max_retries=2, backoff="exponential",
        max_backoff=timedelta(seconds=1)))
    await jt.schedule_cron_job_async(WorkerJobConfig(type="tick", user_id=0), "*/2 * * * * *")
    worker = Worker(jt, concurrency=4)
    task = asyncio.create_task(worker.run())
    deadline = time.monotonic() + 30
    while not await asyncio.to_thread(_done, jt) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    worker.request_stop()
    await task


def run_demo(*, keep: bool = False, database: str | None = None) -> int:
    """Run the demo; return 0 when every part of it happened."""
    console = Console()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s: "
                        "%(message)s")
    folder = Path(tempfile.mkdtemp(prefix="jobtable-demo-"))
    url = database or f"sqlite:///{folder / 'demo.db'}"
    console.print(f"[bold]jobtable demo[/] on {url}")
    settings = Settings(database=url, jobs="jobtable.demo_jobs", grace_period=timedelta(seconds=5))
    try:
        with JobTable(settings=settings) as jt:
            asyncio.run(_demo(jt, console))
            ok = _done(jt)
            console.print(rows_table(jt.list_jobs(limit=100), "worker_jobs"))
    finally:
        if keep or database:
            console.print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    if ok:
        console.print("[green]done:[/] the one-off job succeeded, the failing job was retried "
                      "and succeeded, the doomed job stopped after 2 retries, and the cron "
                      "job ran 3 times, each run a new row")
        return 0
    console.print("[red]the demo did not complete within 30 seconds[/]")
    return 1

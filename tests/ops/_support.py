"""Support for the operations tests: a jobs folder, rows in every state, a served dashboard."""

from __future__ import annotations

import math
import socket
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import uvicorn
from click.testing import CliRunner, Result
from helpers import wait_until

from jobtable import JobTable, WorkerJob, WorkerJobConfig, rules
from jobtable.cli import main
from jobtable.model import Outcome
from jobtable.store import Store
from jobtable.timeutil import format_sqlite, utcnow

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"

JOBS = {
    "send_report": "def run(params):\n    return {'sent': True}\n",
    "sync_prices": "def run(params):\n    return {'synced': 3}\n",
    "boom": ("def run(params):\n"
             "    raise ValueError('the mail server said no: ' + str(params.job.data))\n"),
}


def write_jobs(folder: Path) -> Path:
    """A jobs folder with a succeeding and a failing job type."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, source in JOBS.items():
        (folder / f"{name}.py").write_text(source)
    return folder


def table(url: str, jobs: Path) -> JobTable:
    """A ``JobTable`` on ``url`` with the test jobs, migrated."""
    jt = JobTable(url, jobs=jobs)
    jt.migrate()
    return jt


def schedule(jt: JobTable, job_type: str, user_id: int = 0, **kw: Any) -> WorkerJob:
    """Schedule one job."""
    return jt.schedule_job(WorkerJobConfig(type=job_type, user_id=user_id, **kw))


def finish(store: Store, success: bool | Callable[[WorkerJob], bool] = True) -> list[WorkerJob]:
    """Claim every due pending job (as worker 'test-worker') and finish it, as a worker
    would: succeeded, or failed with an error and a traceback, as ``success`` says; with
    the retry or next cron row that follows."""
    outcomes = []
    for job in store.claim("test-worker", 10_000):
        ok = success(job) if callable(success) else success
        value = {"ok": True} if ok else {
            "error": f"job {job.id} failed", "exception": "ValueError",
            "traceback": "Traceback (most recent call last):\n  File \"jobs/boom.py\", "
                         f"line 2, in run\nValueError: job {job.id} failed\n"}
        outcomes.append(Outcome(job=job, success=ok, result=value,
                                follow_up=rules.follow_up(job, ok, utcnow())))
    store.complete(outcomes)
    return [j for j in (store.get_job(o.job.id) for o in outcomes) if j is not None]


def backdate(store: Store, job_id: int, started: datetime, finished: datetime | None) -> None:
    """Move a row's started/finished into the past (as if it ran then)."""
    set_run_times(store.url, [(job_id, started, finished)])


def set_run_times(url: str, rows: list[tuple[int, datetime, datetime | None]]) -> None:
    """Set (id, started, finished) of many rows at once, in SQL of the test's own."""
    update = "UPDATE worker_jobs SET started = %s, finished = %s WHERE id = %s"
    if url.startswith("postgresql"):
        with psycopg.connect(url) as conn, conn.cursor() as cur:
            cur.executemany(update, [(s, f, i) for i, s, f in rows])
        return
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=60)
    try:
        with conn:
            conn.executemany(update.replace("%s", "?"), [
                (format_sqlite(s), None if f is None else format_sqlite(f), i)
                for i, s, f in rows])
    finally:
        conn.close()


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve an ASGI app with uvicorn in a thread; yields its base URL."""
    port = free_port()
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="dashboard", daemon=True)
    thread.start()
    wait_until(lambda: server.started, 20, "the dashboard server to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(20)


def populate(jt: JobTable, now: datetime | None = None) -> dict[str, int]:
    """A table that looks lived in: an hour of finished jobs, a failure with a traceback,
    pending and cron rows, a live worker. Returns ids of interest."""
    store = jt.store
    now = now or utcnow()
    ids: dict[str, int] = {}
    # An hour of traffic in waves, a few failures among it.
    plan = [(m, k) for m in range(60)
            for k in range(2 + round(3 + 2.5 * math.sin(m / 6)) + (3 if m % 11 == 0 else 0))]
    rows = jt.schedule_jobs([WorkerJobConfig(type="send_report", user_id=1000 + i,
                                             data={"to": f"user{i}@example.com"})
                             for i in range(len(plan))])
    failing = {rows[i].id for i, (m, k) in enumerate(plan) if (m * 7 + k) % 23 == 0}
    finish(store, lambda j: j.id not in failing)
    times = []
    for row, (minute, k) in zip(rows, plan, strict=True):
        end = now - timedelta(minutes=59 - minute, seconds=(k * 11) % 55)
        times.append((row.id, end - timedelta(milliseconds=80 + (k * 137) % 1500), end))
    set_run_times(store.url, times)
    failed = schedule(jt, "boom", user_id=7, data={"to": "ada@example.com", "attempt": 1})
    finish(store, False)
    ids["failed"] = failed.id
    ids["pending"] = schedule(jt, "send_report", user_id=99,
                              due=now + timedelta(minutes=10)).id
    ids["cron"] = jt.schedule_cron_job(
        WorkerJobConfig(type="sync_prices", user_id=0), "0 */5 * * * *").id
    store.heartbeat("web-1-4242-a1b2c3", 10, 4242)
    return ids


class Cli:
    """Runs ``jobtable`` commands in-process against one database."""

    def __init__(self, url: str, jobs: Path) -> None:
        self.url = url
        self.jobs = jobs
        self.runner = CliRunner()

    def __call__(self, *args: str, ok: bool = True, input: str | None = None) -> Result:
        argv = [*args]
        # --database goes on the subcommand that opens the table.
        argv += ["--database", self.url, "--jobs", str(self.jobs)]
        result = self.runner.invoke(main, argv, input=input, catch_exceptions=False,
                                    env={"COLUMNS": "160"})
        if ok and result.exit_code != 0:
            raise AssertionError(f"jobtable {' '.join(args)} exited {result.exit_code}:\n"
                                 f"{result.stdout}\n{result.stderr}")
        return result

"""jobtable adapter: ``JobTable`` for scheduling, the ``jobtable worker`` CLI for running.

The no-op job is ``bench/jobs_jobtable/noop.py``. Scheduling cancels pending jobs of
the same type and user_id, so every bench job gets its own user_id. A job is done when
``finished IS NOT NULL``; only ``type = 'noop'`` rows are counted, so jobtable's own
housekeeping cron row does not hold a drain open.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

from jobtable import JobTable, WorkerJobConfig
from systems.common import BENCH_DIR, pg_exec, pg_scalar, pg_url, sqlite_path

NAME = "jobtable"
BACKENDS = ("postgres", "sqlite")
SETTINGS: dict[str, dict[str, int]] = {
    "default": {"concurrency": 10},
    # From `bench.py --sweep` (5,000 jobs, 1-50 tried): 50 was highest on both backends.
    "best": {"concurrency": 50},
}

JOBS_DIR = BENCH_DIR / "jobs_jobtable"
_PENDING = "SELECT count(*) FROM worker_jobs WHERE type = 'noop' AND finished IS NULL"


def url(backend: str) -> str:
    if backend == "sqlite":
        return f"sqlite:///{sqlite_path(NAME)}"
    return pg_url(NAME)


def _open(backend: str) -> JobTable:
    return JobTable(url(backend), jobs=JOBS_DIR)


def setup(backend: str) -> None:
    jt = _open(backend)
    try:
        jt.migrate()
    finally:
        jt.close()


def clear(backend: str) -> None:
    if backend == "sqlite":
        with sqlite3.connect(sqlite_path(NAME)) as conn:
            conn.execute("DELETE FROM worker_jobs")
            conn.execute("DELETE FROM worker_processes")
    else:
        pg_exec(
            url(backend),
            "TRUNCATE worker_jobs, worker_processes RESTART IDENTITY",
            "ANALYZE worker_jobs",
        )
    _fill_history(backend)


def _fill_history(backend: str) -> None:
    """``bench.py --history N --pending M``: N finished rows and a backlog of M rows
    (due in a day, so no drain runs them) of another type, inserted after the ANALYZE
    above, so the planner's statistics have not seen them (as on a server without
    autovacuum)."""
    history = int(os.environ.get("BENCH_HISTORY", "0"))
    pending = int(os.environ.get("BENCH_PENDING", "0"))
    if not history and not pending:
        return
    jt = _open(backend)
    try:
        jt.migrate()
        jt.store.fill("noop_history", finished=history, pending=pending)
    finally:
        jt.close()


def _config(user_id: int, data: dict[str, Any] | None = None) -> WorkerJobConfig:
    return WorkerJobConfig(type="noop", user_id=user_id, data=data or {})


def enqueue_one(backend: str, n: int) -> float:
    jt = _open(backend)
    try:
        jt.migrate()
        start = time.perf_counter()
        for i in range(n):
            jt.schedule_job(_config(i + 1))
        return time.perf_counter() - start
    finally:
        jt.close()


def enqueue_bulk(backend: str, n: int, chunk: int) -> float:
    jt = _open(backend)
    try:
        jt.migrate()
        start = time.perf_counter()
        for lo in range(0, n, chunk):
            # Ids back, as the peers' bulk enqueues give (rows: return_rows=True).
            jt.schedule_jobs([_config(i + 1) for i in range(lo, min(n, lo + chunk))],
                             return_rows=False)
        return time.perf_counter() - start
    finally:
        jt.close()


def prefill(backend: str, n: int, chunk: int) -> None:
    """Fill the queue before a drain (not timed): the bulk enqueue."""
    enqueue_bulk(backend, n, chunk)


def pending_count(backend: str) -> int:
    if backend == "sqlite":
        with sqlite3.connect(sqlite_path(NAME), timeout=30) as conn:
            row = conn.execute(_PENDING).fetchone()
        return int(row[0])
    return pg_scalar(url(backend), _PENDING)


def worker_commands(backend: str, setting: dict[str, int], processes: int) -> list[list[str]]:
    exe = str(Path(sys.executable).parent / "jobtable")
    return [
        [
            exe,
            "worker",
            "--database",
            url(backend),
            "--jobs",
            str(JOBS_DIR),
            f"--concurrency={setting['concurrency']}",
            f"--processes={processes}",
            "--log-level=WARNING",
        ]
    ]


def worker_env(setting: dict[str, int]) -> dict[str, str]:
    return {}


class _Producer:
    def __init__(self, backend: str) -> None:
        self._jt = _open(backend)
        self._jt.migrate()

    def enqueue(self, params: dict[str, Any], user_id: int) -> None:
        # Latency keys start below zero for the warm-up; keep user_ids distinct and > 0.
        self._jt.schedule_job(_config(user_id + 1_000_000, params))

    def close(self) -> None:
        self._jt.close()


def open_producer(backend: str) -> _Producer:
    return _Producer(backend)

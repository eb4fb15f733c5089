"""A frozen worker comes back after its job was rescued: its late result is refused."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from jobtable import JobTable, WorkerJobConfig

from ._support import assert_clean_stop, query, report, start_worker, wait_until, write_jobs

FROZEN_JOB = """
import asyncio, os

async def run(params):
    if params.job.attempts == 1:
        await asyncio.sleep(3)   # the first attempt is the one whose worker is frozen
    return {"pid": os.getpid(), "attempt": params.job.attempts}
"""


def _pending_in_chain(db_url: str) -> int:
    return int(query(db_url, "SELECT COUNT(*) FROM worker_jobs WHERE type = 'frozen' "
                             "AND finished IS NULL AND started IS NULL")[0][0])


@pytest.mark.slow
def test_a_frozen_worker_cannot_overwrite_the_rescued_run_or_fork_the_cron_chain(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"frozen": FROZEN_JOB})
    with JobTable(db_url, jobs=jobs) as jt:
        first = jt.schedule_cron_job(WorkerJobConfig(type="frozen", user_id=3), "* * * * * *")
    args = ("--rescue-after", "1s", "--poll-interval", "0.1s", "--concurrency", "2")
    a = start_worker(db_url, jobs, "", *args, log=tmp_path / "a.log")
    b = None
    try:
        wait_until(lambda: bool(query(
            db_url, "SELECT 1 FROM worker_jobs WHERE id = %s AND started IS NOT NULL "
                    "AND claimed_by LIKE %s", first.id, f"%-{a.pid}-%")), 30,
            "worker A to start the first cron run")
        a.send_signal(signal.SIGSTOP)
        frozen_at = time.time()
        b = start_worker(db_url, jobs, "", *args, log=tmp_path / "b.log")

        def rerun_by_b() -> bool:
            rows = query(db_url, "SELECT success, attempts FROM worker_jobs WHERE id = %s",
                         first.id)
            return bool(rows) and rows[0][0] is not None and rows[0][1] == 2

        wait_until(rerun_by_b, 60, "worker B to rescue and finish the frozen job")
        reclaimed = query(db_url, "SELECT started FROM worker_jobs WHERE id = %s", first.id)[0][0]
        row_before = query(db_url, "SELECT success, result, finished FROM worker_jobs "
                                   "WHERE id = %s", first.id)[0]
        a.send_signal(signal.SIGCONT)
        wait_until(lambda: f"late result of job {first.id}" in (tmp_path / "a.log").read_text(),
                   30, "worker A to report its late result as rejected")
        row_after = query(db_url, "SELECT success, result, finished FROM worker_jobs "
                                  "WHERE id = %s", first.id)[0]
        assert row_after == row_before
        assert '"attempt": 2' in str(row_after[1]).replace("'", '"')
        # Each first attempt runs 3 s and the next row is due within a second of the
        # last run: sample for at least 3 s and until the chain's next row has been seen
        # waiting (at most two runs), never two at once.
        samples = []
        began = time.monotonic()
        while time.monotonic() - began < 3 or (1 not in samples
                                               and time.monotonic() - began < 10):
            samples.append(_pending_in_chain(db_url))
            time.sleep(0.05)
        assert max(samples) == 1, f"cron chain pending rows over time: {sorted(set(samples))}"
        for proc, name in ((a, "a.log"), (b, "b.log")):
            assert_clean_stop(proc, tmp_path / name)
    finally:
        for proc in (a, b):
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                proc.kill()
    started_b = reclaimed.timestamp() if hasattr(reclaimed, "timestamp") else _iso(reclaimed)
    report(f"fencing[{db_url.split(':')[0]}]", {
        "late_writes_rejected": 1, "chain_pending_max": max(samples),
        "rescue_seconds": round(started_b - frozen_at, 2)})


def _iso(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value).timestamp()

"""An ``async def`` job that blocks the event loop (``time.sleep``) cannot stop its
worker's heartbeat: the worker is not taken for dead, its other running job (a plain
``def`` job in a thread) is not run a second time at once by another worker, and the
block is reported: an ERROR naming the job, ``loop_blocked_ms`` on the job."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from jobtable import JobTable, WorkerJobConfig

from ._support import (
    RunLog,
    assert_clean_stop,
    kill_all,
    query,
    report,
    start_worker,
    wait_until,
    write_jobs,
)

BLOCKER = """
import time

async def run(params):
    time.sleep(12)  # blocks the event loop: what an async job must not do
    return "done"
"""


@pytest.mark.slow
def test_a_blocked_event_loop_does_not_get_its_worker_rescued(db_url: str,
                                                              tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"blocker": BLOCKER})
    runlog_url = db_url if db_url.startswith("postgresql") else str(tmp_path / "runs.db")
    runlog = RunLog(runlog_url)
    runlog.create()
    args = ("--rescue-after", "3s", "--poll-interval", "0.2s", "--concurrency", "2")
    with JobTable(db_url, jobs=jobs) as jt:
        probe = jt.schedule_job(WorkerJobConfig(type="probe", user_id=1, data={"sleep": 15}))
    a = start_worker(db_url, jobs, runlog_url, *args, log=tmp_path / "a.log")
    b = None
    try:
        wait_until(lambda: bool(runlog.open_runs()), 60, "the plain def job to start")
        with JobTable(db_url, jobs=jobs) as jt:
            blocker = jt.schedule_job(WorkerJobConfig(type="blocker", user_id=1))
        wait_until(lambda: query(db_url, "SELECT started FROM worker_jobs WHERE id = %s",
                                 blocker.id)[0][0] is not None, 30, "the blocking job to start")
        b = start_worker(db_url, jobs, runlog_url, *args, log=tmp_path / "b.log")
        wait_until(lambda: all(query(db_url, "SELECT finished FROM worker_jobs WHERE id = %s",
                                     j)[0][0] is not None for j in (probe.id, blocker.id)),
                   90, "both jobs to finish")
        assert_clean_stop(a, tmp_path / "a.log")
        assert_clean_stop(b, tmp_path / "b.log")
    finally:
        for proc in (a, b):
            if proc is not None:
                kill_all(proc, db_url)
    runs = [r for r in runlog.rows() if r[0] == probe.id]
    overlaps = [(x, y) for x, y in itertools.combinations(runs, 2)
                if x[3] < (y[4] or float("inf")) and y[3] < (x[4] or float("inf"))]
    assert overlaps == [], "the plain def job ran twice at once"
    assert len(runs) == 1, "a live worker's job was rescued"
    (blocked_ms, success, attempts) = query(
        db_url, "SELECT loop_blocked_ms, success, attempts FROM worker_jobs WHERE id = %s",
        blocker.id)[0]
    assert success and attempts == 1
    assert blocked_ms >= 5000
    log = (tmp_path / "a.log").read_text()
    assert "event loop was blocked" in log and f"async jobs on it: {blocker.id}" in log
    report(f"blocked_loop[{db_url.split(':')[0]}]", {
        "probe_runs": len(runs), "overlapping_runs": len(overlaps),
        "loop_blocked_ms_recorded": blocked_ms})

"""SIGKILL random worker processes mid-job: nothing is lost, nothing runs twice at once."""

from __future__ import annotations

import itertools
import os
import random
import signal
import statistics
import time
from pathlib import Path

import pytest

from jobtable import JobTable, WorkerJobConfig

from ._support import (
    RunLog,
    assert_clean_stop,
    kill_all,
    pid_alive,
    query,
    report,
    start_worker,
    wait_until,
    write_jobs,
)

JOBS = 2000
ROUNDS = 20


def _finished(db_url: str) -> int:
    return int(query(db_url, "SELECT COUNT(*) FROM worker_jobs "
                             "WHERE type = 'probe' AND finished IS NOT NULL")[0][0])


@pytest.mark.slow
def test_sigkill_rounds_lose_no_job_and_never_overlap_runs(db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs")
    runlog_url = db_url if db_url.startswith("postgresql") else str(tmp_path / "runs.db")
    runlog = RunLog(runlog_url)
    runlog.create()
    with JobTable(db_url, jobs=jobs) as jt:
        jt.schedule_jobs([WorkerJobConfig(type="probe", user_id=i, data={"sleep": 0.12})
                          for i in range(JOBS)])
    supervisor = start_worker(
        db_url, jobs, runlog_url, "--processes", "4", "--concurrency", "4",
        "--rescue-after", "1s", "--poll-interval", "0.2s", "--grace-period", "2s",
        # Enough attempts that a job whose runs the test kills again and again is not
        # given up on: this test is about losing nothing, not about poison jobs.
        env={"JOBTABLE_MAX_ATTEMPTS": "20"}, log=tmp_path / "worker.log")
    kills: dict[int, float] = {}
    victims_jobs: dict[int, list[int]] = {}
    rng = random.Random(20)
    try:
        wait_until(lambda: bool(runlog.open_runs()), 60, "a first job to start")
        for _ in range(ROUNDS):
            candidates: list[tuple[int, int]] = []

            def running(found: list[tuple[int, int]] = candidates) -> bool:
                found[:] = [(j, p) for j, p in runlog.open_runs()
                            if p not in kills and pid_alive(p)]
                return bool(found)

            wait_until(running, 60, "a job running in a live worker")
            pid = rng.choice(candidates)[1]
            victims_jobs[pid] = [j for j, p in candidates if p == pid]
            kills[pid] = time.time()
            os.kill(pid, signal.SIGKILL)
            time.sleep(rng.uniform(0.6, 1.0))
        wait_until(lambda: _finished(db_url) == JOBS, 240, f"all {JOBS} jobs to finish")
        assert_clean_stop(supervisor, tmp_path / "worker.log")
    finally:
        kill_all(supervisor, db_url)

    rows = query(db_url, "SELECT id, success, cancelled FROM worker_jobs WHERE type = 'probe'")
    assert len(rows) == JOBS
    lost = [r[0] for r in rows if not r[1]]
    assert lost == [], f"jobs that did not succeed: {lost[:20]}"
    pending = query(db_url, "SELECT COUNT(*) FROM worker_jobs WHERE finished IS NULL "
                            "AND type = 'probe'")[0][0]
    assert pending == 0

    runs: dict[int, list[tuple[int, int, int, float, float | None, int]]] = {}
    for run in runlog.rows():
        runs.setdefault(run[0], []).append(run)
    assert set(runs) == {r[0] for r in rows}, "every job ran at least once"
    double_starts = []
    for job_id, job_runs in runs.items():
        job_runs.sort(key=lambda r: r[3])
        for earlier, later in itertools.pairwise(job_runs):
            # The process that ran it, or the worker whose isolated child ran it.
            killed_at = kills.get(earlier[2], kills.get(earlier[5]))
            # A repeated run is allowed only after the process of the earlier run was
            # killed, and it must start after that kill (never overlapping).
            if killed_at is None or earlier[3] > killed_at or later[3] < killed_at:
                double_starts.append((job_id, earlier, later))
    assert double_starts == []
    rescue = []
    for pid, job_ids in victims_jobs.items():
        for job_id in job_ids:
            later = [r for r in runs[job_id] if r[2] != pid and r[3] >= kills[pid]]
            if later:
                rescue.append(min(r[3] for r in later) - kills[pid])
    repeated = sum(1 for job_runs in runs.values() if len(job_runs) > 1)
    report(f"sigkill_rounds[{db_url.split(':')[0]}]", {
        "rounds": ROUNDS, "faults_injected": len(kills), "jobs_checked": JOBS,
        "jobs_lost": len(lost), "double_starts": len(double_starts),
        "jobs_rerun_after_kill": repeated,
        "rescue_seconds_median": round(statistics.median(rescue), 2) if rescue else None,
    })

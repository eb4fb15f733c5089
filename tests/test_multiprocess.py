"""Real worker processes on both databases: four processes drain 2,000 jobs each
exactly once; a worker SIGKILLed mid-job leaves its job to another once stale (or once
rescued); ``--processes`` supervises, restarts a killed process, and stops them all."""

from __future__ import annotations

import os
import signal
from collections import Counter
from pathlib import Path

import pytest
from helpers import (
    RECORD_JOB,
    Side,
    log_tail,
    open_table,
    pid_alive,
    sql,
    start_worker,
    stop_process,
    wait_until,
    write_jobs,
)

from jobtable import JobStatus, WorkerJobConfig

# First attempt: sleeps far longer than the test; later attempts: done at once.
SUSPECT_JOB = """
import time

def run(params):
    record(params.job.id, "start", {"attempt": params.job.attempts})
    time.sleep(60 if params.job.attempts == 1 else 0.1)
    record(params.job.id, "end", {"attempt": params.job.attempts})
    return {"attempt": params.job.attempts}
"""


def _worker_pids(db_url: str) -> set[int]:
    return {int(r[0]) for r in sql(db_url, "SELECT pid FROM worker_processes")}


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


@pytest.mark.slow
def test_four_worker_processes_drain_2000_jobs_each_exactly_once(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"note": RECORD_JOB})
    side = Side(db_url, tmp_path)
    log = tmp_path / "workers.log"
    with open_table(db_url, jobs) as jt:
        jt.migrate()
    supervisor = start_worker(db_url, jobs, "--processes", "4", "--concurrency", "8",
                              side=side, log=log)
    try:
        wait_until(lambda: len(_worker_pids(db_url)) == 4, 60, "four worker processes")
        with open_table(db_url, jobs) as jt:
            rows = jt.schedule_jobs(
                [WorkerJobConfig(type="note", user_id=u) for u in range(2000)])
        wait_until(lambda: side.count() >= 2000, 180, "2,000 runs", interval=0.25)
        wait_until(lambda: sql(db_url, "SELECT COUNT(*) FROM worker_jobs WHERE type = 'note' "
                               "AND finished IS NULL")[0][0] == 0, 60, "every row finished")
    finally:
        code = stop_process(supervisor)
    assert code == 0, log_tail(log)
    ran = Counter(side.job_ids())
    assert set(ran) == {r.id for r in rows}
    assert [job_id for job_id, n in ran.items() if n > 1] == []
    assert len(ran) == 2000
    succeeded = sql(db_url, "SELECT COUNT(*) FROM worker_jobs WHERE type = 'note' "
                    "AND success = TRUE")[0][0]
    assert succeeded == 2000
    assert len({pid for _, _, pid, _, _ in side.events()}) == 4, "all four processes ran jobs"


@pytest.mark.slow
@pytest.mark.parametrize("recovery", ["stale-limit", "rescue"])
def test_a_job_of_a_worker_killed_mid_job_runs_again_in_another_worker(
        db_url: str, tmp_path: Path, recovery: str) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"suspect": SUSPECT_JOB})
    side = Side(db_url, tmp_path)
    options = ["--stale-limit", "4s"] if recovery == "stale-limit" else ["--rescue-after", "2s"]
    with open_table(db_url, jobs) as jt:
        jt.migrate()
        job = jt.schedule_job(WorkerJobConfig(type="suspect", user_id=1))
        first = start_worker(db_url, jobs, *options, side=side, log=tmp_path / "first.log")
        try:
            wait_until(lambda: side.count("start") == 1, 60, "the job to start")
        finally:
            first.kill()
            assert first.wait(30) == -signal.SIGKILL
        killed = jt.get_job(job.id)
        assert killed is not None and killed.status is JobStatus.RUNNING
        assert killed.attempts == 1

        log = tmp_path / "second.log"
        second = start_worker(db_url, jobs, *options, side=side, log=log)
        try:
            wait_until(lambda: (r := jt.get_job(job.id)) is not None and r.finished, 60,
                       "the job to finish in the second worker")
        finally:
            code = stop_process(second)
        assert code == 0, log_tail(log)
        done = jt.get_job(job.id)
        assert done is not None and done.status is JobStatus.SUCCEEDED, done.result
        assert done.result == {"attempt": 2} and done.attempts == 2
    starts = side.events("start")
    assert [s[0] for s in starts] == [job.id, job.id]
    assert starts[0][2] == first.pid
    # The second run is in the second worker (a suspect runs in a child process of it).
    assert second.pid in (starts[1][2], starts[1][3])
    assert side.count("end") == 1
    if recovery == "stale-limit":
        # Claimed again only once its start was older than the stale limit.
        assert starts[1][4] - starts[0][4] > 3.5


@pytest.mark.slow
def test_processes_supervises_restarts_a_killed_process_and_stops_them_all(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"note": RECORD_JOB})
    side = Side(db_url, tmp_path)
    log = tmp_path / "supervisor.log"
    with open_table(db_url, jobs) as jt:
        jt.migrate()
    supervisor = start_worker(db_url, jobs, "--processes", "2", side=side, log=log)
    try:
        original = wait_until(
            lambda: p if len(p := _worker_pids(db_url)) == 2 else None, 60,
            "two worker processes")
        assert all(_ppid(pid) == supervisor.pid for pid in original)
        victim = min(original)
        os.kill(victim, signal.SIGKILL)
        replacement = wait_until(
            lambda: {p for p in _worker_pids(db_url) - original
                     if pid_alive(p) and _ppid(p) == supervisor.pid}, 60,
            "a replacement worker process")
        assert not pid_alive(victim)
        # The restarted set still runs jobs.
        with open_table(db_url, jobs) as jt:
            jt.schedule_jobs([WorkerJobConfig(type="note", user_id=u) for u in range(20)])
        wait_until(lambda: side.count() == 20, 60, "20 runs")
    finally:
        code = stop_process(supervisor)
    assert code == 0, log_tail(log)
    for pid in original | replacement:
        wait_until(lambda pid=pid: not pid_alive(pid), 30, f"worker pid {pid} to be gone")
    assert "restarting" in log.read_text()

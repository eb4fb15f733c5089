"""PostgreSQL restarts while workers drain: every job finishes once, workers survive."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from jobtable import JobTable, WorkerJobConfig

from ._support import (
    RunLog,
    assert_clean_stop,
    pid_alive,
    query,
    report,
    start_worker,
    wait_until,
    write_jobs,
)
from .conftest import PrivatePostgres

JOBS = 5000


def _finished(url: str) -> int:
    try:
        return int(query(url, "SELECT COUNT(*) FROM worker_jobs WHERE type = 'probe' "
                              "AND finished IS NOT NULL")[0][0])
    except Exception:
        return -1  # the server is restarting


@pytest.mark.slow
@pytest.mark.parametrize("outage", ["restart", "stop-start"])
def test_workers_survive_a_postgres_restart_and_finish_every_job_once(
        private_pg: PrivatePostgres, pg_url: str, tmp_path: Path, outage: str) -> None:
    jobs = write_jobs(tmp_path / "jobs")
    runlog = RunLog(pg_url)  # kept on the other server, which stays up
    runlog.create()
    with JobTable(private_pg.url, jobs=jobs) as jt:
        jt.schedule_jobs([WorkerJobConfig(type="probe", user_id=i, data={"sleep": 0.002})
                          for i in range(JOBS)])
    supervisor = start_worker(
        private_pg.url, jobs, pg_url, "--processes", "4", "--concurrency", "8",
        "--rescue-after", "5s", "--poll-interval", "0.2s", log=tmp_path / "worker.log")
    try:
        wait_until(lambda: _finished(private_pg.url) >= 1000, 120, "1000 jobs to finish")
        pids_before = {r[0] for r in query(private_pg.url, "SELECT pid FROM worker_processes")}
        down_at = time.monotonic()
        if outage == "restart":
            private_pg.restart()
        else:
            private_pg.stop()
            time.sleep(8)  # longer than the rescue window: nobody may be taken for dead
            private_pg.start()
        back_at = time.monotonic()
        wait_until(lambda: _finished(private_pg.url) == JOBS, 240, f"all {JOBS} jobs to finish")
        recovered = time.monotonic() - back_at
        assert all(pid_alive(pid) for pid in pids_before), "a worker process died"
        assert supervisor.poll() is None
        assert_clean_stop(supervisor, tmp_path / "worker.log")
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
        for pid in {r[2] for r in runlog.rows()}:
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)

    rows = query(private_pg.url, "SELECT id, success FROM worker_jobs WHERE type = 'probe'")
    assert len(rows) == JOBS and all(success for _, success in rows)
    runs: dict[int, int] = {}
    for job_id, *_ in runlog.rows():
        runs[job_id] = runs.get(job_id, 0) + 1
    twice = {job_id: n for job_id, n in runs.items() if n > 1}
    assert twice == {}, f"jobs run more than once: {list(twice)[:20]}"
    assert len(runs) == JOBS
    log = (tmp_path / "worker.log").read_text()
    assert "database error" in log, "the outage was noticed"
    report(f"database_outage[{outage}]", {
        "jobs_checked": JOBS, "jobs_lost": JOBS - len(runs), "double_runs": len(twice),
        "outage_seconds": round(back_at - down_at, 1),
        "seconds_to_drain_after_return": round(recovered, 1),
        "worker_processes_restarted": 0,
    })

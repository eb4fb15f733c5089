"""Waiting for a result (issue 11), on both databases: ``wait_for`` / ``wait_for_async``
return the finished row of a job run by a worker process, follow retries when asked,
time out cleanly; ``jobtable schedule --wait`` exits 0, 1 or 124."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from helpers import (
    RECORD_JOB,
    Side,
    open_table,
    run_cli,
    start_worker,
    stop_process,
    write_jobs,
)

from jobtable import JobNotFoundError, JobStatus, WorkerJobConfig
from jobtable.cli.schedule import WAIT_TIMEOUT_EXIT


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    return write_jobs(tmp_path / "jobs", {
        "note": RECORD_JOB,
        "fail": """
            def run(params):
                raise RuntimeError("it broke")
        """,
        "flaky": """
            def run(params):
                if params.job.retry_count == 0:
                    raise RuntimeError("first try fails")
                return {"retry": params.job.retry_count}
        """})


def test_wait_for_returns_the_result_of_a_job_run_by_a_worker_process(
        db_url: str, jobs: Path, tmp_path: Path) -> None:
    side = Side(db_url, tmp_path)
    with open_table(db_url, jobs) as jt:
        jt.migrate()
        worker = start_worker(db_url, jobs, side=side, log=tmp_path / "worker.log")
        try:
            job = jt.schedule_job(WorkerJobConfig(type="note", user_id=1, data={"v": 1}))
            done = jt.wait_for(job.id, timeout=60)
            assert (done.id, done.status, done.result) == (job.id, JobStatus.SUCCEEDED,
                                                          {"ok": job.id})
            failing = jt.schedule_job(WorkerJobConfig(type="fail", user_id=1))
            failed = asyncio.run(jt.wait_for_async(failing.id, 60))
            assert failed.status is JobStatus.FAILED and failed.error == "it broke"
            flaky = jt.schedule_job(WorkerJobConfig(
                type="flaky", user_id=1, auto_reschedule_on_failure=True))
            last = jt.wait_for(flaky.id, 60, follow_retries=True)
            assert (last.status, last.result, last.rescheduled_from_job) == (
                JobStatus.SUCCEEDED, {"retry": 1}, flaky.id)
            # Without following, the first (failed) row is the answer.
            assert jt.wait_for(flaky.id, 60).status is JobStatus.FAILED
        finally:
            assert stop_process(worker) == 0


def test_wait_for_times_out_cleanly_on_a_job_that_never_runs(
        db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        job = jt.schedule_job(WorkerJobConfig(type="note", user_id=1))
        with pytest.raises(TimeoutError, match=f"job {job.id} did not finish within"):
            jt.wait_for(job.id, timeout=0.3)
        with pytest.raises(TimeoutError):
            asyncio.run(jt.wait_for_async(job.id, timeout=0.3))
        assert jt.require_job(job.id).status is JobStatus.PENDING  # untouched
        with pytest.raises(JobNotFoundError):
            jt.wait_for(job.id + 1000, timeout=1)


def test_wait_for_returns_a_job_cancelled_while_waiting(db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        job = jt.schedule_job(WorkerJobConfig(type="note", user_id=1))

        async def main() -> object:
            waiting = asyncio.create_task(jt.wait_for_async(job.id, 30))
            await asyncio.sleep(0.2)
            await jt.cancel_job_async(job.id)
            return await waiting

        done = asyncio.run(main())
        assert getattr(done, "status", None) is JobStatus.CANCELLED


def test_schedule_wait_exit_codes(db_url: str, jobs: Path, tmp_path: Path) -> None:
    base = ("schedule", "--database", db_url, "--jobs", str(jobs))
    side = Side(db_url, tmp_path)
    with open_table(db_url, jobs) as jt:
        jt.migrate()
    worker = start_worker(db_url, jobs, side=side, log=tmp_path / "worker.log")
    try:
        ok = run_cli(*base[:1], "note", *base[1:], "--wait", "--timeout", "60s")
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.splitlines()[-1].endswith('succeeded: {"ok": '
                                                   + ok.stdout.split()[2] + "}")
        failed = run_cli(*base[:1], "fail", *base[1:], "--wait", "--json")
        assert failed.returncode == 1, failed.stderr
        row = json.loads(failed.stdout)
        assert (row["status"], row["result"]["error"]) == ("failed", "it broke")
        late = run_cli(*base[:1], "note", *base[1:], "--user-id", "2", "--due", "+1h",
                       "--wait", "--timeout", "1s")
        assert late.returncode == WAIT_TIMEOUT_EXIT, late.stderr
        assert "did not finish within 0:00:01; it is pending" in late.stderr
        bad = run_cli(*base[:1], "note", *base[1:], "--timeout", "1s")
        assert bad.returncode == 2 and "--timeout goes with --wait" in bad.stderr
    finally:
        assert stop_process(worker) == 0

"""The worker's public options for tests and embedding: ``max_jobs`` and ``on_claim``,
on both databases."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from helpers import RECORD_JOB, Side, open_table, write_jobs

from jobtable import ConfigError, JobStatus, JobTable, Worker, WorkerJob, WorkerJobConfig


def _schedule(jt: JobTable, count: int) -> list[int]:
    return [jt.schedule_job(WorkerJobConfig(type="record", user_id=i)).id for i in range(count)]


def test_max_jobs_claims_no_more_than_that_and_the_claimed_ones_finish(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"record": RECORD_JOB})
    with Side(db_url, tmp_path).env(), open_table(db_url, jobs) as jt:
        ids = _schedule(jt, 7)
        worker = Worker(jt, burst=True, concurrency=2, max_jobs=3, schedule_builtins=False)
        asyncio.run(worker.run())
        assert worker.limit_reached
        assert worker.stats.claimed == 3
        rows = [jt.get_job(i) for i in ids]
        statuses = [r.status for r in rows if r is not None]
        assert statuses.count(JobStatus.SUCCEEDED) == 3
        assert statuses.count(JobStatus.PENDING) == 4


def test_max_jobs_not_reached_runs_everything(db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"record": RECORD_JOB})
    with Side(db_url, tmp_path).env(), open_table(db_url, jobs) as jt:
        ids = _schedule(jt, 4)
        worker = Worker(jt, burst=True, max_jobs=10, schedule_builtins=False)
        asyncio.run(worker.run())
        assert not worker.limit_reached
        assert all(jt.get_job(i).status is JobStatus.SUCCEEDED for i in ids)  # type: ignore[union-attr]


def test_on_claim_sees_each_claimed_job_before_it_runs(db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"record": RECORD_JOB})
    side = Side(db_url, tmp_path)
    with side.env(), open_table(db_url, jobs) as jt:
        ids = _schedule(jt, 5)
        seen: list[WorkerJob] = []
        runs_before: list[int] = []

        def hook(job: WorkerJob) -> None:
            seen.append(job)
            runs_before.append(len([r for r in side.events("run") if r[0] == job.id]))

        worker = Worker(jt, burst=True, concurrency=3, on_claim=hook, schedule_builtins=False)
        asyncio.run(worker.run())
        assert sorted(j.id for j in seen) == sorted(ids)
        assert all(j.claimed_by == worker.id and j.attempts == 1 and j.finished is None
                   for j in seen)
        assert runs_before == [0] * len(ids)


def test_a_failing_on_claim_hook_is_logged_and_the_job_still_runs(
        db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"record": RECORD_JOB})
    with Side(db_url, tmp_path).env(), open_table(db_url, jobs) as jt:
        (job_id,) = _schedule(jt, 1)

        def hook(job: WorkerJob) -> None:
            raise RuntimeError("hook broke")

        with caplog.at_level(logging.ERROR, logger="jobtable.worker"):
            asyncio.run(Worker(jt, burst=True, on_claim=hook, schedule_builtins=False).run())
        row = jt.get_job(job_id)
        assert row is not None and row.status is JobStatus.SUCCEEDED
        assert f"the on_claim hook failed for job {job_id}" in caplog.text


@pytest.mark.parametrize("value", [0, -1, True, "3", 2.5])
def test_a_bad_max_jobs_is_refused_with_what_is_accepted(
        sqlite_url: str, tmp_path: Path, value: object) -> None:
    with open_table(sqlite_url, None) as jt, pytest.raises(ConfigError) as err:
        Worker(jt, max_jobs=value)  # type: ignore[arg-type]
    assert "max_jobs must be a positive integer or None" in str(err.value)


def test_a_bad_on_claim_is_refused(sqlite_url: str, tmp_path: Path) -> None:
    with open_table(sqlite_url, None) as jt, pytest.raises(ConfigError, match="on_claim"):
        Worker(jt, on_claim="print")  # type: ignore[arg-type]

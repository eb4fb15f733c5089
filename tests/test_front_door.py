"""``JobTable`` as the one front door: the hand actions, their typed errors, their
``_async`` twins, on both databases."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import open_table, write_jobs

from jobtable import (
    ActionRefusedError,
    ConfigError,
    JobNotFoundError,
    JobStatus,
    JobTable,
    WorkerJobConfig,
)
from jobtable.model import Outcome
from jobtable.timeutil import utcnow


@pytest.fixture
def jt(db_url: str, tmp_path: Path) -> JobTable:
    jobs = write_jobs(tmp_path / "jobs", {"send": "def run(params):\n    return 1\n"},
                      recorder=False)
    return open_table(db_url, jobs)


def schedule(jt: JobTable, user_id: int = 1, **kw: object) -> int:
    return jt.schedule_job(WorkerJobConfig(type="send", user_id=user_id, **kw)).id  # type: ignore[arg-type]


def fail(jt: JobTable, job_id: int) -> None:
    [claimed] = [j for j in jt.store.claim("w", 100) if j.id == job_id]
    jt.store.complete([Outcome(job=claimed, success=False, result={"error": "no"})])


def test_cancel_returns_the_row_and_refuses_with_a_reason(jt: JobTable) -> None:
    with jt:
        pending = schedule(jt)
        row = jt.cancel_job(pending)
        assert row.id == pending and row.status is JobStatus.CANCELLED
        assert row.error == "Job cancelled by request"
        with pytest.raises(ActionRefusedError, match=r"already finished \(cancelled\); too late"):
            jt.cancel_job(pending)
        with pytest.raises(JobNotFoundError, match="no job with id 999999"):
            jt.cancel_job(999_999)
        running = schedule(jt, user_id=2)
        jt.store.claim("host-9", 10)
        asked = jt.cancel_job(running)  # its worker is asked to stop it
        assert asked.status is JobStatus.RUNNING and asked.cancel_requested is not None


def test_retry_run_now_and_purge_with_their_refusals(jt: JobTable) -> None:
    with jt:
        failed = schedule(jt)
        with pytest.raises(ActionRefusedError, match="only failed or cancelled"):
            jt.retry_job(failed)
        fail(jt, failed)
        again = jt.retry_job(failed)
        assert again.rescheduled_from_job == failed and again.status is JobStatus.PENDING
        assert [j.id for j in jt.job_chain(failed)] == [failed, again.id]
        assert jt.retry_candidates(status="failed") == []  # already retried
        later = schedule(jt, user_id=5, due=utcnow() + timedelta(hours=1))
        assert jt.run_job_now(later).due <= utcnow()
        with pytest.raises(ActionRefusedError, match="only pending jobs can be run now"):
            jt.run_job_now(failed)
        assert jt.count_purgeable_jobs(["failed"], timedelta(0)) == 1
        with pytest.raises(ConfigError, match="must not be negative"):
            jt.purge_jobs(["failed"], timedelta(seconds=-1))
        with pytest.raises(ConfigError, match="unknown status 'pending'"):
            jt.purge_jobs(["pending"], timedelta(0))
        assert jt.purge_jobs(["failed"], timedelta(0)) == 1
        assert jt.get_job(failed) is None and jt.get_job(later) is not None
        with pytest.raises(ConfigError, match="unknown status 'done'; use one of pending"):
            jt.list_jobs(status="done")


def test_the_async_twins_do_the_same(jt: JobTable) -> None:
    async def main() -> None:
        async with jt:
            first = schedule(jt)
            cancelled = await jt.cancel_job_async(first)
            assert cancelled.status is JobStatus.CANCELLED
            retried = await jt.retry_job_async(first)
            assert (await jt.retry_jobs_async([first]))[0].rescheduled_from_job == first
            assert await jt.count_jobs_async(status="pending") == 1
            assert (await jt.require_job_async(retried.id)).status is JobStatus.CANCELLED
            assert len(await jt.job_chain_async(first)) == 3
            assert (await jt.run_job_now_async(retried.id + 1)).due <= utcnow()
            assert await jt.count_purgeable_jobs_async(["cancelled"], timedelta(0)) == 2
            assert await jt.purge_jobs_async(["cancelled"], timedelta(0)) == 2
            assert (await jt.stats_async()).by_status["pending"] == 1
            assert await jt.cron_chains_async() == []
            assert await jt.live_workers_async() == []
            with pytest.raises(JobNotFoundError):
                await jt.cancel_job_async(999_999)

    asyncio.run(main())

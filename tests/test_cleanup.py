"""Rule 9 on both databases: every worker start keeps one chain of the built-in
``remove_old_worker_jobs``, which deletes succeeded jobs past ``remove_at`` and failed or
cancelled ones past the retention, never unfinished rows, never its own."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from helpers import (
    FAIL_JOB,
    RECORD_JOB,
    Side,
    now,
    open_table,
    run_burst,
    run_cli,
    set_times,
    sql,
    write_jobs,
)

from jobtable import JobStatus, JobTable, WorkerJob, WorkerJobConfig

CLEANUP = "remove_old_worker_jobs"


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    return write_jobs(tmp_path / "jobs", {"note": RECORD_JOB, "fail": FAIL_JOB})


def _status(jt: JobTable, job_id: int) -> JobStatus | None:
    row = jt.get_job(job_id)
    return None if row is None else row.status


def _cleanup_rows(jt: JobTable) -> list[WorkerJob]:
    return jt.list_jobs(type=CLEANUP, limit=100)


def test_every_worker_start_keeps_exactly_one_cleanup_chain(
        db_url: str, jobs: Path, tmp_path: Path) -> None:
    for _ in range(3):
        with open_table(db_url, jobs) as jt:
            run_burst(jt)
    result = run_cli("worker", "--database", db_url, "--jobs", str(jobs), "--burst")
    assert result.returncode == 0, result.stderr
    with open_table(db_url, jobs) as jt:
        rows = _cleanup_rows(jt)
        [chain] = [j for j in rows if j.status is JobStatus.PENDING]
        assert chain.user_id == 0 and chain.cron_schedule == "0 * * * * *"
        # Kept, not replaced at each start: no cancelled rows. (A start that crosses a
        # minute boundary runs the chain once, which adds a row to the same chain.)
        assert [j for j in rows if j.status is JobStatus.CANCELLED] == []
        assert len(rows) <= 2
        assert {j.rescheduled_from_job for j in rows} <= {None, *(j.id for j in rows)}


def test_a_new_cleanup_schedule_replaces_the_chain_at_the_next_start(
        db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        run_burst(jt)
        [old] = jt.list_jobs(type=CLEANUP, status="pending")
    with open_table(db_url, jobs, cleanup_cron="0 0 * * * *") as jt:
        run_burst(jt)
        assert _status(jt, old.id) is JobStatus.CANCELLED
        [new] = jt.list_jobs(type=CLEANUP, status="pending")
        assert new.cron_schedule == "0 0 * * * *"


def test_cleanup_deletes_old_finished_jobs_and_nothing_else(
        db_url: str, jobs: Path, tmp_path: Path) -> None:
    side = Side(db_url, tmp_path)
    t = now()
    with open_table(db_url, jobs) as jt, side.env():
        succeeded_old, succeeded_new = (
            jt.schedule_job(WorkerJobConfig(type="note", user_id=u)) for u in (1, 2))
        failed_old, failed_new = (
            jt.schedule_job(WorkerJobConfig(type="fail", user_id=u)) for u in (1, 2))
        cancelled_old = jt.schedule_job(WorkerJobConfig(type="note", user_id=3))
        cancelled_new = jt.schedule_job(WorkerJobConfig(type="note", user_id=4))
        jt.schedule_jobs([WorkerJobConfig(type="note", user_id=u,
                                          due=t + timedelta(days=1)) for u in (3, 4)])
        run_burst(jt)
        pending = jt.schedule_job(WorkerJobConfig(type="note", user_id=5,
                                                  due=t + timedelta(days=1)))
        running = jt.schedule_job(WorkerJobConfig(type="note", user_id=6))
        long_ago = t - timedelta(days=30)
        set_times(db_url, succeeded_old.id, finished=t - timedelta(hours=2),
                  remove_at=t - timedelta(hours=1))
        set_times(db_url, succeeded_new.id, finished=long_ago, remove_at=t + timedelta(hours=1))
        set_times(db_url, failed_old.id, finished=t - timedelta(days=8))
        set_times(db_url, failed_new.id, finished=t - timedelta(days=6))
        set_times(db_url, cancelled_old.id, finished=t - timedelta(days=8))
        set_times(db_url, cancelled_new.id, finished=t - timedelta(hours=1))
        set_times(db_url, pending.id, created_at=long_ago)
        set_times(db_url, running.id, created_at=long_ago, started=t - timedelta(minutes=1))
        sql(db_url, "UPDATE worker_jobs SET attempts = 1 WHERE id = %s", running.id)
        assert _status(jt, cancelled_old.id) is JobStatus.CANCELLED
        assert _status(jt, failed_old.id) is JobStatus.FAILED

        [chain] = jt.list_jobs(type=CLEANUP, status="pending")
        set_times(db_url, chain.id, due=t - timedelta(seconds=1))
        before = {j.id for j in jt.list_jobs(limit=1000)}
        run_burst(jt)
        done = jt.get_job(chain.id)
        assert done is not None and done.status is JobStatus.SUCCEEDED, done
        assert done.result == {"deleted": 3}
        after = {j.id for j in jt.list_jobs(limit=1000)}
        assert before - after == {succeeded_old.id, failed_old.id, cancelled_old.id}
        for kept in (succeeded_new, failed_new, cancelled_new, pending, running):
            assert kept.id in after
        [following] = jt.list_jobs(type=CLEANUP, status="pending")
        assert following.rescheduled_from_job == chain.id


def test_failed_retention_is_configurable(db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs, failed_retention="1h") as jt:
        failed = jt.schedule_job(WorkerJobConfig(type="fail", user_id=1))
        recent = jt.schedule_job(WorkerJobConfig(type="fail", user_id=2))
        run_burst(jt)
        set_times(db_url, failed.id, finished=now() - timedelta(hours=2))
        set_times(db_url, recent.id, finished=now() - timedelta(minutes=30))
        deleted = jt.store.cleanup(jt.settings.failed_retention)
        assert deleted == 1
        assert jt.get_job(failed.id) is None
        assert jt.get_job(recent.id) is not None


def test_cleanup_never_deletes_the_row_it_is_told_to_keep(db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        own, other = (jt.schedule_job(WorkerJobConfig(type="fail", user_id=u)) for u in (1, 2))
        run_burst(jt)
        for job in (own, other):
            set_times(db_url, job.id, finished=now() - timedelta(days=30))
        assert jt.store.cleanup(timedelta(days=7), keep_id=own.id) == 1
        assert jt.get_job(own.id) is not None
        assert jt.get_job(other.id) is None


def test_cleanup_works_through_a_backlog_in_batches(db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        rows = jt.schedule_jobs([WorkerJobConfig(type="note", user_id=u) for u in range(25)])
        ids = [r.id for r in rows]
        placeholders = ", ".join(["%s"] * len(ids))
        sql(db_url, f"UPDATE worker_jobs SET finished = %s, success = TRUE, remove_at = %s "
            f"WHERE id IN ({placeholders})", now() - timedelta(hours=2),
            now() - timedelta(hours=1), *ids)
        assert jt.store.cleanup(timedelta(days=7), batch=10) == 25
        assert jt.list_jobs(type="note") == []

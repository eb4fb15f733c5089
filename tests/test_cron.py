"""Rule 7 on both databases: cron chains. First row at the next occurrence (6 or 5
fields, any time zone), one next row after every run, failures continue the chain or
retry it, missed occurrences run once, and a chain never forks, even with two workers."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers import (
    Side,
    log_tail,
    now,
    open_table,
    run_burst,
    set_times,
    sql,
    start_worker,
    stop_process,
    wait_until,
    write_jobs,
)

from jobtable import JobStatus, JobTable, WorkerJob, WorkerJobConfig

CRON_JOBS = {
    "tick": """
        def run(params):
            record(params.job.id, "run", params.job.due.isoformat())
            return {"due": params.job.due.isoformat()}
    """,
    "fail_once": """
        def run(params):
            record(params.job.id, "run")
            if count("run") == 1:
                raise RuntimeError("first run fails")
            return "ok"
    """,
    "always_fails": """
        def run(params):
            raise RuntimeError("cron failure")
    """,
}


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    return write_jobs(tmp_path / "jobs", CRON_JOBS)


def _get(jt: JobTable, job_id: int) -> WorkerJob:
    row = jt.get_job(job_id)
    assert row is not None
    return row


def _next_of(jt: JobTable, job_id: int) -> list[WorkerJob]:
    return [j for j in jt.list_jobs(limit=1000) if j.rescheduled_from_job == job_id]


def _pending(jt: JobTable, job_type: str) -> list[WorkerJob]:
    return jt.list_jobs(type=job_type, status="pending", limit=1000)


def _midnight_after(moment: datetime) -> datetime:
    day = moment.astimezone(UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def test_a_six_field_cron_job_is_first_due_at_its_next_occurrence(
        db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        before = now()
        row = jt.schedule_cron_job(WorkerJobConfig(type="tick", user_id=1), "*/10 * * * * *")
        assert row.cron_schedule == "*/10 * * * * *" and row.cron_timezone is None
        assert row.is_cron and row.status is JobStatus.PENDING
        assert row.due.second % 10 == 0 and row.due.microsecond == 0
        assert before < row.due <= before + timedelta(seconds=10)


def test_a_five_field_cron_job_is_first_due_at_its_next_minute(
        db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        before = now()
        row = jt.schedule_cron_job(WorkerJobConfig(type="tick", user_id=1), "*/5 * * * *")
        assert row.due.minute % 5 == 0 and row.due.second == 0 and row.due.microsecond == 0
        assert before < row.due <= before + timedelta(minutes=5)


@pytest.mark.parametrize("zone", ["Asia/Tokyo", "America/New_York", "Europe/Paris"])
def test_a_cron_job_with_a_time_zone_is_due_at_that_zone_s_wall_clock_time(
        db_url: str, jobs: Path, zone: str) -> None:
    with open_table(db_url, jobs) as jt:
        before = now()
        row = jt.schedule_cron_job(WorkerJobConfig(type="tick", user_id=1), "30 9 * * *", zone)
        assert row.cron_timezone == zone
        local = row.due.astimezone(ZoneInfo(zone))
        assert (local.hour, local.minute, local.second) == (9, 30, 0)
        assert before < row.due <= before + timedelta(days=1, hours=1)
        if zone == "Asia/Tokyo":  # UTC+9 all year
            assert (row.due.astimezone(UTC).hour, row.due.minute) == (0, 30)


def test_after_each_run_the_next_row_is_due_at_the_next_occurrence(
        db_url: str, jobs: Path, tmp_path: Path) -> None:
    side = Side(db_url, tmp_path)
    with open_table(db_url, jobs) as jt, side.env():
        first = jt.schedule_cron_job(WorkerJobConfig(type="tick", user_id=1, data={"k": 1}),
                                     "* * * * * *")
        wait_until(lambda: now() >= first.due, 10, "the first row to fall due")
        run_burst(jt)
        done = _get(jt, first.id)
        assert done.status is JobStatus.SUCCEEDED
        [second] = _next_of(jt, first.id)
        assert second.status is JobStatus.PENDING
        assert (second.type, second.user_id, second.data) == ("tick", 1, {"k": 1})
        assert second.cron_schedule == "* * * * * *"
        assert done.started is not None and done.finished is not None
        # The next occurrence after the run ended (computed just before it was written).
        assert done.started < second.due <= done.finished + timedelta(seconds=1)
        assert second.due.microsecond == 0

        wait_until(lambda: now() >= second.due, 10, "the second row to fall due")
        run_burst(jt)
        [third] = _next_of(jt, second.id)
        assert _get(jt, second.id).status is JobStatus.SUCCEEDED
        assert third.status is JobStatus.PENDING and third.due > second.due
        assert side.job_ids() == [first.id, second.id]
        assert [j.id for j in _pending(jt, "tick")] == [third.id]


def test_a_cron_failure_without_auto_reschedule_continues_the_chain(
        db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        first = jt.schedule_cron_job(WorkerJobConfig(type="always_fails", user_id=1),
                                     "0 0 * * *")
        set_times(db_url, first.id, due=now() - timedelta(seconds=1))
        run_burst(jt)
        failed = _get(jt, first.id)
        assert failed.status is JobStatus.FAILED
        assert failed.result["error"] == "cron failure"
        [following] = _next_of(jt, first.id)
        assert following.status is JobStatus.PENDING
        assert following.cron_schedule == "0 0 * * *"
        assert failed.finished is not None
        assert following.due == _midnight_after(failed.finished)


def test_a_cron_failure_with_auto_reschedule_retries_after_the_delay_keeping_the_schedule(
        db_url: str, jobs: Path, tmp_path: Path) -> None:
    side = Side(db_url, tmp_path)
    with open_table(db_url, jobs) as jt, side.env():
        first = jt.schedule_cron_job(WorkerJobConfig(
            type="fail_once", user_id=1, auto_reschedule_on_failure=True,
            auto_reschedule_on_failure_delay=timedelta(seconds=30)), "0 0 * * *")
        set_times(db_url, first.id, due=now() - timedelta(seconds=1))
        run_burst(jt)
        failed = _get(jt, first.id)
        assert failed.status is JobStatus.FAILED
        [retry] = _next_of(jt, first.id)
        assert retry.cron_schedule == "0 0 * * *" and retry.auto_reschedule_on_failure
        assert failed.started is not None and failed.finished is not None
        assert failed.started + timedelta(seconds=30) <= retry.due
        assert retry.due <= failed.finished + timedelta(seconds=30)

        set_times(db_url, retry.id, due=now() - timedelta(seconds=1))
        run_burst(jt)
        succeeded = _get(jt, retry.id)
        assert succeeded.status is JobStatus.SUCCEEDED
        [following] = _next_of(jt, retry.id)
        assert succeeded.finished is not None
        assert following.due == _midnight_after(succeeded.finished)
        assert following.cron_schedule == "0 0 * * *"
        assert side.count() == 2


@pytest.mark.parametrize("cron", ["0 0 0 * * *", "0 0 * * *"], ids=["6-field", "5-field"])
def test_after_downtime_a_missed_occurrence_runs_once(
        db_url: str, jobs: Path, tmp_path: Path, cron: str) -> None:
    side = Side(db_url, tmp_path)
    with open_table(db_url, jobs) as jt, side.env():
        first = jt.schedule_cron_job(WorkerJobConfig(type="tick", user_id=1), cron)
        # The worker was down for ten days: ten occurrences were missed.
        set_times(db_url, first.id, due=now() - timedelta(days=10))
        run_burst(jt)
        run_burst(jt)
        assert side.job_ids() == [first.id]
        done = _get(jt, first.id)
        [following] = _pending(jt, "tick")
        assert following.rescheduled_from_job == first.id
        assert done.finished is not None
        assert following.due == _midnight_after(done.finished)


def test_scheduling_a_cron_job_again_replaces_the_pending_chain_row(
        db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        old = jt.schedule_cron_job(WorkerJobConfig(type="tick", user_id=1), "0 * * * * *")
        new = jt.schedule_cron_job(WorkerJobConfig(type="tick", user_id=1), "0 0 * * * *")
        assert _get(jt, old.id).status is JobStatus.CANCELLED
        assert [j.id for j in _pending(jt, "tick")] == [new.id]


def test_a_chain_run_by_two_workers_never_has_two_pending_rows(
        db_url: str, jobs: Path, tmp_path: Path) -> None:
    side = Side(db_url, tmp_path)
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    with open_table(db_url, jobs) as jt:
        jt.migrate()
        first = jt.schedule_cron_job(WorkerJobConfig(type="tick", user_id=1), "* * * * * *")
        workers = [start_worker(db_url, jobs, side=side, log=log) for log in logs]
        counts: list[int] = []
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                counts.append(int(sql(
                    db_url, "SELECT COUNT(*) FROM worker_jobs WHERE type = 'tick' "
                    "AND finished IS NULL")[0][0]))

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            wait_until(lambda: side.count() >= 4, 60, "four runs of the chain")
        finally:
            done.set()
            sampler.join(30)
            codes = [stop_process(w) for w in workers]
        assert codes == [0, 0], "\n".join(log_tail(p) for p in logs)
        assert counts and max(counts) == 1
        rows = [j for j in jt.list_jobs(type="tick", limit=1000)]
        assert len(_pending(jt, "tick")) <= 1
        children = Counter(j.rescheduled_from_job for j in rows if j.rescheduled_from_job)
        assert all(n == 1 for n in children.values()), children
        assert first.id in children
        ran = side.job_ids()
        assert len(ran) == len(set(ran)), "a row ran twice"
        dues = [j.due for j in rows if j.status is JobStatus.SUCCEEDED]
        assert len(dues) == len(set(dues)), "an occurrence ran twice"

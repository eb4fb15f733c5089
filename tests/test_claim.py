"""Rule 4 on both databases: a claim is exclusive. Concurrent claims from threads and
from two worker processes never hand out one row twice while it is fresh."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from helpers import (
    RECORD_JOB,
    Side,
    log_tail,
    now,
    open_table,
    run_together,
    set_times,
    sql,
    start_worker,
    stop_process,
    wait_until,
    write_jobs,
)

from jobtable import JobStatus, WorkerJobConfig


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    return write_jobs(tmp_path / "jobs", {"note": RECORD_JOB})


def test_a_claim_takes_the_earliest_due_first_and_marks_the_row(
        db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        t = now()
        late = jt.schedule_job(WorkerJobConfig(type="note", user_id=1,
                                               due=t - timedelta(seconds=1)))
        early = jt.schedule_job(WorkerJobConfig(type="note", user_id=2,
                                                due=t - timedelta(seconds=5)))
        future = jt.schedule_job(WorkerJobConfig(type="note", user_id=3,
                                                 due=t + timedelta(hours=1)))
        first = jt.store.claim("w1", 1)
        assert [j.id for j in first] == [early.id]
        assert first[0].started is not None and first[0].claimed_by == "w1"
        assert first[0].attempts == 1
        assert first[0].status is JobStatus.RUNNING
        rest = jt.store.claim("w2", 10)
        assert [j.id for j in rest] == [late.id]
        assert jt.store.claim("w3", 10) == []  # the future job is not due
        assert jt.store.claim("w3", 0) == []
        row = jt.get_job(future.id)
        assert row is not None and row.status is JobStatus.PENDING


def test_due_times_in_other_zones_are_stored_in_utc_and_ordered_by_instant(
        db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        base = now().replace(microsecond=0) - timedelta(hours=3)
        tokyo = ZoneInfo("Asia/Tokyo")
        # 02:00 UTC written as Tokyo wall time sorts after 01:00 UTC written in UTC,
        # although its text would sort first.
        later = jt.schedule_job(WorkerJobConfig(type="note", user_id=1,
                                                due=(base + timedelta(hours=1)).astimezone(tokyo)))
        earlier = jt.schedule_job(WorkerJobConfig(type="note", user_id=2, due=base))
        row = jt.get_job(later.id)
        assert row is not None and row.due == base + timedelta(hours=1)
        assert row.due.utcoffset() == timedelta(0)
        assert [j.id for j in jt.store.claim("w", 2)] == [earlier.id, later.id]


def test_a_fresh_claim_is_not_claimed_again_but_a_stale_one_is(
        db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        job = jt.schedule_job(WorkerJobConfig(type="note", user_id=1))
        assert [j.id for j in jt.store.claim("w1", 5)] == [job.id]
        assert jt.store.claim("w2", 5) == []
        set_times(db_url, job.id, started=now() - timedelta(hours=2))
        again = jt.store.claim("w2", 5)
        assert [j.id for j in again] == [job.id]
        assert again[0].claimed_by == "w2" and again[0].attempts == 2


@pytest.mark.parametrize("tables", ["shared", "one-per-thread"])
def test_concurrent_claims_from_threads_never_return_a_row_twice(
        db_url: str, jobs: Path, tables: str) -> None:
    with open_table(db_url, jobs) as jt:
        rows = jt.schedule_jobs([WorkerJobConfig(type="note", user_id=u) for u in range(400)])
    expected = {r.id for r in rows}
    claimed: list[int] = []
    lock = threading.Lock()
    shared = open_table(db_url, jobs)
    own = [open_table(db_url, jobs) if tables == "one-per-thread" else shared
           for _ in range(8)]

    def claim(index: int) -> None:
        while True:
            got = own[index].store.claim(f"worker-{index}", 7)
            if not got:
                return
            with lock:
                claimed.extend(j.id for j in got)

    try:
        errors = run_together(8, claim)
    finally:
        for table in {id(t): t for t in [shared, *own]}.values():
            table.close()
    assert errors == []
    twice = [job_id for job_id, n in Counter(claimed).items() if n > 1]
    assert twice == []
    assert set(claimed) == expected


def test_two_worker_processes_never_run_a_job_twice(
        db_url: str, jobs: Path, tmp_path: Path) -> None:
    side = Side(db_url, tmp_path)
    with open_table(db_url, jobs) as jt:
        jt.migrate()
    logs = [tmp_path / "w1.log", tmp_path / "w2.log"]
    workers = [start_worker(db_url, jobs, "--concurrency", "8", side=side, log=log)
               for log in logs]
    try:
        # Both are up and polling before the jobs arrive, so both compete for them.
        wait_until(lambda: sql(db_url, "SELECT COUNT(*) FROM worker_processes")[0][0] == 2,
                   60, "two registered workers")
        with open_table(db_url, jobs) as jt:
            rows = jt.schedule_jobs(
                [WorkerJobConfig(type="note", user_id=u) for u in range(300)])
        wait_until(lambda: side.count() >= 300, 120, "300 runs")
    finally:
        codes = [stop_process(w) for w in workers]
    assert codes == [0, 0], "\n".join(log_tail(p) for p in logs)
    ran = side.job_ids()
    assert sorted(ran) == sorted(r.id for r in rows)
    assert len({pid for _, _, pid, _, _ in side.events()}) == 2, "both workers ran jobs"

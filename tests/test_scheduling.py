"""Rules 1-3 on both databases: what pending means, scheduling cancels matching pending
jobs (also under concurrency, from threads and processes), bulk scheduling, due times,
the async API and one JobTable shared between threads."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import (
    RECORD_JOB,
    Side,
    now,
    open_table,
    row_count,
    run_burst,
    run_together,
    set_times,
    sql,
    subprocess_env,
    wait_until,
    write_jobs,
)

from jobtable import JobStatus, WorkerJobConfig
from jobtable.model import CANCELLED_MESSAGE


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    return write_jobs(tmp_path / "jobs", {
        "note": RECORD_JOB, "other": RECORD_JOB,
        "fail": """
            def run(params):
                raise RuntimeError("it broke")
        """})


def test_pending_means_unstarted_or_started_longer_ago_than_the_stale_limit(
        db_url: str, jobs: Path, tmp_path: Path) -> None:
    side = Side(db_url, tmp_path)
    with open_table(db_url, jobs) as jt, side.env():
        stale = jt.schedule_job(WorkerJobConfig(type="note", user_id=1))
        fresh = jt.schedule_job(WorkerJobConfig(type="note", user_id=2))
        # As if some worker had claimed both: one two hours ago, one a minute ago.
        set_times(db_url, stale.id, started=now() - timedelta(hours=2))
        set_times(db_url, fresh.id, started=now() - timedelta(minutes=1))
        sql(db_url, "UPDATE worker_jobs SET attempts = 1 WHERE id IN (%s, %s)",
            stale.id, fresh.id)
        run_burst(jt)
        assert side.job_ids() == [stale.id]
        again = jt.get_job(stale.id)
        assert again is not None and again.status is JobStatus.SUCCEEDED
        assert again.attempts == 2
        untouched = jt.get_job(fresh.id)
        assert untouched is not None and untouched.status is JobStatus.RUNNING
        assert untouched.finished is None


def test_the_stale_limit_is_configurable(db_url: str, jobs: Path, tmp_path: Path) -> None:
    side = Side(db_url, tmp_path)
    with open_table(db_url, jobs, stale_limit="10m") as jt, side.env():
        job = jt.schedule_job(WorkerJobConfig(type="note", user_id=1))
        set_times(db_url, job.id, started=now() - timedelta(minutes=5))
        run_burst(jt)
        assert side.count() == 0
        set_times(db_url, job.id, started=now() - timedelta(minutes=11))
        run_burst(jt)
        assert side.job_ids() == [job.id]


def test_scheduling_cancels_matching_pending_jobs_only(db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        first = jt.schedule_job(WorkerJobConfig(type="note", user_id=7, data={"v": 1}))
        other_user = jt.schedule_job(WorkerJobConfig(type="note", user_id=8))
        other_type = jt.schedule_job(WorkerJobConfig(type="other", user_id=7))
        second = jt.schedule_job(WorkerJobConfig(type="note", user_id=7, data={"v": 2}))

        cancelled = jt.get_job(first.id)
        assert cancelled is not None
        assert cancelled.finished is not None
        assert cancelled.success is False
        assert cancelled.cancelled is True
        assert cancelled.result == {"error": "Job cancelled due to new job being created"}
        assert cancelled.result == {"error": CANCELLED_MESSAGE}
        assert cancelled.status is JobStatus.CANCELLED
        assert cancelled.started is None
        for kept in (other_user, other_type, second):
            row = jt.get_job(kept.id)
            assert row is not None and row.status is JobStatus.PENDING, kept
        assert second.data == {"v": 2}


def test_scheduling_spares_a_fresh_running_job_but_cancels_a_stale_one(
        db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        running = jt.schedule_job(WorkerJobConfig(type="note", user_id=3))
        set_times(db_url, running.id, started=now() - timedelta(minutes=1))
        newer = jt.schedule_job(WorkerJobConfig(type="note", user_id=3))
        row = jt.get_job(running.id)
        assert row is not None and row.status is JobStatus.RUNNING and not row.cancelled

        set_times(db_url, running.id, started=now() - timedelta(hours=2))
        newest = jt.schedule_job(WorkerJobConfig(type="note", user_id=3))
        for old in (running, newer):
            row = jt.get_job(old.id)
            assert row is not None and row.status is JobStatus.CANCELLED, old
        row = jt.get_job(newest.id)
        assert row is not None and row.status is JobStatus.PENDING


def test_a_cancelled_job_is_told_apart_from_a_failed_one(db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        replaced = jt.schedule_job(WorkerJobConfig(type="fail", user_id=1))
        failing = jt.schedule_job(WorkerJobConfig(type="fail", user_id=1))
        run_burst(jt)
        cancelled, failed = jt.get_job(replaced.id), jt.get_job(failing.id)
        assert cancelled is not None and failed is not None
        assert (cancelled.success, failed.success) == (False, False)
        assert cancelled.status is JobStatus.CANCELLED and cancelled.cancelled
        assert failed.status is JobStatus.FAILED and not failed.cancelled
        assert failed.error == "it broke"
        assert [j.id for j in jt.list_jobs(status="cancelled")] == [replaced.id]
        assert [j.id for j in jt.list_jobs(status="failed")] == [failing.id]


def _pending_of_pair(db_url: str, job_type: str, user_id: int) -> list[int]:
    rows = sql(db_url, "SELECT id FROM worker_jobs WHERE type = %s AND user_id = %s "
               "AND finished IS NULL", job_type, user_id)
    return [int(r[0]) for r in rows]


@pytest.mark.parametrize("tables", ["shared", "one-per-thread"])
def test_twenty_threads_scheduling_one_pair_leave_exactly_one_pending_row(
        db_url: str, jobs: Path, tables: str) -> None:
    shared = open_table(db_url, jobs)
    shared.migrate()
    own = [open_table(db_url, jobs) if tables == "one-per-thread" else shared
           for _ in range(20)]

    def schedule(index: int) -> None:
        own[index].schedule_job(WorkerJobConfig(type="note", user_id=42,
                                                data={"thread": index}))

    try:
        errors = run_together(20, schedule, timeout=60)
    finally:
        for table in {id(t): t for t in own}.values():
            table.close()
        if tables == "one-per-thread":
            shared.close()
    assert errors == []
    assert row_count(db_url) == 20
    assert len(_pending_of_pair(db_url, "note", 42)) == 1
    cancelled = sql(db_url, "SELECT COUNT(*) FROM worker_jobs WHERE cancelled = TRUE")
    assert cancelled[0][0] == 19


SCHEDULER_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from jobtable import JobTable, WorkerJobConfig
    db, jobs, go, index = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    with JobTable(db, jobs=jobs) as jt:
        jt.migrate()
        print("ready", flush=True)
        while not os.path.exists(go):
            time.sleep(0.005)
        for n in range(5):
            jt.schedule_job(WorkerJobConfig(type="note", user_id=42,
                                            data={"process": index, "n": n}))
    print("done", flush=True)
""")


def test_processes_scheduling_one_pair_leave_exactly_one_pending_row(
        db_url: str, jobs: Path, tmp_path: Path) -> None:
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", SCHEDULER_SCRIPT, db_url, str(jobs),
                               str(go), str(i)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=subprocess_env())
             for i in range(4)]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", proc.stderr
        go.touch()
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert row_count(db_url) == 20
    assert len(_pending_of_pair(db_url, "note", 42)) == 1
    cancelled = sql(db_url, "SELECT COUNT(*) FROM worker_jobs WHERE cancelled = TRUE")
    assert cancelled[0][0] == 19


def test_bulk_scheduling_keeps_the_rule_within_the_batch_and_against_the_table(
        db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        jt.schedule_job(WorkerJobConfig(type="note", user_id=1, data={"v": 0}))
        rows = jt.schedule_jobs([
            WorkerJobConfig(type="note", user_id=1, data={"v": 1}),
            WorkerJobConfig(type="note", user_id=2, data={"v": 2}),
            WorkerJobConfig(type="other", user_id=1, data={"v": 3}),
            WorkerJobConfig(type="note", user_id=1, data={"v": 4}),
        ])
        assert [r.data["v"] for r in rows] == [1, 2, 3, 4]
        statuses = {j.data["v"]: j.status for j in jt.list_jobs(limit=100)}
        assert statuses == {
            0: JobStatus.CANCELLED, 1: JobStatus.CANCELLED, 2: JobStatus.PENDING,
            3: JobStatus.PENDING, 4: JobStatus.PENDING}
        assert len(_pending_of_pair(db_url, "note", 1)) == 1
        cancelled = [j for j in jt.list_jobs(status="cancelled")]
        assert all(j.result == {"error": CANCELLED_MESSAGE} for j in cancelled)
        assert jt.schedule_jobs([]) == []


def test_concurrent_bulk_schedules_of_overlapping_pairs_leave_one_pending_row_per_pair(
        db_url: str, jobs: Path) -> None:
    # Eight threads each schedule the same ten pairs, in different orders: no deadlock,
    # and each pair ends with exactly one pending row.
    tables = [open_table(db_url, jobs) for _ in range(8)]
    tables[0].migrate()

    def work(index: int) -> None:
        users = list(range(10))
        users = users[index:] + users[:index]
        if index % 2:
            users.reverse()
        for _ in range(3):
            tables[index].schedule_jobs(
                [WorkerJobConfig(type="note", user_id=u, data={"t": index}) for u in users])

    try:
        errors = run_together(8, work)
    finally:
        for table in tables:
            table.close()
    assert errors == []
    assert row_count(db_url) == 8 * 3 * 10
    for user in range(10):
        assert len(_pending_of_pair(db_url, "note", user)) == 1, user


def test_a_job_due_later_is_not_started_before_its_due(
        db_url: str, jobs: Path, tmp_path: Path) -> None:
    side = Side(db_url, tmp_path)
    with open_table(db_url, jobs) as jt, side.env():
        soon = jt.schedule_job(WorkerJobConfig(type="note", user_id=1))
        assert abs((soon.due - now()).total_seconds()) < 60  # due defaults to now
        later = jt.schedule_job(WorkerJobConfig(type="note", user_id=2,
                                                due=now() + timedelta(seconds=1.5)))
        run_burst(jt)
        assert side.job_ids() == [soon.id]
        row = jt.get_job(later.id)
        assert row is not None and row.status is JobStatus.PENDING and row.attempts == 0

        wait_until(lambda: now() >= later.due, 10, "the later job's due time")
        run_burst(jt)
        assert side.job_ids() == [soon.id, later.id]
        ran_at = side.events("run")[1][4]
        assert ran_at >= later.due.timestamp()


def test_one_jobtable_shared_by_eight_threads_schedules_every_job(
        db_url: str, jobs: Path) -> None:
    ids: list[int] = []
    lock = threading.Lock()
    with open_table(db_url, jobs) as jt:

        def work(thread: int) -> None:
            for n in range(25):
                row = jt.schedule_job(WorkerJobConfig(type="note", user_id=thread * 100 + n))
                with lock:
                    ids.append(row.id)

        assert run_together(8, work) == []
        assert len(set(ids)) == 200
        assert row_count(db_url) == 200
        assert len(jt.list_jobs(status="pending", limit=500)) == 200


def test_async_methods_work_from_a_running_loop(db_url: str, jobs: Path) -> None:
    async def main() -> None:
        async with open_table(db_url, jobs) as jt:
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0)

            tick_task = asyncio.create_task(ticker())
            one = await jt.schedule_job_async(WorkerJobConfig(type="note", user_id=1))
            many = await jt.schedule_jobs_async(
                [WorkerJobConfig(type="other", user_id=u) for u in range(3)])
            cron = await jt.schedule_cron_job_async(
                WorkerJobConfig(type="note", user_id=2), "0 0 * * *", "Europe/Paris")
            got = await jt.get_job_async(one.id)
            listed = await jt.list_jobs_async(type="other")
            cancelled = await jt.cancel_job_async(one.id)
            after = await jt.get_job_async(one.id)
            tick_task.cancel()
            assert got is not None and got.id == one.id
            assert sorted(j.id for j in listed) == sorted(j.id for j in many)
            assert cron.cron_schedule == "0 0 * * *" and cron.cron_timezone == "Europe/Paris"
            assert cancelled.id == one.id and cancelled.status is JobStatus.CANCELLED
            assert after is not None and after.status is JobStatus.CANCELLED
            assert ticks > 0  # the loop kept running while the calls waited

    asyncio.run(main())


def test_a_one_off_spares_the_pending_cron_chain_of_its_pair_and_a_cron_job_replaces_it(
        db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        chain = jt.schedule_cron_job(WorkerJobConfig(type="note", user_id=7), "0 0 * * *")
        one_off = jt.schedule_job(WorkerJobConfig(type="note", user_id=7))
        assert jt.get_job(chain.id).status is JobStatus.PENDING  # type: ignore[union-attr]
        again = jt.schedule_job(WorkerJobConfig(type="note", user_id=7))
        assert jt.get_job(one_off.id).status is JobStatus.CANCELLED  # type: ignore[union-attr]
        assert jt.get_job(chain.id).status is JobStatus.PENDING  # type: ignore[union-attr]
        # In a batch too: one-offs spare the chain.
        jt.schedule_jobs([WorkerJobConfig(type="note", user_id=7, data={"n": n})
                          for n in range(3)])
        assert jt.get_job(chain.id).status is JobStatus.PENDING  # type: ignore[union-attr]
        assert jt.get_job(again.id).status is JobStatus.CANCELLED  # type: ignore[union-attr]
        # A new cron job for the pair replaces the chain and the one-offs.
        replacement = jt.schedule_cron_job(WorkerJobConfig(type="note", user_id=7), "0 1 * * *")
        pending = jt.list_jobs(status="pending", type="note", user_id=7)
        assert [j.id for j in pending] == [replacement.id]


def test_a_declared_chain_survives_a_one_off_of_its_type(db_url: str, tmp_path: Path) -> None:
    folder = write_jobs(tmp_path / "jobs", {"tick": """
        CRON = "0 0 * * * *"

        def run(params):
            return "tick"
    """}, recorder=False)
    with open_table(db_url, folder) as jt:
        run_burst(jt)  # a worker start ensures the declared chain
        [chain] = [j for j in jt.list_jobs(status="pending", type="tick") if j.declared]
        one_off = jt.schedule_job(WorkerJobConfig(type="tick"))
        run_burst(jt)
        assert jt.get_job(one_off.id).status is JobStatus.SUCCEEDED  # type: ignore[union-attr]
        assert jt.get_job(chain.id).status is JobStatus.PENDING  # type: ignore[union-attr]


def test_queue_priority_and_uniqueness_settings_are_stored_and_kept_by_follow_ups(
        db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        job = jt.schedule_job(WorkerJobConfig(
            type="fail", user_id=3, queue="reports", priority=-5, unique_key="k1",
            on_conflict="allow", auto_reschedule_on_failure=True))
        assert (job.queue, job.priority, job.unique_key, job.on_conflict, job.retry_count) == (
            "reports", -5, "k1", "allow", 0)
        run_burst(jt, max_jobs=1)
        [retry] = [j for j in jt.list_jobs(type="fail") if j.rescheduled_from_job == job.id]
        assert (retry.queue, retry.priority, retry.unique_key, retry.on_conflict) == (
            "reports", -5, "k1", "allow")
        assert retry.retry_count == 1
        run_burst(jt, max_jobs=1)
        [second] = [j for j in jt.list_jobs(type="fail") if j.rescheduled_from_job == retry.id]
        assert second.retry_count == 2
        cron = jt.schedule_cron_job(WorkerJobConfig(type="note", queue="q", priority=2),
                                    "* * * * * *")
        assert (cron.queue, cron.priority, cron.retry_count) == ("q", 2, 0)


def test_queue_priority_and_on_conflict_defaults_come_from_the_job_module(
        db_url: str, tmp_path: Path) -> None:
    folder = write_jobs(tmp_path / "jobs", {"mail": """
        QUEUE = "mail"
        PRIORITY = -1
        ON_CONFLICT = "allow"

        def run(params):
            return None
    """}, recorder=False)
    with open_table(db_url, folder) as jt:
        job = jt.schedule_job(WorkerJobConfig(type="mail"))
        assert (job.queue, job.priority, job.on_conflict) == ("mail", -1, "allow")
        given = jt.schedule_job(WorkerJobConfig(type="mail", queue="urgent", priority=0,
                                                on_conflict="replace"))
        assert (given.queue, given.priority, given.on_conflict) == ("urgent", 0, "replace")

"""The worker's async store path (``claim_async``, ``complete_async``, ...): on PostgreSQL
they run on an asyncio pool in the event loop, on SQLite on a thread; either way they
keep the sync path's guarantees (fencing, exclusive claims, transient errors, recovery
after lost connections)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import psycopg
import pytest
from helpers import (
    BackgroundWorker,
    open_table,
    start_worker,
    stop_process,
    wait_until,
    write_jobs,
)

from jobtable import JobTable, WorkerJobConfig
from jobtable.model import Outcome, WorkerJob
from jobtable.store import Store, open_store
from jobtable.store.base import Op


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with open_store(db_url) as s:
        s.migrate()
        yield s


def _schedule(store: Store, count: int, **config: object) -> list[int]:
    jt = JobTable(store.url, strict=False)
    try:
        return jt.schedule_jobs([WorkerJobConfig(type="t", user_id=i, **config)  # type: ignore[arg-type]
                                 for i in range(count)], return_rows=False)
    finally:
        jt.close()


def _no_thread(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """On PostgreSQL, fail if an async call falls back to the sync path on a thread."""
    if store.dialect != "postgres":
        return

    def refuse(op: Op[object]) -> object:
        raise AssertionError("an async store call ran on the sync path")

    monkeypatch.setattr(store, "_run", refuse)


def _ok(job: WorkerJob) -> Outcome:
    return Outcome(job=job, success=True, result={"ok": job.id})


def test_async_claims_and_completions_are_fenced_by_the_claim(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobtable import rules

    [first_id, second_id] = _schedule(store, 2)

    async def main() -> None:
        await store.open_async()
        try:
            _no_thread(store, monkeypatch)
            jobs = await store.claim_async("w1", 10)
            assert sorted(j.id for j in jobs) == [first_id, second_id]
            old = {j.id: j for j in jobs}
            # Both rows rescued and claimed again by another worker (attempts 2).
            monkeypatch.undo()
            for job in jobs:
                assert store.release_claim(job.id, job.attempts)
            _no_thread(store, monkeypatch)
            again = {j.id: j for j in await store.claim_async("w2", 10)}
            assert {j.attempts for j in again.values()} == {2}
            # The first claim's late outcomes are refused, plain and with a follow-up
            # (a failure with a retry: the transaction path), and schedule nothing.
            late_retry = rules.finish(old[second_id], False, {"error": "x"},
                                      old[second_id].due, force=True)
            assert late_retry.follow_up is not None
            assert await store.complete_async([_ok(old[first_id])]) == set()
            assert await store.complete_async([late_retry]) == set()
            assert await store.complete_async([_ok(again[first_id]),
                                               _ok(again[second_id])]) == {first_id,
                                                                           second_id}
            assert await store.claim_async("w1", 10) == []
            assert await store.next_due_async() is None
        finally:
            await store.close_async()

    asyncio.run(main())
    assert store.count_jobs() == 2  # the refused retry scheduled nothing
    for job_id in (first_id, second_id):
        row = store.get_job(job_id)
        assert row is not None and row.success is True and row.result == {"ok": job_id}
        assert row.claimed_by == "w2"


def test_async_completion_with_follow_ups_and_snoozes_is_one_fenced_transaction(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    from jobtable import rules

    _schedule(store, 3, auto_reschedule_on_failure=True,
              auto_reschedule_on_failure_delay=timedelta(hours=1))

    async def main() -> None:
        await store.open_async()
        try:
            _no_thread(store, monkeypatch)
            failing, snoozing, late = sorted(await store.claim_async("w", 10),
                                             key=lambda j: j.id)
            monkeypatch.undo()
            assert store.release_claim(late.id, late.attempts)
            [late_again] = store.claim("w2", 1)
            _no_thread(store, monkeypatch)
            now = failing.due
            outcomes = [
                rules.finish(failing, success=False, result={"error": "boom"}, now=now),
                Outcome(job=snoozing, success=False, result=None,
                        snooze_until=now + timedelta(hours=2)),
                rules.finish(late, success=False, result={"error": "late"}, now=now),
            ]
            assert outcomes[0].follow_up is not None and outcomes[2].follow_up is not None
            written = await store.complete_async(outcomes)
            assert written == {failing.id, snoozing.id}
            assert await store.complete_async([_ok(late_again)]) == {late.id}
        finally:
            await store.close_async()

    asyncio.run(main())
    retries = [j for j in store.list_jobs(limit=100) if j.rescheduled_from_job is not None]
    # One retry for the failure written; none for the refused late failure.
    assert len(retries) == 1 and retries[0].finished is None
    snoozed = [j for j in store.list_jobs(limit=100) if j.finished is None
               and j.rescheduled_from_job is None]
    assert len(snoozed) == 1 and snoozed[0].started is None


def test_concurrent_async_claims_of_two_stores_never_take_a_row_twice(pg_url: str) -> None:
    with open_store(pg_url) as first, open_store(pg_url) as second:
        first.migrate()
        total = 1500
        _schedule(first, total)
        taken: list[int] = []

        async def claimer(store: Store, name: str) -> None:
            while True:
                jobs = await store.claim_async(name, 7)
                if not jobs:
                    return
                taken.extend(j.id for j in jobs)
                await store.complete_async([_ok(j) for j in jobs])

        async def main() -> None:
            await first.open_async()
            await second.open_async()
            try:
                await asyncio.gather(*(claimer(s, f"w{i}")
                                       for i, s in enumerate([first, second] * 4)))
            finally:
                await first.close_async()
                await second.close_async()

        asyncio.run(main())
        assert len(taken) == total and len(set(taken)) == total
        assert first.count_jobs(status="succeeded") == total


def _kill_connections(pg_url: str, pids: set[int] | None = None) -> int:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchall()
    return len([r for r in rows if pids is None or r[0] in pids])


def test_a_killed_async_connection_is_a_transient_error_and_the_pool_reconnects(
        pg_url: str) -> None:
    with open_store(pg_url) as store:
        store.migrate()
        _schedule(store, 20)

        async def main() -> None:
            await store.open_async()
            try:
                assert len(await store.claim_async("w", 5)) == 5
                assert _kill_connections(pg_url) >= 1
                errors: list[BaseException] = []
                for _ in range(200):
                    try:
                        jobs = await store.claim_async("w", 5)
                        break
                    except Exception as exc:
                        assert store.is_transient(exc), exc
                        errors.append(exc)
                        await asyncio.sleep(0.05)
                else:
                    raise AssertionError(f"no claim after the kill: {errors[-1]!r}")
                assert len(jobs) == 5
                assert await store.complete_async([_ok(j) for j in jobs]) == \
                    {j.id for j in jobs}
                # The claim whose reply was lost is reconciled on the async path too.
                released = await store.release_unknown_claims_async("w", set())
                assert len(released) == 5
            finally:
                await store.close_async()

        asyncio.run(main())


NOOP_JOB = """
async def run(params):
    return {"ok": params.job.id}
"""


@pytest.mark.slow
def test_a_worker_keeps_draining_while_its_connections_are_killed(
        pg_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"noop": NOOP_JOB}, recorder=False)
    total, concurrency = 3000, 20
    with open_table(pg_url, jobs) as jt:
        jt.schedule_jobs([WorkerJobConfig(type="noop", user_id=i) for i in range(total)],
                         return_rows=False)
    log = tmp_path / "worker.log"
    proc = start_worker(pg_url, jobs, "--concurrency", str(concurrency), log=log)

    def finished() -> int:
        with psycopg.connect(pg_url) as conn:
            row = conn.execute("SELECT COUNT(*) FROM worker_jobs WHERE type = 'noop' "
                               "AND finished IS NOT NULL").fetchone()
        return int(row[0]) if row else 0

    kills = 3
    try:
        for k in range(kills):
            wait_until(lambda k=k: finished() >= (k + 1) * 300, 120, "jobs to finish")
            # Every connection of the worker: its asyncio pool, sync pool, heartbeat
            # and LISTEN connections.
            _kill_connections(pg_url)
        wait_until(lambda: finished() == total, 180, "every job to finish",
                   describe=lambda: log.read_text()[-3000:])
        assert proc.poll() is None, "the worker died"
    finally:
        assert stop_process(proc) == 0
    with psycopg.connect(pg_url) as conn:
        row = conn.execute("SELECT COUNT(*) FILTER (WHERE success), "
                           "COUNT(*) FILTER (WHERE attempts > 1) FROM worker_jobs "
                           "WHERE type = 'noop'").fetchone()
    assert row is not None
    ok, claimed_again = row
    assert ok == total, log.read_text()[-3000:]
    # Results computed while the connection was down are written when it is back, so
    # no job runs again, save those of a claim whose reply was lost with its connection
    # (released before the next claim, at most one claim's worth per kill).
    assert claimed_again <= kills * concurrency, claimed_again
    assert "database reachable again" in log.read_text()


def test_workers_of_one_jobtable_in_two_event_loops_each_open_and_close_their_pool(
        pg_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"noop": NOOP_JOB}, recorder=False)
    with open_table(pg_url, jobs) as jt:
        jt.migrate()
        jt.schedule_jobs([WorkerJobConfig(type="noop", user_id=i) for i in range(400)],
                         return_rows=False)
        with BackgroundWorker(jt, concurrency=5), BackgroundWorker(jt, concurrency=5):
            wait_until(lambda: jt.count_jobs(status="succeeded") == 400, 60,
                       "every job to finish")
            assert len(jt.store._apools) == 2  # type: ignore[attr-defined]
        assert jt.store._apools == {}  # type: ignore[attr-defined]


def test_an_async_pool_without_a_free_connection_times_out_as_a_transient_error(
        pg_url: str) -> None:
    from jobtable.store.postgres import PostgresStore

    with PostgresStore(pg_url, connect_timeout=0.5) as store:
        store.migrate()

        async def main() -> None:
            await store.open_async()
            try:
                pool = store._apools[asyncio.get_running_loop()][0]
                held = [await pool.getconn() for _ in range(store.async_pool_size)]
                try:
                    with pytest.raises(Exception) as caught:
                        await store.claim_async("w", 1)
                    assert type(caught.value).__name__ == "PoolTimeout"
                    assert store.is_transient(caught.value)
                finally:
                    for conn in held:
                        await pool.putconn(conn)
                assert await store.claim_async("w", 1) == []
            finally:
                await store.close_async()

        asyncio.run(main())

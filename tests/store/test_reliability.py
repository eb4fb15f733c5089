"""What the store does when workers die and rows cannot be read (issue 13), on both
dialects: unreadable rows fail alone, a dead worker's jobs are released at once and
fenced, deaths are charged only when asked, superseded rows are not run again, a
blocked loop is recorded."""

from __future__ import annotations

from datetime import timedelta

from helpers import sql

from jobtable.store import Store
from jobtable.timeutil import utcnow

from .test_conformance import new


def test_a_claim_fails_the_row_it_cannot_read_and_returns_the_others(store: Store) -> None:
    jobs = store.schedule([new(user_id=u) for u in range(3)])
    bad = jobs[1].id
    if store.dialect == "sqlite":
        sql(store.url, "UPDATE worker_jobs SET data = '{not json' WHERE id = %s", bad)
    else:  # jsonb is always valid JSON: break a value the row cannot be read with
        sql(store.url, "UPDATE worker_jobs SET claimed_by = NULL, started = NULL, "
                       "attempts = 0, created_at = 'infinity' WHERE id = %s", bad)
    claimed = store.claim("w", 10)
    assert sorted(j.id for j in claimed) == sorted(j.id for j in jobs if j.id != bad)
    success, result, attempts = sql(store.url, "SELECT success, result, attempts FROM "
                                               "worker_jobs WHERE id = %s", bad)[0]
    assert not success and attempts == 1
    assert "cannot be read" in str(result) and "UnreadableRow" in str(result)
    assert store.claim("w", 10) == []  # nothing left to claim, nothing looping


def test_release_worker_releases_only_that_workers_rows_fenced(store: Store) -> None:
    store.heartbeat("dead", 2, 4242)
    store.heartbeat("alive", 2, 4243)
    store.schedule([new(user_id=u) for u in range(3)])
    mine = store.claim("dead", 2)
    other = store.claim("alive", 1)
    report = store.release_worker("dead")
    assert sorted(report.reset) == sorted(j.id for j in mine)
    assert report.failed == [] and report.cancelled == []
    for job in mine:
        row = store.get_job(job.id)
        assert row is not None and row.started is None and row.crashes == 0
    assert store.get_job(other[0].id).started is not None  # type: ignore[union-attr]
    assert [w.id for w in store.live_workers(timedelta(hours=1))] == ["alive"]
    # Charged (isolation off): each death counts, and the limit gives up.
    again = store.claim("dead", 2)
    report = store.release_worker("dead", max_attempts=1, charge_deaths=True)
    assert sorted(report.failed) == sorted(j.id for j in again)


def test_rescue_waits_for_workers_last_seen_before_its_connectivity(store: Store) -> None:
    store.heartbeat("old", 1, 1)
    store.schedule([new(user_id=1)])
    (job,) = store.claim("old", 1)
    # "old" was last seen before this rescuer could reach the database: not yet.
    later = utcnow() + timedelta(seconds=1)
    assert store.rescue(timedelta(0), seen_since=later).reset == []
    assert store.live_workers(timedelta(hours=1)) != []  # and not forgotten
    assert store.rescue(timedelta(0), seen_since=later - timedelta(hours=1)).reset == [job.id]


def test_a_rescued_row_superseded_while_it_ran_is_cancelled_not_reset(store: Store) -> None:
    store.heartbeat("dead", 1, 1)
    store.schedule([new(user_id=1)])
    (job,) = store.claim("dead", 1)
    newer = store.schedule([new(user_id=1)])[0]  # a fresh running row is not cancelled
    assert store.get_job(job.id).finished is None  # type: ignore[union-attr]
    report = store.release_worker("dead")
    assert report.cancelled == [job.id] and report.reset == []
    row = store.get_job(job.id)
    assert row is not None and row.cancelled and f"job {newer.id}" in str(row.error)
    assert store.get_job(newer.id).finished is None  # type: ignore[union-attr]


def test_a_blocked_loop_is_marked_on_its_jobs_and_its_worker(store: Store) -> None:
    store.heartbeat("w", 1, 1)
    store.schedule([new(user_id=1)])
    (job,) = store.claim("w", 1)
    store.mark_loop_blocked("w", [job.id], 1500, 1500)
    store.mark_loop_blocked("w", [job.id], 700, 700)
    assert store.get_job(job.id).loop_blocked_ms == 1500  # type: ignore[union-attr]
    assert [w.loop_blocked_ms for w in store.live_workers(timedelta(hours=1))] == [2200]

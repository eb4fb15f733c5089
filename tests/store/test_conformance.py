"""What every ``Store`` guarantees, checked the same way on SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest

from jobtable import rules
from jobtable.model import CANCELLED_MESSAGE, NewJob, Outcome, WorkerJob
from jobtable.reports import RUNTIME_BUCKETS
from jobtable.store import Store
from jobtable.store.base import UnknownQueryError
from jobtable.timeutil import utcnow

from .conftest import open_more


def new(job_type: str = "send", user_id: int = 1, *, due_in: float = 0, cron: str | None = None,
        retry: bool = False, remove_ms: int = 3_600_000, data: dict | None = None) -> NewJob:
    return NewJob(type=job_type, user_id=user_id, data=data or {}, due=utcnow() + timedelta(
        seconds=due_in), auto_reschedule_on_failure=retry,
        auto_reschedule_on_failure_delay_ms=0, remove_delay_ms=remove_ms, cron_schedule=cron)


def done(store: Store, job: WorkerJob, success: bool = True) -> Outcome:
    return Outcome(job=job, success=success, result={"ok": success},
                   follow_up=rules.follow_up(job, success, utcnow()))


def test_schedule_cancels_matching_pending_rows_and_dedupes_a_batch(store: Store) -> None:
    first = store.schedule([new(user_id=1)])[0]
    other = store.schedule([new(user_id=2)])[0]
    second = store.schedule([new(user_id=1)])[0]
    old = store.get_job(first.id)
    assert old is not None and old.cancelled and old.result == {"error": CANCELLED_MESSAGE}
    assert not second.cancelled and store.get_job(other.id).finished is None  # type: ignore[union-attr]
    batch = store.schedule([new(user_id=3), new(user_id=1), new(user_id=3)])
    assert [j.cancelled for j in batch] == [True, False, False]
    assert store.get_job(second.id).cancelled  # type: ignore[union-attr]
    assert store.schedule([]) == []


def test_a_running_row_is_not_cancelled_by_a_newer_one_unless_stale(store: Store) -> None:
    running = store.schedule([new()])[0]
    [claimed] = store.claim("w", 1)
    store.schedule([new()])
    assert store.get_job(running.id).finished is None  # type: ignore[union-attr]
    assert claimed.id == running.id


def test_claim_is_exclusive_among_concurrent_claimers(store: Store) -> None:
    store.schedule([new(user_id=u) for u in range(60)])
    others = open_more(store, 4)
    got: list[list[int]] = [[] for _ in others]
    start = threading.Barrier(len(others))

    def claim(i: int) -> None:
        start.wait()
        while batch := others[i].claim(f"w{i}", 3):
            got[i].extend(j.id for j in batch)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(others))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for o in others:
        o.close()
    ids = [i for g in got for i in g]
    assert len(ids) == len(set(ids)) == 60
    assert store.claim("late", 10) == [] and store.claim("w", 0) == []


def test_claim_takes_due_rows_earliest_first_and_leaves_future_rows(store: Store) -> None:
    later = store.schedule([new(user_id=1, due_in=-5)])[0]
    earlier = store.schedule([new(user_id=2, due_in=-50)])[0]
    store.schedule([new(user_id=3, due_in=3600)])
    assert store.next_due() is not None
    assert [j.id for j in store.claim("w", 10)] == [earlier.id, later.id]


def test_completion_is_fenced_by_attempts(store: Store) -> None:
    store.schedule([new(retry=True)])
    [first] = store.claim("w1", 1)
    assert store.release_claim(first.id, first.attempts)
    assert not store.release_claim(first.id, first.attempts + 5)
    [second] = store.claim("w2", 1)
    assert second.attempts == first.attempts + 1
    assert store.complete([done(store, first, False)]) == set()  # a stale token: refused
    assert store.get_job(first.id).finished is None  # type: ignore[union-attr]
    assert store.complete([done(store, second, False)]) == {second.id}
    retry = store.list_jobs(status="pending")
    assert [j.rescheduled_from_job for j in retry] == [second.id]
    assert store.complete([]) == set()


def test_outcomes_without_follow_up_and_a_batch_of_them(store: Store) -> None:
    store.schedule([new(user_id=u) for u in range(3)])
    claimed = store.claim("w", 3)
    written = store.complete([done(store, j, j.user_id != 1) for j in claimed])
    assert written == {j.id for j in claimed}
    assert store.count_jobs(status="succeeded") == 2 and store.count_jobs(status="failed") == 1


def test_release_of_claims_the_worker_never_heard_of(store: Store) -> None:
    store.schedule([new(user_id=u) for u in range(3)])
    claimed = store.claim("w", 3)
    keep = claimed[0].id
    released = store.release_unknown_claims("w", {keep})
    assert sorted(released) == sorted(j.id for j in claimed[1:])
    assert store.count_jobs(status="running") == 1


def test_rescue_resets_rows_of_dead_workers_and_gives_up_at_the_limit(store: Store) -> None:
    store.heartbeat("dead", 2, 4242)
    store.schedule([new(user_id=1), new(user_id=2, cron="0 0 1 1 *")])
    claimed = store.claim("dead", 2)
    assert len(store.live_workers(timedelta(hours=1))) == 1
    report = store.rescue(timedelta(0), max_attempts=2)
    assert sorted(report.reset) == sorted(j.id for j in claimed) and report.failed == []
    store.heartbeat("dead", 2, 4242)
    store.claim("dead", 2)
    report = store.rescue(timedelta(0), max_attempts=2)
    assert report.reset == [] and sorted(report.failed) == sorted(j.id for j in claimed)
    failed = store.get_job(claimed[0].id)
    assert failed is not None and "Job abandoned" in str(failed.error)
    assert len(store.cron_rows()) == 1  # the cron chain goes on
    assert store.live_workers(timedelta(hours=1)) == []  # the dead worker is forgotten
    assert store.rescued_by_type() == {"send": 2}


def test_a_clean_worker_unregisters(store: Store) -> None:
    store.heartbeat("w", 4, 1)
    store.unregister_worker("w")
    assert store.live_workers(timedelta(hours=1)) == []


def test_cleanup_deletes_only_removable_finished_rows(store: Store) -> None:
    store.schedule([new(user_id=u, remove_ms=0) for u in range(3)])
    claimed = store.claim("w", 3)
    store.complete([done(store, j, j.user_id != 2) for j in claimed])
    pending = store.schedule([new(user_id=9, due_in=3600)])[0]
    keep = claimed[0].id
    assert store.cleanup(timedelta(0), keep_id=keep, batch=1) == 2
    assert store.get_job(keep) is not None and store.get_job(pending.id) is not None


def test_ensure_chain_keeps_the_same_chain_and_stops_undeclared_ones(store: Store) -> None:
    job = rules.new_job(rules_config(), utcnow(), cron="0 0 * * *", declared=True)
    first = store.ensure_chain(job)
    assert store.ensure_chain(job).id == first.id
    changed = rules.new_job(rules_config(), utcnow(), cron="5 0 * * *", declared=True)
    second = store.ensure_chain(changed)
    assert second.id != first.id and store.get_job(first.id).cancelled  # type: ignore[union-attr]
    assert store.stop_undeclared_chains({"tick": "5 0 * * *"}) == []
    assert store.stop_undeclared_chains({}) == [second.id]


def rules_config():  # type: ignore[no-untyped-def]
    from jobtable.model import ValidConfig

    return ValidConfig(type="tick", user_id=0, data={}, due=None,
                       auto_reschedule_on_failure=False,
                       auto_reschedule_on_failure_delay=timedelta(0),
                       remove_delay=timedelta(hours=1))


def test_cancel_by_hand_only_while_pending(store: Store) -> None:
    pending = store.schedule([new(user_id=1)])[0]
    assert store.cancel_job(pending.id, "by hand")
    assert store.get_job(pending.id).result == {"error": "by hand"}  # type: ignore[union-attr]
    assert not store.cancel_job(pending.id) and not store.cancel_job(10**9)


def test_counts_stop_at_a_bound_and_unfinished_lists_read_unfinished_rows(
        store: Store) -> None:
    store.fill("old", finished=30)
    store.schedule([new("a", 1), new("a", 2), new("b", 3)])
    assert store.count_jobs(at_most=10) == 10                  # "at least 10"
    assert store.count_jobs(at_most=100) == 33 == store.count_jobs()
    assert store.count_jobs(status="succeeded", at_most=5) == 5
    assert store.count_jobs(status="pending", at_most=2) >= 2  # "at least"
    assert store.count_jobs(status="pending", type="a", at_most=10) == 2
    assert store.count_jobs(status="running", at_most=10) == 0
    assert [j.user_id for j in store.list_jobs(status="pending")] == [3, 2, 1]
    assert [j.user_id for j in store.list_jobs(status="pending", type_prefix="a",
                                               limit=1, offset=1)] == [1]
    newest = store.list_jobs(status="pending", limit=1)[0]
    assert [j.user_id for j in store.list_jobs(status="pending",
                                               before_id=newest.id)] == [2, 1]
    claimed = store.claim("w", 1)
    assert [j.id for j in store.list_jobs(status="running")] == [claimed[0].id]
    assert store.count_jobs(status="running", at_most=10) == 1


def test_history_figures_read_a_fixed_sample_of_a_long_history(store: Store) -> None:
    """Past a size, the finished counts (and the other history figures) read a fixed
    part of the table and scale it up; the unfinished rows are counted exactly."""
    store.fill("old", finished=12_000, pending=7)
    if store.dialect == "sqlite":
        store.sample_ids, store.sample_blocks = 400, 20  # type: ignore[attr-defined]
    else:
        store.sample_pages = 50  # type: ignore[attr-defined]  # of ~400
    pct = store.history_sample()
    assert pct < 100
    counts = store.counts()["old"]
    assert counts["pending"] == 7
    assert 6_000 < counts["succeeded"] < 18_000
    now = utcnow()
    minutes = store.throughput(now - timedelta(hours=1), now + timedelta(minutes=1))
    assert 6_000 < sum(ok for ok, _ in minutes.values()) < 18_000
    assert store.rescued_by_type() == {} and store.retries_by_type() == {}


def test_lists_counts_filters_and_chains(store: Store) -> None:
    store.schedule([new("a", 1), new("b", 2, retry=True), new("a", 3)])
    assert [j.user_id for j in store.list_jobs(type="a")] == [3, 1]
    assert [j.user_id for j in store.list_jobs(limit=1, offset=1)] == [2]
    newest = store.list_jobs(limit=1)[0]
    assert [j.user_id for j in store.list_jobs(before_id=newest.id)] == [2, 1]
    assert store.count_jobs(user_id=2) == 1 and store.count_jobs(status="pending") == 3
    assert store.counts() == {"a": {"pending": 2}, "b": {"pending": 1}}
    assert store.job_types() == ["a", "b"]
    claimed = [j for j in store.claim("w", 3) if j.type == "b"]
    store.complete([done(store, claimed[0], False)])
    chain = store.chain(claimed[0].id)
    assert [j.rescheduled_from_job for j in chain] == [None, claimed[0].id]
    assert store.chain(10**9) == []
    assert store.retries_by_type() == {"b": 1}


def test_hand_retry_candidates_run_now_and_purge(store: Store) -> None:
    store.schedule([new(user_id=u) for u in range(3)])
    claimed = store.claim("w", 3)
    store.complete([done(store, j, False) for j in claimed])
    assert store.retry_candidates(status="failed") == sorted(j.id for j in claimed)
    assert store.retry_candidates(status="failed", user_id=1, limit=5) == [
        j.id for j in claimed if j.user_id == 1]
    later = store.schedule([new(user_id=7, due_in=3600)])[0]
    store.make_due_now(later.id)
    assert store.get_job(later.id).due <= utcnow()  # type: ignore[union-attr]
    cutoff = utcnow() + timedelta(seconds=1)
    assert store.count_purgeable(["failed", "succeeded"], cutoff) == 3
    assert store.purge_batch(["failed"], cutoff, 2) == 2
    assert store.purge_batch(["cancelled"], cutoff, 2) == 0
    assert store.get_job(later.id) is not None  # never an unfinished row


def test_statistics_throughput_lag_and_runtimes(store: Store) -> None:
    store.schedule([new(user_id=u, due_in=-30) for u in range(3)])
    now = utcnow()
    assert store.oldest_pending_due(now) is not None
    claimed = store.claim("w", 3)
    store.complete([done(store, j, j.user_id != 0) for j in claimed])
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=5)
    per_minute = store.throughput(start, start + timedelta(minutes=10))
    assert sum(ok for ok, _ in per_minute.values()) == 2
    assert sum(bad for _, bad in per_minute.values()) == 1
    assert all(m.second == 0 and m.microsecond == 0 for m in per_minute)
    [(job_type, count, total, buckets)] = store.runtimes(now - timedelta(hours=1),
                                                         RUNTIME_BUCKETS)
    assert (job_type, count) == ("send", 3) and total >= 0 and buckets[-1] == 3
    assert store.oldest_pending_due(utcnow()) is None


def test_an_unknown_query_name_or_raw_sql_is_refused(store: Store) -> None:
    with pytest.raises(UnknownQueryError, match="no query named 'get_jobs'"):
        store.read("get_jobs", id=1)
    with pytest.raises(UnknownQueryError):
        store.read("SELECT 1")
    with pytest.raises(UnknownQueryError), store.transaction() as tx:
        tx.q("DELETE FROM worker_jobs")


def test_table_health_reads_size_and_dead_rows_and_vacuum_runs(store: Store) -> None:
    store.schedule([new(user_id=u) for u in range(5)])
    health = store.table_health()
    assert health.size_bytes > 0 and health.live >= 0 and health.dead >= 0
    store._vacuum()  # maintenance's statement, whatever the table's state
    assert store.count_jobs() == 5


def _typed(value: object) -> object:
    """``value`` with the type of every number kept (1e16 and 10**16 differ here)."""
    if isinstance(value, dict):
        return {k: _typed(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_typed(v) for v in value]
    return (type(value).__name__, value)


def test_scheduling_returns_the_rows_as_stored(store: Store) -> None:
    """The rows scheduling returns are the rows a read gives back, value for value."""
    from datetime import timezone

    data = {"b": 1, "a": [1.5, 1e16, 1.5e-7, 2**70, -0.5, "é ☃ 😀", None, True],
            "nested": {"x": {"y": [{}]}}, "e-mail": "one-off e+1"}
    east = timezone(timedelta(hours=5, minutes=30))
    jobs = [
        new(user_id=1, data=data),
        NewJob(type="send", user_id=2, data={"k": 1}, due=utcnow().astimezone(east),
               auto_reschedule_on_failure=True, auto_reschedule_on_failure_delay_ms=1500,
               remove_delay_ms=0, cron_schedule="*/5 * * * * *", cron_timezone="UTC",
               declared=True, retry_count=2, max_retries=None, backoff="exponential",
               max_backoff_ms=60_000, unique_key="k1", on_conflict="allow", queue="reports",
               priority=-3, trace_context={"traceparent": "00-ab-cd-01"},
               data_json='{"k":1}'),
        new(user_id=1),                        # replaces the first, within the batch
    ]
    for batch in (jobs, jobs[:1], jobs[1:2]):
        rows = store.schedule(batch)
        for row in rows:
            stored = store.get_job(row.id)
            assert stored == row
            assert _typed(stored.data) == _typed(row.data)    # type: ignore[union-attr]
            assert row.due.tzinfo is not None and row.due.utcoffset() == timedelta(0)
    assert [r.cancelled for r in store.schedule(jobs)] == [True, False, False]

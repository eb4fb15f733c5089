"""Job control in the store, on both dialects: cancel requests fenced by the claim and
winning over a racing outcome, snoozes giving the claim back."""

from __future__ import annotations

import threading
from datetime import timedelta

from jobtable import rules
from jobtable.model import NewJob, Outcome
from jobtable.store import Store
from jobtable.timeutil import utcnow

from .conftest import open_more


def new(user_id: int = 1, *, cron: str | None = None, retry: bool = True) -> NewJob:
    return NewJob(type="send", user_id=user_id, data={}, due=utcnow(),
                  auto_reschedule_on_failure=retry, auto_reschedule_on_failure_delay_ms=0,
                  remove_delay_ms=60_000, cron_schedule=cron, max_retries=5)


def test_a_cancel_request_is_fenced_by_the_claim_and_wins_over_the_outcome(
        store: Store) -> None:
    store.schedule([new(1), new(2, cron="0 0 1 1 *"), new(3)])
    a, b, c = store.claim("w", 3)
    assert not store.request_cancel(a.id, a.attempts + 1)  # another claim: refused
    assert store.request_cancel(a.id, a.attempts) and store.request_cancel(b.id, b.attempts)
    first = store.get_job(a.id)
    assert first is not None and first.cancel_requested is not None
    assert store.request_cancel(a.id, a.attempts)  # again: the first time is kept
    assert store.get_job(a.id).cancel_requested == first.cancel_requested  # type: ignore[union-attr]
    tokens = {a.id: a.attempts, b.id: b.attempts, c.id: c.attempts}
    assert sorted(store.cancel_requests(tokens)) == sorted([a.id, b.id])
    assert store.cancel_requests({a.id: a.attempts + 1}) == []
    assert store.cancel_requests({}) == []
    # The worker had not heard of it: a's failure (which would retry) and b's success
    # both end cancelled; no retry row; b's cron chain goes on.
    now = utcnow()
    written = store.complete([rules.finish(a, False, {"error": "boom"}, now),
                              rules.finish(b, True, {"sent": 2}, now),
                              rules.finish(c, False, {"error": "boom"}, now)])
    assert written == {a.id, b.id, c.id}
    ra, rb, rc = (store.get_job(j.id) for j in (a, b, c))
    assert ra is not None and rb is not None and rc is not None
    assert ra.cancelled and not ra.success and ra.status.value == "cancelled"
    assert ra.result == {**rules.CANCELLED_RESULT, "returned": {"error": "boom"}}
    assert rb.cancelled and rb.result["returned"] == {"sent": 2} and rb.remove_at is None
    assert not rc.cancelled and rc.status.value == "failed"
    kids = {j.rescheduled_from_job: j for j in store.list_jobs(status="pending")}
    assert set(kids) == {b.id, c.id}  # c's retry, b's next cron run; nothing after a
    assert kids[b.id].retry_count == 0 and kids[c.id].retry_count == 1
    assert not store.request_cancel(a.id, a.attempts)  # finished: too late


def test_a_request_lost_with_its_worker_ends_the_row_cancelled_and_a_reset_clears_it(
        store: Store) -> None:
    store.heartbeat("dead", 1, 1)
    store.schedule([new(1), new(2)])
    a, b = store.claim("dead", 2)
    assert store.request_cancel(a.id, a.attempts)
    report = store.rescue(timedelta(0))
    assert report.failed == [a.id] and report.reset == [b.id]
    row = store.get_job(a.id)
    assert row is not None and row.cancelled and row.error == rules.CANCELLED_WHILE_RUNNING
    [again] = store.claim("w", 1)
    assert store.request_cancel(again.id, again.attempts)
    assert store.release_claim(again.id, again.attempts)  # given back: request dropped
    row = store.get_job(again.id)
    assert row is not None and row.cancel_requested is None and row.started is None


def test_a_snooze_gives_the_claim_back_and_loses_to_a_cancel_request(store: Store) -> None:
    store.schedule([new(1), new(2), new(3, cron="0 0 1 1 *")])
    a, b, c = store.claim("w", 3)
    later = utcnow() + timedelta(minutes=5)
    snooze = Outcome(job=a, success=False, result=None, snooze_until=later)
    assert store.request_cancel(b.id, b.attempts) and store.request_cancel(c.id, c.attempts)
    written = store.complete([snooze, rules.snoozed(b, utcnow(), timedelta(minutes=5)),
                              rules.snoozed(c, utcnow(), timedelta(minutes=5))])
    assert written == {a.id, b.id, c.id}
    ra = store.get_job(a.id)
    assert ra is not None and ra.status.value == "pending" and ra.due == later
    assert ra.attempts == a.attempts - 1 and ra.claimed_by is None and ra.retry_count == 0
    rb, rc = store.get_job(b.id), store.get_job(c.id)
    assert rb is not None and rb.cancelled and rc is not None and rc.cancelled
    assert [j.rescheduled_from_job for j in store.cron_rows()] == [c.id]  # chain goes on
    # A snooze of an outdated claim is refused like any late write.
    assert store.complete([rules.snoozed(a, utcnow(), timedelta(0))]) == set()


def test_a_cancel_racing_a_completion_either_wins_or_is_refused(store: Store) -> None:
    """Many rounds of a cancel request (one connection) against the outcome (another):
    a request that was recorded always ends the row cancelled; a refused one leaves the
    job's own outcome."""
    other = open_more(store, 1)[0]
    try:
        for round_ in range(30):
            [job] = store.schedule([new(100 + round_, retry=False)])
            [claimed] = store.claim("w", 1)
            assert claimed.id == job.id
            asked: list[bool] = []
            barrier = threading.Barrier(2)

            def cancel(job_id: int = job.id, token: int = claimed.attempts,
                       asked: list[bool] = asked,
                       barrier: threading.Barrier = barrier) -> None:
                barrier.wait()
                asked.append(other.request_cancel(job_id, token))

            thread = threading.Thread(target=cancel)
            thread.start()
            barrier.wait()
            store.complete([rules.finish(claimed, True, {"n": round_}, utcnow())])
            thread.join()
            row = store.get_job(job.id)
            assert row is not None and row.finished is not None
            if asked[0]:
                assert row.cancelled and row.result["returned"] == {"n": round_}
            else:
                assert row.success and not row.cancelled and row.result == {"n": round_}
    finally:
        other.close()

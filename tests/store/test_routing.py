"""Routing in the store, both dialects: claim order by priority, one queue at a time,
paused queues skipped, and the limits of limited types enforced inside the claim."""

from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import timedelta

from helpers import sql

from jobtable.model import NewJob
from jobtable.routing import RateLimit, TypeLimits
from jobtable.store import Store
from jobtable.timeutil import utcnow

from .conftest import open_more


def new(job_type: str = "send", user_id: int = 1, *, queue: str = "default",
        priority: int = 0, due_in: float = -1) -> NewJob:
    return NewJob(type=job_type, user_id=user_id, data={},
                  due=utcnow() + timedelta(seconds=due_in), auto_reschedule_on_failure=False,
                  auto_reschedule_on_failure_delay_ms=0, remove_delay_ms=0, queue=queue,
                  priority=priority)


def test_claim_takes_lower_priority_first_then_earliest_due_then_id(store: Store) -> None:
    rows = store.schedule([new(user_id=1, priority=5, due_in=-50),
                           new(user_id=2, priority=-3, due_in=-1),
                           new(user_id=3, priority=0, due_in=-10),
                           new(user_id=4, priority=0, due_in=-20),
                           new(user_id=5, priority=-3, due_in=3600)])
    claimed = [store.claim("w", 1)[0].id for _ in range(4)]
    assert claimed == [rows[1].id, rows[3].id, rows[2].id, rows[0].id]
    assert store.claim("w", 5) == []  # the last one is not due


def test_a_queue_claim_takes_only_that_queue(store: Store) -> None:
    store.schedule([new(user_id=u, queue="a" if u % 2 else "b") for u in range(10)])
    got = store.claim("w", 10, queue="a")
    assert len(got) == 5 and {j.queue for j in got} == {"a"}
    assert store.claim("w", 10, queue="nothing") == []
    assert {j.queue for j in store.claim("w", 10)} == {"b"}


def test_a_paused_queue_is_skipped_until_resumed_or_its_pause_ends(store: Store) -> None:
    store.schedule([new(user_id=1, queue="a"), new(user_id=2, queue="b")])
    store.pause_queue("a", None)
    store.pause_queue("b", utcnow() - timedelta(seconds=1))  # a pause that has ended
    assert [j.queue for j in store.claim("w", 10)] == ["b"]
    assert store.claim("w", 10, queue="a") == []
    [info] = [q for q in store.queues() if q.name == "a"]
    assert info.paused and info.paused_until is None and info.pending == 1
    store.resume_queue("a")
    assert [j.queue for j in store.claim("w", 10, queue="a")] == ["a"]
    assert [(q.name, q.pending, q.running, q.paused) for q in store.queues()] == [
        ("a", 0, 1, False), ("b", 0, 1, False)]


def test_a_concurrency_limit_holds_across_concurrent_claimers(store: Store) -> None:
    store.schedule([new("limited", user_id=u) for u in range(40)]
                   + [new("free", user_id=u) for u in range(20)])
    limits = [TypeLimits("limited", concurrency=3)]
    others = open_more(store, 4)
    got: list[list[str]] = [[] for _ in others]
    start = threading.Barrier(len(others))

    def claim(i: int) -> None:
        start.wait()
        for _ in range(5):
            got[i].extend(j.type for j in others[i].claim(f"w{i}", 4, limits=limits))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(others))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    for o in others:
        o.close()
    types = [t for g in got for t in g]
    assert types.count("limited") == 3 and types.count("free") == 20
    assert store.running_of_type("limited") == 3


def same_user(store: Store, rows: list, user_id: int) -> None:
    """Give rows one user directly: rule 2 keeps one pending row per (type, user) when
    scheduling, but a user may have several (a running one, or other policies)."""
    sql(store.url, "UPDATE worker_jobs SET user_id = %s WHERE id = ANY(%s)"
        if store.url.startswith("postgresql") else
        "UPDATE worker_jobs SET user_id = %s WHERE id IN (SELECT value FROM json_each(%s))",
        user_id, [r.id for r in rows] if store.url.startswith("postgresql")
        else json.dumps([r.id for r in rows]))


def test_a_per_user_limit_and_fairness(store: Store) -> None:
    base = 1000
    for user, count, ago in ((1, 6, 100), (2, 2, 10), (3, 1, 5)):
        rows = store.schedule([
            replace(new("mail", user_id=base + i), due=utcnow() - timedelta(seconds=ago - i))
            for i in range(count)])
        base += 100
        same_user(store, rows, user)
    per_user = [TypeLimits("mail", concurrency=1, per_user=True)]
    got = store.claim("w", 10, limits=per_user)
    assert sorted(j.user_id for j in got) == [1, 2, 3]
    assert store.claim("w", 10, limits=per_user) == []
    assert store.running_of_type("mail", 1) == 1
    fair = [TypeLimits("mail", fair=True)]
    order = [j.user_id for j in store.claim("w", 4, limits=fair)]
    # User 2's last row is due after all of user 1's, yet it is taken in its turn.
    assert sorted(order) == [1, 1, 1, 2], order
    assert sorted(j.user_id for j in store.claim("w", 4)) == [1, 1], "first due first"


def test_a_rate_limit_counts_starts_in_its_window(store: Store) -> None:
    store.schedule([new("api", user_id=u) for u in range(10)])
    limits = [TypeLimits("api", rate=RateLimit(3, timedelta(hours=1)))]
    assert len(store.claim("w", 10, limits=limits)) == 3
    assert store.claim("w", 10, limits=limits) == []
    assert store.recent_starts("api", utcnow() - timedelta(hours=2)) == 3

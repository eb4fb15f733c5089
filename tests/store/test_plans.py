"""Plans that do not depend on the table's statistics (PostgreSQL).

The table is given a history, ANALYZEd while every row is finished, and then a backlog
that no ANALYZE has seen: the statistics say "nothing is unfinished", as on a server
without autovacuum. The hot statements must still use the index meant for them. The
store's own statements are run and their plans read with auto_explain (nested
statements included, so the statements inside the schedule functions are seen too).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from jobtable import WorkerJobConfig, rules
from jobtable.errors import ConfigError
from jobtable.model import Outcome
from jobtable.routing import TypeLimits
from jobtable.store.postgres import PostgresStore
from jobtable.timeutil import utcnow

HISTORY = 30_000
BACKLOG = 3_000


def _log_plans(store: PostgresStore) -> list[dict[str, Any]]:
    """Log the plans of every statement on the store's (single) connection into the
    returned list, nested statements included (auto_explain)."""
    plans: list[dict[str, Any]] = []

    def on_notice(diag: psycopg.errors.Diagnostic) -> None:
        text = diag.message_primary or ""
        if "plan:" in text:
            plans.append(json.loads(text.split("plan:", 1)[1]))

    with store.pool.connection() as conn:
        for sql in ("LOAD 'auto_explain'", "SET auto_explain.log_min_duration = 0",
                    "SET auto_explain.log_nested_statements = on",
                    "SET auto_explain.log_format = json", "SET client_min_messages = log"):
            conn.execute(sql)
        conn.add_notice_handler(on_notice)
    return plans


@pytest.fixture
def stale(pg_url: str) -> Iterator[tuple[PostgresStore, list[dict[str, Any]]]]:
    """A store with one connection whose plans are logged into the returned list."""
    store = PostgresStore(pg_url, min_size=1, max_size=1)
    store.migrate()
    with store.pool.connection() as conn:
        # An index of unfinished rows newer than the store's own, as a later migration
        # or a user may add: on a tie of estimates the planner would take the newest.
        conn.execute("CREATE INDEX later_unfinished ON worker_jobs (id) WHERE finished IS NULL")
    store.fill("noop", finished=HISTORY)
    with store.pool.connection() as conn:
        conn.execute("ANALYZE worker_jobs")
    # Due now: the claim has a backlog to walk; each row has its own user.
    store.fill("noop", pending=BACKLOG, pending_due=utcnow() - timedelta(seconds=1))
    plans = _log_plans(store)
    try:
        yield store, plans
    finally:
        store.close()


def _nodes(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def _scans(plans: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """The scans of worker_jobs in the logged plans whose query text contains ``text``."""
    found = [p for p in plans if text in p["Query Text"]]
    assert found, f"no plan logged for a statement containing {text!r}"
    return [n for p in found for n in _nodes(p["Plan"])
            if n.get("Relation Name") == "worker_jobs" and n["Node Type"] != "ModifyTable"]


def _job(user_id: int) -> Any:
    config = WorkerJobConfig(type="noop", user_id=user_id).validated({})
    return rules.new_job(config, utcnow())


def test_cancel_matching_uses_the_match_index_with_stale_statistics(
        stale: tuple[PostgresStore, list[dict[str, Any]]]) -> None:
    store, plans = stale
    store.schedule([_job(1_000_000_001)])          # jobtable_schedule_one_id
    store.schedule([_job(1_000_000_002), _job(1_000_000_003)])  # jobtable_schedule_batch
    # One job: the cancel-matching UPDATE looks its pair up in the match index.
    scans = _scans(plans, "WHERE type = p_type AND user_id = p_user_id")
    assert scans
    for scan in scans:
        assert scan["Node Type"] == "Index Scan", scan
        assert scan["Index Name"] == "worker_jobs_pending_match", scan
    # A batch: one probe of the match index per match (a nested loop driven by the
    # matches, never a walk of the whole index), then an UPDATE by primary key.
    probes = [p for p in plans if "CROSS JOIN LATERAL" in p["Query Text"]]
    assert probes
    for probe in probes:
        loops = [n for n in _nodes(probe["Plan"]) if n["Node Type"] == "Nested Loop"]
        assert loops, probe
        outer, inner = loops[0]["Plans"]
        assert outer["Node Type"] == "Function Scan", probe
        scans = [n for n in _nodes(inner) if n.get("Relation Name") == "worker_jobs"]
        assert scans and all(n["Node Type"] == "Index Scan" and "Index Cond" in n
                             and n["Index Name"] == "worker_jobs_pending_match"
                             for n in scans), probe
    by_id = _scans(plans, "WHERE id = ANY (v_hits)")
    assert by_id and all(s["Index Name"] == "worker_jobs_pkey" for s in by_id), by_id
    # The backlog rows of those users were cancelled: the lookups found them.
    assert store.count_jobs(status="cancelled") == 3


def test_a_session_that_started_on_an_empty_table_keeps_probing_the_index(
        pg_url: str) -> None:
    """A cached plan made while the table was empty must not scan it as it grows."""
    store = PostgresStore(pg_url, min_size=1, max_size=1)
    try:
        store.migrate()
        with store.pool.connection() as conn:
            conn.execute("ANALYZE worker_jobs")
        for user in range(1, 21):              # the one-job function's plan is now cached
            store.schedule([_job(user)])
        store.fill("noop", pending=2_000)
        plans = _log_plans(store)
        store.schedule([_job(5)])
        store.schedule([_job(6), _job(7)])
        scans = _scans(plans, "worker_jobs")
        assert scans and not [s for s in scans if s["Node Type"] == "Seq Scan"], scans
    finally:
        store.close()


def test_matching_on_a_table_never_analyzed_probes_the_match_index(pg_url: str) -> None:
    """No statistics at all (a new database, a server without autovacuum): rule 2's
    matching must still take the match index, not another index of unfinished rows
    that leads with ``type`` (the limited claims' index once did, and each batch then
    walked every pending row of the type)."""
    store = PostgresStore(pg_url, min_size=1, max_size=1)
    try:
        store.migrate()
        store.fill("noop", pending=2_000)
        with store.pool.connection() as conn:
            analyzed = conn.execute(
                "SELECT last_analyze, last_autoanalyze FROM pg_stat_user_tables "
                "WHERE relname = 'worker_jobs'").fetchone()
        assert analyzed == {"last_analyze": None, "last_autoanalyze": None}
        plans = _log_plans(store)
        store.schedule([_job(1_000_000_001)])     # users of the backlog's rows
        store.schedule([_job(1_000_000_002), _job(1_000_000_003)])
        one = _scans(plans, "WHERE type = p_type AND user_id = p_user_id")
        batch = [n for p in plans if "CROSS JOIN LATERAL" in p["Query Text"]
                 for n in _nodes(p["Plan"]) if n.get("Relation Name") == "worker_jobs"]
        assert one and batch
        assert {s.get("Index Name") for s in one + batch} == {"worker_jobs_pending_match"}, \
            one + batch
        assert store.count_jobs(status="cancelled") == 3
    finally:
        store.close()


def test_claim_and_completion_keep_their_indexes_with_stale_statistics(
        stale: tuple[PostgresStore, list[dict[str, Any]]]) -> None:
    store, plans = stale
    jobs = store.claim("w1", 20)
    assert len(jobs) == 20
    claim = _scans(plans, "SKIP LOCKED")
    # The claim walks an index of unfinished rows in claim order and stops after its
    # LIMIT: no sequential scan, no bitmap gathering every due row.
    walked = [s for s in claim if s["Node Type"] == "Index Scan"
              and s["Index Name"] != "worker_jobs_pkey"]
    assert walked, claim
    assert not [s for s in claim if s["Node Type"] in ("Seq Scan", "Bitmap Heap Scan")], claim

    store.complete([Outcome(job=j, success=True, result=None) for j in jobs])
    finish = _scans(plans, "FROM unnest(")
    finish = [s for s in finish if s["Node Type"] != "Function Scan"]
    assert finish and all(s["Index Name"] == "worker_jobs_pkey" for s in finish), finish
    assert store.count_jobs(status="succeeded") == HISTORY + 20


def test_fill_inserts_a_history_and_a_backlog(store: Any) -> None:
    store.fill("noop", finished=250, pending=120, batch=100)
    assert store.count_jobs(status="succeeded") == 250
    assert store.count_jobs(status="pending") == 120
    # Each backlog row has its own user, so none replaced another.
    assert len({j.user_id for j in store.list_jobs(status="pending", limit=500)}) == 120
    with pytest.raises(ConfigError, match="counts >= 0"):
        store.fill("noop", finished=-1)
    assert store.count_jobs() == 370


def test_table_health_and_vacuum(store: Any) -> None:
    store.fill("noop", finished=300, pending=10)
    health = store.table_health()
    assert health.size_bytes > 0 and health.dead >= 0 and not health.bloating
    assert store.maintain(timedelta(0)) is False       # 0: never
    assert store.maintain(timedelta(minutes=1)) is False  # not bloating
    store._vacuum()
    if store.dialect == "postgres":
        after = store.table_health()
        assert after.last_vacuum is not None and after.live == 310


def test_statistics_read_a_sample_of_the_history_and_the_active_rows_exactly(
        stale: tuple[PostgresStore, list[dict[str, Any]]]) -> None:
    store, plans = stale
    store.sample_pages = 50
    pct = store.history_sample()
    assert pct < 100
    now = utcnow()
    counts = store.counts()["noop"]
    store.throughput(now - timedelta(hours=1), now + timedelta(minutes=1))
    runtimes = store.runtimes(now - timedelta(hours=1), [0.1] * 14)
    store.retries_by_type()
    store.rescued_by_type()
    store.oldest_pending_due(now)
    assert store.job_types() == ["noop"]
    store.table_health()
    assert counts["pending"] == BACKLOG                       # exact
    assert 0.6 * HISTORY < counts["succeeded"] < 1.4 * HISTORY  # estimated
    assert runtimes and 0.6 * HISTORY < runtimes[0][1] < 1.4 * HISTORY
    scans = [n for p in plans for n in _nodes(p["Plan"])
             if n.get("Relation Name") == "worker_jobs"]
    assert scans
    assert not [n for n in scans if n["Node Type"] == "Seq Scan"], [
        p["Query Text"] for p in plans
        if any(n.get("Relation Name") == "worker_jobs" and n["Node Type"] == "Seq Scan"
               for n in _nodes(p["Plan"]))]


def _config_job(user_id: int, **kw: Any) -> Any:
    return rules.new_job(WorkerJobConfig(type="noop", user_id=user_id, **kw).validated({}),
                         utcnow())


def test_schedule_ids_keeps_rule_2_and_returns_ids_in_order(store: Any) -> None:
    first = store.schedule_ids([_config_job(1)])                 # one job
    assert len(first) == 1 and isinstance(first[0], int)
    ids = store.schedule_ids([_config_job(1), _config_job(2), _config_job(1)])
    assert len(ids) == 3 and ids == sorted(ids) and first[0] < ids[0]
    rows = {i: store.get_job(i) for i in [*first, *ids]}
    # The earlier pending row of user 1 and the batch's first job of user 1 are
    # cancelled; the last of the pair wins.
    assert rows[first[0]].cancelled and rows[ids[0]].cancelled
    assert rows[ids[1]].finished is None and rows[ids[2]].finished is None
    kept = store.schedule_ids([_config_job(2, on_conflict="keep")])
    assert kept == [ids[1]]
    assert store.count_jobs(status="pending") == 2


def _index_of(plans: list[dict[str, Any]], text: str) -> set[str]:
    """The indexes (or "Seq Scan") by which the statements containing ``text`` read
    worker_jobs."""
    return {s.get("Index Name", s["Node Type"]) for s in _scans(plans, text)}


def test_lookups_by_id_pair_and_running_rows_keep_their_indexes_with_stale_statistics(
        stale: tuple[PostgresStore, list[dict[str, Any]]]) -> None:
    """The statements of queries.sql that said "finished IS NULL" walked the claim's
    index (every pending row) with such statistics; said with num_nulls they keep the
    primary key, the match index and the index of running rows (migration 0010)."""
    store, plans = stale
    backlog = store.list_jobs(status="pending", limit=3)
    assert len(backlog) == 3
    assert "Seq Scan" not in _index_of(plans, "CASE WHEN started IS NULL THEN 'pending'")
    assert "worker_jobs_pkey" not in _index_of(plans, "CASE WHEN started IS NULL THEN")

    pair = store.read("unfinished_for_pair", type="noop", user_id=backlog[0].user_id)
    assert [r["id"] for r in pair] == [backlog[0].id]
    assert _index_of(plans, "type = $1 AND user_id = $2") == {"worker_jobs_pending_match"}

    assert store.cancel_job(backlog[0].id)
    assert _index_of(plans, "WHERE id = $") == {"worker_jobs_pkey"}
    plans.clear()
    store.make_due_now(backlog[1].id)
    assert _index_of(plans, "UPDATE worker_jobs SET due") == {"worker_jobs_pkey"}

    jobs = store.claim("w1", 2)
    assert len(jobs) == 2
    plans.clear()
    assert store.release_claim(jobs[0].id, jobs[0].attempts)
    assert _index_of(plans, "SET started = NULL") == {"worker_jobs_pkey"}

    plans.clear()
    assert [j.id for j in store.list_jobs(status="running")] == [jobs[1].id]
    assert store.count_jobs(status="running", at_most=10) == 1
    assert _index_of(plans, "started IS NOT NULL") == {"worker_jobs_running"}
    plans.clear()
    assert store.release_unknown_claims("w1", {jobs[1].id}) == []
    assert _index_of(plans, "claimed_by = $1") == {"worker_jobs_running"}
    plans.clear()
    store.rescue(timedelta(seconds=30))
    assert _index_of(plans, "FOR UPDATE SKIP LOCKED") == {"worker_jobs_running"}
    plans.clear()
    assert store.running_of_type("noop") == 1
    assert _index_of(plans, "COUNT(*) AS n FROM worker_jobs") == {"worker_jobs_running"}
    plans.clear()
    store.release_worker("w1")
    assert _index_of(plans, "claimed_by = $1") == {"worker_jobs_running"}

    plans.clear()
    assert store.next_due() is not None
    assert store.oldest_pending_due(utcnow()) is not None
    assert _index_of(plans, "ORDER BY due LIMIT 1") == {"worker_jobs_pending_due"}


def test_limited_claims_walk_their_type_in_claim_order_with_stale_statistics(
        stale: tuple[PostgresStore, list[dict[str, Any]]]) -> None:
    store, plans = stale
    jobs = store.claim("w1", 5, limits=[TypeLimits("noop", concurrency=100)])
    assert len(jobs) == 5 and [j.id for j in jobs] == sorted(j.id for j in jobs)
    scans = [s for s in _scans(plans, "ORDER BY priority, due, id")
             if s.get("Index Name") != "worker_jobs_pkey"]
    assert {s["Index Name"] for s in scans} == {"worker_jobs_limited_order"}, scans

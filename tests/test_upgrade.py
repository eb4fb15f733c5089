"""A database written by the previous release (migrations up to 0003) upgrades in place:
its rows keep their meaning, and its pending jobs and running cron chains go on."""

from __future__ import annotations

from pathlib import Path

from helpers import now, open_table, run_burst, sql, write_jobs

from jobtable import JobStatus, WorkerJobConfig, rules
from jobtable.routing import TypeLimits
from jobtable.store import open_store
from jobtable.store.migrate import migrate

PREVIOUS_RELEASE = 3  # the last migration the previous release shipped


def _fill_as_the_previous_release_did(db_url: str) -> None:
    """Rows as the previous release wrote them: only the columns it knew."""
    t = now().replace(microsecond=0)
    insert = ("INSERT INTO worker_jobs (type, user_id, data, due, cron_schedule, "
              "auto_reschedule_on_failure, auto_reschedule_on_failure_delay, remove_delay, "
              "created_at, updated_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)")
    sql(db_url, insert, "note", 1, '{"n": 1}', t, None, False, 0, 3600000, t, t)
    sql(db_url, insert, "note", 2, '{"n": 2}', t, "* * * * * *", False, 0, 3600000, t, t)
    sql(db_url, insert, "note", 3, '{"n": 3}', t, None, True, 5000, 60000, t, t)
    sql(db_url, "UPDATE worker_jobs SET finished = %s, success = %s, result = %s "
                "WHERE user_id = 3", t, True, '{"ok": 3}')


def test_a_database_of_the_previous_release_upgrades_with_rows_and_chains_intact(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"note": """
        def run(params):
            return {"ok": params.job.id}
    """}, recorder=False)
    with open_store(db_url) as store:
        migrate(store, up_to=PREVIOUS_RELEASE)
    _fill_as_the_previous_release_did(db_url)

    with open_table(db_url, jobs) as jt:
        jt.migrate()
        before = {j.user_id: j for j in jt.list_jobs(limit=10)}
        assert before[1].status is JobStatus.PENDING and before[1].data == {"n": 1}
        assert before[2].cron_schedule == "* * * * * *"
        assert before[3].status is JobStatus.SUCCEEDED and before[3].result == {"ok": 3}
        assert before[3].auto_reschedule_on_failure_delay == 5000
        for job in before.values():  # the new policies read as the old behaviour
            assert (job.queue, job.priority, job.retry_count, job.max_retries) == (
                "default", 0, 0, None)
            assert (job.on_conflict, job.backoff, job.unique_key) == ("replace", "constant",
                                                                       None)
            assert job.cancel_requested is None and job.trace_context is None

        run_burst(jt)
        after = jt.list_jobs(limit=20)
        assert jt.get_job(before[1].id).status is JobStatus.SUCCEEDED  # type: ignore[union-attr]
        chain = sorted((j for j in after if j.user_id == 2), key=lambda j: j.id)
        assert chain[-1].rescheduled_from_job is not None
        assert [j.status for j in chain].count(JobStatus.PENDING) == 1  # the chain goes on
        assert jt.get_job(before[2].id).status is JobStatus.SUCCEEDED  # type: ignore[union-attr]


OLD_SCHEDULE_ONE = """
SELECT id, cancelled FROM jobtable_schedule_one(
    now(), now() - interval '1 hour', '{"error": "replaced"}', %s, 'note', %s, '{}', now(),
    NULL, NULL, FALSE, 0, 3600000, NULL, FALSE, 0, 25, 'constant', 3600000, NULL,
    'replace', 'default', 0, NULL, '0')
"""


def test_a_scheduler_of_the_previous_release_and_one_of_this_keep_rule_2_together(
        pg_url: str, tmp_path: Path) -> None:
    """During an upgrade, clients of the previous release (its schedule functions, kept
    by migration 0011) and of this one (the id-returning functions) take the same pair
    locks and cancel each other's pending jobs."""
    from jobtable import WorkerJobConfig
    from jobtable.store.base import pair_key

    jobs = write_jobs(tmp_path / "jobs", {"note": "def run(params):\n    return None\n"},
                      recorder=False)
    with open_store(pg_url) as store:
        migrate(store, up_to=9)                     # the previous release's schema
    [(old_id, _)] = sql(pg_url, OLD_SCHEDULE_ONE, pair_key("note", 1), 1)
    with open_table(pg_url, jobs) as jt:
        jt.migrate()
        new = jt.schedule_job(WorkerJobConfig(type="note", user_id=1))
        assert jt.get_job(old_id).cancelled  # type: ignore[union-attr]
        [(again, _)] = sql(pg_url, OLD_SCHEDULE_ONE, pair_key("note", 1), 1)
        assert jt.get_job(new.id).cancelled  # type: ignore[union-attr]
        batch = jt.schedule_jobs([WorkerJobConfig(type="note", user_id=u) for u in (1, 2)])
        assert jt.get_job(again).cancelled  # type: ignore[union-attr]
        assert [j.status for j in batch] == [JobStatus.PENDING, JobStatus.PENDING]


def test_a_database_at_0009_upgrades_to_0010_with_its_backlog_and_running_rows(
        db_url: str) -> None:
    """0010 adds the limited types' index and (PostgreSQL) replaces the running rows'
    index: rows claimed and pending before the upgrade are found by the new statements
    after it."""
    with open_store(db_url) as store:
        migrate(store, up_to=9)
        store.fill("old", finished=50, pending=5)
        running = store.claim("w1", 2)
        assert len(running) == 0  # the backlog is due tomorrow
        store.fill("due", pending=3, pending_due=now(), first_user=1)
        running = store.claim("w1", 2)
        assert len(running) == 2
    with open_store(db_url) as store:
        assert migrate(store)[0] == "0010_history"
        if db_url.startswith("postgresql"):
            names = {r[0] for r in sql(db_url, "SELECT indexname FROM pg_indexes "
                                               "WHERE tablename = 'worker_jobs'")}
            assert "worker_jobs_running" in names
            assert "worker_jobs_running_claimed_by" not in names
        else:
            names = {r[0] for r in sql(db_url, "SELECT name FROM sqlite_master "
                                               "WHERE type = 'index'")}
        assert "worker_jobs_limited_order" in names
        assert store.running_of_type("due") == 2
        assert sorted(j.id for j in store.list_jobs(status="running")) == sorted(
            j.id for j in running)
        assert store.release_unknown_claims("w1", {running[0].id}) == [running[1].id]
        # A batch replaces the pending rows of its pairs (rule 2).
        batch = [rules.new_job(WorkerJobConfig(type="old", user_id=u).validated({}), now())
                 for u in (1_000_000_001, 1_000_000_002)]
        store.schedule(batch)
        assert store.count_jobs(status="cancelled") == 2
        assert store.count_jobs(status="pending", type="old") == 5
        # The limited type's claim (through worker_jobs_limited_order) takes it first.
        limited = store.claim("w2", 1, limits=[TypeLimits("due", concurrency=10)])
        assert [j.type for j in limited] == ["due"]

"""``jobtable jobs`` / ``stats`` against real SQLite and PostgreSQL databases."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

from helpers import wait_until

from jobtable import JobTable
from jobtable.timeutil import utcnow

from ._support import Cli, backdate, finish, schedule


def test_jobs_lists_newest_first_and_json_round_trips(cli: Cli, jt: JobTable) -> None:
    a = schedule(jt, "send_report", user_id=1, data={"to": "a@example.com"})
    b = schedule(jt, "sync_prices", user_id=2)
    c = schedule(jt, "boom", user_id=3)
    finish(jt.store, lambda j: j.type != "boom")

    rows = json.loads(cli("jobs", "--json").stdout)
    assert [r["id"] for r in rows] == [c.id, b.id, a.id]
    assert [r["status"] for r in rows] == ["failed", "succeeded", "succeeded"]
    assert rows[2]["data"] == {"to": "a@example.com"}

    failed = json.loads(cli("jobs", "--status", "failed", "--json").stdout)
    assert [r["id"] for r in failed] == [c.id]
    by_type = json.loads(cli("jobs", "--type", "sync_prices", "--json").stdout)
    assert [r["id"] for r in by_type] == [b.id]
    by_user = json.loads(cli("jobs", "--user-id", "1", "--json").stdout)
    assert [r["id"] for r in by_user] == [a.id]
    assert len(json.loads(cli("jobs", "--limit", "2", "--json").stdout)) == 2

    shown = cli("jobs").stdout
    assert "send_report" in shown and "failed" in shown and str(c.id) in shown


def test_unknown_status_is_refused_with_the_accepted_ones(cli: Cli) -> None:
    result = cli("jobs", "--status", "exploded", ok=False)
    assert result.exit_code == 2
    assert "pending" in result.stderr and "cancelled" in result.stderr


def test_jobs_show_prints_every_field_traceback_and_chain_both_ways(
        cli: Cli, jt: JobTable) -> None:
    first = schedule(jt, "boom", user_id=5, data={"to": "<b>ada</b>"})
    finish(jt.store, False)
    second = json.loads(cli("jobs", "retry", str(first.id), "--json").stdout)[0]
    finish(jt.store, False)
    third = json.loads(cli("jobs", "retry", str(second["id"]), "--json").stdout)[0]

    shown = json.loads(cli("jobs", "show", str(second["id"]), "--json").stdout)
    assert shown["job"]["id"] == second["id"]
    assert shown["job"]["rescheduled_from_job"] == first.id
    assert [c["id"] for c in shown["chain"]] == [first.id, second["id"], third["id"]]

    text = cli("jobs", "show", str(second["id"])).stdout
    assert "Traceback (most recent call last)" in text
    assert "reschedule chain" in text
    assert "claimed_by" in text and "attempts" in text
    assert "<b>ada</b>" in text  # data shown literally, not as markup


def test_show_of_a_missing_job_says_so(cli: Cli) -> None:
    result = cli("jobs", "show", "424242", ok=False)
    assert result.exit_code == 1
    assert "no job with id 424242" in result.stderr


def test_cancel_cancels_a_pending_job_and_asks_the_worker_of_a_running_one(
        cli: Cli, jt: JobTable) -> None:
    pending = schedule(jt, "send_report", user_id=1, due=utcnow() + timedelta(hours=1))
    out = cli("jobs", "cancel", str(pending.id)).stdout
    assert f"cancelled job {pending.id}" in out
    row = jt.get_job(pending.id)
    assert row is not None and row.status.value == "cancelled"
    assert row.result == {"error": "Job cancelled by request"}

    running = schedule(jt, "send_report", user_id=2)
    assert [j.id for j in jt.store.claim("w-1", 10)] == [running.id]
    out = cli("jobs", "cancel", str(running.id)).stdout
    assert f"cancel requested for running job {running.id}" in out
    row = jt.get_job(running.id)
    assert row is not None and row.status.value == "running" and row.cancel_requested
    shown = cli("jobs", "show", str(running.id)).stdout
    assert "cancel" in shown and "its worker is stopping it" in shown
    assert "first run, up to 25 retries" in shown
    result = cli("jobs", "cancel", str(pending.id), ok=False)  # cancelled already
    assert result.exit_code == 1 and "too late" in result.stderr


def test_retry_schedules_a_new_row_pointing_back_and_refuses_unfinished_jobs(
        cli: Cli, jt: JobTable) -> None:
    failed = schedule(jt, "boom", user_id=4, data={"n": 1}, auto_reschedule_on_failure=False,
                      remove_delay=60)
    finish(jt.store, False)
    new = json.loads(cli("jobs", "retry", str(failed.id), "--json").stdout)
    assert len(new) == 1
    assert new[0]["status"] == "pending"
    assert new[0]["rescheduled_from_job"] == failed.id
    assert (new[0]["type"], new[0]["user_id"], new[0]["data"]) == ("boom", 4, {"n": 1})
    assert new[0]["remove_delay"] == 60_000

    result = cli("jobs", "retry", str(new[0]["id"]), ok=False)
    assert result.exit_code == 1
    assert "pending" in result.stderr and "only failed or cancelled" in result.stderr
    assert len(json.loads(cli("jobs", "--json").stdout)) == 2


def test_bulk_retry_retries_each_failed_job_once(cli: Cli, jt: JobTable) -> None:
    for user in range(5):
        schedule(jt, "boom", user_id=user)
    schedule(jt, "send_report", user_id=9)
    finish(jt.store, lambda j: j.type != "boom")

    refused = cli("jobs", "retry", "--status", "failed", ok=False, input="n\n")
    assert refused.exit_code == 1 and "retry 5 failed jobs?" in refused.stderr
    assert len(json.loads(cli("jobs", "--status", "pending", "--json").stdout)) == 0

    new = json.loads(cli("jobs", "retry", "--status", "failed", "--type", "boom", "--yes",
                         "--json").stdout)
    assert sorted(r["user_id"] for r in new) == [0, 1, 2, 3, 4]
    assert all(r["status"] == "pending" for r in new)
    again = cli("jobs", "retry", "--status", "failed", "--yes")
    assert "no failed jobs to retry" in again.stdout


def test_run_now_makes_a_future_job_due(cli: Cli, jt: JobTable) -> None:
    later = schedule(jt, "send_report", user_id=1, due=utcnow() + timedelta(days=1))
    cli("jobs", "run-now", str(later.id))
    row = jt.get_job(later.id)
    assert row is not None and row.due <= utcnow()
    assert [j.id for j in jt.store.claim("w-1", 10)] == [later.id]


def test_purge_deletes_old_finished_rows_of_the_status_only(cli: Cli, jt: JobTable) -> None:
    store = jt.store
    old = utcnow() - timedelta(days=10)
    rows = [schedule(jt, t, user_id=u) for t in ("boom", "send_report") for u in range(3)]
    finish(store, lambda j: j.type == "send_report")
    for job in rows[:2] + rows[3:5]:  # two old failures, two old successes
        backdate(store, job.id, old, old)
    running = schedule(jt, "sync_prices", user_id=2, due=old)
    assert [j.id for j in store.claim("w-1", 10)] == [running.id]
    backdate(store, running.id, old, None)  # unfinished for ten days: still never purged
    pending = schedule(jt, "sync_prices", user_id=1, due=old)

    bad = cli("jobs", "purge", "--status", "failed", "--older-than", "a week", "--yes",
              ok=False)
    assert bad.exit_code == 1 and "--older-than" in bad.stderr
    dry = json.loads(cli("jobs", "purge", "--status", "failed", "--older-than", "7d",
                         "--dry-run", "--json").stdout)
    assert dry == {"deleted": 0, "would_delete": 2}

    done = json.loads(cli("jobs", "purge", "--status", "failed", "--older-than", "7d",
                          "--yes", "--json").stdout)
    assert done == {"deleted": 2}
    left = {r["id"] for r in json.loads(cli("jobs", "--limit", "100", "--json").stdout)}
    assert left == {rows[2].id, *(r.id for r in rows[3:]), pending.id, running.id}


def test_purge_works_in_batches_with_progress(jt: JobTable) -> None:
    for u in range(7):
        schedule(jt, "send_report", user_id=u)
    finish(jt.store, True)
    seen: list[int] = []
    deleted = jt.purge_jobs(["succeeded"], timedelta(0), batch=3, progress=seen.append)
    assert deleted == 7 and seen == [3, 3, 1]


def test_stats_json_counts_lag_throughput_and_workers(cli: Cli, jt: JobTable) -> None:
    store = jt.store
    for u in range(3):
        schedule(jt, "send_report", user_id=u)
    schedule(jt, "boom", user_id=1)
    finish(store, lambda j: j.type == "send_report")
    waiting = schedule(jt, "sync_prices", user_id=1, due=utcnow() - timedelta(minutes=5))
    store.heartbeat("host-1-77-abc", 8, 77)

    stats = json.loads(cli("stats", "--json").stdout)
    assert stats["by_status"] == {"pending": 1, "running": 0, "succeeded": 3, "failed": 1,
                                  "cancelled": 0}
    assert stats["by_type"]["send_report"] == {"succeeded": 3}
    assert stats["finished_last_hour"] == 4
    assert stats["jobs_per_minute"] == round(4 / 60, 2)
    assert sum(b["succeeded"] for b in stats["throughput"]) == 3
    assert len(stats["throughput"]) == 60
    assert stats["queue_lag_seconds"] >= 299
    assert stats["oldest_pending_due"] == waiting.due.isoformat()
    assert [w["pid"] for w in stats["workers"]] == [77]

    text = cli("stats").stdout
    assert "queue lag" in text and "live workers" in text and "sync_prices" in text


def test_stats_watch_refreshes_until_interrupted(db_url: str, jobs_dir: Path,
                                                 jt: JobTable, tmp_path: Path) -> None:
    schedule(jt, "send_report", user_id=1)
    env = {**os.environ, "COLUMNS": "120", "JOBTABLE_DATABASE_URL": db_url}
    proc = subprocess.Popen([sys.executable, "-m", "jobtable", "stats", "--watch",
                             "--interval", "0.2"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    assert proc.stdout is not None
    try:
        seen = b""
        os.set_blocking(proc.stdout.fileno(), False)

        def output_mentions_the_job() -> bool:
            nonlocal seen
            seen += proc.stdout.read() or b""  # type: ignore[union-attr]
            return b"send_report" in seen and b"queue lag" in seen

        wait_until(output_mentions_the_job, 30, "stats --watch output")
        proc.send_signal(signal.SIGINT)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        if proc.stderr is not None:
            proc.stderr.close()


def test_jobs_command_runs_through_the_real_entry_point(db_url: str, jt: JobTable,
                                                        tmp_path: Path) -> None:
    job = schedule(jt, "send_report", user_id=3, data={"to": "x@example.com"})
    out = subprocess.run([sys.executable, "-m", "jobtable", "jobs", "--json",
                          "--database", db_url], capture_output=True, text=True, check=True,
                         cwd=tmp_path, timeout=60)
    rows = json.loads(out.stdout)
    assert [(r["id"], r["data"]) for r in rows] == [(job.id, {"to": "x@example.com"})]


def test_cancel_accepts_a_started_job_past_the_stale_limit(cli: Cli, jt: JobTable) -> None:
    job = schedule(jt, "send_report", user_id=8)
    jt.store.claim("gone-worker", 10)
    long_ago = utcnow() - timedelta(hours=2)  # the stale limit is 1 hour
    backdate(jt.store, job.id, long_ago, None)
    cli("jobs", "cancel", str(job.id))
    row = jt.get_job(job.id)
    assert row is not None and row.status.value == "cancelled"

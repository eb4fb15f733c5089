"""Job control on both databases with real workers: bounded retries and backoff,
``Retry`` / ``Discard`` / ``Snooze`` raised by a job, cancelling a running job (async,
plain ``def``, isolated child, in another worker process)."""

from __future__ import annotations

import itertools
import json
import os
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import (
    FAIL_JOB,
    BackgroundWorker,
    Side,
    log_tail,
    now,
    open_table,
    pid_alive,
    row_count,
    run_burst,
    run_cli,
    sql,
    start_worker,
    stop_process,
    wait_until,
    write_jobs,
)

from jobtable import ActionRefusedError, JobStatus, JobTable, WorkerJob, WorkerJobConfig
from jobtable.rules import CANCELLED_WHILE_RUNNING


def _get(jt: JobTable, job_id: int) -> WorkerJob:
    row = jt.get_job(job_id)
    assert row is not None
    return row


def _rows(jt: JobTable, job_type: str) -> list[WorkerJob]:
    return sorted(jt.list_jobs(type=job_type, limit=1000), key=lambda j: j.id)


# -- bounded retries ----------------------------------------------------------------


def test_an_always_failing_job_with_max_retries_3_makes_exactly_4_rows_and_stops(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"boom": FAIL_JOB})
    side = Side(db_url, tmp_path)
    with side.env(), open_table(db_url, jobs) as jt:
        first = jt.schedule_job(WorkerJobConfig(type="boom", auto_reschedule_on_failure=True,
                                                max_retries=3))
        run_burst(jt)
        rows = _rows(jt, "boom")
        assert len(rows) == 4 and side.count("run") == 4
        assert [r.retry_count for r in rows] == [0, 1, 2, 3]
        assert [r.rescheduled_from_job for r in rows] == [None, *[r.id for r in rows[:-1]]]
        assert all(r.status is JobStatus.FAILED and r.max_retries == 3 for r in rows)
        last = rows[-1].result
        assert last["error"] == "boom " and last["exception"] == "ValueError"
        assert last["retries_exhausted"] == 3
        assert last["no_retry"] == "retries exhausted after 3"
        assert "retries_exhausted" not in rows[0].result and rows[0].id == first.id
        # a retry by hand starts a fresh count
        again = jt.retry_job(rows[-1].id)
        assert again.retry_count == 0 and again.max_retries == 3


def test_the_default_bound_comes_from_the_module_then_the_setting(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {
        "plain": "def run(params):\n    return 1\n",
        "bounded": "MAX_RETRIES = 1\nBACKOFF = 'exponential'\nMAX_BACKOFF = 90\n"
                   "def run(params):\n    return 1\n",
        "forever": "MAX_RETRIES = None\ndef run(params):\n    return 1\n"}, recorder=False)
    with open_table(db_url, jobs, max_retries=7) as jt:
        assert jt.schedule_job(WorkerJobConfig(type="plain")).max_retries == 7
        row = jt.schedule_job(WorkerJobConfig(type="bounded"))
        assert (row.max_retries, row.backoff, row.max_backoff) == (1, "exponential", 90_000)
        assert jt.schedule_job(WorkerJobConfig(type="forever")).max_retries is None
        assert jt.schedule_job(WorkerJobConfig(type="bounded", max_retries=None,
                                               backoff="constant")).max_retries is None
    with open_table(db_url, jobs) as jt:
        assert jt.schedule_job(WorkerJobConfig(type="plain", user_id=2)).max_retries == 25


def test_exponential_retries_are_due_twice_as_late_each_time_up_to_max_backoff(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"boom": FAIL_JOB})
    side = Side(db_url, tmp_path)
    with side.env(), open_table(db_url, jobs) as jt:
        jt.schedule_job(WorkerJobConfig(
            type="boom", auto_reschedule_on_failure=True, auto_reschedule_on_failure_delay=10,
            backoff="exponential", max_backoff=30, max_retries=4))
        gaps = []
        for _ in range(5):
            run_burst(jt)
            rows = _rows(jt, "boom")
            failed, pending = rows[-2], rows[-1]
            if pending.status is not JobStatus.PENDING:
                break
            assert failed.finished is not None and pending.backoff == "exponential"
            gaps.append((pending.due - failed.finished).total_seconds())
            jt.run_job_now(pending.id)  # instead of waiting for it
        # due = the worker's now + delay, a moment before the row's finished time
        low = [9 - 1, 18 - 1, 30 - 1, 30 - 1]
        high = [11, 22, 30, 30]
        assert len(gaps) == 4, gaps
        assert all(lo <= g <= hi for lo, g, hi in zip(low, gaps, high, strict=True)), gaps
        assert _rows(jt, "boom")[-1].result["retries_exhausted"] == 4


# -- signals --------------------------------------------------------------------------


def test_retry_signal_retries_once_per_raise_without_auto_reschedule_and_stops_at_the_bound(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"again": """
        from datetime import timedelta
        from jobtable import Retry

        def run(params):
            record(params.job.id, "run")
            raise Retry(after=params.job.data.get("after"), reason="upstream busy")
    """})
    side = Side(db_url, tmp_path)
    with side.env(), open_table(db_url, jobs) as jt:
        jt.schedule_job(WorkerJobConfig(type="again", data={"after": 0}, max_retries=2))
        later = jt.schedule_job(WorkerJobConfig(type="again", user_id=2, data={"after": 3600}))
        assert later.auto_reschedule_on_failure is False
        run_burst(jt)
        rows = [r for r in _rows(jt, "again") if r.user_id == 0]
        assert len(rows) == 3 and side.count("run") == 4
        assert [r.retry_count for r in rows] == [0, 1, 2]
        assert all(r.result["error"] == "upstream busy" for r in rows)
        assert all(r.result["exception"] == "Retry" for r in rows)
        assert rows[-1].result["retries_exhausted"] == 2
        [waiting] = jt.list_jobs(type="again", user_id=2, status="pending")
        assert waiting.rescheduled_from_job == later.id and waiting.retry_count == 1
        assert waiting.due >= now() + timedelta(minutes=59)


def test_discard_fails_once_with_no_follow_up_even_with_auto_reschedule(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"drop": """
        from jobtable import Discard

        def run(params):
            raise Discard(f"user {params.job.user_id} was deleted")
    """})
    with open_table(db_url, jobs) as jt:
        job = jt.schedule_job(WorkerJobConfig(type="drop", user_id=9,
                                              auto_reschedule_on_failure=True))
        run_burst(jt)
        [row] = _rows(jt, "drop")
        assert row.id == job.id and row.status is JobStatus.FAILED
        assert row.result["error"] == "user 9 was deleted"
        assert row.result["discarded"] is True and row.result["exception"] == "Discard"


def test_snooze_keeps_one_row_that_runs_again_later_without_using_up_attempts(
        db_url: str, tmp_path: Path) -> None:
    # Snoozing five times with max_attempts=2: never abandoned, never a suspect (it would
    # run in an isolated child process), no retry counted.
    jobs = write_jobs(tmp_path / "jobs", {"wait": """
        from jobtable import Snooze

        def run(params):
            record(params.job.id, "run", {"attempts": params.job.attempts})
            if count("run") <= 5:
                raise Snooze(params.job.data["after"])
            return {"runs": count("run")}
    """})
    side = Side(db_url, tmp_path)
    with side.env(), open_table(db_url, jobs, max_attempts=2) as jt:
        job = jt.schedule_job(WorkerJobConfig(type="wait", data={"after": 0.2},
                                              auto_reschedule_on_failure=True))
        with BackgroundWorker(jt):
            wait_until(lambda: _get(jt, job.id).finished, 30, "the snoozing job to finish")
        [row] = _rows(jt, "wait")
        assert row.status is JobStatus.SUCCEEDED, row.result
        assert row.result == {"runs": 6} and row.retry_count == 0 and row.attempts == 1
        runs = side.events("run")
        assert len(runs) == 6 and {pid for _, _, pid, _, _ in runs} == {os.getpid()}
        gaps = [b[4] - a[4] for a, b in itertools.pairwise(runs)]
        assert min(gaps) >= 0.15, gaps  # each run waited for its snooze


def test_a_cron_job_that_snoozes_keeps_its_one_pending_row(db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"tick": """
        from jobtable import Snooze

        def run(params):
            raise Snooze(3600)
    """})
    with open_table(db_url, jobs) as jt:
        chain = jt.schedule_cron_job(WorkerJobConfig(type="tick"), "0 0 1 1 *")
        jt.run_job_now(chain.id)
        run_burst(jt)
        [row] = _rows(jt, "tick")
        assert row.id == chain.id and row.status is JobStatus.PENDING
        assert row.due >= now() + timedelta(minutes=59) and row.cron_schedule == "0 0 1 1 *"
        assert row.attempts == 0 and row.started is None


def test_bad_signals_fail_the_run_with_a_clear_message_and_the_worker_goes_on(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"bad": """
        from jobtable import Retry, Snooze

        def run(params):
            kind = params.job.data["kind"]
            if kind == "snooze-negative":
                raise Snooze(-1)
            if kind == "snooze-none":
                raise Snooze()
            if kind == "retry-negative":
                raise Retry(after=-1)
            return "fine"
    """}, recorder=False)
    with open_table(db_url, jobs) as jt:
        kinds = ["snooze-negative", "snooze-none", "retry-negative", "ok"]
        ids = [jt.schedule_job(WorkerJobConfig(type="bad", user_id=i, data={"kind": k})).id
               for i, k in enumerate(kinds)]
        run_burst(jt)
        rows = [_get(jt, i) for i in ids]
        assert [r.status for r in rows] == [JobStatus.FAILED] * 3 + [JobStatus.SUCCEEDED]
        assert "Snooze(after) must not be negative" in rows[0].result["error"]
        assert "Snooze(after) needs a delay" in rows[1].result["error"]
        assert "Retry(after=...) must not be negative" in rows[2].result["error"]
        assert len(_rows(jt, "bad")) == 4


# -- cancelling a running job ---------------------------------------------------------

ASYNC_SLEEPER = """
import asyncio

async def run(params):
    record(params.job.id, "start")
    try:
        await asyncio.sleep(60)
    finally:
        record(params.job.id, "finally")
    return "not reached"
"""

POLITE_SLEEPER = """
def run(params):
    record(params.job.id, "start")
    while not params.cancelled.wait(0.05):
        pass
    return {"stopped": "politely"}
"""

STUBBORN_SLEEPER = """
import os
import time

def run(params):
    record(params.job.id, "start", {"pid": os.getpid()})
    time.sleep(60)
    return "not reached"
"""


def _assert_cancelled(jt: JobTable, job_id: int) -> WorkerJob:
    row = wait_until(lambda: (r := _get(jt, job_id)).finished and r, 15,
                     f"job {job_id} to end cancelled")
    assert row.status is JobStatus.CANCELLED and row.success is False and row.cancelled
    assert row.result["error"] == CANCELLED_WHILE_RUNNING
    assert [j for j in _rows(jt, row.type) if j.rescheduled_from_job == job_id] == []
    return row


def _retrying(job_type: str, user_id: int = 1) -> WorkerJobConfig:
    return WorkerJobConfig(type=job_type, user_id=user_id, auto_reschedule_on_failure=True,
                           max_retries=5)


def test_cancelling_a_running_async_job_cancels_it_and_runs_its_finally(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"nap": ASYNC_SLEEPER})
    side = Side(db_url, tmp_path)
    with side.env(), open_table(db_url, jobs) as jt:
        job = jt.schedule_job(_retrying("nap"))
        with BackgroundWorker(jt) as bg:
            wait_until(lambda: side.count("start"), 30, "the job to start")
            asked = jt.cancel_job(job.id)
            assert asked.status is JobStatus.RUNNING and asked.cancel_requested is not None
            _assert_cancelled(jt, job.id)
            assert side.count("finally") == 1
            assert bg.worker.stats.failed == 1


def test_cancelling_a_running_plain_def_job_sets_params_cancelled_and_keeps_its_return(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"loop": POLITE_SLEEPER})
    side = Side(db_url, tmp_path)
    with side.env(), open_table(db_url, jobs) as jt:
        job = jt.schedule_job(_retrying("loop"))
        with BackgroundWorker(jt):
            wait_until(lambda: side.count("start"), 30, "the job to start")
            jt.cancel_job(job.id)
            row = _assert_cancelled(jt, job.id)
        assert row.result["returned"] == {"stopped": "politely"}


def test_cancelling_a_running_isolated_job_terminates_its_process(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"stuck": STUBBORN_SLEEPER})
    side = Side(db_url, tmp_path)
    with side.env(), open_table(db_url, jobs) as jt:
        job = jt.schedule_job(_retrying("stuck"))
        # Claimed once before and never finished: a suspect, run in a child process.
        sql(db_url, "UPDATE worker_jobs SET attempts = 1 WHERE id = %s", job.id)
        with BackgroundWorker(jt):
            wait_until(lambda: side.count("start"), 60, "the isolated run to start")
            [(_, _, child, _, _)] = side.events("start")
            assert child != os.getpid()
            jt.cancel_job(job.id)
            _assert_cancelled(jt, job.id)
            wait_until(lambda: not pid_alive(child), 15, "the isolated process to end")


def test_a_cancel_after_the_job_finished_is_refused_as_too_late(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"quick": "def run(params):\n    return 42\n"},
                      recorder=False)
    with open_table(db_url, jobs) as jt:
        job = jt.schedule_job(WorkerJobConfig(type="quick"))
        run_burst(jt)
        with pytest.raises(ActionRefusedError, match=r"already finished .*too late"):
            jt.cancel_job(job.id)
        row = _get(jt, job.id)
        assert row.status is JobStatus.SUCCEEDED and row.result == 42
        assert row.cancel_requested is None


def test_cancelling_a_job_running_in_another_worker_process(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"nap": ASYNC_SLEEPER, "loop": POLITE_SLEEPER})
    side = Side(db_url, tmp_path)
    log = tmp_path / "worker.log"
    with open_table(db_url, jobs) as jt:
        jt.migrate()
        nap = jt.schedule_job(_retrying("nap"))
        loop = jt.schedule_job(_retrying("loop"))
        proc = start_worker(db_url, jobs, side=side, log=log)
        try:
            wait_until(lambda: side.count("start") == 2, 60, "both jobs to start")
            assert {pid for _, _, pid, _, _ in side.events("start")} == {proc.pid}
            jt.cancel_job(nap.id)
            jt.cancel_job(loop.id)
            _assert_cancelled(jt, nap.id)
            assert _assert_cancelled(jt, loop.id).result["returned"] == {"stopped": "politely"}
            assert side.count("finally") == 1
            assert proc.poll() is None, log_tail(log)
        finally:
            assert stop_process(proc) == 0, log_tail(log)


# -- the command line -------------------------------------------------------------------


def test_schedule_takes_the_retry_policies_and_refuses_bad_ones(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"boom": FAIL_JOB})
    base = ["schedule", "boom", "--database", db_url, "--jobs", str(jobs), "--json"]
    result = run_cli(*base, "--retry", "--retry-delay", "10s", "--max-retries", "4",
                     "--backoff", "exponential", "--max-backoff", "1h")
    assert result.returncode == 0, result.stderr
    row = json.loads(result.stdout)
    assert (row["max_retries"], row["backoff"], row["max_backoff"]) == (4, "exponential",
                                                                       3_600_000)
    assert row["retry_count"] == 0 and row["cancel_requested"] is None
    unlimited = json.loads(run_cli(*base, "--user-id", "2", "--max-retries",
                                   "unlimited").stdout)
    assert unlimited["max_retries"] is None
    before = row_count(db_url)
    for args, message in [
            (["--max-retries", "-1"], "must be at least 0"),
            (["--max-retries", "many"], "expected a whole number"),
            (["--backoff", "linear"], "'linear' is not one of 'constant', 'exponential'"),
            (["--backoff", "exponential", "--retry-delay", "2h", "--max-backoff", "1h"],
             "max_backoff (3600s) must not be below auto_reschedule_on_failure_delay")]:
        bad = run_cli(*base, *args)
        assert bad.returncode != 0 and message in bad.stderr, (args, bad.stderr)
    assert row_count(db_url) == before
    with open_table(db_url, jobs) as jt:
        jt.run_job_now(row["id"])
        run_burst(jt)
        [retry] = [j for j in _rows(jt, "boom") if j.rescheduled_from_job == row["id"]]
    shown = run_cli("jobs", "show", str(retry.id), "--database", db_url)
    assert shown.returncode == 0, shown.stderr
    assert "retry 1 of 4" in shown.stdout and "exponential backoff from 10 s" in shown.stdout


def test_hooks_tell_a_discard_an_exhaustion_and_a_cancel_apart(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"steer": """
        import time
        from jobtable import Discard, Retry

        def run(params):
            kind = params.job.data["kind"]
            if kind == "discard":
                raise Discard("not wanted")
            if kind == "retry":
                raise Retry(after=0)
            while not params.cancelled.wait(0.05):
                record(params.job.id, "waiting") if not count("waiting") else None
            return None

        def on_failure(params, error):
            record(params.job.id, "on_failure", params.job.data["kind"])

        def on_discard(params, error):
            record(params.job.id, "on_discard", str(error))

        def on_exhausted(params, error):
            record(params.job.id, "on_exhausted", params.job.retry_count)
    """})
    side = Side(db_url, tmp_path)
    with side.env(), open_table(db_url, jobs) as jt:
        discard = jt.schedule_job(WorkerJobConfig(type="steer", data={"kind": "discard"}))
        jt.schedule_job(WorkerJobConfig(type="steer", user_id=2, data={"kind": "retry"},
                                        max_retries=1))
        run_burst(jt)
        assert side.job_ids("on_discard") == [discard.id]
        [exhausted] = side.job_ids("on_exhausted")
        assert _get(jt, exhausted).retry_count == 1 and side.count("on_failure") == 3
        cancel = jt.schedule_job(WorkerJobConfig(type="steer", user_id=3,
                                                 data={"kind": "cancel"}))
        with BackgroundWorker(jt):
            wait_until(lambda: side.count("waiting"), 30, "the job to start")
            jt.cancel_job(cancel.id)
            _assert_cancelled(jt, cancel.id)
        assert side.job_ids("on_failure")[-1] == cancel.id
        assert side.count("on_discard") == 1 and side.count("on_exhausted") == 1

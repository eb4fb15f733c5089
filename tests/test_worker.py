"""Rules 5, 6, 8, 11 and 12 (concurrency) on both databases: success and failure rows,
retries, what ``run(params)`` receives, broken and unknown job types, timeouts,
graceful shutdown of a real worker process, N jobs at once."""

from __future__ import annotations

import logging
import signal
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import (
    FAIL_JOB,
    RECORD_JOB,
    SLEEP_JOB,
    BackgroundWorker,
    Side,
    log_tail,
    now,
    open_table,
    run_burst,
    sql,
    start_worker,
    stop_process,
    wait_until,
    write_jobs,
)

from jobtable import JobStatus, JobTable, WorkerJob, WorkerJobConfig
from jobtable.model import CANCELLED_MESSAGE


def _get(jt: JobTable, job_id: int) -> WorkerJob:
    row = jt.get_job(job_id)
    assert row is not None
    return row


def test_a_successful_job_stores_its_result_and_when_to_remove_it(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"add": """
        def run(params):
            return {"sum": params.job.data["a"] + params.job.data["b"], "items": [1, "x", None]}
    """})
    with open_table(db_url, jobs) as jt:
        custom = jt.schedule_job(WorkerJobConfig(type="add", user_id=1, data={"a": 2, "b": 3},
                                                 remove_delay=timedelta(seconds=90)))
        default = jt.schedule_job(WorkerJobConfig(type="add", user_id=2, data={"a": 1, "b": 1}))
        run_burst(jt)
        row = _get(jt, custom.id)
        assert row.status is JobStatus.SUCCEEDED
        assert row.success is True and row.cancelled is False
        assert row.result == {"sum": 5, "items": [1, "x", None]}
        assert row.finished is not None and row.started is not None
        assert row.started <= row.finished
        assert row.remove_at == row.finished + timedelta(seconds=90)
        other = _get(jt, default.id)
        assert other.finished is not None
        assert other.remove_at == other.finished + timedelta(hours=1)


def test_a_failed_job_stores_error_exception_and_traceback(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"fail": FAIL_JOB})
    side = Side(db_url, tmp_path)
    with open_table(db_url, jobs) as jt, side.env():
        job = jt.schedule_job(WorkerJobConfig(type="fail", user_id=1, data={"n": 7}))
        run_burst(jt)
        row = _get(jt, job.id)
        assert row.status is JobStatus.FAILED
        assert row.success is False and row.finished is not None
        assert row.result["error"] == "boom 7"
        assert row.result["exception"] == "ValueError"
        assert "Traceback" in row.result["traceback"]
        assert 'raise ValueError("boom "' in row.result["traceback"]
        assert row.remove_at is None
        # No retry without auto_reschedule_on_failure.
        assert side.count() == 1
        assert len(_job_rows_by_type(db_url, "fail")) == 1


def test_a_failure_with_auto_reschedule_retries_after_the_delay_cancelling_matches_first(
        db_url: str, tmp_path: Path) -> None:
    # The job schedules a matching job (same type and user) while it runs, then fails:
    # the retry must cancel that one, as scheduling does.
    jobs = write_jobs(tmp_path / "jobs", {"flaky": """
        from jobtable import WorkerJobConfig

        def run(params):
            if params.job.data.get("spawned"):
                return "not reached"
            params.app.schedule_job(WorkerJobConfig(
                type="flaky", user_id=params.job.user_id, data={"spawned": True},
                due=params.job.due.replace(year=params.job.due.year + 1)))
            raise RuntimeError("try again later")
    """})
    with open_table(db_url, jobs) as jt:
        job = jt.schedule_job(WorkerJobConfig(
            type="flaky", user_id=5, data={"to": "a@b.c"}, auto_reschedule_on_failure=True,
            auto_reschedule_on_failure_delay=timedelta(minutes=10),
            remove_delay=timedelta(seconds=30)))
        run_burst(jt)
        failed = _get(jt, job.id)
        assert failed.status is JobStatus.FAILED
        assert failed.result["error"] == "try again later"
        retries = [j for j in jt.list_jobs(type="flaky", limit=10)
                   if j.rescheduled_from_job == job.id]
        assert len(retries) == 1
        retry = retries[0]
        assert retry.status is JobStatus.PENDING
        assert (retry.type, retry.user_id, retry.data) == ("flaky", 5, {"to": "a@b.c"})
        assert retry.auto_reschedule_on_failure is True
        assert retry.auto_reschedule_on_failure_delay == 600_000
        assert retry.remove_delay == 30_000
        assert failed.started is not None and failed.finished is not None
        assert failed.started + timedelta(minutes=10) <= retry.due
        assert retry.due <= failed.finished + timedelta(minutes=10)
        spawned = [j for j in jt.list_jobs(type="flaky", limit=10) if j.data.get("spawned")]
        assert len(spawned) == 1
        assert spawned[0].status is JobStatus.CANCELLED
        assert spawned[0].result == {"error": CANCELLED_MESSAGE}
        pending = jt.list_jobs(type="flaky", status="pending")
        assert [j.id for j in pending] == [retry.id]


def test_an_exception_that_cannot_be_printed_still_fails_its_job(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"weird": """
        class Weird(Exception):
            def __str__(self):
                raise RuntimeError("no text for this error")

        def run(params):
            raise Weird()
    """}, recorder=False)
    with open_table(db_url, jobs) as jt:
        job = jt.schedule_job(WorkerJobConfig(type="weird"))
        run_burst(jt)
        row = _get(jt, job.id)
        assert row.status is JobStatus.FAILED, row
        assert row.result["exception"] == "Weird"
        assert "Weird" in row.result["error"]
        assert "Traceback" in row.result["traceback"]


def test_a_result_that_is_not_json_fails_the_job_saying_so(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"odd": """
        def run(params):
            return {"when": object()}
    """})
    with open_table(db_url, jobs) as jt:
        job = jt.schedule_job(WorkerJobConfig(type="odd"))
        run_burst(jt)
        row = _get(jt, job.id)
        assert row.status is JobStatus.FAILED
        assert "not JSON-serialisable" in row.result["error"]
        assert "object" in row.result["error"]


def test_a_result_or_error_the_database_cannot_store_fails_only_that_job(
        db_url: str, tmp_path: Path) -> None:
    # PostgreSQL's jsonb refuses NUL characters and unpaired surrogates. Such a result
    # must fail its own job with a clear error, not block the other outcomes.
    jobs = write_jobs(tmp_path / "jobs", {
        "nul": """
            def run(params):
                return {"text": "a\\x00b"}
        """,
        "surrogate": """
            def run(params):
                return ["file-\\udcff.txt"]
        """,
        "raises_nul": """
            def run(params):
                raise ValueError("bad byte \\x00 here")
        """,
        "fine": """
            import time

            def run(params):
                time.sleep(0.2)
                return "fine"
        """}, recorder=False)
    with open_table(db_url, jobs) as jt:
        nul = jt.schedule_job(WorkerJobConfig(type="nul"))
        surrogate = jt.schedule_job(WorkerJobConfig(type="surrogate"))
        raises = jt.schedule_job(WorkerJobConfig(type="raises_nul"))
        fine = [jt.schedule_job(WorkerJobConfig(type="fine", user_id=u)) for u in range(3)]
        run_burst(jt, concurrency=8)
        row = _get(jt, nul.id)
        assert row.status is JobStatus.FAILED
        assert "NUL character" in row.result["error"]
        row = _get(jt, surrogate.id)
        assert row.status is JobStatus.FAILED
        assert "unpaired surrogate" in row.result["error"]
        row = _get(jt, raises.id)
        assert row.status is JobStatus.FAILED
        assert row.result["exception"] == "ValueError"
        assert row.result["error"].startswith("bad byte ")
        assert row.result["error"].endswith(" here")
        for job in fine:
            assert _get(jt, job.id).result == "fine"


def test_the_default_app_lets_a_job_schedule_further_jobs(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {
        "parent": """
            from jobtable import JobTable, WorkerJobConfig

            def run(params):
                assert isinstance(params.app, JobTable)
                child = params.app.schedule_job(WorkerJobConfig(
                    type="child", user_id=params.job.user_id, data={"from": params.job.id}))
                return {"child": child.id}
        """,
        "child": RECORD_JOB})
    side = Side(db_url, tmp_path)
    with open_table(db_url, jobs) as jt, side.env():
        parent = jt.schedule_job(WorkerJobConfig(type="parent", user_id=9))
        run_burst(jt)
        row = _get(jt, parent.id)
        assert row.status is JobStatus.SUCCEEDED, row.result
        child = _get(jt, row.result["child"])
        assert child.status is JobStatus.SUCCEEDED
        assert child.data == {"from": parent.id}
        assert side.job_ids() == [child.id]


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_params_app_is_what_the_app_factory_returns_built_once(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kind: str) -> None:
    module = f"jt_test_app_{uuid.uuid4().hex[:8]}"
    prefix = "async " if kind == "async" else ""
    (tmp_path / f"{module}.py").write_text(
        "CALLS = 0\n\n"
        f"{prefix}def make():\n"
        "    global CALLS\n"
        "    CALLS += 1\n"
        f"    return {{'name': '{kind}-app', 'calls': CALLS}}\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    jobs = write_jobs(tmp_path / "jobs", {"use_app": """
        def run(params):
            return {"name": params.app["name"], "calls": params.app["calls"]}
    """})
    with open_table(db_url, jobs, app=f"{module}:make") as jt:
        rows = jt.schedule_jobs([WorkerJobConfig(type="use_app", user_id=u) for u in range(3)])
        run_burst(jt, concurrency=3)
        results = [_get(jt, r.id).result for r in rows]
    assert results == [{"name": f"{kind}-app", "calls": 1}] * 3
    assert sys.modules[module].CALLS == 1


def test_params_log_is_a_logger_named_after_the_job(db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"logs": """
        import logging

        def run(params):
            params.log.info("hello from the job")
            return {"name": params.log.name,
                    "is_logger": isinstance(params.log, logging.Logger)}
    """})
    with open_table(db_url, jobs) as jt:
        plain = jt.schedule_job(WorkerJobConfig(type="logs", user_id=1))
        cron = jt.schedule_cron_job(WorkerJobConfig(type="logs", user_id=2), "* * * * * *")
        wait_until(lambda: now() >= cron.due, 10, "the cron row to fall due")
        run_burst(jt)
        assert _get(jt, plain.id).result == {"name": f"job[{plain.id}-logs]", "is_logger": True}
        assert _get(jt, cron.id).result == {"name": f"job[{cron.id}-logs] (cron)",
                                            "is_logger": True}


def test_params_job_is_the_row_and_read_only(db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"mutate": """
        import dataclasses

        def run(params):
            try:
                params.job.data = {"changed": True}
            except dataclasses.FrozenInstanceError:
                frozen = True
            else:
                frozen = False
            return {"frozen": frozen, "id": params.job.id, "data": params.data,
                    "attempts": params.job.attempts}
    """})
    with open_table(db_url, jobs) as jt:
        job = jt.schedule_job(WorkerJobConfig(type="mutate", data={"k": 1}))
        run_burst(jt)
        assert _get(jt, job.id).result == {"frozen": True, "id": job.id, "data": {"k": 1},
                                           "attempts": 1}


def test_a_module_that_fails_to_import_is_reported_and_only_its_jobs_fail(
        db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    jobs = write_jobs(tmp_path / "jobs", {
        "good": """
            def run(params):
                return {"ok": params.job.id}
        """,
        "broken": """
            import no_such_module_for_jobtable_tests

            def run(params):
                return 1
        """}, recorder=False)
    with open_table(db_url, jobs) as jt:
        bad = jt.schedule_job(WorkerJobConfig(type="broken", user_id=1))
        good = jt.schedule_job(WorkerJobConfig(type="good", user_id=1))
        with caplog.at_level(logging.ERROR, logger="jobtable"):
            run_burst(jt)
        reported = [r.getMessage() for r in caplog.records if "broken" in r.getMessage()]
        assert reported, caplog.text
        assert "no_such_module_for_jobtable_tests" in reported[0]
        row = _get(jt, bad.id)
        assert row.status is JobStatus.FAILED
        assert "cannot be loaded" in str(row.error)
        assert "No module named 'no_such_module_for_jobtable_tests'" in str(row.error)
        assert _get(jt, good.id).result == {"ok": good.id}


def test_a_row_of_a_job_type_that_no_longer_exists_fails_and_the_worker_goes_on(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"gone": RECORD_JOB, "stays": RECORD_JOB})
    side = Side(db_url, tmp_path)
    with open_table(db_url, jobs) as jt:
        gone = jt.schedule_job(WorkerJobConfig(type="gone", user_id=1))
        stays = jt.schedule_job(WorkerJobConfig(type="stays", user_id=1))
    (jobs / "gone.py").unlink()
    with open_table(db_url, jobs) as jt, side.env():
        worker = run_burst(jt)
        row = _get(jt, gone.id)
        assert row.status is JobStatus.FAILED
        assert "unknown job type 'gone'" in str(row.error)
        assert "stays" in str(row.error)
        assert _get(jt, stays.id).status is JobStatus.SUCCEEDED
        assert side.job_ids() == [stays.id]
        assert worker.stats.failed == 1 and worker.stats.succeeded >= 1


def test_a_job_past_its_module_timeout_is_failed_with_a_timeout_error(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {
        "slow_async": """
            import asyncio
            TIMEOUT = 0.5

            async def run(params):
                await asyncio.sleep(60)
        """,
        "slow_def": """
            import time
            TIMEOUT = 0.5

            def run(params):
                record(params.job.id, "start")
                time.sleep(1.5)
                record(params.job.id, "end")
                return {"late": True}
        """})
    side = Side(db_url, tmp_path)
    with open_table(db_url, jobs) as jt, side.env():
        a = jt.schedule_job(WorkerJobConfig(type="slow_async"))
        d = jt.schedule_job(WorkerJobConfig(type="slow_def"))
        run_burst(jt)
        for job in (a, d):
            row = _get(jt, job.id)
            assert row.status is JobStatus.FAILED, row.result
            assert row.result["error"] == "Job timed out after 0.5s"
            assert row.result["exception"] == "TimeoutError"
        # The plain def ran on in its thread; its late result is ignored.
        wait_until(lambda: side.count("end") == 1, 30, "the thread to finish")
        assert _get(jt, d.id).result["exception"] == "TimeoutError"


def test_a_job_running_into_the_stale_limit_is_failed_by_its_own_worker_and_not_claimed_twice(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"slow": SLEEP_JOB})
    side = Side(db_url, tmp_path)
    with side.env(), open_table(db_url, jobs, stale_limit="2s") as jt1, \
            open_table(db_url, jobs, stale_limit="2s") as jt2:
        job = jt1.schedule_job(WorkerJobConfig(type="slow", data={"sleep": 30}))
        with BackgroundWorker(jt1), BackgroundWorker(jt2):
            wait_until(lambda: _get(jt1, job.id).finished, 30, "the slow job to be stopped")
        row = _get(jt1, job.id)
        assert row.status is JobStatus.FAILED
        assert row.result["error"].startswith("Job timed out after 1.8s")
        assert row.attempts == 1
        assert side.count("start") == 1
        assert side.count("end") == 0


def _job_rows_by_type(db_url: str, job_type: str) -> list[tuple[object, ...]]:
    return sql(db_url, "SELECT id FROM worker_jobs WHERE type = %s ORDER BY id", job_type)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_lets_short_jobs_finish_and_fails_long_ones_with_a_shutdown_error(
        db_url: str, tmp_path: Path, sig: signal.Signals) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"nap": SLEEP_JOB})
    side = Side(db_url, tmp_path)
    log = tmp_path / "worker.log"
    with open_table(db_url, jobs) as jt:
        jt.migrate()
        long = jt.schedule_job(WorkerJobConfig(
            type="nap", user_id=1, data={"sleep": 60}, auto_reschedule_on_failure=True,
            auto_reschedule_on_failure_delay=timedelta(minutes=5)))
        short = jt.schedule_job(WorkerJobConfig(type="nap", user_id=2, data={"sleep": 0.3}))
        proc = start_worker(db_url, jobs, "--grace-period", "1s", side=side, log=log)
        try:
            wait_until(lambda: side.count("start") == 2, 60, "both jobs to start")
        finally:
            code = stop_process(proc, sig)
        assert code == 0, log_tail(log)
        long_row, short_row = _get(jt, long.id), _get(jt, short.id)
        assert short_row.status is JobStatus.SUCCEEDED, short_row.result
        assert long_row.status is JobStatus.FAILED
        assert "shut down" in long_row.result["error"]
        assert long_row.result["exception"] == "WorkerShutdown"
        retries = [j for j in jt.list_jobs(type="nap") if j.rescheduled_from_job == long.id]
        assert len(retries) == 1 and retries[0].status is JobStatus.PENDING
        assert retries[0].data == {"sleep": 60}
    assert "Traceback" not in log.read_text()


def test_a_stop_signal_fails_a_plain_def_job_still_running_after_the_grace_period(
        db_url: str, tmp_path: Path) -> None:
    # A thread cannot be interrupted: its row is failed and the process still exits 0.
    jobs = write_jobs(tmp_path / "jobs", {"block": """
        import time

        def run(params):
            record(params.job.id, "start")
            time.sleep(30)
            record(params.job.id, "end")
    """})
    side = Side(db_url, tmp_path)
    log = tmp_path / "worker.log"
    with open_table(db_url, jobs) as jt:
        jt.migrate()
        job = jt.schedule_job(WorkerJobConfig(type="block"))
        proc = start_worker(db_url, jobs, "--grace-period", "1s", side=side, log=log)
        try:
            wait_until(lambda: side.count("start") == 1, 60, "the job to start")
        finally:
            code = stop_process(proc)
        assert code == 0, log_tail(log)
        row = _get(jt, job.id)
        assert row.status is JobStatus.FAILED
        assert "shut down" in row.result["error"]
    assert side.count("end") == 0


def test_a_second_stop_signal_interrupts_running_jobs_at_once(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"nap": SLEEP_JOB})
    side = Side(db_url, tmp_path)
    log = tmp_path / "worker.log"
    with open_table(db_url, jobs) as jt:
        jt.migrate()
        job = jt.schedule_job(WorkerJobConfig(type="nap", data={"sleep": 300}))
        # The grace period is longer than the wait below: only the second signal can
        # end the process in time.
        proc = start_worker(db_url, jobs, "--grace-period", "10m", side=side, log=log)
        try:
            wait_until(lambda: side.count("start") == 1, 60, "the job to start")
            proc.send_signal(signal.SIGTERM)
            wait_until(lambda: "waiting up to" in log.read_text(), 30, "the graceful stop")
        finally:
            code = stop_process(proc, signal.SIGINT, timeout=60)
        assert code == 0, log_tail(log)
        row = _get(jt, job.id)
        assert row.status is JobStatus.FAILED
        assert "shut down" in row.result["error"]


def test_concurrency_runs_that_many_jobs_at_once_and_no_more(
        db_url: str, tmp_path: Path) -> None:
    # Each job waits (up to a deadline) until four jobs have started: with room for
    # four at once they all meet; the overlap of their run intervals is then four.
    jobs = write_jobs(tmp_path / "jobs", {"meet": """
        import time

        def run(params):
            record(params.job.id, "start")
            deadline = time.monotonic() + 20
            while count("start") < 4 and time.monotonic() < deadline:
                time.sleep(0.02)
            record(params.job.id, "end")
    """})
    side = Side(db_url, tmp_path)
    log = tmp_path / "worker.log"
    with open_table(db_url, jobs) as jt:
        jt.migrate()
        jt.schedule_jobs([WorkerJobConfig(type="meet", user_id=u) for u in range(8)])
    proc = start_worker(db_url, jobs, "--concurrency", "4", side=side, log=log)
    try:
        wait_until(lambda: side.count("end") == 8, 60, "eight jobs to end")
    finally:
        code = stop_process(proc)
    assert code == 0, log_tail(log)
    timeline = sorted((at, 1 if event == "start" else -1)
                      for _, event, _, _, at in side.events())
    running = peak = 0
    for _, step in timeline:
        running += step
        peak = max(peak, running)
    assert peak == 4

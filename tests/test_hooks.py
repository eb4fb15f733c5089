"""Hooks on both databases: a job module's on_success / on_failure / on_exhausted, global
middleware (``hooks`` setting) with ``around``, their order, and that a hook's own error
never changes the job's outcome."""

from __future__ import annotations

import logging
import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest
from helpers import Side, open_table, run_burst, sql, start_worker, write_jobs

from jobtable import ConfigError, JobStatus, JobTable, WorkerJobConfig
from jobtable.errors import JobFailed

# Events go to a list in the module that records them (hooks run in this process).
JOB_HOOKS = """
EVENTS = []

async def run(params):
    if params.job.data.get("fail"):
        raise ValueError("boom " + str(params.job.id))
    if params.job.data.get("sleep"):
        import asyncio
        await asyncio.sleep(params.job.data["sleep"])
    return {"n": params.job.data.get("n")}

def on_success(params, result):            # plain def: runs in a thread
    EVENTS.append(("on_success", params.job.id, result))

async def on_failure(params, error):
    EVENTS.append(("on_failure", params.job.id, error))

def on_exhausted(params, error):
    EVENTS.append(("on_exhausted", params.job.id, error))
"""

RAISING_HOOKS = """
def run(params):
    if params.job.data.get("fail"):
        raise ValueError("the job's own error")
    return {"kept": True}

def on_success(params, result):
    raise RuntimeError("hook broke on success")

async def on_failure(params, error):
    raise RuntimeError("hook broke on failure")
"""


def _middleware(folder: Path, body: str) -> str:
    """Write a middleware module under a fresh name; return the name."""
    name = f"mw_{uuid.uuid4().hex[:10]}"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(body))
    return name


def _module(jt: JobTable, job_type: str) -> Any:
    jobtype = jt.registry.get(job_type)
    assert jobtype is not None and jobtype.module is not None
    return jobtype.module


def test_job_module_hooks_receive_the_result_or_the_error(db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"hooked": JOB_HOOKS}, recorder=False)
    with open_table(db_url, jobs) as jt:
        ok = jt.schedule_job(WorkerJobConfig(type="hooked", user_id=1, data={"n": 5}))
        bad = jt.schedule_job(WorkerJobConfig(type="hooked", user_id=2, data={"fail": True}))
        run_burst(jt)
        events = _module(jt, "hooked").EVENTS
        assert ("on_success", ok.id, {"n": 5}) in events
        failures = [e for e in events if e[0] == "on_failure"]
        assert [e[1] for e in failures] == [bad.id]
        error = failures[0][2]
        assert isinstance(error, ValueError) and str(error) == f"boom {bad.id}"
        # No retries were configured: nothing is exhausted.
        assert not [e for e in events if e[0] == "on_exhausted"]
        assert len(events) == 2


def test_a_timed_out_job_gives_failure_hooks_a_job_failed_error(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"hooked": "TIMEOUT = 0.2\n" + JOB_HOOKS},
                      recorder=False)
    with open_table(db_url, jobs) as jt:
        slow = jt.schedule_job(WorkerJobConfig(type="hooked", data={"sleep": 30}))
        run_burst(jt)
        [(name, job_id, error)] = _module(jt, "hooked").EVENTS
        assert (name, job_id) == ("on_failure", slow.id)
        assert isinstance(error, JobFailed) and error.kind == "TimeoutError"
        assert "timed out" in str(error)


def test_a_raising_hook_leaves_the_job_outcome_and_is_logged(
        db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"fragile": RAISING_HOOKS}, recorder=False)
    with open_table(db_url, jobs) as jt, caplog.at_level(logging.ERROR, "jobtable.hooks"):
        ok = jt.schedule_job(WorkerJobConfig(type="fragile", user_id=1))
        bad = jt.schedule_job(WorkerJobConfig(type="fragile", user_id=2, data={"fail": True}))
        run_burst(jt)
        ok_row, bad_row = jt.require_job(ok.id), jt.require_job(bad.id)
    assert ok_row.status is JobStatus.SUCCEEDED and ok_row.result == {"kept": True}
    assert bad_row.status is JobStatus.FAILED
    assert bad_row.result["error"] == "the job's own error"
    assert bad_row.result["exception"] == "ValueError"
    hook_errors = [r for r in caplog.records if r.name == "jobtable.hooks"]
    assert {str(r.exc_info[1]) for r in hook_errors if r.exc_info} == {
        "hook broke on success", "hook broke on failure"}
    assert all(r.levelno == logging.ERROR for r in hook_errors)


AROUND_A = """
import time

EVENTS = []

async def around(params, call_next):
    EVENTS.append(("a-before", params.job.id))
    started = time.monotonic()
    try:
        result = await call_next()
    except Exception as exc:
        EVENTS.append(("a-error", params.job.id, type(exc).__name__))
        raise
    EVENTS.append(("a-after", params.job.id, result, time.monotonic() - started >= 0))
    return result

def on_success(params, result):
    EVENTS.append(("a-on_success", params.job.id))
"""

AROUND_B = """
EVENTS = []

def around(params, call_next):              # plain def: runs in a thread
    EVENTS.append(("b-before", params.job.id))
    result = call_next()
    EVENTS.append(("b-after", params.job.id, result))
    return {"replaced": "ignored"}          # cannot change the stored result

async def on_success(params, result):
    EVENTS.append(("b-on_success", params.job.id))
"""

RUN_JOB = """
EVENTS = []

def run(params):
    if params.job.data.get("fail"):
        raise KeyError("missing")
    EVENTS.append(("run", params.job.id))
    return {"n": params.job.data.get("n")}

def on_success(params, result):
    EVENTS.append(("job-on_success", params.job.id))
"""


def test_middleware_around_wraps_the_job_in_order_and_sees_its_result(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    first = _middleware(tmp_path / "mods", AROUND_A)
    second = _middleware(tmp_path / "mods", AROUND_B)
    jobs = write_jobs(tmp_path / "jobs", {"work": RUN_JOB}, recorder=False)
    with open_table(db_url, jobs, hooks=[first, second]) as jt:
        job = jt.schedule_job(WorkerJobConfig(type="work", data={"n": 3}))
        run_burst(jt)
        assert jt.require_job(job.id).result == {"n": 3}
        a, b = sys.modules[first].EVENTS, sys.modules[second].EVENTS
        ran = _module(jt, "work").EVENTS
        assert a == [("a-before", job.id), ("a-after", job.id, {"n": 3}, True),
                     ("a-on_success", job.id)]
        assert b == [("b-before", job.id), ("b-after", job.id, {"n": 3}),
                     ("b-on_success", job.id)]
        assert ran == [("run", job.id), ("job-on_success", job.id)]
        failing = jt.schedule_job(WorkerJobConfig(type="work", user_id=2,
                                                  data={"fail": True}))
        run_burst(jt)
        assert ("a-error", failing.id, "KeyError") in a
        assert jt.require_job(failing.id).result["exception"] == "KeyError"


AROUND_BROKEN = """
EVENTS = []

async def around(params, call_next):
    if params.job.data.get("before"):
        raise RuntimeError("around broke before the job")
    if params.job.data.get("skip"):
        return None                          # forgot call_next
    await call_next()
    raise RuntimeError("around broke after the job")
"""


def test_a_broken_around_never_changes_whether_or_how_the_job_runs(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    broken = _middleware(tmp_path / "mods", AROUND_BROKEN)
    jobs = write_jobs(tmp_path / "jobs", {"work": RUN_JOB}, recorder=False)
    with open_table(db_url, jobs, hooks=[broken]) as jt, \
            caplog.at_level(logging.ERROR, "jobtable.hooks"):
        ids = [jt.schedule_job(WorkerJobConfig(type="work", user_id=i, data={key: True,
                                                                              "n": i})).id
               for i, key in enumerate(["before", "skip", "after"])]
        run_burst(jt)
        rows = [jt.require_job(i) for i in ids]
        assert [r.result for r in rows] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert [e[1] for e in _module(jt, "work").EVENTS if e[0] == "run"] == ids
    messages = [r.getMessage() for r in caplog.records if r.name == "jobtable.hooks"]
    assert len(messages) == 3, messages
    assert any("did not call call_next" in m for m in messages)


def test_a_hooks_module_that_cannot_load_stops_the_worker_and_names_it(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"work": RUN_JOB}, recorder=False)
    with open_table(db_url, jobs, hooks=["no_such_module_for_hooks"]) as jt, \
            pytest.raises(ConfigError, match="no_such_module_for_hooks"):
        run_burst(jt)
    with pytest.raises(ConfigError, match="dotted module name"):
        open_table(db_url, jobs, hooks=["not a module"])


RECORDING_MIDDLEWARE = """
import os, sqlite3

def _record(job_id, event):
    url = os.environ["JT_TEST_SIDE"]
    if url.startswith("postgresql"):
        import psycopg
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("INSERT INTO side (job_id, event, pid, ppid, at, info) "
                         "VALUES (%s, %s, 0, 0, 0, null)", (job_id, event))
    else:
        conn = sqlite3.connect(url, timeout=60, isolation_level=None)
        conn.execute("INSERT INTO side (job_id, event, pid, ppid, at, info) "
                     "VALUES (?, ?, 0, 0, 0, null)", (job_id, event))
        conn.close()

def around(params, call_next):
    _record(params.job.id, "around")
    return call_next()

async def on_failure(params, error):
    _record(params.job.id, "failure:" + type(error).__name__)
"""


def test_a_worker_process_applies_the_hooks_given_by_its_hooks_option(
        db_url: str, tmp_path: Path) -> None:
    side = Side(db_url, tmp_path)
    name = _middleware(tmp_path / "mods", RECORDING_MIDDLEWARE)
    jobs = write_jobs(tmp_path / "jobs", {"work": RUN_JOB}, recorder=False)
    with open_table(db_url, jobs) as jt:
        ok = jt.schedule_job(WorkerJobConfig(type="work", user_id=1))
        bad = jt.schedule_job(WorkerJobConfig(type="work", user_id=2, data={"fail": True}))
    log = tmp_path / "worker.log"
    proc = start_worker(db_url, jobs, "--burst", "--hooks", name, side=side, log=log,
                        env={"PYTHONPATH": str(tmp_path / "mods")})
    assert proc.wait(120) == 0, log.read_text()
    assert sorted(side.job_ids("around")) == [ok.id, bad.id]
    assert side.job_ids("failure:KeyError") == [bad.id]


HANGING_HOOKS = """
import asyncio

TIMEOUT = 0.5

def run(params):
    return {"done": params.job.id}

async def on_success(params, result):
    await asyncio.sleep(3600)
"""


def test_a_hanging_outcome_hook_is_abandoned_within_the_job_timeout(
        db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"stuck": HANGING_HOOKS}, recorder=False)
    with open_table(db_url, jobs) as jt, caplog.at_level(logging.ERROR, "jobtable.hooks"):
        job = jt.schedule_job(WorkerJobConfig(type="stuck"))
        run_burst(jt)
        assert jt.require_job(job.id).result == {"done": job.id}
    [record] = [r for r in caplog.records if r.name == "jobtable.hooks"]
    assert "did not return within" in record.getMessage() and "on_success" in record.getMessage()


CRASHING = """
import os

EVENTS = []

def run(params):
    os._exit(3)

def on_failure(params, error):
    EVENTS.append(("on_failure", params.job.id, error))

def on_exhausted(params, error):
    EVENTS.append(("on_exhausted", params.job.id, error))
"""


def test_a_job_that_crashes_its_isolated_process_for_good_gets_its_failure_hooks(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"poison": CRASHING}, recorder=False)
    with open_table(db_url, jobs, max_attempts=2) as jt:
        job = jt.schedule_job(WorkerJobConfig(type="poison", auto_reschedule_on_failure=True))
        # Claimed once before and never finished: the next claim is its last attempt,
        # run alone in a child process, which dies.
        sql(db_url, "UPDATE worker_jobs SET attempts = 1 WHERE id = %s", job.id)
        run_burst(jt)
        row = jt.require_job(job.id)
        assert row.result["exception"] == "WorkerCrash"
        assert not [j for j in jt.list_jobs() if j.rescheduled_from_job == job.id]
        events = _module(jt, "poison").EVENTS
    assert [(name, job_id) for name, job_id, _ in events] == [
        ("on_failure", job.id), ("on_exhausted", job.id)]
    assert all(isinstance(e[2], JobFailed) and e[2].kind == "WorkerCrash" for e in events)


def test_bounded_retries_fire_on_exhausted_once_on_the_last_failure(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"hooked": JOB_HOOKS}, recorder=False)
    with open_table(db_url, jobs) as jt:
        first = jt.schedule_job(WorkerJobConfig(
            type="hooked", data={"fail": True}, auto_reschedule_on_failure=True,
            auto_reschedule_on_failure_delay=0, max_retries=2))
        run_burst(jt)
        rows = jt.job_chain(first.id)
        assert [r.retry_count for r in rows] == [0, 1, 2]
        events = _module(jt, "hooked").EVENTS
    assert [(name, job_id) for name, job_id, _ in events] == [
        ("on_failure", rows[0].id), ("on_failure", rows[1].id), ("on_failure", rows[2].id),
        ("on_exhausted", rows[2].id)]
    assert str(events[-1][2]) == f"boom {rows[2].id}"

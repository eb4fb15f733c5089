"""Helpers for testing jobs in your own test suite.

- ``run_job`` / ``run_job_async``: run one job inline with the given ``data`` and get
  its result, or its exception. Nothing is written to the table.
- ``drain`` / ``drain_async``: run every job that is due in the table, as a worker
  would (retries and follow-up jobs that fall due included), and get the finished rows.
- ``assert_scheduled`` / ``assert_not_scheduled``: check what your code scheduled.

Example, with pytest::

    from jobtable import JobTable
    from jobtable.testing import assert_scheduled, drain

    def test_sign_up_sends_a_welcome_mail(tmp_path):
        with JobTable(f"sqlite:///{tmp_path}/jobs.db", jobs="jobs") as jt:
            sign_up(jt, user_id=7, email="ada@example.com")
            assert_scheduled(jt, "send_welcome", {"email": "ada@example.com"}, user_id=7)
            assert drain(jt).failed == []
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from jobtable.bindings import data_dict
from jobtable.client import JobTable
from jobtable.errors import InvalidDataError, InvalidJobError
from jobtable.model import JobParams, JobStatus, WorkerJob, WorkerJobConfig
from jobtable.registry import JobType
from jobtable.timeutil import utcnow
from jobtable.worker import Worker
from jobtable.worker.execution import bootstrap_app, job_logger

__all__ = [
    "Drained",
    "assert_not_scheduled",
    "assert_scheduled",
    "drain",
    "drain_async",
    "run_job",
    "run_job_async",
]


class _Unset:
    def __repr__(self) -> str:
        return "<unset>"


_UNSET: Any = _Unset()


def _no_running_loop(helper: str) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise RuntimeError(f"{helper}() cannot run inside an event loop; "
                       f"use 'await {helper}_async(...)' in async tests")


# -- running one job ---------------------------------------------------------------------


def _prepare(jt: JobTable, job_type: str, data: Any,
             user_id: int) -> tuple[JobType, WorkerJob]:
    valid = WorkerJobConfig(type=job_type, user_id=user_id, data=data_dict(data)).validated()
    known = jt.registry.require(valid.type)
    jt.registry.check_data(valid.type, valid.data)
    loaded = jt.registry.get(known.name)
    assert loaded is not None
    if loaded.error is not None or loaded.run is None:
        raise InvalidJobError(f"job type {job_type!r} cannot be loaded: {loaded.error}")
    now = utcnow()
    job = WorkerJob(
        id=0, type=valid.type, user_id=valid.user_id, data=valid.data, due=now, started=now,
        finished=None, remove_at=None, success=None, result=None, cron_schedule=None,
        cron_timezone=None, auto_reschedule_on_failure=False,
        auto_reschedule_on_failure_delay=0, remove_delay=0, rescheduled_from_job=None,
        cancelled=False, attempts=1, claimed_by="jobtable.testing", declared=False,
        created_at=now, updated_at=now)
    return loaded, job


def _checked_result(value: Any) -> Any:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidDataError(
            f"the job returned a result the worker would reject: {type(value).__name__} "
            f"is not JSON-serialisable ({exc})") from None
    return value


def run_job(jt: JobTable, job_type: str, data: Any = None, *, user_id: int = 0,
            app: Any = _UNSET) -> Any:
    """Run one job of ``job_type`` inline, now, with ``data``; return what its ``run``
    returned, or raise what it raised.

    ``data`` is checked against the module's ``Data`` as scheduling would check it, and
    the result must be JSON, as the worker requires. ``params.app`` is ``app`` when
    given, else what the worker would build (the configured bootstrap factory, or the
    ``JobTable``). ``params.job`` is an unsaved row with id 0: nothing is written. No
    timeout applies. A plain ``def`` job runs in the calling thread.
    """
    _no_running_loop("run_job")
    jobtype, job = _prepare(jt, job_type, data, user_id)
    run = jobtype.run
    assert run is not None

    async def in_loop() -> Any:
        # One event loop for the app factory and the job: the app's clients stay usable.
        params = JobParams(app=await _resolve_app(jt, app), log=job_logger(job), job=job,
                           jobtable=jt)
        return await run(params) if jobtype.is_async else params

    outcome = asyncio.run(in_loop())
    if jobtype.is_async:
        return _checked_result(outcome)
    return _checked_result(run(outcome))


async def run_job_async(jt: JobTable, job_type: str, data: Any = None, *, user_id: int = 0,
                        app: Any = _UNSET) -> Any:
    """``run_job`` for async tests: an ``async def`` job is awaited in the running loop,
    a plain ``def`` job runs in a thread."""
    jobtype, job = await asyncio.to_thread(_prepare, jt, job_type, data, user_id)
    run = jobtype.run
    assert run is not None
    params = JobParams(app=await _resolve_app(jt, app), log=job_logger(job), job=job,
                       jobtable=jt)
    if jobtype.is_async:
        return _checked_result(await run(params))
    return _checked_result(await asyncio.to_thread(run, params))


async def _resolve_app(jt: JobTable, app: Any) -> Any:
    return app if app is not _UNSET else await bootstrap_app(jt.settings.app, jt)


# -- draining the table ------------------------------------------------------------------


@dataclass(frozen=True)
class Drained:
    """The rows a drain ran, as they ended, in the order they were claimed."""

    jobs: list[WorkerJob]

    @property
    def succeeded(self) -> list[WorkerJob]:
        """The jobs that succeeded."""
        return [j for j in self.jobs if j.status == JobStatus.SUCCEEDED]

    @property
    def failed(self) -> list[WorkerJob]:
        """The jobs that failed (their ``error`` says why)."""
        return [j for j in self.jobs if j.status == JobStatus.FAILED]


def drain(jt: JobTable, *, app: Any = _UNSET, concurrency: int | None = None,
          max_jobs: int = 1000) -> Drained:
    """Run every job due in the table now, as a worker would, until none is due; jobs
    they schedule that are due at once (and retries without delay) run too. Returns the
    rows it ran. Declared ``CRON`` chains are not started. Raises ``AssertionError``
    after ``max_jobs`` jobs, which means jobs keep scheduling jobs that are due now."""
    _no_running_loop("drain")
    return asyncio.run(drain_async(jt, app=app, concurrency=concurrency, max_jobs=max_jobs))


async def drain_async(jt: JobTable, *, app: Any = _UNSET, concurrency: int | None = None,
                      max_jobs: int = 1000) -> Drained:
    """``drain`` for async tests."""
    resolved = await _resolve_app(jt, app)
    ran: list[int] = []
    worker = Worker(jt, concurrency=concurrency, burst=True, app=resolved,
                    schedule_builtins=False, max_jobs=max_jobs,
                    on_claim=lambda job: ran.append(job.id))
    await worker.run()
    rows = []
    for job_id in ran:
        row = await jt.get_job_async(job_id)
        if row is not None:
            rows.append(row)
    if worker.limit_reached:
        raise AssertionError(
            f"drain ran {max_jobs} jobs and stopped: jobs keep scheduling jobs that are due "
            "at once (a retry without delay of a job that always fails?); pass max_jobs= "
            "if that many are expected")
    return Drained(jobs=rows)


# -- asserting what was scheduled ----------------------------------------------------------


def _describe(job: WorkerJob) -> str:
    return f"#{job.id} user {job.user_id} {job.status.value} data={job.data!r}"


def _matching(jt: JobTable, job_type: str, data: Any, user_id: int | None,
              status: str | None) -> tuple[list[WorkerJob], list[WorkerJob]]:
    if job_type not in jt.registry:
        raise AssertionError(f"{job_type!r} is not a job type; known: "
                             f"{', '.join(jt.registry.names)}")
    if status is not None:
        status = JobStatus(status).value
    rows = jt.list_jobs(type=job_type, user_id=user_id, status=status, limit=10_000)
    wanted = _UNSET if data is _UNSET else data_dict(data)
    return rows, [r for r in rows if wanted is _UNSET or r.data == wanted]


def _what(job_type: str, data: Any, user_id: int | None, status: str | None) -> str:
    parts = [f"a job of type {job_type!r}"]
    if user_id is not None:
        parts.append(f"for user {user_id}")
    if data is not _UNSET:
        parts.append(f"with data {data_dict(data)!r}")
    if status is not None:
        parts.append(f"that is {JobStatus(status).value}")
    return " ".join(parts)


def assert_scheduled(jt: JobTable, job_type: str, data: Any = _UNSET, *,
                     user_id: int | None = None, status: str | None = None) -> WorkerJob:
    """Assert that a job of ``job_type`` was scheduled (with exactly ``data``, for
    ``user_id``, in ``status``, when given); return the newest such row."""
    rows, found = _matching(jt, job_type, data, user_id, status)
    if found:
        return found[0]
    seen = "; ".join(_describe(r) for r in rows[:10]) or "none"
    if len(rows) > 10:
        seen += f"; and {len(rows) - 10} more"
    raise AssertionError(f"expected {_what(job_type, data, user_id, status)} to have been "
                         f"scheduled; jobs of that type: {seen}")


def assert_not_scheduled(jt: JobTable, job_type: str, data: Any = _UNSET, *,
                         user_id: int | None = None, status: str | None = None) -> None:
    """Assert that no job of ``job_type`` (with ``data``, for ``user_id``, in
    ``status``, when given) was scheduled."""
    _rows, found = _matching(jt, job_type, data, user_id, status)
    if found:
        raise AssertionError(f"expected no {_what(job_type, data, user_id, status)[2:]}, "
                             f"found: {'; '.join(_describe(r) for r in found[:10])}")

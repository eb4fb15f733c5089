"""Running one job: look it up, call ``run(params)`` under a timeout, judge the result.

Shared by the worker and by the isolated child process that runs suspect jobs.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import time
import traceback
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from jobtable import hooks, logs, rules
from jobtable.errors import ConfigError, JobFailed
from jobtable.model import JobParams, WorkerJob, nesting_problem, unstorable_text
from jobtable.timeutil import utcnow

if TYPE_CHECKING:
    from jobtable.client import JobTable
    from jobtable.registry import JobType

_JOB_LOGS = logging.getLogger("jobtable.job")


@dataclass(frozen=True, slots=True)
class RunResult:
    """How one run ended. ``retry`` is False when a retry must not be scheduled;
    ``release`` gives the job back, pending again, instead of finishing it."""

    success: bool
    result: Any
    retry: bool = True
    release: bool = False


def job_logger(job: WorkerJob) -> logging.Logger:
    """A logger named after the job, e.g. ``job[42-send_report]``.

    Built outside the logging manager's cache so that a long-running worker does
    not keep one logger per job forever; it propagates to ``jobtable.job``.
    """
    name = f"job[{job.id}-{job.type}]" + (" (cron)" if job.is_cron else "")
    logger = logging.Logger(name)
    logger.parent = _JOB_LOGS
    return logger


def load_app_factory(spec: str | None) -> Any:
    """Import the ``package.module:factory`` named by ``spec``; None when no spec."""
    import importlib

    from jobtable.errors import ConfigError

    if not spec:
        return None
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"app {spec!r} must look like 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import app module {module_name!r}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"app factory {spec!r} is not a callable in {module_name!r}")
    return factory


async def bootstrap_app(spec: str | None, jobtable: JobTable) -> Any:
    """Call the app factory once (sync or async); without one, the app is the
    ``JobTable`` itself, so jobs can always schedule jobs."""
    import inspect

    factory = load_app_factory(spec)
    if factory is None:
        return jobtable
    app = factory()
    if inspect.isawaitable(app):
        app = await app
    return app


def describe_failure(exc: BaseException) -> dict[str, Any]:
    """The ``result`` of a failed job: error message, exception class, traceback."""
    return {
        "error": _storable(_message(exc)),
        "exception": type(exc).__name__,
        "traceback": _storable("".join(traceback.format_exception(exc))),
    }


def _message(exc: BaseException) -> str:
    # A job's exception may fail to print; its row must be failed all the same.
    try:
        return str(exc) or type(exc).__name__
    except Exception:
        return f"{type(exc).__name__} (its message could not be printed)"


def _storable(text: str) -> str:
    # An error message may carry a NUL or undecodable bytes, which jsonb refuses.
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")


def _json_problem(value: Any) -> str | None:
    deep = nesting_problem(value)
    if deep:
        return f"{type(value).__name__} result {deep}"
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        return f"{type(value).__name__} result is not JSON-serialisable: {exc}"
    problem = unstorable_text(value)
    if problem:
        return (f"{type(value).__name__} result contains {problem}, which the database "
                "cannot store in JSON")
    return None


def job_timeout(jobtable: JobTable, job_type: str, cap: timedelta) -> float:
    """Seconds a job of this type may run: its module's TIMEOUT, at most ``cap``."""
    jt = jobtable.registry.get(job_type)
    limit = cap
    if jt is not None and jt.timeout is not None and jt.timeout < limit:
        limit = jt.timeout
    return max(0.001, limit.total_seconds())


async def run_job(jobtable: JobTable, app: Any, job: WorkerJob, executor: Executor,
                  timeout: float, grace: float) -> RunResult:
    """Run ``job`` once in this process and describe how it ended: the middleware's
    ``around`` hooks wrap the run, the outcome hooks follow it (``jobtable.hooks``)."""
    try:  # first: a middleware may prepare the process for the job modules (Django)
        middleware = hooks.middleware_for(jobtable.settings)
    except ConfigError as exc:
        return RunResult(False, {"error": str(exc), "exception": "ConfigError"})
    jt = jobtable.registry.get(job.type)
    if jt is None:
        return RunResult(False, {"error": f"unknown job type {job.type!r}; known job types: "
                                          f"{', '.join(jobtable.registry.names)}",
                                 "exception": "UnknownJobTypeError"})
    if jt.error is not None or jt.run is None:
        return RunResult(False, {"error": f"job type {job.type!r} cannot be loaded: {jt.error}",
                                 "exception": "ImportError"})
    logger = job_logger(job)
    params = JobParams(app=app, log=logger, job=job, jobtable=jobtable)
    started = time.monotonic()
    logger.debug("started")
    token = logs.enter_job(job.id, job.type)
    try:
        return await _run_with_hooks(jt, job, params, middleware, executor, timeout, grace,
                                     started)
    finally:
        logs.leave_job(token)


async def _run_with_hooks(jt: JobType, job: WorkerJob, params: JobParams[Any],
                          middleware: tuple[Any, ...], executor: Executor, timeout: float,
                          grace: float, started: float) -> RunResult:
    run = jt.run
    assert run is not None
    logger = params.log

    async def call() -> Any:
        if jt.is_async:
            return await run(params)
        ctx = contextvars.copy_context()
        job_call: Callable[[], Any] = functools.partial(ctx.run, run, params)
        return await asyncio.get_running_loop().run_in_executor(executor, job_call)

    error: BaseException
    budget = None  # the outcome hooks' time: see hooks.hook_budget
    try:
        async with asyncio.timeout(timeout) as deadline:
            value = await hooks.run_around(params, middleware, call, executor)
    except TimeoutError as exc:
        if deadline.expired():
            logger.error("timed out after %.3gs", timeout)
            outcome = RunResult(False, {"error": f"Job timed out after {timeout:.3g}s",
                                        "exception": "TimeoutError"})
            error = JobFailed(outcome.result["error"], "TimeoutError")
        else:
            outcome, error = RunResult(False, describe_failure(exc)), exc
    except asyncio.CancelledError:
        logger.error("interrupted by worker shutdown")
        outcome = RunResult(False, {"error": "Job interrupted: the worker shut down before it "
                                             f"finished (grace period {grace:g}s)",
                                    "exception": "WorkerShutdown"})
        error = JobFailed(outcome.result["error"], "WorkerShutdown")
        budget = min(1.0, timeout)  # the worker is stopping: do not hold it up
    except (Exception, SystemExit) as exc:
        # ERROR with the exception, so that error trackers (Sentry's logging
        # integration) and log aggregators see the failure and its traceback.
        logger.error("failed: %s: %s", type(exc).__name__, _message(exc), exc_info=exc)
        outcome, error = RunResult(False, describe_failure(exc)), exc
    else:
        problem = _json_problem(value)
        if problem:
            logger.error("%s", problem)
            outcome = RunResult(False, {"error": problem, "exception": "InvalidDataError"})
            error = JobFailed(problem, "InvalidDataError")
        else:
            logger.debug("succeeded in %.3fs", time.monotonic() - started)
            outcome = RunResult(True, value)
    if budget is None:
        budget = hooks.hook_budget(timeout, time.monotonic() - started)
    owners = (jt.module, *middleware)
    if outcome.success:
        await hooks.fire("on_success", params, outcome.result, owners, executor, budget)
    else:
        await fire_failure_hooks(job, outcome.retry, params, error, owners, executor, budget)
    return outcome


async def fire_failure_hooks(job: WorkerJob, retry: bool, params: JobParams[Any],
                             error: BaseException, owners: tuple[Any, ...],
                             executor: Executor, budget: float) -> None:
    """``on_failure``, then ``on_exhausted`` when the job retries on failure but no retry
    will follow (its retries are used up, or it was given up for good)."""
    await hooks.fire("on_failure", params, error, owners, executor, budget)
    if job.auto_reschedule_on_failure and not retry_follows(job, retry):
        await hooks.fire("on_exhausted", params, error, owners, executor, budget)


def retry_follows(job: WorkerJob, retry: bool) -> bool:
    """Whether a failure of ``job`` is followed by a retry row."""
    follow = rules.follow_up(job, False, utcnow(), retry=retry)
    return follow is not None and follow.retry_count > job.retry_count


async def crash_hooks(jobtable: JobTable, app: Any, job: WorkerJob, result: RunResult,
                      executor: Executor, timeout: float) -> None:
    """The failure hooks of a job whose isolated process crashed on its last attempt, run
    by the worker (the process died before it could run them); nothing otherwise."""
    if (result.success or result.release or not isinstance(result.result, dict)
            or result.result.get("exception") != "WorkerCrash"):
        return
    jt = jobtable.registry.get(job.type)
    if jt is None or jt.module is None:
        return
    try:
        middleware = hooks.middleware_for(jobtable.settings)
    except ConfigError:
        return
    params = JobParams(app=app, log=job_logger(job), job=job, jobtable=jobtable)
    error = JobFailed(str(result.result.get("error")), "WorkerCrash")
    await fire_failure_hooks(job, result.retry, params, error, (jt.module, *middleware),
                             executor, hooks.hook_budget(timeout, timeout))

"""Running one job: look it up, call ``run(params)`` under a timeout, judge the result.

Shared by the worker and by the isolated child process that runs suspect jobs.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import json
import logging
import math
import threading
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
from jobtable.signals import Discard, JobSignal, Retry, Snooze
from jobtable.timeutil import utcnow

if TYPE_CHECKING:
    from jobtable.client import JobTable
    from jobtable.registry import JobType

_JOB_LOGS = logging.getLogger("jobtable.job")


@dataclass(frozen=True, slots=True)
class RunResult:
    """How one run ended. ``retry`` is False when a retry must not be scheduled;
    ``release`` gives the job back, pending again, instead of finishing it; ``crashed``
    charges the job a crash (it crashed its process running alone).

    ``signal`` tells what the job asked for: ``retry``, ``discard`` or ``snooze`` (it
    raised ``Retry``, ``Discard`` or ``Snooze``; ``after`` in seconds), or
    ``cancelled`` (cancelled by request while it ran; ``returned``: ``result`` is what
    a plain ``def`` returned after seeing the request).
    """

    success: bool
    result: Any
    retry: bool = True
    release: bool = False
    signal: str | None = None
    after: float | None = None
    returned: bool = False
    crashed: bool = False


def job_logger(job: WorkerJob) -> logging.Logger:
    """A logger named after the job, e.g. ``job[42-send_report]``.

    Built outside the logging manager's cache so that a long-running worker does
    not keep one logger per job forever; it propagates to ``jobtable.job``.
    """
    name = f"job[{job.id}-{job.type}]" + (" (cron)" if job.is_cron else "")
    logger = logging.Logger(name)
    logger.parent = _JOB_LOGS
    return logger


_SUCCEEDED_NONE = RunResult(True, None)  # frozen: one serves every run that returns None


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
    kind = type(value)
    if value is None or kind is bool or kind is int:
        return None  # what most jobs return: nothing to check
    if kind is str:
        problem = unstorable_text(value)
        return (None if problem is None else f"str result contains {problem}, which the "
                "database cannot store in JSON")
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


def _signalled(exc: JobSignal) -> RunResult:
    """The run result of a job that raised ``Retry``, ``Discard`` or ``Snooze``."""
    if isinstance(exc, Snooze):
        return RunResult(False, None, signal="snooze", after=exc.after.total_seconds())
    failure = describe_failure(exc)
    if isinstance(exc, Retry):
        after = None if exc.after is None else exc.after.total_seconds()
        return RunResult(False, failure, signal="retry", after=after)
    if isinstance(exc, Discard):
        return RunResult(False, {**failure, "error": _storable(exc.reason)}, signal="discard")
    return RunResult(False, failure)


class Deadlines:
    """The timeouts of the jobs running on one event loop, kept by one timer.

    ``asyncio.timeout()`` per job makes a timer handle, pushes it on the loop's heap and
    cancels it again for every job; here a job's deadline is an entry of a dict and the
    one timer is moved only when a job's deadline comes before every other. When it
    fires, each job past its deadline has its task cancelled, which ``leave`` then
    reports, as ``asyncio.timeout()`` does, so that the caller can tell a timeout from
    any other cancellation.
    """

    def __init__(self) -> None:
        self._due: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._timer: asyncio.TimerHandle | None = None
        self._at = math.inf

    def enter(self, task: asyncio.Task[Any], seconds: float) -> None:
        """Cancel ``task`` if it has not called ``leave`` within ``seconds``."""
        loop = task.get_loop()
        at = loop.time() + seconds
        self._due[task] = at
        if at < self._at:
            if self._timer is not None:
                self._timer.cancel()
            self._at = at
            self._timer = loop.call_at(at, self._fire, loop)

    def leave(self, task: asyncio.Task[Any]) -> bool:
        """Stop watching ``task``; True when its deadline passed (its task was cancelled
        for it)."""
        if self._due.pop(task, None) is not None:
            return False
        if task in self._expired:
            self._expired.discard(task)
            return True
        return False

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        self._timer, self._at = None, math.inf
        nxt = math.inf
        for task, at in list(self._due.items()):
            if at <= now:
                del self._due[task]
                self._expired.add(task)
                task.cancel()
            elif at < nxt:
                nxt = at
        if nxt < self._at:
            self._at = nxt
            self._timer = loop.call_at(nxt, self._fire, loop)


async def run_job(jobtable: JobTable, app: Any, job: WorkerJob, executor: Executor,
                  timeout: float, grace: float,
                  cancelled: threading.Event | None = None, *,
                  deadlines: Deadlines | None = None) -> RunResult:
    """Run ``job`` once in this process and describe how it ended: the middleware's
    ``around`` hooks wrap the run, the outcome hooks follow it (``jobtable.hooks``).

    ``cancelled`` is the job's ``params.cancelled``: once it is set, the run ends
    cancelled however it ends (an ``async def`` is also cancelled by the caller).
    ``deadlines`` keeps the run's timeout (a worker shares one among its jobs).
    """
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
    if cancelled is None:
        params = JobParams(app=app, log=logger, job=job, jobtable=jobtable)
    else:
        params = JobParams(app=app, log=logger, job=job, jobtable=jobtable,
                           cancelled=cancelled)
        if cancelled.is_set():
            return _cancelled(logger)
    started = time.monotonic()
    if _JOB_LOGS.isEnabledFor(logging.DEBUG):  # the job's logger has no level of its own
        logger.debug("started")
    token = logs.enter_job(job.id, job.type)
    try:
        return await _run_with_hooks(jt, job, params, middleware, executor, timeout, grace,
                                     started, deadlines or Deadlines())
    finally:
        logs.leave_job(token)


async def _run_with_hooks(jt: JobType, job: WorkerJob, params: JobParams[Any],
                          middleware: tuple[Any, ...], executor: Executor, timeout: float,
                          grace: float, started: float, deadlines: Deadlines) -> RunResult:
    run = jt.run
    assert run is not None
    logger = params.log
    wrapped = bool(middleware) and bool(hooks.arounds(middleware))

    async def call() -> Any:
        if jt.is_async:
            return await run(params)
        ctx = contextvars.copy_context()
        job_call: Callable[[], Any] = functools.partial(ctx.run, run, params)
        return await asyncio.get_running_loop().run_in_executor(executor, job_call)

    error: BaseException
    budget = None  # the outcome hooks' time: see hooks.hook_budget
    stop = params.cancelled  # set by a cancel request while the job runs
    task = asyncio.current_task()
    assert task is not None
    cancelling = task.cancelling()
    deadlines.enter(task, timeout)
    try:
        try:
            if wrapped:
                value = await hooks.run_around(params, middleware, call, executor)
            elif jt.is_async:
                value = await run(params)
            else:
                value = await call()
        finally:
            timed_out = deadlines.leave(task)
        if timed_out:
            task.uncancel()  # the job returned all the same: its result stands
    except asyncio.CancelledError:
        if timed_out and task.uncancel() <= cancelling:
            # Cancelled by its deadline alone (as asyncio.timeout() tells it).
            if stop.is_set():
                outcome, error = _cancelled(logger), _cancel_error()
            else:
                logger.error("timed out after %.3gs", timeout)
                outcome = RunResult(False, {"error": f"Job timed out after {timeout:.3g}s",
                                            "exception": "TimeoutError"})
                error = JobFailed(outcome.result["error"], "TimeoutError")
        elif stop.is_set():
            outcome, error = _cancelled(logger), _cancel_error()
            budget = min(1.0, timeout)  # the worker is stopping the job: do not hold it up
        else:
            logger.error("interrupted by worker shutdown")
            outcome = RunResult(False, {"error": "Job interrupted: the worker shut down "
                                                 f"before it finished (grace period {grace:g}s)",
                                        "exception": "WorkerShutdown"})
            error = JobFailed(outcome.result["error"], "WorkerShutdown")
            budget = min(1.0, timeout)
    except (Exception, SystemExit) as exc:
        if stop.is_set():
            outcome, error = _cancelled(logger), _cancel_error()
        elif isinstance(exc, JobSignal):
            logger.info("%s: %s", type(exc).__name__, _message(exc))
            outcome, error = _signalled(exc), exc
        else:
            # ERROR with the exception, so that error trackers (Sentry's logging
            # integration) and log aggregators see the failure and its traceback.
            logger.error("failed: %s: %s", type(exc).__name__, _message(exc), exc_info=exc)
            outcome, error = RunResult(False, describe_failure(exc)), exc
    else:
        problem = _json_problem(value)
        if stop.is_set():
            logger.warning("cancelled by request; it returned after seeing the request")
            outcome = RunResult(False, None if problem else value, signal="cancelled",
                                returned=not problem)
            error = _cancel_error()
        elif problem:
            logger.error("%s", problem)
            outcome = RunResult(False, {"error": problem, "exception": "InvalidDataError"})
            error = JobFailed(problem, "InvalidDataError")
        else:
            if _JOB_LOGS.isEnabledFor(logging.DEBUG):
                logger.debug("succeeded in %.3fs", time.monotonic() - started)
            outcome = _SUCCEEDED_NONE if value is None else RunResult(True, value)
            owners = (jt.module, *middleware)
            if hooks.defined("on_success", owners):
                await hooks.fire("on_success", params, outcome.result, owners, executor,
                                 hooks.hook_budget(timeout, time.monotonic() - started))
            return outcome
    if budget is None:
        budget = hooks.hook_budget(timeout, time.monotonic() - started)
    owners = (jt.module, *middleware)
    if outcome.signal != "snooze":  # a snooze is not a failure
        await fire_failure_hooks(job, outcome, params, error, owners, executor, budget)
    return outcome


def _cancel_error() -> JobFailed:
    return JobFailed(rules.CANCELLED_WHILE_RUNNING, "JobCancelled")


def _cancelled(logger: logging.Logger) -> RunResult:
    logger.warning("cancelled by request while running")
    return RunResult(False, None, signal="cancelled")


async def fire_failure_hooks(job: WorkerJob, outcome: RunResult | bool, params: JobParams[Any],
                             error: BaseException, owners: tuple[Any, ...],
                             executor: Executor, budget: float) -> None:
    """``on_failure``, then ``on_discard`` when the job raised ``Discard``, or
    ``on_exhausted`` when a retry was wanted but none will follow (its retries are used
    up, or it was given up for good). A cancelled run gets ``on_failure`` only.
    ``outcome`` may be the run result, or only whether a retry is allowed."""
    await hooks.fire("on_failure", params, error, owners, executor, budget)
    run = outcome if isinstance(outcome, RunResult) else RunResult(False, None, retry=outcome)
    if run.signal == "discard":
        await hooks.fire("on_discard", params, error, owners, executor, budget)
    elif run.signal != "cancelled" and exhausted(job, run):
        await hooks.fire("on_exhausted", params, error, owners, executor, budget)


def exhausted(job: WorkerJob, run: RunResult) -> bool:
    """Whether a failed run wanted a retry (auto-reschedule, or ``Retry``) and none
    follows: its retries are used up, or it was given up for good."""
    forced = run.signal == "retry"
    if not (forced or job.auto_reschedule_on_failure):
        return False
    return not retry_follows(job, run.retry, forced=forced)


def retry_follows(job: WorkerJob, retry: bool, *, forced: bool = False) -> bool:
    """Whether a failure of ``job`` is followed by a retry row."""
    follow = rules.follow_up(job, False, utcnow(), retry=retry, force=forced)
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

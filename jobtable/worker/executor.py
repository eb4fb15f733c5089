"""The executor: runs each claimed job as a task (in this process, or in an isolated child
process when it is a suspect), gives crashed isolated runs back, and hands every other
outcome to the completer."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import threading
from collections.abc import Callable
from concurrent.futures import Executor as _Executor
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta
from typing import Any, TypeVar

from jobtable import rules
from jobtable.client import JobTable
from jobtable.model import CancelFlag, Ending, Outcome, WorkerJob
from jobtable.timeutil import utcnow
from jobtable.worker.execution import (
    Deadlines,
    RunResult,
    crash_hooks,
    describe_failure,
    job_timeout,
    run_job,
)
from jobtable.worker.shared import Shared

log = logging.getLogger("jobtable.worker")
T = TypeVar("T")


class _JobThreads(_Executor):
    """A thread pool for plain-``def`` jobs that knows how many are running."""

    def __init__(self, size: int) -> None:
        self._pool = ThreadPoolExecutor(size, thread_name_prefix="jobtable-job")
        self._busy = 0
        self._idle = threading.Condition()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        def tracked() -> T:
            with self._idle:
                self._busy += 1
            try:
                return fn(*args, **kwargs)
            finally:
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()

        return self._pool.submit(tracked)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait=wait, cancel_futures=cancel_futures)

    def still_running(self, within: float) -> int:
        """Jobs still running in threads after waiting up to ``within`` seconds."""
        with self._idle:
            self._idle.wait_for(lambda: self._busy == 0, within)
            return self._busy


class JobExecutor:
    """Runs jobs as tasks; ``stop()`` gives running jobs the grace period, then cancels."""

    def __init__(self, jobtable: JobTable, shared: Shared, app: Any,
                 report: Callable[[Outcome], None]) -> None:
        self.jt = jobtable
        self.settings = jobtable.settings
        self.shared = shared
        self.app = app
        self.report = report
        self.running: dict[int, asyncio.Task[None]] = {}
        self.tokens: dict[int, int] = {}  # running job id -> its claim's token
        self._cancel_events: dict[int, threading.Event] = {}
        self._interruptible: set[int] = set()  # async or isolated: cancel their task
        self.on_loop: set[int] = set()  # async jobs running on this loop
        self._isolated_slots: asyncio.Semaphore | None = None
        self.forced = False
        self.lingering = 0
        self._threads = _JobThreads(shared.concurrency)
        stale = self.settings.stale_limit
        self._max_timeout = stale - min(stale * 0.1, timedelta(seconds=60))
        self._grace = self.settings.grace_period.total_seconds()
        self._deadlines = Deadlines()
        self._timeouts: dict[str, float] = {}  # job type -> its timeout (seconds)

    async def start(self) -> None:
        """Nothing to start: jobs are started one by one with ``run``."""

    def run(self, job: WorkerJob) -> None:
        """Start running a claimed job."""
        self.shared.stats.claimed += 1
        self.shared.held.add(job.id)
        self.tokens[job.id] = job.attempts
        self._cancel_events[job.id] = CancelFlag()
        task = asyncio.create_task(self._execute(job), name=f"job-{job.id}")
        self.running[job.id] = task
        task.add_done_callback(functools.partial(self._finished_task, job.id))

    def cancel(self, job_id: int) -> bool:
        """Stop a running job on request: ``params.cancelled`` is set, and an
        ``async def`` job (or an isolated child) is interrupted. False when this worker
        is not running it, or was already stopping it."""
        event = self._cancel_events.get(job_id)
        if event is None or event.is_set():
            return False
        event.set()
        log.warning("job %d: cancel requested; stopping it", job_id)
        task = self.running.get(job_id)
        if task is not None and job_id in self._interruptible:
            task.cancel()
        return True

    def force(self) -> None:
        """Interrupt every running job now."""
        self.forced = True
        for task in self.running.values():
            task.cancel()

    async def stop(self) -> None:
        """Wait up to the grace period for running jobs, cancel the rest, let go of the
        threads; ``lingering`` counts plain-``def`` jobs that are still running."""
        if self.running:
            tasks = list(self.running.values())
            grace = self.settings.grace_period.total_seconds()
            if not self.forced:
                log.info("waiting up to %gs for %d running jobs", grace, len(tasks))
                await asyncio.wait(tasks, timeout=grace)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def release_threads(self) -> None:
        """Shut the job threads down; idle ones exit, those still running a job stay."""
        self._threads.shutdown(wait=False, cancel_futures=True)
        self.lingering = self._threads.still_running(0.2)

    def _finished_task(self, job_id: int, _task: asyncio.Task[None]) -> None:
        self.running.pop(job_id, None)
        self.tokens.pop(job_id, None)
        self._cancel_events.pop(job_id, None)
        self._interruptible.discard(job_id)
        self.shared.slot_free.set()

    async def _execute(self, job: WorkerJob) -> None:
        try:
            run = await self._run_job(job)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Whatever went wrong outside the job's own code, the row is finished with
            # the reason rather than left running until the stale limit.
            log.exception("job %d could not be run", job.id)
            run = RunResult(False, {**describe_failure(exc),
                                    "error": f"the worker could not run job {job.id}: "
                                             f"{type(exc).__name__}: {exc}"[:2000]})
        if run.release:
            await self._release(job, crashed=run.crashed)
            return
        if run.crashed:
            await self._retrying("charge a crash", self.shared.store.charge_crash, job.id,
                                 job.attempts)
        try:
            outcome = self.outcome(job, run)
        except Exception as exc:
            outcome = self._chain_broken(job, run, exc)
        if outcome.snooze_until is None:
            if outcome.success:
                self.shared.stats.succeeded += 1
            else:
                self.shared.stats.failed += 1
        self.report(outcome)

    @staticmethod
    def _chain_broken(job: WorkerJob, run: RunResult, exc: Exception) -> Outcome:
        """The outcome of a run whose follow-up cannot be built (an invalid
        cron_schedule or cron_timezone): the run keeps its own outcome, the chain stops
        here and its result says why (``chain_error``)."""
        problem = f"the chain cannot continue: {type(exc).__name__}: {exc}"[:2000]
        log.error("job %d: %s", job.id, problem)
        result = run.result
        result = ({**result, "chain_error": problem} if isinstance(result, dict)
                  else {"result": result, "chain_error": problem})
        return Outcome(job=job, success=run.success, result=result,
                       ending=Ending.SUCCEEDED if run.success else Ending.FAILED)

    @staticmethod
    def outcome(job: WorkerJob, run: RunResult) -> Outcome:
        """The outcome to write for a run: its ending, result and follow-up row."""
        now = utcnow()
        if run.success and run.signal is None:
            return rules.finish(job, True, run.result, now)
        after = None if run.after is None else timedelta(seconds=run.after)
        if run.signal == "cancelled":
            return rules.cancelled(job, now, returned=run.result, has_returned=run.returned)
        if run.signal == "snooze" and after is not None:
            return rules.snoozed(job, now, after)
        jitter = random.uniform(-rules.BACKOFF_JITTER, rules.BACKOFF_JITTER)
        return rules.finish(job, run.success, run.result, now, retry=run.retry,
                            force=run.signal == "retry", after=after,
                            discarded=run.signal == "discard", jitter=jitter)

    async def _release(self, job: WorkerJob, *, crashed: bool = False) -> None:
        """Give a claimed job back: pending again, its attempt counted (and a crash,
        when it crashed running alone)."""
        await self._retrying("release", functools.partial(
            self.shared.store.release_claim, crashed=crashed), job.id, job.attempts)
        self.shared.held.discard(job.id)
        self.shared.slot_free.set()

    async def _retrying(self, what: str, call: Callable[..., Any], *args: Any) -> None:
        delay = 0.05
        while True:
            try:
                await asyncio.to_thread(call, *args)
                return
            except Exception as exc:
                await self.shared.database_trouble(what, exc, delay)
                delay = min(delay * 2, 5.0)

    def _timeout(self, job_type: str) -> float:
        timeout = self._timeouts.get(job_type)
        if timeout is None:
            timeout = job_timeout(self.jt, job_type, self._max_timeout)
            if job_type in self.jt.registry:  # an unknown type's rows are not cached
                self._timeouts[job_type] = timeout
        return timeout

    async def _run_job(self, job: WorkerJob) -> RunResult:
        timeout = self._timeout(job.type)
        grace = self._grace
        cancelled = self._cancel_events[job.id]
        if job.attempts > 1 and self.settings.isolate_suspects:
            # Imported here: only a worker that meets a suspect needs it.
            from jobtable.worker.isolated import isolated_slots, run_isolated

            if self._isolated_slots is None:
                self._isolated_slots = asyncio.Semaphore(isolated_slots())

            # Claimed before and never finished: it may be what killed a worker.
            self._interruptible.add(job.id)
            try:
                result = await run_isolated(
                    self.settings, job, timeout, grace,
                    last_attempt=job.crashes + 1 >= self.settings.max_attempts,
                    slots=self._isolated_slots)
            except asyncio.CancelledError:
                # The child was stopped (SIGTERM, then SIGKILL after the grace).
                if cancelled.is_set():
                    return RunResult(False, None, signal="cancelled")
                raise
            # A child that crashed could not run the failure hooks: run them here.
            await crash_hooks(self.jt, self.app, job, result, self._threads, timeout)
            return result
        job_type = self.jt.registry.get(job.type)
        if job_type is None or not job_type.is_async:
            return await run_job(self.jt, self.app, job, self._threads, timeout, grace,
                                 cancelled, deadlines=self._deadlines)
        self._interruptible.add(job.id)
        self.on_loop.add(job.id)
        try:
            return await run_job(self.jt, self.app, job, self._threads, timeout, grace,
                                 cancelled, deadlines=self._deadlines)
        finally:
            self.on_loop.discard(job.id)

    def jobs_on_loop(self) -> list[int]:
        """Ids of the ``async def`` jobs running on this worker's event loop (safe to
        call from another thread)."""
        for _ in range(5):
            try:
                return sorted(self.on_loop)
            except RuntimeError:  # changed while copied; try again
                continue
        return []

"""The worker: claim due jobs up to free capacity, run them, write outcomes in batches.

One ``Worker`` per process. Idle, it sleeps until the first of: a wake-up (a
PostgreSQL NOTIFY, an SQLite commit by another process, a job scheduled in this
process), the next known ``due``, the poll interval, or a stop request.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import random
import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from jobtable import scheduling
from jobtable.client import JobTable
from jobtable.errors import ConfigError
from jobtable.execution import RunResult, bootstrap_app, job_timeout, run_job
from jobtable.isolated import run_isolated
from jobtable.model import Outcome, WorkerJob, WorkerJobConfig
from jobtable.timeutil import utcnow

log = logging.getLogger("jobtable.worker")
_JOB_LOGS = logging.getLogger("jobtable.job")
CLEANUP_JOB = "remove_old_worker_jobs"
_COMPLETION_BATCH = 500


def is_transient(exc: BaseException) -> bool:
    """True for errors that retrying can cure: a lost connection, a busy database."""
    if isinstance(exc, (ConnectionError, TimeoutError, OSError, sqlite3.OperationalError)):
        return True
    try:
        import psycopg
        import psycopg_pool
    except ImportError:  # pragma: no cover - both are dependencies
        return False
    return isinstance(exc, (psycopg.OperationalError, psycopg_pool.PoolTimeout,
                            psycopg.errors.SerializationFailure,
                            psycopg.errors.DeadlockDetected))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class WorkerStats:
    """Counters of one worker, for logs and tests."""

    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    rejected: int = 0


class Worker:
    """Runs jobs from a ``JobTable`` until stopped (or, with ``burst``, until none is due)."""

    def __init__(self, jobtable: JobTable, *, concurrency: int | None = None,
                 burst: bool = False, app: Any = None, worker_id: str | None = None,
                 schedule_builtins: bool = True) -> None:
        self.jt = jobtable
        self.settings = jobtable.settings
        self.store = jobtable.store
        self.concurrency = concurrency or self.settings.concurrency
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {self.concurrency}")
        self.burst = burst
        self.id = worker_id or f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.app = app
        self.schedule_builtins = schedule_builtins
        self.stats = WorkerStats()
        self._running: dict[int, asyncio.Task[None]] = {}
        self._held: set[int] = set()  # claimed and not yet written back
        self._outcomes: asyncio.Queue[Outcome] = asyncio.Queue()
        self._completing = 0
        self._completed_batches = 0  # lets a burst claim tell if a write raced with it
        self._wake = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._stopping = asyncio.Event()
        self._forced = False
        self._executor = ThreadPoolExecutor(self.concurrency, thread_name_prefix="jobtable-job")
        self._listening = False
        self._claim_uncertain = False
        self._db_down_since: float | None = None
        self._lost_threads = 0
        stale = self.settings.stale_limit
        self._max_timeout = stale - min(stale * 0.1, timedelta(seconds=60))

    # -- public --------------------------------------------------------------

    def request_stop(self) -> None:
        """Stop claiming; running jobs get the grace period. A second call forces."""
        if self._stopping.is_set():
            if not self._forced:
                log.warning("second stop request: interrupting running jobs now")
            self._forced = True
            for task in self._running.values():
                task.cancel()
        self._stopping.set()
        self._wake.set()

    @property
    def lingering_threads(self) -> int:
        """Plain-``def`` jobs still running in threads after shutdown."""
        return self._lost_threads

    async def run(self) -> None:
        """Start up, run until stopped, shut down gracefully."""
        loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._startup)
        self.app = await self._bootstrap_app()
        self.jt._subscribe(self._wake)
        helpers = [asyncio.create_task(self._heartbeat_loop(), name="heartbeat")]
        completer = asyncio.create_task(self._complete_loop(), name="completer")
        if self.store.dialect == "postgres":
            helpers.append(asyncio.create_task(self._listen_loop(), name="listener"))
        elif self.store.dialect == "sqlite":
            helpers.append(asyncio.create_task(self._sqlite_watch_loop(), name="watcher"))
        log.info("worker %s started: concurrency %d on %s%s", self.id, self.concurrency,
                 self.store.dialect, " (burst)" if self.burst else "")
        try:
            await self._claim_loop()
        finally:
            await self._drain_running()
            await self._flush_outcomes(completer)
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            self.jt._unsubscribe(self._wake)
            try:
                await asyncio.to_thread(self.store.unregister_worker, self.id)
            except Exception as exc:
                log.warning("could not unregister worker %s: %s", self.id, exc)
            threads = list(self._executor._threads)
            self._executor.shutdown(wait=False, cancel_futures=True)
            # Idle pool threads exit on shutdown; only those still running a job stay.
            deadline = time.monotonic() + 0.2
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            self._lost_threads = len([t for t in threads if t.is_alive()])
            del loop
            log.info("worker %s stopped: %d succeeded, %d failed", self.id,
                     self.stats.succeeded, self.stats.failed)

    # -- start-up --------------------------------------------------------------

    def _startup(self) -> None:
        if self.settings.auto_migrate:
            self.jt.migrate()
        for broken in self.jt.registry.load_all():
            log.error("job type %r cannot be loaded; its jobs will fail: %s",
                      broken.name, broken.error)
        self.store.heartbeat(self.id, self.concurrency, os.getpid())
        if self.schedule_builtins:
            self._ensure_cron_chains()

    def _ensure_cron_chains(self) -> None:
        self.jt.ensure_cron_job(WorkerJobConfig(type=CLEANUP_JOB, user_id=0),
                                self.settings.cleanup_cron)
        declared: dict[str, str] = {}
        for name in self.jt.registry.names:
            jt = self.jt.registry.get(name)
            if jt is None or jt.module is None or jt.cron is None or jt.builtin:
                continue
            try:
                config = WorkerJobConfig(
                    type=name, user_id=0,
                    auto_reschedule_on_failure=bool(
                        jt.declared_setting("AUTO_RESCHEDULE_ON_FAILURE") or False),
                    auto_reschedule_on_failure_delay=jt.declared_setting(
                        "AUTO_RESCHEDULE_ON_FAILURE_DELAY"),
                    remove_delay=jt.declared_setting("REMOVE_DELAY"))
                row = self.jt.ensure_cron_job(config, jt.cron, jt.cron_timezone, declared=True)
            except Exception as exc:
                log.error("job type %r declares CRON %r that cannot be scheduled: %s",
                          name, jt.cron, exc)
                continue
            declared[name] = row.cron_schedule or jt.cron
        stopped = self.store.stop_undeclared_chains(declared)
        if stopped:
            log.info("stopped cron chains no longer declared: rows %s", stopped)

    async def _bootstrap_app(self) -> Any:
        if self.app is not None:
            return self.app
        return await bootstrap_app(self.settings.app, self.jt)

    # -- claiming --------------------------------------------------------------

    async def _claim_loop(self) -> None:
        # Busy, claim in batches: after a full claim wait until a quarter of the slots
        # are free (or a few milliseconds pass) rather than one round trip per slot.
        batch = max(1, self.concurrency // 4)
        while not self._stopping.is_set():
            free = self.concurrency - len(self._running)
            if free <= 0:
                self._slot_free.clear()
                await self._wait(self._slot_free, None)
                continue
            if free < batch and self._running:
                deadline = time.monotonic() + 0.005
                while (self.concurrency - len(self._running) < batch and self._running
                       and time.monotonic() < deadline and not self._stopping.is_set()):
                    self._slot_free.clear()
                    await self._wait(self._slot_free, max(0.0, deadline - time.monotonic()))
                free = self.concurrency - len(self._running)
            self._wake.clear()
            batches_before = self._completed_batches
            try:
                if self._claim_uncertain:
                    released = await asyncio.to_thread(
                        self.store.release_unknown_claims, self.id, set(self._held))
                    if released:
                        log.warning("released jobs %s claimed by a claim whose reply was lost",
                                    released)
                    self._claim_uncertain = False
                jobs = await asyncio.to_thread(self.store.claim, self.id, free,
                                               self.settings.max_attempts)
            except Exception as exc:
                # The claim may have committed without us hearing back: reconcile
                # before claiming again.
                self._claim_uncertain = True
                await self._database_trouble("claim", exc)
                continue
            self._database_ok()
            for job in jobs:
                self._start(job)
            if len(jobs) == free:
                continue
            if self.burst and not jobs:
                # An outcome written while the claim ran may have scheduled a follow-up
                # the claim did not see: claim once more before calling it done.
                if (not self._running and self._outcomes.empty() and not self._completing
                        and self._completed_batches == batches_before):
                    return
                await self._wait(self._slot_free, 0.05)
                continue
            if not jobs:
                await self._wait(self._wake, await self._idle_timeout())

    async def _idle_timeout(self) -> float:
        poll = self.settings.poll_interval.total_seconds()
        if self._listening:
            poll = max(poll, 10.0)  # NOTIFY wakes us; the poll is only a safety net
        try:
            due = await asyncio.to_thread(self.store.next_due)
        except Exception:
            return poll
        if due is None:
            return poll
        return max(0.0, min(poll, (due - utcnow()).total_seconds()))

    async def _wait(self, event: asyncio.Event, timeout: float | None) -> None:
        waiters = [asyncio.ensure_future(event.wait()),
                   asyncio.ensure_future(self._stopping.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    # -- running ---------------------------------------------------------------

    def _start(self, job: WorkerJob) -> None:
        self.stats.claimed += 1
        self._held.add(job.id)
        task = asyncio.create_task(self._execute(job), name=f"job-{job.id}")
        self._running[job.id] = task
        task.add_done_callback(functools.partial(self._finished_task, job.id))

    def _finished_task(self, job_id: int, _task: asyncio.Task[None]) -> None:
        self._running.pop(job_id, None)
        self._slot_free.set()

    async def _execute(self, job: WorkerJob) -> None:
        outcome = await self._run_job(job)
        if outcome.release:
            await self._release(job)
            return
        if outcome.success:
            self.stats.succeeded += 1
        else:
            self.stats.failed += 1
        follow = scheduling.follow_up(job, outcome.success, utcnow(), retry=outcome.retry)
        self._outcomes.put_nowait(Outcome(job=job, success=outcome.success,
                                          result=outcome.result, follow_up=follow))

    async def _release(self, job: WorkerJob) -> None:
        """Give a claimed job back: pending again, its attempt counted."""
        delay = 0.05
        while True:
            try:
                await asyncio.to_thread(self.store.release_claim, job.id, job.attempts)
                break
            except Exception as exc:
                await self._database_trouble("release", exc, delay)
                delay = min(delay * 2, 5.0)
        self._held.discard(job.id)
        self._slot_free.set()

    async def _run_job(self, job: WorkerJob) -> RunResult:
        timeout = job_timeout(self.jt, job.type, self._max_timeout)
        grace = self.settings.grace_period.total_seconds()
        if job.attempts > 1 and self.settings.isolate_suspects:
            # Claimed before and never finished: it may be what killed a worker.
            return await run_isolated(self.settings, job, timeout, grace,
                                      last_attempt=job.attempts >= self.settings.max_attempts)
        return await run_job(self.jt, self.app, job, self._executor, timeout, grace)

    # -- completing ------------------------------------------------------------

    async def _complete_loop(self) -> None:
        while True:
            first = await self._outcomes.get()
            batch = [first]
            while len(batch) < _COMPLETION_BATCH and not self._outcomes.empty():
                batch.append(self._outcomes.get_nowait())
            self._completing = len(batch)
            try:
                await self._write_outcomes(batch)
            finally:
                self._completing = 0
                self._completed_batches += 1
                for _ in batch:
                    self._outcomes.task_done()
                self._slot_free.set()

    async def _write_outcomes(self, batch: list[Outcome]) -> None:
        delay = 0.05
        while True:
            try:
                written = await asyncio.to_thread(self.store.complete, batch)
                break
            except Exception as exc:
                error = exc
            if not is_transient(error):
                # Retrying would stall every later completion: find the outcome the
                # database refuses and record why instead.
                try:
                    written = await self._write_one_by_one(batch)
                    break
                except Exception as exc:
                    error = exc
            await self._database_trouble("complete", error, delay)
            delay = min(delay * 2, 5.0)
        self._database_ok()
        for outcome in batch:
            self._held.discard(outcome.job.id)
            if outcome.job.id not in written:
                self.stats.rejected += 1
                log.warning("late result of job %d (attempt %d) rejected: the job was rescued "
                            "and claimed again, or finished elsewhere", outcome.job.id,
                            outcome.job.attempts)

    async def _write_one_by_one(self, batch: list[Outcome]) -> set[int]:
        written: set[int] = set()
        for outcome in batch:
            try:
                written |= await asyncio.to_thread(self.store.complete, [outcome])
                continue
            except Exception as exc:
                if is_transient(exc):
                    raise
                error = exc
            log.error("the outcome of job %d could not be written (%s); failing the job",
                      outcome.job.id, _first_line(error))
            replacement = Outcome(job=outcome.job, success=False, result={
                "error": f"the job's outcome could not be stored: {_first_line(error)}"[:2000]
                .replace("\x00", "\\x00"),
                "exception": type(error).__name__})
            try:
                written |= await asyncio.to_thread(self.store.complete, [replacement])
            except Exception as exc:
                log.error("job %d left unfinished: %s", outcome.job.id, _first_line(exc))
        return written

    async def _flush_outcomes(self, completer: asyncio.Task[None]) -> None:
        deadline = max(self.settings.grace_period.total_seconds(), 10.0)
        try:
            await asyncio.wait_for(self._outcomes.join(), deadline)
        except TimeoutError:
            log.error("could not write %d job outcomes before stopping; those jobs will be "
                      "rescued and run again", self._outcomes.qsize() + self._completing)
        completer.cancel()
        await asyncio.gather(completer, return_exceptions=True)

    async def _drain_running(self) -> None:
        if not self._running:
            return
        tasks = list(self._running.values())
        grace = self.settings.grace_period.total_seconds()
        if not self._forced:
            log.info("waiting up to %gs for %d running jobs", grace, len(tasks))
            await asyncio.wait(tasks, timeout=grace)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- background loops ---------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        rescue_after = self.settings.rescue_after
        interval = max(0.2, min(5.0, rescue_after.total_seconds() / 3))
        # Rescue only after this worker has reached the database for a whole rescue
        # window without a gap: right after start-up or an outage (even one that merely
        # made our calls wait), other workers' heartbeats may be old only because
        # nobody could write them.
        connected_since: float | None = time.monotonic()
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(interval * random.uniform(0.8, 1.2))
            began = time.monotonic()
            try:
                await asyncio.to_thread(self.store.heartbeat, self.id, self.concurrency,
                                        os.getpid())
            except Exception as exc:
                connected_since = None
                await self._database_trouble("heartbeat", exc)
                continue
            now = time.monotonic()
            if connected_since is None or now - began > interval or now - last_ok > 3 * interval:
                connected_since = now
            last_ok = now
            if now - connected_since < rescue_after.total_seconds():
                continue
            try:
                report = await asyncio.to_thread(self.store.rescue, rescue_after,
                                                 self.settings.max_attempts)
            except Exception as exc:
                await self._database_trouble("rescue", exc, 0)
                continue
            if report.reset:
                log.warning("rescued jobs %s from workers that stopped responding", report.reset)
                self._wake.set()
            if report.failed:
                log.error("gave up on jobs %s after %d attempts", report.failed,
                          self.settings.max_attempts)

    async def _listen_loop(self) -> None:
        import psycopg

        from jobtable.store.postgres import CHANNEL

        delay = 0.1
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.store.url, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self._listening = True
                    self._wake.set()  # catch up on anything scheduled while we were away
                    delay = 0.1
                    async for _ in conn.notifies():
                        self._wake.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._listening:
                    log.warning("lost the LISTEN connection (%s); polling until it is back",
                                _first_line(exc))
                self._listening = False
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 10.0)

    async def _sqlite_watch_loop(self) -> None:
        from jobtable.store.sqlite import SqliteStore

        assert isinstance(self.store, SqliteStore)
        conn = sqlite3.connect(self.store.path, check_same_thread=False)
        try:
            last = None
            while True:
                try:
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                except sqlite3.Error:
                    version = None
                if last is not None and version != last:
                    self._wake.set()
                last = version
                await asyncio.sleep(0.02)
        finally:
            conn.close()

    async def _database_trouble(self, what: str, exc: Exception, delay: float = 0.0) -> None:
        if self._db_down_since is None:
            self._db_down_since = time.monotonic()
            log.error("database error during %s: %s; retrying with backoff", what,
                      _first_line(exc))
        down = time.monotonic() - self._db_down_since
        await asyncio.sleep(delay or min(5.0, 0.1 + down / 4) * random.uniform(0.5, 1.5))

    def _database_ok(self) -> None:
        if self._db_down_since is not None:
            log.warning("database reachable again after %.1fs",
                        time.monotonic() - self._db_down_since)
            self._db_down_since = None


async def run_worker(jobtable: JobTable, *, concurrency: int | None = None,
                     burst: bool = False, install_signals: bool = True) -> Worker:
    """Run one worker in the current event loop; SIGTERM/SIGINT stop it gracefully."""
    import signal

    worker = Worker(jobtable, concurrency=concurrency, burst=burst)
    loop = asyncio.get_running_loop()
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.request_stop)
    try:
        await worker.run()
    finally:
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
    return worker

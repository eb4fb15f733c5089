"""``Worker``: the lifecycle of one worker. It composes the parts, starts them in order,
and on stop lets running jobs finish, flushes their outcomes and stops the rest."""

from __future__ import annotations

import asyncio
import logging
import os
import uuid
from collections.abc import Callable
from typing import Any

from jobtable.client import JobTable
from jobtable.errors import ConfigError
from jobtable.model import WorkerJob
from jobtable.routing import format_queues, parse_queues
from jobtable.worker.canceller import Canceller
from jobtable.worker.completer import Completer
from jobtable.worker.declared import Declared
from jobtable.worker.execution import bootstrap_app
from jobtable.worker.executor import JobExecutor
from jobtable.worker.producer import Producer
from jobtable.worker.rescuer import Rescuer
from jobtable.worker.shared import Shared, WorkerStats

log = logging.getLogger("jobtable.worker")


class Worker:
    """Runs jobs from a ``JobTable`` until stopped (or, with ``burst``, until none is due).

    ``max_jobs`` stops claiming after that many jobs (``limit_reached`` tells); the jobs
    claimed still finish. ``on_claim`` is called with each claimed job before it runs.
    ``queues`` (``{"default": 10, "reports": 2}`` or ``"default=10,reports=2"``; default
    the ``queues`` setting) serves only those queues, each with its own slots; without
    it every queue shares ``concurrency`` slots.
    """

    def __init__(self, jobtable: JobTable, *, concurrency: int | None = None,
                 burst: bool = False, app: Any = None, worker_id: str | None = None,
                 schedule_builtins: bool = True, max_jobs: int | None = None,
                 on_claim: Callable[[WorkerJob], None] | None = None,
                 queues: dict[str, int] | str | None = None) -> None:
        self.jt = jobtable
        self.settings = jobtable.settings
        self.store = jobtable.store
        chosen = queues if queues is not None else self.settings.queues
        self.queues = None if chosen is None else parse_queues(chosen)
        self.concurrency = concurrency or self.settings.concurrency
        if self.queues is not None:
            self.concurrency = sum(self.queues.values())
        if self.concurrency < 1:
            raise ConfigError(f"concurrency must be at least 1, got {self.concurrency}")
        if max_jobs is not None and (isinstance(max_jobs, bool) or not isinstance(max_jobs, int)
                                     or max_jobs < 1):
            raise ConfigError(f"max_jobs must be a positive integer or None, got {max_jobs!r}")
        if on_claim is not None and not callable(on_claim):
            raise ConfigError(f"on_claim must be a callable taking a WorkerJob, got {on_claim!r}")
        self.burst = burst
        self.id = worker_id or f"{os.uname().nodename}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.app = app
        self.schedule_builtins = schedule_builtins
        self.max_jobs = max_jobs
        self.on_claim = on_claim
        self._shared = Shared(worker_id=self.id, concurrency=self.concurrency, store=self.store)
        self.stats: WorkerStats = self._shared.stats
        self._executor: JobExecutor | None = None
        self._producer: Producer | None = None

    def request_stop(self) -> None:
        """Stop claiming; running jobs get the grace period. A second call forces."""
        if self._shared.stopping.is_set() and self._executor is not None:
            if not self._executor.forced:
                log.warning("second stop request: interrupting running jobs now")
            self._executor.force()
        self._shared.stopping.set()
        self._shared.wake.set()

    @property
    def lingering_threads(self) -> int:
        """Plain-``def`` jobs still running in threads after shutdown."""
        return 0 if self._executor is None else self._executor.lingering

    @property
    def limit_reached(self) -> bool:
        """True when the worker stopped because it had claimed ``max_jobs`` jobs."""
        return self._producer is not None and self._producer.limit_reached

    async def run(self) -> None:
        """Start up, run until stopped, shut down gracefully."""
        shared = self._shared
        await Declared(self.jt, shared, schedule_builtins=self.schedule_builtins).start()
        if self.app is None:
            self.app = await bootstrap_app(self.settings.app, self.jt)
        completer = Completer(shared, self.settings.grace_period)
        executor = self._executor = JobExecutor(self.jt, shared, self.app, completer.add)
        wakeups = self.store.wakeups(shared.wake)
        rescuer = Rescuer(shared, self.settings, executor.jobs_on_loop)
        canceller = Canceller(shared, executor, wakeups)
        producer = self._producer = Producer(
            shared, self.settings, executor, completer, wakeups, burst=self.burst,
            max_jobs=self.max_jobs, on_claim=self.on_claim, queues=self.queues,
            limits=self.jt.registry.limits())
        self.jt._subscribe(shared.wake)
        # Claims and completions run in this loop where the store can (PostgreSQL's
        # asyncio pool); the heartbeat and rescue keep a thread and connection of their own.
        await self.store.open_async()
        for part in (rescuer, completer, wakeups, executor, canceller, producer):
            await part.start()
        log.info("worker %s started: concurrency %d on %s%s%s", self.id, self.concurrency,
                 self.store.dialect, " (burst)" if self.burst else "",
                 "" if self.queues is None else f", queues {format_queues(self.queues)}")
        for lim in producer.limits:
            log.info("job type %r: %s", lim.type, lim.describe())
        try:
            await producer.run()
        finally:
            await executor.stop()
            await canceller.stop()
            await completer.stop()
            await rescuer.stop()
            await wakeups.stop()
            await self.store.close_async()
            self.jt._unsubscribe(shared.wake)
            try:
                await asyncio.to_thread(self.store.unregister_worker, self.id)
            except Exception as exc:
                log.warning("could not unregister worker %s: %s", self.id, exc)
            executor.release_threads()
            log.info("worker %s stopped: %d succeeded, %d failed", self.id,
                     self.stats.succeeded, self.stats.failed)


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

"""The producer: claims due jobs up to the free slots and hands them to the executor.

Busy, it claims in batches (it waits for a quarter of the slots, or a few
milliseconds). Idle, it sleeps until the first of: a wake-up, the next known ``due``,
the poll interval, or a stop request. A claim whose reply was lost may have committed:
the next claim first gives back the rows this worker holds without knowing it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from jobtable.model import WorkerJob
from jobtable.settings import Settings
from jobtable.store.base import Wakeups
from jobtable.timeutil import utcnow
from jobtable.worker.completer import Completer
from jobtable.worker.executor import JobExecutor
from jobtable.worker.shared import Shared

log = logging.getLogger("jobtable.worker")


class Producer:
    """The claim loop of one worker; ``run()`` returns when the worker should stop."""

    def __init__(self, shared: Shared, settings: Settings, executor: JobExecutor,
                 completer: Completer, wakeups: Wakeups, *, burst: bool,
                 max_jobs: int | None, on_claim: Callable[[WorkerJob], None] | None) -> None:
        self.shared = shared
        self.settings = settings
        self.executor = executor
        self.completer = completer
        self.wakeups = wakeups
        self.burst = burst
        self.max_jobs = max_jobs
        self.on_claim = on_claim
        self.limit_reached = False
        self._claim_uncertain = False

    async def start(self) -> None:
        """Nothing to start: the worker awaits ``run()``."""

    async def stop(self) -> None:
        """Stop claiming (``run()`` returns soon after)."""
        self.shared.stopping.set()
        self.shared.wake.set()

    def _free(self) -> int:
        free = self.shared.concurrency - len(self.executor.running)
        if self.max_jobs is not None:
            free = min(free, self.max_jobs - self.shared.stats.claimed)
        return free

    async def run(self) -> None:
        """Claim and start jobs until stopped (or, in burst mode, until none is due)."""
        shared = self.shared
        # Busy, claim in batches: after a full claim wait until a quarter of the slots
        # are free (or a few milliseconds pass) rather than one round trip per slot.
        batch = max(1, shared.concurrency // 4)
        while not shared.stopping.is_set():
            free = self._free()
            if free <= 0:
                shared.slot_free.clear()
                await shared.wait(shared.slot_free, None)
                continue
            if free < batch and self.executor.running:
                deadline = time.monotonic() + 0.005
                while (self._free() < batch and self.executor.running
                       and time.monotonic() < deadline and not shared.stopping.is_set()):
                    shared.slot_free.clear()
                    await shared.wait(shared.slot_free, max(0.0, deadline - time.monotonic()))
                free = self._free()
            shared.wake.clear()
            batches_before = self.completer.batches
            try:
                jobs = await self._claim(free)
            except Exception as exc:
                # The claim may have committed without us hearing back: reconcile
                # before claiming again.
                self._claim_uncertain = True
                await shared.database_trouble("claim", exc)
                continue
            shared.database_ok()
            for job in jobs:
                self._start(job)
            if self.max_jobs is not None and shared.stats.claimed >= self.max_jobs:
                self.limit_reached = True
                await self.stop()
                return
            if len(jobs) == free:
                continue
            if self.burst and not jobs:
                # An outcome written while the claim ran may have scheduled a follow-up
                # the claim did not see: claim once more before calling it done.
                if (not self.executor.running and self.completer.idle
                        and self.completer.batches == batches_before):
                    return
                await shared.wait(shared.slot_free, 0.05)
                continue
            if not jobs:
                await shared.wait(shared.wake, await self._idle_timeout())

    async def _claim(self, limit: int) -> list[WorkerJob]:
        store, worker_id = self.shared.store, self.shared.worker_id
        if self._claim_uncertain:
            released = await asyncio.to_thread(store.release_unknown_claims, worker_id,
                                               set(self.shared.held))
            if released:
                log.warning("released jobs %s claimed by a claim whose reply was lost",
                            released)
            self._claim_uncertain = False
        return await asyncio.to_thread(store.claim, worker_id, limit,
                                       self.settings.max_attempts)

    def _start(self, job: WorkerJob) -> None:
        if self.on_claim is not None:
            try:
                self.on_claim(job)
            except Exception:
                log.exception("the on_claim hook failed for job %d", job.id)
        self.executor.run(job)

    async def _idle_timeout(self) -> float:
        poll = self.settings.poll_interval.total_seconds()
        if self.wakeups.listening:
            poll = max(poll, 10.0)  # the database wakes us; the poll is only a safety net
        try:
            due = await asyncio.to_thread(self.shared.store.next_due)
        except Exception:
            return poll
        if due is None:
            return poll
        return max(0.0, min(poll, (due - utcnow()).total_seconds()))

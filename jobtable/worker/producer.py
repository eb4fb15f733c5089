"""The producer: claims due jobs up to the free slots and hands them to the executor.

Busy, it claims in batches (it waits for a quarter of the slots, or a few
milliseconds). Idle, it sleeps until the first of: a wake-up, the next known ``due``,
the poll interval, or a stop request. A claim whose reply was lost may have committed:
the next claim first gives back the rows this worker holds without knowing it.

With ``queues`` (``--queues default=10,reports=2``) each queue has its own slots and is
claimed on its own; without, every queue shares the worker's slots. The flow limits of
the job types (``limits``) travel with each claim, which enforces them. When due jobs
are held back (a paused queue, a limit, a queue this worker does not serve) the producer
waits for a wake-up or the poll interval (at most a second) rather than spinning.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime

from jobtable.model import WorkerJob
from jobtable.routing import TypeLimits
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
                 max_jobs: int | None, on_claim: Callable[[WorkerJob], None] | None,
                 queues: dict[str, int] | None = None,
                 limits: Sequence[TypeLimits] = ()) -> None:
        self.shared = shared
        self.settings = settings
        self.executor = executor
        self.completer = completer
        self.wakeups = wakeups
        self.burst = burst
        self.max_jobs = max_jobs
        self.on_claim = on_claim
        self.queues = queues
        self.limits = list(limits)
        self.limit_reached = False
        self._claim_uncertain = False
        self._queue_of: dict[int, str] = {}  # running job id -> its queue (with queues)
        self._claimed_at: datetime | None = None

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
        if self.queues is not None and free > 0:
            free = sum(self._free_by_queue(free).values())
        return free

    def _free_by_queue(self, free: int) -> dict[str, int]:
        """The free slots of each served queue, in all at most ``free``."""
        assert self.queues is not None
        running = self.executor.running
        for job_id in [i for i in self._queue_of if i not in running]:
            del self._queue_of[job_id]
        busy: dict[str, int] = {}
        for queue in self._queue_of.values():
            busy[queue] = busy.get(queue, 0) + 1
        out = {}
        for queue, slots in self.queues.items():
            take = min(slots - busy.get(queue, 0), free)
            if take > 0:
                out[queue] = take
                free -= take
        return out

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
            released = await store.release_unknown_claims_async(worker_id,
                                                                set(self.shared.held))
            if released:
                log.warning("released jobs %s claimed by a claim whose reply was lost",
                            released)
            self._claim_uncertain = False
        self._claimed_at = utcnow()
        if self.queues is None:
            return await store.claim_async(worker_id, limit, self.settings.max_attempts,
                                           limits=self.limits)
        jobs: list[WorkerJob] = []
        for queue, free in self._free_by_queue(limit).items():
            got = await store.claim_async(worker_id, free, self.settings.max_attempts,
                                          queue=queue, limits=self.limits)
            for job in got:
                self._queue_of[job.id] = queue
            jobs.extend(got)
        return jobs

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
            due = await self.shared.store.next_due_async()
        except Exception:
            return poll
        if due is None:
            return poll
        if self._claimed_at is not None and due <= self._claimed_at:
            # Due already when the claim ran, yet not claimed: held back by a pause, a
            # limit or a queue this worker does not serve. Look again after the poll
            # interval (at most a second), or at a wake-up.
            return min(self.settings.poll_interval.total_seconds(), 1.0)
        return max(0.0, min(poll, (due - utcnow()).total_seconds()))

"""The completer: writes job outcomes back in batches, fenced by each claim.

A batch the database refuses (not a lost connection) is written one by one, so that
one bad outcome cannot stall every later one; the refused outcome fails its job with
the reason. ``stop()`` flushes what is queued. A late outcome (the job was rescued and
claimed again meanwhile) is rejected by the database and logged.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from jobtable.model import Outcome
from jobtable.worker.shared import Shared, first_line

log = logging.getLogger("jobtable.worker")
BATCH = 500


class Completer:
    """Batched outcome writes for one worker."""

    def __init__(self, shared: Shared, grace_period: timedelta) -> None:
        self.shared = shared
        self.grace = grace_period
        self._queue: asyncio.Queue[Outcome] = asyncio.Queue()
        self._writing = 0
        self.batches = 0  # lets a burst claim tell if a write raced with it
        self._task: asyncio.Task[None] | None = None

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing being written."""
        return self._queue.empty() and not self._writing

    def add(self, outcome: Outcome) -> None:
        """Queue one outcome to be written."""
        self._queue.put_nowait(outcome)

    async def start(self) -> None:
        """Start writing queued outcomes."""
        self._task = asyncio.create_task(self._loop(), name="completer")

    async def stop(self) -> None:
        """Write what is queued (at most the grace period, at least 10 s), then stop."""
        deadline = max(self.grace.total_seconds(), 10.0)
        try:
            await asyncio.wait_for(self._queue.join(), deadline)
        except TimeoutError:
            log.error("could not write %d job outcomes before stopping; those jobs will be "
                      "rescued and run again", self._queue.qsize() + self._writing)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            self._writing = len(batch)
            try:
                await self._write(batch)
            finally:
                self._writing = 0
                self.batches += 1
                for _ in batch:
                    self._queue.task_done()
                self.shared.slot_free.set()

    async def _write(self, batch: list[Outcome]) -> None:
        store = self.shared.store
        delay = 0.05
        while True:
            try:
                written = await store.complete_async(batch)
                break
            except Exception as exc:
                error = exc
            if not store.is_transient(error):
                # Retrying would stall every later completion: find the outcome the
                # database refuses and record why instead.
                try:
                    written = await self._write_one_by_one(batch)
                    break
                except Exception as exc:
                    error = exc
            await self.shared.database_trouble("complete", error, delay)
            delay = min(delay * 2, 5.0)
        self.shared.database_ok()
        if any(o.snooze_until is not None for o in batch):
            self.shared.wake.set()  # a snoozed row is pending again: recompute the next due
        for outcome in batch:
            self.shared.held.discard(outcome.job.id)
            if outcome.job.id not in written:
                self.shared.stats.rejected += 1
                log.warning("late result of job %d (attempt %d) rejected: the job was rescued "
                            "and claimed again, or finished elsewhere", outcome.job.id,
                            outcome.job.attempts)

    async def _write_one_by_one(self, batch: list[Outcome]) -> set[int]:
        store = self.shared.store
        written: set[int] = set()
        for outcome in batch:
            try:
                written |= await store.complete_async([outcome])
                continue
            except Exception as exc:
                if store.is_transient(exc):
                    raise
                error = exc
            log.error("the outcome of job %d could not be written (%s); failing the job",
                      outcome.job.id, first_line(error))
            replacement = Outcome(job=outcome.job, success=False, result={
                "error": f"the job's outcome could not be stored: {first_line(error)}"[:2000]
                .replace("\x00", "\\x00"),
                "exception": type(error).__name__})
            try:
                written |= await store.complete_async([replacement])
            except Exception as exc:
                log.error("job %d left unfinished: %s", outcome.job.id, first_line(exc))
        return written

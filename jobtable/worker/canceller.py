"""The canceller: stops the running jobs whose cancel was requested
(``JobTable.cancel_job`` on a running row).

It checks this worker's running jobs with one primary-key query when told that a
request may have arrived (PostgreSQL ``NOTIFY``; SQLite's commit watch) and at least
every ``CHECK_INTERVAL`` seconds, which also covers a request made on another host
while the notification was lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from jobtable.store.base import Wakeups
from jobtable.worker.executor import JobExecutor
from jobtable.worker.shared import Shared, first_line

log = logging.getLogger("jobtable.worker")
CHECK_INTERVAL = 1.0
MIN_GAP = 0.2  # at most one check per this many seconds, however busy the database


class Canceller:
    """Relays cancel requests from the database to the executor."""

    def __init__(self, shared: Shared, executor: JobExecutor, wakeups: Wakeups,
                 interval: float = CHECK_INTERVAL) -> None:
        self.shared = shared
        self.executor = executor
        self.interval = interval
        self.poke = asyncio.Event()
        wakeups.cancels = self.poke
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start checking."""
        self._task = asyncio.create_task(self._loop(), name="canceller")

    async def stop(self) -> None:
        """Stop checking."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        while True:
            await self.shared.wait(self.poke, self.interval)
            self.poke.clear()
            await self.check()
            await asyncio.sleep(MIN_GAP)

    async def check(self) -> list[int]:
        """Cancel the running jobs asked to stop; return their ids."""
        running = dict(self.executor.tokens)
        if not running:
            return []
        try:
            asked = await self.shared.store.cancel_requests_async(running)
        except Exception as exc:
            # The heartbeat and the claim loop report outages; try again next round.
            log.debug("cancel check failed: %s", first_line(exc))
            return []
        return [job_id for job_id in asked if self.executor.cancel(job_id)]

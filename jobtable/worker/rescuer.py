"""The rescuer: this worker's heartbeat, and the rescue of jobs whose workers stopped
responding, once this worker has itself reached the database for a whole rescue window."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time

from jobtable.settings import Settings
from jobtable.worker.shared import Shared

log = logging.getLogger("jobtable.worker")


class Rescuer:
    """Heartbeat and rescue pass, in a task of their own."""

    def __init__(self, shared: Shared, settings: Settings) -> None:
        self.shared = shared
        self.settings = settings
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start beating (the first heartbeat was written at start-up)."""
        self._task = asyncio.create_task(self._loop(), name="heartbeat")

    async def stop(self) -> None:
        """Stop beating and rescuing."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        shared, store = self.shared, self.shared.store
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
                await asyncio.to_thread(store.heartbeat, shared.worker_id, shared.concurrency,
                                        os.getpid())
            except Exception as exc:
                connected_since = None
                await shared.database_trouble("heartbeat", exc)
                continue
            now = time.monotonic()
            if connected_since is None or now - began > interval or now - last_ok > 3 * interval:
                connected_since = now
            last_ok = now
            if now - connected_since < rescue_after.total_seconds():
                continue
            try:
                report = await asyncio.to_thread(store.rescue, rescue_after,
                                                 self.settings.max_attempts)
            except Exception as exc:
                await shared.database_trouble("rescue", exc, 0)
                continue
            if report.reset:
                log.warning("rescued jobs %s from workers that stopped responding", report.reset)
                shared.wake.set()
            if report.failed:
                log.error("gave up on jobs %s after %d attempts", report.failed,
                          self.settings.max_attempts)

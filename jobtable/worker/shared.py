"""What the worker's parts share: counters, the events they signal each other with, and
the database-health state that turns a run of errors into one log line and a backoff."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from typing import Protocol

from jobtable.store import Store

log = logging.getLogger("jobtable.worker")


class Part(Protocol):
    """The protocol every part of the worker follows."""

    async def start(self) -> None:
        """Begin the part's work (a task of the running loop, or a one-off step)."""

    async def stop(self) -> None:
        """Finish the part's work and release what it holds."""


@dataclass
class WorkerStats:
    """Counters of one worker, for logs and tests."""

    claimed: int = 0
    succeeded: int = 0
    failed: int = 0
    rejected: int = 0


def first_line(exc: BaseException) -> str:
    """The first line of an error's message, or its class name."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


@dataclass
class Shared:
    """State the parts of one worker share; built by ``Worker``, used from one loop."""

    worker_id: str
    concurrency: int
    store: Store
    stats: WorkerStats = field(default_factory=WorkerStats)
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # something may be due
    slot_free: asyncio.Event = field(default_factory=asyncio.Event)  # a job or write ended
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    held: set[int] = field(default_factory=set)  # claimed and not yet written back
    db_down_since: float | None = None

    async def wait(self, event: asyncio.Event, timeout: float | None) -> None:
        """Wait for ``event``, a stop request, or ``timeout`` seconds, whichever is first."""
        waiters = [asyncio.ensure_future(event.wait()),
                   asyncio.ensure_future(self.stopping.wait())]
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()

    async def database_trouble(self, what: str, exc: Exception, delay: float = 0.0) -> None:
        """Log the first error of an outage, then back off before the caller retries."""
        if self.db_down_since is None:
            self.db_down_since = time.monotonic()
            log.error("database error during %s: %s; retrying with backoff", what,
                      first_line(exc))
        down = time.monotonic() - self.db_down_since
        await asyncio.sleep(delay or min(5.0, 0.1 + down / 4) * random.uniform(0.5, 1.5))

    def database_ok(self) -> None:
        """Note that a call reached the database; log the end of an outage."""
        if self.db_down_since is not None:
            log.warning("database reachable again after %.1fs",
                        time.monotonic() - self.db_down_since)
            self.db_down_since = None

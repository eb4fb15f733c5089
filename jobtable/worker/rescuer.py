"""The rescuer: this worker's heartbeat, the rescue of jobs whose workers stopped
responding, and the watchdog of the event loop.

Heartbeat and rescue run on a thread of their own with a database connection of their
own, not on the event loop: a job that blocks the loop (an ``async def`` job calling
``time.sleep``) cannot stop them, so a live worker process is never taken for dead.
The same thread measures the loop's lag (a loop callback stamps the time every
``TICK`` seconds) and reports a loop blocked for longer than ``BLOCKED_AFTER``: an
ERROR naming the async jobs that ran on it and how long it was blocked, the longest
block on each of those jobs (``loop_blocked_ms``), and the total on the worker's
heartbeat row (``jobtable_event_loop_blocked_seconds_total`` in /metrics).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from jobtable.settings import Settings
from jobtable.store import Store
from jobtable.timeutil import utcnow
from jobtable.worker.shared import Shared, first_line

log = logging.getLogger("jobtable.worker")
TICK = 0.1
BLOCKED_AFTER = 1.0


class Rescuer:
    """Heartbeat, rescue pass and loop watchdog, on a thread of their own."""

    def __init__(self, shared: Shared, settings: Settings,
                 jobs_on_loop: Callable[[], list[int]] = list) -> None:
        self.shared = shared
        self.settings = settings
        self.jobs_on_loop = jobs_on_loop
        self.blocked_seconds = 0.0  # total time the loop was seen blocked
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tick = time.monotonic()
        self._tick_handle: asyncio.TimerHandle | None = None
        self._blocked_since: float | None = None
        self._blocked_jobs: set[int] = set()
        self._warned_at = 0.0
        self._state = threading.Lock()  # heartbeat thread -> rescue thread
        self._connected_since: float | None = None
        self._covered_since: datetime | None = None
        self._last_ok = time.monotonic()

    async def start(self) -> None:
        """Start the loop's ticks and the thread (the first heartbeat was written at
        start-up)."""
        self._loop = asyncio.get_running_loop()
        self._on_tick()
        self._thread = threading.Thread(target=self._run, name="jobtable-heartbeat",
                                        daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        """Stop beating, rescuing and watching."""
        self._stop.set()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)

    # -- on the loop -----------------------------------------------------------

    def _on_tick(self) -> None:
        self._tick = time.monotonic()
        assert self._loop is not None
        self._tick_handle = self._loop.call_later(TICK, self._on_tick)

    # -- on the thread -----------------------------------------------------------

    def _run(self) -> None:
        store = self.shared.store
        try:
            beats = store.heartbeat_store()
        except Exception as exc:
            log.error("cannot open the heartbeat's own connection (%s); using the shared "
                      "one", first_line(exc))
            beats = store
        rescue = threading.Thread(target=self._rescue_loop, name="jobtable-rescue",
                                  daemon=True)
        rescue.start()
        try:
            self._beat(beats)
        finally:
            rescue.join(60)
            if beats is not store:
                beats.close()

    def _beat(self, store: Store) -> None:
        """Heartbeats and the loop watchdog; never waits for the rescue pass, whose
        database calls may wait for a pool that reconnects after an outage."""
        shared = self.shared
        interval = self._interval()
        # Rescue a worker's jobs only when this worker could reach the database during
        # that worker's whole silence: it was last seen after our connectivity began
        # (``covered_since``), or we have been connected for a whole rescue window.
        # Right after an outage (even one that merely made our calls wait) others'
        # heartbeats may be old only because nobody could write them.
        self._connected_since = time.monotonic()
        self._covered_since = utcnow()
        last_ok = time.monotonic()
        self._last_ok = last_ok
        down_since: float | None = None
        next_beat = time.monotonic() + interval * random.uniform(0.8, 1.2)
        while not self._stop.wait(TICK):
            self._watch(store)
            if time.monotonic() < next_beat:
                continue
            next_beat = time.monotonic() + interval * random.uniform(0.8, 1.2)
            began = time.monotonic()
            try:
                store.heartbeat(shared.worker_id, shared.concurrency, os.getpid())
            except Exception as exc:
                with self._state:
                    self._connected_since = self._covered_since = None
                if down_since is None:
                    down_since = time.monotonic()
                    log.error("database error during heartbeat: %s; retrying",
                              first_line(exc))
                continue
            now = time.monotonic()
            if down_since is not None:
                log.warning("heartbeat reached the database again after %.1fs",
                            now - down_since)
                down_since = None
            with self._state:
                if (self._connected_since is None or now - began > interval
                        or now - last_ok > 3 * interval):
                    # Reachable for certain only from the end of this call.
                    self._connected_since, self._covered_since = now, utcnow()
                self._last_ok = last_ok = now

    def _interval(self) -> float:
        return max(0.2, min(5.0, self.settings.rescue_after.total_seconds() / 3))

    def _rescue_loop(self) -> None:
        """The rescue pass, every heartbeat interval, decided on the heartbeat's view of
        the database: only while the last heartbeat is recent."""
        store, rescue_after = self.shared.store, self.settings.rescue_after
        interval = self._interval()
        while not self._stop.wait(interval * random.uniform(0.8, 1.2)):
            with self._state:
                connected, covered, last_ok = (self._connected_since, self._covered_since,
                                               self._last_ok)
            now = time.monotonic()
            if connected is None or now - last_ok > 2 * interval:
                continue
            whole_window = now - connected >= rescue_after.total_seconds()
            try:
                report = store.rescue(rescue_after, self.settings.max_attempts,
                                      seen_since=None if whole_window else covered,
                                      charge_deaths=not self.settings.isolate_suspects,
                                      decided_at=utcnow())
            except Exception as exc:
                log.error("rescue pass failed: %s", first_line(exc))
                continue
            if report.reset:
                log.warning("rescued jobs %s from workers that stopped responding",
                            report.reset)
                self._wake()
            if report.cancelled:
                log.warning("cancelled jobs %s of workers that stopped responding: "
                            "cancelled or superseded while they ran", report.cancelled)
            if report.failed:
                log.error("gave up on jobs %s of workers that stopped responding",
                          report.failed)
            self._release_gone_neighbours(store, interval)

    def _release_gone_neighbours(self, store: Store, interval: float) -> None:
        """Release at once the jobs of workers on this host whose process is gone.

        A worker silent for two heartbeat intervals whose pid no longer exists here (or
        is a zombie) is dead for certain, outage or not: no need to wait for
        ``rescue_after``. (A reused pid only means waiting for ``rescue_after`` as usual.)
        """
        try:
            rows = store.live_workers(timedelta(days=36500))
        except Exception as exc:
            log.error("could not list workers: %s", first_line(exc))
            return
        host, now = socket.gethostname(), utcnow()
        for info in rows:
            if (info.host != host or info.id == self.shared.worker_id
                    or info.last_seen > now - timedelta(seconds=2 * interval)
                    or process_exists(info.pid)):
                continue
            try:
                report = store.release_worker(
                    info.id, self.settings.max_attempts,
                    charge_deaths=not self.settings.isolate_suspects)
            except Exception as exc:
                log.error("could not release the jobs of worker %s: %s", info.id,
                          first_line(exc))
                continue
            if report.reset or report.failed or report.cancelled:
                log.warning("released jobs %s of worker %s (pid %d is gone)",
                            sorted(report.reset + report.failed + report.cancelled),
                            info.id, info.pid)
            if report.reset:
                self._wake()

    def _wake(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self.shared.wake.set)

    def _watch(self, store: Store) -> None:
        """Compare the loop's last tick with now; report a block when it ends."""
        now = time.monotonic()
        lag = now - self._tick
        if lag > BLOCKED_AFTER:
            if self._blocked_since is None:
                self._blocked_since = self._tick
            self._blocked_jobs.update(self.jobs_on_loop())
            if now - self._warned_at > 10:
                self._warned_at = now
                log.warning("event loop blocked for %.1fs so far; async jobs on it: %s",
                            lag, _ids(self._blocked_jobs))
            return
        if self._blocked_since is None:
            return
        blocked = max(0.0, self._tick - self._blocked_since - TICK)
        jobs = sorted(self._blocked_jobs)
        self._blocked_since, self._blocked_jobs, self._warned_at = None, set(), 0.0
        self.blocked_seconds += blocked
        log.error("event loop was blocked for %.1fs (async jobs on it: %s); an async def "
                  "job must not call blocking code (time.sleep, blocking I/O): await, or "
                  "make it a plain def job", blocked, _ids(jobs))
        try:
            store.mark_loop_blocked(self.shared.worker_id, jobs, int(blocked * 1000),
                                    int(blocked * 1000))
        except Exception as exc:
            log.error("could not record the blocked loop on jobs %s: %s", jobs,
                      first_line(exc))


def process_exists(pid: int) -> bool:
    """True when a process ``pid`` exists on this host and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _ids(jobs: set[int] | list[int]) -> str:
    return ", ".join(str(j) for j in sorted(jobs)) or "none"


__all__ = ["BLOCKED_AFTER", "Rescuer"]

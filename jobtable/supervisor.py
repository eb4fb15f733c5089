"""Runs N worker processes, restarts one that dies, and fans out stop signals."""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from jobtable.process import PARENT_ENV, ChildProcess, parent_alive

log = logging.getLogger("jobtable.supervisor")
__all__ = ["PARENT_ENV", "WORKER_ID_ENV", "Supervisor", "backoff", "child_command",
           "resolve_processes", "watch_parent"]


def resolve_processes(value: str | int) -> int:
    """``cpus`` or a positive integer."""
    from jobtable.errors import ConfigError

    if isinstance(value, str) and value.strip().lower() in ("cpus", "auto"):
        return max(1, len(os.sched_getaffinity(0)))
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(
            f"processes must be a positive integer or 'cpus', got {value!r}") from None
    if number < 1:
        raise ConfigError(f"processes must be a positive integer or 'cpus', got {value!r}")
    return number


WORKER_ID_ENV = "JOBTABLE_WORKER_ID"
QUICK_DEATH = 2.0  # a child that dies sooner than this after starting may be crash-looping


def backoff(quick_deaths: int) -> float:
    """Seconds before restarting a child after ``quick_deaths`` deaths in a row, each
    soon after its start: at once for the first two (a kill is not a crash loop), then
    doubling from 0.5 s up to 10 s."""
    if quick_deaths <= 2:
        return 0.1
    return min(10.0, 0.5 * 2.0 ** (quick_deaths - 3))


@dataclass
class _Child:
    index: int
    proc: ChildProcess
    worker_id: str
    started: float = field(default_factory=time.monotonic)
    failures: int = 0


class Supervisor:
    """Keep ``count`` copies of ``command`` running until told to stop.

    Each child gets its worker id in ``JOBTABLE_WORKER_ID``. When one dies unasked,
    ``on_death(worker_id)`` is called at once (the worker command releases that
    worker's running jobs, so they run again without waiting for ``rescue_after``),
    then the child is restarted; a child dying again and again soon after its start
    is restarted with a growing delay.
    """

    def __init__(self, command: Sequence[str], count: int, grace_seconds: float, *,
                 on_death: Callable[[str], None] | None = None) -> None:
        self.command = list(command)
        self.count = count
        self.grace = grace_seconds
        self.on_death = on_death
        self.children: dict[int, _Child] = {}
        self._stopping = False
        self._signals = 0

    def _spawn(self, index: int, failures: int = 0) -> None:
        # Own session: a terminal's Ctrl-C reaches the supervisor only, which then
        # stops every child once (a second signal would mean "force").
        worker_id = (f"{socket.gethostname()}-{os.getpid()}-{index}-"
                     f"{uuid.uuid4().hex[:8]}")
        proc = ChildProcess.start(self.command, env={**os.environ, WORKER_ID_ENV: worker_id})
        self.children[index] = _Child(index=index, proc=proc, worker_id=worker_id,
                                      failures=failures)
        log.info("started worker process %d (pid %d, worker %s)", index, proc.pid, worker_id)

    def _released(self, child: _Child) -> None:
        if self.on_death is None:
            return
        try:
            self.on_death(child.worker_id)
        except Exception as exc:
            log.error("could not release the jobs of worker %s (%s); they are rescued "
                      "after rescue_after", child.worker_id, str(exc).splitlines()[0]
                      if str(exc) else type(exc).__name__)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals += 1
        self._stopping = True
        sig = signal.SIGTERM if self._signals == 1 else signal.SIGINT
        for child in self.children.values():
            child.proc.signal(sig)

    def run(self) -> int:
        """Supervise until stopped; return 0 when every child stopped cleanly."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        from jobtable import _early

        if _early.stop_requested():  # stopped while starting: nothing to stop yet
            return 0
        for index in range(self.count):
            self._spawn(index)
        restart_at: dict[int, tuple[float, int]] = {}
        stop_deadline: float | None = None
        while True:
            if self._stopping and stop_deadline is None:
                stop_deadline = time.monotonic() + self.grace + 15
            for index, child in list(self.children.items()):
                code = child.proc.poll()
                if code is None:
                    continue
                if self._stopping:
                    continue
                # Back off only for a crash loop (deaths in a row, each soon after start).
                lived = time.monotonic() - child.started
                failures = 0 if lived > QUICK_DEATH else child.failures + 1
                delay = backoff(failures)
                log.error("worker process %d (pid %d) exited with %s; restarting in %.1fs",
                          index, child.proc.pid, code, delay)
                self._released(child)
                restart_at[index] = (time.monotonic() + delay, failures)
                del self.children[index]
            if self._stopping:
                restart_at.clear()
            for index, (when, failures) in list(restart_at.items()):
                if time.monotonic() >= when:
                    del restart_at[index]
                    self._spawn(index, failures)
            if self._stopping:
                alive = [c for c in self.children.values() if c.proc.poll() is None]
                if not alive:
                    break
                if stop_deadline is not None and time.monotonic() > stop_deadline:
                    for c in alive:
                        log.error("worker process pid %d did not stop; killing it", c.proc.pid)
                        c.proc.kill()
                    stop_deadline = time.monotonic() + 5
            time.sleep(0.1)
        codes = [c.proc.wait() for c in self.children.values()]
        # Killed by our own SIGTERM: the child was still starting (a worker handles
        # SIGTERM once it runs), so it held no job; that is a clean stop too.
        return 0 if all(code in (0, -signal.SIGTERM) for code in codes) else 1


def watch_parent(expected: int | None) -> bool:
    """True while the supervisor that started this process is still our parent."""
    return parent_alive(expected)


def child_command(argv: Sequence[str]) -> list[str]:
    """The command that runs one worker process with the same options."""
    return [sys.executable, "-m", "jobtable", *argv]

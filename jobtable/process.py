"""Child processes, one way: the supervisor's workers, dev mode's worker and isolated runs.

- A child starts in a session (and process group) of its own, so that a terminal's
  Ctrl-C reaches only the parent, which then stops each child once (a second signal
  means "force" to a worker).
- Stopping is SIGTERM, then SIGKILL when the child has not exited after a grace.
- A child knows its parent from ``JOBTABLE_SUPERVISOR_PID``: ``parent_alive`` lets it
  stop gracefully when the parent is gone; ``die_with_parent`` makes it die at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence

__all__ = [
    "PARENT_ENV",
    "AsyncChildProcess",
    "ChildProcess",
    "describe_exit",
    "die_with_parent",
    "expected_parent",
    "parent_alive",
]

PARENT_ENV = "JOBTABLE_SUPERVISOR_PID"
ORPHAN_EXIT_CODE = 70


def _child_env(env: Mapping[str, str] | None) -> dict[str, str]:
    return {**(os.environ if env is None else env), PARENT_ENV: str(os.getpid())}


def describe_exit(code: int) -> str:
    """``exit code 3`` or ``killed by SIGKILL``, from a return code."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


class ChildProcess:
    """A child process in a session of its own, for blocking callers."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.stop_sent = False

    @classmethod
    def start(cls, command: Sequence[str], *,
              env: Mapping[str, str] | None = None) -> ChildProcess:
        """Start ``command``; its environment names this process as its parent."""
        return cls(subprocess.Popen(list(command), env=_child_env(env),
                                    start_new_session=True))

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """The exit code (negative: killed by that signal), None while running."""
        return self.proc.returncode

    def poll(self) -> int | None:
        """The exit code if the child has exited, else None."""
        return self.proc.poll()

    def signal(self, sig: int) -> None:
        """Send ``sig`` if the child is still running."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def ask_to_stop(self) -> None:
        """SIGTERM the child, once (a second signal would mean "force" to a worker)."""
        if not self.stop_sent and self.proc.poll() is None:
            self.stop_sent = True
            self.signal(signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL the child if it is still running."""
        self.signal(signal.SIGKILL)

    def wait(self) -> int:
        """Wait for the child to exit; its exit code."""
        return self.proc.wait()

    def stop(self, grace: float, *, on_force: Callable[[], None] | None = None) -> int:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL (calling ``on_force``
        first); the exit code."""
        self.ask_to_stop()
        deadline = time.monotonic() + grace
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.proc.poll() is None:
            if on_force is not None:
                on_force()
            self.kill()
        return self.proc.wait()


class AsyncChildProcess:
    """A child process in a session of its own, for asyncio callers."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, command: Sequence[str], *, env: Mapping[str, str] | None = None,
                    stdin: int | None = None) -> AsyncChildProcess:
        """Start ``command``; its environment names this process as its parent."""
        proc = await asyncio.create_subprocess_exec(
            *command, env=_child_env(env), stdin=stdin, start_new_session=True)
        return cls(proc)

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.proc.pid

    async def wait(self) -> int:
        """Wait for the child to exit; its exit code."""
        return await self.proc.wait()

    async def stop(self, grace: float, *, on_force: Callable[[], None] | None = None) -> int:
        """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; the exit code."""
        if self.proc.returncode is not None:
            return self.proc.returncode
        with contextlib.suppress(ProcessLookupError):
            self.proc.terminate()
        try:
            return await asyncio.wait_for(asyncio.shield(self.proc.wait()), grace)
        except TimeoutError:
            if on_force is not None:
                on_force()
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            return await self.proc.wait()


def expected_parent() -> int | None:
    """The parent named by ``JOBTABLE_SUPERVISOR_PID``, when this is a child."""
    value = os.environ.get(PARENT_ENV)
    try:
        return int(value) if value else None
    except ValueError:
        return None


def parent_alive(expected: int | None) -> bool:
    """True while the process that started this one is still our parent."""
    return expected is None or os.getppid() == expected


def die_with_parent(parent: int | None = None) -> None:
    """Exit at once when the parent dies (``parent`` defaults to ``expected_parent()``).

    On Linux the kernel sends SIGKILL when the parent exits; elsewhere, and as a
    safety net, a thread checks the parent every 0.2 s and exits with code 70.
    """
    expected = expected_parent() if parent is None else parent
    if expected is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)

    def watch() -> None:
        while True:
            if os.getppid() != expected:
                os._exit(ORPHAN_EXIT_CODE)
            time.sleep(0.2)

    if os.getppid() != expected:  # the parent died before the death signal was set
        os._exit(ORPHAN_EXIT_CODE)
    threading.Thread(target=watch, name="jobtable-parent-watch", daemon=True).start()

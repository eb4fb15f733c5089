"""Stop signals that arrive while a worker process is still starting.

Importing jobtable takes a noticeable fraction of a second; a SIGTERM in that time
would kill a worker process with the default action (exit 143) instead of a clean
stop. ``install()`` runs first thing when the process is a worker (``jobtable worker``
or ``python -m jobtable worker``) and records such a signal; the worker (or the
supervisor) asks ``stop_requested()`` once its own handlers are in place and stops
cleanly, exit 0.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

_received: list[int] = []
_installed = False


def _record(signum: int, _frame: FrameType | None) -> None:
    _received.append(signum)


def is_worker_command(argv: list[str]) -> bool:
    """True for ``jobtable worker ...`` and ``python [options] -m jobtable worker ...``."""
    if "-m" in argv:
        at = argv.index("-m")
        return argv[at + 1:at + 3] == ["jobtable", "worker"]
    return (len(argv) > 1 and os.path.basename(argv[0]) == "jobtable"
            and argv[1] == "worker")


def install() -> None:
    """Record SIGTERM/SIGINT instead of dying, when this process is a worker command
    that has not installed its own handlers yet (in the main thread only)."""
    global _installed
    argv = list(getattr(sys, "orig_argv", sys.argv))
    if _installed or not is_worker_command(argv):
        return
    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(sig) in (signal.SIG_DFL, signal.default_int_handler):
                signal.signal(sig, _record)
    except ValueError:  # not the main thread
        return
    _installed = True


def stop_requested() -> bool:
    """True when a stop signal arrived before the process's own handlers were set."""
    return bool(_received)

"""Close what a program forgot to close, while the interpreter can still do it.

A PostgreSQL connection pool runs background threads. A script that never calls
``JobTable.close()`` (or uses no ``with``) left them to the pool's ``__del__`` during
interpreter finalisation, where on Python 3.13 each thread join waited out its
5-second timeout: about 20 seconds before the script exited. ``atexit`` callbacks run
before finalisation, while those threads still answer, so closing there is immediate.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
import weakref
from typing import Protocol


class _Closeable(Protocol):
    def close(self) -> None: ...


_open: weakref.WeakSet[_Closeable] = weakref.WeakSet()
_lock = threading.Lock()
_registered = False


def close_at_exit(resource: _Closeable) -> None:
    """Call ``resource.close()`` at interpreter exit unless it was collected first.

    Holds only a weak reference, so the resource is garbage-collected as usual; its
    ``close()`` must be safe to call twice.
    """
    global _registered
    with _lock:
        if not _registered:
            atexit.register(_close_all)
            _registered = True
        _open.add(resource)


def _close_all() -> None:
    for resource in list(_open):
        with contextlib.suppress(Exception):
            resource.close()

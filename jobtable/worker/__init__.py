"""The worker: claim due jobs up to free capacity, run them, write outcomes in batches.

One ``Worker`` per process, made of small parts that share one start/stop protocol:

- ``declared``: start-up (migration gate, job modules, cleanup and declared ``CRON`` chains)
- ``producer``: claims up to the free slots; idle, waits for a wake-up or the next due
- ``executor``: runs each job in this process, or a suspect one in an isolated child
- ``completer``: writes outcomes back in batches, fenced by each claim
- ``rescuer``: heartbeat, and rescue of jobs whose workers stopped responding

Idle, a worker sleeps until the first of: a wake-up (a PostgreSQL NOTIFY, an SQLite
commit by another process, a job scheduled in this process), the next known ``due``,
the poll interval, or a stop request.
"""

from __future__ import annotations

from jobtable.worker.declared import CLEANUP_JOB
from jobtable.worker.shared import WorkerStats
from jobtable.worker.worker import Worker, run_worker

__all__ = ["CLEANUP_JOB", "Worker", "WorkerStats", "is_transient", "run_worker"]


def is_transient(exc: BaseException) -> bool:
    """True for errors that retrying can cure: a lost connection, a busy database.

    Deprecated: ask the store (``store.is_transient(exc)``), which knows its driver.
    """
    from jobtable.store.sqlite import SqliteStore

    if SqliteStore.is_transient(exc):
        return True
    try:
        from jobtable.store.postgres import PostgresStore
    except ImportError:  # no libpq here: not a PostgreSQL error either
        return False
    return PostgresStore.is_transient(exc)

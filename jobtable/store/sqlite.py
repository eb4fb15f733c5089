"""SQLite: one file, one writer at a time.

WAL lets readers run beside the writer; every write is ``BEGIN IMMEDIATE`` so that
a transaction takes the write lock up front instead of failing to upgrade later;
a busy timeout plus a retry loop keep ``database is locked`` from reaching users.
One connection per process, guarded by a lock: SQLite serialises writers anyway.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from jobtable import rules
from jobtable.errors import DatabaseUnavailableError
from jobtable.model import (
    JOB_COLUMNS,
    TIME_COLUMNS,
    NewJob,
    Outcome,
    WorkerJob,
    job_from_values,
)
from jobtable.store.base import (
    DEFAULT_STALE_LIMIT,
    FinishWatch,
    Row,
    Steps,
    Store,
    TableHealth,
    Wakeups,
    load_queries,
    query,
)
from jobtable.timeutil import format_sqlite, parse_sqlite

_QUERIES = load_queries("queries.sql", "queries_sqlite.sql")

# How ``to_job`` reads a row: the columns stored as text (timestamps, JSON) and
# ``success`` are decoded unless NULL; the ones NULL must not be, refuse the row;
# the flags are 0 or 1.
_DECODE: tuple[tuple[int, Callable[[Any], Any]], ...] = (
    *((i, datetime.fromisoformat) for i in TIME_COLUMNS),
    *((JOB_COLUMNS.index(name), json.loads) for name in ("data", "result", "trace_context")),
    (JOB_COLUMNS.index("success"), bool),
)
_REQUIRED = frozenset(JOB_COLUMNS.index(name)
                      for name in ("data", "due", "created_at", "updated_at"))
_FLAGS = tuple(JOB_COLUMNS.index(name)
               for name in ("auto_reschedule_on_failure", "cancelled", "declared"))
_BUSY_TIMEOUT_MS = 30_000
_LOCK_RETRIES = 50


def sqlite_path(url: str) -> str:
    """The file path of ``sqlite:///relative.db`` or ``sqlite:////absolute.db``."""
    for prefix in ("sqlite:///", "sqlite://"):
        if url.startswith(prefix):
            return url[len(prefix):] or "jobtable.db"
    return url


def _is_locked(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def q(self, name: str, **params: Any) -> list[Row]:
        cur = self.conn.execute(query(_QUERIES, name, "sqlite"), params)
        if cur.description is None:
            return []
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]


class SqliteStore(Store):
    """A ``Store`` on one SQLite file."""

    dialect = "sqlite"

    def __init__(self, url: str, *, stale_limit: timedelta = DEFAULT_STALE_LIMIT) -> None:
        super().__init__(url, stale_limit=stale_limit)
        self.path = sqlite_path(url)
        parent = Path(self.path).parent
        if not parent.exists():
            raise DatabaseUnavailableError(
                f"cannot open SQLite database {self.path!r}: folder {str(parent)!r} does not exist")
        try:
            self._conn = sqlite3.connect(self.path, isolation_level=None,
                                         check_same_thread=False, timeout=_BUSY_TIMEOUT_MS / 1000)
            self._conn.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            self._retry(lambda: self._conn.execute("PRAGMA journal_mode = WAL"))
            self._conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.Error as exc:
            raise DatabaseUnavailableError(
                f"cannot open SQLite database {self.path!r}: {exc}") from None
        self._lock = threading.RLock()
        self._depth = 0

    def _retry(self, fn: Any) -> Any:
        for attempt in range(_LOCK_RETRIES):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not _is_locked(exc) or attempt == _LOCK_RETRIES - 1:
                    raise
                time.sleep(min(0.5, 0.01 * 2 ** min(attempt, 6)) * random.uniform(0.5, 1.5))
        raise AssertionError("unreachable")

    @contextmanager
    def transaction(self) -> Iterator[_SqliteTx]:
        with self._lock:
            if self._depth:
                yield _SqliteTx(self._conn)
                return
            self._retry(lambda: self._conn.execute("BEGIN IMMEDIATE"))
            self._depth += 1
            try:
                yield _SqliteTx(self._conn)
            except BaseException:
                self._depth -= 1
                self._conn.execute("ROLLBACK")
                raise
            self._depth -= 1
            try:
                self._retry(lambda: self._conn.execute("COMMIT"))
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def read(self, sql: str, **params: Any) -> list[Row]:
        with self._lock:
            return self._retry(lambda: _SqliteTx(self._conn).q(sql, **params))  # type: ignore[no-any-return]

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def heartbeat_store(self) -> Store:
        """A second store on the same file: its own connection and lock, so that a
        heartbeat never waits for this store's lock (the caller closes it)."""
        return SqliteStore(self.url, stale_limit=self.stale_limit)

    # -- worker support: wake-ups and driver errors ---------------------------------

    def finish_watch(self) -> FinishWatch:
        """Watches ``PRAGMA data_version``: any commit by another connection."""
        return _DataVersionFinish(self.path)

    def wakeups(self, event: asyncio.Event) -> Wakeups:
        """Sets ``event`` when another process commits to this database file."""
        return _DataVersionWakeups(event, self.path)

    @classmethod
    def is_transient(cls, exc: BaseException) -> bool:
        """A lost connection, or a locked or busy database file."""
        return super().is_transient(exc) or isinstance(exc, sqlite3.OperationalError)

    # -- migrations ------------------------------------------------------------

    def _run_script(self, tx: Any, sql: str) -> None:
        # One statement at a time: executescript() would commit the open transaction.
        for statement in _split_sql(sql):
            tx.conn.execute(statement)

    # -- primitives ------------------------------------------------------------

    def _t(self, value: datetime | None) -> Any:
        return None if value is None else format_sqlite(value)

    def table_health(self) -> TableHealth:
        """Pages of the database file in use (live) and free (dead). SQLite reuses free
        pages for new rows, so churn does not grow the file past its peak."""
        r = self.read("table_health")[0]
        return TableHealth(live=int(r["pages"]) - int(r["free"]), dead=int(r["free"]),
                           size_bytes=int(r["pages"]) * int(r["page_size"]), last_vacuum=None)

    def _time(self, value: Any) -> datetime:
        result = parse_sqlite(value)
        assert result is not None
        return result

    def _minute(self, value: Any) -> datetime:
        return datetime.fromisoformat(f"{value}:00+00:00")

    def to_job(self, row: Row) -> WorkerJob:
        values = [row[k] for k in JOB_COLUMNS]
        for i, decode in _DECODE:
            value = values[i]
            if value is not None:
                values[i] = decode(value)
            elif i in _REQUIRED:
                raise ValueError(f"column {JOB_COLUMNS[i]} is NULL")
        for i in _FLAGS:
            values[i] = bool(values[i])
        return job_from_values(values)

    def _pair_locks(self, pairs: Sequence[tuple[str, int]]) -> Steps[None]:
        yield from ()  # BEGIN IMMEDIATE already serialises every writer

    # The history figures read about this many ids, in this many blocks, once the
    # table spans four times as many (see _history_sample).
    sample_ids = 5_000
    sample_blocks = 100

    def _history_sample(self) -> tuple[float, dict[str, Any]]:
        """Every id while the table spans up to ``sample_ids`` x 4 of them; beyond,
        ``sample_blocks`` blocks of consecutive ids spread evenly over the span, each
        found by rowid: the figures' cost stops growing with the history."""
        span = self.read("id_span")[0]
        lo = int(span["lo"] or 0)
        hi = int(span["hi"] or 0)
        ids = hi - lo + 1
        if ids <= self.sample_ids * 4:
            return 100.0, {"pct": 100.0, "sample_first": lo, "sample_step": ids,
                           "sample_width": ids, "sample_last": lo}
        width = max(1, self.sample_ids // self.sample_blocks)
        step = ids // self.sample_blocks
        pct = 100.0 * width * self.sample_blocks / ids
        return pct, {"pct": pct, "sample_first": lo, "sample_step": step,
                     "sample_width": width, "sample_last": lo + step * (self.sample_blocks - 1)}

    plans_with_rows = True  # reading the pair's pending rows is an in-process call

    def _write(self, jobs: Sequence[NewJob], cancelled: Sequence[bool],
               plan: rules.BatchPlan, now: datetime) -> Steps[list[WorkerJob]]:
        result = self.cancel_result()
        t = self._t(now)
        stale = self._t(self.stale_cutoff(now))
        for job_id in plan.cancel_ids:
            yield "cancel_by_id", {"id": job_id, "now": t, "stale": stale, "result": result}
        rows = []
        for job, gone in zip(jobs, cancelled, strict=True):
            keep = not gone
            rows.extend((yield "insert", dict(
                type=job.type, user_id=job.user_id, data=json.dumps(job.data),
                due=self._t(job.due), cron_schedule=job.cron_schedule,
                cron_timezone=job.cron_timezone,
                auto_reschedule_on_failure=job.auto_reschedule_on_failure,
                auto_reschedule_on_failure_delay=job.auto_reschedule_on_failure_delay_ms,
                remove_delay=job.remove_delay_ms, rescheduled_from_job=job.rescheduled_from_job,
                declared=job.declared, finished=None if keep else t,
                success=None if keep else False, cancelled=not keep,
                result=None if keep else result, retry_count=job.retry_count,
                max_retries=job.max_retries, backoff=job.backoff,
                max_backoff=job.max_backoff_ms, unique_key=job.unique_key,
                on_conflict=job.on_conflict, queue=job.queue, priority=job.priority,
                trace_context=None if job.trace_context is None
                else json.dumps(job.trace_context), now=t)))
        return [self.to_job(r) for r in rows]

    def _types_param(self, types: Sequence[str]) -> Any:
        return json.dumps(list(types))

    def _ids_param(self, ids: Sequence[int]) -> Any:
        return json.dumps(list(ids))

    def sql(self, name: str) -> str:
        return query(_QUERIES, name, "sqlite")

    def _foreign_steps(self, jobs: Sequence[NewJob], now: datetime) -> Steps[list[WorkerJob]]:
        # The write lock first: the pending rows must not change between the plan and
        # its writes (the store's own transactions get it from BEGIN IMMEDIATE).
        yield "take_write_lock", {}
        return (yield from self._schedule_steps(jobs, now))

    def _same_database(self, identity: list[Row]) -> str | None:
        main = next((r["file"] for r in identity if r["name"] == "main"), "")
        try:
            if main and os.path.samefile(main, self.path):
                return None
        except OSError:
            pass
        return f"SQLite file {main or '(in memory)'!r}"

    def _finish(self, outcomes: Sequence[Outcome], now: datetime) -> Steps[dict[int, bool]]:
        written = {}
        t = self._t(now)
        cancel_result = json.dumps(rules.CANCELLED_RESULT)
        for o in outcomes:
            remove_at = (self._t(now + timedelta(milliseconds=o.job.remove_delay))
                         if o.success else None)
            for row in (yield "finish", dict(
                    id=o.job.id, token=o.job.attempts, success=o.success,
                    result=json.dumps(o.result), remove_at=remove_at, now=t,
                    cancelled=o.cancelled, cancel_result=cancel_result)):
                written[o.job.id] = bool(row["cancelled"])
        return written

    def _delete_removable(self, tx: Any, now: datetime, failed_before: datetime,
                          keep_id: int, batch: int) -> int:
        cur = tx.conn.execute(query(_QUERIES, "delete_removable", "sqlite"), {
            "now": self._t(now), "failed_before": self._t(failed_before), "keep": keep_id,
            "batch": batch})
        return int(cur.rowcount)


class _DataVersionFinish(FinishWatch):
    """Returns when another connection commits to the file (``PRAGMA data_version``
    changes), checked every 20 ms."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, check_same_thread=False)
        self.last = self._version()

    def _version(self) -> int | None:
        try:
            return int(self.conn.execute("PRAGMA data_version").fetchone()[0])
        except sqlite3.Error:
            return None

    def wait(self, job_id: int, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            version = self._version()
            if version != self.last:
                self.last = version
                return
            time.sleep(min(0.02, max(0.0, deadline - time.monotonic())))

    def close(self) -> None:
        self.conn.close()


class _DataVersionWakeups(Wakeups):
    """Watches ``PRAGMA data_version``, which changes when another connection commits."""

    def __init__(self, event: asyncio.Event, path: str) -> None:
        super().__init__(event)
        self.path = path

    async def _watch(self) -> None:
        conn = sqlite3.connect(self.path, check_same_thread=False)
        try:
            last = None
            while True:
                try:
                    version = conn.execute("PRAGMA data_version").fetchone()[0]
                except sqlite3.Error:
                    version = None
                if last is not None and version != last:
                    self.event.set()
                    if self.cancels is not None:  # any commit may be a cancel request
                        self.cancels.set()
                last = version
                await asyncio.sleep(0.02)
        finally:
            conn.close()


def _split_sql(sql: str) -> list[str]:
    lines = [ln for ln in sql.splitlines() if not ln.strip().startswith("--")]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]

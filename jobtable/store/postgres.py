"""PostgreSQL: many worker processes on many hosts, one database.

Claims use ``FOR UPDATE SKIP LOCKED`` so concurrent workers take different rows
without waiting; cancel-then-insert per (type, user_id) is serialised with a
transaction-scoped advisory lock; batches travel as arrays in one statement.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from jobtable import rules
from jobtable._atexit import close_at_exit
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
    Op,
    Row,
    Send,
    Steps,
    Store,
    TableHealth,
    Wakeups,
    load_queries,
    pair_key,
    pair_order,
    query,
)
from jobtable.timeutil import utcnow

T = TypeVar("T")
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
# Pages of worker_jobs the history figures read on a large table (about 3 MB, some
# 10,000 rows: each figure ~10 ms; 1,000 pages took ~25 ms each, five figures per scrape).
SAMPLE_PAGES = 400
CHANNEL = "jobtable"  # the NOTIFY channel, also named in the SQL that notifies
FINISHED_CHANNEL = "jobtable_finished"  # finished job ids, for JobTable.wait_for
_log = logging.getLogger("jobtable.worker")  # wake-ups are the worker's concern


def _psycopg_sql(sql: str) -> str:
    # Binary parameters: arrays of a thousand values dump and parse faster than text.
    return _PARAM.sub(r"%(\1)b", sql)


_QUERIES = {k: _psycopg_sql(v)
            for k, v in load_queries("queries.sql", "queries_postgres.sql").items()}


def _configure(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET TIME ZONE 'UTC'")


async def _configure_async(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute("SET TIME ZONE 'UTC'")


class _PgTx:
    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self.conn = conn

    def q(self, name: str, **params: Any) -> list[Row]:
        sql = query(_QUERIES, name, "postgres")
        cur = self.conn.execute(sql, params, prepare=True)
        if cur.description is None:
            return []
        try:
            return cur.fetchall()
        except psycopg.DataError:
            return _rows_one_by_one(cur)


class _PgAsyncTx:
    """The store's own queries on an asyncio connection, each prepared on first use. In
    pipeline mode a ``Send`` is queued without waiting for its reply."""

    def __init__(self, conn: psycopg.AsyncConnection[Row]) -> None:
        self.conn = conn

    async def q(self, name: str, **params: Any) -> list[Row]:
        cur = await self.conn.execute(query(_QUERIES, name, "postgres"), params, prepare=True)
        try:
            return await cur.fetchall()
        except psycopg.DataError:
            return await _rows_one_by_one_async(cur)
        except psycopg.ProgrammingError as exc:
            # A statement without rows (in pipeline mode its result arrives only now).
            if type(exc) is psycopg.ProgrammingError and cur.description is None:
                return []
            raise

    async def send(self, name: str, params: dict[str, Any]) -> None:
        await self.conn.execute(query(_QUERIES, name, "postgres"), params, prepare=True)


async def _run_steps_pipelined(tx: _PgAsyncTx, steps: Steps[T]) -> T:
    """``run_steps_async`` that sends a ``Send`` without waiting for its reply."""
    try:
        step = next(steps)
        while True:
            if isinstance(step, Send):
                await tx.send(step.name, step.params)
                step = steps.send([])
            else:
                name, params = step
                step = steps.send(await tx.q(name, **params))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


UNREADABLE = "__unreadable__"


def _rows_one_by_one(cur: psycopg.Cursor[Row]) -> list[Row]:
    """The rows of a result one of which the driver cannot load (a timestamp past year
    9999, say): the others as usual, each bad one as its raw ``id``, ``type`` and
    ``attempts`` and the reason under ``UNREADABLE`` (``to_job`` refuses it, so that a
    claim or a rescue can fail that row alone)."""
    result = cur.pgresult
    assert result is not None and cur.description is not None
    rows: list[Row] = []
    for index in range(result.ntuples):
        cur.scroll(index, mode="absolute")
        try:
            row = cur.fetchone()
        except psycopg.DataError as exc:
            rows.append(_raw_row(cur, index, exc))
            continue
        if row is not None:
            rows.append(row)
    return rows


async def _rows_one_by_one_async(cur: psycopg.AsyncCursor[Row]) -> list[Row]:
    """``_rows_one_by_one`` on an asyncio cursor."""
    result = cur.pgresult
    assert result is not None and cur.description is not None
    rows: list[Row] = []
    for index in range(result.ntuples):
        await cur.scroll(index, mode="absolute")
        try:
            row = await cur.fetchone()
        except psycopg.DataError as exc:
            rows.append(_raw_row(cur, index, exc))
            continue
        if row is not None:
            rows.append(row)
    return rows


def _raw_row(cur: psycopg.Cursor[Row] | psycopg.AsyncCursor[Row], index: int,
             exc: psycopg.DataError) -> Row:
    """Row ``index`` of ``cur``'s result as its raw ``id``, ``type`` and ``attempts``, with
    the reason it cannot be loaded under ``UNREADABLE``."""
    result = cur.pgresult
    assert result is not None and cur.description is not None
    names = [d.name for d in cur.description]
    raw: Row = {UNREADABLE: _first_line(exc)}
    for column in ("id", "type", "attempts"):
        if column in names:
            value = result.get_value(index, names.index(column))
            raw[column] = None if value is None else bytes(value).decode()
    return raw


class PostgresStore(Store):
    """A ``Store`` on a PostgreSQL database, through a psycopg 3 connection pool."""

    dialect = "postgres"
    #: Pages of worker_jobs that the history figures read on a large table.
    sample_pages = SAMPLE_PAGES

    #: Connections of the asyncio pool a worker opens (``open_async``): one claim, one
    #: completion batch, and now and then a cancel check or a look at the next due.
    async_pool_size = 3

    def __init__(self, url: str, *, stale_limit: timedelta = DEFAULT_STALE_LIMIT,
                 min_size: int = 1, max_size: int = 8, connect_timeout: float = 10.0) -> None:
        super().__init__(url, stale_limit=stale_limit)
        self._connect_timeout = connect_timeout
        # The asyncio pool of each event loop that opened one (a process may run
        # workers in several loops), with how many users it has.
        self._apools: dict[asyncio.AbstractEventLoop,
                           tuple[AsyncConnectionPool[psycopg.AsyncConnection[Row]], int]] = {}
        self._hb_conn: psycopg.Connection[Row] | None = None
        self._identity: tuple[Any, ...] | None = None
        self._hb_lock = threading.Lock()
        self.pool: ConnectionPool[psycopg.Connection[Row]] = ConnectionPool(
            url, min_size=min_size, max_size=max_size, open=False, configure=_configure,
            # Autocommit: a single statement (a claim, a read) is one round trip;
            # transactions are explicit.
            kwargs={"row_factory": dict_row, "autocommit": True},
            connection_class=psycopg.Connection[Row], timeout=connect_timeout,
            reconnect_timeout=3600,
        )
        try:
            # One direct attempt first: a wrong host or database fails at once with the
            # server's own words, instead of after the pool's retries.
            psycopg.connect(url, connect_timeout=int(connect_timeout)).close()
            self.pool.open(wait=True, timeout=connect_timeout)
        except Exception as exc:
            self.pool.close()
            raise DatabaseUnavailableError(
                f"cannot connect to PostgreSQL at {_safe(url)}: {_first_line(exc)}") from None
        close_at_exit(self)  # a script that forgets close() must not hang at exit

    def heartbeat(self, worker_id: str, concurrency: int, pid: int) -> None:
        """Record a heartbeat on a connection of its own.

        After an outage the pool reconnects with a growing backoff; the heartbeat must
        come back within seconds, or peers would take a live worker for dead.
        """
        with self._hb_lock:
            try:
                if self._hb_conn is None or self._hb_conn.closed:
                    self._hb_conn = psycopg.connect(self.url, autocommit=True,
                                                    connect_timeout=5, row_factory=dict_row)
                    _configure(self._hb_conn)
                _PgTx(self._hb_conn).q(
                    "heartbeat", id=worker_id, host=socket.gethostname(), pid=pid,
                    concurrency=concurrency, now=utcnow())
            except psycopg.Error:
                if self._hb_conn is not None:
                    self._hb_conn.close()
                self._hb_conn = None
                raise

    def schedule(self, jobs: Sequence[NewJob], *,
                 cancelled: list[int] | None = None) -> list[WorkerJob]:
        """Rule 2 in one round trip: the server-side function takes the pair locks,
        cancels, inserts and notifies, and returns the new ids; the rows are built from
        what was sent. A batch with an ``on_conflict="keep"`` job needs the pairs'
        pending rows first, and a caller asking which rows were cancelled needs them
        too: those run as a transaction (lock, read, plan, write)."""
        if not jobs:
            return []
        if cancelled is not None or rules.needs_table_rows(jobs):
            return super().schedule(jobs, cancelled=cancelled)
        now = utcnow()
        name, params, flags = self._fast_call(jobs, now)
        return self._rows(jobs, flags, _ids(self.read(name, **params)), now)

    def schedule_ids(self, jobs: Sequence[NewJob]) -> list[int]:
        """``schedule`` returning only the ids (the same server-side call)."""
        if not jobs:
            return []
        if rules.needs_table_rows(jobs):
            return super().schedule_ids(jobs)
        name, params, _ = self._fast_call(jobs, utcnow())
        return _ids(self.read(name, **params))

    def _fast_call(self, jobs: Sequence[NewJob], now: datetime
                   ) -> tuple[str, dict[str, Any], list[bool]]:
        """The one server-side call that schedules ``jobs`` (none of them ``keep``), and
        which of them it writes already cancelled (replaced by a later job of theirs)."""
        if len(jobs) == 1:
            return "schedule_one_id", self._one_params(jobs[0], now), [False]
        plan = rules.plan_batch(jobs, None)
        return "schedule_batch", self._batch_params(jobs, plan.cancelled, plan, now), \
            plan.cancelled

    def _one_params(self, j: NewJob, now: datetime) -> dict[str, Any]:
        """The parameters of ``jobtable_schedule_one_id()``."""
        return dict(
            now=now, stale=self.stale_cutoff(now), cancel_result=self.cancel_result(),
            key=pair_key(j.type, j.user_id), type=j.type, user_id=j.user_id,
            data=_data_json(j), due=j.due, cron_schedule=j.cron_schedule,
            cron_timezone=j.cron_timezone, auto_reschedule=j.auto_reschedule_on_failure,
            retry_delay=j.auto_reschedule_on_failure_delay_ms, remove_delay=j.remove_delay_ms,
            rescheduled_from=j.rescheduled_from_job, declared=j.declared,
            retry_count=j.retry_count, max_retries=j.max_retries, backoff=j.backoff,
            max_backoff=j.max_backoff_ms, unique_key=j.unique_key, on_conflict=j.on_conflict,
            queue=j.queue, priority=j.priority, trace_context=_trace_json(j),
            payload=f"{j.due.timestamp():.6f}")

    def _rows(self, jobs: Sequence[NewJob], cancelled: Sequence[bool], ids: Sequence[int],
              now: datetime) -> list[WorkerJob]:
        """The rows just written, from what was sent (instead of reading them back)."""
        if len(ids) != len(jobs):
            raise RuntimeError(f"scheduling wrote {len(ids)} rows for {len(jobs)} jobs")
        return [rules.written_row(j, i, now, data=_as_jsonb(j), cancelled=c)
                for j, i, c in zip(jobs, ids, cancelled, strict=True)]

    # -- scheduling on a connection of the application's -------------------------

    def sql(self, name: str) -> str:
        return query(_QUERIES, name, "postgres")

    def _foreign_steps(self, jobs: Sequence[NewJob], now: datetime) -> Steps[list[WorkerJob]]:
        if not rules.needs_table_rows(jobs):
            name, params, flags = self._fast_call(jobs, now)
            return self._rows(jobs, flags, _ids((yield name, params)), now)
        yield from self._pair_locks(pair_order(jobs))
        return (yield from self._schedule_steps(jobs, now))

    def _same_database(self, identity: list[Row]) -> str | None:
        theirs = _identity(identity)
        if self._identity is None or theirs != self._identity:
            # Read ours again: the server may have restarted since it was read.
            self._identity = _identity(self.read("database_identity"))
        if theirs == self._identity:
            return None
        return f"PostgreSQL database {theirs[0]!r} of a server started at {theirs[2]}"

    @contextmanager
    def statement(self) -> Iterator[_PgTx]:
        with self.pool.connection() as conn:
            yield _PgTx(conn)

    @contextmanager
    def transaction(self) -> Iterator[_PgTx]:
        with self.pool.connection() as conn, conn.transaction():
            yield _PgTx(conn)

    def read(self, sql: str, **params: Any) -> list[Row]:
        with self.pool.connection() as conn:
            return _PgTx(conn).q(sql, **params)

    def close(self) -> None:
        with self._hb_lock:
            if self._hb_conn is not None:
                self._hb_conn.close()
        self.pool.close()

    # -- the worker's async side: an asyncio pool in the worker's loop ------------

    async def open_async(self) -> None:
        """Open a small asyncio pool (``async_pool_size`` connections, autocommit, UTC)
        in the running loop; the worker's claims, completions, next-due looks, lost-claim
        releases and cancel checks then run on it, without a thread. It connects in the
        background: until a connection is ready, calls wait for one (at most the connect
        timeout, then ``PoolTimeout``, a transient error)."""
        loop = asyncio.get_running_loop()
        if loop in self._apools:
            pool, users = self._apools[loop]
            self._apools[loop] = (pool, users + 1)
            return
        pool = AsyncConnectionPool(
            self.url, min_size=1, max_size=self.async_pool_size, open=False,
            configure=_configure_async,
            kwargs={"row_factory": dict_row, "autocommit": True},
            connection_class=psycopg.AsyncConnection[Row], timeout=self._connect_timeout,
            reconnect_timeout=3600, name="jobtable-async")
        await pool.open(wait=False)
        self._apools[loop] = (pool, 1)

    async def close_async(self) -> None:
        """Close this loop's asyncio pool once its last user (worker) closes it."""
        loop = asyncio.get_running_loop()
        if loop not in self._apools:
            return
        pool, users = self._apools.pop(loop)
        if users > 1:
            self._apools[loop] = (pool, users - 1)
            return
        await pool.close()

    async def _run_async(self, op: Op[T]) -> T:
        """In the loop on the asyncio pool when ``open_async`` opened one in this loop
        (else on a thread). A transaction is pipelined: its ``Send`` steps (locks,
        writes whose rows are not read, NOTIFY) travel with the next statement."""
        opened = self._apools.get(asyncio.get_running_loop())
        if opened is None:
            return await super()._run_async(op)
        pool = opened[0]
        try:
            unit = next(op)
            while True:
                async with pool.connection() as conn:
                    tx = _PgAsyncTx(conn)
                    if unit.mode == "transaction":
                        async with conn.pipeline(), conn.transaction():
                            result = await _run_steps_pipelined(tx, unit.steps)
                    else:
                        result = await _run_steps_pipelined(tx, unit.steps)
                unit = op.send(result)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    # -- worker support: wake-ups and driver errors ---------------------------------

    def wakeups(self, event: asyncio.Event) -> Wakeups:
        """``LISTEN`` on a connection of its own; reconnects with backoff when lost."""
        return _ListenWakeups(event, self.url)

    def finish_watch(self) -> FinishWatch:
        """``LISTEN`` for finished jobs on a connection of its own."""
        return _ListenFinish(self.url)

    def _notify_finished(self, job_ids: Sequence[int]) -> Steps[None]:
        if not job_ids:
            return
        payload = ",".join(map(str, job_ids))
        # NOTIFY payloads are limited to 8000 bytes: a longer batch says "look".
        yield Send("notify_finished", {"payload": payload if len(payload) < 7900 else "*"})

    @classmethod
    def is_transient(cls, exc: BaseException) -> bool:
        """A lost connection, a pool timeout, a serialisation failure or a deadlock."""
        return super().is_transient(exc) or isinstance(exc, (
            psycopg.OperationalError, psycopg_pool.PoolTimeout,
            psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected))

    # -- migrations ------------------------------------------------------------

    def _lock_migrations(self, tx: Any) -> None:
        tx.q("lock_migrations")

    def _run_script(self, tx: Any, sql: str) -> None:
        tx.conn.execute(sql.encode())  # bytes: no parameters, several statements

    # -- primitives ------------------------------------------------------------

    def _json(self, value: Any) -> Any:
        return Jsonb(value)

    def to_job(self, row: Row) -> WorkerJob:
        if UNREADABLE in row:
            raise ValueError(row[UNREADABLE])
        values = [row[k] for k in JOB_COLUMNS]
        # Timestamps in UTC whatever the session's time zone (a connection of the
        # application's may have its own).
        for i in TIME_COLUMNS:
            value = values[i]
            if value is not None:
                values[i] = value.astimezone(UTC)
        return job_from_values(values)

    def _pair_locks(self, pairs: Sequence[tuple[str, int]]) -> Steps[None]:
        if pairs:
            yield Send("lock_pairs", {"keys": [pair_key(t, u) for t, u in pairs]})

    def _write(self, jobs: Sequence[NewJob], cancelled: Sequence[bool],
               plan: rules.BatchPlan, now: datetime) -> Steps[list[WorkerJob]]:
        """The server-side ``jobtable_schedule_batch()`` (the caller's pair locks are
        taken again, which PostgreSQL allows within one transaction)."""
        if not jobs and not plan.cancel_ids:
            return []
        ids = _ids((yield "schedule_batch", self._batch_params(jobs, cancelled, plan, now)))
        return self._rows(jobs, cancelled, ids, now)

    def _batch_params(self, jobs: Sequence[NewJob], cancelled: Sequence[bool],
                      plan: rules.BatchPlan, now: datetime) -> dict[str, Any]:
        """The parameters of ``jobtable_schedule_batch()``: a column whose values are
        all equal is sent as one value (an array of one element)."""
        matches = plan.matches
        return {
            "now": now, "stale": self.stale_cutoff(now), "cancel_result": self.cancel_result(),
            # Sorted and distinct: the lock order of every scheduler.
            "keys": _int_array(sorted({pair_key(j.type, j.user_id) for j in jobs})),
            "match_types": _column([m.type for m in matches]),
            "match_users": _int_array([m.user_id for m in matches]),
            "match_keys": _column([m.unique_key for m in matches]),
            "match_crons": _column([m.crons for m in matches]),
            "cancel_ids": plan.cancel_ids,
            "payload": f"{min((j.due for j in jobs), default=now).timestamp():.6f}",
            "types": _column([j.type for j in jobs]),
            "user_ids": _int_array([j.user_id for j in jobs]),
            "datas": _column([_data_json(j) for j in jobs]),
            "dues": _column([j.due for j in jobs]),
            "cron_schedules": _column([j.cron_schedule for j in jobs]),
            "cron_timezones": _column([j.cron_timezone for j in jobs]),
            "auto_reschedules": _column([j.auto_reschedule_on_failure for j in jobs]),
            "retry_delays": _column([j.auto_reschedule_on_failure_delay_ms for j in jobs]),
            "remove_delays": _column([j.remove_delay_ms for j in jobs]),
            "rescheduled_froms": _column([j.rescheduled_from_job for j in jobs]),
            "declareds": _column([j.declared for j in jobs]),
            "cancelleds": _column(list(cancelled)),
            "retry_counts": _column([j.retry_count for j in jobs]),
            "max_retries": _column([j.max_retries for j in jobs]),
            "backoffs": _column([j.backoff for j in jobs]),
            "max_backoffs": _column([j.max_backoff_ms for j in jobs]),
            "unique_keys": _column([j.unique_key for j in jobs]),
            "on_conflicts": _column([j.on_conflict for j in jobs]),
            "queues": _column([j.queue for j in jobs]),
            "priorities": _column([j.priority for j in jobs]),
            "trace_contexts": _column([_trace_json(j) for j in jobs])}

    def _lock_limited(self, types: Sequence[str]) -> Steps[None]:
        keys = sorted({pair_key(f"limit:{t}", 0) for t in types})
        yield Send("lock_pairs", {"keys": keys})

    def _finish(self, outcomes: Sequence[Outcome], now: datetime) -> Steps[dict[int, bool]]:
        rows = yield "finish_many", dict(
            now=now, ids=[o.job.id for o in outcomes],
            tokens=[o.job.attempts for o in outcomes],
            successes=[o.success for o in outcomes],
            results=[Jsonb(o.result) for o in outcomes],
            remove_ats=[now + timedelta(milliseconds=o.job.remove_delay) if o.success else None
                        for o in outcomes],
            cancelleds=[o.cancelled for o in outcomes],
            cancel_result=Jsonb(rules.CANCELLED_RESULT))
        return {int(r["id"]): bool(r["cancelled"]) for r in rows}

    def _delete_removable(self, tx: Any, now: datetime, failed_before: datetime,
                          keep_id: int, batch: int) -> int:
        cur = tx.conn.execute(query(_QUERIES, "delete_removable", "postgres"), {
            "now": now, "failed_before": failed_before, "keep": keep_id, "batch": batch})
        return int(cur.rowcount)

    def _time(self, value: Any) -> datetime:
        assert isinstance(value, datetime)
        return value.astimezone(UTC)

    def _history_sample(self) -> tuple[float, dict[str, Any]]:
        """All pages up to ``SAMPLE_PAGES`` x 4; beyond, ``SAMPLE_PAGES`` of them
        (``TABLESAMPLE SYSTEM``), from the relation's real size, not its statistics."""
        pages = int(self.read("table_pages")[0]["pages"] or 0)
        pct = 100.0 if pages <= self.sample_pages * 4 else 100.0 * self.sample_pages / pages
        return pct, {"pct": pct}

    def table_health(self) -> TableHealth:
        """From ``pg_stat_user_tables`` and the relation's size: no row is read."""
        rows = self.read("table_health")
        if not rows:
            return super().table_health()
        r = rows[0]
        last = r["last_vacuum"]
        return TableHealth(live=int(r["live"] or 0), dead=int(r["dead"] or 0),
                           size_bytes=int(r["size_bytes"] or 0),
                           last_vacuum=None if last is None else self._time(last))

    def _vacuum(self) -> None:
        # VACUUM runs outside any transaction (the pool's connections are autocommit)
        # and cannot be prepared.
        with self.pool.connection() as conn:
            conn.execute(query(_QUERIES, "vacuum", "postgres"))


class _ListenFinish(FinishWatch):
    """Waits for ``NOTIFY jobtable_finished`` naming a job (or ``*``: a batch too long to
    name); without a connection it only sleeps."""

    def __init__(self, url: str) -> None:
        self.conn: psycopg.Connection[Any] | None = None
        try:
            self.conn = psycopg.connect(url, autocommit=True, connect_timeout=10)
            self.conn.execute(f"LISTEN {FINISHED_CHANNEL}")
        except psycopg.Error:
            self.close()

    def wait(self, job_id: int, seconds: float) -> None:
        if self.conn is None:
            super().wait(job_id, seconds)
            return
        wanted = str(job_id)
        deadline = time.monotonic() + seconds
        try:
            while (left := deadline - time.monotonic()) > 0:
                for note in self.conn.notifies(timeout=left, stop_after=1):
                    if note.payload == "*" or wanted in note.payload.split(","):
                        return
        except psycopg.Error:
            self.close()  # the caller reads the row, then polls

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


class _ListenWakeups(Wakeups):
    def __init__(self, event: asyncio.Event, url: str) -> None:
        super().__init__(event)
        self.url = url

    async def _watch(self) -> None:
        delay = 0.1
        while True:
            try:
                conn = await psycopg.AsyncConnection.connect(self.url, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.listening = True
                    self.event.set()  # catch up on anything scheduled while we were away
                    delay = 0.1
                    async for notice in conn.notifies():
                        if notice.payload.startswith("cancel:"):
                            if self.cancels is not None:
                                self.cancels.set()
                        else:
                            self.event.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.listening:
                    _log.warning("lost the LISTEN connection (%s); polling until it is back",
                                 _first_line(exc))
                self.listening = False
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 10.0)


def _column(values: list[Any]) -> list[Any]:
    """``values``, or the first alone when they are all equal (the schedule function
    reads an array of one element as every job's value)."""
    if len(values) > 1 and values.count(values[0]) == len(values):
        return values[:1]
    return values


def _int_array(values: list[int]) -> str:
    """A bigint[] as its text ('{1,2,3}'): for a thousand ids, several times cheaper to
    make than the driver's encoding of a list."""
    return "{" + ",".join(map(str, values)) + "}"


def _ids(rows: list[Row]) -> list[int]:
    """The new ids from the row of a schedule function."""
    value = rows[0]["ids"] if "ids" in rows[0] else [rows[0]["id"]]
    return [int(i) for i in value]


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _data_json(job: NewJob) -> str:
    return job.data_json if job.data_json is not None else _dumps(job.data)


def _trace_json(job: NewJob) -> str | None:
    return None if job.trace_context is None else _dumps(job.trace_context)


def _numeric(token: str) -> float | int:
    # A number jsonb keeps as numeric and prints without an exponent: 1e+16 comes back
    # as 10000000000000000, which JSON reads as an int.
    if "e" in token or "E" in token:
        exact = Decimal(token)
        if exact == exact.to_integral_value():
            return int(exact)
    return float(token)


def _as_jsonb(job: NewJob) -> dict[str, Any]:
    """``job.data`` as jsonb gives it back: the same, unless a float was written with an
    exponent (the only JSON text of Python's that jsonb prints differently)."""
    text = job.data_json
    if text is None:
        text = _dumps(job.data)
    elif "e+" not in text and "e-" not in text:
        return job.data
    loaded: dict[str, Any] = json.loads(text, parse_float=_numeric)
    return loaded


def _identity(rows: list[Row]) -> tuple[Any, ...]:
    row = rows[0]
    return (row["name"], row["oid"], row["started"])


def _safe(url: str) -> str:
    """The URL without its password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]

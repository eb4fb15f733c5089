"""Scheduling on a connection of the application's (``connection=``).

The job rows are written inside the application's transaction: visible to workers only
after it commits, gone if it rolls back. The store's own named queries run on the
application's driver connection; nothing here commits the application's transaction.

Accepted: a psycopg 3 ``Connection`` / ``AsyncConnection``, an ``sqlite3.Connection``,
a SQLAlchemy ``Connection`` / ``Session`` / ``AsyncConnection`` / ``AsyncSession`` (on
the psycopg or pysqlite drivers), and Django's ``django.db.connection`` (or a
``connections[alias]``; on psycopg 3 or SQLite). Each is reduced to its driver
connection, which runs the work:

- psycopg: inside the caller's transaction (a non-autocommit connection with none open
  gets one, as psycopg does for any statement, for the caller to commit), under a
  savepoint, so that an error leaves the caller's transaction usable and nothing
  written. A connection in autocommit mode with no transaction open gets a transaction
  of its own, committed at once (as its other statements are).
- sqlite3: the same; jobtable first takes the write lock inside the caller's
  transaction (rule 2 holds as under BEGIN IMMEDIATE), which fails with "database is
  locked" when the caller's transaction read data that another connection has changed
  since; open the transaction with ``BEGIN IMMEDIATE`` to avoid that. A connection in
  autocommit mode (``isolation_level=None`` or ``autocommit=True``) with no transaction
  open gets ``BEGIN IMMEDIATE`` … ``COMMIT`` of its own.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any

from jobtable.errors import UnusableConnectionError
from jobtable.model import NewJob, WorkerJob
from jobtable.store.base import Row, run_steps, run_steps_async
from jobtable.timeutil import utcnow

if TYPE_CHECKING:
    from jobtable.store.base import Store

_SAVEPOINT = "jobtable_schedule"
_ACCEPTED = ("a psycopg 3 Connection or AsyncConnection, an sqlite3.Connection, a "
             "SQLAlchemy Connection, Session, AsyncConnection or AsyncSession, or Django's "
             "django.db.connection")
_DIALECT_NAMES = {"postgres": "PostgreSQL", "sqlite": "SQLite"}


def _module(obj: object) -> str:
    return type(obj).__module__


def _check_psycopg(conn: Any) -> None:
    from psycopg.pq import TransactionStatus

    if conn.closed:
        raise UnusableConnectionError("the connection is closed; nothing was written")
    status = conn.info.transaction_status
    if status == TransactionStatus.INERROR:
        raise UnusableConnectionError(
            "the connection is in a failed transaction (an earlier statement failed); "
            "roll it back first; nothing was written")
    if status not in (TransactionStatus.IDLE, TransactionStatus.INTRANS):
        raise UnusableConnectionError(
            f"the connection is busy or broken (transaction status {status.name}); "
            "nothing was written")


class _Psycopg:
    """A psycopg 3 ``Connection``."""

    dialect = "postgres"

    def __init__(self, conn: Any, store: Store) -> None:
        self.conn = conn
        self.store = store

    def check(self) -> None:
        _check_psycopg(self.conn)

    def _cursor(self) -> Any:
        import psycopg
        from psycopg.rows import dict_row
        from psycopg.types.datetime import TimestamptzLoader
        from psycopg.types.json import JsonbLoader, JsonLoader

        # A server-binding cursor (the queries use binary parameters) with psycopg's own
        # loaders, whatever the application registered on its connection (Django loads
        # jsonb as text, for one).
        cur = psycopg.Cursor(self.conn, row_factory=dict_row)
        cur.adapters.register_loader("jsonb", JsonbLoader)
        cur.adapters.register_loader("json", JsonLoader)
        cur.adapters.register_loader("timestamptz", TimestamptzLoader)
        return cur

    def q(self, name: str, **params: Any) -> list[Row]:
        with self._cursor() as cur:
            cur.execute(self.store.sql(name), params)
            return list(cur.fetchall()) if cur.description else []

    @contextmanager
    def transaction(self) -> Iterator[None]:
        # In the caller's transaction: a savepoint; in autocommit mode without one: a
        # transaction of its own, committed at the end of the block.
        with self.conn.transaction(savepoint_name=_SAVEPOINT):
            yield


class _AsyncPsycopg:
    """A psycopg 3 ``AsyncConnection``."""

    dialect = "postgres"

    def __init__(self, conn: Any, store: Store) -> None:
        self.conn = conn
        self.store = store

    def check(self) -> None:
        _check_psycopg(self.conn)

    async def q(self, name: str, **params: Any) -> list[Row]:
        import psycopg
        from psycopg.rows import dict_row
        from psycopg.types.datetime import TimestamptzLoader
        from psycopg.types.json import JsonbLoader, JsonLoader

        async with psycopg.AsyncCursor(self.conn, row_factory=dict_row) as cur:
            cur.adapters.register_loader("jsonb", JsonbLoader)
            cur.adapters.register_loader("json", JsonLoader)
            cur.adapters.register_loader("timestamptz", TimestamptzLoader)
            await cur.execute(self.store.sql(name), params)
            return list(await cur.fetchall()) if cur.description else []

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        async with self.conn.transaction(savepoint_name=_SAVEPOINT):
            yield


class _Sqlite:
    """An ``sqlite3.Connection``."""

    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection, store: Store) -> None:
        self.conn = conn
        self.store = store

    def check(self) -> None:
        try:
            self.conn.in_transaction  # noqa: B018 - raises on a closed connection
        except sqlite3.ProgrammingError:
            raise UnusableConnectionError(
                "the connection is closed; nothing was written") from None

    def q(self, name: str, **params: Any) -> list[Row]:
        cur = self.conn.execute(self.store.sql(name), params)
        if cur.description is None:
            return []
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def _autocommit(self) -> bool:
        mode = getattr(self.conn, "autocommit", -1)  # Python 3.12+; -1: legacy control
        return mode is True or (mode not in (True, False) and self.conn.isolation_level is None)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        own = False
        if not self.conn.in_transaction:
            if self._autocommit():
                self.conn.execute("BEGIN IMMEDIATE")
                own = True
            else:
                self.q("take_write_lock")  # the module's implicit BEGIN, then the lock
        self.conn.execute(f"SAVEPOINT {_SAVEPOINT}")
        try:
            yield
        except BaseException:
            self.conn.execute(f"ROLLBACK TO {_SAVEPOINT}")
            self.conn.execute(f"RELEASE {_SAVEPOINT}")
            if own:
                self.conn.execute("ROLLBACK")
            raise
        self.conn.execute(f"RELEASE {_SAVEPOINT}")
        if own:
            self.conn.execute("COMMIT")


def _from_sqlalchemy_sync(conn: Any, store: Store) -> _Psycopg | _Sqlite:
    """A SQLAlchemy ``Connection`` or ``Session``: its driver connection, inside the
    transaction SQLAlchemy commits."""
    if hasattr(conn, "get_bind") and hasattr(conn, "connection") and not hasattr(
            conn, "exec_driver_sql"):
        conn = conn.connection()  # a Session: the Connection of its transaction
    if conn.closed or conn.invalidated:
        raise UnusableConnectionError("the connection is closed; nothing was written")
    if not conn.in_transaction():
        conn.begin()  # so that the caller's commit() commits the job too
    via = f"SQLAlchemy ({conn.dialect.name}+{conn.dialect.driver})"
    adapted = _driver(conn.connection.driver_connection, store, via=via)
    if isinstance(adapted, _AsyncPsycopg):
        raise UnusableConnectionError(f"{via}: use schedule_job_async with an asyncio "
                                      "connection; nothing was written")
    return adapted


async def _from_sqlalchemy_async(conn: Any, store: Store) -> _AsyncPsycopg:
    """A SQLAlchemy ``AsyncConnection`` or ``AsyncSession``."""
    if not hasattr(conn, "get_raw_connection"):
        conn = await conn.connection()  # an AsyncSession
    if conn.closed or conn.invalidated:
        raise UnusableConnectionError("the connection is closed; nothing was written")
    if not conn.in_transaction():
        await conn.begin()
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    adapted = _driver(driver, store, via=f"SQLAlchemy ({conn.dialect.name}+"
                                        f"{conn.dialect.driver})")
    if not isinstance(adapted, _AsyncPsycopg):
        raise UnusableConnectionError(
            f"SQLAlchemy's async {conn.dialect.driver} driver is not supported; use "
            "postgresql+psycopg_async (or a synchronous connection); nothing was written")
    return adapted


def _from_django(conn: Any, store: Store) -> _Psycopg | _Sqlite:
    """Django's ``connection`` (a proxy) or a ``connections[alias]`` wrapper."""
    if getattr(conn, "needs_rollback", False):
        raise UnusableConnectionError(
            "Django's connection is in a failed atomic block (an error occurred inside "
            "it); nothing was written")
    conn.ensure_connection()
    via = f"Django ({getattr(conn, 'vendor', '?')})"
    adapted = _driver(conn.connection, store, via=via)
    if isinstance(adapted, _AsyncPsycopg):
        raise UnusableConnectionError(f"{via}: an asyncio connection; nothing was written")
    return adapted


def _driver(driver: Any, store: Store, via: str) -> _Psycopg | _AsyncPsycopg | _Sqlite:
    module = _module(driver)
    if isinstance(driver, sqlite3.Connection):
        return _Sqlite(driver, store)
    if module.split(".")[0] == "psycopg":
        import psycopg

        if isinstance(driver, psycopg.AsyncConnection):
            return _AsyncPsycopg(driver, store)
        if isinstance(driver, psycopg.Connection):
            return _Psycopg(driver, store)
    raise UnusableConnectionError(
        f"{via} uses a {module}.{type(driver).__name__} connection, which jobtable cannot "
        "schedule on; it supports psycopg 3 and sqlite3 (for PostgreSQL under Django or "
        "SQLAlchemy: install psycopg 3 and use its driver); nothing was written")


def _adapt_sync(connection: object, store: Store) -> _Psycopg | _Sqlite | None:
    """The driver adapter of a synchronous connection, None for an asyncio one."""
    module = _module(connection)
    if isinstance(connection, sqlite3.Connection) or module.startswith("psycopg"):
        adapted = _driver(connection, store, via=type(connection).__name__)
        return None if isinstance(adapted, _AsyncPsycopg) else adapted
    if module.startswith("sqlalchemy.ext.asyncio"):
        return None
    if module.startswith("sqlalchemy."):
        return _from_sqlalchemy_sync(connection, store)
    if module.startswith("django."):
        return _from_django(connection, store)
    raise UnusableConnectionError(
        f"connection= got a {module}.{type(connection).__name__}; jobtable accepts "
        f"{_ACCEPTED}; nothing was written")


def _same_dialect(adapted: Any, store: Store) -> None:
    if adapted.dialect != store.dialect:
        raise UnusableConnectionError(
            f"the connection is to {_DIALECT_NAMES[adapted.dialect]}, but this JobTable's "
            f"database is {_DIALECT_NAMES[store.dialect]}; schedule on a connection to "
            "the JobTable's own database; nothing was written")


def _same_database(store: Store, identity: list[Row]) -> None:
    other = store._same_database(identity)
    if other is not None:
        raise UnusableConnectionError(
            f"the connection reaches {other}, not this JobTable's database; schedule on a "
            "connection to the JobTable's own database; nothing was written")


def schedule_on(store: Store, connection: object, jobs: Sequence[NewJob]) -> list[WorkerJob]:
    """Schedule ``jobs`` by rule 2 inside the transaction of ``connection``."""
    adapted = _adapt_sync(connection, store)
    if adapted is None:
        raise UnusableConnectionError(
            f"connection= got an asyncio connection ({type(connection).__name__}); use "
            "schedule_job_async / schedule_jobs_async with it; nothing was written")
    _same_dialect(adapted, store)
    adapted.check()
    # Before any write (and, on psycopg, opening the caller's transaction if it has
    # none yet, as any statement would).
    _same_database(store, adapted.q("database_identity"))
    with adapted.transaction():
        return run_steps(adapted, store._foreign_steps(jobs, utcnow()))


async def schedule_on_async(store: Store, connection: object,
                            jobs: Sequence[NewJob]) -> list[WorkerJob]:
    """``schedule_on`` for the ``_async`` twins: an asyncio connection is used on the
    running loop; a synchronous one on the calling thread (the connection's own)."""
    module = _module(connection)
    if module.startswith("sqlalchemy.ext.asyncio"):
        adapted: Any = await _from_sqlalchemy_async(connection, store)
    elif module.startswith("psycopg"):
        adapted = _driver(connection, store, via=type(connection).__name__)
    else:
        return schedule_on(store, connection, jobs)
    if not isinstance(adapted, _AsyncPsycopg):
        return schedule_on(store, connection, jobs)
    _same_dialect(adapted, store)
    adapted.check()
    _same_database(store, await adapted.q("database_identity"))
    async with adapted.transaction():
        return await run_steps_async(adapted, store._foreign_steps(jobs, utcnow()))

"""The storage interface: every database operation jobtable needs, one implementation per
database. The rules that must hold atomically (cancel-then-insert, exclusive claim,
fenced completion) are implemented here once, on top of a few dialect primitives.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import re
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Generator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import resources
from typing import Any, ClassVar, Literal, NamedTuple, Protocol, TypeVar

from jobtable import rules
from jobtable.errors import ConfigError
from jobtable.model import CANCELLED_MESSAGE, JobStatus, NewJob, Outcome, WorkerJob
from jobtable.routing import QueueInfo, TypeLimits
from jobtable.store import migrate
from jobtable.timeutil import utcnow

Row = dict[str, Any]

STATUSES = tuple(s.value for s in JobStatus)
FINISHED_STATUSES = (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value,
                     JobStatus.CANCELLED.value)
RUNTIME_BOUNDS = 14  # the :b0..:b13 parameters of the ``runtimes`` query
_NO_LIMIT = 2**62


def check_status(status: str | None, allowed: Sequence[str] = STATUSES) -> str | None:
    """``status`` if it is one of ``allowed`` (or None); a ``ConfigError`` naming them if not."""
    if status is None or status == "":
        return None
    if status not in allowed:
        raise ConfigError(f"unknown status {status!r}; use one of {', '.join(allowed)}")
    return status


def _scaled(n: Any, pct: float) -> int:
    """A count from a sample of ``pct`` percent of the table, scaled to the whole."""
    return int(n or 0) if pct >= 100 else round(int(n or 0) * 100.0 / pct)


def _purge_flags(statuses: Sequence[str]) -> dict[str, bool]:
    if not statuses:
        raise ConfigError(f"purge needs at least one status: {', '.join(FINISHED_STATUSES)}")
    for status in statuses:
        check_status(status, FINISHED_STATUSES)
    return {s: s in statuses for s in FINISHED_STATUSES}

DEFAULT_STALE_LIMIT = timedelta(hours=1)
DEFAULT_MAX_ATTEMPTS = rules.DEFAULT_MAX_ATTEMPTS
ABANDONED_MESSAGE = rules.ABANDONED_MESSAGE


def load_queries(*names: str) -> dict[str, str]:
    """Read named queries (``-- name: x`` headers) from the package's .sql files."""
    queries: dict[str, str] = {}
    for name in names:
        text = resources.files("jobtable.store").joinpath(name).read_text()
        for block in re.split(r"^-- name: ", text, flags=re.MULTILINE)[1:]:
            header, _, body = block.partition("\n")
            queries[header.strip()] = body.strip()
    return queries


class UnknownQueryError(KeyError):
    """A query name that no .sql file of the dialect defines (a bug in jobtable)."""


def query(queries: dict[str, str], name: str, dialect: str) -> str:
    """The SQL of the named query; the store runs nothing else."""
    try:
        return queries[name]
    except KeyError:
        raise UnknownQueryError(
            f"no query named {name!r} in the {dialect} store; the store runs only the named "
            f"queries of its .sql files ({len(queries)} known)") from None


def pair_key(job_type: str, user_id: int) -> int:
    """A stable signed 64-bit key for a (type, user_id) pair, for advisory locks."""
    digest = hashlib.blake2b(f"{job_type}\x00{user_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def pair_order(jobs: Sequence[NewJob | WorkerJob]) -> list[tuple[str, int]]:
    """The distinct (type, user_id) pairs of ``jobs`` in lock order (by ``pair_key``), so
    that concurrent transactions take their pair locks in one order and never deadlock."""
    return sorted({(j.type, j.user_id) for j in jobs}, key=lambda p: pair_key(*p))


class Tx(Protocol):
    """A write transaction: run named queries, get rows back as dicts."""

    def q(self, name: str, **params: Any) -> list[Row]: ...


class AsyncTx(Protocol):
    """The same on an asyncio connection."""

    async def q(self, name: str, **params: Any) -> list[Row]: ...


T = TypeVar("T")
Steps = Generator[tuple[str, dict[str, Any]], list[Row], T]
"""A database operation written once for every way of running it: it yields (query
name, parameters), receives the query's rows and returns its result. ``run_steps``
runs it on a transaction of the store's or a connection of the application's;
``run_steps_async`` on an asyncio connection."""


def run_steps(tx: Tx, steps: Steps[T]) -> T:
    """Run ``steps`` on ``tx``."""
    try:
        name, params = next(steps)
        while True:
            name, params = steps.send(tx.q(name, **params))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


async def run_steps_async(tx: AsyncTx, steps: Steps[T]) -> T:
    """Run ``steps`` on an asyncio ``tx``."""
    try:
        name, params = next(steps)
        while True:
            name, params = steps.send(await tx.q(name, **params))
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]


class Send(NamedTuple):
    """A step whose rows its steps do not read (a lock, a write without ``RETURNING``, a
    ``NOTIFY``), yielded in place of ``(name, params)``. Every runner runs it in its
    turn; one that pipelines (PostgreSQL's async path, in a transaction) sends it
    without waiting for its reply, so that it travels with the next statement. Its
    steps receive no rows they may rely on."""

    name: str
    params: dict[str, Any]


Mode = Literal["read", "statement", "transaction"]


class Unit(NamedTuple):
    """One part of an ``Op``: ``steps`` run as one transaction (``transaction``), as
    statements without BEGIN/COMMIT round trips (``statement``: PostgreSQL autocommit,
    a write transaction on SQLite), or as reads outside any write transaction
    (``read``)."""

    steps: Steps[Any]
    mode: Mode


Op = Generator[Unit, Any, T]
"""A store operation of one or more transactions, written once for the worker's sync
and async paths: it yields ``Unit``s, receives each one's result and returns its own.
``Store._run`` runs it on the calling thread; ``Store._run_async`` from the event loop
(on a thread, unless the dialect has an async driver)."""


class _ReadTx:
    """``Store.read`` as a ``Tx``: each query outside any write transaction."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def q(self, name: str, **params: Any) -> list[Row]:
        return self.store.read(name, **params)


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A live worker process, from its heartbeat row."""

    id: str
    host: str
    pid: int
    concurrency: int
    started: datetime
    last_seen: datetime
    loop_blocked_ms: int = 0  # total time its event loop was seen blocked


# The table is bloating when its dead rows exceed this share of its live rows (and
# BLOAT_MIN_DEAD): then the cleanup job vacuums it, and stats and the dashboard warn.
BLOAT_RATIO = 0.2
BLOAT_MIN_DEAD = 1000


@dataclass(frozen=True, slots=True)
class TableHealth:
    """Live and dead rows and size of ``worker_jobs``, as the database estimates them.

    ``live`` and ``dead`` are the server's running estimates (PostgreSQL's statistics;
    on SQLite, pages in use and free pages), not counts.
    """

    live: int
    dead: int
    size_bytes: int
    last_vacuum: datetime | None

    @property
    def dead_ratio(self) -> float:
        """Dead per live (0 when the table is empty)."""
        return self.dead / self.live if self.live else 0.0

    @property
    def bloating(self) -> bool:
        """Whether dead rows pile up faster than vacuum reclaims them."""
        return self.dead >= BLOAT_MIN_DEAD and self.dead > BLOAT_RATIO * self.live


@dataclass(frozen=True, slots=True)
class RescueReport:
    """What one rescue pass did."""

    reset: list[int]
    failed: list[int]
    cancelled: list[int] = dataclasses.field(default_factory=list)


class Wakeups:
    """Tells a worker that something may have become due in another process.

    ``start()`` begins watching and sets ``event`` on each signal; ``stop()`` ends it.
    ``listening`` is True while the database pushes signals (PostgreSQL ``LISTEN``),
    so that polling is only a safety net. ``cancels``, when given, is set when a job
    may have been asked to stop (a cancel request). This base watches nothing.
    """

    def __init__(self, event: asyncio.Event) -> None:
        self.event = event
        self.cancels: asyncio.Event | None = None
        self.listening = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Begin watching in a task of the running loop."""
        self._task = asyncio.create_task(self._watch(), name="wakeups")

    async def stop(self) -> None:
        """Stop watching and release the connection it used."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self.listening = False

    async def _watch(self) -> None:
        return


class FinishWatch:
    """Tells a waiter (``JobTable.wait_for``) that a job may have finished.

    ``wait(job_id, seconds)`` returns when a sign arrives that ``job_id`` may have
    finished, or after ``seconds``; the caller then reads the row. This base has no
    signs and only sleeps (polling). Close it (or use it as a context manager).
    """

    def wait(self, job_id: int, seconds: float) -> None:
        """Block until a sign for ``job_id`` or ``seconds`` have passed."""
        time.sleep(max(0.0, seconds))

    def close(self) -> None:
        """Release what it watches with."""

    def __enter__(self) -> FinishWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Store(ABC):
    """One database. Thread-safe; share one per process."""

    dialect: ClassVar[str]

    def __init__(self, url: str, *, stale_limit: timedelta = DEFAULT_STALE_LIMIT) -> None:
        self.url = url
        self.stale_limit = stale_limit

    # -- dialect primitives -------------------------------------------------

    @abstractmethod
    def transaction(self) -> AbstractContextManager[Tx]:
        """A write transaction, serialised as the dialect needs."""

    def statement(self) -> AbstractContextManager[Tx]:
        """Where one atomic write statement runs: without BEGIN/COMMIT round trips on
        PostgreSQL (autocommit); a write transaction on SQLite."""
        return self.transaction()

    @abstractmethod
    def read(self, sql: str, **params: Any) -> list[Row]:
        """Run a named query outside any write transaction."""

    def migrate(self) -> list[str]:
        """Apply pending migrations, each in its own transaction; return their names."""
        return migrate.migrate(self)

    def applied_migrations(self) -> list[tuple[int, str]]:
        """(version, name) of every applied migration."""
        return migrate.applied(self)

    def pending_migrations(self) -> list[str]:
        """Names of the migrations not yet applied."""
        return migrate.pending(self)

    def _lock_migrations(self, tx: Tx) -> None:  # noqa: B027 - optional hook
        """Serialise concurrent migrators where the transaction alone does not."""

    @abstractmethod
    def _run_script(self, tx: Tx, sql: str) -> None:
        """Run a migration file's statements inside ``tx``."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    @abstractmethod
    def to_job(self, row: Row) -> WorkerJob:
        """A row as the database returned it, as a ``WorkerJob``."""

    @abstractmethod
    def _write(self, jobs: Sequence[NewJob], cancelled: Sequence[bool],
               plan: rules.BatchPlan, now: datetime) -> Steps[list[WorkerJob]]:
        """Rule 2's writes, once per dialect, as steps: cancel the pending rows that
        ``plan`` names (``cancel_ids``) or matches (``matches``), then insert ``jobs``
        (those the plan writes), each already cancelled where ``cancelled`` says so;
        wake idle workers. The caller holds the pair locks. Returns the inserted rows,
        in order."""

    def _pending_rows(self, pairs: Sequence[tuple[str, int]],
                      now: datetime) -> Steps[list[WorkerJob]]:
        """The pending rows (rule 1) of ``pairs``, oldest first."""
        stale = self.stale_cutoff(now)
        rows: list[WorkerJob] = []
        for t, u in pairs:
            rows += [self.to_job(r)
                     for r in (yield "unfinished_for_pair", {"type": t, "user_id": u})]
        return sorted((r for r in rows if rules.is_pending(r, stale)), key=lambda r: r.id)

    # Whether this dialect always plans against the table's pending rows (cheap where
    # the database is in-process) rather than letting the database cancel by match.
    plans_with_rows: ClassVar[bool] = False

    def _schedule_steps(self, jobs: Sequence[NewJob], now: datetime) -> Steps[list[WorkerJob]]:
        """Rule 2 as steps (the caller holds the pair locks): plan the batch with
        ``rules.plan_batch``, write it, and return one row per job in batch order: the
        inserted row, or for a ``keep`` that found a match, that row (``inserted`` False).
        """
        pending = None
        if self.plans_with_rows or rules.needs_table_rows(jobs):
            pending = yield from self._pending_rows(pair_order(jobs), now)
        plan = rules.plan_batch(jobs, pending)
        to_insert = [j for j, ins in zip(jobs, plan.insert, strict=True) if ins]
        flags = [c for c, ins in zip(plan.cancelled, plan.insert, strict=True) if ins]
        written = iter((yield from self._write(to_insert, flags, plan, now)))
        out: list[WorkerJob] = []
        for ins, kept in zip(plan.insert, plan.kept, strict=True):
            if ins:
                out.append(next(written))
            elif kept is not None and kept[0] == "batch":
                out.append(dataclasses.replace(out[kept[1]], inserted=False))
            elif kept is not None:
                row = (yield "get_job", {"id": kept[1]})[0]
                out.append(dataclasses.replace(self.to_job(row), inserted=False))
        return out

    def _schedule_in(self, tx: Tx, jobs: Sequence[NewJob], now: datetime) -> list[WorkerJob]:
        """``_schedule_steps`` run in ``tx``."""
        return run_steps(tx, self._schedule_steps(jobs, now))

    # -- scheduling on a connection of the application's -------------------------

    @abstractmethod
    def sql(self, name: str) -> str:
        """The SQL of a named query of this dialect, for a connection of the
        application's (``jobtable.store.foreign``); the store runs nothing else."""

    @abstractmethod
    def _foreign_steps(self, jobs: Sequence[NewJob], now: datetime) -> Steps[list[WorkerJob]]:
        """Rule 2 as steps on a connection of the application's, inside its
        transaction: take the pair locks (SQLite: the write lock), then schedule."""

    @abstractmethod
    def _same_database(self, identity: list[Row]) -> str | None:
        """None when ``identity`` (the rows of the ``database_identity`` query run on a
        connection of the application's) names this store's database; else what it
        names instead, for the error."""

    @abstractmethod
    def _pair_locks(self, pairs: Sequence[tuple[str, int]]) -> Steps[None]:
        """Serialise schedulers of the same pairs until the transaction ends (steps)."""

    def _lock_pairs(self, tx: Tx, pairs: Sequence[tuple[str, int]]) -> None:
        """``_pair_locks`` run in ``tx``."""
        run_steps(tx, self._pair_locks(pairs))

    @abstractmethod
    def _finish(self, outcomes: Sequence[Outcome], now: datetime) -> Steps[dict[int, bool]]:
        """Write outcomes whose fencing token is current; return the ids written, each
        with whether its row ended cancelled (a cancel was requested while it ran)."""

    def _types_param(self, types: Sequence[str]) -> Any:
        """A list of type names as a query parameter (an array, or JSON text)."""
        return list(types)

    def _ids_param(self, ids: Sequence[int]) -> Any:
        """A list of integers as a query parameter (an array, or JSON text)."""
        return list(ids)

    def _lock_limited(self, types: Sequence[str]) -> Steps[None]:
        """Serialise the claimers of these limited types until the transaction ends."""
        yield from ()

    # -- scheduling ----------------------------------------------------------

    def stale_cutoff(self, now: datetime) -> datetime:
        """Rows started before this moment and still unfinished count as pending again."""
        return now - self.stale_limit

    def schedule(self, jobs: Sequence[NewJob], *,
                 cancelled: list[int] | None = None) -> list[WorkerJob]:
        """Schedule jobs by rule 2, all in one transaction; one row per job, in order.

        Each job's ``on_conflict`` applies to the pending rows it matches (its
        ``rules.Match``), in the table and earlier in the batch, as if the jobs were
        scheduled one after another: ``replace`` cancels them, ``keep`` returns the
        oldest instead of inserting (``inserted`` False), ``allow`` ignores them.
        When ``cancelled`` is given, the ids of the existing rows this call cancelled
        are appended to it.
        """
        if not jobs:
            return []
        with self.transaction() as tx:
            pairs = pair_order(jobs)
            self._lock_pairs(tx, pairs)
            now = utcnow()
            # Under the pair locks no other scheduler touches these pairs: the unfinished
            # rows before that are finished and cancelled at ``now`` after were ours.
            before = [] if cancelled is None else [
                row["id"] for t, u in pairs
                for row in tx.q("unfinished_for_pair", type=t, user_id=u)]
            scheduled = self._schedule_in(tx, jobs, now)
            if cancelled is not None:
                for job_id in before:
                    after = [self.to_job(r) for r in tx.q("get_job", id=job_id)]
                    if after and after[0].cancelled and after[0].finished == now:
                        cancelled.append(job_id)
            return scheduled

    def schedule_ids(self, jobs: Sequence[NewJob]) -> list[int]:
        """``schedule``, returning only the ids, in order."""
        return [j.id for j in self.schedule(jobs)]

    def schedule_on(self, connection: object, jobs: Sequence[NewJob]) -> list[WorkerJob]:
        """``schedule`` inside the transaction of an application's connection (see
        ``jobtable.store.foreign``): nothing is committed here."""
        from jobtable.store.foreign import schedule_on

        return schedule_on(self, connection, jobs) if jobs else []

    async def schedule_on_async(self, connection: object,
                                jobs: Sequence[NewJob]) -> list[WorkerJob]:
        """``schedule_on`` for an asyncio connection (a synchronous one is used on the
        calling thread)."""
        from jobtable.store.foreign import schedule_on_async

        return await schedule_on_async(self, connection, jobs) if jobs else []

    def ensure_chain(self, job: NewJob) -> WorkerJob:
        """Make sure exactly one chain of this cron job exists; start one if none does.

        An unfinished row of the pair with the same schedule is the chain: it is kept.
        Anything else matching is cancelled and a new first row inserted.
        """
        pairs = [(job.type, job.user_id)]
        with self.transaction() as tx:
            now = utcnow()
            self._lock_pairs(tx, pairs)
            stale = self.stale_cutoff(now)
            for row in tx.q("unfinished_for_pair", type=job.type, user_id=job.user_id):
                existing = self.to_job(row)
                if rules.same_chain(existing, job, stale):
                    return existing
            return self._schedule_in(tx, [job], now)[0]

    def stop_undeclared_chains(self, declared: dict[str, str]) -> list[int]:
        """Cancel pending declared-cron rows whose module no longer declares that schedule."""
        stopped = []
        with self.transaction() as tx:
            now = utcnow()
            for row in tx.q("undeclared_chains"):
                job = self.to_job(row)
                if rules.keeps_declared_chain(job, declared):
                    continue
                tx.q("cancel_by_id", id=job.id, now=self._t(now), stale=self._t(now),
                     result=self._json({"error": rules.UNDECLARED_MESSAGE}))
                stopped.append(job.id)
        return stopped

    def request_cancel(self, job_id: int, token: int) -> bool:
        """Ask the worker running ``job_id`` (claim ``token``) to stop it. False when the
        row is no longer running under that claim (it finished, or was given back)."""
        with self.statement() as tx:
            return bool(tx.q("request_cancel", id=job_id, token=token, now=self._t(utcnow())))

    def cancel_requests(self, running: dict[int, int]) -> list[int]:
        """Of ``running`` (job id to the claim's token), the ids asked to stop."""
        return self._run(self._cancel_requests_op(dict(running)))

    def _cancel_requests_op(self, running: dict[int, int]) -> Op[list[int]]:
        if not running:
            return []
        rows = yield Unit(self._one("cancel_requests", ids=self._ids_param(sorted(running))),
                          "read")
        return [int(r["id"]) for r in rows if running.get(int(r["id"])) == r["attempts"]]

    @staticmethod
    def _one(name: str, **params: Any) -> Steps[list[Row]]:
        """One named query as steps."""
        return (yield name, params)

    def cancel_job(self, job_id: int, reason: str = "Job cancelled by request") -> bool:
        """Cancel one pending job. Returns False when it is not pending."""
        with self.transaction() as tx:
            now = utcnow()
            rows = tx.q("get_job", id=job_id)
            if not rows:
                return False
            before = self.to_job(rows[0])
            if before.finished is not None:
                return False
            tx.q("cancel_by_id", id=job_id, now=self._t(now),
                 stale=self._t(self.stale_cutoff(now)), result=self._json({"error": reason}))
            after = self.to_job(tx.q("get_job", id=job_id)[0])
            if after.cancelled:
                run_steps(tx, self._notify_finished([job_id]))
        return after.cancelled

    # -- running operations ----------------------------------------------------

    def _run(self, op: Op[T]) -> T:
        """Run ``op`` on this thread, each unit in its own transaction or statement."""
        try:
            unit = next(op)
            while True:
                if unit.mode == "read":
                    result = run_steps(_ReadTx(self), unit.steps)
                else:
                    with (self.transaction() if unit.mode == "transaction"
                          else self.statement()) as tx:
                        result = run_steps(tx, unit.steps)
                unit = op.send(result)
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def _run_async(self, op: Op[T]) -> T:
        """Run ``op`` from the event loop: here on a thread (``_run``); a dialect whose
        driver has an asyncio side runs it in the loop once ``open_async`` was awaited."""
        return await asyncio.to_thread(self._run, op)

    # -- the worker's async side -------------------------------------------------
    # The worker calls these from its event loop. Each runs the same operation as its
    # sync twin; by default on a thread, in the loop on PostgreSQL.

    async def open_async(self) -> None:  # noqa: B027 - optional hook
        """Open what the async methods use in the running event loop (PostgreSQL: a
        small asyncio connection pool). Without it they run on a thread. Pair each call
        with ``close_async`` in the same loop."""

    async def close_async(self) -> None:  # noqa: B027 - optional hook
        """Close what ``open_async`` opened (when its last user closes it)."""

    async def claim_async(self, worker_id: str, limit: int,
                          max_attempts: int = DEFAULT_MAX_ATTEMPTS, *,
                          queue: str | None = None,
                          limits: Sequence[TypeLimits] = ()) -> list[WorkerJob]:
        """``claim`` from the event loop."""
        return await self._run_async(self._claim_op(worker_id, limit, max_attempts, queue,
                                                    list(limits)))

    async def complete_async(self, outcomes: Sequence[Outcome]) -> set[int]:
        """``complete`` from the event loop."""
        return await self._run_async(self._complete_op(list(outcomes)))

    async def next_due_async(self) -> datetime | None:
        """``next_due`` from the event loop."""
        return await self._run_async(self._next_due_op())

    async def release_unknown_claims_async(self, worker_id: str,
                                           running: set[int]) -> list[int]:
        """``release_unknown_claims`` from the event loop."""
        return await self._run_async(self._release_unknown_op(worker_id, set(running)))

    async def cancel_requests_async(self, running: dict[int, int]) -> list[int]:
        """``cancel_requests`` from the event loop."""
        return await self._run_async(self._cancel_requests_op(dict(running)))

    # -- the worker's side ---------------------------------------------------

    def claim(self, worker_id: str, limit: int,
              max_attempts: int = DEFAULT_MAX_ATTEMPTS, *, queue: str | None = None,
              limits: Sequence[TypeLimits] = ()) -> list[WorkerJob]:
        """Atomically claim up to ``limit`` due pending jobs: lower priority first, then
        earliest due, then lowest id; of one queue, or of every queue when ``queue`` is
        None; never of a paused queue.

        ``limits`` are the flow limits of the job types the caller runs. A limited type
        is claimed first, in a transaction that serialises its claimers and takes at most
        what its limits leave; every other type is claimed in one statement.
        """
        return self._run(self._claim_op(worker_id, limit, max_attempts, queue, limits))

    def _claim_op(self, worker_id: str, limit: int, max_attempts: int, queue: str | None,
                  limits: Sequence[TypeLimits]) -> Op[list[WorkerJob]]:
        """``claim``: the limited types in one transaction, then the others in one
        statement, then the rows that cannot be read failed (fenced)."""
        if limit <= 0:
            return []
        limited = [lim for lim in limits if lim.limited]
        rows: list[Row] = []
        if limited:
            rows += yield Unit(self._claim_limited_types(worker_id, limit, max_attempts,
                                                         queue, limited), "transaction")
        if len(rows) < limit:
            rows += yield Unit(self._claim_unlimited(
                worker_id, limit - len(rows), max_attempts, queue,
                [lim.type for lim in limited]), "statement")
        jobs, broken = self._decode(rows)
        if broken:
            yield Unit(self._fail_rows(broken, utcnow()), "statement")
        jobs.sort(key=lambda j: (j.priority, j.due, j.id))
        return jobs

    def _claim_unlimited(self, worker_id: str, limit: int, max_attempts: int,
                         queue: str | None, skip: Sequence[str]) -> Steps[list[Row]]:
        now = utcnow()
        params = dict(worker=worker_id, limit=limit, now=self._t(now),
                      stale=self._t(self.stale_cutoff(now)), max_attempts=max_attempts,
                      skip_types=self._types_param(skip))
        if queue is None:
            return (yield "claim", params)
        return (yield "claim_queue", dict(params, queue=queue))

    def _claim_limited_types(self, worker_id: str, limit: int, max_attempts: int,
                             queue: str | None,
                             limited: Sequence[TypeLimits]) -> Steps[list[Row]]:
        now = utcnow()
        yield from self._lock_limited([lim.type for lim in limited])
        rows: list[Row] = []
        for lim in limited:
            if len(rows) >= limit:
                break
            rows += yield from self._claim_limited(worker_id, limit - len(rows), now,
                                                   max_attempts, queue, lim)
        return rows

    def _claim_limited(self, worker_id: str, want: int, now: datetime, max_attempts: int,
                       queue: str | None, lim: TypeLimits) -> Steps[list[Row]]:
        """Claim up to ``want`` rows of one limited type, within its limits. The caller
        holds the type's claim lock."""
        stale = self._t(self.stale_cutoff(now))
        allowed = want
        if lim.concurrency is not None and not lim.per_user:
            running = yield "running_of_type", dict(type=lim.type, stale=stale, user_id=None)
            allowed = min(allowed, lim.concurrency - int(running[0]["n"]))
        if lim.rate is not None:
            started = yield "rate_starts", dict(type=lim.type,
                                                since=self._t(lim.rate.window_start(now)))
            allowed = min(allowed, lim.rate.count - int(started[0]["n"]))
        if allowed <= 0:
            return []
        params = dict(worker=worker_id, limit=allowed, now=self._t(now), stale=stale,
                      max_attempts=max_attempts, queue=queue, type=lim.type)
        if lim.per_user or lim.fair:
            per_user = lim.concurrency if lim.per_user and lim.concurrency else _NO_LIMIT
            rows = yield "claim_limited", dict(params, per_user=per_user, fair=lim.fair)
        else:
            rows = yield "claim_limited_plain", params
        if rows and lim.fair:
            users = sorted({int(r["user_id"]) for r in rows})
            yield Send("fair_served", dict(type=lim.type, now=self._t(now),
                                           user_ids=self._ids_param(users)))
        if rows and lim.rate is not None:
            yield Send("rate_add", dict(type=lim.type, bucket=self._t(lim.rate.bucket_of(now)),
                                        n=len(rows)))
            yield Send("rate_forget", dict(type=lim.type,
                                           before=self._t(lim.rate.window_start(now))))
        return rows

    # -- queues ------------------------------------------------------------------

    def pause_queue(self, name: str, until: datetime | None) -> None:
        """Pause claims from queue ``name`` (until ``until``, or until resumed)."""
        with self.statement() as tx:
            tx.q("pause_queue", queue=name, paused=True, until=self._t(until),
                 now=self._t(utcnow()))

    def resume_queue(self, name: str) -> None:
        """Let claims take from queue ``name`` again."""
        with self.statement() as tx:
            tx.q("pause_queue", queue=name, paused=False, until=None, now=self._t(utcnow()))

    def queues(self) -> list[QueueInfo]:
        """Every queue that has unfinished rows or was ever paused, by name."""
        now = utcnow()
        out: dict[str, QueueInfo] = {}
        for r in self.read("queue_counts"):
            out[r["queue"]] = QueueInfo(name=r["queue"], pending=int(r["pending"] or 0),
                                        running=int(r["running"] or 0))
        for r in self.read("queue_rows"):
            until = None if r["paused_until"] is None else self._time(r["paused_until"])
            paused = bool(r["paused"]) and (until is None or until > now)
            info = out.get(r["name"], QueueInfo(name=r["name"]))
            out[r["name"]] = QueueInfo(name=info.name, pending=info.pending,
                                       running=info.running, paused=paused,
                                       paused_until=until if paused else None)
        return [out[name] for name in sorted(out)]

    def running_of_type(self, job_type: str, user_id: int | None = None) -> int:
        """Running (started, unfinished, not stale) rows of ``job_type`` (of one user)."""
        rows = self.read("running_of_type", type=job_type, user_id=user_id,
                         stale=self._t(self.stale_cutoff(utcnow())))
        return int(rows[0]["n"])

    def recent_starts(self, job_type: str, since: datetime) -> int:
        """Starts of a rate-limited ``job_type`` counted since ``since``."""
        return int(self.read("rate_starts", type=job_type, since=self._t(since))[0]["n"])

    def _decode(self, rows: Sequence[Row]) -> tuple[list[WorkerJob], list[tuple[Row, str]]]:
        """The rows as jobs, one by one: a row that cannot be read (its data is not valid
        JSON, a value out of range) is set aside with the reason instead of failing all."""
        jobs: list[WorkerJob] = []
        broken: list[tuple[Row, str]] = []
        for row in rows:
            try:
                jobs.append(self.to_job(row))
            except Exception as exc:
                broken.append((row, f"{type(exc).__name__}: {exc}".splitlines()[0][:500]))
        return jobs, broken

    def _fail_rows(self, broken: Sequence[tuple[Row, str]], now: datetime) -> Steps[set[int]]:
        """Fail rows (as claimed, with their ``attempts``) that cannot be read, fenced by
        that claim, with an error naming the problem; returns the ids written."""
        outcomes = []
        for row, problem in broken:
            stand_in = WorkerJob(
                id=int(row["id"]), type=str(row["type"]), user_id=0, data={}, due=now,
                started=None, finished=None, remove_at=None, success=None, result=None,
                cron_schedule=None, cron_timezone=None, auto_reschedule_on_failure=False,
                auto_reschedule_on_failure_delay=0, remove_delay=0,
                rescheduled_from_job=None, cancelled=False, attempts=int(row["attempts"]),
                claimed_by=None, declared=False, created_at=now, updated_at=now)
            outcomes.append(Outcome(job=stand_in, success=False, result={
                "error": f"the row of job {stand_in.id} cannot be read, so it cannot run: "
                         f"{problem}",
                "exception": "UnreadableRow"}))
        return set((yield from self._finish(outcomes, now)))

    def complete(self, outcomes: Sequence[Outcome]) -> set[int]:
        """Write outcomes in one transaction, with their follow-up rows.

        An outcome is written only if its claim is still current (fencing); a late
        write of a rescued job is refused. Returns the ids that were written.
        """
        return self._run(self._complete_op(outcomes))

    def _complete_op(self, outcomes: Sequence[Outcome]) -> Op[set[int]]:
        """``complete``: plain outcomes in one statement; with follow-ups or snoozes, one
        transaction."""
        if not outcomes:
            return set()
        snoozes = [o for o in outcomes if o.snooze_until is not None]
        finishes = [o for o in outcomes if o.snooze_until is None]
        follow = [o for o in finishes if o.follow_up is not None]
        written: set[int]
        if not follow and not snoozes:
            written = yield Unit(self._finish_plain(finishes), "statement")
        else:
            written = yield Unit(self._finish_with_follow_ups(finishes, snoozes, follow),
                                 "transaction")
        return written

    def _finish_plain(self, finishes: Sequence[Outcome]) -> Steps[set[int]]:
        done = set((yield from self._finish(finishes, utcnow())))
        yield from self._notify_finished(sorted(done))
        return done

    def _finish_with_follow_ups(self, finishes: Sequence[Outcome], snoozes: Sequence[Outcome],
                                follow: Sequence[Outcome]) -> Steps[set[int]]:
        now = utcnow()
        finishes = list(finishes)
        # Locks first, then the outcomes: a scheduler of the same pair waits for the
        # whole completion instead of deadlocking with it. A snooze refused because a
        # cancel was requested ends cancelled; a cron row's chain then goes on.
        yield from self._pair_locks(pair_order([o.job for o in follow] +
                                               [o.job for o in snoozes if o.job.is_cron]))
        snoozed = set()
        for o in snoozes:
            if (yield "snooze", dict(id=o.job.id, token=o.job.attempts,
                                     due=self._t(o.snooze_until), now=self._t(now))):
                snoozed.add(o.job.id)
            else:
                finishes.append(rules.cancelled(o.job, now))
        written = (yield from self._finish(finishes, now)) if finishes else {}
        jobs = []
        for o in finishes:
            if o.job.id not in written:
                continue
            # A cancel requested while the job ran wins over its own outcome.
            nxt = rules.cancelled(o.job, now).follow_up \
                if written[o.job.id] and not o.cancelled else o.follow_up
            if nxt is not None:
                jobs.append(nxt)
        if jobs:
            yield from self._schedule_steps(jobs, now)
        yield from self._notify_finished(sorted(written))
        return set(written) | snoozed

    def release_claim(self, job_id: int, token: int, *, crashed: bool = False) -> bool:
        """Make a claimed job pending again (its attempt stays counted), if the claim is
        still current; ``crashed`` charges the job a crash (it crashed running alone)."""
        with self.transaction() as tx:
            rows = tx.q("get_job", id=job_id)
            if not rows or int(rows[0]["attempts"]) != token:
                return False
            tx.q("reset_claim_crashed" if crashed else "reset_claim", id=job_id, token=token,
                 now=self._t(utcnow()))
        return True

    def charge_crash(self, job_id: int, token: int) -> None:
        """Count a crash against a claimed job about to be failed for it (fenced)."""
        with self.statement() as tx:
            tx.q("charge_crash", id=job_id, token=token)

    def release_unknown_claims(self, worker_id: str, running: set[int]) -> list[int]:
        """Make pending again the rows claimed by ``worker_id`` that it is not running.

        A claim whose commit succeeded while its reply was lost (the connection broke)
        leaves rows the worker never heard of; without this they would wait for the
        stale limit.
        """
        return self._run(self._release_unknown_op(worker_id, set(running)))

    def _release_unknown_op(self, worker_id: str, running: set[int]) -> Op[list[int]]:
        released: list[int] = yield Unit(self._release_unknown(worker_id, running),
                                         "transaction")
        return released

    def _release_unknown(self, worker_id: str, running: set[int]) -> Steps[list[int]]:
        released = []
        now = self._t(utcnow())
        for row in (yield "claimed_by_worker", dict(worker=worker_id)):
            if row["id"] not in running:
                yield Send("reset_claim", dict(id=row["id"], token=row["attempts"], now=now))
                released.append(int(row["id"]))
        return released

    def next_due(self) -> datetime | None:
        """The earliest ``due`` of a pending job, or None."""
        return self._run(self._next_due_op())

    def _next_due_op(self) -> Op[datetime | None]:
        rows = yield Unit(self._one("next_due"), "read")
        return self._time(rows[0]["due"]) if rows and rows[0]["due"] is not None else None

    def heartbeat(self, worker_id: str, concurrency: int, pid: int) -> None:
        """Record that this worker process is alive (registering it the first time)."""
        with self.transaction() as tx:
            tx.q("heartbeat", id=worker_id, host=socket.gethostname(), pid=pid,
                 concurrency=concurrency, now=self._t(utcnow()))

    def unregister_worker(self, worker_id: str) -> None:
        """Remove this worker's heartbeat row (clean shutdown)."""
        with self.transaction() as tx:
            tx.q("unregister_worker", id=worker_id)

    def live_workers(self, within: timedelta) -> list[WorkerInfo]:
        """Worker processes whose heartbeat is younger than ``within``."""
        rows = self.read("live_workers", alive=self._t(utcnow() - within))
        return [WorkerInfo(id=r["id"], host=r["host"], pid=r["pid"],
                           concurrency=r["concurrency"], started=self._time(r["started"]),
                           last_seen=self._time(r["last_seen"]),
                           loop_blocked_ms=int(r.get("loop_blocked_ms") or 0)) for r in rows]

    def rescue(self, dead_after: timedelta, max_attempts: int = DEFAULT_MAX_ATTEMPTS, *,
               seen_since: datetime | None = None, charge_deaths: bool = True,
               decided_at: datetime | None = None) -> RescueReport:
        """Make jobs of dead workers (and stale jobs) pending again, or fail them for good.

        A worker is dead when its last heartbeat is older than ``dead_after``; with
        ``seen_since``, only workers last seen at or after it count (the caller could
        reach the database since then, so their silence is not an outage's).
        ``charge_deaths`` counts each death against the job (see ``rules.rescue``); a
        job given up on is failed, a cron job's chain still continues at its next
        occurrence. A job cancelled or superseded while it ran is cancelled instead.
        ``decided_at`` (default: now) is when the caller judged the database reachable:
        silence is measured up to then, so a pass delayed by an outage rescues no worker
        that was alive when it was decided.
        """
        with self.transaction() as tx:
            now = utcnow()
            dead = self._t(min(now, decided_at or now) - dead_after)
            since = self._t(seen_since or datetime(1970, 1, 1, tzinfo=now.tzinfo))
            rows = tx.q("abandoned", stale=self._t(self.stale_cutoff(now)), dead=dead,
                        seen_since=since)
            report, to_fail = self._rescue_rows(tx, rows, now, max_attempts, charge_deaths)
            tx.q("delete_dead_workers", dead=dead, seen_since=since)
        return self._give_up(report, to_fail)

    def release_worker(self, worker_id: str, max_attempts: int = DEFAULT_MAX_ATTEMPTS, *,
                       charge_deaths: bool = False) -> RescueReport:
        """The worker process ``worker_id`` is known to be dead (its parent saw it exit):
        make its running jobs pending again at once, each fenced by its current claim
        (``rules.rescue`` decides as for any rescue), and forget its heartbeat."""
        with self.transaction() as tx:
            now = utcnow()
            rows = tx.q("running_of_worker", worker=worker_id)
            report, to_fail = self._rescue_rows(tx, rows, now, max_attempts, charge_deaths)
            tx.q("unregister_worker", id=worker_id)
        return self._give_up(report, to_fail)

    def _rescue_rows(self, tx: Tx, rows: Sequence[Row], now: datetime, max_attempts: int,
                     charge: bool) -> tuple[RescueReport, list[Outcome]]:
        reset: list[int] = []
        cancelled: list[int] = []
        to_fail: list[Outcome] = []
        jobs, broken = self._decode(rows)
        # Unreadable rows cannot run: failed, not reset to loop forever.
        unreadable = sorted(run_steps(tx, self._fail_rows(broken, now))) if broken else []
        t = self._t(now)
        for job in jobs:
            newer = [] if job.started is None else self._decode(tx.q(
                "newer_for_pair", type=job.type, user_id=job.user_id, id=job.id,
                since=self._t(job.started)))[0]
            why = rules.rescue_cancel(job, newer)
            if why is not None:
                tx.q("cancel_claimed", id=job.id, token=job.attempts, now=t,
                     result=self._json({"error": why}))
                cancelled.append(job.id)
                continue
            try:
                given_up = rules.rescue(job, now, max_attempts, charged=charge)
            except Exception as exc:  # no next run can be computed (an invalid cron)
                given_up = Outcome(job=job, success=False, result={
                    "error": f"Job abandoned: its worker died and its chain cannot "
                             f"continue: {type(exc).__name__}: {exc}"[:2000],
                    "exception": "Abandoned"})
            if given_up is not None:
                if charge and not given_up.cancelled:
                    tx.q("charge_crash", id=job.id, token=job.attempts)
                to_fail.append(given_up)
            else:
                tx.q("reset_claim_crashed" if charge else "reset_claim", id=job.id,
                     token=job.attempts, now=t)
                reset.append(job.id)
        return RescueReport(reset=reset, failed=unreadable, cancelled=cancelled), to_fail

    def _give_up(self, report: RescueReport, to_fail: list[Outcome]) -> RescueReport:
        failed = sorted(self.complete(to_fail)) if to_fail else []
        return RescueReport(reset=report.reset, failed=sorted(report.failed + failed),
                            cancelled=report.cancelled)

    def mark_loop_blocked(self, worker_id: str, job_ids: Sequence[int], blocked_ms: int,
                          added_ms: int) -> None:
        """Record a blocked event loop: on each job that ran on it, the longest block
        seen (``blocked_ms``); on the worker's heartbeat row, ``added_ms`` more in total."""
        with self.transaction() as tx:
            for job_id in job_ids:
                tx.q("mark_loop_blocked", id=job_id, ms=blocked_ms)
            if added_ms:
                tx.q("worker_loop_blocked", id=worker_id, ms=added_ms)

    def heartbeat_store(self) -> Store:
        """A store for a heartbeat thread: one whose connection the rest of the process
        never holds (this store itself where heartbeats already use their own)."""
        return self

    def cleanup(self, failed_retention: timedelta, keep_id: int = 0,
                batch: int = 5000) -> int:
        """Delete succeeded jobs past ``remove_at`` and failed/cancelled ones past retention.

        Unfinished rows are never deleted. Works in batches so that a large backlog
        never holds the write lock for long.
        """
        total = 0
        while True:
            with self.transaction() as tx:
                now = utcnow()
                n = self._delete_removable(tx, now, now - failed_retention, keep_id, batch)
            total += n
            if n < batch:
                return total

    def table_health(self) -> TableHealth:
        """Live and dead rows and size of the table (estimates; cheap at any size)."""
        return TableHealth(live=0, dead=0, size_bytes=0, last_vacuum=None)

    def maintain(self, interval: timedelta) -> bool:
        """Vacuum and analyze the table when it is bloating and neither this nor the
        server's autovacuum did so within ``interval``; True when it did. For a server
        whose autovacuum is off or falls behind a queue's churn. A zero ``interval``
        never vacuums."""
        if interval <= timedelta(0):
            return False
        health = self.table_health()
        if not health.bloating:
            return False
        if health.last_vacuum is not None and utcnow() - health.last_vacuum < interval:
            return False
        self._vacuum()
        return True

    def _vacuum(self) -> None:  # noqa: B027 - optional hook
        """Reclaim dead rows and refresh the planner's statistics."""

    @abstractmethod
    def _delete_removable(self, tx: Tx, now: datetime, failed_before: datetime,
                          keep_id: int, batch: int) -> int:
        """Delete one batch of removable rows; return how many."""

    def fill(self, job_type: str, *, finished: int = 0, pending: int = 0,
             pending_due: datetime | None = None, first_user: int = 1_000_000_000,
             batch: int = 100_000) -> None:
        """Insert ``finished`` succeeded rows (kept for a day) and ``pending`` rows of
        ``job_type``, in statements of ``batch`` rows: a table with a history and a
        backlog, for benchmarks and plan tests. Pending rows are due at ``pending_due``
        (by default in a day), each with its own user_id from ``first_user`` up."""
        if finished < 0 or pending < 0:
            raise ConfigError(f"fill needs counts >= 0, got finished={finished}, "
                              f"pending={pending}")
        now = utcnow()
        due = pending_due or now + timedelta(days=1)
        done = 0
        while done < finished:
            n = min(batch, finished - done)
            with self.transaction() as tx:
                tx.q("fill_finished", type=job_type, n=n, now=self._t(now),
                     result=self._json(None), remove_at=self._t(now + timedelta(days=1)))
            done += n
        done = 0
        while done < pending:
            n = min(batch, pending - done)
            with self.transaction() as tx:
                tx.q("fill_pending", type=job_type, n=n, first_user=first_user + done,
                     due=self._t(due), now=self._t(now))
            done += n

    # -- reading -------------------------------------------------------------

    def get_job(self, job_id: int) -> WorkerJob | None:
        """One row by id."""
        rows = self.read("get_job", id=job_id)
        return self.to_job(rows[0]) if rows else None

    def chain(self, job_id: int) -> list[WorkerJob]:
        """The reschedule chain through ``job_id``: ancestors, the job, descendants."""
        job = self.get_job(job_id)
        if job is None:
            return []
        before: list[WorkerJob] = []
        parent = job.rescheduled_from_job
        while parent is not None and len(before) < 1000:
            row = self.get_job(parent)
            if row is None:
                break
            before.insert(0, row)
            parent = row.rescheduled_from_job
        after: list[WorkerJob] = []
        current = job.id
        while len(after) < 1000:
            kids = [self.to_job(r) for r in self.read("children", id=current)]
            if not kids:
                break
            after.extend(kids)
            current = kids[-1].id
        return [*before, job, *after]

    def list_jobs(self, *, status: str | None = None, type: str | None = None,
                  user_id: int | None = None, limit: int = 50, offset: int = 0,
                  before_id: int | None = None,
                  type_prefix: str | None = None) -> list[WorkerJob]:
        """Jobs, newest first, filtered by status, type (or its start) and user."""
        name = {"pending": "list_unfinished", "running": "list_running"}.get(status or "",
                                                                          "list_jobs")
        rows = self.read(name, status=check_status(status), type=type,
                         type_prefix=type_prefix or None, user_id=user_id,
                         before_id=before_id, limit=limit, offset=offset)
        return [self.to_job(r) for r in rows]

    def search_data(self, text: str, *, window: int, status: str | None = None,
                    type_prefix: str | None = None, user_id: int | None = None,
                    limit: int = 50, offset: int = 0) -> list[WorkerJob]:
        """Jobs among the newest ``window`` ids whose data, as JSON text, contains
        ``text`` (ASCII letters in any case), newest first, with ``list_jobs``' filters."""
        needle = text.lower()
        for special in ("!", "%", "_"):
            needle = needle.replace(special, "!" + special)
        rows = self.read("search_data", pattern=f"%{needle}%", window=window,
                         status=check_status(status), type_prefix=type_prefix or None,
                         user_id=user_id, limit=limit, offset=offset)
        return [self.to_job(r) for r in rows]

    def count_jobs(self, *, status: str | None = None, type: str | None = None,
                   user_id: int | None = None, type_prefix: str | None = None,
                   at_most: int | None = None) -> int:
        """How many jobs match the filters of ``list_jobs``. With ``at_most``, counting
        may stop there: a result of ``at_most`` or more means "at least that many", and
        the cost is bounded by it (or, for pending and running, by the unfinished rows)
        instead of by the table's history."""
        name = {"pending": "count_unfinished", "running": "count_running"}.get(
            status or "", "count_jobs")
        rows = self.read(name, status=check_status(status), type=type,
                         type_prefix=type_prefix or None, user_id=user_id,
                         cap=_NO_LIMIT if at_most is None else max(0, at_most))
        return int(rows[0]["n"])

    def history_sample(self) -> float:
        """The percentage of the table that the history figures read (finished counts,
        throughput, run times, retries, rescues): 100 means exact. On a large table
        each dialect reads a fixed part (PostgreSQL: pages, SQLite: blocks of ids) and
        scales up, so these figures cost the same whatever the history's size."""
        return self._history_sample()[0]

    def _history_sample(self) -> tuple[float, dict[str, Any]]:
        """The percentage read and the parameters that make the queries read it."""
        return 100.0, {"pct": 100.0}

    def counts(self) -> dict[str, dict[str, int]]:
        """{type: {status: count}}: pending and running exact, finished statuses over the
        whole table (estimated from a sample when ``history_sample()`` is below 100)."""
        pct, sample = self._history_sample()
        out: dict[str, dict[str, int]] = {}
        for r in self.read("count_active"):
            out.setdefault(r["type"], {})[r["status"]] = int(r["n"])
        for r in self.read("count_finished", **sample):
            out.setdefault(r["type"], {})[r["status"]] = _scaled(r["n"], pct)
        return out

    def retry_candidates(self, *, status: str, type: str | None = None,
                         user_id: int | None = None, limit: int | None = None) -> list[int]:
        """Ids of failed (or cancelled) jobs matching the filters that no row retries yet,
        oldest first."""
        check_status(status, [s.value for s in rules.RETRYABLE])
        rows = self.read("retry_candidates", status=status, type=type, user_id=user_id,
                         limit=_NO_LIMIT if limit is None else limit)
        return [int(r["id"]) for r in rows]

    def make_due_now(self, job_id: int) -> None:
        """Make a pending, not yet due row due now."""
        with self.statement() as tx:
            tx.q("make_due_now", id=job_id, now=self._t(utcnow()))

    def count_purgeable(self, statuses: Sequence[str], cutoff: datetime) -> int:
        """How many finished rows of ``statuses`` finished before ``cutoff``."""
        rows = self.read("count_purgeable", cutoff=self._t(cutoff),
                         **_purge_flags(statuses))
        return int(rows[0]["n"])

    def purge_batch(self, statuses: Sequence[str], cutoff: datetime, batch: int) -> int:
        """Delete one batch of finished rows of ``statuses`` finished before ``cutoff``;
        return how many. Unfinished rows are never deleted."""
        with self.transaction() as tx:
            return len(tx.q("purge_batch", cutoff=self._t(cutoff), batch=batch,
                            **_purge_flags(statuses)))

    def throughput(self, since: datetime, until: datetime) -> dict[datetime, tuple[int, int]]:
        """{minute: (succeeded, failed)} of jobs finished in [since, until)."""
        out = {}
        pct, sample = self._history_sample()
        for r in self.read("throughput", since=self._t(since), until=self._t(until),
                           **sample):
            out[self._minute(r["minute"])] = (_scaled(r["succeeded"], pct),
                                              _scaled(r["failed"], pct))
        return out

    def oldest_pending_due(self, now: datetime) -> datetime | None:
        """The ``due`` of the longest-waiting due pending job, if any."""
        rows = self.read("oldest_pending_due", now=self._t(now))
        value = rows[0]["due"] if rows else None
        return None if value is None else self._time(value)

    def runtimes(self, since: datetime,
                 bounds: Sequence[float]) -> list[tuple[str, int, float, list[int]]]:
        """Per type of the jobs finished (not cancelled) since ``since``: (type, count,
        total seconds, cumulative counts at most each of the ``bounds``)."""
        if len(bounds) != RUNTIME_BOUNDS:
            raise ConfigError(f"run-time histograms have {RUNTIME_BOUNDS} buckets, "
                              f"got {len(bounds)}")
        params = {f"b{i}": float(b) for i, b in enumerate(bounds)}
        pct, sample = self._history_sample()
        return [(str(r["type"]), _scaled(r["n"], pct),
                 float(r["total"] or 0.0) * 100.0 / pct,
                 [_scaled(r[f"b{i}"], pct) for i in range(len(bounds))])
                for r in self.read("runtimes", since=self._t(since), **sample, **params)]

    def retries_by_type(self) -> dict[str, int]:
        """Rows in the table that retry a failed row, per type."""
        pct, sample = self._history_sample()
        return {r["type"]: _scaled(r["n"], pct) for r in self.read("retries_by_type", **sample)}

    def rescued_by_type(self) -> dict[str, int]:
        """Rows in the table claimed more than once, per type."""
        pct, sample = self._history_sample()
        return {r["type"]: _scaled(r["n"], pct) for r in self.read("rescued_by_type", **sample)}

    def job_types(self) -> list[str]:
        """Every type that has rows in the table."""
        return [str(r["type"]) for r in self.read("job_types")]

    def cron_rows(self) -> list[WorkerJob]:
        """The unfinished row of every cron chain, by type and user."""
        return [self.to_job(r) for r in self.read("cron_rows")]

    # -- value conversion (overridden per dialect) ---------------------------

    def _t(self, value: datetime | None) -> Any:
        return value

    def _time(self, value: Any) -> datetime:
        assert isinstance(value, datetime)
        return value

    def _json(self, value: Any) -> Any:
        return json.dumps(value)

    def _minute(self, value: Any) -> datetime:
        return self._time(value)

    def cancel_result(self) -> Any:
        """The ``result`` of a job cancelled by a newer one."""
        return self._json({"error": CANCELLED_MESSAGE})

    # -- waiting for a job to finish ---------------------------------------------------

    def finish_watch(self) -> FinishWatch:
        """A watch for finished jobs (``JobTable.wait_for``); open it before the first
        read of the row, so that no sign is missed in between."""
        return FinishWatch()

    def _notify_finished(self, job_ids: Sequence[int]) -> Steps[None]:
        """Signal waiters that ``job_ids`` finished (when the transaction commits)."""
        yield from ()

    def children(self, job_id: int) -> list[WorkerJob]:
        """The rows that follow ``job_id`` (its retries, its cron chain's next run)."""
        return [self.to_job(r) for r in self.read("children", id=job_id)]

    # -- worker support: wake-ups and driver errors ---------------------------------
    # The worker uses only these, so that it never imports a driver or asks which
    # database it runs on.

    def wakeups(self, event: asyncio.Event) -> Wakeups:
        """A watcher that sets ``event`` when another process may have made a job due."""
        return Wakeups(event)

    @classmethod
    def is_transient(cls, exc: BaseException) -> bool:
        """True for errors that retrying can cure: a lost connection, a busy database."""
        return isinstance(exc, (ConnectionError, TimeoutError, OSError))

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

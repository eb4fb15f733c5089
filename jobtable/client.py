"""``JobTable``: the application's handle on the queue."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, overload

from jobtable import rules
from jobtable.cron import parse_cron
from jobtable.errors import (
    ActionRefusedError,
    ConfigError,
    InvalidDataError,
    InvalidJobError,
    JobNotFoundError,
    MigrationError,
    UnknownJobTypeError,
)
from jobtable.model import (
    UNSET,
    JobStatus,
    NewJob,
    WorkerJob,
    WorkerJobConfig,
    check_queue,
    check_unique_key,
    dump_json,
)
from jobtable.registry import Registry, discover
from jobtable.reports import (
    RUNTIME_BUCKETS,
    Bucket,
    CronChain,
    Runtimes,
    ScheduleReport,
    Stats,
)
from jobtable.routing import QueueInfo, is_paused
from jobtable.settings import Settings, load_settings
from jobtable.store import Store, open_store
from jobtable.store.base import STATUSES, RescueReport, WorkerInfo
from jobtable.timeutil import parse_duration, require_aware, to_timedelta, utcnow

PURGE_BATCH = 1000
RETRY_BATCH = 200
SEARCH_WINDOW = 10_000  # newest jobs a data search reads
MAX_TEMPLATES = 1000  # job types whose row template is kept
# Lists (the dashboard's, `jobtable jobs`) count their matches up to here, then say
# "more than": a whole count would read the whole history on every refresh.
COUNT_CAP = 10_000


class JobTable:
    """Schedule and inspect jobs. Safe to share between threads and asyncio tasks.

    ``JobTable()`` uses ``sqlite:///jobtable.db`` and ``./jobs`` unless settings
    (arguments, ``JOBTABLE_*`` variables, ``[tool.jobtable]``) say otherwise.
    Every ``*_async`` method is the same operation run off the event loop.

    Scheduling a type that has no module in the jobs folder raises
    ``UnknownJobTypeError`` (it catches typos) when the ``JobTable`` has a jobs folder.
    A producer without the job code (no jobs folder, or ``strict=False``) may schedule
    any type by name; the worker that has the folder runs it. ``known_types`` names
    types accepted beside the folder's, others still being refused. A type scheduled
    without its module is not checked against its ``Data`` and takes no module defaults.
    """

    def __init__(self, database: str | None = None, jobs: str | Path | None = None, *,
                 stale_limit: timedelta | float | None = None,
                 auto_migrate: bool | None = None, settings: Settings | None = None,
                 strict: bool | None = None,
                 known_types: Iterable[str] | None = None) -> None:
        base = settings or load_settings()
        self.settings = base.with_overrides(
            database=database, jobs=None if jobs is None else str(jobs),
            stale_limit=stale_limit, auto_migrate=auto_migrate)
        jobs_path = self.settings.jobs
        explicit = jobs is not None or (settings is not None and settings.jobs != "jobs")
        if not explicit and not Path(jobs_path).exists() and "." not in jobs_path:
            self.registry: Registry = discover(None)
        else:
            self.registry = discover(jobs_path, self.settings.bindings)
        if known_types is not None and isinstance(known_types, str):
            raise ConfigError("known_types must be a list of job type names, not one string, "
                              f"got {known_types!r}")
        self.known_types: frozenset[str] = frozenset(known_types or ())
        #: Whether scheduling refuses a type the registry (and ``known_types``) lacks:
        #: by default only when there is a jobs folder.
        self.strict: bool = (self.registry.source is not None or bool(self.known_types)
                             if strict is None else strict)
        self._store: Store = open_store(self.settings.database,
                                        stale_limit=self.settings.stale_limit)
        self._migrated = False
        self._migrate_lock = threading.Lock()
        self._wakeups: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        # Per job type: (its module's defaults, the policy settings, its row template).
        self._templates: dict[str, tuple[dict[str, Any], dict[str, Any], NewJob]] = {}

    # -- life cycle -------------------------------------------------------------

    def migrate(self) -> list[str]:
        """Apply pending migrations; return their names."""
        with self._migrate_lock:
            applied = self._store.migrate()
            self._migrated = True
            return applied

    def _ready(self) -> Store:
        if not self._migrated:
            with self._migrate_lock:
                if not self._migrated:
                    if self.settings.auto_migrate:
                        self._store.migrate()
                    else:
                        pending = self._store.pending_migrations()
                        if pending:
                            raise MigrationError(
                                f"the database needs migrations {pending}; run "
                                "'jobtable migrate'")
                    self._migrated = True
        return self._store

    def ready(self) -> None:
        """Open the database now and check its schema (migrating it when ``auto_migrate``
        is on): fail early, with a clear error, if it cannot be used."""
        self._ready()

    @property
    def store(self) -> Store:
        """The underlying store. Internal: use ``JobTable``'s methods; kept for tests and
        tools that drive the store directly."""
        return self._store

    def close(self) -> None:
        """Close the database connections."""
        self._store.close()

    def __enter__(self) -> JobTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> JobTable:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    # -- scheduling -------------------------------------------------------------

    def _new_job(self, config: WorkerJobConfig, cron: str | None = None,
                 timezone: str | None = None, declared: bool = False,
                 now: datetime | None = None,
                 batch: dict[str, tuple[NewJob, str]] | None = None) -> NewJob:
        if not isinstance(config, WorkerJobConfig):
            raise InvalidJobError(
                f"expected a WorkerJobConfig, got {type(config).__name__}")
        if cron is None and not declared:
            job = self._plain_job(config, now, batch)
            if job is not None:
                return job
        valid = config.validated(self.registry.defaults(config.type), self._policy_settings())
        self._check_type(valid.type, valid.data)
        return rules.new_job(valid, now or utcnow(), cron=cron, timezone=timezone,
                             declared=declared)

    def _policy_settings(self) -> dict[str, Any]:
        return {"max_retries": self.settings.max_retries,
                "max_backoff": self.settings.max_backoff}

    def _check_type(self, job_type: str, data: dict[str, Any]) -> None:
        if job_type in self.registry:
            self.registry.check_data(job_type, data)
        elif self.strict and job_type not in self.known_types:
            raise UnknownJobTypeError(job_type, [*self.registry.names, *self.known_types])

    def _plain_job(self, config: WorkerJobConfig, now: datetime | None,
                   batch: dict[str, tuple[NewJob, str]] | None = None) -> NewJob | None:
        """The row of a config that leaves every policy to its job type (the common
        case), from the type's row template: its module's defaults are checked once,
        not per job. None when the full check must run: the config sets a policy, or
        something in it is wrong (the full check names the first problem, as always).
        ``batch`` keeps each type's template and data check for the rest of one call.
        """
        if (config.auto_reschedule_on_failure is not None
                or config.auto_reschedule_on_failure_delay is not None
                or config.remove_delay is not None or config.queue is not None
                or config.priority is not None or config.on_conflict is not None
                or config.max_retries is not UNSET or config.backoff is not None
                or config.max_backoff is not None):
            return None
        job_type, user_id = config.type, config.user_id
        if type(user_id) is not int or not -(2**63) <= user_id < 2**63:
            return None
        plan = None if batch is None else batch.get(job_type)
        if plan is None:
            template = self._template(job_type)
            if template is None:
                return None
            plan = (template, self._data_check(job_type))
            if batch is not None:
                batch[job_type] = plan
        template, check = plan
        data: Any = config.data
        if data is None or (type(data) is dict and not data):
            data, data_json = {}, "{}"
        elif type(data) is dict:
            try:
                data_json = dump_json(data, "data")
            except InvalidDataError:
                return None
            data = json.loads(data_json)
        else:
            return None
        due = config.due
        try:
            if due is not None:
                due = require_aware(due, "due")
            unique_key = check_unique_key(config.unique_key)
        except InvalidJobError:
            return None
        if check == "data":
            self.registry.check_data(job_type, data)
        elif check == "unknown":
            self._check_type(job_type, data)
        return rules.new_job_like(template, user_id=user_id, data=data, data_json=data_json,
                                  due=due or now or utcnow(), unique_key=unique_key)

    def _data_check(self, job_type: str) -> str:
        """What ``_check_type`` does for ``job_type``: ``"data"`` (check the data against
        the module's ``Data``), ``"unknown"`` (refuse the type) or ``"none"``."""
        if job_type in self.registry:
            known = self.registry.get(job_type)
            return "none" if known is None or known.data_type is None else "data"
        if self.strict and job_type not in self.known_types:
            return "unknown"
        return "none"

    def _template(self, job_type: object) -> NewJob | None:
        """A new row of ``job_type`` with the policies its module and the settings give,
        checked; None for a name that is not a valid type or defaults that are wrong."""
        if type(job_type) is not str:
            return None
        defaults = self.registry.defaults(job_type)
        settings = self._policy_settings()
        cached = self._templates.get(job_type)
        if cached is not None and cached[0] == defaults and cached[1] == settings:
            return cached[2]
        try:
            valid = WorkerJobConfig(type=job_type).validated(defaults, settings)
        except InvalidJobError:
            return None
        template = rules.new_job(valid, utcnow())
        if len(self._templates) >= MAX_TEMPLATES:
            self._templates.clear()
        self._templates[job_type] = (defaults, settings, template)
        return template

    def schedule_job(self, config: WorkerJobConfig, *,
                     connection: object | None = None) -> WorkerJob:
        """Schedule a one-off job by rule 2, in one transaction. Returns its row.

        What the job matches: pending jobs of its type and user_id (with a
        ``unique_key``, only those with that key). ``on_conflict`` says what happens to
        them: ``"replace"`` (default) cancels them, then inserts; ``"keep"`` inserts
        nothing when one exists and returns it, with ``inserted`` False (a new row has
        ``inserted`` True); ``"allow"`` inserts beside them.

        ``connection``: the application's own open connection to the same database (a
        psycopg 3 ``Connection``, an ``sqlite3.Connection``, a SQLAlchemy ``Connection``
        or ``Session``, Django's ``django.db.connection``). The job is then written in
        that connection's transaction, which jobtable does not commit: workers see it
        when the application commits, and never if it rolls back. A connection to
        another database, closed, or in a failed transaction raises
        ``UnusableConnectionError`` and writes nothing.
        """
        return self._schedule([self._new_job(config)], connection)[0]

    @overload
    def schedule_jobs(self, configs: Sequence[WorkerJobConfig], *,
                      connection: object | None = None,
                      return_rows: Literal[True] = True) -> list[WorkerJob]: ...

    @overload
    def schedule_jobs(self, configs: Sequence[WorkerJobConfig], *,
                      connection: object | None = None,
                      return_rows: Literal[False]) -> list[int]: ...

    def schedule_jobs(self, configs: Sequence[WorkerJobConfig], *,
                      connection: object | None = None,
                      return_rows: bool = True) -> list[WorkerJob] | list[int]:
        """Schedule many jobs in one transaction. Every config is checked before anything
        is written; each job's ``on_conflict`` applies against the table and the earlier
        jobs of the batch, as if they had been scheduled one after another (with
        ``replace``, the last job of a match wins). One row per config, in order.
        ``connection``: as for ``schedule_job``. ``return_rows=False`` returns only the
        ids (a kept job: the id of the row it kept), which spares reading every new row
        back: the faster choice for large batches."""
        now = utcnow()
        batch: dict[str, tuple[NewJob, str]] = {}
        jobs = [self._new_job(c, now=now, batch=batch) for c in configs]
        if return_rows or connection is not None or self.settings.otel:
            rows = self._schedule(jobs, connection)
            return rows if return_rows else [r.id for r in rows]
        ids = self._ready().schedule_ids(jobs)
        self._wake()
        return ids

    def schedule_cron_job(self, config: WorkerJobConfig, cron: str,
                          timezone: str | None = None) -> WorkerJob:
        """Start a cron chain: the first row is due at the next occurrence of ``cron``
        (6 fields with seconds, or 5 fields), in UTC unless ``timezone`` is given."""
        parse_cron(cron, timezone)
        return self._schedule([self._new_job(config, cron=cron, timezone=timezone)])[0]

    def ensure_cron_job(self, config: WorkerJobConfig, cron: str,
                        timezone: str | None = None, *, declared: bool = False) -> WorkerJob:
        """Like ``schedule_cron_job``, but keep an existing chain with the same schedule."""
        parse_cron(cron, timezone)
        job = self._new_job(config, cron=cron, timezone=timezone, declared=declared)
        store = self._ready()
        return self._traced([job], lambda jobs: [store.ensure_chain(jobs[0])])[0]

    def _schedule(self, jobs: list[NewJob], connection: object | None = None
                  ) -> list[WorkerJob]:
        store = self._ready()
        if connection is None:
            rows = self._traced(jobs, store.schedule)
        else:
            rows = self._traced(jobs, lambda js: store.schedule_on(connection, js))
        self._wake()
        return rows

    def _traced(self, jobs: list[NewJob],
                write: Callable[[list[NewJob]], list[WorkerJob]]) -> list[WorkerJob]:
        """``write(jobs)``, inside an OpenTelemetry producer span when ``otel`` is on."""
        if not self.settings.otel:
            return write(jobs)
        from jobtable import otel  # only when on: the core never imports OpenTelemetry

        return otel.send(jobs, write)

    def schedule_job_report(self, config: WorkerJobConfig, cron: str | None = None,
                            timezone: str | None = None) -> ScheduleReport:
        """``schedule_job`` (or, with ``cron``, ``schedule_cron_job``) that also tells
        which pending rows of the pair it cancelled: a ``ScheduleReport``."""
        if cron is not None:
            parse_cron(cron, timezone)
        elif timezone is not None:
            raise ConfigError("a timezone goes with a cron schedule; none was given")
        job = self._new_job(config, cron=cron, timezone=timezone)
        cancelled: list[int] = []
        store = self._ready()
        row = self._traced([job], lambda jobs: store.schedule(jobs, cancelled=cancelled))[0]
        self._wake()
        return ScheduleReport(job=row, cancelled=sorted(cancelled))

    async def schedule_job_report_async(self, config: WorkerJobConfig,
                                        cron: str | None = None,
                                        timezone: str | None = None) -> ScheduleReport:
        """``schedule_job_report`` without blocking the event loop."""
        return await asyncio.to_thread(self.schedule_job_report, config, cron, timezone)

    async def schedule_job_async(self, config: WorkerJobConfig, *,
                                 connection: object | None = None) -> WorkerJob:
        """``schedule_job`` without blocking the event loop. ``connection`` may also be
        a psycopg ``AsyncConnection`` or a SQLAlchemy ``AsyncConnection`` /
        ``AsyncSession`` (used on this loop); a synchronous connection is used on the
        calling thread, its own."""
        if connection is None:
            return await asyncio.to_thread(self.schedule_job, config)
        return (await self.schedule_jobs_async([config], connection=connection))[0]

    async def schedule_jobs_async(self, configs: Sequence[WorkerJobConfig], *,
                                  connection: object | None = None) -> list[WorkerJob]:
        """``schedule_jobs`` without blocking the event loop; ``connection`` as for
        ``schedule_job_async``."""
        if connection is None:
            return await asyncio.to_thread(self.schedule_jobs, configs)
        jobs = [self._new_job(c) for c in configs]
        store = await asyncio.to_thread(self._ready)
        rows = await store.schedule_on_async(connection, jobs)
        self._wake()
        return rows

    async def schedule_cron_job_async(self, config: WorkerJobConfig, cron: str,
                                      timezone: str | None = None) -> WorkerJob:
        """``schedule_cron_job`` without blocking the event loop."""
        return await asyncio.to_thread(self.schedule_cron_job, config, cron, timezone)

    # -- waiting for a result -------------------------------------------------------

    def wait_for(self, job_id: int, timeout: timedelta | float | None = None, *,
                 follow_retries: bool = False) -> WorkerJob:
        """Wait until job ``job_id`` has finished and return its finished row.

        Returns as soon as the row is finished (succeeded, failed or cancelled): woken
        by the worker's notice on PostgreSQL (``LISTEN``), by a watch of the file on
        SQLite, and by a check every second whatever happens. ``timeout`` (a
        ``timedelta`` or seconds; None: no limit) ends the wait with ``TimeoutError``.
        ``follow_retries``: when the row failed and a retry row follows it
        (auto-reschedule), wait for that one instead, to the end of the chain.
        ``JobNotFoundError`` when there is no such job.
        """
        return self._wait_for(job_id, timeout, follow_retries, None)

    def _wait_for(self, job_id: int, timeout: timedelta | float | None,
                  follow_retries: bool, stop: threading.Event | None) -> WorkerJob:
        limit = to_timedelta(timeout, "timeout")
        store = self._ready()
        deadline = None if limit is None else time.monotonic() + limit.total_seconds()
        with store.finish_watch() as watch:
            current = job_id
            while True:
                job = self.require_job(current)
                if job.finished is not None:
                    retry = self._retry_of(job) if follow_retries else None
                    if retry is None:
                        return job
                    current = retry.id
                    continue
                left = 1.0 if deadline is None else deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(
                        f"job {current} did not finish within {limit}; it is "
                        f"{job.status.value}" + ("" if current == job_id
                                                 else f" (a retry of job {job_id})"))
                if stop is not None and stop.is_set():
                    raise asyncio.CancelledError
                watch.wait(current, min(left, 1.0))

    def _retry_of(self, job: WorkerJob) -> WorkerJob | None:
        """The retry row that follows a failed ``job``, if any (not a cron chain's next
        run: a retry counts ``retry_count`` up)."""
        if job.success or job.cancelled:
            return None
        retries = [c for c in self._ready().children(job.id)
                   if c.retry_count > job.retry_count]
        return retries[-1] if retries else None

    async def wait_for_async(self, job_id: int, timeout: timedelta | float | None = None, *,
                             follow_retries: bool = False) -> WorkerJob:
        """``wait_for`` without blocking the event loop (cancelling the task also ends
        the waiting thread, within a second)."""
        stop = threading.Event()
        try:
            return await asyncio.to_thread(self._wait_for, job_id, timeout, follow_retries,
                                           stop)
        finally:
            stop.set()

    # -- inspecting -------------------------------------------------------------

    def get_job(self, job_id: int) -> WorkerJob | None:
        """One row by id, or None."""
        return self._ready().get_job(job_id)

    def require_job(self, job_id: int) -> WorkerJob:
        """One row by id; ``JobNotFoundError`` when there is none."""
        job = self.get_job(job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        return job

    def list_jobs(self, *, status: str | None = None, type: str | None = None,
                  user_id: int | None = None, limit: int = 50,
                  offset: int = 0, type_prefix: str | None = None) -> list[WorkerJob]:
        """Jobs, newest first; ``status`` is pending, running, succeeded, failed or
        cancelled (anything else is a ``ConfigError`` naming them); ``type_prefix``
        keeps the types that start with it."""
        return self._ready().list_jobs(status=status, type=type, user_id=user_id,
                                       limit=limit, offset=offset, type_prefix=type_prefix)

    def search_job_data(self, text: str, *, window: int = SEARCH_WINDOW,
                        status: str | None = None, type_prefix: str | None = None,
                        user_id: int | None = None, limit: int = 50,
                        offset: int = 0) -> list[WorkerJob]:
        """Jobs whose data, as JSON text, contains ``text`` (ASCII letters in any case),
        newest first, with the filters of ``list_jobs``. Only the newest ``window`` jobs
        (by id) are searched: data is not indexed, and this bounds the scan."""
        if not text.strip():
            raise ConfigError("search text must not be empty")
        if window < 1:
            raise ConfigError(f"window must be at least 1, got {window}")
        return self._ready().search_data(text.strip(), window=window, status=status,
                                         type_prefix=type_prefix, user_id=user_id,
                                         limit=limit, offset=offset)

    def count_jobs(self, *, status: str | None = None, type: str | None = None,
                   user_id: int | None = None, type_prefix: str | None = None,
                   at_most: int | None = None) -> int:
        """How many jobs match the filters of ``list_jobs``. ``at_most`` bounds the count
        (and its cost, on a table with a long history): a result of ``at_most`` or more
        means "at least that many"."""
        return self._ready().count_jobs(status=status, type=type, user_id=user_id,
                                        type_prefix=type_prefix, at_most=at_most)

    def counts_by_type(self) -> dict[str, dict[str, int]]:
        """{type: {status: count}} over the whole table."""
        return self._ready().counts()

    def job_chain(self, job_id: int) -> list[WorkerJob]:
        """The reschedule chain through ``job_id`` (retries, cron runs): ancestors, the
        job, descendants; empty when there is no such job."""
        return self._ready().chain(job_id)

    def is_running(self, job: WorkerJob) -> bool:
        """Whether a worker is running ``job`` right now (started, unfinished, not stale)."""
        return rules.is_running(job, self._ready().stale_cutoff(utcnow()))

    def job_types(self) -> list[str]:
        """Every type that has rows in the table."""
        return self._ready().job_types()

    def cron_chains(self) -> list[CronChain]:
        """Every live cron chain, by type and user: its next run and last outcome."""
        store = self._ready()
        return [CronChain(current=job, previous=None if job.rescheduled_from_job is None
                          else store.get_job(job.rescheduled_from_job))
                for job in store.cron_rows()]

    def release_worker(self, worker_id: str) -> RescueReport:
        """The worker process ``worker_id`` is known to be dead (its supervisor saw it
        exit): make its running jobs pending again at once, each fenced by its claim, as
        a rescue would after ``rescue_after``; forget its heartbeat."""
        return self._ready().release_worker(
            worker_id, self.settings.max_attempts,
            charge_deaths=not self.settings.isolate_suspects)

    def live_workers(self, within: timedelta | None = None) -> list[WorkerInfo]:
        """Worker processes whose heartbeat is younger than ``within`` (by default the
        ``rescue_after`` setting)."""
        return self._ready().live_workers(within or self.settings.rescue_after)

    def stats(self, live_within: timedelta | None = None, minutes: int = 60) -> Stats:
        """Counts per status and type, queue lag, throughput per minute over the last
        ``minutes`` and live workers."""
        store = self._ready()
        now = utcnow()
        by_type = self.counts_by_type()
        by_status = {s: 0 for s in STATUSES}
        for counts in by_type.values():
            for status, n in counts.items():
                by_status[status] = by_status.get(status, 0) + n
        workers = self.live_workers(live_within)
        end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        start = end - timedelta(minutes=minutes)
        per_minute = store.throughput(start, end)
        buckets = []
        for i in range(minutes):
            edge = start + timedelta(minutes=i)
            ok, failed = per_minute.get(edge, (0, 0))
            buckets.append(Bucket(edge, ok, failed))
        return Stats(now=now, by_status=by_status, by_type=by_type,
                     oldest_pending_due=store.oldest_pending_due(now), throughput=buckets,
                     workers=workers, slots=sum(w.concurrency for w in workers),
                     table=store.table_health(), estimated=store.history_sample() < 100)

    def throughput_by_hour(self, hours: int = 24) -> list[Bucket]:
        """Succeeded and failed jobs per hour over the last ``hours`` (the current hour
        last): one query bounded by time on ``finished``."""
        if not 1 <= hours <= 24 * 31:
            raise ConfigError(f"hours must be between 1 and {24 * 31}, got {hours}")
        now = utcnow()
        end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        start = end - timedelta(hours=hours)
        totals: dict[datetime, tuple[int, int]] = {}
        for minute, (ok, failed) in self._ready().throughput(start, end).items():
            hour = minute.replace(minute=0, second=0, microsecond=0)
            before = totals.get(hour, (0, 0))
            totals[hour] = (before[0] + ok, before[1] + failed)
        return [Bucket(edge, *totals.get(edge, (0, 0)))
                for edge in (start + timedelta(hours=i) for i in range(hours))]

    def oldest_pending_due(self) -> datetime | None:
        """The ``due`` of the longest-waiting due pending job, if any."""
        return self._ready().oldest_pending_due(utcnow())

    def runtimes(self, window: timedelta,
                 bounds: Sequence[float] = RUNTIME_BUCKETS) -> list[Runtimes]:
        """Run-time histograms per type of the jobs that finished (not cancelled) within
        ``window``, computed by the database from ``started`` and ``finished``."""
        return [Runtimes(type=t, buckets=[(float(b), n) for b, n in zip(bounds, ns,
                                                                         strict=True)],
                         count=count, total_seconds=total)
                for t, count, total, ns in self._ready().runtimes(utcnow() - window, bounds)]

    def retries_by_type(self) -> dict[str, int]:
        """Rows in the table that retry a failed row, per type."""
        return self._ready().retries_by_type()

    def rescued_by_type(self) -> dict[str, int]:
        """Rows in the table claimed more than once (their worker died or they went
        stale), per type."""
        return self._ready().rescued_by_type()

    # -- acting on jobs -----------------------------------------------------------

    def cancel_job(self, job_id: int) -> WorkerJob:
        """Cancel a pending or running job; returns its row.

        A pending job is cancelled at once (the row returned is cancelled). For a running
        job the request is recorded (``cancel_requested``, for this claim only) and the
        worker running it stops it within about a second: an ``async def run`` gets
        ``asyncio.CancelledError``, a plain ``def run`` sees ``params.cancelled`` set, an
        isolated run's process is terminated. The row returned is still running; it ends
        cancelled (no retry; a cron chain goes on at its next occurrence), even if the
        job finishes before its worker hears of the request.

        ``JobNotFoundError`` when there is no such job; ``ActionRefusedError`` when it
        already finished (too late: it keeps its outcome).
        """
        store = self._ready()
        for _ in range(3):  # the row may move between pending and running meanwhile
            job = self.require_job(job_id)
            refusal = rules.cancel_refusal(job)
            if refusal is not None:
                raise ActionRefusedError(refusal)
            if rules.is_running(job, store.stale_cutoff(utcnow())):
                if store.request_cancel(job_id, job.attempts):
                    return self.require_job(job_id)
            elif store.cancel_job(job_id, rules.CANCELLED_BY_USER):
                return self.require_job(job_id)
        latest = self.require_job(job_id)
        raise ActionRefusedError(rules.cancel_refusal(latest) or (
            f"job {job_id} is {latest.status.value} and kept changing; nothing cancelled, "
            "try again"))

    def retry_job(self, job_id: int) -> WorkerJob:
        """Schedule a failed or cancelled job again, due now; returns the new row.

        The new row copies type, user, data and settings and points back with
        ``rescheduled_from_job``. It goes through the normal scheduling path, so a pending
        job of the same type and user is cancelled first. A cron row's retry keeps its
        schedule and so replaces the chain's next run.
        """
        job = self.require_job(job_id)
        refusal = rules.retry_refusal(job)
        if refusal is not None:
            raise ActionRefusedError(refusal)
        row = self._ready().schedule([rules.retry_row(job, utcnow())])[0]
        self._wake()
        return row

    def retry_candidates(self, *, status: str, type: str | None = None,
                         user_id: int | None = None, limit: int | None = None) -> list[int]:
        """Ids of failed (or cancelled) jobs matching the filters that no row retries
        yet, oldest first."""
        return self._ready().retry_candidates(status=status, type=type, user_id=user_id,
                                              limit=limit)

    def retry_jobs(self, job_ids: Sequence[int],
                   progress: Callable[[int], None] | None = None) -> list[WorkerJob]:
        """Retry many jobs in batches; ``progress(n)`` is called after each batch.

        Ids that are not failed or cancelled (or are gone) are skipped. As with any
        scheduling, only the last retry of a (type, user_id) stays pending.
        """
        store = self._ready()
        created: list[WorkerJob] = []
        for start in range(0, len(job_ids), RETRY_BATCH):
            chunk = list(job_ids[start:start + RETRY_BATCH])
            rows = []
            for job_id in chunk:
                job = store.get_job(job_id)
                if job is not None and rules.retry_refusal(job) is None:
                    rows.append(rules.retry_row(job, utcnow()))
            if rows:
                created.extend(store.schedule(rows))
            if progress is not None:
                progress(len(chunk))
        self._wake()
        return created

    def cancel_jobs(self, job_ids: Sequence[int]) -> list[WorkerJob]:
        """Cancel many jobs, each as ``cancel_job`` does; returns the rows cancelled (or,
        for running jobs, asked to stop). Ids that cannot be cancelled (gone, or already
        finished) are skipped."""
        cancelled = []
        for job_id in dict.fromkeys(job_ids):
            try:
                cancelled.append(self.cancel_job(job_id))
            except (JobNotFoundError, ActionRefusedError):
                continue
        return cancelled

    def run_job_now(self, job_id: int) -> WorkerJob:
        """Make a pending job due now (it runs at the next claim); returns the row."""
        job = self.require_job(job_id)
        refusal = rules.run_now_refusal(job)
        if refusal is not None:
            raise ActionRefusedError(refusal)
        self._ready().make_due_now(job_id)
        self._wake()
        return self.require_job(job_id)

    def count_purgeable_jobs(self, statuses: Sequence[str], older_than: timedelta) -> int:
        """How many rows ``purge_jobs`` would delete now."""
        return self._ready().count_purgeable(statuses, utcnow() - older_than)

    def purge_jobs(self, statuses: Sequence[str], older_than: timedelta, *,
                   batch: int = PURGE_BATCH,
                   progress: Callable[[int], None] | None = None) -> int:
        """Delete finished rows of ``statuses`` (succeeded, failed, cancelled) that
        finished more than ``older_than`` ago.

        Works in batches (each its own short transaction) and calls ``progress(n)`` after
        each. Never deletes an unfinished row. Returns how many rows were deleted.
        """
        if older_than < timedelta(0):
            raise ConfigError("--older-than must not be negative")
        store = self._ready()
        cutoff = utcnow() - older_than
        total = 0
        while True:
            n = store.purge_batch(statuses, cutoff, batch)
            total += n
            if progress is not None and n:
                progress(n)
            if n < batch:
                return total

    # -- queues and flow control ------------------------------------------------------

    def pause_queue(self, name: str, for_: timedelta | float | str | None = None) -> QueueInfo:
        """Stop every worker on every host from starting jobs of queue ``name`` (at its
        next claim, within about a second); running jobs finish, scheduling into it still
        works. ``for_`` (a timedelta, seconds or ``"30m"``) ends the pause by itself."""
        check_queue(name)
        until = None
        if for_ is not None:
            length = for_ if isinstance(for_, timedelta) else parse_duration(
                for_ if isinstance(for_, str) else f"{for_}s", "for_")
            if length <= timedelta(0):
                raise ConfigError(f"a pause must last longer than 0, got {for_!r}; give a "
                                  "duration such as '30m', or None to pause until resumed")
            until = utcnow() + length
        self._ready().pause_queue(name, until)
        return self._queue(name)

    def resume_queue(self, name: str) -> QueueInfo:
        """Let workers start jobs of queue ``name`` again."""
        check_queue(name)
        self._ready().resume_queue(name)
        self._wake()
        return self._queue(name)

    def list_queues(self) -> list[QueueInfo]:
        """Every queue with unfinished jobs or a pause: pending and running counts, and
        whether (and until when) it is paused."""
        return self._ready().queues()

    def _queue(self, name: str) -> QueueInfo:
        return next((q for q in self.list_queues() if q.name == name), QueueInfo(name=name))

    def held_back(self, job: WorkerJob) -> str | None:
        """Why a pending job is not running yet, or None when nothing holds it back (or
        it is not pending): not due yet, its queue paused, or a limit of its type."""
        if job.status != JobStatus.PENDING:
            return None
        now = utcnow()
        if job.due > now:
            return f"not due yet (due {job.due.isoformat()})"
        queue = next((q for q in self.list_queues() if q.name == job.queue), None)
        if queue is not None and is_paused(queue.paused, queue.paused_until, now):
            until = ("until resumed" if queue.paused_until is None
                     else f"until {queue.paused_until.isoformat()}")
            return f"queue {job.queue!r} is paused {until}"
        jt = self.registry.get(job.type)
        if jt is None or jt.module is None:
            return None
        limits = jt.limits
        store = self._ready()
        if limits.concurrency is not None:
            user = job.user_id if limits.per_user else None
            running = store.running_of_type(job.type, user)
            if running >= limits.concurrency:
                whose = f" for user {job.user_id}" if limits.per_user else ""
                return (f"concurrency limit reached ({running} running{whose}; "
                        f"CONCURRENCY_LIMIT = {limits.concurrency})")
        if limits.rate is not None:
            started = store.recent_starts(job.type, limits.rate.window_start(now))
            if started >= limits.rate.count:
                return (f"rate limit reached ({started} started in the last "
                        f"{limits.rate.period.total_seconds():g}s; RATE_LIMIT = "
                        f"{str(limits.rate)!r})")
        return None

    async def pause_queue_async(self, name: str,
                                for_: timedelta | float | str | None = None) -> QueueInfo:
        """``pause_queue`` without blocking the event loop."""
        return await asyncio.to_thread(self.pause_queue, name, for_)

    async def resume_queue_async(self, name: str) -> QueueInfo:
        """``resume_queue`` without blocking the event loop."""
        return await asyncio.to_thread(self.resume_queue, name)

    async def list_queues_async(self) -> list[QueueInfo]:
        """``list_queues`` without blocking the event loop."""
        return await asyncio.to_thread(self.list_queues)

    # -- the same, without blocking an event loop ------------------------------------

    async def get_job_async(self, job_id: int) -> WorkerJob | None:
        """``get_job`` without blocking the event loop."""
        return await asyncio.to_thread(self.get_job, job_id)

    async def list_jobs_async(self, **filters: Any) -> list[WorkerJob]:
        """``list_jobs`` without blocking the event loop."""
        return await asyncio.to_thread(lambda: self.list_jobs(**filters))

    async def count_jobs_async(self, **filters: Any) -> int:
        """``count_jobs`` without blocking the event loop."""
        return await asyncio.to_thread(lambda: self.count_jobs(**filters))

    async def stats_async(self, live_within: timedelta | None = None,
                          minutes: int = 60) -> Stats:
        """``stats`` without blocking the event loop."""
        return await asyncio.to_thread(self.stats, live_within, minutes)

    async def cancel_job_async(self, job_id: int) -> WorkerJob:
        """``cancel_job`` without blocking the event loop."""
        return await asyncio.to_thread(self.cancel_job, job_id)

    async def cancel_jobs_async(self, job_ids: Sequence[int]) -> list[WorkerJob]:
        """``cancel_jobs`` without blocking the event loop."""
        return await asyncio.to_thread(self.cancel_jobs, job_ids)

    async def throughput_by_hour_async(self, hours: int = 24) -> list[Bucket]:
        """``throughput_by_hour`` without blocking the event loop."""
        return await asyncio.to_thread(self.throughput_by_hour, hours)

    async def retry_job_async(self, job_id: int) -> WorkerJob:
        """``retry_job`` without blocking the event loop."""
        return await asyncio.to_thread(self.retry_job, job_id)

    async def run_job_now_async(self, job_id: int) -> WorkerJob:
        """``run_job_now`` without blocking the event loop."""
        return await asyncio.to_thread(self.run_job_now, job_id)

    async def purge_jobs_async(self, statuses: Sequence[str], older_than: timedelta) -> int:
        """``purge_jobs`` without blocking the event loop."""
        return await asyncio.to_thread(self.purge_jobs, statuses, older_than)

    async def require_job_async(self, job_id: int) -> WorkerJob:
        """``require_job`` without blocking the event loop."""
        return await asyncio.to_thread(self.require_job, job_id)

    async def job_chain_async(self, job_id: int) -> list[WorkerJob]:
        """``job_chain`` without blocking the event loop."""
        return await asyncio.to_thread(self.job_chain, job_id)

    async def retry_jobs_async(self, job_ids: Sequence[int]) -> list[WorkerJob]:
        """``retry_jobs`` without blocking the event loop."""
        return await asyncio.to_thread(self.retry_jobs, job_ids)

    async def count_purgeable_jobs_async(self, statuses: Sequence[str],
                                         older_than: timedelta) -> int:
        """``count_purgeable_jobs`` without blocking the event loop."""
        return await asyncio.to_thread(self.count_purgeable_jobs, statuses, older_than)

    async def cron_chains_async(self) -> list[CronChain]:
        """``cron_chains`` without blocking the event loop."""
        return await asyncio.to_thread(self.cron_chains)

    async def live_workers_async(self, within: timedelta | None = None) -> list[WorkerInfo]:
        """``live_workers`` without blocking the event loop."""
        return await asyncio.to_thread(self.live_workers, within)

    # -- in-process wake-up -------------------------------------------------------

    def _subscribe(self, event: asyncio.Event) -> None:
        self._wakeups.append((asyncio.get_running_loop(), event))

    def _unsubscribe(self, event: asyncio.Event) -> None:
        self._wakeups = [(lp, ev) for lp, ev in self._wakeups if ev is not event]

    def _wake(self) -> None:
        for loop, event in list(self._wakeups):
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(event.set)


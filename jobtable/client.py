"""``JobTable``: the application's handle on the queue."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from jobtable import rules
from jobtable.cron import parse_cron
from jobtable.errors import InvalidJobError
from jobtable.model import NewJob, WorkerJob, WorkerJobConfig
from jobtable.registry import Registry, discover
from jobtable.settings import Settings, load_settings
from jobtable.store import Store, open_store
from jobtable.timeutil import utcnow


class JobTable:
    """Schedule and inspect jobs. Safe to share between threads and asyncio tasks.

    ``JobTable()`` uses ``sqlite:///jobtable.db`` and ``./jobs`` unless settings
    (arguments, ``JOBTABLE_*`` variables, ``[tool.jobtable]``) say otherwise.
    Every ``*_async`` method is the same operation run off the event loop.
    """

    def __init__(self, database: str | None = None, jobs: str | Path | None = None, *,
                 stale_limit: timedelta | float | None = None,
                 auto_migrate: bool | None = None, settings: Settings | None = None) -> None:
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
        self.store: Store = open_store(self.settings.database,
                                       stale_limit=self.settings.stale_limit)
        self._migrated = False
        self._migrate_lock = threading.Lock()
        self._wakeups: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    # -- life cycle -------------------------------------------------------------

    def migrate(self) -> list[str]:
        """Apply pending migrations; return their names."""
        with self._migrate_lock:
            applied = self.store.migrate()
            self._migrated = True
            return applied

    def _ready(self) -> Store:
        if not self._migrated:
            with self._migrate_lock:
                if not self._migrated:
                    if self.settings.auto_migrate:
                        self.store.migrate()
                    else:
                        from jobtable.errors import MigrationError

                        pending = self.store.pending_migrations()
                        if pending:
                            raise MigrationError(
                                f"the database needs migrations {pending}; run "
                                "'jobtable migrate'")
                    self._migrated = True
        return self.store

    def close(self) -> None:
        """Close the database connections."""
        self.store.close()

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
                 timezone: str | None = None, declared: bool = False) -> NewJob:
        if not isinstance(config, WorkerJobConfig):
            raise InvalidJobError(
                f"expected a WorkerJobConfig, got {type(config).__name__}")
        valid = config.validated(self.registry.defaults(config.type))
        self.registry.require(valid.type)
        self.registry.check_data(valid.type, valid.data)
        return rules.new_job(valid, utcnow(), cron=cron, timezone=timezone,
                                  declared=declared)

    def schedule_job(self, config: WorkerJobConfig) -> WorkerJob:
        """Schedule a one-off job, first cancelling matching pending jobs (same type and
        user_id), in one transaction. Returns the new row."""
        job = self._new_job(config)
        row = self._ready().schedule([job])[0]
        self._wake()
        return row

    def schedule_jobs(self, configs: Sequence[WorkerJobConfig]) -> list[WorkerJob]:
        """Schedule many jobs in one transaction and round trip. Every config is checked
        before anything is written; within the batch the last job of a (type, user_id)
        wins, as if they had been scheduled one after another."""
        jobs = [self._new_job(c) for c in configs]
        rows = self._ready().schedule(jobs)
        self._wake()
        return rows

    def schedule_cron_job(self, config: WorkerJobConfig, cron: str,
                          timezone: str | None = None) -> WorkerJob:
        """Start a cron chain: the first row is due at the next occurrence of ``cron``
        (6 fields with seconds, or 5 fields), in UTC unless ``timezone`` is given."""
        parse_cron(cron, timezone)
        job = self._new_job(config, cron=cron, timezone=timezone)
        row = self._ready().schedule([job])[0]
        self._wake()
        return row

    def ensure_cron_job(self, config: WorkerJobConfig, cron: str,
                        timezone: str | None = None, *, declared: bool = False) -> WorkerJob:
        """Like ``schedule_cron_job``, but keep an existing chain with the same schedule."""
        parse_cron(cron, timezone)
        job = self._new_job(config, cron=cron, timezone=timezone, declared=declared)
        return self._ready().ensure_chain(job)

    async def schedule_job_async(self, config: WorkerJobConfig) -> WorkerJob:
        """``schedule_job`` without blocking the event loop."""
        return await asyncio.to_thread(self.schedule_job, config)

    async def schedule_jobs_async(self, configs: Sequence[WorkerJobConfig]) -> list[WorkerJob]:
        """``schedule_jobs`` without blocking the event loop."""
        return await asyncio.to_thread(self.schedule_jobs, configs)

    async def schedule_cron_job_async(self, config: WorkerJobConfig, cron: str,
                                      timezone: str | None = None) -> WorkerJob:
        """``schedule_cron_job`` without blocking the event loop."""
        return await asyncio.to_thread(self.schedule_cron_job, config, cron, timezone)

    # -- inspecting and managing ------------------------------------------------

    def get_job(self, job_id: int) -> WorkerJob | None:
        """One row by id, or None."""
        return self._ready().get_job(job_id)

    async def get_job_async(self, job_id: int) -> WorkerJob | None:
        """``get_job`` without blocking the event loop."""
        return await asyncio.to_thread(self.get_job, job_id)

    def list_jobs(self, *, status: str | None = None, type: str | None = None,
                  user_id: int | None = None, limit: int = 50) -> list[WorkerJob]:
        """Jobs, newest first; ``status`` is pending, running, succeeded, failed or
        cancelled."""
        return self._ready().list_jobs(status=status, type=type, user_id=user_id, limit=limit)

    async def list_jobs_async(self, **filters: Any) -> list[WorkerJob]:
        """``list_jobs`` without blocking the event loop."""
        return await asyncio.to_thread(lambda: self.list_jobs(**filters))

    def cancel_job(self, job_id: int) -> bool:
        """Cancel a pending job; False when it is not pending."""
        return self._ready().cancel_job(job_id)

    async def cancel_job_async(self, job_id: int) -> bool:
        """``cancel_job`` without blocking the event loop."""
        return await asyncio.to_thread(self.cancel_job, job_id)

    # -- in-process wake-up -------------------------------------------------------

    def _subscribe(self, event: asyncio.Event) -> None:
        self._wakeups.append((asyncio.get_running_loop(), event))

    def _unsubscribe(self, event: asyncio.Event) -> None:
        self._wakeups = [(lp, ev) for lp, ev in self._wakeups if ev is not event]

    def _wake(self) -> None:
        for loop, event in list(self._wakeups):
            with contextlib.suppress(RuntimeError):  # that loop is closed
                loop.call_soon_threadsafe(event.set)


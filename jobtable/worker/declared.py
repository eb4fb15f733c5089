"""Start-up: the migration gate, loading every job module, the first heartbeat, and the
cron chains the worker keeps alive (the cleanup job and each module's declared ``CRON``)."""

from __future__ import annotations

import asyncio
import logging
import os

from jobtable import hooks
from jobtable.client import JobTable
from jobtable.model import WorkerJobConfig
from jobtable.worker.shared import Shared

log = logging.getLogger("jobtable.worker")
CLEANUP_JOB = "remove_old_worker_jobs"


class Declared:
    """Brings the database and the declared chains up to date before claiming starts."""

    def __init__(self, jobtable: JobTable, shared: Shared, *, schedule_builtins: bool) -> None:
        self.jt = jobtable
        self.shared = shared
        self.schedule_builtins = schedule_builtins

    async def start(self) -> None:
        """Run the start-up steps (in a thread: they are blocking database calls)."""
        await asyncio.to_thread(self._startup)

    async def stop(self) -> None:
        """Nothing runs after start-up."""

    def _startup(self) -> None:
        if self.jt.settings.auto_migrate:
            self.jt.migrate()
        hooks.middleware_for(self.jt.settings)  # a hooks module that cannot load stops here
        for broken in self.jt.registry.load_all():
            log.error("job type %r cannot be loaded; its jobs will fail: %s",
                      broken.name, broken.error)
        self.shared.store.heartbeat(self.shared.worker_id, self.shared.concurrency,
                                    os.getpid())
        if self.schedule_builtins:
            self.ensure_cron_chains()

    def ensure_cron_chains(self) -> None:
        """Keep the cleanup chain and every declared ``CRON`` chain; stop undeclared ones."""
        self.jt.ensure_cron_job(WorkerJobConfig(type=CLEANUP_JOB, user_id=0),
                                self.jt.settings.cleanup_cron)
        declared: dict[str, str] = {}
        for name in self.jt.registry.names:
            jt = self.jt.registry.get(name)
            if jt is None or jt.module is None or jt.cron is None or jt.builtin:
                continue
            try:
                config = WorkerJobConfig(
                    type=name, user_id=0,
                    auto_reschedule_on_failure=bool(
                        jt.declared_setting("AUTO_RESCHEDULE_ON_FAILURE") or False),
                    auto_reschedule_on_failure_delay=jt.declared_setting(
                        "AUTO_RESCHEDULE_ON_FAILURE_DELAY"),
                    remove_delay=jt.declared_setting("REMOVE_DELAY"))
                row = self.jt.ensure_cron_job(config, jt.cron, jt.cron_timezone, declared=True)
            except Exception as exc:
                log.error("job type %r declares CRON %r that cannot be scheduled: %s",
                          name, jt.cron, exc)
                continue
            declared[name] = row.cron_schedule or jt.cron
        stopped = self.shared.store.stop_undeclared_chains(declared)
        if stopped:
            log.info("stopped cron chains no longer declared: rows %s", stopped)

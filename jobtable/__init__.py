# ruff: noqa: E402  (the early signal handler is installed before the imports)
"""jobtable: background jobs whose queue is a database table.

A job type is a module in the jobs folder exposing ``run(params)``; jobs are rows
of ``worker_jobs``, which is both the queue and the audit log. SQLite by default,
PostgreSQL when many workers on many hosts share one database.
"""

from jobtable import _early

_early.install()  # first thing: a worker process stopped while starting exits 0

from jobtable.client import JobTable
from jobtable.cron import CronSchedule, parse_cron
from jobtable.errors import (
    ActionRefusedError,
    ConfigError,
    DatabaseUnavailableError,
    InvalidCronError,
    InvalidDataError,
    InvalidJobError,
    JobNotFoundError,
    JobTableError,
    MigrationError,
    UnknownJobTypeError,
    UnusableConnectionError,
)
from jobtable.model import UNSET, Ending, JobParams, JobStatus, WorkerJob, WorkerJobConfig
from jobtable.settings import Settings, load_settings
from jobtable.signals import Discard, Retry, Snooze
from jobtable.worker import Worker, run_worker

__all__ = [
    "UNSET",
    "ActionRefusedError",
    "ConfigError",
    "CronSchedule",
    "DatabaseUnavailableError",
    "Discard",
    "Ending",
    "InvalidCronError",
    "InvalidDataError",
    "InvalidJobError",
    "JobNotFoundError",
    "JobParams",
    "JobStatus",
    "JobTable",
    "JobTableError",
    "MigrationError",
    "Retry",
    "Settings",
    "Snooze",
    "UnknownJobTypeError",
    "UnusableConnectionError",
    "Worker",
    "WorkerJob",
    "WorkerJobConfig",
    "load_settings",
    "parse_cron",
    "run_worker",
]
__version__ = "0.1.0"

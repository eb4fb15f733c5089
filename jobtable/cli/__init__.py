"""The ``jobtable`` command. Each command lives in its own module of this package and is
registered here, explicitly; what they share is in ``jobtable.cli.options``."""

from __future__ import annotations

import click

from jobtable.cli import dashboard, demo, jobs, migrate, schedule, stats, worker
from jobtable.cli.options import (
    database_options,
    friendly_errors,
    log_level_option,
    open_table,
    setup_logging,
    worker_options,
)
from jobtable.dev import codegen_command, dev_command, init_command

__all__ = ["database_options", "friendly_errors", "log_level_option", "main", "open_table",
           "setup_logging", "worker_options"]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="jobtable")
def main() -> None:
    """jobtable: background jobs whose queue is a database table.

    Add a job type by dropping a module with run(params) into ./jobs, schedule it with
    'jobtable schedule', and run 'jobtable worker'. SQLite by default; PostgreSQL with
    --database postgresql://...
    """


for _command in (worker.worker, schedule.schedule, migrate.migrate, demo.demo,
                 jobs.jobs_command, stats.stats_command, dashboard.dashboard_command,
                 codegen_command, dev_command, init_command):
    main.add_command(_command)

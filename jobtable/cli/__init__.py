"""The ``jobtable`` command. Each command lives in its own module of this package and is
registered here, explicitly; what they share is in ``jobtable.cli.options``."""

from __future__ import annotations

import importlib

import click

from jobtable.cli import dashboard, demo, jobs, migrate, queues, schedule, stats, worker
from jobtable.cli.options import (
    database_options,
    friendly_errors,
    log_level_option,
    open_table,
    setup_logging,
    worker_options,
)

__all__ = ["database_options", "friendly_errors", "log_level_option", "main", "open_table",
           "setup_logging", "worker_options"]


# The development loop's commands, by name: (module, attribute). Imported only when
# one of them is used, so that a worker never loads the bindings generator.
DEV_COMMANDS = {"codegen": ("jobtable.dev", "codegen_command"),
                "dev": ("jobtable.dev", "dev_command"),
                "init": ("jobtable.dev", "init_command")}


class _Group(click.Group):
    """The ``jobtable`` group: its own commands, plus ``DEV_COMMANDS`` loaded on use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *DEV_COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in DEV_COMMANDS and cmd_name not in self.commands:
            module, attribute = DEV_COMMANDS[cmd_name]
            command = getattr(importlib.import_module(module), attribute)
            assert isinstance(command, click.Command)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"],
                                           "max_content_width": 100})
@click.version_option(package_name="jobtable")
def main() -> None:
    """jobtable: background jobs whose queue is a database table.

    Add a job type by dropping a module with run(params) into ./jobs, schedule it with
    'jobtable schedule', and run 'jobtable worker'. SQLite by default; PostgreSQL with
    --database postgresql://...
    """


for _command in (worker.worker, schedule.schedule, migrate.migrate, demo.demo,
                 jobs.jobs_command, stats.stats_command, dashboard.dashboard_command,
                 queues.queues_command):
    main.add_command(_command)

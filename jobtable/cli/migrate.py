"""``jobtable migrate``: create or upgrade the tables."""

from __future__ import annotations

import click

from jobtable.cli.options import database_options, friendly_errors
from jobtable.settings import load_settings
from jobtable.store import open_store


@click.command("migrate")
@database_options
@click.option("--list", "list_only", is_flag=True, help="Show applied and pending migrations.")
@friendly_errors
def migrate(database: str | None, jobs: str | None, list_only: bool) -> None:
    """Create or upgrade the worker_jobs table (each migration in its own transaction)."""
    settings = load_settings(database=database)
    with open_store(settings.database) as store:
        if list_only:
            for _version, name in store.applied_migrations():
                click.echo(f"applied  {name}")
            for name in store.pending_migrations():
                click.echo(f"pending  {name}")
            return
        applied = store.migrate()
    click.echo("applied " + ", ".join(applied) if applied else "database is up to date")

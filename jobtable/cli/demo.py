"""``jobtable demo``: jobtable at work in a temporary folder."""

from __future__ import annotations

import sys

import click

from jobtable.cli.options import friendly_errors
from jobtable.demo import run_demo


@click.command("demo")
@click.option("--keep", is_flag=True, help="Keep the demo's temporary folder.")
@click.option("--database", "-d", metavar="URL",
              help="Run the demo on this database instead of a temporary SQLite file.")
@friendly_errors
def demo(keep: bool, database: str | None) -> None:
    """Show jobtable at work on SQLite in a temporary folder: a one-off job, a job that
    fails and is retried, and a cron job, then a table of the rows."""
    sys.exit(run_demo(keep=keep, database=database))

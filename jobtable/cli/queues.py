"""``jobtable queues``: list queues, pause and resume them."""

from __future__ import annotations

import json

import click
from rich import box
from rich.table import Table
from rich.text import Text

from jobtable.cli.options import checked_table, database_options, friendly_errors
from jobtable.routing import QueueInfo
from jobtable.settings import load_settings


def queues_table(queues: list[QueueInfo]) -> Table:
    """A rich table of queues: name, pending, running, pause."""
    table = Table(header_style="bold dim", box=box.SIMPLE_HEAD, show_edge=False,
                  pad_edge=False)
    table.add_column("queue", no_wrap=True)
    table.add_column("pending", justify="right")
    table.add_column("running", justify="right")
    table.add_column("state", no_wrap=True)
    for q in queues:
        table.add_row(Text(q.name), str(q.pending), str(q.running), _state(q))
    return table


def _state(q: QueueInfo) -> Text:
    if not q.paused:
        return Text("active", style="green")
    if q.paused_until is None:
        return Text("paused", style="yellow")
    return Text(f"paused until {q.paused_until.isoformat(timespec='seconds')}",
                style="yellow")


@click.group("queues", invoke_without_command=True)
@database_options
@click.option("--json", "as_json", is_flag=True, help="Print the queues as a JSON list.")
@click.pass_context
@friendly_errors
def queues_command(ctx: click.Context, database: str | None, jobs: str | None,
                   as_json: bool) -> None:
    """List queues with their pending and running jobs and pause state; or pause and
    resume one.

    \b
    jobtable queues
    jobtable queues pause reports --for 30m   no new starts, everywhere; ends by itself
    jobtable queues resume reports
    """
    if ctx.invoked_subcommand is not None:
        return
    with checked_table(load_settings(database=database, jobs=jobs)) as table:
        queues = table.list_queues()
    if as_json:
        click.echo(json.dumps([q.to_dict() for q in queues]))
        return
    if not queues:
        click.echo("no queues: no unfinished jobs and no pauses")
        return
    from jobtable.cli.jobs import make_console

    make_console().print(queues_table(queues))


def _parent(ctx: click.Context, database: str | None, jobs: str | None) -> tuple[
        str | None, str | None]:
    parent = ctx.parent.params if ctx.parent is not None else {}
    return database or parent.get("database"), jobs or parent.get("jobs")


@queues_command.command("pause")
@click.argument("name")
@click.option("--for", "for_", metavar="DURATION",
              help="End the pause by itself after this long (e.g. 30m) [default: until "
                   "resumed].")
@database_options
@click.pass_context
@friendly_errors
def pause(ctx: click.Context, name: str, for_: str | None, database: str | None,
          jobs: str | None) -> None:
    """Stop workers everywhere from starting jobs of queue NAME; running jobs finish and
    scheduling into it still works."""
    database, jobs = _parent(ctx, database, jobs)
    with checked_table(load_settings(database=database, jobs=jobs)) as table:
        info = table.pause_queue(name, for_)
    until = ("until resumed" if info.paused_until is None
             else f"until {info.paused_until.isoformat(timespec='seconds')}")
    click.echo(f"paused queue {name} {until} ({info.pending} pending, {info.running} "
               "running)")


@queues_command.command("resume")
@click.argument("name")
@database_options
@click.pass_context
@friendly_errors
def resume(ctx: click.Context, name: str, database: str | None, jobs: str | None) -> None:
    """Let workers start jobs of queue NAME again."""
    database, jobs = _parent(ctx, database, jobs)
    with checked_table(load_settings(database=database, jobs=jobs)) as table:
        info = table.resume_queue(name)
    click.echo(f"resumed queue {name} ({info.pending} pending)")

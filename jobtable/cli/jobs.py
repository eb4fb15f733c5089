"""``jobtable jobs``: list, show, cancel, retry, run now and purge jobs without SQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import click
from rich import box
from rich.console import Console, Group, RenderableType
from rich.json import JSON
from rich.panel import Panel
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from jobtable import display, rules
from jobtable.cli.options import checked_table, database_options, friendly_errors
from jobtable.client import COUNT_CAP
from jobtable.errors import ActionRefusedError
from jobtable.model import WorkerJob
from jobtable.settings import Settings, load_settings
from jobtable.store.base import FINISHED_STATUSES, STATUSES
from jobtable.timeutil import parse_duration

STYLE = {"pending": "cyan", "running": "magenta", "succeeded": "green", "failed": "red",
         "cancelled": "yellow"}
SPARK = "▁▂▃▄▅▆▇█"


def make_console(err: bool = False) -> Console:
    return Console(stderr=err, highlight=False, soft_wrap=False)


def _settings(ctx: click.Context, database: str | None, jobs: str | None) -> Settings:
    """Options given to the subcommand win over those given to ``jobtable jobs``."""
    parent = ctx.parent.params if ctx.parent is not None else {}
    return load_settings(database=database or parent.get("database"),
                         jobs=jobs or parent.get("jobs"))


def _status(status: str) -> Text:
    return Text(status, style=STYLE.get(status, ""))


def _when(moment: Any) -> Text:
    return Text(display.ago(moment), style="dim" if moment is None else "")


# The columns of ``jobtable jobs``: name, rich options, cell, and the order in which a
# narrow terminal drops them (0: never; higher goes first). id and status stay whole.
_RIGHT: dict[str, Any] = {"justify": "right", "no_wrap": True}
_PLAIN: dict[str, Any] = {"no_wrap": True}


def _ran(r: WorkerJob) -> str:
    ran = display.runtime(r)
    return "" if ran is None else display.human_duration(ran)


COLUMNS: list[tuple[str, dict[str, Any], Callable[[WorkerJob], str | Text], int]] = [
    ("id", _RIGHT, lambda r: str(r.id), 0),
    ("type", {"no_wrap": True, "overflow": "ellipsis", "min_width": 8},
     lambda r: Text(r.type), 0),
    ("user", _RIGHT, lambda r: str(r.user_id), 3),
    # Shown only when a listed row is outside the default queue / priority 0.
    ("queue", _PLAIN, lambda r: Text(r.queue), 8),
    ("prio", _RIGHT, lambda r: str(r.priority), 9),
    ("status", _PLAIN, lambda r: _status(r.status.value), 0),
    ("due", _PLAIN, lambda r: _when(r.due), 2),
    ("finished", _PLAIN, lambda r: _when(r.finished), 4),
    ("ran", _RIGHT, _ran, 5),
    ("tries", _RIGHT, lambda r: str(r.attempts), 6),
    ("from", _RIGHT, lambda r: str(r.rescheduled_from_job or ""), 7),
    # Not no_wrap: rich narrows wrappable columns first, so the outcome gives way.
    ("outcome", {"overflow": "ellipsis", "min_width": 10},
     lambda r: Text(display.summary(r, 60), no_wrap=True, overflow="ellipsis"), 1),
]
_OUTCOME_MIN = 10


def _columns_for(rows: list[WorkerJob], width: int | None) -> list[int]:
    """Indexes of the columns that fit in ``width``: the least important are dropped
    until every kept column but the outcome fits at its natural width."""
    unused = set()
    if not any(r.queue != "default" for r in rows):
        unused.add("queue")
    if not any(r.priority for r in rows):
        unused.add("prio")
    kept = [i for i, column in enumerate(COLUMNS) if column[0] not in unused]
    if width is None:
        return kept
    cells = [[len(str(get(r))) for r in rows] for _, _, get, _ in COLUMNS]
    natural = [max([len(name), *lens]) for (name, *_), lens in zip(COLUMNS, cells,
                                                                   strict=True)]

    def needed(indexes: list[int]) -> int:
        widths = [min(natural[i], _OUTCOME_MIN) if COLUMNS[i][0] == "outcome"
                  else natural[i] for i in indexes]
        return sum(widths) + 3 * (len(widths) - 1)  # a separator and two pads

    for i in sorted(kept, key=lambda i: -COLUMNS[i][3]):
        if needed(kept) <= width or COLUMNS[i][3] == 0:
            break
        kept.remove(i)
    return kept


def jobs_table(rows: list[WorkerJob], title: str | None = None,
               width: int | None = None) -> Table:
    """A rich table of rows, newest first, user content shown literally. Given the
    terminal's ``width``, the least important columns are left out so that the id and
    the whole status always show."""
    table = Table(title=title, title_justify="left", header_style="bold dim", expand=False,
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    kept = _columns_for(rows, width)
    for i in kept:
        name, options, _, _ = COLUMNS[i]
        table.add_column(name, **options)
    for r in rows:
        table.add_row(*(COLUMNS[i][2](r) for i in kept))
    return table


@click.group("jobs", invoke_without_command=True)
@database_options
@click.option("--status", type=click.Choice(STATUSES), help="Only jobs with this status.")
@click.option("--type", "job_type", metavar="TYPE", help="Only jobs of this type.")
@click.option("--user-id", "-u", type=int, help="Only jobs of this user.")
@click.option("--limit", "-n", type=click.IntRange(1, 100_000), default=50, show_default=True,
              help="How many jobs to show.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as a JSON list.")
@click.pass_context
@friendly_errors
def jobs_command(ctx: click.Context, database: str | None, jobs: str | None,
                 status: str | None, job_type: str | None, user_id: int | None, limit: int,
                 as_json: bool) -> None:
    """List jobs, newest first; or inspect and steer one with a subcommand.

    \b
    jobtable jobs --status failed --type send_report
    jobtable jobs show 42          every field, data, result, traceback, chain
    jobtable jobs retry 42         a failed or cancelled job, as a new row
    jobtable jobs cancel 42        a pending or running job
    jobtable jobs run-now 42       a pending job, due now
    jobtable jobs purge --status succeeded --older-than 7d
    """
    if ctx.invoked_subcommand is not None:
        return
    with checked_table(load_settings(database=database, jobs=jobs)) as table:
        rows = table.list_jobs(status=status, type=job_type, user_id=user_id, limit=limit)
        # Counted up to a bound, not through the whole history (see COUNT_CAP).
        total = table.count_jobs(status=status, type=job_type, user_id=user_id,
                                 at_most=max(COUNT_CAP, limit) + 1)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows]))
        return
    console = make_console()
    if not rows:
        console.print("no jobs match", style="dim")
        return
    console.print(jobs_table(rows, width=console.width))
    if total > max(COUNT_CAP, limit):
        console.print(f"{len(rows)} of more than {max(COUNT_CAP, limit):,} shown; --limit to "
                      "see more", style="dim")
    elif total > len(rows):
        console.print(f"{len(rows)} of {total} shown; --limit to see more", style="dim")


@jobs_command.command("show")
@click.argument("job_id", type=int)
@database_options
@click.option("--json", "as_json", is_flag=True, help="Print the job and its chain as JSON.")
@click.pass_context
@friendly_errors
def show(ctx: click.Context, job_id: int, database: str | None, jobs: str | None,
         as_json: bool) -> None:
    """Every field of job JOB_ID, its data and result, the traceback of a failure, and
    the chain of rows linked by rescheduled_from_job, both ways."""
    with checked_table(_settings(ctx, database, jobs)) as table:
        job = table.require_job(job_id)
        chain = table.job_chain(job_id)
        held = table.held_back(job)
    if as_json:
        click.echo(json.dumps({"job": job.to_dict(), "chain": [c.to_dict() for c in chain],
                               "held_back": held}))
        return
    make_console().print(job_view(job, chain, held))


def job_view(job: WorkerJob, chain: list[WorkerJob],
             held: str | None = None) -> RenderableType:
    """The ``jobs show`` rendering; ``held`` says why a pending job waits."""
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="dim", justify="right")
    fields.add_column(overflow="fold")
    for name, value in job.to_dict().items():
        if name in ("data", "result"):
            continue
        text = Text("null", style="dim") if value is None else Text(str(value))
        if name == "status":
            text = _status(str(value))
        elif name in display.MILLISECOND_FIELDS and isinstance(value, int | float):
            text = Text(display.setting_duration(value))
        elif name in ("due", "started", "finished", "remove_at") and value is not None:
            text.append(f"  ({display.ago(getattr(job, name))})", style="dim")
        fields.add_row(name, text)
    ran = display.runtime(job)
    if ran is not None:
        fields.add_row("ran for", display.human_duration(ran))
    if held is not None:
        fields.add_row("held back", Text(held, style="yellow"))
    fields.add_row("retries", Text(display.retry_policy(job)))
    if job.cancel_requested is not None and job.finished is None:
        fields.add_row("cancel", Text(f"requested {display.ago(job.cancel_requested)}; its "
                                      "worker is stopping it", style="yellow"))
    parts: list[RenderableType] = [Panel(fields, title=f"job {job.id} · {job.type}",
                                         title_align="left", border_style=STYLE.get(
                                             job.status.value, ""))]
    parts.append(Panel(JSON(json.dumps(job.data, ensure_ascii=False)), title="data",
                       title_align="left", border_style="dim"))
    result = job.result
    traceback = None
    if isinstance(result, dict) and isinstance(result.get("traceback"), str):
        traceback = result["traceback"]
        result = {k: v for k, v in result.items() if k != "traceback"}
    if job.result is not None:
        parts.append(Panel(JSON(json.dumps(result, ensure_ascii=False)), title="result",
                           title_align="left", border_style="dim"))
    if traceback:
        parts.append(Panel(Text(traceback.rstrip()), title="traceback", title_align="left",
                           border_style="red"))
    if len(chain) > 1:
        table = Table(title="reschedule chain", title_justify="left", header_style="bold dim")
        for col in ("", "id", "status", "due", "finished", "tries", "outcome"):
            table.add_column(col)
        for c in chain:
            table.add_row("→" if c.id == job.id else "", str(c.id), _status(c.status.value),
                          _when(c.due), _when(c.finished), str(c.attempts),
                          Text(display.summary(c, 60)))
        parts.append(table)
    else:
        parts.append(Text("no reschedule chain: no row retries this job or is retried by it",
                          style="dim"))
    return Group(*parts)


@jobs_command.command("cancel")
@click.argument("job_id", type=int)
@database_options
@click.pass_context
@friendly_errors
def cancel(ctx: click.Context, job_id: int, database: str | None, jobs: str | None) -> None:
    """Cancel job JOB_ID: a pending job at once; a running one is stopped by its worker
    within about a second and ends cancelled (no retry). A finished job is refused."""
    with checked_table(_settings(ctx, database, jobs)) as table:
        job = table.cancel_job(job_id)
    if job.finished is None:
        click.echo(f"cancel requested for running job {job.id} ({job.type}, user "
                   f"{job.user_id}); its worker stops it within about a second")
    else:
        click.echo(f"cancelled job {job.id} ({job.type}, user {job.user_id})")


@jobs_command.command("run-now")
@click.argument("job_id", type=int)
@database_options
@click.pass_context
@friendly_errors
def run_now(ctx: click.Context, job_id: int, database: str | None, jobs: str | None) -> None:
    """Make pending job JOB_ID due now."""
    with checked_table(_settings(ctx, database, jobs)) as table:
        job = table.run_job_now(job_id)
    click.echo(f"job {job.id} ({job.type}, user {job.user_id}) is due now")


def _progress(description: str) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=make_console(err=True), transient=False)


@jobs_command.command("retry")
@click.argument("job_ids", type=int, nargs=-1)
@database_options
@click.option("--status", type=click.Choice(["failed", "cancelled"]),
              help="Retry every job with this status that no row retries yet.")
@click.option("--type", "job_type", metavar="TYPE", help="With --status: only this type.")
@click.option("--user-id", "-u", type=int, help="With --status: only this user.")
@click.option("--limit", "-n", type=click.IntRange(1), help="With --status: at most this many.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before a bulk retry.")
@click.option("--json", "as_json", is_flag=True, help="Print the new rows as a JSON list.")
@click.pass_context
@friendly_errors
def retry(ctx: click.Context, job_ids: tuple[int, ...], database: str | None,
          jobs: str | None, status: str | None, job_type: str | None, user_id: int | None,
          limit: int | None, yes: bool, as_json: bool) -> None:
    """Schedule failed or cancelled jobs again: each a new row due now, pointing back with
    rescheduled_from_job.

    \b
    jobtable jobs retry 42 43
    jobtable jobs retry --status failed --type send_report
    """
    if job_ids and status:
        raise click.UsageError("give job ids or --status, not both")
    if not job_ids and not status:
        raise click.UsageError("give job ids, or --status failed|cancelled for a bulk retry")
    if (job_type is not None or user_id is not None or limit is not None) and not status:
        raise click.UsageError("--type, --user-id and --limit go with --status")
    with checked_table(_settings(ctx, database, jobs)) as table:
        if job_ids:
            for job_id in job_ids:  # check them all before changing anything
                refusal = rules.retry_refusal(table.require_job(job_id))
                if refusal is not None:
                    raise ActionRefusedError(f"{refusal} (nothing was retried)")
            ids = list(job_ids)
        else:
            assert status is not None
            ids = table.retry_candidates(status=status, type=job_type, user_id=user_id,
                                         limit=limit)
            if not ids:
                click.echo(f"no {status} jobs to retry")
                return
            if not yes:
                click.confirm(f"retry {len(ids)} {status} jobs?", abort=True, err=True)
        if len(ids) == 1:
            created = [table.retry_job(ids[0])]
        else:
            with _progress("retrying") as bar:
                task = bar.add_task("retrying", total=len(ids))
                created = table.retry_jobs(ids, lambda n: bar.advance(task, n))
    if as_json:
        click.echo(json.dumps([c.to_dict() for c in created]))
        return
    for c in created[:20]:
        click.echo(f"retried job {c.rescheduled_from_job} as job {c.id} ({c.type}, user "
                   f"{c.user_id})")
    if len(created) > 20:
        click.echo(f"... {len(created)} retries scheduled in all")


@jobs_command.command("purge")
@database_options
@click.option("--status", "statuses", multiple=True, required=True,
              type=click.Choice(FINISHED_STATUSES),
              help="Purge finished jobs with this status (repeatable).")
@click.option("--older-than", required=True, metavar="DURATION",
              help="Only jobs that finished longer ago than this: 30m, 12h, 7d.")
@click.option("--dry-run", is_flag=True, help="Only count what would be deleted.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask before deleting.")
@click.option("--json", "as_json", is_flag=True, help="Print {\"deleted\": N} as JSON.")
@click.pass_context
@friendly_errors
def purge(ctx: click.Context, database: str | None, jobs: str | None,
          statuses: tuple[str, ...], older_than: str, dry_run: bool, yes: bool,
          as_json: bool) -> None:
    """Delete finished jobs of a status that finished longer ago than --older-than, in
    batches. Pending and running jobs are never deleted."""
    age = parse_duration(older_than, "--older-than")
    with checked_table(_settings(ctx, database, jobs)) as table:
        count = table.count_purgeable_jobs(statuses, age)
        what = "/".join(statuses)
        if dry_run or count == 0:
            if as_json:
                click.echo(json.dumps({"deleted": 0, "would_delete": count}))
            else:
                click.echo(f"{count} {what} jobs finished more than {older_than} ago"
                           + (" would be deleted" if dry_run else "; nothing to delete"))
            return
        if not yes:
            click.confirm(f"delete {count} {what} jobs finished more than {older_than} ago?",
                          abort=True, err=True)
        with _progress("purging") as bar:
            task = bar.add_task("purging", total=count)
            deleted = table.purge_jobs(statuses, age,
                                       progress=lambda n: bar.advance(task, n))
    if as_json:
        click.echo(json.dumps({"deleted": deleted}))
    else:
        click.echo(f"deleted {deleted} {what} jobs")

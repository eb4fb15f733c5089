"""``jobtable jobs``, ``jobtable stats`` and ``jobtable dashboard``: see and steer jobs
without SQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
from jobtable.cli import database_options, friendly_errors, setup_logging
from jobtable.client import JobTable
from jobtable.errors import ActionRefusedError
from jobtable.model import WorkerJob
from jobtable.reports import Stats
from jobtable.settings import Settings, load_settings
from jobtable.store.base import FINISHED_STATUSES, STATUSES
from jobtable.timeutil import parse_duration

STYLE = {"pending": "cyan", "running": "magenta", "succeeded": "green", "failed": "red",
         "cancelled": "yellow"}
SPARK = "▁▂▃▄▅▆▇█"


def _console(err: bool = False) -> Console:
    return Console(stderr=err, highlight=False, soft_wrap=False)


def _settings(ctx: click.Context, database: str | None, jobs: str | None) -> Settings:
    """Options given to the subcommand win over those given to ``jobtable jobs``."""
    parent = ctx.parent.params if ctx.parent is not None else {}
    return load_settings(database=database or parent.get("database"),
                         jobs=jobs or parent.get("jobs"))


@contextmanager
def _table(settings: Settings) -> Iterator[JobTable]:
    """A ``JobTable`` on the database of ``settings``, checked (or migrated) up front."""
    table = JobTable(settings=settings)
    try:
        table.ready()
        yield table
    finally:
        table.close()


def _status(status: str) -> Text:
    return Text(status, style=STYLE.get(status, ""))


def _when(moment: Any) -> Text:
    return Text(display.ago(moment), style="dim" if moment is None else "")


def jobs_table(rows: list[WorkerJob], title: str | None = None) -> Table:
    """A rich table of rows, newest first, user content shown literally."""
    table = Table(title=title, title_justify="left", header_style="bold dim", expand=False,
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    right = {"justify": "right", "no_wrap": True}
    plain = {"no_wrap": True}
    for name, kw in (("id", right), ("type", {"no_wrap": True, "overflow": "ellipsis"}),
                     ("user", right), ("status", plain), ("due", plain), ("finished", plain),
                     ("ran", right), ("tries", right), ("from", right),
                     ("outcome", {"overflow": "ellipsis"})):
        table.add_column(name, **kw)
    for r in rows:
        ran = display.runtime(r)
        table.add_row(
            str(r.id), Text(r.type), str(r.user_id), _status(r.status.value), _when(r.due),
            _when(r.finished), "" if ran is None else display.human_duration(ran),
            str(r.attempts), str(r.rescheduled_from_job or ""),
            Text(display.summary(r, 60), no_wrap=True, overflow="ellipsis"))
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
    jobtable jobs cancel 42        a pending job
    jobtable jobs run-now 42       a pending job, due now
    jobtable jobs purge --status succeeded --older-than 7d
    """
    if ctx.invoked_subcommand is not None:
        return
    with _table(load_settings(database=database, jobs=jobs)) as table:
        rows = table.list_jobs(status=status, type=job_type, user_id=user_id, limit=limit)
        total = table.count_jobs(status=status, type=job_type, user_id=user_id)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in rows]))
        return
    console = _console()
    if not rows:
        console.print("no jobs match", style="dim")
        return
    console.print(jobs_table(rows))
    if total > len(rows):
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
    with _table(_settings(ctx, database, jobs)) as table:
        job = table.require_job(job_id)
        chain = table.job_chain(job_id)
    if as_json:
        click.echo(json.dumps({"job": job.to_dict(), "chain": [c.to_dict() for c in chain]}))
        return
    _console().print(job_view(job, chain))


def job_view(job: WorkerJob, chain: list[WorkerJob]) -> RenderableType:
    """The ``jobs show`` rendering."""
    fields = Table.grid(padding=(0, 2))
    fields.add_column(style="dim", justify="right")
    fields.add_column(overflow="fold")
    for name, value in job.to_dict().items():
        if name in ("data", "result"):
            continue
        text = Text("null", style="dim") if value is None else Text(str(value))
        if name == "status":
            text = _status(str(value))
        elif name in ("due", "started", "finished", "remove_at") and value is not None:
            text.append(f"  ({display.ago(getattr(job, name))})", style="dim")
        fields.add_row(name, text)
    ran = display.runtime(job)
    if ran is not None:
        fields.add_row("ran for", display.human_duration(ran))
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
    """Cancel pending job JOB_ID. A running job cannot be stopped: it finishes, or fails at
    its timeout."""
    with _table(_settings(ctx, database, jobs)) as table:
        job = table.cancel_job(job_id)
    click.echo(f"cancelled job {job.id} ({job.type}, user {job.user_id})")


@jobs_command.command("run-now")
@click.argument("job_id", type=int)
@database_options
@click.pass_context
@friendly_errors
def run_now(ctx: click.Context, job_id: int, database: str | None, jobs: str | None) -> None:
    """Make pending job JOB_ID due now."""
    with _table(_settings(ctx, database, jobs)) as table:
        job = table.run_job_now(job_id)
    click.echo(f"job {job.id} ({job.type}, user {job.user_id}) is due now")


def _progress(description: str) -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=_console(err=True), transient=False)


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
    with _table(_settings(ctx, database, jobs)) as table:
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
    with _table(_settings(ctx, database, jobs)) as table:
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


def stats_view(s: Stats) -> RenderableType:
    """The ``jobtable stats`` rendering."""
    head = Text()
    for status in STATUSES:
        head.append(f"{status} ", style="dim")
        head.append(f"{s.by_status.get(status, 0)}", style=f"bold {STYLE[status]}")
        head.append("   ")
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="dim", justify="right")
    facts.add_column()
    lag = display.human_duration(s.queue_lag) if s.oldest_pending_due else "none"
    facts.add_row("queue lag", Text(lag, style="yellow" if s.queue_lag.total_seconds() > 60
                                    else ""))
    facts.add_row("last hour", f"{s.finished_last_hour} finished, "
                               f"{s.jobs_per_minute:.1f} jobs/min")
    peak = max((b.total for b in s.throughput), default=0)
    spark = "".join(SPARK[min(7, int(b.total * 7 / peak + 0.999))] if b.total else " "
                    for b in s.throughput) if peak else "(nothing finished)"
    facts.add_row("per minute", Text(spark, style="green"))
    facts.add_row("live workers", f"{len(s.workers)} ({s.slots} slots)")
    by_type = Table(title="by type", title_justify="left", header_style="bold dim")
    by_type.add_column("type")
    for status in STATUSES:
        by_type.add_column(status, justify="right", style=STYLE[status])
    for job_type, counts in sorted(s.by_type.items()):
        by_type.add_row(Text(job_type), *(str(counts.get(st, 0) or "") for st in STATUSES))
    parts: list[RenderableType] = [head, facts]
    if s.by_type:
        parts.append(by_type)
    if s.workers:
        workers = Table(title="workers", title_justify="left", header_style="bold dim")
        for col in ("host", "pid", "slots", "up since", "seen"):
            workers.add_column(col)
        for w in s.workers:
            workers.add_row(Text(w.host), str(w.pid), str(w.concurrency), display.ago(w.started),
                            display.ago(w.last_seen))
        parts.append(workers)
    parts.append(Text(f"at {s.now.strftime('%Y-%m-%d %H:%M:%S')} UTC", style="dim"))
    return Group(*parts)


@click.command("stats")
@database_options
@click.option("--watch", "-w", is_flag=True, help="Refresh in place until Ctrl-C.")
@click.option("--interval", type=click.FloatRange(0.2), default=2.0, show_default=True,
              help="Seconds between refreshes with --watch.")
@click.option("--json", "as_json", is_flag=True, help="Print the numbers as JSON.")
@friendly_errors
def stats_command(database: str | None, jobs: str | None, watch: bool, interval: float,
                  as_json: bool) -> None:
    """Counts per status and type, oldest pending lag, jobs/min over the last hour, live
    worker processes."""
    settings = load_settings(database=database, jobs=jobs)
    if watch and as_json:
        raise click.UsageError("--watch shows a live view; drop --json")
    with _table(settings) as table:
        if not watch:
            snapshot = table.stats(settings.rescue_after)
            if as_json:
                click.echo(json.dumps(snapshot.to_dict()))
            else:
                _console().print(stats_view(snapshot))
            return
        console = _console()
        try:
            if not console.is_terminal:
                # Not a terminal (a pipe, a log): append each snapshot instead.
                while True:
                    console.print(stats_view(table.stats(settings.rescue_after)))
                    console.print()
                    console.file.flush()
                    time.sleep(interval)
            from rich.live import Live

            with Live(stats_view(table.stats(settings.rescue_after)), console=console,
                      auto_refresh=False, screen=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(stats_view(table.stats(settings.rescue_after)),
                                refresh=True)
        except KeyboardInterrupt:
            pass


@click.command("dashboard")
@database_options
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on. Anything but loopback needs a token or basic auth.")
@click.option("--port", type=click.IntRange(0, 65535), default=8787, show_default=True,
              help="Port to listen on.")
@click.option("--token", envvar="JOBTABLE_DASHBOARD_TOKEN", metavar="TOKEN",
              help="Require this token (Bearer header, or ?token= once in the browser) "
                   "[env JOBTABLE_DASHBOARD_TOKEN].")
@click.option("--user", envvar="JOBTABLE_DASHBOARD_USER", metavar="NAME",
              help="Basic-auth user name [env JOBTABLE_DASHBOARD_USER].")
@click.option("--password", envvar="JOBTABLE_DASHBOARD_PASSWORD", metavar="PASSWORD",
              help="Basic-auth password [env JOBTABLE_DASHBOARD_PASSWORD].")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="HOST",
              envvar="JOBTABLE_DASHBOARD_ALLOWED_HOSTS",
              help="A Host name the dashboard answers to besides loopback (repeatable; "
                   "'ops.example.com', '*.example.com', 'name:port') "
                   "[env JOBTABLE_DASHBOARD_ALLOWED_HOSTS, comma-separated].")
@click.option("--origin", envvar="JOBTABLE_DASHBOARD_ORIGIN", metavar="URL",
              help="The public origin actions must come from, behind a proxy "
                   "('https://ops.example.com') [env JOBTABLE_DASHBOARD_ORIGIN].")
@click.option("--log-level", metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR.")
@friendly_errors
def dashboard_command(database: str | None, jobs: str | None, host: str, port: int,
                      token: str | None, user: str | None, password: str | None,
                      allowed_hosts: tuple[str, ...], origin: str | None,
                      log_level: str | None) -> None:
    """Serve the web dashboard: overview, jobs, job details, cron schedules, actions and
    /metrics for Prometheus."""
    from jobtable._extras import require_extra

    require_extra("dashboard", "the dashboard")
    import uvicorn

    from jobtable.dashboard import create_app
    from jobtable.dashboard.security import is_loopback

    if (user is None) != (password is None):
        raise click.UsageError("basic auth needs both --user and --password")
    if token == "":
        raise click.UsageError("--token must not be empty")
    if not is_loopback(host) and token is None and user is None:
        raise click.UsageError(
            f"--host {host} would open the dashboard to other machines without credentials; "
            "set a token (--token or JOBTABLE_DASHBOARD_TOKEN) or basic auth (--user and "
            "--password, or JOBTABLE_DASHBOARD_USER and JOBTABLE_DASHBOARD_PASSWORD), or keep "
            "the default --host 127.0.0.1")
    setup_logging(log_level or "WARNING")
    settings = load_settings(database=database, jobs=jobs)
    with _table(settings):  # fail now, clearly, if the database is unreachable
        pass
    app = create_app(settings, token=token, username=user, password=password,
                     allowed_hosts=allowed_hosts or None, origin=origin)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{port}/"
    click.echo(f"jobtable dashboard for {_redact(settings.database)} on {url}"
               + ("?token=…" if token else ""), err=True)
    uvicorn.run(app, host=host, port=port, log_level=(log_level or "warning").lower(),
                access_log=False, server_header=False)


def _redact(url: str) -> str:
    import re

    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


__all__ = ["dashboard_command", "jobs_command", "jobs_table", "stats_command", "stats_view"]

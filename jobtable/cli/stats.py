"""``jobtable stats``: counts, lag, throughput and workers, once or live."""

from __future__ import annotations

import json
import time

import click
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from jobtable import display
from jobtable.cli.jobs import SPARK, STYLE, make_console
from jobtable.cli.options import checked_table, database_options, friendly_errors
from jobtable.cli.queues import queues_table
from jobtable.reports import Stats
from jobtable.routing import QueueInfo
from jobtable.settings import load_settings
from jobtable.store.base import STATUSES


def stats_view(s: Stats, queues: list[QueueInfo] | None = None) -> RenderableType:
    """The ``jobtable stats`` rendering; ``queues`` adds pending/running per queue."""
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
    if s.table is not None and s.table.bloating:
        facts.add_row("table", Text(
            f"bloating: {s.table.dead:,} dead rows for {s.table.live:,} live "
            f"({display.human_bytes(s.table.size_bytes)}); the cleanup job vacuums it, or "
            f"check the server's autovacuum", style="yellow"))
    by_type = Table(title="by type", title_justify="left", header_style="bold dim")
    by_type.add_column("type")
    for status in STATUSES:
        by_type.add_column(status, justify="right", style=STYLE[status])
    for job_type, counts in sorted(s.by_type.items()):
        by_type.add_row(Text(job_type), *(str(counts.get(st, 0) or "") for st in STATUSES))
    parts: list[RenderableType] = [head, facts]
    if s.estimated:
        parts.insert(1, Text("succeeded, failed, cancelled and throughput are estimated from "
                             "a sample of the table (pending and running are exact)",
                             style="dim"))
    if s.by_type:
        parts.append(by_type)
    if queues:
        by_queue = queues_table(queues)
        by_queue.title, by_queue.title_justify = "by queue", "left"
        parts.append(by_queue)
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
    with checked_table(settings) as table:
        if not watch:
            snapshot = table.stats(settings.rescue_after)
            queues = table.list_queues()
            if as_json:
                click.echo(json.dumps({**snapshot.to_dict(),
                                       "queues": [q.to_dict() for q in queues]}))
            else:
                make_console().print(stats_view(snapshot, queues))
            return
        console = make_console()
        try:
            if not console.is_terminal:
                # Not a terminal (a pipe, a log): append each snapshot instead.
                while True:
                    console.print(stats_view(table.stats(settings.rescue_after),
                                             table.list_queues()))
                    console.print()
                    console.file.flush()
                    time.sleep(interval)
            from rich.live import Live

            with Live(stats_view(table.stats(settings.rescue_after), table.list_queues()),
                      console=console,
                      auto_refresh=False, screen=False) as live:
                while True:
                    time.sleep(interval)
                    live.update(stats_view(table.stats(settings.rescue_after),
                                           table.list_queues()), refresh=True)
        except KeyboardInterrupt:
            pass

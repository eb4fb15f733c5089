"""``jobtable schedule``: schedule a job (or start a cron chain) from the shell."""

from __future__ import annotations

import json

import click

from jobtable.cli.options import database_options, friendly_errors, open_table
from jobtable.model import WorkerJobConfig
from jobtable.timeutil import parse_due, parse_duration
from jobtable.validation import read_job_data


@click.command("schedule")
@click.argument("job_type")
@database_options
@click.option("--user-id", "-u", type=int, default=0, show_default=True,
              help="Whom the job is for (0 = system).")
@click.option("--data", metavar="JSON",
              help="Job data as a JSON object; '-' reads it from standard input [default {}].")
@click.option("--data-file", metavar="PATH",
              help="Read the job data (a JSON object) from this file ('-': standard input).")
@click.option("--due", metavar="WHEN",
              help="ISO-8601 time with offset, or +N with a unit s, m, h or d (e.g. +10s).")
@click.option("--cron", metavar="EXPR",
              help="Start a cron chain: 6 fields with seconds ('0 * * * * *') or 5 fields.")
@click.option("--timezone", metavar="TZ", help="Time zone of --cron (default UTC).")
@click.option("--retry/--no-retry", default=None,
              help="Reschedule automatically after a failure [default: the job module's "
                   "AUTO_RESCHEDULE_ON_FAILURE, else no].")
@click.option("--retry-delay", metavar="DURATION", help="Delay before that retry.")
@click.option("--remove-delay", metavar="DURATION",
              help="How long a succeeded job is kept [default 1h].")
@click.option("--json", "as_json", is_flag=True, help="Print the new row as JSON.")
@friendly_errors
def schedule(job_type: str, database: str | None, jobs: str | None, user_id: int,
             data: str | None, data_file: str | None, due: str | None, cron: str | None,
             timezone: str | None, retry: bool | None, retry_delay: str | None,
             remove_delay: str | None, as_json: bool) -> None:
    """Schedule a job of JOB_TYPE (cancelling matching pending jobs first)."""
    payload = read_job_data(data, data_file)
    config = WorkerJobConfig(
        type=job_type, user_id=user_id, data=payload,
        due=parse_due(due) if due else None, auto_reschedule_on_failure=retry,
        auto_reschedule_on_failure_delay=parse_duration(retry_delay, "--retry-delay")
        if retry_delay else None,
        remove_delay=parse_duration(remove_delay, "--remove-delay") if remove_delay else None)
    with open_table(database, jobs) as jt:
        if cron:
            job = jt.schedule_cron_job(config, cron, timezone)
        elif timezone:
            raise click.UsageError("--timezone goes with --cron")
        else:
            job = jt.schedule_job(config)
    if as_json:
        click.echo(json.dumps(job.to_dict()))
    else:
        click.echo(f"scheduled job {job.id} ({job.type}, user {job.user_id}) due "
                   f"{job.due.isoformat()}" + (f", cron {job.cron_schedule}" if cron else ""))

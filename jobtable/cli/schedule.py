"""``jobtable schedule``: schedule a job (or start a cron chain) from the shell."""

from __future__ import annotations

import json
import sys
from datetime import timedelta

import click

from jobtable.cli.options import database_options, friendly_errors, open_table
from jobtable.client import JobTable
from jobtable.model import UNSET, Unset, WorkerJob, WorkerJobConfig
from jobtable.timeutil import parse_due, parse_duration
from jobtable.validation import read_job_data

WAIT_TIMEOUT_EXIT = 124
"""The exit status of ``jobtable schedule --wait`` when ``--timeout`` passed first (as
GNU ``timeout`` does; 1 is a failed job, 2 a usage error)."""


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
@click.option("--unique-key", metavar="KEY",
              help="Match only pending jobs of this type and user with this key "
                   "(at most 255 characters).")
@click.option("--on-conflict", type=click.Choice(["replace", "keep", "allow"]),
              help="What to do with matching pending jobs: cancel them (replace), return "
                   "the existing one and write nothing (keep), or ignore them (allow) "
                   "[default: the job module's ON_CONFLICT, else replace].")
@click.option("--queue", "-q", metavar="NAME",
              help="The queue the job waits in [default: the job module's QUEUE, else "
                   "'default'].")
@click.option("--priority", type=int,
              help="Lower runs first, negative allowed [default: the job module's "
                   "PRIORITY, else 0].")
@click.option("--max-retries", metavar="N|unlimited",
              help="Retry rows a failing job may produce [default: the module's "
                   "MAX_RETRIES, else the max_retries setting, 25].")
@click.option("--backoff", type=click.Choice(["constant", "exponential"]), default=None,
              help="Retry after the delay each time, or after delay * 2^(n-1) with jitter "
                   "[default constant].")
@click.option("--max-backoff", metavar="DURATION",
              help="Longest exponential retry delay [default: the max_backoff setting, 1h].")
@click.option("--json", "as_json", is_flag=True,
              help="Print the new row as JSON (with --wait: the finished row).")
@click.option("--wait", is_flag=True,
              help="Wait until the job (and its retries) finished, print its result and "
                   "exit 0 when it succeeded, 1 when it failed or was cancelled, "
                   f"{WAIT_TIMEOUT_EXIT} when --timeout passed first.")
@click.option("--timeout", metavar="DURATION",
              help="With --wait: how long to wait (e.g. 30s, 5m) [default: no limit].")
@friendly_errors
def schedule(job_type: str, database: str | None, jobs: str | None, user_id: int,
             data: str | None, data_file: str | None, due: str | None, cron: str | None,
             timezone: str | None, retry: bool | None, retry_delay: str | None,
             remove_delay: str | None, unique_key: str | None, on_conflict: str | None,
             queue: str | None, priority: int | None, max_retries: str | None,
             backoff: str | None, max_backoff: str | None, as_json: bool, wait: bool,
             timeout: str | None) -> None:
    """Schedule a job of JOB_TYPE (cancelling matching pending jobs first, unless
    --on-conflict says otherwise)."""
    payload = read_job_data(data, data_file)
    retries: int | Unset | None = UNSET
    if max_retries is not None:
        retries = _max_retries(max_retries)
    config = WorkerJobConfig(
        type=job_type, user_id=user_id, data=payload,
        due=parse_due(due) if due else None, auto_reschedule_on_failure=retry,
        auto_reschedule_on_failure_delay=parse_duration(retry_delay, "--retry-delay")
        if retry_delay else None,
        remove_delay=parse_duration(remove_delay, "--remove-delay") if remove_delay else None,
        unique_key=unique_key, on_conflict=on_conflict,  # type: ignore[arg-type]
        queue=queue, priority=priority, max_retries=retries,
        backoff=backoff,  # type: ignore[arg-type]
        max_backoff=parse_duration(max_backoff, "--max-backoff") if max_backoff else None)
    if timezone and not cron:
        raise click.UsageError("--timezone goes with --cron")
    if timeout and not wait:
        raise click.UsageError("--timeout goes with --wait")
    if wait and cron:
        raise click.UsageError("--wait cannot wait for a cron chain, which never finishes")
    limit = parse_duration(timeout, "--timeout") if timeout else None
    with open_table(database, jobs) as jt:
        report = jt.schedule_job_report(config, cron or None, timezone or None)
        # With --wait --json, standard output is the finished row alone.
        _tell(report.job, report.cancelled, cron, as_json and not wait, quiet=as_json and wait)
        if wait:
            _wait(jt, report.job.id, limit, as_json)


def _wait(jt: JobTable, job_id: int, limit: timedelta | None, as_json: bool) -> None:
    try:
        done = jt.wait_for(job_id, limit, follow_retries=True)
    except TimeoutError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(WAIT_TIMEOUT_EXIT)
    if as_json:
        click.echo(json.dumps(done.to_dict()))
    else:
        click.echo(f"job {done.id} {done.status.value}: " + json.dumps(done.result))
    sys.exit(0 if done.success else 1)


def _tell(job: WorkerJob, cancelled: list[int], cron: str | None, as_json: bool,
          quiet: bool) -> None:
    if quiet:
        return
    if as_json:
        click.echo(json.dumps(job.to_dict()))
    elif not job.inserted:
        click.echo(f"kept pending job {job.id} ({job.type}, user {job.user_id}) due "
                   f"{job.due.isoformat()}; nothing scheduled")
    else:
        click.echo(f"scheduled job {job.id} ({job.type}, user {job.user_id}) due "
                   f"{job.due.isoformat()}" + (f", cron {job.cron_schedule}" if cron else "")
                   + (f", queue {job.queue}" if job.queue != "default" else "")
                   + (f", priority {job.priority}" if job.priority else ""))
    if cancelled:
        # On standard error with --json, so that standard output stays one JSON object.
        click.echo(f"cancelled {len(cancelled)} pending job(s) of this type and user: "
                   + ", ".join(f"#{i}" for i in cancelled), err=as_json)


def _max_retries(text: str) -> int | None:
    if text.strip().lower() in ("unlimited", "none"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise click.BadParameter(
            f"expected a whole number of at least 0 or 'unlimited', got {text!r}",
            param_hint="--max-retries") from None
    if value < 0:
        raise click.BadParameter(f"must be at least 0 (or 'unlimited'), got {value}",
                                 param_hint="--max-retries")
    return value

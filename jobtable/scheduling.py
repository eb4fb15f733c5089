"""The scheduling rules, free of SQL: what a new row, a retry and a next cron run look like."""

from __future__ import annotations

from datetime import datetime, timedelta

from jobtable.cron import parse_cron
from jobtable.model import NewJob, ValidConfig, WorkerJob
from jobtable.timeutil import to_millis


def new_job(
    config: ValidConfig,
    now: datetime,
    *,
    cron: str | None = None,
    timezone: str | None = None,
    declared: bool = False,
) -> NewJob:
    """The row for a validated config. A cron job is first due at its next occurrence."""
    due = config.due or now
    if cron is not None:
        schedule = parse_cron(cron, timezone)
        cron = schedule.expression
        due = schedule.next_after(due)
    return NewJob(
        type=config.type,
        user_id=config.user_id,
        data=config.data,
        due=due,
        auto_reschedule_on_failure=config.auto_reschedule_on_failure,
        auto_reschedule_on_failure_delay_ms=to_millis(config.auto_reschedule_on_failure_delay),
        remove_delay_ms=to_millis(config.remove_delay),
        cron_schedule=cron,
        cron_timezone=timezone,
        declared=declared,
    )


def follow_up(job: WorkerJob, success: bool, now: datetime, *,
              retry: bool = True) -> NewJob | None:
    """The row that follows a finished run, if any.

    - a failure with auto-reschedule (unless ``retry`` is False, for a job given up
      on for good): a retry due after the delay (a cron job's retry keeps its schedule);
    - otherwise a cron job: its next occurrence strictly after ``now``, so missed
      ticks during downtime collapse into one run;
    - otherwise nothing.
    """
    if not success and retry and job.auto_reschedule_on_failure:
        due = now + timedelta(milliseconds=job.auto_reschedule_on_failure_delay)
    elif job.cron_schedule is not None:
        due = parse_cron(job.cron_schedule, job.cron_timezone).next_after(now)
    else:
        return None
    return NewJob(
        type=job.type,
        user_id=job.user_id,
        data=job.data,
        due=due,
        auto_reschedule_on_failure=job.auto_reschedule_on_failure,
        auto_reschedule_on_failure_delay_ms=job.auto_reschedule_on_failure_delay,
        remove_delay_ms=job.remove_delay,
        cron_schedule=job.cron_schedule,
        cron_timezone=job.cron_timezone,
        rescheduled_from_job=job.id,
        declared=job.declared,
    )


def dedupe_batch(jobs: list[NewJob]) -> list[bool]:
    """For a batch, which rows stay pending: only the last of each (type, user_id).

    Earlier rows of the same pair are written already cancelled, as if scheduled
    one after another.
    """
    last: dict[tuple[str, int], int] = {}
    for index, job in enumerate(jobs):
        last[(job.type, job.user_id)] = index
    return [last[(job.type, job.user_id)] == i for i, job in enumerate(jobs)]

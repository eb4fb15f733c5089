"""The rules of the queue as plain functions of plain data: no SQL, no database, no clock.

What a new row, a follow-up row (a retry, a cron job's next run) and a retry-by-hand row
look like; which rows of a batch stay pending; whether an abandoned row is run again or
given up on; whether an unfinished row is the same cron chain; which hand actions a row
allows. The store applies these inside its transactions; the worker and ``JobTable``
call them to build rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from jobtable.cron import parse_cron
from jobtable.model import JobStatus, NewJob, Outcome, ValidConfig, WorkerJob
from jobtable.timeutil import to_millis

DEFAULT_MAX_ATTEMPTS = 4
ABANDONED_MESSAGE = (
    "Job abandoned: its worker stopped responding during {attempts} attempts "
    "(limit {limit}); not run again"
)
CANCELLED_BY_USER = "Job cancelled by request"
UNDECLARED_MESSAGE = "Job cancelled: its CRON declaration was removed or changed"
RETRYABLE = (JobStatus.FAILED, JobStatus.CANCELLED)


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
        queue=config.queue,
        priority=config.priority,
        unique_key=config.unique_key,
        on_conflict=config.on_conflict,
    )


def _copy(job: WorkerJob, due: datetime, *, retry_count: int = 0) -> NewJob:
    """A new row like ``job`` (same type, user, data and policies), pointing back to it.

    ``retry_count`` says which retry of its chain the new row is (0: not a retry).
    """
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
        retry_count=retry_count,
        max_retries=job.max_retries,
        backoff=job.backoff,
        max_backoff_ms=job.max_backoff,
        unique_key=job.unique_key,
        on_conflict=job.on_conflict,
        queue=job.queue,
        priority=job.priority,
        trace_context=job.trace_context,
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
        return _copy(job, due, retry_count=job.retry_count + 1)
    if job.cron_schedule is not None:
        due = parse_cron(job.cron_schedule, job.cron_timezone).next_after(now)
        return _copy(job, due)
    return None


def retry_row(job: WorkerJob, now: datetime) -> NewJob:
    """The row of a retry by hand: a copy of ``job`` due now (a cron row keeps its
    schedule, so its retry replaces the chain's next run)."""
    return _copy(job, now)


def dedupe_batch(jobs: list[NewJob]) -> list[bool]:
    """For a batch, which rows stay pending: only the last of each (type, user_id).

    Earlier rows of the same pair are written already cancelled, as if scheduled
    one after another.
    """
    last: dict[tuple[str, int], int] = {}
    for index, job in enumerate(jobs):
        last[(job.type, job.user_id)] = index
    return [last[(job.type, job.user_id)] == i for i, job in enumerate(jobs)]


def pairs_to_match(jobs: Sequence[NewJob]) -> dict[tuple[str, int], bool]:
    """The (type, user_id) pairs whose pending jobs a batch replaces, and for each
    whether the replacement also ends a pending cron chain of the pair.

    A cron job (the last of its pair in the batch) replaces every pending job of the
    pair; a one-off replaces only one-offs, so that running a cron job's type by hand
    does not end its chain.
    """
    last: dict[tuple[str, int], bool] = {}
    for job in jobs:
        last[(job.type, job.user_id)] = job.cron_schedule is not None
    return last


def rescue(job: WorkerJob, now: datetime, max_attempts: int) -> Outcome | None:
    """What becomes of a row whose worker died (or that went stale).

    None: it is made pending again (its attempts stay counted). Otherwise, once its
    attempts reached ``max_attempts``, the failed outcome to write instead of looping;
    a cron job's chain still continues at its next occurrence (no retry).
    """
    if job.attempts < max_attempts:
        return None
    error = ABANDONED_MESSAGE.format(attempts=job.attempts, limit=max_attempts)
    return Outcome(job=job, success=False, result={"error": error, "exception": "Abandoned"},
                   follow_up=follow_up(job, success=False, now=now, retry=False))


def is_stale(job: WorkerJob, stale_cutoff: datetime) -> bool:
    """Started, unfinished, and started before ``stale_cutoff``: it counts as pending."""
    return job.finished is None and job.started is not None and job.started < stale_cutoff


def is_running(job: WorkerJob, stale_cutoff: datetime) -> bool:
    """Started, unfinished and not yet stale: a worker is running it right now."""
    return job.finished is None and job.started is not None and job.started >= stale_cutoff


def same_chain(existing: WorkerJob, job: NewJob, stale_cutoff: datetime) -> bool:
    """Whether the unfinished row ``existing`` already is the cron chain ``job`` would
    start: same schedule, time zone and data, and not stale."""
    return (existing.cron_schedule == job.cron_schedule
            and existing.cron_timezone == job.cron_timezone
            and existing.data == job.data
            and not is_stale(existing, stale_cutoff))


def keeps_declared_chain(job: WorkerJob, declared: dict[str, str]) -> bool:
    """Whether a pending declared-cron row is still declared (or already started)."""
    return declared.get(job.type) == job.cron_schedule or job.started is not None


def cancel_refusal(job: WorkerJob, stale_cutoff: datetime) -> str | None:
    """Why ``job`` cannot be cancelled by hand, or None when it can."""
    if is_running(job, stale_cutoff):
        return (f"job {job.id} is running (claimed by {job.claimed_by or 'a worker'}); a "
                "running job cannot be cancelled: it will finish, or fail when it reaches "
                "its timeout")
    if job.finished is not None:
        return (f"job {job.id} is {job.status.value}, not pending; only pending jobs can be "
                "cancelled")
    return None


def retry_refusal(job: WorkerJob) -> str | None:
    """Why ``job`` cannot be retried by hand, or None when it can."""
    if job.status not in RETRYABLE:
        return (f"job {job.id} is {job.status.value}; only failed or cancelled jobs can be "
                "retried")
    return None


def run_now_refusal(job: WorkerJob) -> str | None:
    """Why ``job`` cannot be made due now, or None when it can."""
    if job.status != JobStatus.PENDING:
        return f"job {job.id} is {job.status.value}; only pending jobs can be run now"
    return None

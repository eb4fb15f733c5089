"""The rules of the queue as plain functions of plain data: no SQL, no database, no clock.

What a new row, a follow-up row (a retry, a cron job's next run) and a retry-by-hand row
look like; which rows of a batch stay pending; whether an abandoned row is run again or
given up on; whether an unfinished row is the same cron chain; which hand actions a row
allows. The store applies these inside its transactions; the worker and ``JobTable``
call them to build rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from jobtable.cron import parse_cron
from jobtable.model import (
    CANCELLED_MESSAGE,
    Ending,
    JobStatus,
    NewJob,
    Outcome,
    ValidConfig,
    WorkerJob,
    job_from_values,
)
from jobtable.timeutil import to_millis

DEFAULT_MAX_ATTEMPTS = 4
ABANDONED_MESSAGE = (
    "Job abandoned: its worker stopped responding during {attempts} attempts "
    "(limit {limit}); not run again"
)
CANCELLED_BY_USER = "Job cancelled by request"
CANCELLED_WHILE_RUNNING = "Job cancelled by request while running"
CANCELLED_RESULT = {"error": CANCELLED_WHILE_RUNNING, "exception": "JobCancelled"}
"""The result of a row cancelled while running (``returned`` may be added)."""
EXHAUSTED_MESSAGE = "retries exhausted after {n}"
BACKOFF_JITTER = 0.1
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
        max_retries=config.max_retries,
        backoff=config.backoff,
        max_backoff_ms=to_millis(config.max_backoff),
        data_json=config.data_json,
    )


def new_job_like(template: NewJob, *, user_id: int, data: dict[str, Any],
                 data_json: str | None, due: datetime, unique_key: str | None) -> NewJob:
    """``template`` (a one-off row of ``new_job``) for another user, data, due time and
    key: what ``new_job`` gives for a config of that type which sets only these."""
    return NewJob(
        type=template.type,
        user_id=user_id,
        data=data,
        due=due,
        auto_reschedule_on_failure=template.auto_reschedule_on_failure,
        auto_reschedule_on_failure_delay_ms=template.auto_reschedule_on_failure_delay_ms,
        remove_delay_ms=template.remove_delay_ms,
        queue=template.queue,
        priority=template.priority,
        unique_key=unique_key,
        on_conflict=template.on_conflict,
        max_retries=template.max_retries,
        backoff=template.backoff,
        max_backoff_ms=template.max_backoff_ms,
        data_json=data_json,
    )


def written_row(job: NewJob, job_id: int, now: datetime, *, data: dict[str, Any],
                cancelled: bool = False) -> WorkerJob:
    """The row that scheduling writes for ``job`` with id ``job_id`` at ``now`` (its
    ``created_at``): pending, or, when a later job of its batch replaced it
    (``cancelled``), finished as cancelled. ``data`` is ``job.data`` as the database
    gives it back. What a store returns instead of reading the row it just wrote."""
    # In JOB_COLUMNS order (job_from_values checks the count; a test compares these rows
    # with the rows read back).
    return job_from_values((
        job_id, job.type, job.user_id, data, job.due.astimezone(UTC),
        None,                                           # started
        now if cancelled else None,                     # finished
        None,                                           # remove_at
        False if cancelled else None,                   # success
        {"error": CANCELLED_MESSAGE} if cancelled else None,
        job.cron_schedule, job.cron_timezone, job.auto_reschedule_on_failure,
        job.auto_reschedule_on_failure_delay_ms, job.remove_delay_ms,
        job.rescheduled_from_job, cancelled,
        0, None,                                        # attempts, claimed_by
        job.declared, now, now,                         # declared, created_at, updated_at
        job.retry_count, job.max_retries, job.backoff, job.max_backoff_ms,
        None,                                           # cancel_requested
        job.unique_key, job.on_conflict, job.queue, job.priority, job.trace_context,
        0, 0))                                          # crashes, loop_blocked_ms


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


def backoff_delay_ms(delay_ms: int, backoff: str, max_backoff_ms: int, n: int,
                     jitter: float = 0.0) -> int:
    """How long after a failure the ``n``-th retry (1, 2, ...) of a chain is due, in ms.

    ``constant``: the delay. ``exponential``: delay * 2^(n-1), times (1 + ``jitter``)
    (the caller draws ``jitter`` within ±``BACKOFF_JITTER``), at most ``max_backoff_ms``.
    """
    if backoff != "exponential":
        return delay_ms
    # 2^62 ms is far beyond any cap: stop doubling there instead of overflowing.
    grown = delay_ms * 2 ** min(max(n - 1, 0), 62) * (1.0 + jitter)
    return max(0, min(int(grown), max_backoff_ms))


def retries_left(job: WorkerJob) -> bool:
    """Whether ``job`` may still produce a retry row (``max_retries`` None: always)."""
    return job.max_retries is None or job.retry_count < job.max_retries


def _next_cron(job: WorkerJob, now: datetime) -> NewJob | None:
    if job.cron_schedule is None:
        return None
    return _copy(job, parse_cron(job.cron_schedule, job.cron_timezone).next_after(now))


def follow_up(job: WorkerJob, success: bool, now: datetime, *,
              retry: bool = True, force: bool = False, after: timedelta | None = None,
              jitter: float = 0.0) -> NewJob | None:
    """The row that follows a finished run, if any.

    - a failure with auto-reschedule, or any failure with ``force`` (the job raised
      ``Retry``), while retries are left: a retry due after ``after``, else after the
      delay and backoff (a cron job's retry keeps its schedule); never when ``retry``
      is False (a job given up on for good, discarded or cancelled);
    - otherwise a cron job: its next occurrence strictly after ``now``, so missed
      ticks during downtime collapse into one run;
    - otherwise nothing.
    """
    if not success and retry and (force or job.auto_reschedule_on_failure) \
            and retries_left(job):
        n = job.retry_count + 1
        if after is None:
            after = timedelta(milliseconds=backoff_delay_ms(
                job.auto_reschedule_on_failure_delay, job.backoff, job.max_backoff, n, jitter))
        return _copy(job, now + after, retry_count=n)
    return _next_cron(job, now)


def finish(job: WorkerJob, success: bool, result: Any, now: datetime, *,
           retry: bool = True, force: bool = False, after: timedelta | None = None,
           discarded: bool = False, jitter: float = 0.0) -> Outcome:
    """The outcome of a finished run: its result and ending, and the row that follows.

    A failure that wanted a retry (auto-reschedule, or ``force``) when ``max_retries``
    is used up keeps its result and adds ``retries_exhausted`` (the retries done) and
    ``no_retry``; a discarded run (``Discard``) adds ``discarded``; neither retries.
    """
    if success:
        return Outcome(job=job, success=True, result=result, ending=Ending.SUCCEEDED,
                       follow_up=_next_cron(job, now))
    if discarded:
        retry = False
    nxt = follow_up(job, False, now, retry=retry, force=force, after=after, jitter=jitter)
    wanted = retry and (force or job.auto_reschedule_on_failure)
    if discarded:
        ending = Ending.DISCARDED
        result = {**_as_dict(result), "discarded": True}
    elif wanted and not retries_left(job):
        ending = Ending.EXHAUSTED
        result = {**_as_dict(result), "retries_exhausted": job.retry_count,
                  "no_retry": EXHAUSTED_MESSAGE.format(n=job.retry_count)}
    elif wanted:
        ending = Ending.RETRYING
    else:
        ending = Ending.FAILED
    return Outcome(job=job, success=False, result=result, ending=ending, follow_up=nxt)


def cancelled(job: WorkerJob, now: datetime, *, returned: Any = None,
              has_returned: bool = False) -> Outcome:
    """The outcome of a run cancelled by request: cancelled, no retry whatever the
    settings; a cron chain continues at its next occurrence. ``returned`` (kept when
    ``has_returned``) is what a plain ``def`` returned after seeing the request."""
    result: dict[str, Any] = dict(CANCELLED_RESULT)
    if has_returned:
        result["returned"] = returned
    return Outcome(job=job, success=False, result=result, ending=Ending.CANCELLED,
                   cancelled=True, follow_up=_next_cron(job, now))


def snoozed(job: WorkerJob, now: datetime, after: timedelta) -> Outcome:
    """The outcome of a run that raised ``Snooze``: the same row pending again, due
    after ``after``; not a failure, no retry counted."""
    return Outcome(job=job, success=False, result=None, ending=Ending.SNOOZED,
                   snooze_until=now + after)


def _as_dict(result: Any) -> dict[str, Any]:
    return dict(result) if isinstance(result, dict) else {"error": str(result)}


def retry_row(job: WorkerJob, now: datetime) -> NewJob:
    """The row of a retry by hand: a copy of ``job`` due now (a cron row keeps its
    schedule, so its retry replaces the chain's next run)."""
    return _copy(job, now)


def dedupe_batch(jobs: list[NewJob]) -> list[bool]:
    """For a batch, which rows are written pending (True) rather than already cancelled
    by a later job of the same batch, as if scheduled one after another (see
    ``plan_batch``; rows of the table are not looked at)."""
    plan = plan_batch(jobs, None)
    return [not c for c in plan.cancelled]


@dataclass(frozen=True, slots=True)
class Match:
    """Which pending rows a job's scheduling matches (rule 2).

    Same ``type`` and ``user_id``; with a ``unique_key`` only rows with that key (without
    one, every row of the pair, keyed or not); a one-off (``crons`` False) spares the rows
    of cron chains, a cron job matches them too.
    """

    type: str
    user_id: int
    unique_key: str | None
    crons: bool

    def hits(self, job_type: str, user_id: int, unique_key: str | None,
             is_cron: bool) -> bool:
        """Whether a pending row with these columns matches."""
        return (job_type == self.type and user_id == self.user_id
                and (self.unique_key is None or unique_key == self.unique_key)
                and (self.crons or not is_cron))


def match_of(job: NewJob) -> Match | None:
    """What ``job`` matches, or None for ``on_conflict="allow"`` (it matches nothing)."""
    if job.on_conflict == "allow":
        return None
    return Match(job.type, job.user_id, job.unique_key, job.cron_schedule is not None)


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """What scheduling a batch does, as if its jobs were scheduled one after another.

    - ``insert[i]``: job ``i`` is written (False: ``on_conflict="keep"`` found a match);
    - ``cancelled[i]``: it is written already cancelled (a later job replaced it);
    - ``kept[i]``: for a job not written, the match it returns: ``("row", id)`` of a
      table row, or ``("batch", j)`` of an earlier job of the batch;
    - ``cancel_ids``: pending table rows to cancel (when the table rows were given);
    - ``matches``: the ``Match`` of every replacing job, to cancel table rows by
      (when they were not given: the database applies them, before the inserts).
    """

    insert: list[bool]
    cancelled: list[bool]
    kept: list[tuple[str, int] | None]
    cancel_ids: list[int]
    matches: list[Match]


def needs_table_rows(jobs: Sequence[NewJob]) -> bool:
    """Whether planning ``jobs`` needs the pending rows of their pairs (a ``keep`` job
    must know whether a match exists; replacing and allowing need not)."""
    return any(j.on_conflict == "keep" for j in jobs)


def is_pending(job: WorkerJob, stale_cutoff: datetime) -> bool:
    """Unfinished and not started, or started before ``stale_cutoff`` (rule 1)."""
    return job.finished is None and (job.started is None or job.started < stale_cutoff)


def plan_batch(jobs: Sequence[NewJob], pending: Sequence[WorkerJob] | None) -> BatchPlan:
    """Rule 2 for a batch, job by job in order, as if scheduled one after another.

    ``pending`` are the table's pending rows of the batch's pairs (oldest first), or
    None when the caller lets the database cancel by ``matches`` (only possible when no
    job is ``keep``; see ``needs_table_rows``). ``replace`` cancels every match, then
    inserts; ``keep`` returns the oldest match instead of inserting, or inserts when
    there is none; ``allow`` inserts beside anything.
    """
    if pending is None and needs_table_rows(jobs):
        raise ValueError("a batch with on_conflict='keep' needs the table's pending rows")
    n = len(jobs)
    if pending is None and len({(j.type, j.user_id) for j in jobs}) == n:
        # Every job of its own pair: none matches another, the database cancels the rest.
        return BatchPlan(insert=[True] * n, cancelled=[False] * n, kept=[None] * n,
                         cancel_ids=[], matches=[Match(j.type, j.user_id, j.unique_key,
                                                       j.cron_schedule is not None)
                                                 for j in jobs if j.on_conflict == "replace"])
    # Live candidates per (type, user_id), oldest first: (origin, ref, type, user_id,
    # unique_key, is_cron). Only a job's own pair can match it, so a batch of n jobs of
    # n pairs costs O(n), not O(n^2).
    live: dict[tuple[str, int], list[tuple[str, int, str, int, str | None, bool]]] = {}
    for r in pending or []:
        live.setdefault((r.type, r.user_id), []).append(
            ("row", r.id, r.type, r.user_id, r.unique_key, r.cron_schedule is not None))
    insert = [True] * len(jobs)
    cancelled = [False] * len(jobs)
    kept: list[tuple[str, int] | None] = [None] * len(jobs)
    cancel_ids: list[int] = []
    matches: list[Match] = []
    seen: set[Match] = set()
    for i, job in enumerate(jobs):
        pair = live.setdefault((job.type, job.user_id), [])
        match = match_of(job)
        if match is not None:
            hits = [c for c in pair if match.hits(*c[2:])]
            if job.on_conflict == "keep" and hits:
                insert[i] = False
                kept[i] = (hits[0][0], hits[0][1])
                continue
            if job.on_conflict == "replace":
                if pending is None and match not in seen:
                    seen.add(match)
                    matches.append(match)
                if hits:
                    pair[:] = [c for c in pair if c not in hits]
                for hit in hits:
                    if hit[0] == "row":
                        cancel_ids.append(hit[1])
                    else:
                        cancelled[hit[1]] = True
        pair.append(("batch", i, job.type, job.user_id, job.unique_key,
                     job.cron_schedule is not None))
    return BatchPlan(insert=insert, cancelled=cancelled, kept=kept,
                     cancel_ids=cancel_ids, matches=matches)


DEATH_LIMIT_FACTOR = 5
CRASHED_MESSAGE = (
    "Job abandoned: its process died {crashes} times while it ran alone or unisolated "
    "(limit {limit}); not run again"
)
DEATHS_MESSAGE = (
    "Job abandoned: claimed {attempts} times without finishing (limit {limit}: "
    "{factor} x max_attempts); not run again"
)
SUPERSEDED_MESSAGE = (
    "Job cancelled: its worker died while it ran, and job {newer} of the same type and "
    "user was scheduled meanwhile; the newer job runs instead"
)


def rescue(job: WorkerJob, now: datetime, max_attempts: int, *,
           charged: bool = True) -> Outcome | None:
    """What becomes of a row whose worker died (or that went stale).

    ``charged`` says whether this death counts against the job (``crashes``): True when
    it ran alone or when isolation is off, so its own code may have killed the process;
    False when it merely shared a worker that died (with isolation on, it runs again
    alone and only a crash there is charged).

    None: it is made pending again. Otherwise the failed outcome to write instead of
    looping, once its charged crashes reach ``max_attempts``, or once it was claimed
    ``DEATH_LIMIT_FACTOR`` x ``max_attempts`` times without finishing (a safety net for a
    job that never crashes alone yet always ends with its worker dead, e.g. one that
    kills its worker from its child). A cron job's chain still continues at its next
    occurrence (no retry).
    """
    if job.cancel_requested is not None:
        return cancelled(job, now)
    crashes = job.crashes + (1 if charged else 0)
    if crashes >= max_attempts:
        error = CRASHED_MESSAGE.format(crashes=crashes, limit=max_attempts)
    elif job.attempts >= DEATH_LIMIT_FACTOR * max_attempts:
        error = DEATHS_MESSAGE.format(attempts=job.attempts,
                                      limit=DEATH_LIMIT_FACTOR * max_attempts,
                                      factor=DEATH_LIMIT_FACTOR)
    else:
        return None
    return Outcome(job=job, success=False, result={"error": error, "exception": "Abandoned"},
                   follow_up=follow_up(job, success=False, now=now, retry=False))


def rescue_cancel(job: WorkerJob, newer: Sequence[WorkerJob]) -> str | None:
    """Why a rescued row must be cancelled rather than run again, or None.

    A job of its pair was scheduled while it ran that would have replaced it had it
    been pending (rule 2: a cron job replaces any row of the pair, a one-off only
    one-offs), so running it again would run both. ``newer`` are the rows of the pair
    with a larger id. (A row whose cancel was requested is ended by ``rescue``.)
    """
    if job.started is None:
        return None
    for other in newer:
        if (other.id > job.id and other.created_at >= job.started
                and other.on_conflict == "replace"
                and (other.cron_schedule is not None or job.cron_schedule is None)):
            return SUPERSEDED_MESSAGE.format(newer=other.id)
    return None


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


def cancel_refusal(job: WorkerJob, stale_cutoff: datetime | None = None) -> str | None:
    """Why ``job`` cannot be cancelled by hand, or None when it can (pending: cancelled
    at once; running: its worker is asked to stop it)."""
    if job.finished is not None:
        return (f"job {job.id} already finished ({job.status.value}); too late to cancel: "
                "only pending or running jobs can be cancelled")
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

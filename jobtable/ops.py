"""Operations on the table for people: inspect, retry, cancel, run now, purge, statistics.

Shared by the ``jobtable jobs``/``stats`` commands, the dashboard and ``/metrics``.
Everything here is plain SQL through a ``Store`` and works the same on SQLite and
PostgreSQL: timestamps are always parameters (``store._t``), never the database clock.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from jobtable import rules
from jobtable.errors import ActionRefusedError as ActionRefusedError
from jobtable.errors import ConfigError, MigrationError
from jobtable.errors import JobNotFoundError as JobNotFoundError
from jobtable.model import JobStatus, WorkerJob
from jobtable.settings import Settings
from jobtable.store import Store, open_store
from jobtable.store.base import WorkerInfo
from jobtable.timeutil import utcnow

STATUSES = tuple(s.value for s in JobStatus)
FINISHED_STATUSES = (JobStatus.SUCCEEDED.value, JobStatus.FAILED.value,
                     JobStatus.CANCELLED.value)
RETRYABLE = rules.RETRYABLE
CANCELLED_BY_USER = rules.CANCELLED_BY_USER
PURGE_BATCH = 1000
RETRY_BATCH = 200
# Upper bounds (seconds) of the run-time histogram buckets.
RUNTIME_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                   3600.0)


def open_ops_store(settings: Settings) -> Store:
    """Open the database of ``settings``, migrating it as the library would."""
    store = open_store(settings.database, stale_limit=settings.stale_limit)
    try:
        if settings.auto_migrate:
            store.migrate()
        else:
            pending = store.pending_migrations()
            if pending:
                raise MigrationError(
                    f"the database needs migrations {pending}; run 'jobtable migrate'")
    except BaseException:
        store.close()
        raise
    return store


def check_status(status: str | None, allowed: Sequence[str] = STATUSES) -> str | None:
    """``status`` if it is one of ``allowed`` (or None); a ``ConfigError`` naming them if not."""
    if status is None or status == "":
        return None
    if status not in allowed:
        raise ConfigError(f"unknown status {status!r}; use one of {', '.join(allowed)}")
    return status


def require_job(store: Store, job_id: int) -> WorkerJob:
    """The row ``job_id``, or ``JobNotFoundError``."""
    job = store.get_job(job_id)
    if job is None:
        raise JobNotFoundError(job_id)
    return job


def is_running(store: Store, job: WorkerJob, now: datetime | None = None) -> bool:
    """Started, unfinished and not yet stale: a worker is running it right now."""
    if job.finished is not None or job.started is None:
        return False
    return job.started >= store.stale_cutoff(now or utcnow())


# -- actions -------------------------------------------------------------------


def cancel(store: Store, job_id: int) -> WorkerJob:
    """Cancel a pending job; returns the cancelled row.

    A running job cannot be stopped from outside: its worker has no way to be asked,
    so the refusal says what will happen to it instead.
    """
    job = require_job(store, job_id)
    if is_running(store, job):
        raise ActionRefusedError(
            f"job {job_id} is running (claimed by {job.claimed_by or 'a worker'}); a running "
            "job cannot be cancelled: it will finish, or fail when it reaches its timeout")
    if job.finished is not None:
        raise ActionRefusedError(
            f"job {job_id} is {job.status.value}, not pending; only pending jobs can be "
            "cancelled")
    if not store.cancel_job(job_id, CANCELLED_BY_USER):
        latest = require_job(store, job_id)
        raise ActionRefusedError(
            f"job {job_id} is {latest.status.value} now, no longer pending; nothing cancelled")
    return require_job(store, job_id)


def retry(store: Store, job_id: int) -> WorkerJob:
    """Schedule a failed or cancelled job again, due now; returns the new row.

    The new row copies type, user, data and settings and points back with
    ``rescheduled_from_job``. It goes through the normal scheduling path, so a pending
    job of the same type and user is cancelled first (rule 2). A cron row's retry
    keeps its schedule and so replaces the chain's next run.
    """
    job = require_job(store, job_id)
    if job.status not in RETRYABLE:
        raise ActionRefusedError(
            f"job {job_id} is {job.status.value}; only failed or cancelled jobs can be retried")
    return store.schedule([rules.retry_row(job, utcnow())])[0]


def retry_candidates(store: Store, *, status: str, type: str | None = None,
                     user_id: int | None = None, limit: int | None = None) -> list[int]:
    """Ids of failed (or cancelled) jobs matching the filters that no row retries yet,
    oldest first."""
    check_status(status, [s.value for s in RETRYABLE])
    where, params = store.job_filter(status=status, type=type, user_id=user_id)
    where.append("NOT EXISTS (SELECT 1 FROM worker_jobs AS c "
                 "WHERE c.rescheduled_from_job = worker_jobs.id)")
    sql = f"SELECT id FROM worker_jobs WHERE {' AND '.join(where)} ORDER BY id"
    if limit is not None:
        sql += " LIMIT :limit"
        params["limit"] = limit
    return [int(r["id"]) for r in store.read(sql, **params)]


def retry_many(store: Store, job_ids: Sequence[int],
               progress: Callable[[int], None] | None = None) -> list[WorkerJob]:
    """Retry many jobs in batches; ``progress(n)`` is called after each batch.

    Ids that are not failed or cancelled (or are gone) are skipped. As with any
    scheduling, only the last retry of a (type, user_id) stays pending.
    """
    created: list[WorkerJob] = []
    for start in range(0, len(job_ids), RETRY_BATCH):
        chunk = list(job_ids[start:start + RETRY_BATCH])
        rows = []
        for job_id in chunk:
            job = store.get_job(job_id)
            if job is not None and job.status in RETRYABLE:
                rows.append(rules.retry_row(job, utcnow()))
        if rows:
            created.extend(store.schedule(rows))
        if progress is not None:
            progress(len(chunk))
    return created


def run_now(store: Store, job_id: int) -> WorkerJob:
    """Make a pending job due now (it runs at the next claim); returns the row."""
    job = require_job(store, job_id)
    if job.status != JobStatus.PENDING:
        raise ActionRefusedError(
            f"job {job_id} is {job.status.value}; only pending jobs can be run now")
    now = utcnow()
    with store.transaction() as tx:
        tx.q("UPDATE worker_jobs SET due = :now, updated_at = :now "
             "WHERE id = :id AND finished IS NULL AND started IS NULL AND due > :now",
             id=job_id, now=store._t(now))
    return require_job(store, job_id)


def purge_filter(statuses: Sequence[str]) -> str:
    """The WHERE clause selecting finished rows of ``statuses`` older than ``:cutoff``."""
    if not statuses:
        raise ConfigError(f"purge needs at least one status: {', '.join(FINISHED_STATUSES)}")
    for status in statuses:
        check_status(status, FINISHED_STATUSES)
    either = " OR ".join(f"({Store.STATUS_SQL[s]})" for s in sorted(set(statuses)))
    # The explicit ``finished IS NOT NULL`` is the guard: unfinished rows are never purged.
    return f"finished IS NOT NULL AND finished < :cutoff AND ({either})"


def count_purgeable(store: Store, statuses: Sequence[str], older_than: timedelta) -> int:
    """How many rows ``purge`` would delete now."""
    where = purge_filter(statuses)
    rows = store.read(f"SELECT COUNT(*) AS n FROM worker_jobs WHERE {where}",
                      cutoff=store._t(utcnow() - older_than))
    return int(rows[0]["n"])


def purge(store: Store, statuses: Sequence[str], older_than: timedelta, *,
          batch: int = PURGE_BATCH, progress: Callable[[int], None] | None = None) -> int:
    """Delete finished rows of ``statuses`` that finished more than ``older_than`` ago.

    Works in batches (each its own short transaction) and calls ``progress(n)`` after
    each. Never deletes an unfinished row. Returns how many rows were deleted.
    """
    if older_than < timedelta(0):
        raise ConfigError("--older-than must not be negative")
    where = purge_filter(statuses)
    cutoff = store._t(utcnow() - older_than)
    sql = (f"DELETE FROM worker_jobs WHERE id IN (SELECT id FROM worker_jobs WHERE {where} "
           "ORDER BY id LIMIT :batch) RETURNING id")
    total = 0
    while True:
        with store.transaction() as tx:
            n = len(tx.q(sql, cutoff=cutoff, batch=batch))
        total += n
        if progress is not None and n:
            progress(n)
        if n < batch:
            return total


# -- statistics ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bucket:
    """One minute of throughput."""

    start: datetime
    succeeded: int
    failed: int

    @property
    def total(self) -> int:
        """Jobs that finished in this minute (cancellations not counted)."""
        return self.succeeded + self.failed


@dataclass(frozen=True, slots=True)
class Stats:
    """A snapshot of the whole table."""

    now: datetime
    by_status: dict[str, int]
    by_type: dict[str, dict[str, int]]
    oldest_pending_due: datetime | None
    throughput: list[Bucket]
    workers: list[WorkerInfo]
    slots: int = field(default=0)

    @property
    def queue_lag(self) -> timedelta:
        """How long the oldest due pending job has been waiting (zero when none is)."""
        if self.oldest_pending_due is None:
            return timedelta(0)
        return max(timedelta(0), self.now - self.oldest_pending_due)

    @property
    def finished_last_hour(self) -> int:
        """Jobs that succeeded or failed over the throughput window."""
        return sum(b.total for b in self.throughput)

    @property
    def jobs_per_minute(self) -> float:
        """Average finished jobs per minute over the throughput window."""
        return self.finished_last_hour / max(1, len(self.throughput))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values."""
        return {
            "now": self.now.isoformat(),
            "by_status": self.by_status,
            "by_type": self.by_type,
            "oldest_pending_due": (None if self.oldest_pending_due is None
                                   else self.oldest_pending_due.isoformat()),
            "queue_lag_seconds": round(self.queue_lag.total_seconds(), 3),
            "finished_last_hour": self.finished_last_hour,
            "jobs_per_minute": round(self.jobs_per_minute, 2),
            "throughput": [{"start": b.start.isoformat(), "succeeded": b.succeeded,
                            "failed": b.failed} for b in self.throughput],
            "workers": [{"id": w.id, "host": w.host, "pid": w.pid,
                         "concurrency": w.concurrency, "started": w.started.isoformat(),
                         "last_seen": w.last_seen.isoformat()} for w in self.workers],
        }


def throughput(store: Store, now: datetime, minutes: int = 60) -> list[Bucket]:
    """Succeeded and failed jobs per minute over the last ``minutes``, oldest first.

    One scan with a conditional sum per bucket, the bucket edges passed as parameters,
    so the same statement runs on both databases.
    """
    end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    edges = [end - timedelta(minutes=minutes - i) for i in range(minutes + 1)]
    params: dict[str, Any] = {f"e{i}": store._t(t) for i, t in enumerate(edges)}
    columns = []
    for i in range(minutes):
        span = f"finished >= :e{i} AND finished < :e{i + 1}"
        columns.append(f"SUM(CASE WHEN {span} AND success = TRUE THEN 1 ELSE 0 END) AS s{i}")
        columns.append(f"SUM(CASE WHEN {span} AND success = FALSE THEN 1 ELSE 0 END) AS f{i}")
    sql = (f"SELECT {', '.join(columns)} FROM worker_jobs "
           f"WHERE finished >= :e0 AND finished < :e{minutes} AND cancelled = FALSE")
    row = store.read(sql, **params)[0]
    return [Bucket(edges[i], int(row[f"s{i}"] or 0), int(row[f"f{i}"] or 0))
            for i in range(minutes)]


def oldest_pending_due(store: Store, now: datetime) -> datetime | None:
    """The ``due`` of the longest-waiting due pending job, if any."""
    rows = store.read("oldest_pending_due", now=store._t(now))
    value = rows[0]["due"] if rows else None
    return None if value is None else store._time(value)


def stats(store: Store, live_within: timedelta, minutes: int = 60) -> Stats:
    """Counts per status and type, queue lag, throughput and live workers."""
    now = utcnow()
    by_type = store.counts()
    by_status = {s: 0 for s in STATUSES}
    for counts in by_type.values():
        for status, n in counts.items():
            by_status[status] = by_status.get(status, 0) + n
    workers = store.live_workers(live_within)
    return Stats(now=now, by_status=by_status, by_type=by_type,
                 oldest_pending_due=oldest_pending_due(store, now),
                 throughput=throughput(store, now, minutes), workers=workers,
                 slots=sum(w.concurrency for w in workers))


# -- cron ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CronChain:
    """One cron chain: its current (unfinished) row and the run before it."""

    current: WorkerJob
    previous: WorkerJob | None

    @property
    def next_run(self) -> datetime:
        """When the chain runs next (its pending row's ``due``)."""
        return self.current.due


def cron_chains(store: Store) -> list[CronChain]:
    """Every live cron chain, by type and user: its next run and last outcome."""
    rows = store.read("SELECT * FROM worker_jobs WHERE cron_schedule IS NOT NULL "
                      "AND finished IS NULL ORDER BY type, user_id, id")
    chains = []
    for job in (store.to_job(r) for r in rows):
        previous = (None if job.rescheduled_from_job is None
                    else store.get_job(job.rescheduled_from_job))
        chains.append(CronChain(current=job, previous=previous))
    return chains


# -- metrics inputs --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Runtimes:
    """Run times of one job type over a window, as cumulative histogram buckets."""

    type: str
    buckets: list[tuple[float, int]]  # (upper bound, jobs at most that long), cumulative
    count: int
    total_seconds: float


def _duration_sql(store: Store) -> str:
    if store.dialect == "sqlite":
        return "(julianday(finished) - julianday(started)) * 86400.0"
    return "EXTRACT(EPOCH FROM (finished - started))"


def runtimes(store: Store, window: timedelta,
             bounds: Sequence[float] = RUNTIME_BUCKETS) -> list[Runtimes]:
    """Run-time histograms per type of the jobs that finished (not cancelled) within
    ``window``, computed by the database from ``started`` and ``finished``."""
    cols = [f"SUM(CASE WHEN d <= {float(b)!r} THEN 1 ELSE 0 END) AS b{i}"
            for i, b in enumerate(bounds)]
    sql = (f"SELECT type, COUNT(*) AS n, SUM(d) AS total, {', '.join(cols)} FROM "
           f"(SELECT type, {_duration_sql(store)} AS d FROM worker_jobs "
           "WHERE finished >= :since AND started IS NOT NULL AND cancelled = FALSE) AS r "
           "GROUP BY type ORDER BY type")
    out = []
    for row in store.read(sql, since=store._t(utcnow() - window)):
        buckets = [(float(b), int(row[f"b{i}"] or 0)) for i, b in enumerate(bounds)]
        out.append(Runtimes(type=row["type"], buckets=buckets, count=int(row["n"]),
                            total_seconds=float(row["total"] or 0.0)))
    return out


def retries_by_type(store: Store) -> dict[str, int]:
    """Rows in the table that retry a failed row, per type."""
    rows = store.read(
        "SELECT c.type AS type, COUNT(*) AS n FROM worker_jobs AS c "
        "JOIN worker_jobs AS p ON c.rescheduled_from_job = p.id "
        "WHERE p.success = FALSE AND p.cancelled = FALSE GROUP BY c.type")
    return {r["type"]: int(r["n"]) for r in rows}


def rescued_by_type(store: Store) -> dict[str, int]:
    """Rows in the table claimed more than once (their worker died or they went stale),
    per type."""
    rows = store.read(
        "SELECT type, COUNT(*) AS n FROM worker_jobs WHERE attempts > 1 GROUP BY type")
    return {r["type"]: int(r["n"]) for r in rows}


def job_types(store: Store) -> list[str]:
    """Every type that has rows in the table."""
    return [r["type"] for r in store.read(
        "SELECT DISTINCT type FROM worker_jobs ORDER BY type")]


# -- presentation helpers ----------------------------------------------------------


def human_duration(delta: timedelta | float) -> str:
    """A short duration for people: ``850 ms``, ``12 s``, ``4 min``, ``3 h 5 min``, ``2 d``."""
    seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
    seconds = abs(seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 36 * 3600:
        hours, rest = divmod(int(seconds), 3600)
        return f"{hours} h {rest // 60} min" if rest >= 60 else f"{hours} h"
    return f"{seconds / 86400:.0f} d"


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """``5 min ago``, ``in 10 s`` or ``just now``; empty for None."""
    if moment is None:
        return ""
    delta = (now or utcnow()) - moment
    if abs(delta.total_seconds()) < 1:
        return "just now"
    text = human_duration(delta)
    return f"{text} ago" if delta.total_seconds() > 0 else f"in {text}"


def runtime(job: WorkerJob) -> timedelta | None:
    """How long a finished job ran (None if it never started or is unfinished)."""
    if job.started is None or job.finished is None:
        return None
    return job.finished - job.started


def summary(job: WorkerJob, width: int = 100) -> str:
    """One line about a row's outcome: its error, or its result, shortened."""
    if job.error is not None:
        text = job.error
    elif job.result is not None and job.finished is not None:
        text = json.dumps(job.result, ensure_ascii=False)
    else:
        text = ""
    text = " ".join(text.split())
    return text if len(text) <= width else text[:width - 1] + "…"

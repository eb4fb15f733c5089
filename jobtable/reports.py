"""Read-only reports on the table for people: the statistics snapshot, cron chains and
run-time histograms that ``JobTable`` returns to the CLI, the dashboard and ``/metrics``."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from jobtable.model import WorkerJob
from jobtable.store.base import FINISHED_STATUSES, STATUSES, TableHealth, WorkerInfo

__all__ = ["FINISHED_STATUSES", "RUNTIME_BUCKETS", "STATUSES", "Bucket", "CronChain",
           "Runtimes", "ScheduleReport", "Stats", "WorkerInfo"]

# Upper bounds (seconds) of the run-time histogram buckets.
RUNTIME_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0,
                   3600.0)


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
    table: TableHealth | None = field(default=None)
    #: True when the finished statuses and the throughput were estimated from a sample
    #: of a large table (PostgreSQL); pending and running are always exact.
    estimated: bool = field(default=False)

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
            "estimated": self.estimated,
            "table": None if self.table is None else {
                "live": self.table.live, "dead": self.table.dead,
                "dead_ratio": round(self.table.dead_ratio, 3),
                "size_bytes": self.table.size_bytes, "bloating": self.table.bloating,
                "last_vacuum": (None if self.table.last_vacuum is None
                                else self.table.last_vacuum.isoformat())},
        }


@dataclass(frozen=True, slots=True)
class ScheduleReport:
    """What scheduling one job did: the new row, and the ids of the pending rows of its
    (type, user_id) that it cancelled (rule 2), oldest first."""

    job: WorkerJob
    cancelled: list[int]


@dataclass(frozen=True, slots=True)
class CronChain:
    """One cron chain: its current (unfinished) row and the run before it."""

    current: WorkerJob
    previous: WorkerJob | None

    @property
    def next_run(self) -> datetime:
        """When the chain runs next (its pending row's ``due``)."""
        return self.current.due


@dataclass(frozen=True, slots=True)
class Runtimes:
    """Run times of one job type over a window, as cumulative histogram buckets."""

    type: str
    buckets: list[tuple[float, int]]  # (upper bound, jobs at most that long), cumulative
    count: int
    total_seconds: float

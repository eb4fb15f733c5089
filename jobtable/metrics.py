"""Prometheus metrics read from the table itself, so every process reports the same numbers.

The table is shared by all workers and is pruned by cleanup, so each metric is a
gauge of what the table holds at scrape time (rows by type and status, retries and
rescues still in the table, run times of the last hour as a gauge histogram) rather
than a counter kept by one process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeHistogramMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from jobtable.client import JobTable
from jobtable.store.base import STATUSES
from jobtable.timeutil import utcnow

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
RUNTIME_WINDOW = timedelta(hours=1)


class TableCollector(Collector):
    """Collects jobtable's metrics through a ``JobTable`` at each scrape."""

    def __init__(self, table: Callable[[], JobTable], live_within: timedelta,
                 runtime_window: timedelta = RUNTIME_WINDOW) -> None:
        self._table = table
        self.live_within = live_within
        self.runtime_window = runtime_window

    def collect(self) -> Iterator[Metric]:
        """Query the table and yield every metric family."""
        table = self._table()
        jobs = GaugeMetricFamily("jobtable_jobs", "Rows of worker_jobs by type and status "
                                 "(finished statuses estimated from a sample on a large "
                                 "PostgreSQL table).",
                                 labels=["type", "status"])
        for job_type, counts in sorted(table.counts_by_type().items()):
            for status in STATUSES:
                jobs.add_metric([job_type, status], counts.get(status, 0))
        yield jobs

        queues = table.list_queues()
        for name, help_text, value in (
                ("jobtable_queue_pending", "Pending (not started) jobs, by queue.",
                 lambda q: q.pending),
                ("jobtable_queue_running", "Running jobs, by queue.", lambda q: q.running),
                ("jobtable_queue_paused", "1 while the queue is paused, else 0.",
                 lambda q: int(q.paused))):
            family = GaugeMetricFamily(name, help_text, labels=["queue"])
            for q in queues:
                family.add_metric([q.name], value(q))
            yield family

        now = utcnow()
        oldest = table.oldest_pending_due()
        lag = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
        yield GaugeMetricFamily(
            "jobtable_queue_lag_seconds",
            "How long the oldest due pending job has been waiting (0 when none is).",
            value=lag)

        runtime = GaugeHistogramMetricFamily(
            "jobtable_job_runtime_seconds",
            f"Run time (finished - started) of jobs finished in the last "
            f"{int(self.runtime_window.total_seconds())} s, by type.",
            labels=["type"])
        for r in table.runtimes(self.runtime_window):
            buckets = [(_le(bound), float(n)) for bound, n in r.buckets]
            buckets.append(("+Inf", float(r.count)))
            runtime.add_metric([r.type], buckets, r.total_seconds)
        yield runtime

        retries = GaugeMetricFamily(
            "jobtable_retries", "Rows in the table that retry a failed job, by type.",
            labels=["type"])
        for job_type, n in sorted(table.retries_by_type().items()):
            retries.add_metric([job_type], n)
        yield retries

        rescues = GaugeMetricFamily(
            "jobtable_rescued_jobs",
            "Rows in the table claimed more than once (their worker died or they went "
            "stale), by type.", labels=["type"])
        for job_type, n in sorted(table.rescued_by_type().items()):
            rescues.add_metric([job_type], n)
        yield rescues

        workers = table.live_workers(self.live_within)
        yield GaugeMetricFamily("jobtable_live_workers",
                                "Worker processes with a recent heartbeat.", value=len(workers))
        yield GaugeMetricFamily("jobtable_worker_slots",
                                "Jobs the live worker processes can run at once.",
                                value=sum(w.concurrency for w in workers))
        yield CounterMetricFamily(
            "jobtable_event_loop_blocked_seconds",
            "Time the live workers' event loops were blocked (an async def job calling "
            "blocking code), from their heartbeat rows.",
            value=sum(w.loop_blocked_ms for w in workers) / 1000)


def _le(bound: float) -> str:
    return repr(float(bound))


def render(table: JobTable, live_within: timedelta) -> bytes:
    """The metrics of ``table`` in Prometheus' text format."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TableCollector(lambda: table, live_within))
    return generate_latest(registry)

"""What reading and working cost beside a large history (issue #15's "at 10 million").

Measures, in one process against one database, the figures that must not grow with the
table's history: ``jobtable stats``, the dashboard's overview (``/`` and the partial it
refreshes), ``/metrics``, the jobs pages and ``jobtable jobs`` (list and count),
scheduling one by one and in batches, claims and completions, and the claims of a
flow-limited type with a due backlog of its own. Each figure is the median of
``--repeat`` runs, in milliseconds (rates in jobs/s).

    python bench/history.py --database postgresql://postgres@127.0.0.1/jt_hist \\
        --fill-history 10000000 --fill-pending 100000
    python bench/history.py --database sqlite:////tmp/hist.db --fill-history 1000000

``--fill-history N`` inserts N finished rows (``Store.fill``), then ANALYZEs (PostgreSQL),
then inserts ``--fill-pending M`` rows due in a day: the planner's statistics say that
almost every row is finished, as on a server without autovacuum. ``--analyze`` runs
ANALYZE before measuring (fresh statistics). Rows the figures add are deleted at the end
(without ANALYZE), so a database can be measured again. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from jobtable import JobTable, WorkerJobConfig
from jobtable.client import COUNT_CAP
from jobtable.model import Outcome
from jobtable.routing import TypeLimits
from jobtable.timeutil import utcnow

BENCH_TYPE = "hbench"
LIMITED_TYPE = "hbench_limited"


def _median_ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _raw(jt: JobTable, sql: str) -> None:
    """Administrative statements of this script only (ANALYZE, VACUUM, DELETE)."""
    store = jt.store
    if store.dialect == "postgres":
        with store.pool.connection() as conn:  # type: ignore[attr-defined]
            conn.execute(sql)
    else:
        with store.transaction() as tx:
            tx.conn.execute(sql)  # type: ignore[attr-defined]


def fill(jt: JobTable, history: int, pending: int) -> None:
    start = time.perf_counter()
    jt.store.fill("noop_history", finished=history, batch=500_000)
    if jt.store.dialect == "postgres":
        _raw(jt, "ANALYZE worker_jobs")
    jt.store.fill("noop_history", pending=pending)
    print(f"filled {history:,} finished + {pending:,} pending in "
          f"{time.perf_counter() - start:.0f} s", flush=True)


def measure(jt: JobTable, repeat: int) -> dict[str, float]:
    from starlette.testclient import TestClient

    from jobtable.dashboard.app import create_app

    out: dict[str, float] = {}
    store = jt.store
    out["stats (ms)"] = _median_ms(lambda: jt.stats(), repeat)
    out["counts by type (ms)"] = _median_ms(jt.counts_by_type, repeat)
    out["queues (ms)"] = _median_ms(jt.list_queues, repeat)

    # As `jobtable jobs` and the dashboard's list count: up to COUNT_CAP.
    def jobs_cli() -> None:
        jt.list_jobs(limit=50)
        jt.count_jobs(at_most=COUNT_CAP + 1)

    out["jobs list + count (ms)"] = _median_ms(jobs_cli, repeat)

    def jobs_succeeded() -> None:
        jt.list_jobs(status="succeeded", limit=50)
        jt.count_jobs(status="succeeded", at_most=COUNT_CAP + 1)

    out["jobs list + count, succeeded (ms)"] = _median_ms(jobs_succeeded, repeat)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app = create_app(jt)
        with TestClient(app, base_url="http://localhost",
                            client=("127.0.0.1", 50000)) as client:
            for path in ("/", "/partials/overview", "/metrics", "/jobs", "/partials/jobs",
                         "/jobs?status=succeeded", "/jobs?status=pending",
                         "/jobs?page=1000", "/queues", "/workers", "/cron"):
                client.get(path)  # the first load fills the day chart's cache
                out[f"GET {path} (ms)"] = _median_ms(
                    lambda p=path: client.get(p).raise_for_status(), repeat)

    n = 300
    start = time.perf_counter()
    for i in range(n):
        jt.schedule_job(WorkerJobConfig(type=BENCH_TYPE, user_id=i + 1))
    out["schedule one by one (jobs/s)"] = n / (time.perf_counter() - start)
    n = 5000
    start = time.perf_counter()
    for lo in range(0, n, 1000):
        jt.schedule_jobs([WorkerJobConfig(type=BENCH_TYPE, user_id=10_000 + i)
                          for i in range(lo, lo + 1000)])
    out["schedule in batches of 1,000 (jobs/s)"] = n / (time.perf_counter() - start)

    claims, completes = [], []
    while True:
        t0 = time.perf_counter()
        jobs = store.claim("hbench-worker", 100)
        t1 = time.perf_counter()
        if not jobs:
            break
        store.complete([Outcome(job=j, success=True, result=None) for j in jobs])
        claims.append((t1 - t0) * 1000)
        completes.append((time.perf_counter() - t1) * 1000)
    out["claim 100 (ms)"] = statistics.median(claims)
    out["complete 100 (ms)"] = statistics.median(completes)

    store.fill(LIMITED_TYPE, pending=20_000, pending_due=utcnow() - timedelta(seconds=1),
               first_user=0)
    for name, lim in (("plain", TypeLimits(LIMITED_TYPE, concurrency=1_000_000)),
                      ("per user", TypeLimits(LIMITED_TYPE, concurrency=5, per_user=True)),
                      ("fair", TypeLimits(LIMITED_TYPE, fair=True))):
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            jobs = store.claim("hbench-worker", 20, limits=[lim])
            times.append((time.perf_counter() - t0) * 1000)
            store.complete([Outcome(job=j, success=True, result=None) for j in jobs])
        out[f"limited claim 20, {name}, 20k due (ms)"] = statistics.median(times)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database", required=True)
    parser.add_argument("--fill-history", type=int, default=0)
    parser.add_argument("--fill-pending", type=int, default=0)
    parser.add_argument("--analyze", action="store_true", help="ANALYZE before measuring")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--label", default="")
    parser.add_argument("--out", help="append the figures as one JSON line to this file")
    args = parser.parse_args()
    jt = JobTable(args.database)
    try:
        jt.migrate()
        if args.fill_history or args.fill_pending:
            fill(jt, args.fill_history, args.fill_pending)
        if args.analyze:
            _raw(jt, "ANALYZE worker_jobs")
        try:
            figures = measure(jt, args.repeat)
        finally:
            _raw(jt, f"DELETE FROM worker_jobs WHERE type IN ('{BENCH_TYPE}', "
                     f"'{LIMITED_TYPE}')")
            _raw(jt, "VACUUM worker_jobs" if jt.store.dialect == "postgres" else "SELECT 1")
        width = max(len(k) for k in figures)
        for k, v in figures.items():
            print(f"{k:<{width}}  {v:10.1f}")
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps({"label": args.label, "database": args.database,
                                    "at": utcnow().isoformat(), "figures": figures}) + "\n")
    finally:
        jt.close()


if __name__ == "__main__":
    main()

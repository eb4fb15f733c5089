"""Soak: schedule and drain jobtable at a fixed rate for a long time, and watch whether
it holds: throughput and pickup per minute, table and index size, dead rows.

    bench/.venv/bin/python bench/soak.py --rate 1000 --minutes 30

A worker process (``jobtable worker``, the bench's no-op job, ``--concurrency``) drains
what a producer schedules at ``--rate`` jobs/s in batches every 100 ms
(``schedule_jobs(return_rows=False)``, each job its own user). The worker keeps its
cleanup chain (every minute), so with ``--remove-delay 0`` (the default here) every
finished row is deleted within a minute: the churn that bloats a queue table.
``--remove-delay 3600`` is jobtable's default retention (rows kept an hour, so a soak
shorter than an hour deletes nothing). Every minute it prints and records:

- done/s: jobs finished in the minute (scheduled minus still unfinished);
- pickup p50/p99: ``started - due`` of a sample of the rows started in the minute;
- table, heap and index sizes (``pg_total_relation_size`` ...), live and dead rows
  (``pg_stat_user_tables``), and whether a vacuum ran (``last_vacuum``/``autovacuum``).

Results go to ``bench/soak.json``. The database (``bench_soak`` on ``BENCH_PG``) is
dropped and created at the start: do not point it at data you care about.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from systems.common import PG_BASE  # noqa: E402

from jobtable import JobTable, WorkerJobConfig  # noqa: E402

JOBS = BENCH_DIR / "jobs_jobtable"

_SIZES = """
SELECT pg_total_relation_size('worker_jobs') AS total, pg_relation_size('worker_jobs') AS heap,
       pg_indexes_size('worker_jobs') AS indexes, s.n_live_tup AS live, s.n_dead_tup AS dead,
       s.last_vacuum, s.last_autovacuum, s.vacuum_count, s.autovacuum_count
FROM pg_stat_user_tables AS s WHERE s.relid = 'worker_jobs'::regclass
"""
_UNFINISHED = "SELECT count(*) FROM worker_jobs WHERE type = 'noop' AND finished IS NULL"
_PICKUP = """
SELECT EXTRACT(EPOCH FROM (started - due)) * 1000 AS ms FROM worker_jobs
WHERE type = 'noop' AND started >= %s ORDER BY id DESC LIMIT 2000
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=int, default=1000, help="jobs scheduled per second")
    ap.add_argument("--minutes", type=float, default=30, help="how long to run")
    ap.add_argument("--concurrency", type=int, default=50, help="the worker's concurrency")
    ap.add_argument("--remove-delay", type=float, default=0,
                    help="seconds a succeeded row is kept (jobtable's default: 3600)")
    ap.add_argument("--history", type=int, default=0,
                    help="finished rows in the table before the start (kept a day)")
    ap.add_argument("--out", default=str(BENCH_DIR / "soak.json"))
    args = ap.parse_args()

    url = f"{PG_BASE}/bench_soak"
    with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as conn:
        conn.execute('DROP DATABASE IF EXISTS "bench_soak" WITH (FORCE)')
        conn.execute('CREATE DATABASE "bench_soak"')
        autovacuum = conn.execute("SHOW autovacuum").fetchone()
    jt = JobTable(url, jobs=JOBS)
    jt.migrate()
    if args.history:
        jt.store.fill("noop_history", finished=args.history)
    env = dict(os.environ, PYTHONPATH=str(BENCH_DIR))
    exe = str(Path(sys.executable).parent / "jobtable")
    worker = subprocess.Popen(
        [exe, "worker", "--database", url, "--jobs", str(JOBS),
         f"--concurrency={args.concurrency}", "--log-level=WARNING"],
        env=env, start_new_session=True)
    stop = threading.Event()
    scheduled = [0]

    def produce() -> None:
        per_tick = max(1, args.rate // 10)
        user = 0
        tick = time.monotonic()
        while not stop.is_set():
            configs = [WorkerJobConfig(type="noop", user_id=user + i,
                                       remove_delay=args.remove_delay)
                       for i in range(per_tick)]
            jt.schedule_jobs(configs, return_rows=False)
            user += per_tick
            scheduled[0] += per_tick
            tick += 0.1
            delay = tick - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    producer = threading.Thread(target=produce, daemon=True)
    print(f"soak: {args.rate} jobs/s for {args.minutes:g} min, concurrency "
          f"{args.concurrency}, remove_delay {args.remove_delay:g}s, autovacuum "
          f"{autovacuum[0] if autovacuum else '?'}", flush=True)
    print("min  sched/s  done/s  backlog  pickup p50/p99 ms  table MB (heap+idx)  "
          "live  dead  vacuums", flush=True)
    rows: list[dict[str, Any]] = []
    start = time.monotonic()
    producer.start()
    mon = psycopg.connect(url, autocommit=True)
    done_before, sched_before = 0, 0
    try:
        minute = 0
        while time.monotonic() - start < args.minutes * 60:
            minute += 1
            edge = start + minute * 60
            samples: list[float] = []
            while time.monotonic() < edge:
                since = time.time() - 5
                time.sleep(min(5.0, max(0.0, edge - time.monotonic())))
                got = mon.execute(_PICKUP, (_ts(since),)).fetchall()
                samples.extend(float(r[0]) for r in got if r[0] is not None)
            unfinished = int(mon.execute(_UNFINISHED).fetchone()[0])  # type: ignore[index]
            sched = scheduled[0]
            done = sched - unfinished
            size = mon.execute(_SIZES).fetchone()
            assert size is not None
            row = {
                "minute": minute, "scheduled_per_s": (sched - sched_before) / 60,
                "done_per_s": (done - done_before) / 60, "backlog": unfinished,
                "pickup_p50_ms": _pct(samples, 50), "pickup_p99_ms": _pct(samples, 99),
                "table_mb": size[0] / 1e6, "heap_mb": size[1] / 1e6,
                "index_mb": size[2] / 1e6, "live": size[3], "dead": size[4],
                "vacuums": int(size[7] or 0) + int(size[8] or 0)}
            rows.append(row)
            done_before, sched_before = done, sched
            print(f"{minute:3d}  {row['scheduled_per_s']:7.0f}  {row['done_per_s']:6.0f}  "
                  f"{unfinished:7d}  {row['pickup_p50_ms']:7.1f} / {row['pickup_p99_ms']:7.1f}"
                  f"  {row['table_mb']:8.1f} ({row['heap_mb']:.1f}+{row['index_mb']:.1f})"
                  f"  {row['live']:6d} {row['dead']:7d}  {row['vacuums']}", flush=True)
    finally:
        stop.set()
        producer.join(timeout=10)
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=60)
        mon.close()
        jt.close()
    k = max(1, min(5, len(rows) // 2))
    first = statistics.mean(r["done_per_s"] for r in rows[:k])
    last = statistics.mean(r["done_per_s"] for r in rows[-k:])
    summary = {"rate": args.rate, "minutes": args.minutes, "concurrency": args.concurrency,
               "remove_delay_s": args.remove_delay, "history": args.history,
               "autovacuum": autovacuum[0] if autovacuum else None,
               f"first_{k}_min_done_per_s": first, f"last_{k}_min_done_per_s": last,
               "last_over_first": last / first if first else None,
               "max_table_mb": max(r["table_mb"] for r in rows),
               "per_minute": rows}
    print(f"done/s first {k} min {first:.0f}, last {k} min {last:.0f} "
          f"({summary['last_over_first']:.2f}x); table peak {summary['max_table_mb']:.1f} MB, "
          f"last {rows[-1]['table_mb']:.1f} MB", flush=True)
    Path(args.out).write_text(json.dumps(summary, indent=2, default=str))


def _ts(epoch: float) -> Any:
    from datetime import UTC, datetime
    return datetime.fromtimestamp(epoch, UTC)


def _pct(values: list[float], q: int) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q / 100))]


if __name__ == "__main__":
    main()

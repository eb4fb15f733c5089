"""Worker CPU per job: fill a queue with no-op jobs, drain it with one ``jobtable worker``
process, and read that process's CPU time (``/proc/<pid>/stat``, user + system) at the
first finished job and at the last one.

    bench/.venv/bin/python bench/cpu.py --backend postgres --jobs 50000
    bench/.venv/bin/python bench/cpu.py --backend sqlite --jobs 50000 --py-spy out.json

Prints the drain rate (first to last finished job) and the worker's CPU in microseconds
per job over the same window (start-up excluded), plus, on PostgreSQL, the CPU of the
server's backends over that window (all of the server's processes, so other users of
the server count too). ``--py-spy FILE`` records the worker with py-spy (speedscope
format) while it drains. Linux only. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from systems.common import PG_BASE, SQLITE_DIR, ensure_pg_database, pg_exec  # noqa: E402

from jobtable import JobTable, WorkerJobConfig  # noqa: E402

JOBS_DIR = BENCH_DIR / "jobs_jobtable"
_TICK = os.sysconf("SC_CLK_TCK")
_LEFT = "SELECT count(*) FROM worker_jobs WHERE type = 'noop' AND finished IS NULL"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of one process so far."""
    return cpu_seconds_of(Path(f"/proc/{pid}/stat"))


def thread_cpu(pid: int) -> dict[str, float]:
    """CPU so far of the process's main thread (the event loop) and of its other threads
    (the database calls made through threads, heartbeat, rescue), seconds."""
    out = {"main": 0.0, "threads": 0.0}
    for entry in Path(f"/proc/{pid}/task").iterdir():
        try:
            out["main" if entry.name == str(pid) else "threads"] += cpu_seconds_of(
                entry / "stat")
        except OSError:
            continue  # a thread that ended
    return out


def cpu_seconds_of(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def postgres_cpu() -> float:
    """User + system CPU of every process named postgres on this machine."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != "postgres":
                continue
            total += cpu_seconds(int(entry.name))
        except OSError:
            continue
    return total


def fill(url: str, backend: str, n: int) -> None:
    if backend == "sqlite":
        path = url.removeprefix("sqlite:///")
        for suffix in ("", "-wal", "-shm"):
            Path(path + suffix).unlink(missing_ok=True)
    jt = JobTable(url, jobs=JOBS_DIR)
    try:
        jt.migrate()
        if backend == "postgres":
            pg_exec(url, "TRUNCATE worker_jobs, worker_processes RESTART IDENTITY",
                    "ANALYZE worker_jobs")
        for lo in range(0, n, 1000):
            jt.schedule_jobs([WorkerJobConfig(type="noop", user_id=i + 1)
                              for i in range(lo, min(n, lo + 1000))], return_rows=False)
    finally:
        jt.close()


def left(url: str, backend: str) -> int:
    if backend == "sqlite":
        with sqlite3.connect(url.removeprefix("sqlite:///"), timeout=30) as conn:
            return int(conn.execute(_LEFT).fetchone()[0])
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(_LEFT).fetchone()
    return int(row[0]) if row else 0


def drain(url: str, backend: str, n: int, concurrency: int, py_spy: str | None,
          spy_options: list[str]) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(BENCH_DIR), env.get("PYTHONPATH"))
                                        if p)
    exe = str(Path(sys.executable).parent / "jobtable")
    worker = subprocess.Popen([exe, "worker", "--database", url, "--jobs", str(JOBS_DIR),
                               f"--concurrency={concurrency}", "--log-level=WARNING"],
                              env=env)
    spy = None
    try:
        first = None
        while True:
            remaining = left(url, backend)
            now = time.perf_counter()
            if first is None and remaining < n:
                first = (now, cpu_seconds(worker.pid), postgres_cpu(), n - remaining)
                threads_first = thread_cpu(worker.pid)
                if py_spy:
                    cmd = ["py-spy", "record", "--pid", str(worker.pid), "--format",
                           "speedscope", "-o", py_spy, "--rate", "250"]
                    spy = subprocess.Popen(cmd + spy_options)
            if remaining == 0:
                last = (now, cpu_seconds(worker.pid), postgres_cpu(), n)
                threads_last = thread_cpu(worker.pid)
                break
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited with {worker.returncode}")
            time.sleep(0.02)
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
    assert first is not None
    jobs = last[3] - first[3]
    seconds = last[0] - first[0]
    return {
        "jobs": jobs,
        "seconds": round(seconds, 3),
        "rate": round(jobs / seconds),
        "worker_cpu_us_per_job": round((last[1] - first[1]) / jobs * 1e6, 1),
        "worker_cpu_share": round((last[1] - first[1]) / seconds, 2),
        "server_cpu_us_per_job": round((last[2] - first[2]) / jobs * 1e6, 1),
        "worker_threads_us_per_job": {
            name: round((cpu - threads_first.get(name, 0.0)) / jobs * 1e6, 1)
            for name, cpu in sorted(threads_last.items())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--database", default="bench_cpu",
                        help="PostgreSQL database name, or SQLite file name in "
                             "BENCH_SQLITE_DIR (default bench_cpu)")
    parser.add_argument("--py-spy", metavar="FILE", help="record the worker with py-spy")
    parser.add_argument("--native", action="store_true", help="py-spy --native")
    parser.add_argument("--gil", action="store_true",
                        help="py-spy --gil: only the thread holding the GIL")
    args = parser.parse_args()
    if args.backend == "postgres":
        ensure_pg_database(args.database)
        url = f"{PG_BASE}/{args.database}"
    else:
        SQLITE_DIR.mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{SQLITE_DIR / (args.database + '.db')}"
    for _ in range(args.rounds):
        fill(url, args.backend, args.jobs)
        result = drain(url, args.backend, args.jobs, args.concurrency, args.py_spy,
                       ["--native"] * args.native + ["--gil"] * args.gil)
        print(json.dumps({"backend": args.backend, **result}), flush=True)


if __name__ == "__main__":
    main()

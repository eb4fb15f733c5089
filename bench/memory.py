"""Memory of one jobtable worker process while it drains 200,000 no-op jobs.

Samples the worker's resident set size (from /proc) as it runs and reports the growth
after warm-up (10% of the jobs done) to the end. Target: under 20 MB.

    bench/.venv/bin/python bench/memory.py [--jobs 200000] [--backend postgres|sqlite]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

from jobtable import JobTable, WorkerJobConfig

BENCH_DIR = Path(__file__).resolve().parent
PG_ADMIN = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432") + "/postgres"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def database(backend: str, folder: Path) -> str:
    if backend == "sqlite":
        return f"sqlite:///{folder / 'memory.db'}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS bench_jobtable_memory WITH (FORCE)")
        conn.execute("CREATE DATABASE bench_jobtable_memory")
    return PG_ADMIN.rsplit("/", 1)[0] + "/bench_jobtable_memory"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--backend", choices=["postgres", "sqlite"], default="postgres")
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        jobs = folder / "jobs"
        jobs.mkdir()
        (jobs / "noop.py").write_text("async def run(params):\n    return None\n")
        url = database(args.backend, folder)
        with JobTable(url, jobs=jobs) as jt:
            for start in range(0, args.jobs, 1000):
                jt.schedule_jobs([WorkerJobConfig(type="noop", user_id=start + i)
                                  for i in range(min(1000, args.jobs - start))])
            worker = subprocess.Popen(
                [sys.executable, "-m", "jobtable", "worker", "--database", url, "--jobs",
                 str(jobs), "--concurrency", str(args.concurrency), "--log-level", "WARNING"])
            samples: list[tuple[int, float]] = []
            began = time.monotonic()
            while True:
                counts = jt.counts_by_type().get("noop", {})
                done = sum(counts.get(s, 0) for s in ("succeeded", "failed", "cancelled"))
                samples.append((done, rss_mb(worker.pid)))
                if done >= args.jobs:
                    break
                time.sleep(0.5)
            elapsed = time.monotonic() - began
            worker.send_signal(signal.SIGTERM)
            worker.wait(60)
    warm = next(mb for done, mb in samples if done >= args.jobs * 0.1)
    result = {"backend": args.backend, "jobs": args.jobs, "seconds": round(elapsed, 1),
              "rss_after_warmup_mb": round(warm, 1), "rss_end_mb": round(samples[-1][1], 1),
              "rss_max_mb": round(max(mb for _, mb in samples), 1),
              "growth_mb": round(samples[-1][1] - warm, 1)}
    print(json.dumps(result))
    (BENCH_DIR / f"results-memory-{args.backend}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

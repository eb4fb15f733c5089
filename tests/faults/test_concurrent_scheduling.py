"""Many processes schedule the same (type, user_id) pairs while workers drain:
at no sample is there more than one pending job per pair."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from jobtable import JobTable

from ._support import assert_clean_stop, query, report, start_worker, wait_until, write_jobs

PAIRS = 50
SCHEDULERS = 8
PER_SCHEDULER = 150

SCHEDULER = textwrap.dedent("""
    import random, sys
    from jobtable import JobTable, WorkerJobConfig
    url, jobs, seed, count, pairs = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
    rng = random.Random(seed)
    with JobTable(url, jobs=jobs) as jt:
        for i in range(count):
            jt.schedule_job(WorkerJobConfig(type="noop", user_id=rng.randrange(pairs),
                                            data={"seed": seed, "i": i}))
""")

DUPLICATES = """
SELECT type, user_id, COUNT(*) FROM worker_jobs
WHERE finished IS NULL AND started IS NULL
GROUP BY type, user_id HAVING COUNT(*) > 1
"""


@pytest.mark.slow
def test_at_most_one_pending_job_per_pair_under_concurrent_scheduling(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"noop": "def run(params):\n    return None\n"})
    with JobTable(db_url, jobs=jobs) as jt:
        jt.migrate()
    workers = start_worker(db_url, jobs, "", "--processes", "4", "--concurrency", "2",
                           "--poll-interval", "0.1s", log=tmp_path / "worker.log")
    script = tmp_path / "scheduler.py"
    script.write_text(SCHEDULER)
    schedulers = [subprocess.Popen([sys.executable, str(script), db_url, str(jobs), str(seed),
                                    str(PER_SCHEDULER), str(PAIRS)])
                  for seed in range(SCHEDULERS)]
    samples = violations = 0
    try:
        while any(p.poll() is None for p in schedulers):
            found = query(db_url, DUPLICATES)
            samples += 1
            if found:
                violations += 1
                pytest.fail(f"more than one pending job for a pair: {found}")
            time.sleep(0.01)
        assert all(p.wait() == 0 for p in schedulers), "a scheduler process failed"
        wait_until(lambda: query(db_url, "SELECT COUNT(*) FROM worker_jobs WHERE type = 'noop' "
                                         "AND finished IS NULL")[0][0] == 0,
                   120, "workers to drain every pending job")
        assert_clean_stop(workers, tmp_path / "worker.log")
    finally:
        for p in [*schedulers, workers]:
            if p.poll() is None:
                p.kill()
    counts = dict(query(db_url, "SELECT CASE WHEN cancelled THEN 'cancelled' WHEN success "
                                "THEN 'succeeded' ELSE 'failed' END, COUNT(*) FROM worker_jobs "
                                "WHERE type = 'noop' GROUP BY 1"))
    assert sum(counts.values()) == SCHEDULERS * PER_SCHEDULER
    assert counts.get("failed", 0) == 0
    assert samples > 10
    report(f"concurrent_scheduling[{db_url.split(':')[0]}]", {
        "scheduler_processes": SCHEDULERS, "schedule_calls": SCHEDULERS * PER_SCHEDULER,
        "pairs": PAIRS, "samples": samples, "violations": violations, **counts})

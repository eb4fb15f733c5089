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


BULK_PAIRS = 120
BULK_SCHEDULERS = 6
BULK_ROUNDS = 25

BULK_SCHEDULER = textwrap.dedent("""
    import random, sys
    from jobtable import JobTable, WorkerJobConfig
    url, jobs, seed, rounds, pairs = sys.argv[1], sys.argv[2], *map(int, sys.argv[3:])
    rng = random.Random(seed)
    written = 0

    def config(**kw):
        return WorkerJobConfig(type="noop", user_id=rng.randrange(pairs),
                               data={"seed": seed}, **kw)

    with JobTable(url, jobs=jobs) as jt:
        for i in range(rounds):
            # Users in random order, repeated within a batch: the locks must still be
            # taken in one order by everyone.
            batch = [config() for _ in range(rng.randrange(2, 200))]
            kind = i % 4
            if kind == 0:
                written += len(jt.schedule_jobs(batch))
            elif kind == 1:
                written += len(jt.schedule_jobs(batch, return_rows=False))
            elif kind == 2:            # the store's own plan: keep, keyed
                keyed = [config(unique_key=f"k{rng.randrange(3)}", on_conflict="keep")
                         for _ in range(20)]
                written += len(jt.schedule_jobs([*batch, *keyed]))
            else:                      # one by one, beside the batches
                for job in batch[:20]:
                    jt.schedule_job(job)
                    written += 1
    print(written)
""")

PENDING_PER_KEY = """
SELECT type, user_id, unique_key, COUNT(*) FROM worker_jobs
WHERE finished IS NULL AND started IS NULL
GROUP BY type, user_id, unique_key HAVING COUNT(*) > 1
"""


@pytest.mark.slow
def test_bulk_schedulers_of_overlapping_pairs_leave_one_pending_job_per_match(
        db_url: str, tmp_path: Path) -> None:
    """Processes scheduling batches of overlapping pairs at once (batches, one by one, and
    'keep' batches planned by the store): no deadlock, no error, and at no sample more
    than one pending job per pair and key; at the end exactly one un-keyed per pair."""
    jobs = write_jobs(tmp_path / "jobs", {"noop": "def run(params):\n    return None\n"})
    with JobTable(db_url, jobs=jobs) as jt:
        jt.migrate()
    script = tmp_path / "bulk_scheduler.py"
    script.write_text(BULK_SCHEDULER)
    schedulers = [subprocess.Popen([sys.executable, str(script), db_url, str(jobs), str(seed),
                                    str(BULK_ROUNDS), str(BULK_PAIRS)],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                  for seed in range(BULK_SCHEDULERS)]
    samples = 0
    try:
        while any(p.poll() is None for p in schedulers):
            found = query(db_url, PENDING_PER_KEY)
            samples += 1
            if found:
                pytest.fail(f"more than one pending job for a pair and key: {found}")
            time.sleep(0.01)
        outputs = [p.communicate(timeout=60) for p in schedulers]
        for p, (_out, err) in zip(schedulers, outputs, strict=True):
            assert p.returncode == 0, f"a scheduler failed: {err[-2000:]}"
    finally:
        for p in schedulers:
            if p.poll() is None:
                p.kill()
    written = sum(int(out.strip()) for out, _ in outputs)
    assert query(db_url, PENDING_PER_KEY) == []
    unkeyed = query(db_url, "SELECT user_id, COUNT(*) FROM worker_jobs WHERE finished IS NULL "
                            "AND unique_key IS NULL GROUP BY user_id")
    assert unkeyed and all(n == 1 for _, n in unkeyed), unkeyed
    kept = query(db_url, "SELECT COUNT(*) FROM worker_jobs")[0][0]
    assert kept <= written and samples > 5
    report(f"concurrent_bulk_scheduling[{db_url.split(':')[0]}]", {
        "scheduler_processes": BULK_SCHEDULERS, "jobs_asked": written, "rows": kept,
        "pairs": BULK_PAIRS, "samples": samples})

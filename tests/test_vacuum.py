"""A table that churns stays bounded whatever the server's vacuum settings: the cleanup
job notices dead rows piling up and vacuums the table itself (this test server runs with
autovacuum off); stats and the dashboard say when the table is bloating."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from helpers import RECORD_JOB, open_table, write_jobs

from jobtable import JobTable, WorkerJobConfig
from jobtable.model import Outcome
from jobtable.store.base import BLOAT_MIN_DEAD, TableHealth
from jobtable.testing import run_job

CLEANUP = "remove_old_worker_jobs"
ROUND = 2500


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    return write_jobs(tmp_path / "jobs", {"note": RECORD_JOB})


def _churn(jt: JobTable, first_user: int) -> None:
    """ROUND jobs through their whole life: scheduled, claimed, finished, removable now."""
    jt.schedule_jobs([WorkerJobConfig(type="note", user_id=first_user + i, remove_delay=0)
                      for i in range(ROUND)])
    jobs = jt.store.claim("w1", ROUND)
    assert len(jobs) == ROUND
    jt.store.complete([Outcome(job=j, success=True, result=None) for j in jobs])


def _health_when(jt: JobTable, ok: Any) -> TableHealth:
    """The table's health once ``ok(health)`` holds: the server publishes its row counts
    up to a few seconds late."""
    deadline = time.monotonic() + 20
    while True:
        health = jt.store.table_health()
        if ok(health) or time.monotonic() > deadline:
            return health
        time.sleep(0.2)


def test_cleanup_job_vacuums_a_bloating_table(pg_url: str, jobs: Path) -> None:
    with open_table(pg_url, jobs, vacuum_interval=0.1) as jt:
        jt.migrate()
        sizes = []
        for r in range(5):
            _churn(jt, r * ROUND)
            before = _health_when(jt, lambda h: h.dead >= 2 * ROUND)
            assert before.bloating, before
            result = run_job(jt, CLEANUP)
            assert result["deleted"] == ROUND
            assert result.get("vacuumed") == 1, (r, before)
            after = _health_when(jt, lambda h: h.dead < BLOAT_MIN_DEAD)
            assert after.dead < BLOAT_MIN_DEAD, after
            assert after.last_vacuum is not None
            sizes.append(after.size_bytes)
            time.sleep(0.2)  # past vacuum_interval
        # Freed space is reused: after the first rounds the table stops growing
        # (without the vacuum it grows by every round's dead rows).
        assert sizes[-1] <= sizes[1] * 1.1, sizes


def test_vacuum_is_rate_limited_and_can_be_switched_off(pg_url: str, jobs: Path) -> None:
    with open_table(pg_url, jobs, vacuum_interval=0) as jt:
        jt.migrate()
        _churn(jt, 0)
        assert _health_when(jt, lambda h: h.bloating).bloating
        assert "vacuumed" not in run_job(jt, CLEANUP)       # 0: never
        stats = jt.stats()
        assert stats.table is not None and stats.table.bloating
        assert stats.to_dict()["table"]["bloating"] is True
    with open_table(pg_url, jobs, vacuum_interval=3600) as jt:
        assert run_job(jt, CLEANUP).get("vacuumed") == 1       # no vacuum yet: runs
        _churn(jt, ROUND)
        assert _health_when(jt, lambda h: h.bloating).bloating
        assert "vacuumed" not in run_job(jt, CLEANUP)       # one within the hour: waits
        assert jt.store.table_health().bloating


def test_stats_report_the_table(db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        jt.schedule_job(WorkerJobConfig(type="note"))
        stats = jt.stats()
        assert stats.table is not None
        assert stats.table.size_bytes > 0
        assert not stats.table.bloating
        assert stats.to_dict()["table"]["bloating"] is False

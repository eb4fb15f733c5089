"""A job that kills its own process: the supervisor restarts the worker, the job runs
again alone in a child process, crashing only that, until it is failed for good after
``max_attempts``; the jobs that shared its worker when it first crashed are re-run and
succeed."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import sql

from jobtable import JobTable, WorkerJobConfig

from ._support import (
    assert_clean_stop,
    kill_all,
    query,
    report,
    start_worker,
    wait_until,
    write_jobs,
)

POISON = {
    "exit": "import os\n\ndef run(params):\n    os._exit(3)\n",
    "segfault": "import ctypes\n\ndef run(params):\n    ctypes.string_at(0)\n",
}
FINE = "def run(params):\n    return 'fine'\n"


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(POISON))
def test_a_job_that_crashes_its_worker_is_isolated_and_failed_not_retried_forever(
        db_url: str, tmp_path: Path, kind: str) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"poison": POISON[kind], "fine": FINE})
    with JobTable(db_url, jobs=jobs) as jt:
        poison = jt.schedule_job(WorkerJobConfig(type="poison", user_id=1,
                                                 auto_reschedule_on_failure=True))
        jt.schedule_jobs([WorkerJobConfig(type="fine", user_id=i) for i in range(20)])
    sup = start_worker(db_url, jobs, "", "--processes", "2", "--concurrency", "2",
                       "--rescue-after", "1s", "--poll-interval", "0.1s",
                       env={"JOBTABLE_MAX_ATTEMPTS": "3"}, log=tmp_path / "worker.log")
    try:
        wait_until(lambda: query(db_url, "SELECT finished FROM worker_jobs WHERE id = %s",
                                 poison.id)[0][0] is not None, 120,
                   "the poison job to be given up on")
        wait_until(lambda: query(db_url, "SELECT COUNT(*) FROM worker_jobs WHERE type = 'fine' "
                                         "AND success")[0][0] == 20, 60, "the other jobs")
        assert_clean_stop(sup, tmp_path / "worker.log")
    finally:
        kill_all(sup, db_url)
    success, attempts, crashes, result = query(
        db_url, "SELECT success, attempts, crashes, result FROM worker_jobs WHERE id = %s",
        poison.id)[0]
    assert not success
    # One crash with its worker (not charged: it might have been another job's fault),
    # then alone, each crash charged, until max_attempts crashes.
    assert (attempts, crashes) == (4, 3)
    assert "crashed its process" in str(result)
    # Given up for good: no retry row, despite auto_reschedule_on_failure.
    assert query(db_url, "SELECT COUNT(*) FROM worker_jobs WHERE rescheduled_from_job = %s",
                 poison.id)[0][0] == 0
    restarts = (tmp_path / "worker.log").read_text().count("restarting in")
    assert restarts == 1, "only the first crash took a worker process down"
    report(f"poison[{kind},{db_url.split(':')[0]}]", {
        "attempts": attempts, "crashes": crashes, "worker_restarts": restarts,
        "other_jobs_succeeded": 20})


@pytest.mark.slow
def test_without_isolation_a_crashing_job_is_abandoned_after_max_attempts(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"poison": POISON["exit"]})
    with JobTable(db_url, jobs=jobs) as jt:
        poison = jt.schedule_cron_job(WorkerJobConfig(type="poison", user_id=1,
                                                      auto_reschedule_on_failure=True),
                                      "0 0 1 1 *")
        # Make the first row due now; its chain continues at the next 1 January.
        sql(db_url, "UPDATE worker_jobs SET due = created_at WHERE id = %s", poison.id)
    sup = start_worker(db_url, jobs, "", "--processes", "2", "--concurrency", "1",
                       "--rescue-after", "1s", "--poll-interval", "0.1s",
                       env={"JOBTABLE_MAX_ATTEMPTS": "3", "JOBTABLE_ISOLATE_SUSPECTS": "false"},
                       log=tmp_path / "worker.log")
    try:
        wait_until(lambda: query(db_url, "SELECT finished FROM worker_jobs WHERE id = %s",
                                 poison.id)[0][0] is not None, 120,
                   "the poison job to be given up on")
        assert_clean_stop(sup, tmp_path / "worker.log")
    finally:
        kill_all(sup, db_url)
    success, attempts, crashes, result = query(
        db_url, "SELECT success, attempts, crashes, result FROM worker_jobs WHERE id = %s",
        poison.id)[0]
    # Without isolation every death is charged: given up after max_attempts of them.
    assert (success, attempts, crashes) == (False, 3, 3)
    assert "abandoned" in str(result).lower()
    # No retry row, but the cron chain goes on at its next occurrence.
    follow = query(db_url, "SELECT cron_schedule, finished FROM worker_jobs "
                           "WHERE rescheduled_from_job = %s", poison.id)
    assert follow == [("0 0 1 1 *", None)]

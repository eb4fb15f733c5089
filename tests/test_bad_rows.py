"""A row the worker cannot read or run fails alone, with a clear error, and the worker
goes on with the others (issue 13, items 2 and 3), on both databases: data that is not
JSON (or a value the driver cannot load), an unknown type, an invalid cron_schedule or
cron_timezone met when the next run is computed. The rows are broken with raw SQL, as
a hand-made statement or a migration gone wrong would."""

from __future__ import annotations

import subprocess
from pathlib import Path

from helpers import log_tail, open_table, sql, start_worker, write_jobs

from jobtable import WorkerJobConfig


def test_broken_rows_fail_alone_and_the_worker_runs_the_rest(db_url: str,
                                                             tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"fine": "def run(params):\n    return 'ok'\n"},
                      recorder=False)
    with open_table(db_url, jobs) as jt:
        fine = [jt.schedule_job(WorkerJobConfig(type="fine", user_id=u)) for u in range(3)]
        unreadable = jt.schedule_job(WorkerJobConfig(type="fine", user_id=10))
        unknown = jt.schedule_job(WorkerJobConfig(type="fine", user_id=11))
        bad_cron = jt.schedule_cron_job(WorkerJobConfig(type="fine", user_id=12),
                                        "* * * * * *")
        bad_zone = jt.schedule_cron_job(WorkerJobConfig(type="fine", user_id=13),
                                        "* * * * * *")
    if db_url.startswith("sqlite"):
        sql(db_url, "UPDATE worker_jobs SET data = '{\"a\": ' WHERE id = %s", unreadable.id)
    else:  # jsonb is always JSON; a timestamp past year 9999 cannot be loaded either
        sql(db_url, "UPDATE worker_jobs SET created_at = 'infinity' WHERE id = %s",
            unreadable.id)
    sql(db_url, "UPDATE worker_jobs SET type = 'no_such_type' WHERE id = %s", unknown.id)
    sql(db_url, "UPDATE worker_jobs SET cron_schedule = 'every day', due = created_at "
                "WHERE id = %s", bad_cron.id)
    sql(db_url, "UPDATE worker_jobs SET cron_timezone = 'Mars/Olympus', due = created_at "
                "WHERE id = %s", bad_zone.id)

    log = tmp_path / "worker.log"
    proc = start_worker(db_url, jobs, "--burst", log=log)
    try:
        code = proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"the worker did not finish:\n{log_tail(log)}") from None
    assert code == 0, log_tail(log)
    text = log.read_text()
    assert "Task exception was never retrieved" not in text and "Traceback" not in text
    assert "5 succeeded, 1 failed" in text, log_tail(log)

    def row(job_id: int) -> tuple[object, ...]:
        return sql(db_url, "SELECT success, finished IS NOT NULL, attempts, result "
                           "FROM worker_jobs WHERE id = %s", job_id)[0]

    for job in fine:
        assert row(job.id)[:3] == (True, True, 1)
    success, finished, attempts, result = row(unreadable.id)
    assert (success, finished, attempts) == (False, True, 1)
    assert "cannot be read" in str(result)
    success, finished, _, result = row(unknown.id)
    assert (success, finished) == (False, True) and "no_such_type" in str(result)
    for job, problem in ((bad_cron, "every day"), (bad_zone, "Mars/Olympus")):
        success, finished, attempts, result = row(job.id)
        # The run succeeded and keeps its outcome; the chain stops and says why.
        assert (success, finished, attempts) == (True, True, 1)
        assert isinstance(result, (dict, str)) and "chain_error" in str(result)
        assert problem in str(result)
        assert sql(db_url, "SELECT COUNT(*) FROM worker_jobs WHERE rescheduled_from_job = %s",
                   job.id)[0][0] == 0
    assert sql(db_url, "SELECT COUNT(*) FROM worker_jobs WHERE finished IS NULL "
                       "AND type IN ('fine', 'no_such_type')")[0][0] == 0

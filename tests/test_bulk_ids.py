"""schedule_jobs(return_rows=False): the ids of the new rows, rule 2 applied, on both
databases; bad input writes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import RECORD_JOB, open_table, write_jobs

from jobtable import WorkerJobConfig
from jobtable.errors import JobTableError


def test_schedule_jobs_returns_ids_when_asked(db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"note": RECORD_JOB})
    with open_table(db_url, jobs) as jt:
        rows = jt.schedule_jobs([WorkerJobConfig(type="note", user_id=1)])
        ids = jt.schedule_jobs([WorkerJobConfig(type="note", user_id=u) for u in (1, 2, 3)],
                               return_rows=False)
        assert all(isinstance(i, int) for i in ids) and len(ids) == 3
        assert [jt.require_job(i).user_id for i in ids] == [1, 2, 3]
        assert jt.require_job(rows[0].id).cancelled          # rule 2
        with pytest.raises(JobTableError):
            jt.schedule_jobs([WorkerJobConfig(type="note", user_id=9),
                              WorkerJobConfig(type="missing")], return_rows=False)
        assert jt.count_jobs(user_id=9) == 0
        assert jt.count_jobs(status="pending") == 3

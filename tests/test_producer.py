"""A producer without the job code (issue 14, item 7): a ``JobTable`` with no jobs folder
schedules any type by name, and a worker that has the folder runs it; a ``JobTable``
with a jobs folder still refuses a type it does not know (a typo)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import RECORD_JOB, open_table, run_burst, write_jobs

from jobtable import JobStatus, JobTable, WorkerJobConfig
from jobtable.errors import ConfigError, InvalidDataError, UnknownJobTypeError

DATA_JOB = """
from typing import TypedDict

class Data(TypedDict):
    to: str

REMOVE_DELAY = 60

def run(params):
    return {"sent_to": params.job.data["to"]}
"""


def test_a_producer_without_the_jobs_folder_schedules_by_name_and_a_worker_runs_it(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./jobs here
    with JobTable(db_url) as producer:
        assert producer.strict is False
        job = producer.schedule_job(WorkerJobConfig(type="send_report", user_id=7,
                                                    data={"to": "a@b.c"}))
        # Without the module there is no Data to check and no module default.
        assert job.remove_delay == 3_600_000
    jobs = write_jobs(tmp_path / "worker" / "jobs", {"send_report": DATA_JOB}, recorder=False)
    with open_table(db_url, jobs) as worker_side:
        run_burst(worker_side)
        row = worker_side.get_job(job.id)
        assert row is not None and row.status is JobStatus.SUCCEEDED
        assert row.result == {"sent_to": "a@b.c"}


def test_a_jobtable_with_a_jobs_folder_still_refuses_an_unknown_type(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"send_report": DATA_JOB}, recorder=False)
    with open_table(db_url, jobs) as jt:
        assert jt.strict is True
        with pytest.raises(UnknownJobTypeError, match="send_reprot"):
            jt.schedule_job(WorkerJobConfig(type="send_reprot"))
        # The module is there, so its Data is checked.
        with pytest.raises(InvalidDataError):
            jt.schedule_job(WorkerJobConfig(type="send_report", data={"to": 7}))
        assert jt.count_jobs() == 0


def test_strict_false_and_known_types_accept_types_without_a_module(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"record": RECORD_JOB})
    with JobTable(db_url, jobs, strict=False) as jt:
        jt.schedule_job(WorkerJobConfig(type="elsewhere"))
    with JobTable(db_url, known_types=["send_report", "resize_image"]) as jt:
        assert jt.strict is True
        jt.schedule_job(WorkerJobConfig(type="resize_image", data={"any": "thing"}))
        with pytest.raises(UnknownJobTypeError) as info:
            jt.schedule_job(WorkerJobConfig(type="resize_imag"))
        assert "resize_image" in str(info.value) and "send_report" in str(info.value)
        assert sorted(j.type for j in jt.list_jobs()) == ["elsewhere", "resize_image"]
    with pytest.raises(ConfigError, match="known_types"):
        JobTable(db_url, known_types="send_report")

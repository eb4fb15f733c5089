"""Rule 10 on both databases (declared cron chains kept once per worker start, stopped
when the declaration goes), and how the jobs folder becomes job types."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import (
    RECORD_JOB,
    now,
    open_table,
    run_burst,
    run_cli,
    set_times,
    write_jobs,
)

from jobtable import (
    InvalidJobError,
    JobStatus,
    JobTable,
    UnknownJobTypeError,
    WorkerJob,
    WorkerJobConfig,
)
from jobtable.errors import ConfigError
from jobtable.registry import discover

BEAT = """
CRON = "0 0 * * * *"

def run(params):
    return {"beat": params.job.id}
"""


def _beats(jt: JobTable, status: str | None = None) -> list[WorkerJob]:
    return jt.list_jobs(type="beat", status=status, limit=100)


def _start_worker(db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        run_burst(jt)


def test_a_declared_cron_gets_exactly_one_chain_however_often_workers_start(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"beat": BEAT}, recorder=False)
    _start_worker(db_url, jobs)
    _start_worker(db_url, jobs)
    result = run_cli("worker", "--database", db_url, "--jobs", str(jobs), "--burst")
    assert result.returncode == 0, result.stderr
    with open_table(db_url, jobs) as jt:
        rows = _beats(jt)
        assert len(rows) == 1, rows
        [chain] = rows
        assert chain.status is JobStatus.PENDING
        assert chain.declared is True and chain.user_id == 0
        assert chain.cron_schedule == "0 0 * * * *"
        assert chain.due.minute == 0 and chain.due.second == 0


def test_a_running_declared_chain_is_not_doubled_by_another_worker_start(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"beat": BEAT}, recorder=False)
    _start_worker(db_url, jobs)
    with open_table(db_url, jobs) as jt:
        [chain] = _beats(jt)
        # As if a worker were running the chain's row right now.
        set_times(db_url, chain.id, started=now() - timedelta(seconds=5))
    _start_worker(db_url, jobs)
    with open_table(db_url, jobs) as jt:
        assert [j.id for j in _beats(jt)] == [chain.id]


def test_removing_the_declaration_stops_the_chain_at_the_next_worker_start(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"beat": BEAT}, recorder=False)
    _start_worker(db_url, jobs)
    (jobs / "beat.py").write_text("def run(params):\n    return None\n")
    _start_worker(db_url, jobs)
    with open_table(db_url, jobs) as jt:
        [row] = _beats(jt)
        assert row.status is JobStatus.CANCELLED
        assert "CRON declaration was removed" in str(row.error)
        assert _beats(jt, "pending") == []


def test_changing_the_declared_schedule_replaces_the_chain(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"beat": BEAT}, recorder=False)
    _start_worker(db_url, jobs)
    (jobs / "beat.py").write_text(BEAT.replace('"0 0 * * * *"', '"0 */30 * * * *"'))
    _start_worker(db_url, jobs)
    with open_table(db_url, jobs) as jt:
        [pending] = _beats(jt, "pending")
        assert pending.cron_schedule == "0 */30 * * * *"
        assert len(_beats(jt, "cancelled")) == 1


def test_declared_settings_reach_the_chain_rows(db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"beat": """
        CRON = "0 9 * * *"
        CRON_TIMEZONE = "Asia/Tokyo"
        AUTO_RESCHEDULE_ON_FAILURE = True
        AUTO_RESCHEDULE_ON_FAILURE_DELAY = 45
        REMOVE_DELAY = 120

        def run(params):
            return None
    """}, recorder=False)
    _start_worker(db_url, jobs)
    with open_table(db_url, jobs) as jt:
        [chain] = _beats(jt)
        assert chain.cron_timezone == "Asia/Tokyo"
        assert (chain.due.hour, chain.due.minute) == (0, 0)  # 09:00 in Tokyo
        assert chain.auto_reschedule_on_failure is True
        assert chain.auto_reschedule_on_failure_delay == 45_000
        assert chain.remove_delay == 120_000


def test_an_invalid_declared_cron_is_reported_and_other_jobs_still_run(
        db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    jobs = write_jobs(tmp_path / "jobs", {
        "beat": BEAT.replace('"0 0 * * * *"', '"0 0 99 * * *"'),
        "plain": "def run(params):\n    return 'ran'\n"}, recorder=False)
    with open_table(db_url, jobs) as jt:
        plain = jt.schedule_job(WorkerJobConfig(type="plain"))
        with caplog.at_level(logging.ERROR, logger="jobtable"):
            run_burst(jt)
        assert "'beat' declares CRON '0 0 99 * * *'" in caplog.text
        assert "hour" in caplog.text
        assert _beats(jt) == []
        row = jt.get_job(plain.id)
        assert row is not None and row.result == "ran"


def test_the_jobs_folder_names_the_job_types(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"send_report": RECORD_JOB, "_helpers": RECORD_JOB},
                      recorder=False)
    (jobs / "not-a-name.py").write_text("def run(params): pass\n")
    (jobs / "notes.txt").write_text("not a job\n")
    registry = discover(jobs)
    assert registry.names == ["remove_old_worker_jobs", "send_report"]
    assert registry.get("send_report") is not None
    assert registry.get("_helpers") is None
    with pytest.raises(UnknownJobTypeError, match="known job types: remove_old_worker_jobs, "
                                                  "send_report"):
        registry.require("send_reports")


def test_jobs_may_be_a_dotted_package(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = f"jt_test_app_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "src" / package / "jobs"
    folder.mkdir(parents=True)
    (folder.parent / "__init__.py").write_text("")
    (folder / "__init__.py").write_text("")
    (folder / "greet.py").write_text(
        "def run(params):\n    return 'hello ' + params.job.data['name']\n")
    (folder / "_shared.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path / "src"))
    with open_table(db_url, f"{package}.jobs") as jt:
        assert jt.registry.names == ["greet", "remove_old_worker_jobs"]
        job = jt.schedule_job(WorkerJobConfig(type="greet", data={"name": "Ada"}))
        run_burst(jt)
        row = jt.get_job(job.id)
        assert row is not None and row.result == "hello Ada"


def test_a_module_without_run_is_a_broken_job_type(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"norun": "X = 1\n"}, recorder=False)
    registry = discover(jobs)
    [broken] = registry.load_all()
    assert broken.name == "norun"
    assert "has no run(params) function" in str(broken.error)


def test_a_syntax_error_is_reported_with_file_and_line(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"bad": "def run(params)\n    return 1\n"},
                      recorder=False)
    [broken] = discover(jobs).load_all()
    assert f"{jobs / 'bad.py'}:1: SyntaxError" in str(broken.error)


def test_a_module_may_not_shadow_a_built_in_job(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"remove_old_worker_jobs": RECORD_JOB},
                      recorder=False)
    with pytest.raises(InvalidJobError, match="shadows the built-in job type"):
        discover(jobs)


def test_a_missing_jobs_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        discover(str(tmp_path / "nowhere" / "jobs"))


FLAKY = """
AUTO_RESCHEDULE_ON_FAILURE = True
AUTO_RESCHEDULE_ON_FAILURE_DELAY = 3600
REMOVE_DELAY = 120

def run(params):
    raise RuntimeError("down")
"""


def test_module_retry_settings_apply_to_jobs_scheduled_by_hand(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"flaky": FLAKY}, recorder=False)
    with open_table(db_url, jobs) as jt:
        one = jt.schedule_job(WorkerJobConfig(type="flaky", user_id=1))
        [many] = jt.schedule_jobs([WorkerJobConfig(type="flaky", user_id=2)])
        cron = jt.schedule_cron_job(WorkerJobConfig(type="flaky", user_id=3), "0 0 * * *")
        for row in (one, many, cron):
            assert (row.auto_reschedule_on_failure, row.auto_reschedule_on_failure_delay,
                    row.remove_delay) == (True, 3_600_000, 120_000)
        run_burst(jt)
        failed = jt.get_job(one.id)
        assert failed is not None and failed.status == JobStatus.FAILED
        [retry] = [j for j in jt.list_jobs(type="flaky", status="pending")
                   if j.rescheduled_from_job == one.id]
        assert failed.finished is not None
        assert timedelta(minutes=59) < retry.due - failed.finished < timedelta(minutes=61)
        assert retry.user_id == 1 and retry.auto_reschedule_on_failure is True


def test_a_config_value_wins_over_the_module_setting(db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"flaky": FLAKY}, recorder=False)
    with open_table(db_url, jobs) as jt:
        row = jt.schedule_job(WorkerJobConfig(
            type="flaky", auto_reschedule_on_failure=False, remove_delay=5))
        assert (row.auto_reschedule_on_failure, row.auto_reschedule_on_failure_delay,
                row.remove_delay) == (False, 3_600_000, 5_000)
        run_burst(jt)
        [failed] = jt.list_jobs(type="flaky")
        assert failed.id == row.id and failed.status == JobStatus.FAILED  # no retry row


def test_a_wrong_module_setting_is_named_and_nothing_is_scheduled(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {
        "flaky": FLAKY.replace("= True", '= "yes"'),
        "slow": FLAKY.replace("= 3600", '= "soon"')}, recorder=False)
    with open_table(db_url, jobs) as jt:
        with pytest.raises(InvalidJobError,
                           match="AUTO_RESCHEDULE_ON_FAILURE of job type 'flaky' must be "
                                 "True or False, got 'yes'"):
            jt.schedule_job(WorkerJobConfig(type="flaky"))
        with pytest.raises(InvalidJobError,
                           match="AUTO_RESCHEDULE_ON_FAILURE_DELAY of job type 'slow'"):
            jt.schedule_jobs([WorkerJobConfig(type="flaky", auto_reschedule_on_failure=True),
                              WorkerJobConfig(type="slow")])
        assert jt.list_jobs() == []


def test_the_registry_lists_the_module_defaults_it_sets(tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {
        "flaky": FLAKY, "plain": "def run(params):\n    return 1\n"}, recorder=False)
    registry = discover(jobs)
    assert registry.defaults("flaky") == {
        "auto_reschedule_on_failure": True, "auto_reschedule_on_failure_delay": 3600,
        "remove_delay": 120}
    assert registry.defaults("plain") == {}
    assert registry.defaults("missing") == {}


# -- the package name job modules load under ---------------------------------------------

UTIL = "def helper():\n    return 'real'\n"
REPORT = "from ._util import helper\n\n\ndef run(params):\n    return helper()\n"
FAILS = ("class ReportError(Exception):\n    pass\n\n\n"
         "def run(params):\n    raise ReportError('boom')\n")
USER_SCRIPT = """\
from unittest import mock
from jobtable import JobTable, WorkerJobConfig
from jobtable.testing import drain, run_job
with JobTable({db_url!r}, jobs="jobs") as jt:
    print(jt.registry.package)
    print(run_job(jt, "report"))
    with mock.patch("jobs.report.helper", return_value="patched"):
        print(run_job(jt, "report"))
    jt.schedule_job(WorkerJobConfig(type="fails"))
    [row] = drain(jt).failed
    print(row.result["traceback"].strip().splitlines()[-1])
"""


@pytest.mark.parametrize("layout", ["package", "plain folder"])
def test_job_modules_load_under_the_jobs_package_name(
        db_url: str, tmp_path: Path, layout: str) -> None:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    if layout == "package":
        (jobs / "__init__.py").write_text("")
    (jobs / "_util.py").write_text(UTIL)
    (jobs / "report.py").write_text(REPORT)
    (jobs / "fails.py").write_text(FAILS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBTABLE_")}
    done = subprocess.run([sys.executable, "-c", USER_SCRIPT.format(db_url=db_url)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "jobs",  # the relative import, the patch and the traceback all see jobs.*
        "real",
        "patched",
        "jobs.fails.ReportError: boom"]


def test_a_jobs_package_inside_an_application_package_keeps_its_dotted_name(
        tmp_path: Path) -> None:
    package = f"jt_app_{uuid.uuid4().hex[:8]}"
    jobs = tmp_path / package / "jobs"
    jobs.mkdir(parents=True)
    (jobs.parent / "__init__.py").write_text("")
    (jobs / "__init__.py").write_text("")
    (jobs / "_util.py").write_text(UTIL)
    (jobs / "report.py").write_text(REPORT)
    registry = discover(jobs)
    assert registry.package == f"{package}.jobs"
    jt = registry.get("report")
    assert jt is not None and jt.module is not None, jt and jt.error
    assert jt.module.__name__ == f"{package}.jobs.report"
    assert sys.modules[f"{package}.jobs.report"] is jt.module
    assert jt.run is not None and jt.run(None) == "real"


def test_a_folder_whose_name_is_taken_loads_under_a_stand_in_name(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    jobs = tmp_path / "json"  # the standard library's json owns this name
    jobs.mkdir()
    (jobs / "_util.py").write_text(UTIL)
    (jobs / "report.py").write_text(REPORT)
    with caplog.at_level(logging.DEBUG, logger="jobtable.registry"):
        registry = discover(jobs)
    assert registry.package is not None and registry.package != "json"
    assert f"cannot import as json (json is already {Path(json.__file__).parent}" \
           in caplog.text
    assert f"job modules import as {registry.package}.<type>" in caplog.text
    jt = registry.get("report")
    assert jt is not None and jt.run is not None, jt and jt.error
    assert jt.run(None) == "real"  # relative imports work under the stand-in too
    assert sys.modules["json"] is json


def test_two_folders_of_one_name_in_one_process_keep_their_own_modules(
        tmp_path: Path) -> None:
    results = []
    for n in (1, 2):
        folder = write_jobs(tmp_path / str(n) / "jobs", {"which": f"def run(params):\n"
                                                         f"    return {n}\n"}, recorder=False)
        jt = discover(folder).get("which")
        assert jt is not None and jt.run is not None, jt and jt.error
        results.append(jt.run(None))
    assert results == [1, 2]

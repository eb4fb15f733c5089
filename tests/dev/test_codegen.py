"""``jobtable codegen``: the typed bindings module, its determinism, --check, and the
registry the worker reads from it."""

from __future__ import annotations

import difflib
import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jobtable import InvalidDataError, JobTable
from jobtable.codegen import read_registry
from jobtable.registry import discover

from ._support import EXPECTED, clean_env, cli, fixture_project, run_mypy


@pytest.fixture
def project(tmp_path: Path) -> Path:
    return fixture_project(tmp_path / "proj")


def test_codegen_on_the_fixture_folder_writes_the_expected_module(project: Path) -> None:
    done = cli("codegen", cwd=project, check=True)
    assert done.stdout.strip() == "wrote jobs/_generated.py (5 job types)"
    text = (project / "jobs" / "_generated.py").read_text()
    if os.environ.get("JOBTABLE_UPDATE_GOLDEN") == "1":
        EXPECTED.write_text(text)
    expected = EXPECTED.read_text()
    diff = "\n".join(difflib.unified_diff(expected.splitlines(), text.splitlines(),
                                          "expected", "generated", lineterm=""))
    assert text == expected, (
        f"generated module differs from {EXPECTED.name} (if the change is intended, rerun "
        f"with JOBTABLE_UPDATE_GOLDEN=1):\n{diff}")


def test_a_second_codegen_run_changes_nothing(project: Path) -> None:
    cli("codegen", cwd=project, check=True)
    target = project / "jobs" / "_generated.py"
    first = target.read_bytes()
    mtime = target.stat().st_mtime_ns
    done = cli("codegen", cwd=project, check=True)
    assert done.stdout.strip() == "jobs/_generated.py is up to date (5 job types)"
    assert target.read_bytes() == first
    assert target.stat().st_mtime_ns == mtime


def test_codegen_output_does_not_depend_on_the_working_directory(project: Path) -> None:
    cli("codegen", cwd=project, check=True)
    first = (project / "jobs" / "_generated.py").read_bytes()
    (project / "jobs" / "_generated.py").unlink()
    cli("codegen", "--jobs", str(project / "jobs"), cwd=project.parent, check=True)
    assert (project / "jobs" / "_generated.py").read_bytes() == first


def test_check_passes_when_the_bindings_match_the_folder(project: Path) -> None:
    cli("codegen", cwd=project, check=True)
    done = cli("codegen", "--check", cwd=project)
    assert done.returncode == 0, done.stderr
    assert "is up to date" in done.stdout


def test_check_fails_naming_a_new_job_file(project: Path) -> None:
    cli("codegen", cwd=project, check=True)
    before = (project / "jobs" / "_generated.py").read_bytes()
    (project / "jobs" / "ping.py").write_text("def run(params):\n    return 1\n")
    done = cli("codegen", "--check", cwd=project)
    assert done.returncode == 1
    assert "stale: jobs/_generated.py lacks job type 'ping' (a new job module)" in done.stderr
    assert (project / "jobs" / "_generated.py").read_bytes() == before  # --check writes nothing


def test_check_fails_naming_a_removed_job_file(project: Path) -> None:
    cli("codegen", cwd=project, check=True)
    (project / "jobs" / "plain.py").unlink()
    done = cli("codegen", "--check", cwd=project)
    assert done.returncode == 1
    assert "still has job type 'plain', whose module is gone" in done.stderr


def test_check_fails_when_a_data_declaration_changes(project: Path) -> None:
    cli("codegen", cwd=project, check=True)
    (project / "jobs" / "plain.py").write_text(textwrap.dedent("""\
        from typing import TypedDict


        class Data(TypedDict):
            name: str


        def run(params):
            return "done"
        """))
    done = cli("codegen", "--check", cwd=project)
    assert done.returncode == 1
    assert "differs from what the job modules declare" in done.stderr
    assert "PlainData" in done.stderr


def test_check_fails_when_the_bindings_are_missing(project: Path) -> None:
    done = cli("codegen", "--check", cwd=project)
    assert done.returncode == 1
    assert "jobs/_generated.py does not exist" in done.stderr


def test_codegen_reports_a_broken_job_module_and_writes_nothing(project: Path) -> None:
    cli("codegen", cwd=project, check=True)
    before = (project / "jobs" / "_generated.py").read_bytes()
    (project / "jobs" / "ping.py").write_text("def run(params)\n    return 1\n")
    (project / "jobs" / "pong.py").write_text("import not_a_module_anywhere\n\n"
                                              "def run(params):\n    return 1\n")
    done = cli("codegen", cwd=project)
    assert done.returncode == 1
    assert "error: jobs/ping.py:1: SyntaxError: expected ':'" in done.stderr
    assert ("error: jobs/pong.py:1: ModuleNotFoundError: No module named "
            "'not_a_module_anywhere'") in done.stderr
    assert (project / "jobs" / "_generated.py").read_bytes() == before


def test_codegen_writes_to_the_output_given(project: Path) -> None:
    done = cli("codegen", "--output", "typed_jobs.py", cwd=project, check=True)
    assert done.stdout.startswith("wrote typed_jobs.py")
    assert not (project / "jobs" / "_generated.py").exists()
    assert read_registry(project / "typed_jobs.py") == {
        "plain": "jobs.plain", "resize": "jobs.resize", "send_report": "jobs.send_report",
        "tally": "jobs.tally"}


def test_codegen_refuses_an_output_in_the_jobs_folder_that_would_be_a_job(
        project: Path) -> None:
    done = cli("codegen", "--output", "jobs/bindings.py", cwd=project)
    assert done.returncode == 1
    assert "would be taken for a job type; start its name with '_'" in done.stderr
    assert not (project / "jobs" / "bindings.py").exists()


def test_importing_the_bindings_imports_no_job_module(project: Path) -> None:
    cli("codegen", cwd=project, check=True)
    script = textwrap.dedent("""\
        import sys
        import jobs._generated as b
        assert not [m for m in sys.modules if m.startswith("jobs.") and m != "jobs._generated"]
        data = b.ResizeData(width=3)
        assert "jobs.resize" in sys.modules
        print(b.JOB_TYPES, type(data).__name__)
        """)
    done = subprocess.run([sys.executable, "-c", script], cwd=project, env=clean_env(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == (
        "('plain', 'remove_old_worker_jobs', 'resize', 'send_report', 'tally') Data")


def test_an_application_and_its_worker_never_import_the_generator(project: Path) -> None:
    cli("codegen", cwd=project, check=True)
    script = textwrap.dedent("""\
        import sys
        from jobtable import JobTable
        from jobtable.testing import drain
        from jobs._generated import schedule_job
        with JobTable("sqlite:///app.db", jobs="jobs") as jt:
            schedule_job(jt, "tally", {"step": 2})
            drained = drain(jt)
            print(len(drained.succeeded), [m for m in sys.modules if "codegen" in m])
        """)
    done = subprocess.run([sys.executable, "-c", script], cwd=project, env=clean_env(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1 []"


def test_the_worker_command_never_imports_the_generator(project: Path) -> None:
    cli("codegen", cwd=project, check=True)
    script = textwrap.dedent("""\
        import sys
        from jobtable.cli import main
        main(["schedule", "tally", "--data", '{"step": 3}'], standalone_mode=False)
        try:
            main(["worker", "--burst"], standalone_mode=False)
        finally:
            print([m for m in sys.modules if "codegen" in m or m == "jobtable.dev"])
        """)
    done = subprocess.run([sys.executable, "-c", script], cwd=project, env=clean_env(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"
    with JobTable(f"sqlite:///{project / 'jobtable.db'}", jobs=project / "jobs") as jt:
        row = jt.get_job(1)
        assert row is not None and row.result == 3  # the worker ran it


def test_generated_functions_schedule_checked_rows(project: Path, db_url: str) -> None:
    cli("codegen", cwd=project, check=True)
    script = textwrap.dedent(f"""\
        import asyncio, json
        from jobtable import InvalidDataError, JobTable
        from jobs._generated import (ResizeData, job_config, schedule_cron_job,
                                     schedule_job, schedule_job_async)
        with JobTable({db_url!r}, jobs="jobs") as jt:
            a = schedule_job(jt, "send_report", {{"to": "a@b.c"}}, user_id=7)
            b = schedule_job(jt, "resize", ResizeData(width=3, mode="fill"))
            c = asyncio.run(schedule_job_async(jt, "tally"))
            d = schedule_cron_job(jt, "plain", cron="0 0 * * *", user_id=2)
            e = jt.schedule_jobs([job_config("tally", {{"step": 2}}, user_id=u)
                                  for u in (5, 6)])
            try:
                schedule_job(jt, "send_report", {{"to": 5}})
            except InvalidDataError as exc:
                print("rejected:", exc)
            print(json.dumps([[r.type, r.user_id, r.data, r.cron_schedule]
                              for r in (a, b, c, d, *e)]))
            print(len(jt.list_jobs(type="send_report")))
        """)
    done = subprocess.run([sys.executable, "-c", script], cwd=project, env=clean_env(),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    rejected, rows, count = done.stdout.strip().splitlines()
    assert rejected == ("rejected: data for job type 'send_report' does not match its Data: "
                        "to should be str, got int")
    assert json.loads(rows) == [
        ["send_report", 7, {"to": "a@b.c"}, None],
        ["resize", 0, {"width": 3, "height": 10, "mode": "fill"}, None],
        ["tally", 0, {}, None], ["plain", 2, {}, "0 0 * * *"],
        ["tally", 5, {"step": 2}, None], ["tally", 6, {"step": 2}, None]]
    assert count == "1"  # the rejected call wrote nothing


def test_the_worker_registry_comes_from_the_bindings_when_they_match(project: Path) -> None:
    cli("codegen", cwd=project, check=True)
    registry = discover(project / "jobs")
    assert registry.bindings == str(project / "jobs" / "_generated.py")
    assert registry.names == ["plain", "remove_old_worker_jobs", "resize", "send_report",
                              "tally"]


def test_stale_bindings_are_reported_and_the_folder_is_used(
        project: Path, caplog: pytest.LogCaptureFixture) -> None:
    cli("codegen", cwd=project, check=True)
    (project / "jobs" / "ping.py").write_text("def run(params):\n    return 1\n")
    (project / "jobs" / "plain.py").unlink()
    with caplog.at_level(logging.WARNING, logger="jobtable.registry"):
        registry = discover(project / "jobs")
    assert registry.bindings is None
    assert "ping" in registry.names and "plain" not in registry.names
    assert "are stale (not listed: ping; listed but gone: plain); using the jobs folder; " \
           "run 'jobtable codegen'" in caplog.text


def test_a_job_table_without_bindings_discovers_the_folder(project: Path,
                                                           sqlite_url: str) -> None:
    with JobTable(sqlite_url, jobs=project / "jobs") as jt:
        assert jt.registry.bindings is None
        assert "send_report" in jt.registry
        with pytest.raises(InvalidDataError, match="missing key 'to'"):
            from jobtable import WorkerJobConfig

            jt.schedule_job(WorkerJobConfig(type="send_report", data={}))


USER_CODE_OK = '''\
from jobtable import JobTable, WorkerJob
from jobs._generated import (JOB_TYPES, JobType, ResizeData, SendReportResult, job_config,
                             schedule_cron_job_async, schedule_job, schedule_job_async)


def schedule(jt: JobTable) -> list[WorkerJob]:
    rows = [
        schedule_job(jt, "send_report", {"to": "a@b.c"}, user_id=7),
        schedule_job(jt, "send_report", {"to": "a@b.c", "cc": ["d@e.f"]}),
        schedule_job(jt, "resize", ResizeData(width=3, mode="fill")),
        schedule_job(jt, "tally"),
        schedule_job(jt, "plain", {"anything": 1}),
        schedule_job(jt, "remove_old_worker_jobs"),
    ]
    rows += jt.schedule_jobs([job_config("tally", {"step": u}, user_id=u) for u in (1, 2)])
    return rows


def known(name: str) -> list[JobType]:
    return [kind for kind in JOB_TYPES if kind == name]


async def later(jt: JobTable) -> WorkerJob:
    await schedule_job_async(jt, "plain")
    return await schedule_cron_job_async(jt, "tally", {"step": 2}, cron="0 * * * *")


def summary(result: SendReportResult) -> int:
    return result["recipients"]
'''

USER_CODE_TYPO = '''\
from jobtable import JobTable
from jobs._generated import schedule_job


def schedule(jt: JobTable) -> None:
    schedule_job(jt, "send_reprot", {"to": "a@b.c"})
'''

USER_CODE_WRONG_DATA = '''\
from jobtable import JobTable
from jobs._generated import ResizeData, schedule_job


def schedule(jt: JobTable) -> None:
    schedule_job(jt, "send_report", {"to": 5})
    schedule_job(jt, "send_report", {"recipient": "a@b.c"})
    schedule_job(jt, "resize", ResizeData(width="3"))
    schedule_job(jt, "resize", {"width": 3})
'''


def test_mypy_accepts_correct_calls_and_rejects_a_misspelt_type_and_wrong_data(
        project: Path) -> None:
    cli("codegen", cwd=project, check=True)
    (project / "good.py").write_text(USER_CODE_OK)
    (project / "typo.py").write_text(USER_CODE_TYPO)
    (project / "wrong_data.py").write_text(USER_CODE_WRONG_DATA)
    (project / "no_jobs").mkdir()  # built-ins only: one job type, so no @overload
    assert cli("codegen", "--jobs", "no_jobs", cwd=project, check=True).stdout.strip() == \
        "wrote no_jobs/_generated.py (1 job type)"
    done = run_mypy(project, "good.py", "typo.py", "wrong_data.py", "jobs/_generated.py",
                    "no_jobs/_generated.py")
    errors = sorted(line for line in done.stdout.splitlines() if ": error:" in line)
    overload = 'No overload variant of "schedule_job" matches argument types'
    assert errors == [
        f'typo.py:6: error: {overload} "JobTable", "str", "dict[str, str]"  [call-overload]',
        f'wrong_data.py:6: error: {overload} "JobTable", "str", "dict[str, int]"  '
        "[call-overload]",
        f'wrong_data.py:7: error: {overload} "JobTable", "str", "dict[str, str]"  '
        "[call-overload]",
        'wrong_data.py:8: error: Argument "width" to "Data" has incompatible type "str"; '
        'expected "int"  [arg-type]',
        f'wrong_data.py:8: error: {overload} "JobTable", "str", "Data"  [call-overload]',
        f'wrong_data.py:9: error: {overload} "JobTable", "str", "dict[str, int]"  '
        "[call-overload]",
    ], done.stdout + done.stderr

"""Bad input, on both databases: each mistake gets an error naming the problem and what
is accepted, and the table is left exactly as it was."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    RECORD_JOB,
    now,
    open_table,
    row_count,
    run_burst,
    run_cli,
    subprocess_env,
    write_jobs,
)

from jobtable import (
    InvalidCronError,
    InvalidDataError,
    InvalidJobError,
    JobStatus,
    JobTable,
    UnknownJobTypeError,
    WorkerJobConfig,
)


def _config(**fields: Any) -> WorkerJobConfig:
    return WorkerJobConfig(**{"type": "note", "user_id": 1, **fields})


def _nested(levels: int) -> dict[str, Any]:
    """Objects inside one another, ``levels`` deep (``{}`` is one level)."""
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


DEEP = ["is nested more than 100 levels deep", "the limit is 100 levels"]


def _itself() -> dict[str, Any]:
    loop: list[Any] = []
    loop.append(loop)
    return {"loop": loop}


Case = tuple[Callable[[JobTable], object], type[Exception], list[str]]

CASES: dict[str, Case] = {
    "queue name with a space": (
        lambda jt: jt.schedule_job(_config(queue="my queue")),
        InvalidJobError, ["queue must be a name of 1 to 100 letters", "'my queue'"]),
    "queue name too long": (
        lambda jt: jt.schedule_job(_config(queue="q" * 101)),
        InvalidJobError, ["queue must be a name of 1 to 100"]),
    "priority not an integer": (
        lambda jt: jt.schedule_job(_config(priority="high")),
        InvalidJobError, ["priority must be an integer", "lower runs first", "'high'"]),
    "priority a bool": (
        lambda jt: jt.schedule_job(_config(priority=True)),
        InvalidJobError, ["priority must be an integer"]),
    "priority out of range": (
        lambda jt: jt.schedule_job(_config(priority=2**40)),
        InvalidJobError, ["priority must be an integer from -2147483648 to 2147483647"]),
    "unique_key too long": (
        lambda jt: jt.schedule_job(_config(unique_key="k" * 256)),
        InvalidJobError, ["unique_key must be None or a non-empty string of at most 255"]),
    "unique_key not a string": (
        lambda jt: jt.schedule_job(_config(unique_key=7)),
        InvalidJobError, ["unique_key must be None or a non-empty string"]),
    "unknown on_conflict": (
        lambda jt: jt.schedule_job(_config(on_conflict="ignore")),
        InvalidJobError, ["on_conflict must be one of 'replace', 'keep' or 'allow'",
                          "'ignore'"]),
    "unknown job type": (
        lambda jt: jt.schedule_job(_config(type="nothere")),
        UnknownJobTypeError,
        ["unknown job type 'nothere'", "known job types:", "note", "other",
         "remove_old_worker_jobs"]),
    "job type that is not a module name": (
        lambda jt: jt.schedule_job(_config(type="../etc/passwd")),
        InvalidJobError, ["job type must be a module name", "'../etc/passwd'"]),
    "data not JSON-serialisable": (
        lambda jt: jt.schedule_job(_config(data={"when": datetime(2030, 1, 1)})),
        InvalidDataError, ["data is not JSON-serialisable", "datetime",
                           "use dicts, lists, strings, numbers"]),
    "data with NaN": (
        lambda jt: jt.schedule_job(_config(data={"x": math.nan})),
        InvalidDataError, ["data is not JSON-serialisable"]),
    "data with a NUL character": (
        lambda jt: jt.schedule_job(_config(data={"s": "a\x00b"})),
        InvalidDataError, ["data contains the NUL character", "cannot store"]),
    "data with an unpaired surrogate": (
        lambda jt: jt.schedule_job(_config(data={"names": ["ok", "bad\udcff"]})),
        InvalidDataError, ["data contains an unpaired surrogate", "cannot store"]),
    "data that is not a dict": (
        lambda jt: jt.schedule_job(_config(data=[1, 2])),  # type: ignore[arg-type]
        InvalidDataError, ["data must be a dict (a JSON object)", "got list"]),
    "user_id that is a string": (
        lambda jt: jt.schedule_job(_config(user_id="7")),  # type: ignore[arg-type]
        InvalidJobError, ["user_id must be an integer", "got str"]),
    "user_id that is a bool": (
        lambda jt: jt.schedule_job(_config(user_id=True)),
        InvalidJobError, ["user_id must be an integer", "got bool"]),
    "user_id beyond 64 bits": (
        lambda jt: jt.schedule_job(_config(user_id=2**70)),
        InvalidJobError, ["user_id must fit in 64 bits"]),
    "naive due": (
        lambda jt: jt.schedule_job(_config(due=datetime(2030, 1, 1, 9, 0))),
        InvalidJobError, ["naive datetime", "an aware datetime is needed",
                          "datetime.now(UTC)"]),
    "due that is not a datetime": (
        lambda jt: jt.schedule_job(_config(due="tomorrow")),  # type: ignore[arg-type]
        InvalidJobError, ["due must be a datetime", "got str"]),
    "negative retry delay": (
        lambda jt: jt.schedule_job(_config(auto_reschedule_on_failure=True,
                                           auto_reschedule_on_failure_delay=-5)),
        InvalidJobError, ["auto_reschedule_on_failure_delay must not be negative"]),
    "negative remove delay": (
        lambda jt: jt.schedule_job(_config(remove_delay=timedelta(seconds=-1))),
        InvalidJobError, ["remove_delay must not be negative"]),
    "delay of the wrong type": (
        lambda jt: jt.schedule_job(_config(remove_delay="1h")),  # type: ignore[arg-type]
        InvalidJobError, ["remove_delay must be a timedelta or a number of seconds"]),
    "invalid cron field": (
        lambda jt: jt.schedule_cron_job(_config(), "0 0 99 * * *"),
        InvalidCronError, ["field 3 (hour)", "'99'", "6 fields", "5 fields"]),
    "invalid five-field cron": (
        lambda jt: jt.schedule_cron_job(_config(), "* * * 13 *"),
        InvalidCronError, ["field 4 (month)", "'13'"]),
    "cron with four fields": (
        lambda jt: jt.schedule_cron_job(_config(), "* * * *"),
        InvalidCronError, ["it has 4 fields", "6 fields", "5 fields"]),
    "cron that never occurs": (
        lambda jt: jt.schedule_cron_job(_config(), "0 0 30 2 *"),
        InvalidCronError, ["never occurs"]),
    "invalid time zone": (
        lambda jt: jt.schedule_cron_job(_config(), "0 * * * *", "Mars/Olympus_Mons"),
        InvalidCronError, ["unknown time zone 'Mars/Olympus_Mons'", "IANA name"]),
    "not a WorkerJobConfig": (
        lambda jt: jt.schedule_job({"type": "note"}),  # type: ignore[arg-type]
        InvalidJobError, ["expected a WorkerJobConfig, got dict"]),
    "bulk with one bad item": (
        lambda jt: jt.schedule_jobs([_config(user_id=u) for u in range(5)]
                                    + [_config(type="nothere")]
                                    + [_config(user_id=9)]),
        UnknownJobTypeError, ["unknown job type 'nothere'"]),
    "data nested 100,000 levels deep": (
        lambda jt: jt.schedule_job(_config(data=_nested(100_000))),
        InvalidDataError, ["data " + DEEP[0], DEEP[1]]),
    "data nested one level past the limit": (
        lambda jt: jt.schedule_job(_config(data={"x": [_nested(100)]})),
        InvalidDataError, ["data " + DEEP[0], DEEP[1]]),
    "data that contains itself": (
        lambda jt: jt.schedule_job(_config(data=_itself())),
        InvalidDataError, ["data "]),
    "cron job with data nested too deep": (
        lambda jt: jt.schedule_cron_job(_config(data=_nested(5_000)), "0 * * * *"),
        InvalidDataError, DEEP),
    "bulk with one item nested too deep": (
        lambda jt: jt.schedule_jobs([_config(user_id=1), _config(user_id=2,
                                                                 data=_nested(100_000))]),
        InvalidDataError, DEEP),
    "bulk with one bad data item": (
        lambda jt: jt.schedule_jobs([_config(user_id=1), _config(user_id=2, data={"x": {1}})]),
        InvalidDataError, ["not JSON-serialisable", "set"]),
}


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    return write_jobs(tmp_path / "jobs", {"note": RECORD_JOB, "other": RECORD_JOB})


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_with_a_clear_error_and_changes_nothing(
        db_url: str, jobs: Path, case: str) -> None:
    call, error, words = CASES[case]
    with open_table(db_url, jobs) as jt:
        jt.schedule_job(_config(user_id=1, data={"before": True}))
        jt.schedule_cron_job(_config(user_id=2), "0 0 * * *")
        before = row_count(db_url)
        pending_before = [j.id for j in jt.list_jobs(status="pending")]
        with pytest.raises(error) as caught:
            call(jt)
        message = str(caught.value)
        for word in words:
            assert word in message, message
        assert row_count(db_url) == before == 2
        assert [j.id for j in jt.list_jobs(status="pending")] == pending_before


def test_a_good_bulk_after_a_refused_one_writes_every_row(db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        with pytest.raises(UnknownJobTypeError):
            jt.schedule_jobs([_config(user_id=1), _config(type="nothere")])
        rows = jt.schedule_jobs([_config(user_id=u) for u in range(3)])
        assert len(rows) == 3 and row_count(db_url) == 3


@pytest.mark.parametrize(("args", "words"), [
    (["nothere"], ["unknown job type 'nothere'", "note"]),
    (["note", "--data", "{not json"], ["--data is not valid JSON"]),
    (["note", "--data", "[1, 2]"], ["data must be a dict"]),
    (["note", "--due", "tomorrow"], ["cannot read due time 'tomorrow'", "+10s"]),
    (["note", "--due", "2030-01-01T09:00:00"], ["naive datetime", "aware"]),
    (["note", "--cron", "0 0 99 * * *"], ["field 3 (hour)"]),
    (["note", "--cron", "0 * * * *", "--timezone", "Nowhere/City"], ["unknown time zone"]),
    (["note", "--retry-delay", "soon"], ["cannot read --retry-delay 'soon'"]),
    (["note", "--data", "1" + "[" * 5000 + "]" * 5000], ["--data is not valid JSON"]),
    (["note", "--data", '{"a":' * 5000 + "{}" + "}" * 5000], ["--data " + DEEP[0], DEEP[1]]),
    (["note", "--data", '{"a":' * 100 + "[]" + "}" * 100], ["--data " + DEEP[0]]),
    (["note", "--data", "[" * 50_000 + "]" * 50_000], ["--data " + DEEP[0]]),
    (["note", "--data-file", "{tmp}/deep.json"], ["--data-file", DEEP[0], DEEP[1]]),
    (["note", "--data-file", "{tmp}/missing.json"],
     ["cannot read --data-file", "missing.json", "No such file"]),
    (["note", "--data-file", "{tmp}/bad.json"], ["--data-file", "bad.json",
                                                 "is not valid JSON", "JSON object"]),
    (["note", "--data-file", "{tmp}/list.json"], ["--data-file", "must be a dict", "list"]),
    (["note", "--data-file", "{tmp}/latin1.json"], ["--data-file", "is not UTF-8"]),
    (["note", "--data-file", "{tmp}"], ["cannot read --data-file"]),
    (["note", "--data", "{}", "--data-file", "{tmp}/good.json"],
     ["--data or --data-file, not both"]),
], ids=["unknown-type", "bad-json", "list-data", "bad-due", "naive-due", "bad-cron",
        "bad-zone", "bad-delay", "garbage-after-deep-json", "deep-5000", "deep-101",
        "deep-50000-lists", "deep-file", "missing-file", "bad-json-file", "list-file",
        "latin1-file", "directory-file", "data-and-file"])
def test_the_schedule_command_refuses_bad_input_in_one_line(
        db_url: str, jobs: Path, tmp_path: Path, args: list[str], words: list[str]) -> None:
    (tmp_path / "deep.json").write_text('{"a":' * 5000 + "{}" + "}" * 5000)
    (tmp_path / "bad.json").write_text('{"to": "a@b.c",}')
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "latin1.json").write_bytes('{"name": "Zoë"}'.encode("latin-1"))
    (tmp_path / "good.json").write_text('{"to": "a@b.c"}')
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    with open_table(db_url, jobs) as jt:
        jt.schedule_job(_config(user_id=1))
    before = row_count(db_url)
    result = run_cli("schedule", *args, "--database", db_url, "--jobs", str(jobs))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    assert row_count(db_url) == before


def test_due_in_the_past_is_accepted_and_runs_at_once(db_url: str, jobs: Path) -> None:
    # Not an error: a due time already passed means "as soon as possible".
    with open_table(db_url, jobs) as jt:
        row = jt.schedule_job(_config(due=now() - timedelta(days=1)))
        assert jt.store.claim("w", 5)[0].id == row.id


def test_schedule_reads_big_data_from_a_file_or_standard_input(
        db_url: str, jobs: Path, tmp_path: Path) -> None:
    big = {"rows": [{"n": i, "name": f"row {i}"} for i in range(20_000)],
           "deep": _nested(99)}  # 100 levels with the outer object: the limit
    path = tmp_path / "data.json"
    path.write_text(json.dumps(big))
    common = ["--database", db_url, "--jobs", str(jobs), "--json"]
    from_file = run_cli("schedule", "note", "--user-id", "1", "--data-file", str(path), *common)
    assert from_file.returncode == 0, from_file.stderr
    piped = subprocess.run(
        [sys.executable, "-m", "jobtable", "schedule", "note", "--user-id", "2",
         "--data", "-", *common], input=json.dumps({"to": "ä@b.c"}), capture_output=True,
        text=True, env=subprocess_env(), timeout=120, check=False)
    assert piped.returncode == 0, piped.stderr
    piped_file = subprocess.run(
        [sys.executable, "-m", "jobtable", "schedule", "note", "--user-id", "3",
         "--data-file", "-", *common], input="{}", capture_output=True,
        text=True, env=subprocess_env(), timeout=120, check=False)
    assert piped_file.returncode == 0, piped_file.stderr
    bad_stdin = subprocess.run(
        [sys.executable, "-m", "jobtable", "schedule", "note", "--user-id", "4",
         "--data", "-", *common], input='{"a":' * 5000 + "{}" + "}" * 5000,
        capture_output=True, text=True, env=subprocess_env(), timeout=120, check=False)
    assert bad_stdin.returncode == 1 and "Traceback" not in bad_stdin.stderr
    [line] = bad_stdin.stderr.strip().splitlines()
    assert line.startswith("error: --data - " + DEEP[0]) and DEEP[1] in line
    with open_table(db_url, jobs) as jt:
        rows = {j.user_id: j for j in jt.list_jobs()}
        assert set(rows) == {1, 2, 3}
        assert rows[1].data == big and rows[1].id == json.loads(from_file.stdout)["id"]
        assert rows[2].data == {"to": "ä@b.c"}
        assert rows[3].data == {}


DEEP_RESULT_JOBS = {
    "deep_result": """
def run(params):
    value = {}
    for _ in range(params.job.data["levels"] - 1):
        value = {"a": value}
    return value
""",
    "fine": "def run(params):\n    return {'ok': params.job.id}\n",
}


@pytest.mark.parametrize("levels", [101, 100_000])
def test_a_result_nested_too_deep_fails_only_its_job(db_url: str, tmp_path: Path,
                                                     levels: int) -> None:
    folder = write_jobs(tmp_path / "deep_jobs", DEEP_RESULT_JOBS, recorder=False)
    with open_table(db_url, folder) as jt:
        deep = jt.schedule_job(WorkerJobConfig(type="deep_result", user_id=1,
                                               data={"levels": levels}))
        edge = jt.schedule_job(WorkerJobConfig(type="deep_result", user_id=2,
                                               data={"levels": 100}))
        fine = [jt.schedule_job(WorkerJobConfig(type="fine", user_id=u)) for u in range(3, 6)]
        worker = run_burst(jt)
        failed = jt.get_job(deep.id)
        assert failed is not None and failed.status is JobStatus.FAILED
        assert failed.error is not None
        assert "dict result " + DEEP[0] in failed.error and DEEP[1] in failed.error
        at_limit = jt.get_job(edge.id)
        assert at_limit is not None and at_limit.status is JobStatus.SUCCEEDED
        assert at_limit.result == _nested(100)
        for job in fine:
            row = jt.get_job(job.id)
            assert row is not None and row.status is JobStatus.SUCCEEDED
        assert worker.stats.failed == 1

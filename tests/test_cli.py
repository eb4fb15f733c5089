"""The command line as a user runs it, on both databases: schedule (relative and ISO
due, cron, data, options), worker --burst, migrate and --list, every --help, and one
readable line when the database cannot be reached."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from helpers import RECORD_JOB, Side, now, open_table, row_count, run_cli, write_jobs

from jobtable import JobStatus
from jobtable.cli import main


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    return write_jobs(tmp_path / "jobs", {"note": RECORD_JOB, "other": RECORD_JOB})


def _schedule(db_url: str, jobs: Path, *args: str) -> dict[str, object]:
    result = run_cli("schedule", *args, "--database", db_url, "--jobs", str(jobs), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _due(row: dict[str, object]) -> datetime:
    return datetime.fromisoformat(str(row["due"]))


def test_schedule_with_a_relative_due_time_and_data(db_url: str, jobs: Path) -> None:
    before = now()
    row = _schedule(db_url, jobs, "note", "--user-id", "7", "--data", '{"to": "a@b.c"}',
                    "--due", "+10s")
    after = now()
    assert row["type"] == "note" and row["user_id"] == 7
    assert row["data"] == {"to": "a@b.c"}
    assert row["status"] == "pending"
    assert before + timedelta(seconds=10) <= _due(row) <= after + timedelta(seconds=10)


def test_schedule_prints_one_readable_line(db_url: str, jobs: Path) -> None:
    result = run_cli("schedule", "note", "--user-id", "3", "--database", db_url,
                     "--jobs", str(jobs))
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"scheduled job \d+ \(note, user 3\) due \S+\n", result.stdout)


def test_schedule_with_an_iso_due_time_and_policies(db_url: str, jobs: Path) -> None:
    row = _schedule(db_url, jobs, "note", "--due", "2030-01-01T09:00:00+02:00", "--retry",
                    "--retry-delay", "30s", "--remove-delay", "2h")
    assert _due(row) == datetime(2030, 1, 1, 7, 0, tzinfo=UTC)
    assert row["auto_reschedule_on_failure"] is True
    assert row["auto_reschedule_on_failure_delay"] == 30_000
    assert row["remove_delay"] == 7_200_000


def test_schedule_with_cron_and_time_zone(db_url: str, jobs: Path) -> None:
    row = _schedule(db_url, jobs, "note", "--cron", "0 30 9 * * *", "--timezone", "Asia/Tokyo")
    assert row["cron_schedule"] == "0 30 9 * * *"
    assert row["cron_timezone"] == "Asia/Tokyo"
    due = _due(row).astimezone(UTC)
    assert (due.hour, due.minute, due.second) == (0, 30, 0)
    five = _schedule(db_url, jobs, "other", "--cron", "*/15 * * * *")
    assert _due(five).minute % 15 == 0 and _due(five).second == 0


def test_schedule_cancels_the_matching_pending_job(db_url: str, jobs: Path) -> None:
    first = _schedule(db_url, jobs, "note", "--user-id", "1")
    _schedule(db_url, jobs, "note", "--user-id", "1")
    with open_table(db_url, jobs) as jt:
        row = jt.get_job(int(str(first["id"])))
        assert row is not None and row.status is JobStatus.CANCELLED


def test_worker_burst_runs_the_due_jobs_and_exits_zero(
        db_url: str, jobs: Path, tmp_path: Path) -> None:
    side = Side(db_url, tmp_path)
    ids = [int(str(_schedule(db_url, jobs, "note", "--user-id", str(u))["id"]))
           for u in range(3)]
    later = _schedule(db_url, jobs, "other", "--due", "+1h")
    result = run_cli("worker", "--burst", "--database", db_url, "--jobs", str(jobs),
                     env={"JT_TEST_SIDE": side.url})
    assert result.returncode == 0, result.stderr
    assert sorted(side.job_ids()) == ids
    with open_table(db_url, jobs) as jt:
        row = jt.get_job(int(str(later["id"])))
        assert row is not None and row.status is JobStatus.PENDING
    assert "Traceback" not in result.stderr


def test_worker_burst_refuses_several_processes(db_url: str, jobs: Path) -> None:
    result = run_cli("worker", "--burst", "--processes", "2", "--database", db_url,
                     "--jobs", str(jobs))
    assert result.returncode == 2
    assert "--burst runs in one process" in result.stderr


@pytest.mark.parametrize(("option", "words"), [
    (["--concurrency", "0"], ["setting concurrency", "at least 1"]),
    (["--processes", "some"], ["processes must be a positive integer or 'cpus'"]),
    (["--stale-limit", "soon"], ["setting stale_limit", "e.g. 30s"]),
    (["--stale-limit", "0s"], ["setting stale_limit", "greater than 0"]),
    (["--log-level", "LOUD"], ["unknown log level 'LOUD'"]),
], ids=["concurrency", "processes", "stale-limit", "zero-stale-limit", "log-level"])
def test_bad_worker_options_are_refused_in_one_line(
        jobs: Path, tmp_path: Path, option: list[str], words: list[str]) -> None:
    database = f"sqlite:///{tmp_path / 'untouched.db'}"
    result = run_cli("worker", "--burst", "--database", database, "--jobs", str(jobs), *option)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    for word in words:
        assert word in message, result.stderr
    assert not (tmp_path / "untouched.db").exists()


def test_migrate_applies_each_migration_once_and_lists_them(db_url: str) -> None:
    listed = run_cli("migrate", "--list", "--database", db_url)
    assert listed.returncode == 0, listed.stderr
    pending = listed.stdout.splitlines()
    assert pending and all(line.startswith("pending  ") for line in pending)
    assert any("0001_worker_jobs" in line for line in pending)

    first = run_cli("migrate", "--database", db_url)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("applied 0001_worker_jobs")
    assert row_count(db_url) == 0

    again = run_cli("migrate", "--database", db_url)
    assert again.returncode == 0 and again.stdout.strip() == "database is up to date"
    listed = run_cli("migrate", "--list", "--database", db_url)
    lines = listed.stdout.splitlines()
    assert [line.replace("pending", "applied", 1) for line in pending] == lines


def _command_paths(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    paths = [prefix]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            paths.extend(_command_paths(command, (*prefix, name)))
        else:
            paths.append((*prefix, name))
    return paths


def test_help_of_the_program_and_of_every_command_works() -> None:
    paths = _command_paths(main)
    assert {("worker",), ("schedule",), ("migrate",)} <= set(paths)
    runner = CliRunner()
    for path in paths:
        result = runner.invoke(main, [*path, "--help"], prog_name="jobtable")
        assert result.exit_code == 0, (path, result.output)
        assert result.output.startswith("Usage: jobtable"), (path, result.output)
    real = run_cli("--help")
    assert real.returncode == 0 and "worker" in real.stdout and "schedule" in real.stdout
    worker_help = run_cli("worker", "--help")
    for option in ("--concurrency", "--processes", "--burst", "--stale-limit",
                   "--grace-period", "--rescue-after"):
        assert option in worker_help.stdout


@pytest.mark.parametrize("command", [
    ["worker", "--burst"], ["schedule", "note"], ["migrate"], ["migrate", "--list"]],
    ids=["worker", "schedule", "migrate", "migrate-list"])
@pytest.mark.parametrize("url", [
    "postgresql://postgres@127.0.0.1:1/nowhere", "sqlite:////no/such/folder/jobs.db"],
    ids=["postgres", "sqlite"])
def test_an_unreachable_database_gives_one_readable_line_and_a_failing_exit(
        jobs: Path, command: list[str], url: str) -> None:
    result = run_cli(*command, "--database", url, "--jobs", str(jobs))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith("error: cannot ")
    assert ("127.0.0.1" in errors[0]) if "postgresql" in url else ("/no/such/folder" in errors[0])

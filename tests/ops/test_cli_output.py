"""What the command line tells people: what scheduling cancelled, ``jobtable jobs`` in a
narrow terminal, durations in ``jobs show``."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from jobtable import JobTable, WorkerJobConfig
from jobtable.cli import main
from jobtable.display import setting_duration

from ._support import Cli, finish, schedule, table, write_jobs

HEARTBEAT = 'CRON = "0 0 * * * *"\n\ndef run(params):\n    return {"beat": True}\n'


def _run(cli: Cli, *args: str, columns: int) -> str:
    result = CliRunner().invoke(main, [*args, "--database", cli.url, "--jobs", str(cli.jobs)],
                                catch_exceptions=False, env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_schedule_says_which_pending_jobs_it_cancelled(cli: Cli, jt: JobTable) -> None:
    first = cli("schedule", "send_report", "--user-id", "4").stdout
    assert "cancelled" not in first
    first_id = int(re.search(r"scheduled job (\d+)", first).group(1))  # type: ignore[union-attr]
    second = cli("schedule", "send_report", "--user-id", "4").stdout
    assert f"cancelled 1 pending job(s) of this type and user: #{first_id}" in second
    # Another user's job is not touched, and says so by saying nothing.
    assert "cancelled" not in cli("schedule", "send_report", "--user-id", "5").stdout

    # A pending cron row and a pending one-off of one pair: a cron job replaces both.
    chain = jt.schedule_cron_job(WorkerJobConfig(type="sync_prices", user_id=9),
                                 "0 0 * * * *")
    one_off = schedule(jt, "sync_prices", user_id=9)
    assert jt.require_job(chain.id).status.value == "pending"
    out = cli("schedule", "sync_prices", "--user-id", "9", "--cron", "0 30 * * * *").stdout
    assert (f"cancelled 2 pending job(s) of this type and user: #{chain.id}, #{one_off.id}"
            in out)

    # With --json, standard output stays one JSON object; the note goes to standard error.
    result = cli("schedule", "send_report", "--user-id", "5", "--json")
    row = json.loads(result.stdout)
    assert row["type"] == "send_report"
    assert "cancelled 1 pending job(s)" in result.stderr


def test_the_store_reports_only_what_this_call_cancelled(jt: JobTable) -> None:
    done = schedule(jt, "send_report", user_id=1)
    finish(jt.store)
    pending = schedule(jt, "send_report", user_id=1)
    report = jt.schedule_job_report(WorkerJobConfig(type="send_report", user_id=1))
    assert report.cancelled == [pending.id]
    assert done.id not in report.cancelled
    assert report.job.status.value == "pending"
    again = jt.schedule_job_report(WorkerJobConfig(type="send_report", user_id=2))
    assert again.cancelled == []


def test_a_declared_cron_chain_survives_scheduling_its_type_by_hand(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs")
    (jobs / "heartbeat.py").write_text(HEARTBEAT)
    with table(db_url, jobs) as jt:
        chain = jt.ensure_cron_job(WorkerJobConfig(type="heartbeat", user_id=0),
                                   "0 0 * * * *", declared=True)
        cli = Cli(db_url, jobs)
        out = cli("schedule", "heartbeat").stdout
        assert "cancelled" not in out
        assert jt.require_job(chain.id).status.value == "pending"
        assert [c.current.id for c in jt.cron_chains()] == [chain.id]
        # A second one-off replaces the first one-off only.
        first = int(re.search(r"scheduled job (\d+)", out).group(1))  # type: ignore[union-attr]
        out = cli("schedule", "heartbeat").stdout
        assert f"cancelled 1 pending job(s) of this type and user: #{first}" in out
        assert jt.require_job(chain.id).status.value == "pending"


def test_jobs_in_an_80_column_terminal_keeps_ids_and_whole_statuses(
        cli: Cli, jt: JobTable) -> None:
    rows = jt.schedule_jobs([WorkerJobConfig(type="send_report", user_id=100_000 + i,
                                             data={"to": f"someone{i}@example.com"})
                             for i in range(6)])
    finish(jt.store, lambda j: j.id % 2 == 0)
    cancelled = schedule(jt, "sync_prices", user_id=3)
    jt.cancel_job(cancelled.id)
    retried = jt.retry_job(next(r.id for r in rows if r.id % 2))
    out = _run(cli, "jobs", columns=80)
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= 80, out
    for job in [*rows, cancelled, retried]:
        row = jt.require_job(job.id)
        line = next((ln for ln in lines if re.match(rf"\s*{job.id}\s", ln)), None)
        assert line is not None, f"no line starts with id {job.id}:\n{out}"
        assert re.search(rf"\b{row.status.value}\b", line), line
    assert "succee…" not in out and "cancel… " not in out
    # Wide terminals keep every column.
    wide = _run(cli, "jobs", columns=200)
    header = wide.splitlines()[0].split()
    assert header[:4] == ["id", "type", "user", "status"] and "outcome" in header
    assert "tries" in header and "from" in header


def test_jobs_show_prints_durations_for_people_and_json_keeps_milliseconds(
        cli: Cli, jt: JobTable) -> None:
    job = jt.schedule_job(WorkerJobConfig(
        type="boom", user_id=1, auto_reschedule_on_failure=True,
        auto_reschedule_on_failure_delay=timedelta(seconds=30),
        remove_delay=timedelta(hours=1)))
    shown = cli("jobs", "show", str(job.id)).stdout
    assert re.search(r"remove_delay\s+1h\b", shown), shown
    assert re.search(r"auto_reschedule_on_failure_delay\s+30s\b", shown), shown
    assert "3600000" not in shown
    raw = json.loads(cli("jobs", "show", str(job.id), "--json").stdout)["job"]
    assert raw["remove_delay"] == 3_600_000
    assert raw["auto_reschedule_on_failure_delay"] == 30_000


@pytest.mark.parametrize(("ms", "text"), [
    (3_600_000, "1h"), (30_000, "30s"), (5_400_000, "90m"), (86_400_000 * 7, "7d"),
    (1500, "1500ms"), (0, "0s"), (60_000, "1m")])
def test_setting_durations(ms: int, text: str) -> None:
    assert setting_duration(ms) == text

"""What the worker logs: a failed job at ERROR with its exception (so error trackers such
as Sentry's logging integration see it), and the JSON log format."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    open_table,
    run_burst,
    run_cli,
    subprocess_env,
    wait_until,
    worker_command,
    write_jobs,
)

from jobtable import WorkerJobConfig
from jobtable.errors import ConfigError
from jobtable.logs import JsonFormatter, job_context
from jobtable.settings import load_settings

JOBS = {
    "explode": """
        def run(params):
            params.log.info("about to explode for user %s", params.job.user_id)
            raise KeyError("the-missing-key")
    """,
    "fine": """
        def run(params):
            params.log.info("all fine")
            return {"ok": True}
    """,
}


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    return write_jobs(tmp_path / "jobs", JOBS, recorder=False)


def test_a_failed_job_is_logged_at_error_with_its_exception(
        db_url: str, jobs: Path, caplog: pytest.LogCaptureFixture) -> None:
    with open_table(db_url, jobs) as jt:
        job = jt.schedule_job(WorkerJobConfig(type="explode", user_id=3))
        with caplog.at_level(logging.INFO, logger="jobtable"):
            run_burst(jt)
    failures = [r for r in caplog.records if r.getMessage().startswith("failed:")]
    assert len(failures) == 1, caplog.text
    record = failures[0]
    assert record.levelno == logging.ERROR
    assert record.name == f"job[{job.id}-explode]"
    assert record.exc_info is not None and record.exc_info[0] is KeyError
    assert "the-missing-key" in record.getMessage()


def _json_lines(text: str) -> list[dict[str, Any]]:
    lines = [line for line in text.splitlines() if line.strip()]
    entries = []
    for line in lines:
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {line!r}\n---\n{text}") from None
    return entries


@pytest.mark.parametrize("how", ["flag", "env", "pyproject"])
def test_the_worker_logs_one_json_object_per_line(
        db_url: str, jobs: Path, tmp_path: Path, how: str) -> None:
    with open_table(db_url, jobs) as jt:
        jt.migrate()
        bad = jt.schedule_job(WorkerJobConfig(type="explode", user_id=5))
        good = jt.schedule_job(WorkerJobConfig(type="fine", user_id=5))
    args = worker_command(db_url, jobs, "--burst")
    env = subprocess_env()
    cwd = tmp_path / "project"
    cwd.mkdir()
    if how == "flag":
        args.append("--log-format=json")
    elif how == "env":
        env["JOBTABLE_LOG_FORMAT"] = "JSON"
    else:
        (cwd / "pyproject.toml").write_text('[tool.jobtable]\nlog_format = "json"\n')
    done = subprocess.run(args, env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    entries = _json_lines(done.stderr)
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
    started = [e for e in entries if e["message"].startswith("worker ")]
    assert started and "job_id" not in started[0] and started[0]["logger"] == "jobtable.worker"
    failed = [e for e in entries if e["message"].startswith("failed:")]
    assert len(failed) == 1, entries
    assert failed[0]["level"] == "ERROR"
    assert (failed[0]["job_id"], failed[0]["job_type"]) == (bad.id, "explode")
    assert "Traceback (most recent call last)" in failed[0]["exception"]
    assert "KeyError: 'the-missing-key'" in failed[0]["exception"]
    # A job's own records, from its thread, carry the job too.
    own = [e for e in entries if e["message"] in ("all fine", "about to explode for user 5")]
    assert {(e["job_id"], e["job_type"]) for e in own} == {(good.id, "fine"),
                                                          (bad.id, "explode")}


def test_an_unknown_log_format_is_refused_by_name(db_url: str, jobs: Path) -> None:
    done = run_cli("worker", "--burst", "--database", db_url, "--jobs", str(jobs),
                   "--log-format", "xml")
    assert done.returncode == 1
    assert "unknown log format 'xml'; use text or json" in done.stderr
    with pytest.raises(ConfigError, match="log_format: unknown log format 'yaml'"):
        load_settings(log_format="yaml")


def test_the_json_formatter_outside_and_inside_a_job() -> None:
    formatter = JsonFormatter()
    record = logging.LogRecord("app", logging.WARNING, __file__, 1, "plain %s", ("text",),
                               None)
    entry = json.loads(formatter.format(record))
    assert entry["message"] == "plain text" and entry["level"] == "WARNING"
    assert "job_id" not in entry and "exception" not in entry
    with job_context(7, "send_report"):
        try:
            raise ValueError("bad")
        except ValueError as exc:
            record = logging.LogRecord("app", logging.ERROR, __file__, 1, "oops", (),
                                       (type(exc), exc, exc.__traceback__))
            entry = json.loads(formatter.format(record))
    assert (entry["job_id"], entry["job_type"]) == (7, "send_report")
    assert entry["exception"].endswith("ValueError: bad")
    assert entry["time"].endswith("+00:00")


def test_the_dashboard_logs_json_too(db_url: str, jobs: Path, tmp_path: Path) -> None:
    import signal
    import sys

    import httpx

    with open_table(db_url, jobs) as jt:
        jt.migrate()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobtable", "dashboard", "--port", str(port), "--database",
         db_url, "--jobs", str(jobs), "--log-level", "INFO", "--log-format", "json"],
        env=subprocess_env(), cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True)
    try:
        def answers() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(answers, 30, "the dashboard to answer")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    lines = [line for line in err.splitlines()
             if line.strip() and not line.startswith("jobtable dashboard for ")]
    entries = _json_lines("\n".join(lines))
    assert any(e["logger"].startswith("uvicorn") and "running on" in e["message"].lower()
               for e in entries), err

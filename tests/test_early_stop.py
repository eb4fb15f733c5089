"""Stopping a worker process at any moment of its start-up is a clean stop (exit 0),
and an isolated child whose worker dies while sending it the job exits quietly
(issue 13, item 8)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import subprocess_env, worker_command, write_jobs

from jobtable._early import is_worker_command


@pytest.mark.parametrize("delay", [0.1, 0.15, 0.3, 0.6])
def test_sigterm_while_a_worker_starts_exits_0(sqlite_url: str, tmp_path: Path,
                                               delay: float) -> None:
    jobs = write_jobs(tmp_path / "jobs", {}, recorder=False)
    proc = subprocess.Popen(worker_command(sqlite_url, jobs), env=subprocess_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    time.sleep(delay)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out.decode(errors="replace")
    assert b"Traceback" not in out


def test_only_the_worker_command_defers_stop_signals() -> None:
    assert is_worker_command(["/usr/bin/python3", "-m", "jobtable", "worker", "--burst"])
    assert is_worker_command(["/venv/bin/jobtable", "worker"])
    assert not is_worker_command(["/venv/bin/jobtable", "schedule", "x"])
    assert not is_worker_command(["python", "-m", "jobtable", "jobs", "list"])
    assert not is_worker_command(["python", "-c", "import jobtable"])


@pytest.mark.parametrize("stdin", [b"", b'{"settings": {"data'])
def test_an_isolated_child_whose_worker_died_mid_spec_exits_quietly(stdin: bytes) -> None:
    done = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m",
                           "jobtable.worker._child"], input=stdin, capture_output=True,
                          timeout=60, env=subprocess_env())
    assert done.returncode == 70
    assert done.stderr == b"" and done.stdout == b""

"""``jobtable dev`` end to end: a real child process on a scaffolded project, real file
changes, real jobs, a real SIGINT."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until

from ._support import clean_env, cli

pytestmark = pytest.mark.slow

STARTED = re.compile(r"worker \S+-(\d+)-[0-9a-f]{8} started")


class DevProcess:
    """``python -m jobtable dev`` in a project, its output in a file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.log = root.parent / "dev.log"
        self.out = self.log.open("wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "jobtable", "dev"], cwd=root,
                                     env=clean_env(JOBTABLE_LOG_LEVEL="INFO"),
                                     stdout=self.out, stderr=subprocess.STDOUT)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self) -> str:
        return "dev output so far:\n" + "\n".join(self.text().splitlines()[-40:])

    def worker_pids(self) -> list[int]:
        return [int(pid) for pid in STARTED.findall(self.text())]

    def wait_for_line(self, pattern: str, after: int = 0, timeout: float = 30) -> str:
        """The first output line after character ``after`` matching ``pattern``."""
        regex = re.compile(pattern)

        def found() -> str | None:
            for line in self.text()[after:].splitlines():
                if regex.search(line):
                    return line
            return None

        return wait_until(found, timeout, f"a line matching {pattern!r}", describe=self.tail)

    def wait_for_new_worker(self, known: int, timeout: float = 30) -> int:
        pids = wait_until(lambda: self.worker_pids()[known:] or None, timeout,
                          "a new worker to start", describe=self.tail)
        return pids[0]

    def mark(self) -> int:
        return len(self.text())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.out.close()


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped has stopped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def job_row(root: Path, job_id: int) -> tuple[Any, Any] | None:
    """(success, result) of a finished job, or None while it is not finished."""
    with sqlite3.connect(root / "jobtable.db", timeout=30) as conn:
        row = conn.execute("SELECT success, result FROM worker_jobs WHERE id = ? AND "
                           "finished IS NOT NULL", (job_id,)).fetchone()
    return None if row is None else (row[0], json.loads(row[1]))


def schedule(root: Path, job_type: str) -> int:
    done = cli("schedule", job_type, "--json", cwd=root, check=True)
    return int(json.loads(done.stdout)["id"])


def test_dev_mode_regenerates_restarts_reports_errors_recovers_and_stops_cleanly(
        tmp_path: Path) -> None:
    cli("init", "proj", cwd=tmp_path, check=True)
    root = tmp_path / "proj"
    bindings = root / "jobs" / "_generated.py"
    dev = DevProcess(root)
    try:
        dev.wait_for_line(r"jobtable dev: bindings unchanged: jobs/_generated.py; watching "
                          r"jobs/, proj/; Ctrl-C stops")
        first_worker = dev.wait_for_new_worker(0)

        # A new job file: bindings regenerated, the worker restarted, the new type runs.
        mark = dev.mark()
        (root / "jobs" / "ping.py").write_text(
            "def run(params):\n    return {'pong': 1}\n")
        dev.wait_for_line(r"jobtable dev: jobs/ping\.py added; bindings regenerated; "
                          r"restarting the worker$", mark)
        assert '"ping",' in bindings.read_text()
        dev.wait_for_new_worker(1)
        job = schedule(root, "ping")
        assert wait_until(lambda: job_row(root, job), 30, "the ping job to finish",
                          describe=dev.tail) == (1, {"pong": 1})

        # A syntax error: reported with file and line; dev mode stays up.
        mark = dev.mark()
        (root / "jobs" / "ping.py").write_text("def run(params)\n    return {'pong': 2}\n")
        dev.wait_for_line(r"^jobtable dev: error: jobs/ping\.py:1: SyntaxError: "
                          r"expected ':'$", mark)
        dev.wait_for_line(r"jobtable dev: jobs/ping\.py modified; bindings not updated "
                          r"until the error is fixed; restarting the worker$", mark)
        dev.wait_for_new_worker(2)
        assert dev.proc.poll() is None

        # The fix: recovered without a hand restart, and the new code is what runs.
        mark = dev.mark()
        (root / "jobs" / "ping.py").write_text("def run(params):\n    return {'pong': 2}\n")
        dev.wait_for_line(r"jobtable dev: jobs/ping\.py modified; job modules load again; "
                          r"bindings unchanged; restarting the worker$", mark)
        dev.wait_for_new_worker(3)
        job = schedule(root, "ping")
        assert wait_until(lambda: job_row(root, job), 30, "the fixed ping job to finish",
                          describe=dev.tail) == (1, {"pong": 2})

        # Ctrl-C: everything stops, exit 0, no process left behind.
        below = descendants(dev.proc.pid)
        workers = dev.worker_pids()
        assert len(workers) == 4 and workers[0] == first_worker
        assert workers[-1] in below
        os.kill(dev.proc.pid, signal.SIGINT)
        assert dev.proc.wait(timeout=60) == 0, dev.tail()
        assert dev.text().rstrip().endswith("jobtable dev: stopped")
        left = [pid for pid in below | set(workers) if alive(pid)]
        assert left == [], f"processes left behind: {left}\n{dev.tail()}"
    finally:
        dev.close()

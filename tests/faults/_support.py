"""Support for the fault-injection suite: worker processes, a run log, waiting."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from helpers import wait_until as wait_until  # the one wait, re-exported for the fault tests

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

# A job that records each run (job id, attempt, pid, start, end) in a run log kept
# outside the queue: a side table in PostgreSQL, or a separate SQLite file.
PROBE_JOB = '''
import os, sqlite3, threading, time
URL = os.environ["FAULT_RUNLOG"]
_local = threading.local()

def _conn():
    conn = getattr(_local, "conn", None)
    if conn is None:
        if URL.startswith("postgresql"):
            import psycopg
            conn = psycopg.connect(URL, autocommit=True)
        else:
            conn = sqlite3.connect(URL, timeout=60, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
        _local.conn = conn
    return conn

def _exec(sql, args):
    if not URL.startswith("postgresql"):
        sql = sql.replace("%s", "?")
    _conn().execute(sql, args)

def run(params):
    job = params.job
    started = time.time()
    _exec("INSERT INTO runs (job_id, attempt, pid, ppid, started) VALUES (%s, %s, %s, %s, %s)",
          (job.id, job.attempts, os.getpid(), os.getppid(), started))
    time.sleep(params.job.data.get("sleep", 0.05))
    _exec("UPDATE runs SET ended = %s WHERE job_id = %s AND attempt = %s AND pid = %s",
          (time.time(), job.id, job.attempts, os.getpid()))
    return {"pid": os.getpid()}
'''


def write_jobs(folder: Path, extra: dict[str, str] | None = None) -> Path:
    """A jobs folder holding the probe job (and any ``extra`` modules)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "probe.py").write_text(PROBE_JOB)
    for name, source in (extra or {}).items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return folder


@dataclass
class RunLog:
    """The side table that probe jobs write to."""

    url: str

    def create(self) -> None:
        self._execute("CREATE TABLE runs (job_id bigint, attempt integer, pid integer, "
                      "ppid integer, started double precision, ended double precision)")

    def _execute(self, sql: str) -> None:
        if self.url.startswith("postgresql"):
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(sql.encode())
        else:
            with sqlite3.connect(self.url) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(sql)

    def rows(self) -> list[tuple[int, int, int, float, float | None, int]]:
        """(job_id, attempt, pid, started, ended, ppid) of every run, oldest first.

        ``ppid`` tells the worker of a run made in an isolated child process."""
        sql = "SELECT job_id, attempt, pid, started, ended, ppid FROM runs ORDER BY started"
        if self.url.startswith("postgresql"):
            with psycopg.connect(self.url) as conn:
                return [tuple(r) for r in conn.execute(sql).fetchall()]  # type: ignore[misc]
        conn = sqlite3.connect(self.url, timeout=60)
        try:
            return [tuple(r) for r in conn.execute(sql).fetchall()]
        finally:
            conn.close()

    def open_runs(self) -> list[tuple[int, int]]:
        """(job_id, pid) of runs started and not yet ended."""
        return [(r[0], r[2]) for r in self.rows() if r[4] is None]


def query(db_url: str, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run a read query against the queue database (either dialect)."""
    if db_url.startswith("postgresql"):
        with psycopg.connect(db_url) as conn:
            return [tuple(r) for r in conn.execute(sql.encode(), args).fetchall()]
    path = db_url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path, timeout=60)
    try:
        return [tuple(r) for r in conn.execute(sql.replace("%s", "?"), args).fetchall()]
    finally:
        conn.close()


def start_worker(db_url: str, jobs: Path, runlog: str, *args: str,
                 env: dict[str, str] | None = None, log: Path | None = None
                 ) -> subprocess.Popen[bytes]:
    """``python -m jobtable worker`` as a real subprocess."""
    full_env = dict(os.environ, FAULT_RUNLOG=runlog, JOBTABLE_LOG_LEVEL="INFO",
                    **(env or {}))
    command = [sys.executable, "-m", "jobtable", "worker", "--database", db_url,
               "--jobs", str(jobs), *args]
    if log is None:
        return subprocess.Popen(command, env=full_env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.STDOUT)
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(command, env=full_env, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM a process and wait for it; SIGKILL if it does not stop."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"process {proc.pid} ignored SIGTERM for {timeout}s") from None


def assert_clean_stop(proc: subprocess.Popen[bytes], log: Path) -> None:
    """SIGTERM ``proc``; it must exit 0, else fail showing the end of its log."""
    code = stop(proc)
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:])
        raise AssertionError(f"worker exited with {code}; end of its log:\n{tail}")


def kill_all(supervisor: subprocess.Popen[bytes], db_url: str) -> None:
    """After a test, leave nothing running: the supervisor and every worker process that
    registered a heartbeat (children run in sessions of their own)."""
    if supervisor.poll() is None:
        supervisor.kill()
    for (pid,) in query(db_url, "SELECT pid FROM worker_processes"):
        if pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return False


def report(name: str, figures: dict[str, Any]) -> None:
    """Record a test's measured figures under test-artifacts/ and print them."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "faults.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    data[name] = figures
    path.write_text(json.dumps(data, indent=2, sort_keys=True))
    print(f"\n{name}: {json.dumps(figures, sort_keys=True)}")

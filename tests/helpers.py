"""Shared helpers of the core behaviour suite: job folders, a side table that jobs
write to, direct SQL on either dialect, in-process and subprocess workers, waiting.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from jobtable import JobTable, Worker
from jobtable.settings import load_settings
from jobtable.timeutil import format_sqlite

SIDE_ENV = "JT_TEST_SIDE"
"""Where jobs written with ``RECORDER`` record events: a PostgreSQL URL or an SQLite path."""

# Prepended to job modules that record what they do. Events go to a table ``side``
# kept beside the queue: in the same PostgreSQL database, or in an SQLite file of its
# own. Worker subprocesses keep one connection per thread (JT_TEST_SIDE_KEEP=1);
# in-process runs open and close one per event so that nothing is left open.
RECORDER = '''
import json as _json
import os as _os
import sqlite3 as _sqlite3
import threading as _threading
import time as _time

_local = _threading.local()


def _side_conn():
    url = _os.environ["JT_TEST_SIDE"]
    keep = _os.environ.get("JT_TEST_SIDE_KEEP") == "1"
    conn = getattr(_local, "conn", None) if keep else None
    if conn is None:
        if url.startswith("postgresql"):
            import psycopg
            conn = psycopg.connect(url, autocommit=True)
        else:
            conn = _sqlite3.connect(url, timeout=60, isolation_level=None)
        if keep:
            _local.conn = conn
    return conn, keep


def record(job_id, event="run", info=None):
    """Append one event of a job to the side table."""
    url = _os.environ["JT_TEST_SIDE"]
    sql = "INSERT INTO side (job_id, event, pid, ppid, at, info) VALUES (%s, %s, %s, %s, %s, %s)"
    if not url.startswith("postgresql"):
        sql = sql.replace("%s", "?")
    args = (job_id, event, _os.getpid(), _os.getppid(), _time.time(), _json.dumps(info))
    conn, keep = _side_conn()
    try:
        conn.execute(sql, args)
    finally:
        if not keep:
            conn.close()


def count(event):
    """How many events of this kind the side table holds."""
    url = _os.environ["JT_TEST_SIDE"]
    sql = "SELECT COUNT(*) FROM side WHERE event = %s"
    if not url.startswith("postgresql"):
        sql = sql.replace("%s", "?")
    conn, keep = _side_conn()
    try:
        return conn.execute(sql, (event,)).fetchone()[0]
    finally:
        if not keep:
            conn.close()
'''


def job_source(body: str, *, recorder: bool = True) -> str:
    """A job module's source: ``body`` (dedented), after the recorder when asked."""
    text = textwrap.dedent(body).strip() + "\n"
    return (RECORDER + "\n\n" + text) if recorder else text


def write_jobs(folder: Path, modules: dict[str, str], *, recorder: bool = True) -> Path:
    """Write job modules (name -> body) into ``folder``; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, body in modules.items():
        (folder / f"{name}.py").write_text(job_source(body, recorder=recorder))
    return folder


# Common job bodies.
RECORD_JOB = """
def run(params):
    record(params.job.id, "run", params.job.data)
    return {"ok": params.job.id}
"""

SLEEP_JOB = """
import asyncio

async def run(params):
    record(params.job.id, "start", {"attempt": params.job.attempts})
    await asyncio.sleep(params.job.data.get("sleep", 0))
    record(params.job.id, "end", {"attempt": params.job.attempts})
    return {"slept": params.job.data.get("sleep", 0)}
"""

FAIL_JOB = """
def run(params):
    record(params.job.id, "run")
    raise ValueError("boom " + str(params.job.data.get("n", "")))
"""


# -- the side table ---------------------------------------------------------------


class Side:
    """The side table that recording jobs write to, outside the queue."""

    def __init__(self, db_url: str, tmp_path: Path) -> None:
        if db_url.startswith("postgresql"):
            self.url = db_url
        else:
            self.url = str(tmp_path / "side.db")
        self._exec("CREATE TABLE side (job_id bigint, event text, pid integer, ppid integer, "
                   "at double precision, info text)")
        if not self.is_pg:
            conn = sqlite3.connect(self.url)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
            finally:
                conn.close()

    @property
    def is_pg(self) -> bool:
        """True when the side table lives in PostgreSQL."""
        return self.url.startswith("postgresql")

    def _exec(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        if self.is_pg:
            with psycopg.connect(self.url, autocommit=True) as conn:
                cur = conn.execute(sql.encode(), args)
                return [tuple(r) for r in cur.fetchall()] if cur.description else []
        conn = sqlite3.connect(self.url, timeout=60, isolation_level=None)
        try:
            cur = conn.execute(sql.replace("%s", "?"), args)
            return [tuple(r) for r in cur.fetchall()]
        finally:
            conn.close()

    def events(self, event: str | None = None) -> list[tuple[int, str, int, int, float]]:
        """(job_id, event, pid, ppid, at) in the order recorded, optionally of one kind."""
        if event is None:
            rows = self._exec("SELECT job_id, event, pid, ppid, at FROM side ORDER BY at")
        else:
            rows = self._exec("SELECT job_id, event, pid, ppid, at FROM side WHERE event = %s "
                              "ORDER BY at", event)
        return [(int(r[0]), str(r[1]), int(r[2]), int(r[3]), float(r[4])) for r in rows]

    def job_ids(self, event: str = "run") -> list[int]:
        """The job ids of every event of this kind (with repeats)."""
        return [r[0] for r in self.events(event)]

    def count(self, event: str = "run") -> int:
        """How many events of this kind."""
        return int(self._exec("SELECT COUNT(*) FROM side WHERE event = %s", event)[0][0])

    @contextmanager
    def env(self) -> Iterator[None]:
        """Point in-process jobs at this side table for the duration."""
        old = os.environ.get(SIDE_ENV)
        os.environ[SIDE_ENV] = self.url
        try:
            yield
        finally:
            if old is None:
                os.environ.pop(SIDE_ENV, None)
            else:
                os.environ[SIDE_ENV] = old


# -- direct SQL on the queue --------------------------------------------------------


def sql(db_url: str, query: str, *args: Any) -> list[tuple[Any, ...]]:
    """Run one statement on the queue database (``%s`` placeholders, either dialect)."""
    if db_url.startswith("postgresql"):
        with psycopg.connect(db_url, autocommit=True) as conn:
            cur = conn.execute(query.encode(), args)
            return [tuple(r) for r in cur.fetchall()] if cur.description else []
    conn = sqlite3.connect(db_url.removeprefix("sqlite:///"), timeout=60, isolation_level=None)
    try:
        values = tuple(format_sqlite(a) if isinstance(a, datetime) else a for a in args)
        cur = conn.execute(query.replace("%s", "?"), values)
        return [tuple(r) for r in cur.fetchall()]
    finally:
        conn.close()


def set_times(db_url: str, job_id: int, **columns: datetime | None) -> None:
    """Set timestamp columns of one row directly, e.g. ``started=now - 2h``."""
    for column in columns:
        assert column in ("due", "started", "finished", "remove_at", "created_at")
    assignments = ", ".join(f"{c} = %s" for c in columns)
    sql(db_url, f"UPDATE worker_jobs SET {assignments} WHERE id = %s",
        *columns.values(), job_id)


def row_count(db_url: str) -> int:
    """Rows of ``worker_jobs`` (0 when the table does not exist yet)."""
    try:
        return int(sql(db_url, "SELECT COUNT(*) FROM worker_jobs")[0][0])
    except (sqlite3.OperationalError, psycopg.errors.UndefinedTable):
        return 0


def now() -> datetime:
    """The current time, aware, in UTC."""
    return datetime.now(UTC)


# -- tables and workers -------------------------------------------------------------


def open_table(db_url: str, jobs: Path | str | None, **settings: Any) -> JobTable:
    """A ``JobTable`` with fast test settings (short poll, short grace) unless overridden."""
    values: dict[str, Any] = {"poll_interval": 0.05, "grace_period": 2}
    values.update(settings)
    resolved = load_settings(database=db_url, jobs=None if jobs is None else str(jobs),
                             **values)
    return JobTable(settings=resolved)


def run_burst(jt: JobTable, **worker_args: Any) -> Worker:
    """Run an in-process worker until nothing is due; return it (its ``stats``)."""
    worker = Worker(jt, burst=True, **worker_args)
    asyncio.run(worker.run())
    return worker


class BackgroundWorker:
    """An in-process worker running in a thread of its own until ``stop()``."""

    def __init__(self, jt: JobTable, **worker_args: Any) -> None:
        self.jt = jt
        self.worker = Worker(jt, **worker_args)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._started = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        self._started.wait(10)

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._started.set()
            await self.worker.run()

        try:
            asyncio.run(main())
        except BaseException as exc:  # surfaced by stop()
            self.error = exc

    def stop(self, timeout: float = 30) -> None:
        """Ask the worker to stop gracefully and wait for it."""
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self.worker.request_stop)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "in-process worker did not stop"
        if self.error is not None:
            raise self.error

    def __enter__(self) -> BackgroundWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def worker_command(db_url: str, jobs: Path, *args: str) -> list[str]:
    """``python -m jobtable worker --database ... --jobs ...`` plus ``args``."""
    return [sys.executable, "-m", "jobtable", "worker", "--database", db_url,
            "--jobs", str(jobs), *args]


def subprocess_env(side: Side | None = None, **extra: str) -> dict[str, str]:
    """The environment of a worker subprocess: no stray JOBTABLE_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBTABLE_")}
    env.update({"JOBTABLE_POLL_INTERVAL": "0.05", "JOBTABLE_LOG_LEVEL": "INFO"})
    if side is not None:
        env.update({SIDE_ENV: side.url, "JT_TEST_SIDE_KEEP": "1"})
    env.update(extra)
    return env


def start_worker(db_url: str, jobs: Path, *args: str, side: Side | None = None,
                 log: Path | None = None, env: dict[str, str] | None = None
                 ) -> subprocess.Popen[bytes]:
    """Start a real worker process; its output goes to ``log`` (or is dropped)."""
    full_env = subprocess_env(side, **(env or {}))
    command = worker_command(db_url, jobs, *args)
    if log is None:
        return subprocess.Popen(command, env=full_env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    with open(log, "ab") as out:
        return subprocess.Popen(command, env=full_env, stdout=out, stderr=subprocess.STDOUT)


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
                 timeout: float = 60) -> int:
    """Send ``sig`` and wait for the exit code; SIGKILL (and fail) if it hangs."""
    if proc.poll() is None:
        proc.send_signal(sig)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"process {proc.pid} did not stop within {timeout}s") from None


def run_cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m jobtable ARGS`` to completion and capture its output."""
    return subprocess.run([sys.executable, "-m", "jobtable", *args], capture_output=True,
                          text=True, env=subprocess_env(**(env or {})), cwd=cwd,
                          timeout=timeout, check=False)


def wait_until(predicate: Callable[[], Any], timeout: float = 30, what: str = "condition",
               interval: float = 0.05, describe: Callable[[], str] | None = None) -> Any:
    """Poll ``predicate`` until it returns something truthy (returned); fail after
    ``timeout`` seconds naming ``what`` (and what ``describe()`` tells, e.g. a log tail).

    The one way every suite waits for something another thread or process does."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            detail = f"\n{describe()}" if describe else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(interval)


def pid_alive(pid: int) -> bool:
    """True while a process with this pid exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


def log_tail(log: Path, lines: int = 40) -> str:
    """The end of a worker's log, for assertion messages."""
    if not log.exists():
        return "(no log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def run_together(count: int, work: Callable[[int], None],
                 timeout: float = 120) -> list[BaseException]:
    """Run ``work(0)`` … ``work(count - 1)`` in threads released at once by a barrier;
    return what they raised."""
    barrier = threading.Barrier(count)
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(30)
            work(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    return errors

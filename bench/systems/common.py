"""Shared plumbing for the system adapters: where the databases are, the latency probe.

Every adapter module (``jobtable_sys``, ``procrastinate_sys``, ``pgqueuer_sys``,
``huey_sys``) exposes the same module-level functions, described by :class:`Adapter`.
The adapters are imported both by ``bench/measure.py`` (the producer side) and by the
peers' own worker CLIs (the consumer side), so configuration comes from environment
variables that ``measure.py`` sets for the worker processes it starts.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Protocol

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO_ROOT = BENCH_DIR.parent

#: Server URL without database name; each system gets its own database on it.
PG_BASE = os.environ.get("BENCH_PG", "postgresql://postgres@127.0.0.1:5432")
#: Prefix of the bench databases' names (``bench_`` unless ``BENCH_DB_PREFIX`` says
#: otherwise), so that two runs on one server need not share databases.
DB_PREFIX = os.environ.get("BENCH_DB_PREFIX", "bench_")
#: Folder for the SQLite files (huey's and jobtable's).
SQLITE_DIR = Path(os.environ.get("BENCH_SQLITE_DIR", "/tmp/jobtable-bench"))


def pg_url(system: str) -> str:
    """URL of the database reserved for one system (``bench_<system>``)."""
    return f"{PG_BASE}/{DB_PREFIX}{system}"


def sqlite_path(system: str) -> Path:
    SQLITE_DIR.mkdir(parents=True, exist_ok=True)
    return SQLITE_DIR / f"{DB_PREFIX}{system}.db"


def ensure_pg_database(name: str) -> None:
    """Create database ``name`` on the bench server if it is missing."""
    import psycopg

    with psycopg.connect(f"{PG_BASE}/postgres", autocommit=True) as conn:
        row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if row is None:
            conn.execute(f'CREATE DATABASE "{name}"')


def pg_scalar(url: str, sql: str) -> int:
    """Run one query returning a single integer (used for the completion polls)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(sql).fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def pg_exec(url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for sql in statements:
            conn.execute(sql)


# --- latency probe ---------------------------------------------------------------------
# A job enqueued for the latency test carries {"lat_port": PORT, "lat_key": KEY}. When it
# starts, it sends "KEY TIME" to 127.0.0.1:PORT over UDP, TIME being time.time() at the
# first line of the job body. measure.py listens on that port. Drain jobs carry no port
# and do nothing at all.

_probe_socket: socket.socket | None = None


def report_start(params: dict[str, Any]) -> None:
    """First statement of every bench job: tell the latency listener we started."""
    port = params.get("lat_port")
    if port is None:
        return
    started = time.time()
    global _probe_socket
    if _probe_socket is None:
        _probe_socket = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    _probe_socket.sendto(f"{params['lat_key']} {started!r}".encode(), ("127.0.0.1", int(port)))


def latency_params(port: int, key: int) -> dict[str, Any]:
    return {"lat_port": port, "lat_key": key}


def dumps(params: dict[str, Any]) -> bytes:
    return json.dumps(params, separators=(",", ":")).encode()


# --- the adapter contract ---------------------------------------------------------------


class Producer(Protocol):
    """An open client that enqueues single jobs (used by the latency test)."""

    def enqueue(self, params: dict[str, Any], user_id: int) -> None: ...

    def close(self) -> None: ...


class Adapter(Protocol):
    """What every ``systems/*_sys.py`` module provides at module level."""

    NAME: str
    BACKENDS: tuple[str, ...]
    #: "default" and "best" worker settings, e.g. {"concurrency": 1}.
    SETTINGS: dict[str, dict[str, int]]

    def setup(self, backend: str) -> None:
        """Create the database/schema if needed (idempotent)."""

    def clear(self, backend: str) -> None:
        """Remove every job of earlier runs."""

    def enqueue_one(self, backend: str, n: int) -> float:
        """Enqueue n no-op jobs one call at a time; return the seconds the loop took."""

    def enqueue_bulk(self, backend: str, n: int, chunk: int) -> float:
        """Enqueue n no-op jobs in bulk calls of ``chunk``; return the loop's seconds."""

    def prefill(self, backend: str, n: int, chunk: int) -> None:
        """Enqueue n no-op jobs as fast as possible before a drain (not timed)."""

    def pending_count(self, backend: str) -> int:
        """Jobs not finished yet (queued or running)."""

    def worker_commands(
        self, backend: str, setting: dict[str, int], processes: int
    ) -> list[list[str]]:
        """argv of each OS process to start so that ``processes`` workers run."""

    def worker_env(self, setting: dict[str, int]) -> dict[str, str]:
        """Extra environment variables for the worker processes."""

    def open_producer(self, backend: str) -> Producer:
        """An open client for enqueuing single jobs."""

"""pgqueuer adapter: QueueManager over asyncpg, a no-op entrypoint, its own ``pgq run`` CLI.

Worker: ``python -m systems.pgqueuer_sys --batch-size N``, which runs ``QueueManager.run``
(pgqueuer 1.6's own ``pgq run`` CLI crashes on start with typer 0.29: its ``--log-level``
parser hands a str where an enum is expected, so the bench calls the same API directly).
pgqueuer dequeues ``batch_size`` jobs per query (default 10) and runs them as asyncio
tasks; finished jobs are moved from table ``pgqueuer`` to ``pgqueuer_log`` by a buffer
that flushes every ``batch_size`` completions (or on a timer), so a job counts as done
here once its row has left ``pgqueuer``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from pgqueuer import Job, Queries, QueueManager

from systems.common import dumps, pg_exec, pg_scalar, pg_url, report_start

NAME = "pgqueuer"
BACKENDS = ("postgres",)
SETTINGS: dict[str, dict[str, int]] = {
    "default": {"batch_size": 10},
    # From `bench.py --sweep` (5,000 jobs): 50-200 all ~4-7k jobs/s; 100 was highest for
    # two processes and near the top for one.
    "best": {"batch_size": 100},
}

_URL = pg_url(NAME)


@asynccontextmanager
async def create_qm() -> AsyncIterator[QueueManager]:
    """Factory for ``pgq run``: one asyncpg connection, one no-op entrypoint."""
    conn = await asyncpg.connect(_URL)
    qm = QueueManager(Queries.from_asyncpg_connection(conn))

    @qm.entrypoint("noop")
    async def noop(job: Job) -> None:
        report_start(json.loads(job.payload) if job.payload else {})

    try:
        yield qm
    finally:
        await conn.close()


def setup(backend: str) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(_URL)
        try:
            queries = Queries.from_asyncpg_connection(conn)
            if not await queries.schema_is_installed():
                await queries.install()
        finally:
            await conn.close()

    asyncio.run(go())


def clear(backend: str) -> None:
    pg_exec(
        _URL,
        "TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics RESTART IDENTITY",
        "ANALYZE pgqueuer",
    )


def enqueue_one(backend: str, n: int) -> float:
    async def go() -> float:
        conn = await asyncpg.connect(_URL)
        try:
            queries = Queries.from_asyncpg_connection(conn)
            start = time.perf_counter()
            for _ in range(n):
                await queries.enqueue("noop", None)
            return time.perf_counter() - start
        finally:
            await conn.close()

    return asyncio.run(go())


def enqueue_bulk(backend: str, n: int, chunk: int) -> float:
    async def go() -> float:
        conn = await asyncpg.connect(_URL)
        try:
            queries = Queries.from_asyncpg_connection(conn)
            start = time.perf_counter()
            for lo in range(0, n, chunk):
                size = min(chunk, n - lo)
                await queries.enqueue(["noop"] * size, [None] * size, [0] * size)
            return time.perf_counter() - start
        finally:
            await conn.close()

    return asyncio.run(go())


def prefill(backend: str, n: int, chunk: int) -> None:
    """Fill the queue before a drain (not timed): the bulk enqueue."""
    enqueue_bulk(backend, n, chunk)


def pending_count(backend: str) -> int:
    return pg_scalar(_URL, "SELECT count(*) FROM pgqueuer WHERE status IN ('queued', 'picked')")


def worker_commands(backend: str, setting: dict[str, int], processes: int) -> list[list[str]]:
    cmd = [sys.executable, "-m", "systems.pgqueuer_sys", f"--batch-size={setting['batch_size']}"]
    return [cmd for _ in range(processes)]


def worker_env(setting: dict[str, int]) -> dict[str, str]:
    return {}


class _Producer:
    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._conn: asyncpg.Connection[Any] = self._loop.run_until_complete(asyncpg.connect(_URL))
        self._queries = Queries.from_asyncpg_connection(self._conn)

    def enqueue(self, params: dict[str, Any], user_id: int) -> None:
        self._loop.run_until_complete(self._queries.enqueue("noop", dumps(params)))

    def close(self) -> None:
        self._loop.run_until_complete(self._conn.close())
        self._loop.close()


def open_producer(backend: str) -> _Producer:
    return _Producer()


async def _work(batch_size: int) -> None:
    async with create_qm() as qm:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, qm.shutdown.set)
        await qm.run(batch_size=batch_size)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="pgqueuer worker for the bench")
    parser.add_argument("--batch-size", type=int, default=10)
    asyncio.run(_work(parser.parse_args().batch_size))

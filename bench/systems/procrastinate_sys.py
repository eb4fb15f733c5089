"""procrastinate adapter: App + PsycopgConnector, a no-op async task, its own worker CLI.

Worker: ``procrastinate --app=systems.procrastinate_sys.app worker --concurrency N``.
procrastinate fetches one job per query (``procrastinate_fetch_job_v2``); its throughput
knob is ``concurrency`` (default 1). Its connection pool (psycopg_pool, default max 10)
is sized to the concurrency for the best setting via ``BENCH_PROCRASTINATE_POOL``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

from procrastinate import App, PsycopgConnector

from systems.common import pg_exec, pg_scalar, pg_url, report_start

NAME = "procrastinate"
BACKENDS = ("postgres",)
SETTINGS: dict[str, dict[str, int]] = {
    "default": {"concurrency": 1},
    # From `bench.py --sweep` (5,000 jobs, noisy 2-core box): 1-32 all within ~130-220
    # jobs/s; 2 was highest for 1 and 2 processes.
    "best": {"concurrency": 2},
}

_URL = pg_url(NAME)
_pool_max = int(os.environ.get("BENCH_PROCRASTINATE_POOL", "0"))
_pool_kwargs: dict[str, Any] = {"max_size": _pool_max} if _pool_max else {}

app = App(connector=PsycopgConnector(conninfo=_URL, **_pool_kwargs))


@app.task(name="noop")
async def noop(**params: Any) -> None:
    report_start(params)


def setup(backend: str) -> None:
    exists = pg_scalar(_URL, "SELECT count(*) FROM pg_class WHERE relname = 'procrastinate_jobs'")
    if not exists:

        async def apply() -> None:
            async with app.open_async():
                await app.schema_manager.apply_schema_async()

        asyncio.run(apply())


def clear(backend: str) -> None:
    pg_exec(
        _URL,
        "TRUNCATE procrastinate_jobs, procrastinate_events, procrastinate_periodic_defers"
        " RESTART IDENTITY CASCADE",
        "ANALYZE procrastinate_jobs",
    )


def enqueue_one(backend: str, n: int) -> float:
    async def go() -> float:
        async with app.open_async():
            start = time.perf_counter()
            for _ in range(n):
                await noop.defer_async()
            return time.perf_counter() - start

    return asyncio.run(go())


def enqueue_bulk(backend: str, n: int, chunk: int) -> float:
    async def go() -> float:
        async with app.open_async():
            start = time.perf_counter()
            for lo in range(0, n, chunk):
                await noop.batch_defer_async(*({} for _ in range(min(chunk, n - lo))))
            return time.perf_counter() - start

    return asyncio.run(go())


def prefill(backend: str, n: int, chunk: int) -> None:
    """Fill the queue before a drain (not timed): the bulk enqueue."""
    enqueue_bulk(backend, n, chunk)


def pending_count(backend: str) -> int:
    return pg_scalar(
        _URL, "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
    )


def worker_commands(backend: str, setting: dict[str, int], processes: int) -> list[list[str]]:
    exe = str(Path(sys.executable).parent / "procrastinate")
    cmd = [
        exe,
        "--app=systems.procrastinate_sys.app",
        "worker",
        f"--concurrency={setting['concurrency']}",
    ]
    return [cmd for _ in range(processes)]


def worker_env(setting: dict[str, int]) -> dict[str, str]:
    """Extra environment for the worker processes (pool sized to the concurrency)."""
    if setting["concurrency"] > 8:
        return {"BENCH_PROCRASTINATE_POOL": str(setting["concurrency"] + 2)}
    return {}


class _Producer:
    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ctx = app.open_async()
        self._loop.run_until_complete(self._ctx.__aenter__())

    def enqueue(self, params: dict[str, Any], user_id: int) -> None:
        self._loop.run_until_complete(noop.defer_async(**params))

    def close(self) -> None:
        self._loop.run_until_complete(self._ctx.__aexit__(None, None, None))
        self._loop.close()


def open_producer(backend: str) -> _Producer:
    return _Producer()

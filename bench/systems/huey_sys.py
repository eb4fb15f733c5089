"""huey adapter: ``SqliteHuey`` storage, a no-op task, its own ``huey_consumer`` CLI.

Worker: ``huey_consumer systems.huey_sys.huey -w T -k thread``; two worker processes are
two consumers on the same SQLite file. huey deletes a task row when a worker *dequeues*
it (there is no "finished" mark; a no-op's result ``None`` is not stored), so "pending"
here is the queue length: the drain clock stops when the last task has been taken, which
is at most T no-op calls (microseconds) before it has run.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from huey import SqliteHuey

from systems.common import report_start, sqlite_path

NAME = "huey"
BACKENDS = ("sqlite",)
SETTINGS: dict[str, dict[str, int]] = {
    "default": {"workers": 1},
    # From `bench.py --sweep` (5,000 jobs, 1-8 threads tried): 2 was highest; 4 and 8 no
    # better.
    "best": {"workers": 2},
}

_PATH = sqlite_path(NAME)
huey = SqliteHuey(name="bench", filename=str(_PATH))


@huey.task(name="noop")  # type: ignore[untyped-decorator]
def noop(params: dict[str, Any] | None = None) -> None:
    report_start(params or {})


def setup(backend: str) -> None:
    huey.storage.initialize_schema()


def clear(backend: str) -> None:
    huey.storage.flush_all()


def enqueue_one(backend: str, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        noop()
    return time.perf_counter() - start


def enqueue_bulk(backend: str, n: int, chunk: int) -> float:
    """huey has no bulk enqueue: this is the one-by-one loop (reported as such)."""
    return enqueue_one(backend, n)


def prefill(backend: str, n: int, chunk: int) -> None:
    """Fill the queue for a drain fast: huey's own task serialisation, one transaction.

    huey has no bulk enqueue, and its one-by-one enqueue commits (and syncs) every task;
    this writes exactly what ``SqliteStorage.enqueue`` writes, just in one transaction.
    """
    rows = [(huey.storage.name, huey.serialize_task(noop.s()), 0) for _ in range(n)]
    with huey.storage.db(commit=True) as curs:
        curs.executemany("insert into task (queue, data, priority) values (?, ?, ?)", rows)


def pending_count(backend: str) -> int:
    return int(huey.storage.queue_size())


def worker_commands(backend: str, setting: dict[str, int], processes: int) -> list[list[str]]:
    exe = str(Path(sys.executable).parent / "huey_consumer")
    cmd = [exe, "systems.huey_sys.huey", "-k", "thread", "-w", str(setting["workers"]), "-q"]
    return [cmd for _ in range(processes)]


def worker_env(setting: dict[str, int]) -> dict[str, str]:
    return {}


class _Producer:
    def enqueue(self, params: dict[str, Any], user_id: int) -> None:
        noop(params)

    def close(self) -> None:
        huey.storage.close()


def open_producer(backend: str) -> _Producer:
    return _Producer()

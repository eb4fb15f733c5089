"""The small parts a worker's per-job path is built from: the lazily built cancel flag,
the shared deadlines, and a job built from its column values."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime

import pytest

from jobtable.model import JOB_COLUMNS, TIME_COLUMNS, CancelFlag, WorkerJob, job_from_values
from jobtable.worker.execution import Deadlines


def test_cancel_flag_behaves_as_an_event_across_threads() -> None:
    flag = CancelFlag()
    assert isinstance(flag, threading.Event)
    assert not flag.is_set() and not flag.wait(0.01)
    seen: list[bool] = []
    waiter = threading.Thread(target=lambda: seen.append(flag.wait(30)))
    waiter.start()
    flag.set()
    waiter.join(30)
    assert seen == [True] and flag.is_set() and flag.wait(0)
    flag.clear()
    assert not flag.is_set()


def test_job_from_values_equals_the_dataclass() -> None:
    now = datetime.now(UTC)
    job = WorkerJob(id=7, type="noop", user_id=3, data={"a": 1}, due=now, started=None,
                    finished=None, remove_at=None, success=None, result=None,
                    cron_schedule=None, cron_timezone=None, auto_reschedule_on_failure=False,
                    auto_reschedule_on_failure_delay=0, remove_delay=0,
                    rescheduled_from_job=None, cancelled=False, attempts=1, claimed_by="w",
                    declared=False, created_at=now, updated_at=now, crashes=2)
    copy = job_from_values([getattr(job, name) for name in JOB_COLUMNS])
    assert copy == job and copy.inserted and repr(copy) == repr(job)
    assert {JOB_COLUMNS[i] for i in TIME_COLUMNS} == {
        "due", "started", "finished", "remove_at", "created_at", "updated_at",
        "cancel_requested"}
    with pytest.raises(TypeError):
        job_from_values([1, 2])


def test_deadlines_cancel_only_what_is_late() -> None:
    async def main() -> tuple[bool, bool, bool]:
        deadlines = Deadlines()

        async def sleeper(seconds: float, limit: float) -> bool:
            task = asyncio.current_task()
            assert task is not None
            deadlines.enter(task, limit)
            try:
                await asyncio.sleep(seconds)
            except asyncio.CancelledError:
                assert deadlines.leave(task)
                task.uncancel()
                return True
            assert not deadlines.leave(task)
            return False

        late, on_time, later = await asyncio.gather(
            sleeper(10, 0.05), sleeper(0.01, 10), sleeper(10, 0.1))
        return late, on_time, later

    assert asyncio.run(main()) == (True, False, True)

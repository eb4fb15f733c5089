"""``jobtable.testing``: run one job inline, drain a table, assert what was scheduled."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from jobtable import InvalidDataError, InvalidJobError, JobTable, UnknownJobTypeError
from jobtable import WorkerJobConfig as Config
from jobtable.testing import (
    assert_not_scheduled,
    assert_scheduled,
    drain,
    drain_async,
    run_job,
    run_job_async,
)

JOBS = {
    "greet": '''
        from typing import TypedDict


        class Data(TypedDict):
            name: str


        async def run(params):
            params.log.info("greeting %s", params.job.data["name"])
            return {"greeted": params.job.data["name"], "app": type(params.app).__name__}
        ''',
    "count": '''
        import threading


        def run(params):
            return {"thread": threading.current_thread().name, "user": params.job.user_id}
        ''',
    "boom": '''
        def run(params):
            raise ConnectionError("mail server down")
        ''',
    "fan_out": '''
        from jobtable import WorkerJobConfig


        async def run(params):
            n = params.job.data["n"]
            await params.jobtable.schedule_jobs_async(
                [WorkerJobConfig(type="count", user_id=u) for u in range(n)])
            return n
        ''',
    "loop_forever": '''
        def run(params):
            raise RuntimeError("always fails")
        ''',
    "not_json": '''
        def run(params):
            return {1, 2}
        ''',
    "broken": '''
        def run(params)
            return 1
        ''',
}


class FakeApp:
    """Stands in for a user's application object."""


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    folder = tmp_path / "jobs"
    folder.mkdir()
    for name, source in JOBS.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return folder


@pytest.fixture
def jt(jobs: Path, db_url: str) -> Iterator[JobTable]:
    with JobTable(db_url, jobs=jobs) as table:
        yield table


# -- run_job -------------------------------------------------------------------------------


def test_run_job_returns_the_result_of_an_async_job_and_writes_nothing(jt: JobTable) -> None:
    assert run_job(jt, "greet", {"name": "Ada"}, app=FakeApp()) == {
        "greeted": "Ada", "app": "FakeApp"}
    assert jt.list_jobs() == []


def test_run_job_runs_a_plain_def_job_in_the_calling_thread(jt: JobTable) -> None:
    assert run_job(jt, "count", user_id=7) == {"thread": "MainThread", "user": 7}


def test_run_job_gives_the_job_table_as_app_when_no_factory_is_configured(
        jt: JobTable) -> None:
    assert run_job(jt, "greet", {"name": "Bo"})["app"] == "JobTable"


def test_run_job_raises_the_jobs_exception(jt: JobTable) -> None:
    with pytest.raises(ConnectionError, match="mail server down"):
        run_job(jt, "boom")


def test_run_job_checks_data_against_data(jt: JobTable) -> None:
    with pytest.raises(InvalidDataError, match="missing key 'name'"):
        run_job(jt, "greet", {"nom": "Ada"})


def test_run_job_rejects_a_result_the_worker_would_reject(jt: JobTable) -> None:
    with pytest.raises(InvalidDataError, match="set is not JSON-serialisable"):
        run_job(jt, "not_json")


def test_run_job_names_unknown_and_broken_job_types(jt: JobTable) -> None:
    with pytest.raises(UnknownJobTypeError, match="unknown job type 'gret'"):
        run_job(jt, "gret")
    with pytest.raises(InvalidJobError, match=r"broken.py:2: SyntaxError: expected ':'"):
        run_job(jt, "broken")


def test_run_job_async_awaits_async_jobs_and_threads_plain_ones(jt: JobTable) -> None:
    async def scenario() -> tuple[object, object]:
        return (await run_job_async(jt, "greet", {"name": "Cy"}, app=FakeApp()),
                await run_job_async(jt, "count"))

    greeted, counted = asyncio.run(scenario())
    assert greeted == {"greeted": "Cy", "app": "FakeApp"}
    assert isinstance(counted, dict) and counted["thread"] != "MainThread"


def test_run_job_inside_an_event_loop_points_at_the_async_twin(jt: JobTable) -> None:
    async def scenario() -> None:
        run_job(jt, "count")

    with pytest.raises(RuntimeError, match=r"use 'await run_job_async\(...\)'"):
        asyncio.run(scenario())


# -- drain ---------------------------------------------------------------------------------


def test_drain_runs_every_due_job_and_what_they_schedule(jt: JobTable) -> None:
    jt.schedule_job(Config(type="greet", user_id=1, data={"name": "Ada"}))
    jt.schedule_job(Config(type="boom", user_id=1))
    jt.schedule_job(Config(type="fan_out", user_id=1, data={"n": 3}))
    later = jt.schedule_job(Config(type="count", user_id=99,
                                   due=datetime.now(UTC) + timedelta(hours=1)))
    drained = drain(jt, app=FakeApp())
    assert sorted(j.type for j in drained.succeeded) == ["count", "count", "count", "fan_out",
                                                         "greet"]
    assert [(j.type, j.error) for j in drained.failed] == [("boom", "mail server down")]
    assert jt.get_job(later.id).status == "pending"  # type: ignore[union-attr]
    assert drain(jt).jobs == []  # nothing left that is due


def test_drain_async_runs_due_jobs_in_the_running_loop(jt: JobTable) -> None:
    jt.schedule_job(Config(type="greet", user_id=1, data={"name": "Ada"}))
    drained = asyncio.run(drain_async(jt, app=FakeApp()))
    assert [j.result for j in drained.succeeded] == [{"greeted": "Ada", "app": "FakeApp"}]


def test_drain_stops_a_job_that_keeps_rescheduling_itself(jt: JobTable) -> None:
    jt.schedule_job(Config(type="loop_forever", auto_reschedule_on_failure=True))
    with pytest.raises(AssertionError, match="drain ran 5 jobs and stopped"):
        drain(jt, max_jobs=5)


# -- assert_scheduled ----------------------------------------------------------------------


def test_assert_scheduled_finds_a_job_by_type_data_and_user(jt: JobTable) -> None:
    row = jt.schedule_job(Config(type="greet", user_id=7, data={"name": "Ada"}))
    assert assert_scheduled(jt, "greet").id == row.id
    assert assert_scheduled(jt, "greet", {"name": "Ada"}, user_id=7, status="pending") == row


def test_assert_scheduled_explains_what_it_found_instead(jt: JobTable) -> None:
    jt.schedule_job(Config(type="greet", user_id=7, data={"name": "Ada"}))
    with pytest.raises(AssertionError) as caught:
        assert_scheduled(jt, "greet", {"name": "Bo"}, user_id=7)
    message = str(caught.value)
    assert message.startswith("expected a job of type 'greet' for user 7 with data "
                              "{'name': 'Bo'} to have been scheduled; jobs of that type: #")
    assert "user 7 pending data={'name': 'Ada'}" in message
    with pytest.raises(AssertionError, match="jobs of that type: none"):
        assert_scheduled(jt, "count")
    with pytest.raises(AssertionError, match="'gret' is not a job type; known: boom, "):
        assert_scheduled(jt, "gret")


def test_assert_not_scheduled_fails_when_a_matching_job_exists(jt: JobTable) -> None:
    assert_not_scheduled(jt, "greet")
    jt.schedule_job(Config(type="greet", user_id=7, data={"name": "Ada"}))
    assert_not_scheduled(jt, "greet", user_id=8)
    assert_not_scheduled(jt, "greet", status="succeeded")
    with pytest.raises(AssertionError, match="expected no job of type 'greet' for user 7, "
                                             "found: #"):
        assert_not_scheduled(jt, "greet", user_id=7)

"""Data checked against a job module's ``Data`` at schedule time: a clear error and
nothing written."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobtable import InvalidDataError, JobTable, WorkerJobConfig

JOBS = {
    "mail": '''
        from __future__ import annotations

        from typing import Literal, NotRequired, TypedDict


        class Address(TypedDict):
            email: str
            name: NotRequired[str]


        class Data(TypedDict):
            to: Address
            cc: NotRequired[list[Address]]
            priority: Literal["low", "high"]
            scores: NotRequired[dict[str, float]]
            window: NotRequired[tuple[int, int]]
            note: NotRequired[str | None]


        def run(params):
            return None
        ''',
    "resize": '''
        from dataclasses import dataclass, field


        @dataclass
        class Data:
            width: int
            tags: list[str] = field(default_factory=list)
            ratio: float = 1.0


        def run(params):
            return None
        ''',
}


@pytest.fixture
def jt(tmp_path: Path, db_url: str) -> Iterator[JobTable]:
    folder = tmp_path / "jobs"
    folder.mkdir()
    for name, source in JOBS.items():
        (folder / f"{name}.py").write_text(textwrap.dedent(source))
    with JobTable(db_url, jobs=folder) as table:
        yield table


GOOD_MAIL = {"to": {"email": "a@b.c"}, "priority": "low"}


@pytest.mark.parametrize(("data", "problem"), [
    ({"priority": "low"}, "missing key 'to' (required: ['priority', 'to'])"),
    ({**GOOD_MAIL, "bcc": []}, "unexpected key 'bcc' (allowed: "),
    ({**GOOD_MAIL, "priority": "urgent"}, "priority should be one of ['low', 'high'], "
                                          "got 'urgent'"),
    ({**GOOD_MAIL, "to": {"name": "Ada"}}, "missing key 'to.email'"),
    ({**GOOD_MAIL, "to": "a@b.c"}, "to should be an object, got str"),
    ({**GOOD_MAIL, "cc": [{"email": 5}]}, "cc[0].email should be str, got int"),
    ({**GOOD_MAIL, "scores": {"x": "high"}}, "scores['x'] should be a number, got str"),
    ({**GOOD_MAIL, "window": [1]}, "window should have 2 items, got 1"),
    ({**GOOD_MAIL, "window": [1, "2"]}, "window[1] should be an integer, got str"),
    ({**GOOD_MAIL, "note": 3}, "note should be str | None, got int"),
])
def test_scheduling_data_that_does_not_match_data_is_rejected_and_nothing_is_written(
        jt: JobTable, data: dict[str, object], problem: str) -> None:
    with pytest.raises(InvalidDataError) as caught:
        jt.schedule_job(WorkerJobConfig(type="mail", user_id=1, data=data))
    assert str(caught.value).startswith(
        "data for job type 'mail' does not match its Data: ")
    assert problem in str(caught.value)
    assert jt.list_jobs(type="mail") == []


def test_a_batch_with_one_invalid_data_writes_nothing(jt: JobTable) -> None:
    with pytest.raises(InvalidDataError, match="missing key 'width'"):
        jt.schedule_jobs([WorkerJobConfig(type="resize", user_id=1, data={"width": 3}),
                          WorkerJobConfig(type="resize", user_id=2, data={})])
    assert jt.list_jobs(type="resize") == []


def test_data_matching_data_is_scheduled(jt: JobTable) -> None:
    full = {"to": {"email": "a@b.c", "name": "Ada"}, "cc": [{"email": "d@e.f"}],
            "priority": "high", "scores": {"x": 1, "y": 2.5}, "window": [9, 17], "note": None}
    for data in (GOOD_MAIL, full):
        row = jt.schedule_job(WorkerJobConfig(type="mail", user_id=1, data=data))
        assert row.data == data
    row = jt.schedule_job(WorkerJobConfig(type="resize", data={"width": 3, "tags": ["a"]}))
    assert row.data == {"width": 3, "tags": ["a"]}


def test_a_dataclass_data_rejects_a_wrong_field_type(jt: JobTable) -> None:
    with pytest.raises(InvalidDataError, match="ratio should be a number, got bool"):
        jt.schedule_job(WorkerJobConfig(type="resize", data={"width": 3, "ratio": True}))
    with pytest.raises(InvalidDataError, match="width should be an integer, got float"):
        jt.schedule_job(WorkerJobConfig(type="resize", data={"width": 3.5}))


def test_cron_jobs_check_their_data_too(jt: JobTable) -> None:
    with pytest.raises(InvalidDataError, match="missing key 'width'"):
        jt.schedule_cron_job(WorkerJobConfig(type="resize", data={}), "0 * * * *")
    assert jt.list_jobs(type="resize") == []

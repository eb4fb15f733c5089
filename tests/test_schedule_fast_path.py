"""The short way a plain config takes to its row (``JobTable._plain_job``) gives exactly
the row, and the errors, of the full check (``WorkerJobConfig.validated``)."""

from __future__ import annotations

import importlib
import sys
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import RECORD_JOB, open_table, write_jobs

from jobtable import InvalidJobError, JobTable, WorkerJobConfig, rules
from jobtable.model import NewJob

POLICIES = """
REMOVE_DELAY = 90
AUTO_RESCHEDULE_ON_FAILURE = True
AUTO_RESCHEDULE_ON_FAILURE_DELAY = 2.5
QUEUE = "reports"
PRIORITY = -4
ON_CONFLICT = "allow"
MAX_RETRIES = None
BACKOFF = "exponential"
MAX_BACKOFF = 600
"""


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    return write_jobs(tmp_path / "jobs", {"plain": RECORD_JOB, "policies": POLICIES + RECORD_JOB,
                                          "wrong": "PRIORITY = 'high'\n" + RECORD_JOB})


def _full(jt: JobTable, config: WorkerJobConfig, now: datetime) -> NewJob:
    """The row by the full check, as every config took it before."""
    valid = config.validated(jt.registry.defaults(config.type), {
        "max_retries": jt.settings.max_retries, "max_backoff": jt.settings.max_backoff})
    return rules.new_job(valid, now)


CONFIGS = [
    {"type": "plain"},
    {"type": "plain", "user_id": -(2**63), "data": {"a": [1, 2.5, None], "b": {"c": "é"}}},
    {"type": "plain", "user_id": 2**63 - 1, "unique_key": "order-42",
     "due": datetime(2030, 1, 1, 9, tzinfo=timezone(timedelta(hours=2)))},
    {"type": "policies", "user_id": 3, "data": {"k": (1, 2)}},
    {"type": "policies", "user_id": 4, "queue": "default"},       # a policy given: full way
    {"type": "unlisted", "user_id": 5},                           # no module: no defaults
]


@pytest.mark.parametrize("fields", CONFIGS)
def test_the_short_way_gives_the_row_of_the_full_check(
        sqlite_url: str, jobs: Path, fields: dict[str, Any]) -> None:
    with open_table(sqlite_url, jobs) as jt:
        jt.strict = False
        now = datetime.now(UTC)
        config = WorkerJobConfig(**fields)
        got = jt._new_job(config, now=now)
        assert got == _full(jt, config, now)
        assert got.data_json is not None
        assert rules.new_job_like(got, user_id=got.user_id, data=got.data,
                                  data_json=got.data_json, due=got.due,
                                  unique_key=got.unique_key) == got


def test_a_module_default_changed_at_run_time_is_seen(sqlite_url: str, jobs: Path) -> None:
    with open_table(sqlite_url, jobs) as jt:
        assert jt._new_job(WorkerJobConfig(type="policies")).queue == "reports"
        module = sys.modules[jt.registry.get("policies").module.__name__]  # type: ignore[union-attr]
        module.QUEUE = "other"
        try:
            assert jt._new_job(WorkerJobConfig(type="policies")).queue == "other"
        finally:
            importlib.reload(module)


@pytest.mark.parametrize(("fields", "words"), [
    ({"type": "wrong"}, ["PRIORITY of job type 'wrong'", "must be an integer"]),
    ({"type": "wrong", "data": []}, ["data must be a dict"]),
    ({"type": "bad-name"}, ["job type must be a module name"]),
    ({"type": "plain", "user_id": True}, ["user_id must be an integer"]),
    ({"type": "plain", "user_id": 2**63}, ["user_id must fit in 64 bits"]),
    ({"type": "plain", "data": {"a": "\x00"}}, ["the NUL character"]),
    ({"type": "plain", "data": {"a": "\udc80"}}, ["an unpaired surrogate"]),
    ({"type": "plain", "due": datetime(2030, 1, 1)}, ["naive datetime"]),
    ({"type": "plain", "unique_key": ""}, ["unique_key must be None or a non-empty string"]),
    ({"type": "plain", "unique_key": "a\x00"}, ["unique_key holds the NUL character"]),
])
def test_the_short_way_refuses_with_the_full_check_s_words(
        sqlite_url: str, jobs: Path, fields: dict[str, Any], words: list[str]) -> None:
    with open_table(sqlite_url, jobs) as jt:
        config = WorkerJobConfig(**fields)
        with pytest.raises(InvalidJobError) as short:
            jt._new_job(config)
        with pytest.raises(InvalidJobError) as full:
            _full(jt, config, datetime.now(UTC))
        assert str(short.value) == str(full.value)
        for word in words:
            assert word in str(short.value)


def test_plain_data_is_checked_by_its_text_and_odd_data_is_walked() -> None:
    from jobtable.model import MAX_JSON_DEPTH, dump_json

    assert dump_json({"a": "😀", "b": "\\u0000 is text"}, "data") == \
        '{"a":"\\ud83d\\ude00","b":"\\\\u0000 is text"}'
    deep: Any = {}
    for _ in range(MAX_JSON_DEPTH - 1):
        deep = {"a": deep}
    assert dump_json(deep, "data")                    # 100 levels: accepted
    with pytest.raises(InvalidJobError, match="nested more than 100 levels"):
        dump_json({"a": deep}, "data")

"""Property-based checks of the input boundary: valid cron expressions and job configs
round-trip through the table; invalid ones raise the documented error and write nothing."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jobtable import InvalidCronError, InvalidJobError, JobTable, WorkerJobConfig, parse_cron

RANGES = {"second": (0, 59), "minute": (0, 59), "hour": (0, 23), "dom": (1, 28),
          "month": (1, 12), "dow": (0, 7)}  # 7 is Sunday too
SIX = ("second", "minute", "hour", "dom", "month", "dow")


@st.composite
def cron_field(draw: st.DrawFn, name: str) -> str:
    low, high = RANGES[name]
    kind = draw(st.sampled_from(["star", "step", "value", "range", "list"]))
    if kind == "star":
        return "*"
    if kind == "step":
        return f"*/{draw(st.integers(1, high - low + 1))}"
    if kind == "value":
        return str(draw(st.integers(low, high)))
    if kind == "range":
        a = draw(st.integers(low, high))
        return f"{a}-{draw(st.integers(a, high))}"
    values = draw(st.lists(st.integers(low, high), min_size=2, max_size=4, unique=True))
    return ",".join(map(str, sorted(values)))


@st.composite
def valid_cron(draw: st.DrawFn) -> str:
    names = SIX if draw(st.booleans()) else SIX[1:]
    return " ".join(draw(cron_field(n)) for n in names)


@st.composite
def invalid_cron(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["count", "range", "garbage"]))
    if kind == "count":
        n = draw(st.sampled_from([1, 2, 3, 4, 7, 8]))
        return " ".join(["*"] * n)
    names = list(SIX if draw(st.booleans()) else SIX[1:])
    fields = ["*"] * len(names)
    index = draw(st.integers(0, len(names) - 1))
    if kind == "range":
        _, high = RANGES[names[index]]
        fields[index] = str(draw(st.integers(high + 1, high + 100)))
        if names[index] == "dom":
            fields[index] = str(draw(st.integers(32, 99)))
    else:
        fields[index] = draw(st.sampled_from(["x", "1-", "-3", "*/", "?!", "1..2", "a-b"]))
    return " ".join(fields)


def _same_json(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) \
            and not isinstance(a, bool) and not isinstance(b, bool):
        return math.isclose(a, b, rel_tol=1e-15, abs_tol=0.0) or a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_json(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and type(a) is type(b)


def _count(jt: JobTable) -> int:
    return jt.count_jobs()


@pytest.fixture
def table(db_url: str, tmp_path: Path) -> Any:
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "tick.py").write_text("def run(params):\n    return None\n")
    with JobTable(db_url, jobs=jobs) as jt:
        jt.migrate()
        yield jt


PROFILE = settings(max_examples=60, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])


@PROFILE
@given(expr=valid_cron(), user_id=st.integers(0, 10**6))
def test_valid_cron_expressions_round_trip_through_the_table(
        table: JobTable, expr: str, user_id: int) -> None:
    schedule = parse_cron(expr)
    assert schedule.expression == expr
    before = datetime.now(UTC)
    row = table.schedule_cron_job(WorkerJobConfig(type="tick", user_id=user_id), expr)
    assert row.cron_schedule == expr
    assert row.due > before
    # The due time is an occurrence: the next occurrence just before it is itself.
    assert schedule.next_after(row.due - timedelta(microseconds=1)) == row.due
    assert table.get_job(row.id) == row


@PROFILE
@given(expr=invalid_cron())
def test_invalid_cron_expressions_raise_and_write_nothing(table: JobTable, expr: str) -> None:
    before = _count(table)
    with pytest.raises(InvalidCronError) as err:
        table.schedule_cron_job(WorkerJobConfig(type="tick", user_id=1), expr)
    assert "cron expression" in str(err.value) or "field" in str(err.value)
    assert _count(table) == before


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=20)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda children: st.lists(children, max_size=3)
    | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8)
bad_values = st.sampled_from([{1, 2}, object(), math.nan, math.inf, b"bytes", 1j])


@PROFILE
@given(user_id=st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(2**63, 2**70),
                         st.sampled_from([True, "7", 1.5])),
       data=st.one_of(st.dictionaries(st.text(max_size=8), json_values, max_size=4),
                      st.dictionaries(st.text(max_size=4), bad_values, min_size=1, max_size=2),
                      st.sampled_from([[1, 2], "text", 3])),
       due_offset=st.one_of(st.none(), st.floats(-1e6, 1e8, allow_nan=False)),
       naive=st.booleans(),
       retry_delay=st.one_of(st.none(), st.floats(-100, 1e6, allow_nan=False)),
       remove_delay=st.one_of(st.none(), st.floats(-100, 1e6, allow_nan=False)))
def test_schedule_inputs_round_trip_or_fail_cleanly(
        table: JobTable, user_id: Any, data: Any, due_offset: float | None, naive: bool,
        retry_delay: float | None, remove_delay: float | None) -> None:
    due = None
    if due_offset is not None:
        due = datetime.now(UTC) + timedelta(seconds=due_offset)
        if naive:
            due = due.replace(tzinfo=None)
    config = WorkerJobConfig(type="tick", user_id=user_id, data=data, due=due,
                             auto_reschedule_on_failure=retry_delay is not None,
                             auto_reschedule_on_failure_delay=retry_delay,
                             remove_delay=remove_delay)
    before = _count(table)
    try:
        row = table.schedule_job(config)
    except InvalidJobError as exc:
        assert str(exc)
        assert _count(table) == before
        return
    assert _count(table) == before + 1
    assert table.get_job(row.id) == row
    assert row.user_id == user_id
    # PostgreSQL's jsonb keeps numbers as numeric: 3.6e16 comes back as an integer.
    assert _same_json(row.data, data)
    if due is not None:
        assert row.due == due
    if retry_delay is not None:
        assert row.auto_reschedule_on_failure_delay == int(retry_delay * 1000)
    if remove_delay is not None:
        assert row.remove_delay == int(remove_delay * 1000)

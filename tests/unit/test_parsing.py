"""Reading what people type: durations, due times, cron expressions and settings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobtable import ConfigError, InvalidCronError, InvalidJobError, parse_cron
from jobtable.settings import Settings
from jobtable.timeutil import format_sqlite, parse_due, parse_duration, parse_sqlite

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("30", timedelta(seconds=30)), ("30s", timedelta(seconds=30)),
    ("5m", timedelta(minutes=5)), ("2h", timedelta(hours=2)), ("7d", timedelta(days=7)),
    (" 1.5h ", timedelta(minutes=90)),
])
def test_durations(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "soon", "5 weeks", "-3s", "1y"])
def test_a_bad_duration_names_itself_and_the_accepted_forms(text: str) -> None:
    with pytest.raises(InvalidJobError, match=r"cannot read --older-than .*e\.g\. 30s, 7d"):
        parse_duration(text, "--older-than")


def test_due_times_relative_or_iso_with_an_offset() -> None:
    assert parse_due("+10s", NOW) == NOW + timedelta(seconds=10)
    assert parse_due("+2h", NOW) == NOW + timedelta(hours=2)
    assert parse_due("2030-01-01T09:00:00Z") == datetime(2030, 1, 1, 9, tzinfo=UTC)
    with pytest.raises(InvalidJobError, match="cannot read due time 'tomorrow'"):
        parse_due("tomorrow")
    with pytest.raises(InvalidJobError):
        parse_due("2030-01-01T09:00:00")  # no offset: ambiguous


def test_sqlite_time_text_round_trips_and_sorts_by_instant() -> None:
    a = datetime(2026, 1, 1, 23, 30, tzinfo=UTC)
    b = a + timedelta(microseconds=1)
    assert parse_sqlite(format_sqlite(a)) == a
    assert format_sqlite(a) < format_sqlite(b)
    assert parse_sqlite(None) is None


def test_cron_expressions_six_or_five_fields_and_the_field_at_fault() -> None:
    assert parse_cron("0 * * * * *").next_after(NOW) == NOW + timedelta(minutes=1)
    assert parse_cron("0  0 * * *").expression == "0 0 * * *"
    with pytest.raises(InvalidCronError, match=r"field 2 \(hour\) '25'"):
        parse_cron("0 25 * * *")
    with pytest.raises(InvalidCronError, match="it has 3 fields"):
        parse_cron("* * *")
    with pytest.raises(InvalidCronError, match="never occurs"):
        parse_cron("0 0 30 2 *")
    with pytest.raises(InvalidCronError, match="unknown time zone 'Mars/Base'"):
        parse_cron("0 0 * * *", "Mars/Base")


def test_settings_convert_and_refuse_with_the_setting_named() -> None:
    s = Settings().with_overrides(stale_limit="10m", auto_migrate="no", concurrency="4")
    assert s.stale_limit == timedelta(minutes=10) and s.auto_migrate is False
    assert s.concurrency == 4
    with pytest.raises(ConfigError, match="setting stale_limit: must be greater than 0"):
        Settings().with_overrides(stale_limit="0s")
    with pytest.raises(ConfigError, match="setting auto_migrate: expected true or false"):
        Settings().with_overrides(auto_migrate="maybe")
    with pytest.raises(ConfigError, match="setting concurrency: must be at least 1"):
        Settings().with_overrides(concurrency=0)

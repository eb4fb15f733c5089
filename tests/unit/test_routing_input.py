"""Parsing and checking of routing input, without a database: --queues, RATE_LIMIT,
CONCURRENCY_LIMIT / CONCURRENCY_KEY / FAIR, and the rate-limit buckets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest

from jobtable.errors import ConfigError, InvalidJobError
from jobtable.routing import (
    RateLimit,
    TypeLimits,
    format_queues,
    is_paused,
    limits_of,
    parse_queues,
    parse_rate_limit,
)
from jobtable.settings import load_settings


def module(**settings: Any) -> Any:
    return SimpleNamespace(**settings)


def test_queues_parse_from_text_or_a_table() -> None:
    assert parse_queues("default=10, reports=2") == {"default": 10, "reports": 2}
    assert parse_queues({"a.b-c_d": 3}) == {"a.b-c_d": 3}
    assert format_queues({"default": 10, "reports": 2}) == "default=10,reports=2"
    assert load_settings(queues="x=1").queues == "x=1"


@pytest.mark.parametrize(("value", "words"), [
    ("reports", "'reports' in 'reports' is not NAME=SLOTS"),
    ("a=0", "must be at least 1, got 0"),
    ("a=-1", "must be a positive integer, got '-1'"),
    ("a=1.5", "must be a positive integer, got '1.5'"),
    ("a=1,,b=2", "'' in 'a=1,,b=2' is not NAME=SLOTS"),
    ("a=1,a=2", "queue 'a' is named twice"),
    ("bad/name=1", "queue name must be a name of 1 to 100"),
    ("", "expected NAME=SLOTS"),
    ({"a": True}, "must be a positive integer, got True"),
])
def test_bad_queues_name_the_value_and_the_accepted_form(value: Any, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_queues(value)
    assert words in str(info.value)
    assert "default=10,reports=2" in str(info.value) or "twice" in words


def test_rate_limits_parse_and_refuse_other_forms() -> None:
    assert parse_rate_limit("100/m") == RateLimit(100, timedelta(minutes=1))
    assert parse_rate_limit(" 10 / s ") == RateLimit(10, timedelta(seconds=1))
    assert str(parse_rate_limit("3/h")) == "3/h"
    for bad in ("100", "0/s", "-1/s", "10/d", "ten/m", 10, None, "1.5/s"):
        with pytest.raises(InvalidJobError, match=r"'N/s', 'N/m' or 'N/h'"):
            parse_rate_limit(bad)


def test_rate_buckets_are_a_tenth_of_the_period_and_the_window_errs_low() -> None:
    rate = RateLimit(10, timedelta(seconds=1))
    moment = datetime(2030, 1, 1, 9, 0, 0, 456_000, tzinfo=UTC)
    assert rate.bucket == timedelta(milliseconds=100)
    assert rate.bucket_of(moment) == datetime(2030, 1, 1, 9, 0, 0, 400_000, tzinfo=UTC)
    # The bucket holding moment - period is counted whole: never fewer than a period.
    assert rate.window_start(moment) == datetime(2030, 1, 1, 8, 59, 59, 400_000, tzinfo=UTC)


def test_module_limits_are_checked_at_load() -> None:
    assert limits_of("t", module()) == TypeLimits("t")
    assert not limits_of("t", None).limited
    limits = limits_of("t", module(CONCURRENCY_LIMIT=2, CONCURRENCY_KEY="user_id",
                                   RATE_LIMIT="5/s", FAIR=True))
    assert limits == TypeLimits("t", concurrency=2, per_user=True,
                                rate=RateLimit(5, timedelta(seconds=1)), fair=True)
    assert limits.describe() == ("at most 2 running per user, at most 5 starts per second, "
                                 "fair between users")
    for settings, words in (
            ({"CONCURRENCY_LIMIT": -1}, "positive integer"),
            ({"CONCURRENCY_LIMIT": 0}, "positive integer"),
            ({"CONCURRENCY_LIMIT": "2"}, "positive integer"),
            ({"CONCURRENCY_LIMIT": True}, "positive integer"),
            ({"CONCURRENCY_LIMIT": 1, "CONCURRENCY_KEY": "tenant"}, "'user_id'"),
            ({"CONCURRENCY_KEY": "user_id"}, "needs CONCURRENCY_LIMIT"),
            ({"RATE_LIMIT": "fast"}, "RATE_LIMIT of job type 't'"),
            ({"FAIR": "yes"}, "True or False")):
        with pytest.raises(InvalidJobError, match=words):
            limits_of("t", module(**settings))


def test_a_pause_holds_until_its_end() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert is_paused(True, None, now)
    assert is_paused(True, now + timedelta(seconds=1), now)
    assert not is_paused(True, now, now)
    assert not is_paused(False, None, now)

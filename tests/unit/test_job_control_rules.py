"""Job control as rules: bounded retries, backoff, Retry / Discard / Snooze, cancel,
and the validation of their settings. No database, no clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from jobtable import UNSET, Discard, Ending, InvalidJobError, Retry, Snooze, WorkerJobConfig, rules
from jobtable.errors import ConfigError
from jobtable.model import WorkerJob
from jobtable.settings import Settings

NOW = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)


def row(**fields: object) -> WorkerJob:
    base = WorkerJob(
        id=7, type="send", user_id=3, data={"to": "a"}, due=NOW, started=NOW, finished=None,
        remove_at=None, success=None, result=None, cron_schedule=None, cron_timezone=None,
        auto_reschedule_on_failure=True, auto_reschedule_on_failure_delay=10_000,
        remove_delay=60_000, rescheduled_from_job=None, cancelled=False, attempts=1,
        claimed_by="w", declared=False, created_at=NOW, updated_at=NOW, max_retries=3)
    return replace(base, **fields)  # type: ignore[arg-type]


FAILURE = {"error": "boom", "exception": "ValueError", "traceback": "..."}


def test_exponential_backoff_doubles_from_the_delay_within_the_jitter_and_stops_at_the_cap(
        ) -> None:
    delays = [rules.backoff_delay_ms(10_000, "exponential", 3_600_000, n) for n in range(1, 12)]
    assert delays[:5] == [10_000, 20_000, 40_000, 80_000, 160_000]
    assert delays[-1] == 3_600_000 and max(delays) == 3_600_000
    assert rules.backoff_delay_ms(10_000, "exponential", 3_600_000, 3, 0.1) == 44_000
    assert rules.backoff_delay_ms(10_000, "exponential", 3_600_000, 3, -0.1) == 36_000
    assert rules.backoff_delay_ms(10_000, "exponential", 3_600_000, 10_000) == 3_600_000
    # constant: the delay, whatever the retry number and cap
    assert rules.backoff_delay_ms(10_000, "constant", 1_000, 7) == 10_000


def test_retries_stop_at_max_retries_and_the_last_failure_says_exhausted() -> None:
    chain = []
    job = row()
    while True:
        outcome = rules.finish(job, False, FAILURE, NOW)
        chain.append(outcome)
        if outcome.follow_up is None:
            break
        nxt = outcome.follow_up
        assert nxt.retry_count == job.retry_count + 1 and nxt.max_retries == 3
        job = replace(job, id=job.id + 1, retry_count=nxt.retry_count)
    assert [o.kind for o in chain] == [Ending.RETRYING] * 3 + [Ending.EXHAUSTED]
    last = chain[-1].result
    assert last["error"] == "boom" and last["exception"] == "ValueError"
    assert last["retries_exhausted"] == 3 and last["no_retry"] == "retries exhausted after 3"
    assert "retries_exhausted" not in chain[0].result
    # None: unlimited; 0: no retry at all
    assert rules.finish(row(max_retries=None, retry_count=500), False, FAILURE, NOW).follow_up
    none = rules.finish(row(max_retries=0), False, FAILURE, NOW)
    assert none.follow_up is None and none.kind is Ending.EXHAUSTED


def test_exponential_retries_are_due_after_the_grown_delay() -> None:
    job = row(backoff="exponential", max_backoff=30_000, max_retries=None)
    dues = [rules.follow_up(replace(job, retry_count=k), False, NOW).due  # type: ignore[union-attr]
            for k in range(4)]
    assert [d - NOW for d in dues] == [timedelta(seconds=s) for s in (10, 20, 30, 30)]


def test_retry_signal_retries_without_auto_reschedule_and_after_its_own_delay() -> None:
    job = row(auto_reschedule_on_failure=False)
    assert rules.finish(job, False, FAILURE, NOW).follow_up is None
    forced = rules.finish(job, False, FAILURE, NOW, force=True, after=timedelta(seconds=3))
    assert forced.kind is Ending.RETRYING and forced.follow_up is not None
    assert forced.follow_up.due == NOW + timedelta(seconds=3)
    exhausted = rules.finish(replace(job, retry_count=3), False, FAILURE, NOW, force=True)
    assert exhausted.follow_up is None and exhausted.kind is Ending.EXHAUSTED


def test_discard_never_retries_but_a_cron_chain_goes_on() -> None:
    out = rules.finish(row(), False, {**FAILURE, "error": "bad input"}, NOW, discarded=True)
    assert out.follow_up is None and out.kind is Ending.DISCARDED
    assert out.result["discarded"] is True and out.result["error"] == "bad input"
    cron = row(cron_schedule="0 * * * * *")
    nxt = rules.finish(cron, False, FAILURE, NOW, discarded=True).follow_up
    assert nxt is not None and nxt.retry_count == 0 and nxt.due == datetime(
        2026, 3, 1, 12, 1, tzinfo=UTC)


def test_cancelled_and_snoozed_outcomes() -> None:
    out = rules.cancelled(row(), NOW, returned={"partial": 3}, has_returned=True)
    assert out.cancelled and not out.success and out.follow_up is None
    assert out.result == {"error": "Job cancelled by request while running",
                          "exception": "JobCancelled", "returned": {"partial": 3}}
    assert rules.cancelled(row(cron_schedule="0 * * * * *"), NOW).follow_up is not None
    snooze = rules.snoozed(row(), NOW, timedelta(minutes=5))
    assert snooze.snooze_until == NOW + timedelta(minutes=5) and snooze.follow_up is None
    # a rescued row whose cancel was requested ends cancelled, not pending again
    rescued = rules.rescue(row(cancel_requested=NOW), NOW, 4)
    assert rescued is not None and rescued.cancelled


def test_config_validation_of_the_retry_policies() -> None:
    valid = WorkerJobConfig(type="send").validated()
    assert valid.max_retries == 25 and valid.backoff == "constant"
    assert valid.max_backoff == timedelta(hours=1)
    assert WorkerJobConfig(type="send", max_retries=None).validated().max_retries is None
    assert WorkerJobConfig(type="send").max_retries is UNSET
    # explicit wins over the module, the module over the setting
    module = {"max_retries": None, "backoff": "exponential"}
    got = WorkerJobConfig(type="send", max_retries=2).validated(module, {"max_retries": 9})
    assert got.max_retries == 2 and got.backoff == "exponential"
    assert WorkerJobConfig(type="send").validated(module, {"max_retries": 9}).max_retries is None
    assert WorkerJobConfig(type="send").validated({}, {"max_retries": 9}).max_retries == 9
    with pytest.raises(InvalidJobError, match=r"max_retries must be None .* at least 0"):
        WorkerJobConfig(type="send", max_retries=-1).validated()
    with pytest.raises(InvalidJobError, match="MAX_RETRIES of job type 'send'"):
        WorkerJobConfig(type="send").validated({"max_retries": "many"})
    with pytest.raises(InvalidJobError, match="backoff must be 'constant' or 'exponential'"):
        WorkerJobConfig(type="send", backoff="linear").validated()  # type: ignore[arg-type]
    with pytest.raises(InvalidJobError,
                       match=r"max_backoff \(5s\) must not be below "
                             r"auto_reschedule_on_failure_delay \(10s\)"):
        WorkerJobConfig(type="send", backoff="exponential", max_backoff=5,
                        auto_reschedule_on_failure_delay=10).validated()
    with pytest.raises(InvalidJobError, match=r"the max_backoff setting \(3600s\)"):
        WorkerJobConfig(type="send", backoff="exponential",
                        auto_reschedule_on_failure_delay=7200).validated(
            {}, {"max_backoff": timedelta(hours=1)})
    # a constant delay above the cap stays valid (the cap is for exponential backoff)
    WorkerJobConfig(type="send", max_backoff=5, auto_reschedule_on_failure_delay=10).validated()


def test_settings_for_retries() -> None:
    assert Settings().max_retries == 25 and Settings().max_backoff == timedelta(hours=1)
    assert Settings().with_overrides(max_retries="0").max_retries == 0
    assert Settings().with_overrides(max_retries="unlimited").max_retries is None
    assert Settings().with_overrides(max_backoff="10m").max_backoff == timedelta(minutes=10)
    with pytest.raises(ConfigError, match="setting max_retries: must be at least 0"):
        Settings().with_overrides(max_retries=-2)
    with pytest.raises(ConfigError, match="setting max_retries: expected a whole number"):
        Settings().with_overrides(max_retries="lots")


def test_signals_check_their_delays() -> None:
    assert Snooze(60).after == timedelta(minutes=1)
    assert Retry().after is None and Retry(timedelta(seconds=2), "later").reason == "later"
    assert str(Discard("no such user")) == "no such user"
    with pytest.raises(InvalidJobError, match=r"Snooze\(after\) needs a delay"):
        Snooze()
    with pytest.raises(InvalidJobError, match=r"Snooze\(after\) must not be negative"):
        Snooze(-1)
    with pytest.raises(InvalidJobError, match=r"Retry\(after=...\) must not be negative"):
        Retry(after=-1)
    with pytest.raises(InvalidJobError, match="a number of seconds or a timedelta"):
        Snooze("soon")  # type: ignore[arg-type]

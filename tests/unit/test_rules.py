"""The queue's rules as plain functions: no database, no clock, no worker."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from jobtable import rules
from jobtable.model import NewJob, ValidConfig, WorkerJob

NOW = datetime(2026, 3, 1, 12, 0, 30, tzinfo=UTC)


def row(**fields: object) -> WorkerJob:
    base = WorkerJob(
        id=7, type="send", user_id=3, data={"to": "a"}, due=NOW, started=None, finished=None,
        remove_at=None, success=None, result=None, cron_schedule=None, cron_timezone=None,
        auto_reschedule_on_failure=False, auto_reschedule_on_failure_delay=5000,
        remove_delay=60_000, rescheduled_from_job=None, cancelled=False, attempts=0,
        claimed_by=None, declared=False, created_at=NOW, updated_at=NOW)
    return replace(base, **fields)  # type: ignore[arg-type]


def config(**fields: object) -> ValidConfig:
    base = ValidConfig(type="send", user_id=3, data={}, due=None,
                       auto_reschedule_on_failure=True,
                       auto_reschedule_on_failure_delay=timedelta(seconds=2),
                       remove_delay=timedelta(minutes=5))
    return replace(base, **fields)  # type: ignore[arg-type]


def test_a_new_row_is_due_now_or_at_its_due_and_carries_its_settings_in_ms() -> None:
    job = rules.new_job(config(), NOW)
    assert job.due == NOW and job.cron_schedule is None
    assert job.auto_reschedule_on_failure_delay_ms == 2000 and job.remove_delay_ms == 300_000
    later = NOW + timedelta(hours=1)
    assert rules.new_job(config(due=later), NOW).due == later


def test_a_cron_row_is_first_due_at_the_next_occurrence() -> None:
    job = rules.new_job(config(), NOW, cron="0 * * * *", timezone="Europe/Paris",
                        declared=True)
    assert job.due == datetime(2026, 3, 1, 13, 0, tzinfo=UTC)
    assert job.cron_timezone == "Europe/Paris" and job.declared


def test_a_failure_with_auto_reschedule_follows_with_a_retry_after_the_delay() -> None:
    failed = row(auto_reschedule_on_failure=True, attempts=1)
    nxt = rules.follow_up(failed, success=False, now=NOW)
    assert nxt is not None and nxt.due == NOW + timedelta(seconds=5)
    assert nxt.rescheduled_from_job == failed.id and nxt.data == failed.data
    assert rules.follow_up(failed, success=False, now=NOW, retry=False) is None
    assert rules.follow_up(failed, success=True, now=NOW) is None
    assert rules.follow_up(row(), success=False, now=NOW) is None


def test_a_cron_row_follows_with_its_next_occurrence_strictly_after_now() -> None:
    cron = row(cron_schedule="0 * * * * *")
    at_tick = NOW.replace(second=0)
    nxt = rules.follow_up(cron, success=True, now=at_tick)
    assert nxt is not None and nxt.due == at_tick + timedelta(minutes=1)
    # A cron job's retry keeps its schedule.
    retry = rules.follow_up(replace(cron, auto_reschedule_on_failure=True), False, NOW)
    assert retry is not None and retry.cron_schedule == "0 * * * * *"
    assert retry.due == NOW + timedelta(seconds=5)


def test_a_retry_by_hand_is_a_copy_due_now_pointing_back() -> None:
    failed = row(finished=NOW, success=False, cron_schedule="0 0 * * *", declared=True)
    again = rules.retry_row(failed, NOW)
    assert isinstance(again, NewJob)
    assert (again.due, again.rescheduled_from_job, again.cron_schedule, again.declared) == (
        NOW, failed.id, "0 0 * * *", True)


def test_within_a_batch_only_the_last_row_of_a_pair_stays_pending() -> None:
    jobs = [rules.new_job(config(user_id=u), NOW) for u in (1, 2, 1, 3, 1)]
    assert rules.dedupe_batch(jobs) == [False, True, False, True, True]
    assert rules.dedupe_batch([]) == []


def test_an_abandoned_row_runs_again_until_its_charged_crashes_reach_the_limit() -> None:
    # Charged (it ran alone, or isolation is off): the 4th death gives up.
    assert rules.rescue(row(attempts=3, crashes=2, started=NOW), NOW, max_attempts=4) is None
    given_up = rules.rescue(row(attempts=4, crashes=3, started=NOW,
                                auto_reschedule_on_failure=True), NOW, max_attempts=4)
    assert given_up is not None and not given_up.success
    assert given_up.result == {"error": rules.CRASHED_MESSAGE.format(crashes=4, limit=4),
                               "exception": "Abandoned"}
    assert given_up.follow_up is None  # given up for good: no retry
    cron = rules.rescue(row(attempts=4, crashes=3, started=NOW, cron_schedule="0 * * * *"),
                        NOW, 4)
    assert cron is not None and cron.follow_up is not None  # the chain continues


def test_a_row_that_merely_shared_a_dead_worker_is_not_charged() -> None:
    # Claimed 4 times, every time its worker died around it: it runs again.
    assert rules.rescue(row(attempts=4, started=NOW), NOW, 4, charged=False) is None
    assert rules.rescue(row(attempts=19, crashes=3, started=NOW), NOW, 4, charged=False) is None
    # The safety net: 5 x max_attempts claims without finishing.
    given_up = rules.rescue(row(attempts=20, started=NOW), NOW, 4, charged=False)
    assert given_up is not None and "claimed 20 times" in str(given_up.result)


def test_a_rescued_row_cancelled_or_superseded_while_it_ran_is_not_run_again() -> None:
    running = row(id=7, started=NOW, attempts=1)
    later = NOW + timedelta(seconds=1)
    newer = row(id=9, created_at=later)
    assert rules.rescue_cancel(running, [newer]) is not None
    assert rules.rescue_cancel(running, []) is None
    # Scheduled before it started (it was the newer one then), or with on_conflict allow.
    assert rules.rescue_cancel(running, [replace(newer, created_at=NOW - timedelta(1))]) is None
    assert rules.rescue_cancel(running, [replace(newer, on_conflict="allow")]) is None
    # A one-off does not replace a cron row; a cron row replaces anything.
    cron = replace(running, cron_schedule="0 * * * *")
    assert rules.rescue_cancel(cron, [newer]) is None
    assert rules.rescue_cancel(cron, [replace(newer, cron_schedule="5 * * * *")]) is not None


def test_chain_identity_needs_same_schedule_zone_data_and_a_fresh_row() -> None:
    first = rules.new_job(config(data={"k": 1}), NOW, cron="0 * * * *")
    cutoff = NOW - timedelta(hours=1)
    existing = row(cron_schedule=first.cron_schedule, data={"k": 1})
    assert rules.same_chain(existing, first, cutoff)
    assert not rules.same_chain(replace(existing, data={"k": 2}), first, cutoff)
    assert not rules.same_chain(replace(existing, cron_schedule="5 * * * *"), first, cutoff)
    assert not rules.same_chain(replace(existing, cron_timezone="UTC"), first, cutoff)
    stale = replace(existing, started=cutoff - timedelta(seconds=1))
    assert not rules.same_chain(stale, first, cutoff)
    assert rules.same_chain(replace(existing, started=cutoff), first, cutoff)


def test_hand_actions_say_why_they_do_not_apply() -> None:
    cutoff = NOW - timedelta(hours=1)
    pending = row()
    running = row(started=NOW, claimed_by="host-1")
    stale = row(started=cutoff - timedelta(minutes=1))
    failed = row(finished=NOW, success=False)
    cancelled = row(finished=NOW, success=False, cancelled=True)
    succeeded = row(finished=NOW, success=True)
    assert rules.cancel_refusal(pending, cutoff) is None
    assert rules.cancel_refusal(stale, cutoff) is None  # counts as pending again
    assert rules.cancel_refusal(running, cutoff) is None  # its worker is asked to stop it
    assert "already finished (succeeded); too late" in str(rules.cancel_refusal(succeeded))
    assert rules.retry_refusal(failed) is None and rules.retry_refusal(cancelled) is None
    assert "only failed or cancelled" in str(rules.retry_refusal(pending))
    assert rules.run_now_refusal(pending) is None
    assert "only pending jobs can be run now" in str(rules.run_now_refusal(failed))


def test_declared_chains_are_kept_while_declared_or_started() -> None:
    job = row(cron_schedule="0 * * * *", declared=True, user_id=0)
    assert rules.keeps_declared_chain(job, {"send": "0 * * * *"})
    assert not rules.keeps_declared_chain(job, {"send": "5 * * * *"})
    assert not rules.keeps_declared_chain(job, {})
    assert rules.keeps_declared_chain(replace(job, started=NOW), {})


def test_the_old_scheduling_module_still_offers_the_rules() -> None:
    from jobtable import scheduling

    assert scheduling.follow_up is rules.follow_up and scheduling.new_job is rules.new_job


def test_a_batch_plan_applies_each_jobs_on_conflict_as_if_one_after_another() -> None:
    def job(key: str | None, mode: str, user: int = 3) -> NewJob:
        return rules.new_job(config(unique_key=key, on_conflict=mode, user_id=user), NOW)

    table = [row(id=1, unique_key="k"), row(id=2, unique_key=None),
             row(id=3, unique_key="c", cron_schedule="0 * * * *")]
    plan = rules.plan_batch([job("k", "keep"), job("n", "keep"), job("n", "keep"),
                             job("x", "replace"), job(None, "replace"), job("a", "allow")],
                            table)
    assert plan.insert == [False, True, False, True, True, True]
    assert plan.kept == [("row", 1), None, ("batch", 1), None, None, None]
    # The un-keyed one-off replaces every one-off of the pair (keyed or not, in the
    # table and earlier in the batch) and spares the cron chain's row.
    assert plan.cancel_ids == [1, 2]
    assert plan.cancelled == [False, True, False, True, False, False]
    assert plan.matches == []
    # Without the table's rows a replacing batch is planned by matches.
    fast = rules.plan_batch([job("k", "replace"), job("k", "replace", user=4)], None)
    assert fast.matches == [rules.Match("send", 3, "k", False), rules.Match("send", 4, "k",
                                                                            False)]
    assert fast.cancelled == [False, False] and fast.cancel_ids == []
    # Each job of its own pair: an allowing job matches nothing; a repeated pair is
    # planned job by job (the earlier one written cancelled, its match sent once).
    own = rules.plan_batch([job(None, "allow"), job(None, "replace", user=4)], None)
    assert own.matches == [rules.Match("send", 4, None, False)]
    assert own.insert == [True, True] and own.cancelled == [False, False]
    again = rules.plan_batch([job(None, "replace"), job("a", "allow", user=5),
                              job(None, "replace")], None)
    assert again.matches == [rules.Match("send", 3, None, False)]
    assert again.cancelled == [True, False, False] and again.insert == [True] * 3
    assert rules.needs_table_rows([job(None, "keep")])
    assert not rules.needs_table_rows([job(None, "replace"), job(None, "allow")])

"""Routing and flow control with real worker processes, on both databases: priorities,
named queues with their own slots, pause and resume, global concurrency and rate limits,
fairness between users; and what the commands show about them."""

from __future__ import annotations

import json
import time
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import (
    SLEEP_JOB,
    Side,
    log_tail,
    now,
    open_table,
    run_cli,
    sql,
    start_worker,
    stop_process,
    wait_until,
    write_jobs,
)

from jobtable import WorkerJobConfig

RUN_ORDER_JOB = """
def run(params):
    record(params.job.id, "run", {"priority": params.job.priority})
"""


OK_JOB = """
def run(params):
    return {"ok": True}
"""


def limited(settings: str) -> str:
    """SLEEP_JOB with module-level flow settings in front."""
    return settings + "\n" + SLEEP_JOB


def max_overlap(side: Side, job_ids: set[int] | None = None) -> int:
    """The most jobs that ran at once, from their own start/end records."""
    edges = []
    for job_id, event, _pid, _ppid, at in side.events():
        if job_ids is not None and job_id not in job_ids:
            continue
        if event == "start":
            edges.append((at, 1))
        elif event == "end":
            edges.append((at, -1))
    best = current = 0
    for _, step in sorted(edges, key=lambda e: (e[0], e[1])):
        current += step
        best = max(best, current)
    return best


def give_user(db_url: str, ids: list[int], user_id: int) -> None:
    """Several pending rows of one (type, user): scheduling keeps one per pair (rule 2),
    so rows scheduled for distinct users are given one user directly."""
    for job_id in ids:
        sql(db_url, "UPDATE worker_jobs SET user_id = %s WHERE id = %s", user_id, job_id)


def running_rows(db_url: str, job_type: str) -> int:
    return int(sql(db_url, "SELECT COUNT(*) FROM worker_jobs WHERE type = %s AND "
                   "finished IS NULL AND started IS NOT NULL", job_type)[0][0])


def unfinished(db_url: str) -> int:
    return int(sql(db_url, "SELECT COUNT(*) FROM worker_jobs WHERE finished IS NULL "
                   "AND type <> 'remove_old_worker_jobs'")[0][0])


def test_priority_order_lower_first(db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"note": RUN_ORDER_JOB})
    side = Side(db_url, tmp_path)
    with open_table(db_url, jobs) as jt:
        jt.migrate()
        past = now() - timedelta(seconds=30)
        rows = jt.schedule_jobs([
            WorkerJobConfig(type="note", user_id=u, priority=p, due=past + timedelta(seconds=u))
            for u, p in enumerate([5, 0, -10, 5, 100, -10, 0])])
    log = tmp_path / "worker.log"
    proc = start_worker(db_url, jobs, "--concurrency", "1", side=side, log=log)
    try:
        wait_until(lambda: side.count() == 7, 60, "seven runs")
    finally:
        assert stop_process(proc) == 0, log_tail(log)
    expected = [r.id for r in sorted(rows, key=lambda r: (r.priority, r.due, r.id))]
    assert side.job_ids() == expected


def test_named_queues_get_their_own_slots_and_others_are_not_served(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"nap": SLEEP_JOB})
    side = Side(db_url, tmp_path)
    with open_table(db_url, jobs) as jt:
        jt.migrate()
        rows = jt.schedule_jobs(
            [WorkerJobConfig(type="nap", user_id=u, data={"sleep": 0.3},
                             queue=("a", "b", "c")[u % 3]) for u in range(18)])
    by_queue: dict[str, set[int]] = defaultdict(set)
    for r in rows:
        by_queue[r.queue].add(r.id)
    log = tmp_path / "worker.log"
    proc = start_worker(db_url, jobs, "--queues", "a=2,b=1", side=side, log=log)
    try:
        wait_until(lambda: side.count("end") == 12, 60, "queues a and b drained")
        time.sleep(0.5)
    finally:
        assert stop_process(proc) == 0, log_tail(log)
    started = set(side.job_ids("start"))
    assert started == by_queue["a"] | by_queue["b"], "queue c is not served"
    assert max_overlap(side, by_queue["a"]) == 2
    assert max_overlap(side, by_queue["b"]) == 1
    assert sql(db_url, "SELECT COUNT(*) FROM worker_jobs WHERE queue = 'c' AND "
               "started IS NULL AND finished IS NULL")[0][0] == 6


def test_pause_stops_new_starts_everywhere_and_resume_restarts_them(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"nap": SLEEP_JOB})
    side = Side(db_url, tmp_path)
    log = tmp_path / "worker.log"
    with open_table(db_url, jobs) as jt:
        jt.migrate()
    procs = [start_worker(db_url, jobs, side=side, log=log) for _ in range(2)]
    try:
        with open_table(db_url, jobs) as jt:
            wait_until(lambda: len(jt.live_workers()) == 2, 60, "two workers")
            # Paused while workers run: from their next claim, nothing of it starts.
            info = jt.pause_queue("reports")
            assert info.paused and info.paused_until is None
            time.sleep(1.5)
            jt.schedule_jobs([WorkerJobConfig(type="nap", user_id=u, queue="reports")
                              for u in range(5)])
            other = jt.schedule_job(WorkerJobConfig(type="nap", user_id=99))
            wait_until(lambda: other.id in side.job_ids("end"), 30, "the other queue runs")
            time.sleep(2)
            assert side.count("start") == 1, "nothing of the paused queue started"
            [queue] = [q for q in jt.list_queues() if q.name == "reports"]
            assert (queue.pending, queue.paused) == (5, True)
            assert jt.resume_queue("reports").paused is False
            wait_until(lambda: side.count("end") == 6, 30, "the resumed queue drained")
            # A pause with a length ends by itself.
            jt.pause_queue("reports", timedelta(seconds=2))
            time.sleep(1.5)
            paused_at = time.time()
            late = jt.schedule_job(WorkerJobConfig(type="nap", user_id=7, queue="reports"))
            wait_until(lambda: late.id in side.job_ids("end"), 30, "the pause expired")
            [start_at] = [at for job_id, ev, _, _, at in side.events("start")
                          if job_id == late.id]
            assert start_at >= paused_at + 0.3, "it waited for the pause to end"
    finally:
        for proc in procs:
            assert stop_process(proc) == 0, log_tail(log)


@pytest.mark.slow
def test_a_concurrency_limit_holds_across_four_worker_processes(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"api": limited("CONCURRENCY_LIMIT = 2"),
                                          "free": SLEEP_JOB})
    side = Side(db_url, tmp_path)
    log = tmp_path / "worker.log"
    with open_table(db_url, jobs) as jt:
        jt.migrate()
    procs = [start_worker(db_url, jobs, "--concurrency", "4", side=side, log=log)
             for _ in range(4)]
    try:
        with open_table(db_url, jobs) as jt:
            wait_until(lambda: len(jt.live_workers()) == 4, 60, "four workers")
            api = jt.schedule_jobs([WorkerJobConfig(type="api", user_id=u,
                                                    data={"sleep": 0.2}) for u in range(16)])
            free = jt.schedule_jobs([WorkerJobConfig(type="free", user_id=u,
                                                     data={"sleep": 0.2}) for u in range(8)])
            samples = []
            deadline = time.monotonic() + 90
            while side.count("end") < 24 and time.monotonic() < deadline:
                samples.append(running_rows(db_url, "api"))
                time.sleep(0.02)
            assert side.count("end") == 24, log_tail(log)
            held = jt.get_job(api[-1].id)
            assert held is not None
    finally:
        for proc in procs:
            assert stop_process(proc) == 0, log_tail(log)
    assert max(samples) == 2, samples
    assert max_overlap(side, {r.id for r in api}) == 2
    assert max_overlap(side, {r.id for r in free}) > 2, "unlimited types are not held back"


def test_a_per_user_limit_serialises_one_user_while_others_run(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {
        "sync": limited('CONCURRENCY_LIMIT = 1\nCONCURRENCY_KEY = "user_id"')})
    side = Side(db_url, tmp_path)
    log = tmp_path / "worker.log"
    with open_table(db_url, jobs) as jt:
        jt.migrate()
        rows = jt.schedule_jobs([WorkerJobConfig(type="sync", user_id=100 + u,
                                                 data={"sleep": 0.3}) for u in range(8)])
    heavy = [r.id for r in rows[:5]]
    give_user(db_url, heavy, 1)
    procs = [start_worker(db_url, jobs, "--concurrency", "4", side=side, log=log)
             for _ in range(2)]
    try:
        wait_until(lambda: side.count("end") == 8, 90, "every job ran")
    finally:
        for proc in procs:
            assert stop_process(proc) == 0, log_tail(log)
    assert max_overlap(side, set(heavy)) == 1, "user 1's jobs ran one at a time"
    assert max_overlap(side) >= 3, "other users ran beside user 1"


@pytest.mark.slow
def test_a_rate_limit_caps_starts_per_second_across_processes(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"ping": limited('RATE_LIMIT = "10/s"')})
    side = Side(db_url, tmp_path)
    log = tmp_path / "worker.log"
    with open_table(db_url, jobs) as jt:
        jt.migrate()
        jt.schedule_jobs([WorkerJobConfig(type="ping", user_id=u) for u in range(200)])
    procs = [start_worker(db_url, jobs, "--concurrency", "10", side=side, log=log)
             for _ in range(3)]
    try:
        wait_until(lambda: side.count("start") >= 50, 60, "five seconds of starts")
    finally:
        for proc in procs:
            assert stop_process(proc) == 0, log_tail(log)
    with open_table(db_url, jobs) as jt:
        rows = jt.list_jobs(type="ping", limit=1000)
    # Starts as the claims wrote them (the jobs' own records add scheduling jitter).
    starts = sorted(r.started.timestamp() for r in rows if r.started is not None)
    window = [t for t in starts if t <= starts[0] + 5]
    busiest = max(sum(1 for u in window if t <= u < t + 1) for t in window)
    assert busiest <= 10, busiest
    assert len(window) >= 40, f"{len(window)} starts in 5 s: the limit is not too strict"


@pytest.mark.slow
def test_fair_interleaves_users_when_one_has_a_backlog(db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"report": "FAIR = True\n" + RUN_ORDER_JOB})
    side = Side(db_url, tmp_path)
    log = tmp_path / "worker.log"
    with open_table(db_url, jobs) as jt:
        jt.migrate()
        past = now() - timedelta(minutes=5)
        big = jt.schedule_jobs([WorkerJobConfig(type="report", user_id=10_000 + i, due=past)
                                for i in range(1000)])
        small = jt.schedule_jobs([WorkerJobConfig(type="report", user_id=20_000 + i)
                                  for i in range(10)])
    if db_url.startswith("postgresql"):
        sql(db_url, "UPDATE worker_jobs SET user_id = 1 WHERE type = 'report' AND "
            "user_id >= 10000 AND user_id < 20000")
        sql(db_url, "UPDATE worker_jobs SET user_id = 2 WHERE type = 'report' AND "
            "user_id >= 20000")
    else:
        sql(db_url, "UPDATE worker_jobs SET user_id = CASE WHEN user_id < 20000 THEN 1 "
            "ELSE 2 END WHERE type = 'report'")
    proc = start_worker(db_url, jobs, "--concurrency", "5", side=side, log=log)
    try:
        wait_until(lambda: side.count() >= 60, 60, "sixty runs")
    finally:
        assert stop_process(proc) == 0, log_tail(log)
    order = side.job_ids()
    small_ids = {r.id for r in small}
    big_ids = {r.id for r in big}
    last_small = max(i for i, job_id in enumerate(order) if job_id in small_ids)
    big_before = sum(1 for job_id in order[:last_small] if job_id in big_ids)
    assert {job_id for job_id in order if job_id in small_ids} == small_ids
    assert big_before <= 20, f"user 2's ten jobs waited for {big_before} of user 1's"


def test_commands_show_queues_pauses_priorities_and_why_a_job_waits(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"nap": limited("CONCURRENCY_LIMIT = 1"),
                                          "note": RUN_ORDER_JOB})
    base = ("--database", db_url, "--jobs", str(jobs))
    done = run_cli("schedule", "note", *base, "--queue", "reports", "--priority", "-5",
                   "--json")
    assert done.returncode == 0, done.stderr
    row = json.loads(done.stdout)
    assert (row["queue"], row["priority"]) == ("reports", -5)
    paused = run_cli("queues", "pause", "reports", "--for", "30m", *base)
    assert paused.returncode == 0 and "paused queue reports until" in paused.stdout
    listed = json.loads(run_cli("queues", *base, "--json").stdout)
    assert [(q["name"], q["pending"], q["paused"]) for q in listed] == [("reports", 1, True)]
    shown = json.loads(run_cli("jobs", "show", str(row["id"]), *base, "--json").stdout)
    assert shown["held_back"].startswith("queue 'reports' is paused until")
    table = run_cli("jobs", *base, env={"COLUMNS": "200"})
    assert "reports" in table.stdout and "-5" in table.stdout
    assert run_cli("queues", "resume", "reports", *base).returncode == 0
    listed = json.loads(run_cli("queues", *base, "--json").stdout)
    assert listed[0]["paused"] is False
    with open_table(db_url, jobs) as jt:
        first = jt.schedule_job(WorkerJobConfig(type="nap", user_id=1))
        second = jt.schedule_job(WorkerJobConfig(type="nap", user_id=2))
        sql(db_url, "UPDATE worker_jobs SET started = %s, claimed_by = 'w' WHERE id = %s",
            now(), first.id)
        assert jt.held_back(jt.require_job(second.id)) == (
            "concurrency limit reached (1 running; CONCURRENCY_LIMIT = 1)")
        later = jt.schedule_job(WorkerJobConfig(type="note", user_id=3,
                                                due=now() + timedelta(hours=1)))
        assert (jt.held_back(later) or "").startswith("not due yet")
        assert jt.held_back(jt.require_job(first.id)) is None  # running
    stats = run_cli("stats", *base)
    assert stats.returncode == 0 and "reports" in stats.stdout, stats.stdout


def test_bad_routing_input_is_refused_clearly(db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {
        "note": OK_JOB, "broken": 'RATE_LIMIT = "ten a minute"\n' + OK_JOB,
        "negative": "CONCURRENCY_LIMIT = -1\n" + OK_JOB,
        "keyed": 'CONCURRENCY_LIMIT = 1\nCONCURRENCY_KEY = "tenant"\n' + OK_JOB})
    base = ("--database", db_url, "--jobs", str(jobs))
    for value, words in (("default", "is not NAME=SLOTS"), ("a=0", "at least 1"),
                         ("a=two", "positive integer"), ("a b=1", "is not NAME=SLOTS")):
        out = run_cli("worker", *base, "--burst", "--queues", value)
        assert out.returncode != 0 and words in out.stderr, out.stderr
        assert "default=10,reports=2" in out.stderr
    bad = run_cli("schedule", "note", *base, "--queue", "no spaces")
    assert bad.returncode == 1 and "queue must be a name" in bad.stderr
    with open_table(db_url, jobs) as jt:
        rows = [jt.schedule_job(WorkerJobConfig(type=t, user_id=1))
                for t in ("broken", "negative", "keyed", "note")]
        for name in ("broken", "negative", "keyed"):
            jt_type = jt.registry.get(name)
            assert jt_type is not None and jt_type.error is not None
        assert "'N/s', 'N/m' or 'N/h'" in (jt.registry.get("broken").error or "")
        assert "positive integer" in (jt.registry.get("negative").error or "")
        assert "'user_id'" in (jt.registry.get("keyed").error or "")
    out = run_cli("worker", *base, "--burst")
    assert out.returncode == 0, out.stderr
    with open_table(db_url, jobs) as jt:
        done = [jt.require_job(r.id) for r in rows]
    assert [j.success for j in done] == [False, False, False, True]
    assert "cannot be loaded" in (done[0].error or "") and "RATE_LIMIT" in (done[0].error or "")

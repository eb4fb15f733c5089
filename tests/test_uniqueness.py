"""Uniqueness the caller chooses (issue 11), on both databases: ``unique_key`` narrows
what a job matches, ``on_conflict`` says what scheduling does with a match (replace,
keep, allow), alone, in bulk, under concurrency (threads and processes), for follow-up
rows, from module defaults and from the command line."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import (
    RECORD_JOB,
    Side,
    open_table,
    row_count,
    run_burst,
    run_cli,
    run_together,
    sql,
    subprocess_env,
    write_jobs,
)

from jobtable import JobStatus, WorkerJobConfig


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    return write_jobs(tmp_path / "jobs", {
        "note": RECORD_JOB,
        "mail": 'ON_CONFLICT = "allow"\n' + RECORD_JOB,
        "flaky": """
            def run(params):
                record(params.job.id, "run")
                if params.job.retry_count == 0:
                    raise RuntimeError("first try fails")
                return {"retry": params.job.retry_count}
        """})


def _pending(db_url: str, job_type: str = "note", user_id: int = 7) -> list[int]:
    rows = sql(db_url, "SELECT id FROM worker_jobs WHERE type = %s AND user_id = %s "
               "AND finished IS NULL ORDER BY id", job_type, user_id)
    return [int(r[0]) for r in rows]


def _status(jt: object, job_id: int) -> JobStatus:
    row = jt.get_job(job_id)  # type: ignore[attr-defined]
    assert row is not None
    return row.status  # type: ignore[no-any-return]


def test_two_allow_jobs_for_one_user_are_both_pending_and_both_run(
        db_url: str, jobs: Path, tmp_path: Path) -> None:
    side = Side(db_url, tmp_path)
    with open_table(db_url, jobs) as jt, side.env():
        first = jt.schedule_job(WorkerJobConfig(type="note", user_id=7, data={"to": "a"},
                                                on_conflict="allow"))
        second = jt.schedule_job(WorkerJobConfig(type="note", user_id=7, data={"to": "b"},
                                                 on_conflict="allow"))
        assert first.inserted and second.inserted
        assert _pending(db_url) == [first.id, second.id]
        run_burst(jt)
        assert sorted(side.job_ids()) == [first.id, second.id]
        assert {_status(jt, first.id), _status(jt, second.id)} == {JobStatus.SUCCEEDED}


def test_the_module_default_on_conflict_allow_keeps_both_mails(
        db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        a = jt.schedule_job(WorkerJobConfig(type="mail", user_id=7, data={"to": "a"}))
        b = jt.schedule_job(WorkerJobConfig(type="mail", user_id=7, data={"to": "b"}))
        assert (a.on_conflict, b.on_conflict) == ("allow", "allow")
        assert _pending(db_url, "mail") == [a.id, b.id]


def test_keep_returns_the_existing_row_and_writes_nothing(db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        first = jt.schedule_job(WorkerJobConfig(type="note", user_id=7, unique_key="k",
                                                data={"v": 1}, on_conflict="keep"))
        assert first.inserted is True
        before = sql(db_url, "SELECT id, updated_at FROM worker_jobs ORDER BY id")
        again = jt.schedule_job(WorkerJobConfig(type="note", user_id=7, unique_key="k",
                                                data={"v": 2}, on_conflict="keep"))
        assert again.inserted is False
        assert again.id == first.id and again.data == {"v": 1}
        assert again == first  # `inserted` takes no part in equality
        assert sql(db_url, "SELECT id, updated_at FROM worker_jobs ORDER BY id") == before
        assert "inserted" not in again.to_dict()
        # Another key, or no match at all, inserts.
        other = jt.schedule_job(WorkerJobConfig(type="note", user_id=7, unique_key="j",
                                                on_conflict="keep"))
        assert other.inserted and other.id != first.id
        assert row_count(db_url) == 2


def test_keep_without_a_key_matches_any_pending_job_of_the_pair(
        db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        keyed = jt.schedule_job(WorkerJobConfig(type="note", user_id=7, unique_key="k"))
        kept = jt.schedule_job(WorkerJobConfig(type="note", user_id=7, on_conflict="keep"))
        assert (kept.inserted, kept.id) == (False, keyed.id)
        # Once the match is finished, keep inserts again.
        run_burst(jt)
        fresh = jt.schedule_job(WorkerJobConfig(type="note", user_id=7, on_conflict="keep"))
        assert fresh.inserted and fresh.id != keyed.id


def test_replace_with_a_unique_key_cancels_only_that_key(db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        plain = jt.schedule_job(WorkerJobConfig(type="note", user_id=7))
        a1 = jt.schedule_job(WorkerJobConfig(type="note", user_id=7, unique_key="a"))
        b1 = jt.schedule_job(WorkerJobConfig(type="note", user_id=7, unique_key="b"))
        a2 = jt.schedule_job(WorkerJobConfig(type="note", user_id=7, unique_key="a"))
        assert _status(jt, a1.id) is JobStatus.CANCELLED
        # Another key and the un-keyed job are not matched by key "a".
        assert _pending(db_url) == [plain.id, b1.id, a2.id]


def test_replace_without_a_key_cancels_every_pending_job_of_the_pair(
        db_url: str, jobs: Path) -> None:
    # unique_key None matches as before keys existed: the whole (type, user_id) pair,
    # keyed rows and allowed rows included.
    with open_table(db_url, jobs) as jt:
        keyed = jt.schedule_job(WorkerJobConfig(type="note", user_id=7, unique_key="a"))
        allowed = jt.schedule_job(WorkerJobConfig(type="note", user_id=7, on_conflict="allow"))
        other_user = jt.schedule_job(WorkerJobConfig(type="note", user_id=8, unique_key="a"))
        last = jt.schedule_job(WorkerJobConfig(type="note", user_id=7))
        assert _status(jt, keyed.id) is JobStatus.CANCELLED
        assert _status(jt, allowed.id) is JobStatus.CANCELLED
        assert _status(jt, other_user.id) is JobStatus.PENDING
        assert _pending(db_url) == [last.id]


def test_bulk_applies_each_rule_within_the_batch_and_against_the_table(
        db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        table_k = jt.schedule_job(WorkerJobConfig(type="note", user_id=7, unique_key="k"))
        table_r = jt.schedule_job(WorkerJobConfig(type="note", user_id=7, unique_key="r"))
        rows = jt.schedule_jobs([
            WorkerJobConfig(type="note", user_id=7, unique_key="k", on_conflict="keep"),
            WorkerJobConfig(type="note", user_id=7, unique_key="n", on_conflict="keep",
                            data={"v": 1}),
            WorkerJobConfig(type="note", user_id=7, unique_key="n", on_conflict="keep",
                            data={"v": 2}),
            WorkerJobConfig(type="note", user_id=7, unique_key="r", data={"v": 3}),
            WorkerJobConfig(type="note", user_id=7, unique_key="a", on_conflict="allow"),
            WorkerJobConfig(type="note", user_id=7, unique_key="a", on_conflict="allow"),
            WorkerJobConfig(type="note", user_id=8, unique_key="r", data={"v": 4}),
            WorkerJobConfig(type="note", user_id=8, unique_key="r", data={"v": 5}),
        ])
        assert [r.inserted for r in rows] == [False, True, False, True, True, True, True,
                                              True]
        assert rows[0].id == table_k.id
        assert rows[2].id == rows[1].id and rows[2].data == {"v": 1}
        assert _status(jt, table_r.id) is JobStatus.CANCELLED
        assert rows[6].status is JobStatus.CANCELLED  # the last of its match won
        assert _pending(db_url, "note", 7) == [table_k.id, rows[1].id, rows[3].id,
                                               rows[4].id, rows[5].id]
        assert _pending(db_url, "note", 8) == [rows[7].id]


def test_a_batch_of_replacing_jobs_only_keeps_the_semantics_one_after_another(
        db_url: str, jobs: Path) -> None:
    # The fast path (no keep in the batch) cancels table rows by match on the server.
    with open_table(db_url, jobs) as jt:
        keyed = jt.schedule_job(WorkerJobConfig(type="note", user_id=7, unique_key="k"))
        other = jt.schedule_job(WorkerJobConfig(type="note", user_id=7, unique_key="o"))
        rows = jt.schedule_jobs([
            WorkerJobConfig(type="note", user_id=7, unique_key="k"),
            WorkerJobConfig(type="note", user_id=7, on_conflict="allow"),
            WorkerJobConfig(type="note", user_id=7, unique_key="k"),
        ])
        assert _status(jt, keyed.id) is JobStatus.CANCELLED
        assert [r.status for r in rows] == [JobStatus.CANCELLED, JobStatus.PENDING,
                                            JobStatus.PENDING]
        assert _pending(db_url) == [other.id, rows[1].id, rows[2].id]


@pytest.mark.parametrize("tables", ["shared", "one-per-thread"])
def test_twenty_threads_keeping_one_key_leave_one_row_and_all_hold_its_id(
        db_url: str, jobs: Path, tables: str) -> None:
    shared = open_table(db_url, jobs)
    shared.migrate()
    own = [open_table(db_url, jobs) if tables == "one-per-thread" else shared
           for _ in range(20)]
    got: dict[int, tuple[int, bool]] = {}

    def schedule(index: int) -> None:
        job = own[index].schedule_job(WorkerJobConfig(
            type="note", user_id=42, unique_key="invoice-1", on_conflict="keep",
            data={"thread": index}))
        got[index] = (job.id, job.inserted)

    try:
        errors = run_together(20, schedule, timeout=60)
    finally:
        for table in {id(t): t for t in own}.values():
            table.close()
        if tables == "one-per-thread":
            shared.close()
    assert errors == []
    assert row_count(db_url) == 1
    (only,) = _pending(db_url, "note", 42)
    assert {job_id for job_id, _ in got.values()} == {only}
    assert sorted(inserted for _, inserted in got.values()) == [False] * 19 + [True]


def test_twenty_threads_replacing_one_key_leave_one_pending_row_the_last(
        db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        jt.migrate()
        ids: list[int] = []

        def schedule(index: int) -> None:
            ids.append(jt.schedule_job(WorkerJobConfig(
                type="note", user_id=42, unique_key="k", data={"thread": index})).id)

        assert run_together(20, schedule, timeout=60) == []
        assert row_count(db_url) == 20
        # The one left pending is the last one written.
        assert _pending(db_url, "note", 42) == [max(ids)]


KEEPER_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from jobtable import JobTable, WorkerJobConfig
    db, jobs, go = sys.argv[1], sys.argv[2], sys.argv[3]
    with JobTable(db, jobs=jobs) as jt:
        jt.migrate()
        print("ready", flush=True)
        while not os.path.exists(go):
            time.sleep(0.005)
        for n in range(5):
            job = jt.schedule_job(WorkerJobConfig(type="note", user_id=42, unique_key="k",
                                                  on_conflict="keep", data={"n": n}))
            print(job.id, job.inserted, flush=True)
""")


def test_processes_keeping_one_key_leave_one_row(
        db_url: str, jobs: Path, tmp_path: Path) -> None:
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", KEEPER_SCRIPT, db_url, str(jobs),
                               str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=subprocess_env())
             for _ in range(4)]
    lines: list[str] = []
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready", proc.stderr
        go.touch()
        for proc in procs:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            lines.extend(out.split())
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert row_count(db_url) == 1
    ids, inserted = lines[0::2], lines[1::2]
    assert set(ids) == {str(_pending(db_url, "note", 42)[0])}
    assert sorted(inserted) == ["False"] * 19 + ["True"]


def test_a_retry_of_a_keep_job_is_written_and_carries_key_and_policy(
        db_url: str, jobs: Path, tmp_path: Path) -> None:
    # The failing row is finished when its retry is inserted, so it does not match.
    side = Side(db_url, tmp_path)
    with open_table(db_url, jobs) as jt, side.env():
        job = jt.schedule_job(WorkerJobConfig(
            type="flaky", user_id=7, unique_key="k", on_conflict="keep",
            auto_reschedule_on_failure=True))
        run_burst(jt)
        chain = jt.job_chain(job.id)
        assert [j.status for j in chain] == [JobStatus.FAILED, JobStatus.SUCCEEDED]
        assert {(j.unique_key, j.on_conflict) for j in chain} == {("k", "keep")}


def test_a_retry_with_keep_is_not_written_when_a_match_is_already_pending(
        db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        job = jt.schedule_job(WorkerJobConfig(
            type="flaky", user_id=7, unique_key="k", on_conflict="keep",
            auto_reschedule_on_failure=True))
        claimed = jt.store.claim("w", 1)
        assert [c.id for c in claimed] == [job.id]
        # While it runs, another job of the same key is scheduled (allow: beside it).
        waiting = jt.schedule_job(WorkerJobConfig(type="flaky", user_id=7, unique_key="k",
                                                  on_conflict="allow"))
        from jobtable import rules
        from jobtable.model import Outcome
        from jobtable.timeutil import utcnow
        job_row = claimed[0]
        jt.store.complete([Outcome(job=job_row, success=False, result={"error": "x"},
                                   follow_up=rules.follow_up(job_row, False, utcnow()))])
        # The retry matched the waiting job and was not written.
        assert _pending(db_url, "flaky") == [waiting.id]


def test_the_command_line_takes_unique_key_and_on_conflict(
        db_url: str, jobs: Path) -> None:
    base = ("schedule", "note", "--database", db_url, "--jobs", str(jobs), "--user-id", "7",
            "--unique-key", "k", "--json")
    first = run_cli(*base, "--on-conflict", "keep")
    assert first.returncode == 0, first.stderr
    row = json.loads(first.stdout)
    assert (row["unique_key"], row["on_conflict"]) == ("k", "keep")
    again = run_cli(*base[:-1], "--on-conflict", "keep")
    assert again.returncode == 0, again.stderr
    assert f"kept pending job {row['id']}" in again.stdout
    assert row_count(db_url) == 1
    bad = run_cli(*base, "--on-conflict", "ignore")
    assert bad.returncode == 2 and "'ignore' is not one of" in bad.stderr
    assert row_count(db_url) == 1

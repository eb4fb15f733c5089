"""Scheduling inside the application's own transaction (``connection=``, issue 11), on
both databases: the job exists for workers only once the application commits, never
after a rollback; with the driver's connection (psycopg 3, sqlite3), SQLAlchemy's
Connection, Session and async session, Django's connection; a connection that cannot be
used is refused and nothing is written."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import PG_ADMIN_URL, pg_base_url
from helpers import (
    RECORD_JOB,
    BackgroundWorker,
    Side,
    open_table,
    row_count,
    run_burst,
    sql,
    subprocess_env,
    wait_until,
    write_jobs,
)

from jobtable import JobStatus, UnusableConnectionError, WorkerJobConfig


@pytest.fixture
def jobs(tmp_path: Path) -> Path:
    return write_jobs(tmp_path / "jobs", {"note": RECORD_JOB})


def _connect(db_url: str) -> Any:
    """The driver's own connection to the queue database, not in autocommit mode."""
    if db_url.startswith("postgresql"):
        return psycopg.connect(db_url)
    return sqlite3.connect(db_url.removeprefix("sqlite:///"), timeout=30)


def _notes(db_url: str) -> int:
    """Rows of the test's job type (a worker adds its cleanup chain's row)."""
    return int(sql(db_url, "SELECT COUNT(*) FROM worker_jobs WHERE type = 'note'")[0][0])


def _sqlalchemy_url(db_url: str) -> str:
    return db_url.replace("postgresql://", "postgresql+psycopg://", 1)


CONFIG = WorkerJobConfig(type="note", user_id=7, data={"order": 1})


def test_a_rolled_back_job_never_exists_and_a_committed_one_runs(
        db_url: str, jobs: Path, tmp_path: Path) -> None:
    side = Side(db_url, tmp_path)
    with open_table(db_url, jobs) as jt, side.env():
        jt.migrate()
        conn = _connect(db_url)
        try:
            gone = jt.schedule_job(CONFIG, connection=conn)
            assert gone.status is JobStatus.PENDING and gone.inserted
            conn.rollback()
            assert jt.get_job(gone.id) is None and jt.list_jobs() == []
            run_burst(jt)
            assert side.count() == 0 and _notes(db_url) == 0

            kept = jt.schedule_jobs([CONFIG, WorkerJobConfig(type="note", user_id=8)],
                                    connection=conn)
            assert jt.get_job(kept[0].id) is None  # not committed yet
            conn.commit()
        finally:
            conn.close()
        run_burst(jt)
        assert sorted(side.job_ids()) == [kept[0].id, kept[1].id]


def test_a_sqlalchemy_session_commits_or_rolls_back_the_job_with_its_own_rows(
        db_url: str, jobs: Path, tmp_path: Path) -> None:
    import sqlalchemy as sa
    from sqlalchemy.orm import Session

    side = Side(db_url, tmp_path)
    engine = sa.create_engine(_sqlalchemy_url(db_url))
    with open_table(db_url, jobs) as jt, side.env():
        jt.migrate()
        with Session(engine) as session:
            session.execute(sa.text("CREATE TABLE orders (id integer)"))
            session.commit()
            session.execute(sa.text("INSERT INTO orders VALUES (1)"))
            jt.schedule_job(WorkerJobConfig(type="note", user_id=7, data={"order": 1}),
                            connection=session)
            session.rollback()
            session.execute(sa.text("INSERT INTO orders VALUES (2)"))
            committed = jt.schedule_job(
                WorkerJobConfig(type="note", user_id=7, data={"order": 2}),
                connection=session)
            session.commit()
            assert session.execute(sa.text("SELECT id FROM orders")).scalars().all() == [2]
        with engine.connect() as connection:  # a Connection works the same
            plain = jt.schedule_job(WorkerJobConfig(type="note", user_id=9),
                                    connection=connection)
            connection.commit()
        # (SQLite may give a rolled-back row's id to the next row: compare the data.)
        assert sorted(j.data.get("order", 0) for j in jt.list_jobs()) == [0, 2]
        run_burst(jt)
        assert sorted(side.job_ids()) == [committed.id, plain.id]
    engine.dispose()


def test_a_worker_never_sees_a_job_of_an_uncommitted_transaction(
        db_url: str, jobs: Path, tmp_path: Path) -> None:
    side = Side(db_url, tmp_path)
    with open_table(db_url, jobs) as jt, side.env():
        jt.migrate()
        with BackgroundWorker(jt):
            conn = _connect(db_url)
            try:
                job = jt.schedule_job(CONFIG, connection=conn)
                time.sleep(1.0)  # the worker is polling and listening meanwhile
                assert side.count() == 0
                conn.commit()
            finally:
                conn.close()
            wait_until(lambda: side.job_ids() == [job.id], what="the committed job to run")


def test_scheduling_on_a_connection_keeps_rule_two_with_other_schedulers(
        db_url: str, jobs: Path) -> None:
    # The caller's transaction holds the pair's lock (SQLite: the write lock) until it
    # commits, so a concurrent `keep` waits and then finds the committed job.
    keep = WorkerJobConfig(type="note", user_id=7, unique_key="k", on_conflict="keep")
    with open_table(db_url, jobs) as jt:
        jt.migrate()
        conn = _connect(db_url)
        try:
            first = jt.schedule_job(keep, connection=conn)
            got: list[Any] = []
            other = threading.Thread(target=lambda: got.append(jt.schedule_job(keep)))
            other.start()
            time.sleep(0.5)
            assert got == []  # waiting for the transaction
            conn.commit()
            other.join(30)
        finally:
            conn.close()
        assert [(g.id, g.inserted) for g in got] == [(first.id, False)]
        assert row_count(db_url) == 1


@pytest.fixture
def other_db_url(db_url: str, tmp_path: Path) -> Iterator[str]:
    """Another (empty) database of the same kind."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'other.db'}"
        return
    name = f"jt_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"{pg_base_url()}/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_connection_to_another_database_is_refused(
        db_url: str, other_db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt, open_table(other_db_url, jobs) as other_jt:
        jt.migrate()
        other_jt.migrate()  # the same tables there: only the identity tells them apart
        conn = _connect(other_db_url)
        try:
            with pytest.raises(UnusableConnectionError, match="not this JobTable's database"):
                jt.schedule_job(CONFIG, connection=conn)
            conn.commit()
        finally:
            conn.close()
        assert row_count(db_url) == 0 and row_count(other_db_url) == 0


def test_unusable_connections_are_refused_and_nothing_is_written(
        db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        jt.migrate()
        closed = _connect(db_url)
        closed.close()
        with pytest.raises(UnusableConnectionError, match="closed"):
            jt.schedule_job(CONFIG, connection=closed)
        with pytest.raises(UnusableConnectionError, match="jobtable accepts a psycopg 3"):
            jt.schedule_job(CONFIG, connection=object())
        wrong_kind = (sqlite3.connect(":memory:") if db_url.startswith("postgresql")
                      else None)
        if wrong_kind is not None:
            with pytest.raises(UnusableConnectionError, match="database is PostgreSQL"):
                jt.schedule_job(CONFIG, connection=wrong_kind)
            wrong_kind.close()
        if db_url.startswith("postgresql"):
            conn = psycopg.connect(db_url)
            with pytest.raises(psycopg.errors.UndefinedTable):
                conn.execute("SELECT * FROM no_such_table")
            with pytest.raises(UnusableConnectionError, match="failed transaction"):
                jt.schedule_job(CONFIG, connection=conn)
            conn.rollback()
            conn.close()
        # A job that fails inside the caller's transaction leaves it usable.
        conn = _connect(db_url)
        try:
            with pytest.raises(UnusableConnectionError):
                jt.schedule_job(CONFIG, connection=conn.cursor())
            job = jt.schedule_job(CONFIG, connection=conn)
            conn.commit()
        finally:
            conn.close()
        assert row_count(db_url) == 1 and jt.get_job(job.id) is not None


def test_an_autocommit_connection_gets_the_job_committed_at_once(
        db_url: str, jobs: Path) -> None:
    with open_table(db_url, jobs) as jt:
        jt.migrate()
        if db_url.startswith("postgresql"):
            conn: Any = psycopg.connect(db_url, autocommit=True)
        else:
            conn = sqlite3.connect(db_url.removeprefix("sqlite:///"), isolation_level=None)
        try:
            job = jt.schedule_job(CONFIG, connection=conn)
            assert jt.get_job(job.id) is not None  # committed, as its statements are
        finally:
            conn.close()


def test_async_connections_schedule_in_their_transaction(pg_url: str, jobs: Path) -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, create_async_engine

    async def main(jt: Any) -> tuple[int, int, int]:
        async with await psycopg.AsyncConnection.connect(pg_url) as conn:
            rolled = await jt.schedule_job_async(CONFIG, connection=conn)
            await conn.rollback()
            kept = await jt.schedule_job_async(CONFIG, connection=conn)
            await conn.commit()
        engine = create_async_engine(_sqlalchemy_url(pg_url))
        async with AsyncSession(engine) as session:
            [in_session] = await jt.schedule_jobs_async(
                [WorkerJobConfig(type="note", user_id=8)], connection=session)
            await session.commit()
        await engine.dispose()
        return rolled.id, kept.id, in_session.id

    with open_table(pg_url, jobs) as jt:
        jt.migrate()
        rolled, kept, in_session = asyncio.run(main(jt))
        assert jt.get_job(rolled) is None
        assert [jt.get_job(i) is not None for i in (kept, in_session)] == [True, True]
        with pytest.raises(UnusableConnectionError, match="schedule_job_async"):
            async def sync_call() -> None:
                async with await psycopg.AsyncConnection.connect(pg_url) as conn:
                    jt.schedule_job(CONFIG, connection=conn)
            asyncio.run(sync_call())


DJANGO_SCRIPT = textwrap.dedent("""
    import sys
    import django
    from django.db import connection, transaction
    from jobtable import JobTable, WorkerJobConfig

    django.setup()
    url, jobs = sys.argv[1], sys.argv[2]
    with JobTable(url, jobs=jobs) as jt:
        jt.migrate()
        with connection.cursor() as cur:
            cur.execute("CREATE TABLE orders (id integer)")
        try:
            with transaction.atomic():
                with connection.cursor() as cur:
                    cur.execute("INSERT INTO orders VALUES (1)")
                jt.schedule_job(WorkerJobConfig(type="note", user_id=1, data={"n": "gone"}),
                                connection=connection)
                raise RuntimeError("the view failed")
        except RuntimeError:
            pass
        with transaction.atomic():
            with connection.cursor() as cur:
                cur.execute("INSERT INTO orders VALUES (2)")
            kept = jt.schedule_job(WorkerJobConfig(type="note", user_id=1, data={"n": "kept"}),
                                   connection=connection)
            assert jt.get_job(kept.id) is None, "visible before the commit"
        outside = jt.schedule_job(WorkerJobConfig(type="note", user_id=2, data={"n": "out"}),
                                  connection=connection)  # autocommit: committed at once
        with connection.cursor() as cur:
            cur.execute("SELECT id FROM orders")
            orders = [r[0] for r in cur.fetchall()]
        print(orders, sorted(j.data["n"] for j in jt.list_jobs()),
              jt.get_job(kept.id).status.value, jt.get_job(outside.id).status.value)
""")


def test_django_connection_schedules_inside_an_atomic_block(
        db_url: str, jobs: Path, tmp_path: Path) -> None:
    pytest.importorskip("django")
    if db_url.startswith("postgresql"):
        name = db_url.rsplit("/", 1)[1]
        database = (f"{{'ENGINE': 'django.db.backends.postgresql', 'NAME': {name!r}, "
                    "'USER': 'postgres', 'HOST': '127.0.0.1', 'PORT': 5432}")
    else:
        path = db_url.removeprefix("sqlite:///")
        database = f"{{'ENGINE': 'django.db.backends.sqlite3', 'NAME': {path!r}}}"
    (tmp_path / "shop_settings.py").write_text(
        f"DATABASES = {{'default': {database}}}\nUSE_TZ = True\nSECRET_KEY = 'test'\n"
        "INSTALLED_APPS = []\n")
    env = subprocess_env(DJANGO_SETTINGS_MODULE="shop_settings",
                         PYTHONPATH=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", DJANGO_SCRIPT, db_url, str(jobs)],
                          capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["[2]", "['kept',", "'out']", "pending", "pending"]

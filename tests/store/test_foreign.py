"""The store on a connection of the application's: rule 2 inside its transaction, on
both dialects, with the driver's own connection."""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Any

import psycopg
import pytest

from jobtable.errors import UnusableConnectionError
from jobtable.store import Store

from .test_conformance import new


def _connect(store: Store) -> Any:
    if store.dialect == "postgres":
        return psycopg.connect(store.url)
    return sqlite3.connect(store.url.removeprefix("sqlite:///"), timeout=30)


def test_schedule_on_runs_rule_two_in_the_callers_transaction(store: Store) -> None:
    table_row = store.schedule([new(user_id=1)])[0]
    keep = dataclasses.replace(new(user_id=1), on_conflict="keep")
    conn = _connect(store)
    try:
        kept = store.schedule_on(conn, [keep])  # planned against the table, under a lock
        assert [(j.id, j.inserted) for j in kept] == [(table_row.id, False)]
        [replacing] = store.schedule_on(conn, [new(user_id=1)])  # one server-side call
        assert store.get_job(replacing.id) is None  # not committed
        assert store.get_job(table_row.id).finished is None  # type: ignore[union-attr]
        conn.rollback()
        assert store.get_job(table_row.id).finished is None  # type: ignore[union-attr]
        assert store.schedule_on(conn, []) == []
        [mine] = store.schedule_on(conn, [dataclasses.replace(new(user_id=2),
                                                               unique_key="k")])
        conn.commit()
    finally:
        conn.close()
    row = store.get_job(mine.id)
    assert row is not None and (row.unique_key, row.finished) == ("k", None)


def test_schedule_on_refuses_what_it_cannot_use(store: Store) -> None:
    with pytest.raises(UnusableConnectionError, match="jobtable accepts"):
        store.schedule_on("not a connection", [new()])
    assert store.list_jobs() == []


def test_a_finish_watch_is_signalled_when_a_job_finishes(store: Store) -> None:
    import threading

    from jobtable.model import Outcome

    with store.finish_watch() as watch:
        [job] = store.schedule([new(user_id=3)])
        [claimed] = store.claim("w", 1)
        assert claimed.id == job.id
        store.complete([Outcome(job=claimed, success=True, result={"ok": True})])
        # The signal is there already: the wait returns long before its limit (an hour).
        waiter = threading.Thread(target=watch.wait, args=(job.id, 3600), daemon=True)
        waiter.start()
        waiter.join(60)
        assert not waiter.is_alive(), "no finish signal reached the watch"

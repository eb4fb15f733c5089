"""What a store offers the worker so that the worker needs no driver and no dialect
branch: wake-ups when another process makes a job due, and transient-error checks."""

from __future__ import annotations

import asyncio
import sqlite3
from datetime import timedelta

import psycopg

from jobtable import rules
from jobtable.model import NewJob, ValidConfig
from jobtable.store import Store
from jobtable.timeutil import utcnow

from .conftest import open_more


def _job(user_id: int) -> NewJob:
    config = ValidConfig(type="tick", user_id=user_id, data={}, due=None,
                         auto_reschedule_on_failure=False,
                         auto_reschedule_on_failure_delay=timedelta(0),
                         remove_delay=timedelta(hours=1))
    return rules.new_job(config, utcnow())


def test_wakeups_fire_when_another_connection_schedules_a_job(store: Store) -> None:
    (other,) = open_more(store, 1)

    async def main() -> tuple[bool, bool]:
        event = asyncio.Event()
        wakeups = store.wakeups(event)
        await wakeups.start()
        try:
            # Settle: PostgreSQL's LISTEN connects (and signals once); SQLite's watcher
            # reads the first data_version.
            for _ in range(600):
                if store.dialect == "sqlite" or wakeups.listening:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            event.clear()
            await asyncio.to_thread(other.schedule, [_job(1)])
            await asyncio.wait_for(event.wait(), 30)
            fired = event.is_set()
        finally:
            await wakeups.stop()
        event.clear()
        await asyncio.to_thread(other.schedule, [_job(2)])
        await asyncio.sleep(0.3)
        return fired, event.is_set()

    try:
        fired, after_stop = asyncio.run(main())
    finally:
        other.close()
    assert fired
    assert not after_stop


def test_is_transient_tells_a_lost_connection_from_a_refusal(store: Store) -> None:
    assert store.is_transient(ConnectionError("reset by peer"))
    assert store.is_transient(TimeoutError())
    assert not store.is_transient(ValueError("bad data"))
    assert not store.is_transient(KeyError("x"))
    if store.dialect == "sqlite":
        assert store.is_transient(sqlite3.OperationalError("database is locked"))
        assert not store.is_transient(sqlite3.IntegrityError("NOT NULL constraint failed"))
    else:
        assert store.is_transient(psycopg.OperationalError("server closed the connection"))
        assert not store.is_transient(psycopg.errors.NotNullViolation("null value"))

"""The one migration runner, on both dialects."""

from __future__ import annotations

import threading

import pytest
from helpers import sql

from jobtable import MigrationError
from jobtable.store import open_store
from jobtable.store.migrate import migration_files


def test_a_fresh_database_gets_every_migration_once(db_url: str) -> None:
    with open_store(db_url) as store:
        names = [m.name for m in migration_files(store.dialect)]
        assert store.applied_migrations() == [] and store.pending_migrations() == names
        assert store.migrate() == names
        assert [n for _, n in store.applied_migrations()] == names
        assert store.pending_migrations() == [] and store.migrate() == []


def test_concurrent_migrators_apply_each_migration_exactly_once(db_url: str) -> None:
    stores = [open_store(db_url) for _ in range(3)]
    applied: list[list[str]] = [[] for _ in stores]
    errors: list[BaseException] = []
    start = threading.Barrier(len(stores))

    def run(i: int) -> None:
        start.wait()
        try:
            applied[i] = stores[i].migrate()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    names = [m.name for m in migration_files(stores[0].dialect)]
    for s in stores:
        s.close()
    assert errors == []
    assert sorted(n for a in applied for n in a) == sorted(names)


def test_a_database_newer_than_this_jobtable_is_refused(db_url: str) -> None:
    with open_store(db_url) as store:
        store.migrate()
        sql(db_url, "INSERT INTO jobtable_migrations (version, name, applied_at) "
                    "VALUES (%s, %s, %s)", 9999, "9999_future", "2030-01-01T00:00:00+00:00")
        with pytest.raises(MigrationError, match=r"migrations \[9999\] this jobtable does not "
                                                 "know; upgrade jobtable"):
            store.migrate()

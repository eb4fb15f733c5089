"""The store conformance suite: every store runs the same tests (``db_url``), and every
named query of a dialect is run by them at least once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import jobtable.store.postgres
import jobtable.store.sqlite
from jobtable.store import Store, open_store

EXECUTED: dict[str, set[str]] = {"sqlite": set(), "postgres": set()}


@pytest.fixture(autouse=True)
def _record_queries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Note the name of every query a store runs (the queries still run for real)."""
    for module in (jobtable.store.sqlite, jobtable.store.postgres):
        real = module.query

        def spy(queries: dict[str, str], name: str, dialect: str, real: Any = real) -> str:
            sql = real(queries, name, dialect)
            EXECUTED[dialect].add(name)
            return sql

        monkeypatch.setattr(module, "query", spy)


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    """A migrated store on a fresh database."""
    with open_store(db_url) as s:
        s.migrate()
        yield s


def open_more(store: Store, count: int) -> list[Store]:
    """Other stores on the same database, as other processes would hold."""
    return [open_store(store.url) for _ in range(count)]

"""Runs after the conformance tests (file order): every named query was exercised."""

from __future__ import annotations

import pytest

import jobtable.store.postgres
import jobtable.store.sqlite

from .conftest import EXECUTED

KNOWN = {"sqlite": set(jobtable.store.sqlite._QUERIES),
         "postgres": set(jobtable.store.postgres._QUERIES)}


@pytest.mark.parametrize("dialect", ["sqlite", "postgres"])
def test_every_named_query_is_exercised_by_the_suite(dialect: str) -> None:
    if not EXECUTED[dialect]:
        pytest.skip(f"the {dialect} conformance tests did not run in this session")
    if len(EXECUTED[dialect]) < len(KNOWN[dialect]) // 2:
        pytest.skip("only part of the conformance suite ran (-k?)")
    missing = KNOWN[dialect] - EXECUTED[dialect]
    assert not missing, (
        f"named {dialect} queries no store test runs: {sorted(missing)}; exercise them in "
        "tests/store (or remove them if nothing uses them)")

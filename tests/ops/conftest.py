"""Fixtures of the operations tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jobtable import JobTable

from ._support import Cli, table, write_jobs


@pytest.fixture
def jobs_dir(tmp_path: Path) -> Path:
    """A jobs folder with send_report, sync_prices and boom."""
    return write_jobs(tmp_path / "jobs")


@pytest.fixture
def jt(db_url: str, jobs_dir: Path) -> Iterator[JobTable]:
    """A migrated ``JobTable`` on each database."""
    with table(db_url, jobs_dir) as handle:
        yield handle


@pytest.fixture
def cli(db_url: str, jobs_dir: Path, jt: JobTable) -> Cli:
    """``cli("jobs", "--json")`` runs ``jobtable jobs --json --database URL``."""
    return Cli(db_url, jobs_dir)

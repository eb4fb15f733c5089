"""A private PostgreSQL server that a test may restart without disturbing anything else."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"


def _bindir() -> str | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if os.path.exists(os.path.join(candidate, "initdb")):
            return candidate
    initdb = shutil.which("initdb")
    return os.path.dirname(initdb) if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PrivatePostgres:
    """A throw-away PostgreSQL cluster on its own port."""

    url: str
    restart: Callable[[], None]
    stop: Callable[[], None]
    start: Callable[[], None]


@pytest.fixture
def private_pg() -> Iterator[PrivatePostgres]:
    """Start a private PostgreSQL cluster (initdb in a temporary folder)."""
    bindir = _bindir()
    as_postgres: list[str] = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            bindir = None
        as_postgres = [runuser or "runuser", "-u", "postgres", "--"]
    if bindir is None:
        if IN_CI:
            pytest.fail("initdb/pg_ctl are needed under CI=true to restart a private PostgreSQL")
        pytest.skip("initdb/pg_ctl not found: cannot run a private PostgreSQL to restart")
    folder = tempfile.mkdtemp(prefix="jobtable-pg-")
    os.chmod(folder, 0o755)
    if as_postgres:
        shutil.chown(folder, "postgres", "postgres")
    data = os.path.join(folder, "data")
    port = _free_port()
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"

    def ctl(*args: str) -> None:
        subprocess.run([*as_postgres, f"{bindir}/pg_ctl", "-D", data, "-l",
                        os.path.join(folder, "server.log"), *args],
                       check=True, stdout=subprocess.DEVNULL, timeout=120)

    subprocess.run([*as_postgres, f"{bindir}/initdb", "-D", data, "-A", "trust", "-U",
                    "postgres", "--no-sync"], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=120)
    ctl("-o", options, "-w", "start")
    server = PrivatePostgres(
        url=f"postgresql://postgres@127.0.0.1:{port}/postgres",
        restart=lambda: ctl("-o", options, "-m", "fast", "-w", "restart"),
        stop=lambda: ctl("-m", "fast", "-w", "stop"),
        start=lambda: ctl("-o", options, "-w", "start"))
    try:
        yield server
    finally:
        subprocess.run([*as_postgres, f"{bindir}/pg_ctl", "-D", data, "-m", "immediate",
                        "stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       timeout=60)
        shutil.rmtree(folder, ignore_errors=True)

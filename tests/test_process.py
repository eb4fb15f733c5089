"""``jobtable.process``: a child in its own session, stop then force, death with its parent."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from helpers import pid_alive, wait_until

from jobtable.process import PARENT_ENV, AsyncChildProcess, ChildProcess, describe_exit


def _script(tmp_path: Path, name: str, body: str) -> list[str]:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body))
    return [sys.executable, str(path)]


def _sleeper(tmp_path: Path, *, ignore_term: bool) -> tuple[list[str], Path]:
    ready = tmp_path / "ready"
    command = _script(tmp_path, "sleeper.py", f"""
        import os, pathlib, signal, sys, time
        if {ignore_term!r}:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        pathlib.Path({str(ready)!r}).write_text(
            f"{{os.getsid(0)}} {{os.environ.get({PARENT_ENV!r})}}")
        time.sleep(120)
    """)
    return command, ready


def test_a_child_runs_in_its_own_session_and_knows_its_parent(tmp_path: Path) -> None:
    command, ready = _sleeper(tmp_path, ignore_term=False)
    child = ChildProcess.start(command)
    try:
        wait_until(ready.exists, 30, "the child to start")
        wait_until(lambda: ready.read_text(), 30, "the child to write")
        session, parent = ready.read_text().split()
        assert int(session) == child.pid != os.getsid(0)
        assert int(parent) == os.getpid()
    finally:
        child.kill()
        child.wait()


def test_stop_terminates_a_child_that_obeys_and_kills_one_that_ignores_sigterm(
        tmp_path: Path) -> None:
    forced: list[int] = []
    command, ready = _sleeper(tmp_path, ignore_term=False)
    polite = ChildProcess.start(command)
    wait_until(ready.exists, 30, "the child to start")
    assert polite.stop(30, on_force=lambda: forced.append(polite.pid)) == -signal.SIGTERM
    assert forced == []

    ready.unlink()
    command, ready = _sleeper(tmp_path, ignore_term=True)
    stubborn = ChildProcess.start(command)
    wait_until(ready.exists, 30, "the child to start")
    assert stubborn.stop(0.5, on_force=lambda: forced.append(stubborn.pid)) == -signal.SIGKILL
    assert forced == [stubborn.pid]
    assert describe_exit(-signal.SIGKILL) == "killed by SIGKILL"


def test_async_stop_terminates_then_kills(tmp_path: Path) -> None:
    command, ready = _sleeper(tmp_path, ignore_term=True)

    async def main() -> tuple[int, list[bool]]:
        forced: list[bool] = []
        child = await AsyncChildProcess.start(command)
        while not ready.exists():
            await asyncio.sleep(0.02)
        code = await child.stop(0.5, on_force=lambda: forced.append(True))
        return code, forced

    code, forced = asyncio.run(main())
    assert code == -signal.SIGKILL
    assert forced == [True]


def test_a_child_that_dies_with_its_parent_is_gone_when_the_parent_is_killed(
        tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    child = _script(tmp_path, "child.py", """
        import time
        from jobtable.process import die_with_parent
        die_with_parent()
        time.sleep(120)
    """)
    parent = _script(tmp_path, "parent.py", f"""
        import os, pathlib, time
        from jobtable.process import ChildProcess
        child = ChildProcess.start({child!r})
        time.sleep(0.5)  # let the child set its watch
        pathlib.Path({str(pids)!r}).write_text(f"{{os.getpid()}} {{child.pid}}")
        time.sleep(120)
    """)
    proc = subprocess.Popen(parent)
    try:
        wait_until(lambda: pids.exists() and pids.read_text(), 30, "the parent to start")
        parent_pid, child_pid = map(int, pids.read_text().split())
        assert pid_alive(child_pid)
        os.kill(parent_pid, signal.SIGKILL)
        proc.wait()
        wait_until(lambda: not pid_alive(child_pid), 30, "the orphaned child to die")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_child_whose_parent_is_already_gone_exits_at_once(tmp_path: Path) -> None:
    command = _script(tmp_path, "orphan.py", """
        import os, time
        from jobtable.process import die_with_parent
        die_with_parent(os.getppid() + 100_000)  # not our parent: it is gone
        time.sleep(120)
    """)
    done = subprocess.run(command, timeout=60, check=False)
    assert done.returncode == 70


def _supervise(tmp_path: Path, child_body: str) -> tuple[subprocess.Popen[bytes], Path]:
    started = tmp_path / "started"
    started.mkdir()
    child = _script(tmp_path, "worker.py", f"""
        import os, pathlib, signal, sys, time
        {child_body}
        (pathlib.Path({str(started)!r}) / str(os.getpid())).touch()
        time.sleep(120)
    """)
    supervisor = _script(tmp_path, "supervisor.py", f"""
        import sys
        from jobtable.supervisor import Supervisor
        sys.exit(Supervisor({child!r}, 2, 1.0).run())
    """)
    return subprocess.Popen(supervisor), started


def test_a_supervisor_whose_children_were_still_starting_stops_cleanly(
        tmp_path: Path) -> None:
    # The children have no SIGTERM handler yet, as a worker still importing.
    proc, started = _supervise(tmp_path, "")
    try:
        wait_until(lambda: len(list(started.iterdir())) == 2, 60, "two children to start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_supervisor_reports_a_child_that_exits_with_an_error_on_stop(
        tmp_path: Path) -> None:
    proc, started = _supervise(
        tmp_path, "signal.signal(signal.SIGTERM, lambda *_: os._exit(3))")
    try:
        wait_until(lambda: len(list(started.iterdir())) == 2, 60, "two children to start")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

"""Run one suspect job in a child process.

A job that was claimed before and never finished (its worker died, or its claim
was lost) may be what killed that worker. It runs again in a process of its own:
if it crashes again only that process dies, and the job is failed for good,
while innocent jobs that merely shared the dead worker succeed.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import signal
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path
from typing import Any

from jobtable import logs
from jobtable.model import WorkerJob
from jobtable.process import (
    ORPHAN_EXIT_CODE,
    AsyncChildProcess,
    describe_exit,
    die_with_parent,
)
from jobtable.settings import Settings
from jobtable.worker.execution import RunResult

log = logging.getLogger("jobtable.worker")
_STARTUP_ALLOWANCE = 60.0


def _settings_to_json(settings: Settings) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        out[field.name] = value.total_seconds() if isinstance(value, timedelta) else value
    return out


def isolated_slots() -> int:
    """How many isolated children may run at once: half the CPUs this process may use
    (at least one), so that a mass rescue does not start a Python process per job."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, cpus // 2)


async def run_isolated(settings: Settings, job: WorkerJob, timeout: float, grace: float, *,
                       last_attempt: bool, slots: asyncio.Semaphore | None = None
                       ) -> RunResult:
    """Run ``job`` in a child process and return how it ended.

    ``slots`` bounds the children running at once (the job waits for one). If the child
    crashes, the job is given back, charged a crash, to run again (alone again) unless
    this was its last attempt; then it is failed for good.
    """
    if slots is None:
        return await _run_isolated(settings, job, timeout, grace, last_attempt=last_attempt)
    async with slots:
        return await _run_isolated(settings, job, timeout, grace, last_attempt=last_attempt)


async def _run_isolated(settings: Settings, job: WorkerJob, timeout: float, grace: float, *,
                        last_attempt: bool) -> RunResult:
    with tempfile.TemporaryDirectory(prefix="jobtable-") as folder:
        out = Path(folder) / "result.json"
        spec = {"settings": _settings_to_json(settings), "job_id": job.id,
                "token": job.attempts, "timeout": timeout, "grace": grace, "out": str(out)}
        child = await AsyncChildProcess.start(
            [sys.executable, "-m", "jobtable.worker._child"], stdin=asyncio.subprocess.PIPE)
        stdin = child.proc.stdin
        assert stdin is not None
        try:
            stdin.write(json.dumps(spec).encode())
            await stdin.drain()
            stdin.close()
            code = await asyncio.wait_for(child.wait(), timeout + _STARTUP_ALLOWANCE)
        except BaseException:
            await child.stop(max(grace, 1.0))
            raise
        if code == 0 and out.exists():
            return RunResult(**json.loads(out.read_text()))
    how = describe_exit(code)
    crashes = job.crashes + 1
    if not last_attempt:
        log.warning("job %d crashed its isolated process (%s), crash %d running alone; it "
                    "will run again", job.id, how, crashes)
        return RunResult(False, None, release=True, crashed=True)
    log.error("job %d crashed its isolated process (%s), crash %d running alone; failing "
              "it for good", job.id, how, crashes)
    return RunResult(False, {
        "error": f"Job crashed its process ({how}) {crashes} times running alone "
                 f"(attempt {job.attempts}); it is not retried",
        "exception": "WorkerCrash"}, retry=False, crashed=True)


async def _child(spec: dict[str, Any]) -> RunResult:
    from jobtable.client import JobTable
    from jobtable.worker.execution import bootstrap_app, run_job

    settings = Settings().with_overrides(**{**spec["settings"], "auto_migrate": False})
    jt = JobTable(settings=settings)
    try:
        job = jt.store.get_job(spec["job_id"])
        if job is None or job.finished is not None or job.attempts != spec["token"]:
            return RunResult(False, {"error": "claim superseded before the isolated run",
                                     "exception": "Superseded"})
        app = await bootstrap_app(settings.app, jt)
        executor = ThreadPoolExecutor(1, thread_name_prefix="jobtable-job")
        result = await run_job(jt, app, job, executor, spec["timeout"], spec["grace"])
        executor.shutdown(wait=False, cancel_futures=True)
        return result
    finally:
        jt.close()


def main() -> None:
    """Entry point of the child: read the spec on stdin, write the outcome to a file."""
    try:
        spec = json.loads(sys.stdin.read())
    except (ValueError, OSError):
        # The worker died while sending the job: nothing to run, nobody to tell.
        sys.exit(ORPHAN_EXIT_CODE)
    # Never outlive the worker: a job still running after its worker died would run
    # twice at once once the job is rescued.
    die_with_parent()
    level = str(spec["settings"].get("log_level", "INFO")).upper()
    logs.configure(level, str(spec["settings"].get("log_format", "text")), sys.stderr)
    # The parent owns the stop signals; it terminates us when it must.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    result = asyncio.run(_child(spec))
    Path(spec["out"]).write_text(json.dumps(dataclasses.asdict(result)))
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # a plain-def job's thread may still be running; its result is not wanted


if __name__ == "__main__":
    main()

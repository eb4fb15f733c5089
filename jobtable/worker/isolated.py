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
from jobtable.process import AsyncChildProcess, describe_exit, die_with_parent
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


async def run_isolated(settings: Settings, job: WorkerJob, timeout: float, grace: float, *,
                       last_attempt: bool) -> RunResult:
    """Run ``job`` in a child process and return how it ended.

    If the child crashes, the job is given back to run again (alone again) unless this
    was its last attempt; then it is failed for good.
    """
    with tempfile.TemporaryDirectory(prefix="jobtable-") as folder:
        out = Path(folder) / "result.json"
        spec = {"settings": _settings_to_json(settings), "job_id": job.id,
                "token": job.attempts, "timeout": timeout, "grace": grace, "out": str(out)}
        child = await AsyncChildProcess.start(
            [sys.executable, "-m", "jobtable.worker.isolated"], stdin=asyncio.subprocess.PIPE)
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
    if not last_attempt:
        log.warning("job %d crashed its isolated process (%s) on attempt %d; it will run "
                    "again", job.id, how, job.attempts)
        return RunResult(False, None, release=True)
    log.error("job %d crashed its isolated process (%s) on attempt %d; failing it for good",
              job.id, how, job.attempts)
    return RunResult(False, {
        "error": f"Job crashed its process ({how}) on each of {job.attempts} attempts; "
                 "it is not retried",
        "exception": "WorkerCrash"}, retry=False)


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
    spec = json.loads(sys.stdin.read())
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

"""A FastAPI service that schedules jobs and serves the jobtable dashboard.

One ``JobTable`` for the whole service, opened and closed by the lifespan; the
endpoints schedule without blocking the event loop (``schedule_job_async``); the
dashboard is mounted at ``/jobs`` on the same ``JobTable``. The service needs no jobs
folder: it schedules ``send_report`` by name, and the workers, which have the job code,
run it (``jobtable worker``).

    pip install 'jobtable[dashboard]' fastapi uvicorn
    export JOBTABLE_DATABASE_URL=postgresql://localhost/app JOBS_DASHBOARD_TOKEN=s3cret
    uvicorn examples.fastapi_app:app
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

from jobtable import JobTable, WorkerJobConfig
from jobtable.dashboard import create_app


class Report(BaseModel):
    """What POST /reports takes."""

    to: str
    user_id: int = 0


def create_service(database: str | None = None,
                   dashboard_token: str | None = None) -> FastAPI:
    """The service on ``database`` (default: the jobtable settings, such as
    ``JOBTABLE_DATABASE_URL``); the dashboard asks for ``dashboard_token`` (without one
    it answers loopback clients only)."""
    jobs = JobTable(database)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with jobs:  # closes its connections at shutdown, off the event loop
            await asyncio.to_thread(jobs.ready)  # a bad database fails start-up, not a request
            yield

    app = FastAPI(lifespan=lifespan)

    @app.post("/reports", status_code=202)
    async def send_report(report: Report) -> dict[str, Any]:
        job = await jobs.schedule_job_async(WorkerJobConfig(
            type="send_report", user_id=report.user_id, data={"to": report.to}))
        return {"job_id": job.id, "status": job.status.value}

    @app.get("/reports/{job_id}")
    async def report_status(job_id: int) -> dict[str, Any]:
        job = await jobs.get_job_async(job_id)
        if job is None or job.type != "send_report":
            raise HTTPException(404, f"no report job {job_id}")
        return {"job_id": job.id, "status": job.status.value, "result": job.result}

    app.mount("/jobs", create_app(jobs, token=dashboard_token))
    return app


app = create_service(os.environ.get("JOBTABLE_DATABASE_URL"),
                     os.environ.get("JOBS_DASHBOARD_TOKEN"))

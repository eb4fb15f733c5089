"""The FastAPI example (examples/fastapi_app.py) on both databases: its lifespan opens
and closes one JobTable, an endpoint schedules without the job code, a burst worker that
has it runs the job, and the dashboard mounted on the same JobTable answers."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from helpers import open_table, row_count, run_burst, sql, write_jobs
from ops._support import serve

pytest.importorskip("fastapi")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "fastapi_app.py"


def _example(monkeypatch: pytest.MonkeyPatch, db_url: str) -> ModuleType:
    monkeypatch.setenv("JOBTABLE_DATABASE_URL", db_url)
    monkeypatch.setenv("JOBS_DASHBOARD_TOKEN", "s3cret")
    spec = importlib.util.spec_from_file_location("fastapi_app_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_fastapi_example_schedules_and_serves_the_dashboard(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # the service has no jobs folder
    example = _example(monkeypatch, db_url)
    jobs = write_jobs(tmp_path / "worker" / "jobs", {"send_report": """
        async def run(params):
            return {"sent_to": params.job.data["to"]}
    """}, recorder=False)
    with serve(example.app) as base, httpx.Client(base_url=base, timeout=30) as client:
        # The lifespan readied the database (migrations) before any request.
        assert row_count(db_url) == 0 and sql(db_url, "SELECT 1 FROM worker_jobs") == []
        made = client.post("/reports", json={"to": "a@b.c", "user_id": 7})
        assert made.status_code == 202, made.text
        job_id = made.json()["job_id"]
        assert made.json()["status"] == "pending"
        with open_table(db_url, jobs) as worker_side:
            run_burst(worker_side)
        done = client.get(f"/reports/{job_id}")
        assert done.json() == {"job_id": job_id, "status": "succeeded",
                               "result": {"sent_to": "a@b.c"}}
        assert client.get("/reports/999999").status_code == 404
        page = client.get(f"/jobs/jobs/{job_id}", headers={"Authorization": "Bearer s3cret"})
        assert page.status_code == 200 and "send_report" in page.text
        assert client.get("/jobs/", headers={"Authorization": "Bearer wrong"}).status_code in (
            401, 403)

"""The dashboard's queue page, its pause and resume buttons, and the per-queue metrics,
on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from jobtable import JobTable, WorkerJobConfig
from jobtable.dashboard import create_app

from ._support import serve


@pytest.fixture
def client(jt: JobTable) -> Iterator[httpx.Client]:
    with serve(create_app(jt)) as base, httpx.Client(base_url=base,
                                                          follow_redirects=True) as c:
        yield c


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "the page has no CSRF field"
    return match.group(1)


def _gauges(client: httpx.Client) -> dict[tuple[str, str], float]:
    out = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name.startswith("jobtable_queue_") and "queue" in sample.labels:
                out[(sample.name, sample.labels["queue"])] = sample.value
    return out


def test_queue_page_pauses_and_resumes_with_the_csrf_token(client: httpx.Client,
                                                          jt: JobTable) -> None:
    jt.schedule_jobs([WorkerJobConfig(type="send_report", user_id=u, queue="reports")
                      for u in range(3)])
    page = client.get("/queues")
    assert page.status_code == 200 and "reports" in page.text and "Pause" in page.text
    refused = client.post("/queues/reports/pause", data={"for": ""})
    assert refused.status_code == 403
    assert not [q for q in jt.list_queues() if q.paused]
    token = _csrf(page.text)
    paused = client.post("/queues/reports/pause", data={"csrf": token, "for": "30m"})
    assert paused.status_code == 200 and "Queue paused" in paused.text
    [queue] = jt.list_queues()
    assert queue.paused and queue.paused_until is not None and queue.pending == 3
    assert "Resume" in paused.text
    assert _gauges(client)[("jobtable_queue_paused", "reports")] == 1
    assert _gauges(client)[("jobtable_queue_pending", "reports")] == 3
    bad = client.post("/queues/no%20spaces/pause", data={"csrf": token, "for": ""})
    assert bad.status_code == 400 and "queue must be a name" in bad.text
    resumed = client.post("/queues/reports/resume", data={"csrf": token})
    assert resumed.status_code == 200 and "Queue resumed" in resumed.text
    assert not jt.list_queues()[0].paused
    assert _gauges(client)[("jobtable_queue_paused", "reports")] == 0
    listed = client.get("/jobs")
    assert "reports" in listed.text

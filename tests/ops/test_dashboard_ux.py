"""The dashboard's search, type-prefix filter, bulk actions, live fragments, workers page
and 24-hour chart, over HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from jobtable import JobTable, WorkerJobConfig
from jobtable.dashboard import create_app
from jobtable.errors import ConfigError
from jobtable.model import Outcome
from jobtable.timeutil import utcnow

from ._support import backdate, finish, schedule, serve


@pytest.fixture
def client(jt: JobTable) -> Iterator[httpx.Client]:
    with serve(create_app(jt)) as base, httpx.Client(base_url=base) as c:
        yield c


def ids_in(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'data-job-id="(\d+)"', html)]


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "the page has no CSRF field"
    return match.group(1)


def test_search_by_id_opens_the_job_and_text_filters_by_type_prefix(
        client: httpx.Client, jt: JobTable) -> None:
    report = schedule(jt, "send_report", user_id=1)
    prices = schedule(jt, "sync_prices", user_id=1)
    for q in (str(report.id), f"#{report.id}", f" {report.id} "):
        found = client.get("/search", params={"q": q})
        assert found.status_code == 303 and found.headers["location"] == f"/jobs/{report.id}"
    by_text = client.get("/search", params={"q": "send"})
    assert by_text.status_code == 303 and by_text.headers["location"] == "/jobs?type=send"
    assert client.get("/search", params={"q": ""}).headers["location"] == "/jobs"
    # The type filter matches the start of the type, and only the start.
    assert ids_in(client.get("/jobs", params={"type": "send"}).text) == [report.id]
    assert ids_in(client.get("/jobs", params={"type": "sync_"}).text) == [prices.id]
    assert ids_in(client.get("/jobs", params={"type": "report"}).text) == []
    assert ids_in(client.get("/jobs", params={"type": "send_report"}).text) == [report.id]
    # A prefix is text, not a pattern.
    assert ids_in(client.get("/jobs", params={"type": "%"}).text) == []
    assert ids_in(client.get("/jobs", params={"type": "s_nd"}).text) == []
    assert jt.count_jobs(type_prefix="s") == 2


def test_bulk_retry_and_cancel_need_csrf_and_confirmation(
        client: httpx.Client, jt: JobTable) -> None:
    failed = [schedule(jt, "boom", user_id=u) for u in (1, 2)]
    finish(jt.store, False)
    ok = schedule(jt, "send_report", user_id=3)
    finish(jt.store)
    pending = [schedule(jt, "send_report", user_id=u) for u in (4, 5)]
    listing = client.get("/jobs", params={"status": "failed"})
    assert 'name="ids"' in listing.text
    token = csrf_of(listing.text)
    before = jt.count_jobs()

    forged = client.post("/jobs/bulk", data={"csrf": "x" * 40, "action": "retry", "confirm": "yes",
                                             "ids": [str(f.id) for f in failed]})
    assert forged.status_code == 403 and jt.count_jobs() == before
    ask = client.post("/jobs/bulk", data={"csrf": token, "action": "retry",
                                          "ids": [str(f.id) for f in failed],
                                          "back": "status=failed"})
    assert ask.status_code == 200 and "Retry 2 jobs?" in ask.text
    assert jt.count_jobs() == before  # asked, not done
    for bad, problem in (({"action": "purge"}, "bulk actions are retry, cancel"),
                         ({"action": "retry", "ids": ["1x"]}, "job ids are whole numbers"),
                         ({"action": "retry"}, "tick the jobs to act on first")):
        refused = client.post("/jobs/bulk", data={"csrf": token, "confirm": "yes", **bad})
        assert refused.status_code == 400 and problem in refused.text, refused.text
    assert jt.count_jobs() == before

    done = client.post("/jobs/bulk", data={
        "csrf": token, "action": "retry", "confirm": "yes", "back": "status=failed&evil=1",
        "ids": [str(f.id) for f in failed] + [str(ok.id)]})
    assert done.status_code == 303
    assert done.headers["location"] == "/jobs?status=failed&done=retry&n=2&of=3"
    assert jt.count_jobs() == before + 2
    retries = [j for j in jt.list_jobs(status="pending") if j.rescheduled_from_job]
    assert sorted(j.rescheduled_from_job for j in retries) == sorted(f.id for f in failed)
    shown = client.get(done.headers["location"]).text
    assert "Retried 2 of 3 selected jobs; 1 skipped (not failed or cancelled)." in shown

    cancel = client.post("/jobs/bulk", data={
        "csrf": token, "action": "cancel", "confirm": "yes",
        "ids": [str(p.id) for p in pending] + [str(ok.id)]})
    assert cancel.status_code == 303
    assert [jt.require_job(p.id).status.value for p in pending] == ["cancelled"] * 2
    assert jt.require_job(ok.id).status.value == "succeeded"


def test_live_fragments_and_the_workers_page(client: httpx.Client, jt: JobTable) -> None:
    job = schedule(jt, "send_report", user_id=1)
    page = client.get(f"/jobs/{job.id}").text
    assert f'data-refresh="/partials/jobs/{job.id}"' in page
    fragment = client.get(f"/partials/jobs/{job.id}").text
    assert 'data-live="on"' in fragment and "<html" not in fragment
    jt.store.heartbeat("host-a-77-abc", 4, 77)
    [claimed] = jt.store.claim("host-a-77-abc", 1)
    workers = client.get("/workers").text
    assert 'data-refresh="/partials/workers"' in workers
    row = re.search(r'<tr data-worker-id="host-a-77-abc">(.*?)</tr>', workers, re.S)
    assert row is not None, workers
    assert f"#{claimed.id}" in row.group(1) and "1/4" in row.group(1) and ">77<" in row.group(1)
    jt.store.complete([Outcome(job=claimed, success=True, result={"ok": 1})])
    done = client.get(f"/partials/jobs/{job.id}").text
    assert 'data-live="done"' in done and "succeeded" in done
    assert 'data-refresh="' not in client.get(f"/jobs/{job.id}").text
    assert ids_in(client.get("/partials/jobs").text) == [job.id]
    assert "idle" in client.get("/partials/workers").text
    chain = jt.schedule_cron_job(WorkerJobConfig(type="sync_prices", user_id=2),
                                 "0 0 * * * *")
    assert 'data-refresh="/partials/cron"' in client.get("/cron").text
    cron = client.get("/partials/cron").text
    assert f"#{chain.id}" in cron and "<html" not in cron


def test_the_24_hour_chart_counts_per_hour(client: httpx.Client, jt: JobTable) -> None:
    now = utcnow()
    jobs = [schedule(jt, "send_report", user_id=u) for u in range(5)]
    finish(jt.store, lambda j: j.user_id != 4)
    for job, hours_ago in zip(jobs, (0, 3, 3, 30, 3), strict=True):
        moment = now - timedelta(hours=hours_ago)
        backdate(jt.store, job.id, moment - timedelta(seconds=1), moment)
    hourly = jt.throughput_by_hour(24)
    assert len(hourly) == 24 and hourly[-1].start <= now < hourly[-1].start + timedelta(hours=1)
    assert (hourly[-1].succeeded, hourly[-1].failed) == (1, 0)
    assert (hourly[-4].succeeded, hourly[-4].failed) == (2, 1)
    assert sum(b.total for b in hourly) == 4  # the job of 30 hours ago is outside
    overview = client.get("/").text
    assert "Throughput, last 24 hours" in overview and "4 finished" in overview
    with pytest.raises(ConfigError, match="hours must be between 1 and 744"):
        jt.throughput_by_hour(0)


def test_data_search_lists_the_newest_jobs_whose_data_contains_the_text(
        client: httpx.Client, jt: JobTable) -> None:
    ada = schedule(jt, "send_report", user_id=1, data={"to": "ada@example.com"})
    schedule(jt, "send_report", user_id=2, data={"to": "bob@example.com"})
    found = client.get("/search", params={"q": "data: ADA@example"})
    assert found.status_code == 303
    assert found.headers["location"] == "/jobs?data=ADA%40example"
    page = client.get(found.headers["location"]).text
    assert ids_in(page) == [ada.id]
    assert "data search in the newest 10,000 jobs" in page
    assert ids_in(client.get("/jobs", params={"data": "example", "user_id": "2"}).text) != []
    assert ids_in(client.get("/jobs", params={"data": "nobody"}).text) == []
    with pytest.raises(ConfigError, match="search text must not be empty"):
        jt.search_job_data("  ")

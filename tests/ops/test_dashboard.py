"""The dashboard's pages, actions, guards and /metrics, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from helpers import wait_until
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Mount

from jobtable import JobTable, WorkerJobConfig
from jobtable.client import COUNT_CAP
from jobtable.dashboard import create_app
from jobtable.model import Outcome
from jobtable.timeutil import utcnow

from ._support import Cli, finish, free_port, schedule, serve

INJECTION = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


@pytest.fixture
def client(jt: JobTable) -> Iterator[httpx.Client]:
    """An HTTP client (keeping cookies) of the dashboard of ``jt``'s store, served by
    uvicorn on loopback."""
    with serve(create_app(jt)) as base, httpx.Client(base_url=base,
                                                          follow_redirects=True) as c:
        yield c


def remote_get(app: object, path: str, **kw: object) -> httpx.Response:
    """GET ``path`` from ``app`` as a client at a public address would."""
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 4000))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url="http://dash") as c:
            return await c.get(path, **kw)  # type: ignore[arg-type]

    return asyncio.run(go())


def csrf_of(html: str) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', html)
    assert match, "the page has no CSRF field"
    return match.group(1)


def test_pages_render_with_the_rows_of_the_table(client: httpx.Client, jt: JobTable) -> None:
    ok = schedule(jt, "send_report", user_id=1)
    bad = schedule(jt, "boom", user_id=2)
    finish(jt.store, lambda j: j.id == ok.id)
    overview = client.get("/")
    assert overview.status_code == 200
    assert 'data-count="failed">1<' in overview.text
    assert 'data-count="succeeded">1<' in overview.text
    assert "Throughput, last hour" in overview.text
    assert client.get("/partials/overview").text.count("<svg") == 2  # last hour, 24 hours
    listing = client.get("/jobs", params={"status": "failed"})
    assert re.findall(r'data-job-id="(\d+)"', listing.text) == [str(bad.id)]
    detail = client.get(f"/jobs/{bad.id}")
    assert "Traceback (most recent call last)" in detail.text
    assert f"ValueError: job {bad.id} failed" in detail.text
    assert client.get("/jobs/987654").status_code == 404
    assert client.get("/static/dashboard.css").status_code == 200
    headers = overview.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"


def test_list_filters_and_paginates(client: httpx.Client, jt: JobTable) -> None:
    ids = [schedule(jt, "send_report", user_id=u).id for u in range(60)]
    page1 = client.get("/jobs", params={"type": "send_report"})
    rows1 = [int(i) for i in re.findall(r'data-job-id="(\d+)"', page1.text)]
    assert rows1 == sorted(ids, reverse=True)[:50]
    assert "page 1 of 2" in page1.text
    page2 = client.get("/jobs", params={"type": "send_report", "page": "2"})
    rows2 = [int(i) for i in re.findall(r'data-job-id="(\d+)"', page2.text)]
    assert rows2 == sorted(ids, reverse=True)[50:]
    one = client.get("/jobs", params={"user_id": "7"})
    assert re.findall(r'data-job-id="(\d+)"', one.text) == [str(ids[7])]
    bad = client.get("/jobs", params={"user_id": "seven"})
    assert bad.status_code == 400 and "user id must be a whole number" in bad.text
    assert client.get("/jobs", params={"status": "lost"}).status_code == 400


def test_a_list_past_the_count_bound_says_more_than_and_still_pages(
        client: httpx.Client, jt: JobTable) -> None:
    jt.store.fill("old", finished=COUNT_CAP + 5)
    page = client.get("/jobs")
    assert f"more than {COUNT_CAP:,} matching" in page.text
    assert len(re.findall(r'data-job-id="(\d+)"', page.text)) == 50
    assert "Older" in page.text
    page3 = client.get("/jobs", params={"page": "3", "status": "succeeded"})
    assert "150 of more than" in page3.text and "Older" in page3.text
    few = client.get("/jobs", params={"status": "pending"})
    assert "No job matches" in few.text


def test_html_in_data_and_errors_is_shown_escaped(client: httpx.Client, jt: JobTable) -> None:
    job = schedule(jt, "boom", user_id=3, data={"note": INJECTION})
    [claimed] = jt.store.claim("w-1", 1)
    jt.store.complete([Outcome(job=claimed, success=False, result={"error": INJECTION})])
    pages = [client.get(f"/jobs/{job.id}").text, client.get("/jobs").text]
    for html in pages:
        assert "<script>alert(2)" not in html
        assert "<img src=x" not in html
        assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html


def test_actions_need_the_csrf_token_and_a_confirmation(client: httpx.Client,
                                                        jt: JobTable) -> None:
    job = schedule(jt, "boom", user_id=4)
    finish(jt.store, False)
    page = client.get(f"/jobs/{job.id}")
    token = csrf_of(page.text)

    forged = client.post(f"/jobs/{job.id}/retry", data={"csrf": "forged" * 8, "confirm": "yes"})
    assert forged.status_code == 403 and "Nothing was done" in forged.text
    other_site = client.post(f"/jobs/{job.id}/retry", data={"csrf": token, "confirm": "yes"},
                             headers={"Origin": "https://evil.example"})
    assert other_site.status_code == 403
    assert jt.list_jobs() == [jt.get_job(job.id)]  # nothing new

    ask = client.post(f"/jobs/{job.id}/retry", data={"csrf": token})
    assert ask.status_code == 200 and f"Retry job #{job.id}?" in ask.text
    assert len(jt.list_jobs()) == 1

    done = client.post(f"/jobs/{job.id}/retry", data={"csrf": token, "confirm": "yes"},
                       follow_redirects=False)
    assert done.status_code == 303
    new_id = int(re.search(r"/jobs/(\d+)\?flash=retried", done.headers["location"]).group(1))
    new = jt.get_job(new_id)
    assert new is not None and new.rescheduled_from_job == job.id
    assert new.status.value == "pending"
    shown = client.get(done.headers["location"]).text
    assert "Retry scheduled" in shown


def test_cancel_and_run_now_from_the_dashboard(client: httpx.Client, jt: JobTable) -> None:
    later = schedule(jt, "send_report", user_id=1, due=utcnow() + timedelta(hours=2))
    running = schedule(jt, "sync_prices", user_id=1)
    jt.store.claim("w-1", 10)
    token = csrf_of(client.get(f"/jobs/{later.id}").text)

    moved = client.post(f"/jobs/{later.id}/run-now", data={"csrf": token, "confirm": "yes"})
    assert moved.status_code == 200 and "The job is due now" in moved.text
    row = jt.get_job(later.id)
    assert row is not None and row.due <= utcnow()

    asked = client.post(f"/jobs/{running.id}/cancel", data={"csrf": token, "confirm": "yes"})
    assert asked.status_code == 200 and "Cancel requested" in asked.text
    row = jt.get_job(running.id)
    assert row is not None and row.status.value == "running" and row.cancel_requested
    cancelled = client.post(f"/jobs/{later.id}/cancel", data={"csrf": token, "confirm": "yes"})
    assert cancelled.status_code == 200 and "Job cancelled." in cancelled.text
    row = jt.get_job(later.id)
    assert row is not None and row.status.value == "cancelled"


def test_cron_page_shows_next_run_and_last_outcome(client: httpx.Client, jt: JobTable) -> None:
    first = jt.schedule_cron_job(
        WorkerJobConfig(type="sync_prices", user_id=0), "0 0 * * * *")
    token = csrf_of(client.get("/cron").text)
    back = client.post(f"/jobs/{first.id}/run-now",
                       data={"csrf": token, "confirm": "yes", "back": "cron"})
    assert back.status_code == 200 and str(back.url).endswith("/cron?flash=run-now")
    finish(jt.store, True)
    page = client.get("/cron").text
    chain = jt.cron_chains()
    assert len(chain) == 1 and chain[0].previous is not None
    assert chain[0].previous.id == first.id
    assert "0 0 * * * *" in page
    assert f'href="/jobs/{chain[0].current.id}"' in page
    assert "pill-succeeded" in page


def test_metrics_report_counts_runtimes_lag_retries_and_rescues(
        client: httpx.Client, jt: JobTable) -> None:
    store = jt.store
    for u in range(3):
        schedule(jt, "send_report", user_id=u)
    failed = schedule(jt, "boom", user_id=1)
    finish(store, lambda j: j.type == "send_report")
    jt.retry_job(failed.id)
    rescued = schedule(jt, "sync_prices", user_id=5)
    store.claim("dead-worker", 10)
    store.release_unknown_claims("dead-worker", set())  # its claim is released ...
    finish(store, True)                                   # ... and claimed again
    schedule(jt, "send_report", user_id=9, due=utcnow() - timedelta(seconds=90))
    store.heartbeat("w-metrics", 4, 1)

    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    assert samples[("jobtable_jobs", (("status", "succeeded"), ("type", "send_report")))] == 3
    assert samples[("jobtable_jobs", (("status", "failed"), ("type", "boom")))] == 1
    assert samples[("jobtable_jobs", (("status", "succeeded"), ("type", "sync_prices")))] == 1
    assert samples[("jobtable_retries", (("type", "boom"),))] == 1
    assert samples[("jobtable_rescued_jobs", (("type", "sync_prices"),))] == 1
    assert samples[("jobtable_queue_lag_seconds", ())] >= 89
    assert samples[("jobtable_live_workers", ())] == 1
    assert samples[("jobtable_worker_slots", ())] == 4
    count = samples[("jobtable_job_runtime_seconds_gcount", (("type", "send_report"),))]
    inf = samples[("jobtable_job_runtime_seconds_bucket", (("le", "+Inf"), ("type",
                                                                             "send_report")))]
    assert count == inf == 3
    assert rescued.id


def test_mounted_in_another_app_links_stay_under_its_prefix(jt: JobTable) -> None:
    job = schedule(jt, "send_report", user_id=1)
    parent = Starlette(routes=[Mount("/ops", app=create_app(jt))])
    with serve(parent) as base, httpx.Client(base_url=base) as c:
        listing = c.get("/ops/jobs")
        assert listing.status_code == 200
        assert f'href="/ops/jobs/{job.id}"' in listing.text
        assert 'href="/ops/static/dashboard.css"' in listing.text
        assert c.get("/ops/static/dashboard.js").status_code == 200
        assert c.get(f"/ops/jobs/{job.id}").status_code == 200


def test_remote_clients_are_refused_without_credentials(jt: JobTable) -> None:
    app = create_app(jt)
    refused = remote_get(app, "/")
    assert refused.status_code == 403
    assert "JOBTABLE_DASHBOARD_TOKEN" in refused.text
    assert remote_get(app, "/metrics").status_code == 403
    assert remote_get(create_app(jt, trust_remote=True), "/").status_code == 200


def test_token_and_basic_auth_are_enforced_for_everyone(jt: JobTable) -> None:
    with serve(create_app(jt, token="s3cret-token")) as base, \
            httpx.Client(base_url=base) as c:
        assert c.get("/").status_code == 401
        assert c.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        login = c.get("/jobs?status=failed&token=s3cret-token")
        assert login.status_code == 303
        assert login.headers["location"] == "/jobs?status=failed"
        assert c.get("/jobs").status_code == 200  # the cookie now
    creds = base64.b64encode(b"ops:pa55").decode()
    with serve(create_app(jt, username="ops", password="pa55")) as base, \
            httpx.Client(base_url=base) as c:
        challenge = c.get("/")
        assert challenge.status_code == 401
        assert challenge.headers["www-authenticate"].startswith("Basic")
        assert c.get("/", headers={"Authorization": f"Basic {creds}"}).status_code == 200
        wrong = base64.b64encode(b"ops:nope").decode()
        assert c.get("/", headers={"Authorization": f"Basic {wrong}"}).status_code == 401


def test_dashboard_command_refuses_a_public_bind_without_credentials(cli: Cli) -> None:
    result = cli("dashboard", "--host", "0.0.0.0", ok=False)
    assert result.exit_code == 2
    assert "JOBTABLE_DASHBOARD_TOKEN" in result.stderr
    half = cli("dashboard", "--host", "0.0.0.0", "--user", "ops", ok=False)
    assert half.exit_code == 2 and "--password" in half.stderr


def _outbound_address() -> str | None:
    """This machine's non-loopback address, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") or address == "0.0.0.0" else address


def test_public_bind_refuses_unauthenticated_requests(db_url: str, jt: JobTable,
                                                      tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "JOBTABLE_DASHBOARD_TOKEN": "tok-123456"}
    proc = subprocess.Popen([sys.executable, "-m", "jobtable", "dashboard", "--host", "0.0.0.0",
                             "--port", str(port), "--database", db_url], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        def answers() -> int | None:
            try:
                return httpx.get(base + "/", timeout=2).status_code
            except httpx.TransportError:
                return None

        assert wait_until(answers, 30, "the dashboard to listen") == 401
        assert httpx.get(base + "/metrics").status_code == 401
        ok = httpx.get(base + "/", headers={"Authorization": "Bearer tok-123456"})
        assert ok.status_code == 200 and "Overview" in ok.text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            assert proc.stderr is not None
            proc.stderr.close()


def test_no_credentials_served_on_all_interfaces_refuses_other_hosts(jt: JobTable) -> None:
    address = _outbound_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    with serve(create_app(jt), host="0.0.0.0") as base:
        assert httpx.get(base + "/").status_code == 200  # from loopback
        remote = base.replace("127.0.0.1", address)
        refused = httpx.get(remote + "/")  # the client address is not loopback
        assert refused.status_code == 403


def test_a_blocked_event_loop_shows_on_the_job_page_and_in_metrics(
        client: httpx.Client, jt: JobTable) -> None:
    job = schedule(jt, "sync_prices", user_id=7)
    jt.store.heartbeat("w-blocked", 2, 1)
    jt.store.claim("w-blocked", 10)
    jt.store.mark_loop_blocked("w-blocked", [job.id], 12_300, 12_300)
    page = client.get(f"/jobs/{job.id}").text
    assert 'id="job-loop-blocked"' in page and "12.3 s" in page
    samples = {s.name: s.value for family in text_string_to_metric_families(
        client.get("/metrics").text) for s in family.samples}
    assert samples["jobtable_event_loop_blocked_seconds_total"] == 12.3

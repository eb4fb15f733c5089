"""The dashboard driven in a real headless Chromium (Debian's, through Playwright)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobtable import JobTable
from jobtable.dashboard import create_app

from ._support import ARTIFACTS, finish, populate, schedule, serve, table

IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM = (os.environ.get("JOBTABLE_TEST_CHROMIUM") or shutil.which("chromium")
            or "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync"]
INJECTION = '<img src=x onerror="alert(1)"><script>alert(2)</script>'


def _problem() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    if not Path(CHROMIUM).exists():
        return f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    return None


@pytest.fixture
def page() -> Iterator[Any]:
    """A fresh page of headless Chromium, 1280 pixels wide."""
    problem = _problem()
    if problem is not None:
        if IN_CI:
            pytest.fail(f"the browser test must run under CI=true: {problem}")
        pytest.skip(problem)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 820})
            yield context.new_page()
            context.close()
        finally:
            browser.close()


def test_overview_filter_detail_retry_and_escaping_in_a_real_browser(
        page: Any, jt: JobTable, db_url: str) -> None:
    from playwright.sync_api import expect

    dialect = "postgres" if db_url.startswith("postgresql") else "sqlite"
    ids = populate(jt)
    injected = schedule(jt, "sync_prices", user_id=13, data={"note": INJECTION})
    store = jt.store
    failed_total = store.count_jobs(status="failed")
    pending_total = store.count_jobs(status="pending")
    script_dialogs: list[str] = []
    page.on("dialog", lambda d: (script_dialogs.append(d.message), d.dismiss()))
    ARTIFACTS.mkdir(exist_ok=True)

    with serve(create_app(jt, refresh_seconds=1)) as base:
        # Overview: the counts, and the live refresh picking up a new job.
        page.goto(base + "/")
        expect(page.locator('[data-count="failed"]')).to_have_text(str(failed_total))
        expect(page.locator('[data-count="pending"]')).to_have_text(str(pending_total))
        expect(page.locator("svg rect.ok").first).to_be_visible()
        schedule(jt, "send_report", user_id=500)
        expect(page.locator('[data-count="pending"]')).to_have_text(
            str(pending_total + 1), timeout=15_000)
        page.screenshot(path=str(ARTIFACTS / f"dashboard-{dialect}.png"))

        # The list, filtered from its form.
        page.get_by_role("link", name="Jobs", exact=True).click()
        page.select_option("select[name=status]", "failed")
        page.fill("input[name=type]", "boom")
        page.get_by_role("button", name="Filter").click()
        page.wait_for_url(re.compile(r"/jobs\?status=failed&type=boom"))
        rows = page.locator("tr[data-job-id]")
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-job-id", str(ids["failed"]))

        # The failed job: its traceback, then Retry, confirmed in the dialog.
        rows.first.get_by_role("link", name=f"#{ids['failed']}").click()
        expect(page.locator("#job-traceback")).to_contain_text("ValueError")
        page.screenshot(path=str(ARTIFACTS / f"dashboard-job-{dialect}.png"), full_page=True)
        page.get_by_role("button", name="Retry").click()
        expect(page.locator("#confirm-dialog")).to_be_visible()
        page.locator("#confirm-ok").click()
        page.wait_for_url(re.compile(r"/jobs/\d+\?flash=retried"))
        new_id = int(re.search(r"/jobs/(\d+)", page.url).group(1))  # type: ignore[union-attr]
        assert new_id != ids["failed"]
        expect(page.locator(".flash.ok")).to_contain_text("Retry scheduled")
        expect(page.locator("h1 .pill")).to_have_text("pending")
        row = store.get_job(new_id)
        assert row is not None and row.rescheduled_from_job == ids["failed"]

        # ... and the new row in the list, pointing back.
        page.goto(base + "/jobs?type=boom")
        new_row = page.locator(f'tr[data-job-id="{new_id}"]')
        expect(new_row).to_contain_text("pending")
        expect(new_row).to_contain_text(f"↻ #{ids['failed']}")

        # HTML in data is text, never markup.
        page.goto(f"{base}/jobs/{injected.id}")
        expect(page.locator("#job-data")).to_contain_text(json.dumps(INJECTION))
        assert page.locator("img").count() == 0
        assert page.locator("main script").count() == 0
        assert script_dialogs == []


PHONE = {"width": 390, "height": 844}


def _scroll_width(page: Any) -> int:
    return int(page.evaluate("document.documentElement.scrollWidth"))


def test_phone_width_search_bulk_retry_and_a_live_job_page(
        page: Any, jt: JobTable, db_url: str, jobs_dir: Path) -> None:
    from playwright.sync_api import expect

    dialect = "postgres" if db_url.startswith("postgresql") else "sqlite"
    ids = populate(jt)
    # A type name long enough to push a careless layout past a phone's width.
    (jobs_dir / "rebuild_the_search_index_for_every_tenant.py").write_text(
        "def run(params):\n    return {'rebuilt': True}\n")
    with table(db_url, jobs_dir) as jt2:
        long_job = schedule(jt2, "rebuild_the_search_index_for_every_tenant", user_id=77,
                            data={"tenants": ["acme-corporation-international"] * 6})
    failed_two = [schedule(jt, "boom", user_id=u, data={"n": u}) for u in (801, 802)]
    finish(jt.store, lambda j: j.type != "boom")
    page.set_viewport_size(PHONE)
    ARTIFACTS.mkdir(exist_ok=True)

    with serve(create_app(jt, refresh_seconds=1)) as base:
        # No horizontal overflow at 390 px: overview, jobs list, job page, workers.
        for path in ("/", "/jobs", f"/jobs/{ids['failed']}", f"/jobs/{long_job.id}",
                     "/workers", "/cron", "/queues"):
            page.goto(base + path)
            page.wait_for_load_state("load")
            assert _scroll_width(page) <= PHONE["width"], (path, _scroll_width(page))
        page.goto(base + "/")
        page.screenshot(path=str(ARTIFACTS / f"dashboard-phone-{dialect}.png"), full_page=True)

        # Search by id jumps to the job; by text lists the types that start with it.
        page.fill("#search", str(ids["failed"]))
        page.press("#search", "Enter")
        page.wait_for_url(re.compile(rf"/jobs/{ids['failed']}$"))
        expect(page.locator("h1")).to_contain_text(f"#{ids['failed']}")
        page.fill("#search", "rebuild_the")
        page.press("#search", "Enter")
        page.wait_for_url(re.compile(r"/jobs\?type=rebuild_the$"))
        expect(page.locator("tr[data-job-id]")).to_have_count(1)

        # Bulk retry of two failed jobs, ticked on the list and confirmed.
        page.goto(base + "/jobs?status=failed&type=boom")
        for job in failed_two:
            page.locator(f'tr[data-job-id="{job.id}"] input[name=ids]').check()
        expect(page.locator("[data-selected-count]")).to_have_text("2 selected")
        before = jt.count_jobs()
        page.get_by_role("button", name="Retry selected").click()
        expect(page.locator("#confirm-dialog")).to_be_visible()
        expect(page.locator("#confirm-dialog .dialog-message")).to_contain_text(
            f"#{failed_two[0].id}")
        page.locator("#confirm-ok").click()
        page.wait_for_url(re.compile(r"done=retry&n=2&of=2"))
        expect(page.locator(".flash.ok")).to_contain_text("Retried 2 of 2 selected jobs")
        assert jt.count_jobs() == before + 2
        retried = sorted(j.rescheduled_from_job or 0 for j in jt.list_jobs(status="pending")
                         if j.rescheduled_from_job in {f.id for f in failed_two})
        assert retried == sorted(f.id for f in failed_two)

        # A job page follows its job: pending, then succeeded once a worker ran it.
        waiting = schedule(jt, "sync_prices", user_id=4242)
        page.set_viewport_size({"width": 1280, "height": 820})
        page.goto(f"{base}/jobs/{waiting.id}")
        expect(page.locator("h1 .pill")).to_have_text("pending")
        burst = subprocess.run([sys.executable, "-m", "jobtable", "worker", "--burst",
                                "--database", db_url, "--jobs", str(jobs_dir)],
                               capture_output=True, text=True, timeout=120, check=False)
        assert burst.returncode == 0, burst.stderr
        assert jt.require_job(waiting.id).status.value == "succeeded"
        expect(page.locator("h1 .pill")).to_have_text("succeeded", timeout=15_000)
        expect(page.locator("#job-result")).to_contain_text("synced")
        # ... and then stops asking.
        requests: list[str] = []
        page.on("request", lambda r: requests.append(r.url))
        page.wait_for_timeout(2500)
        assert not [u for u in requests if "/partials/" in u], requests

        # The overview, with both charts, for the README.
        page.goto(base + "/")
        expect(page.locator("#chart-day svg rect.ok").first).to_be_visible()
        page.screenshot(path=str(ARTIFACTS / f"dashboard-overview-{dialect}.png"))

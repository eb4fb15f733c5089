"""The dashboard driven in a real headless Chromium (Debian's, through Playwright)."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobtable import JobTable
from jobtable.dashboard import create_app

from ._support import ARTIFACTS, populate, schedule, serve

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

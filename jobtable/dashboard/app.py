"""The dashboard: a small Starlette app with server-rendered pages.

Pages: overview (live), jobs (filters, search, pagination, bulk retry/cancel), job
detail (data, result, traceback, reschedule chain, actions), workers, cron schedules,
queues (pause, resume) and ``/metrics``. Lists and an unfinished job's page refresh themselves from
``/partials/...`` fragments.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from jobtable import display, metrics, rules
from jobtable.client import COUNT_CAP, SEARCH_WINDOW, JobTable
from jobtable.dashboard.security import (
    CSRF_FIELD,
    SECURITY_HEADERS,
    Guard,
    csrf_problem,
    csrf_token,
    parse_allowed_hosts,
    parse_origins,
    set_csrf_cookie,
)
from jobtable.errors import (
    ActionRefusedError,
    ConfigError,
    DatabaseUnavailableError,
    JobNotFoundError,
    JobTableError,
)
from jobtable.model import JobStatus, WorkerJob
from jobtable.reports import Bucket
from jobtable.settings import Settings, load_settings
from jobtable.store import Store
from jobtable.store.base import STATUSES, check_status
from jobtable.timeutil import utcnow

HERE = Path(__file__).parent
PER_PAGE = 50
ACTIONS = ("cancel", "retry", "run-now")
BULK_ACTIONS = ("retry", "cancel")
BULK_LIMIT = 500
FLASH = {
    "cancelled": "Job cancelled.",
    "cancel-requested": "Cancel requested: its worker stops the job within about a second.",
    "retried": "Retry scheduled: this is the new job.",
    "run-now": "The job is due now; the next free worker will run it.",
    "paused": "Queue paused: no worker starts its jobs until it is resumed or the pause ends.",
    "resumed": "Queue resumed: workers start its jobs again.",
}
RUNNING_SHOWN = 1000  # running jobs listed on the workers page, at most
DAY_CHART_TTL = 60.0  # seconds the 24-hour chart is reused before it is read again
T = TypeVar("T")


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
        lstrip_blocks=True)
    env.filters["pretty"] = _pretty
    env.filters["duration"] = display.human_duration
    env.filters["setting_duration"] = display.setting_duration
    env.globals["ms_fields"] = display.MILLISECOND_FIELDS
    env.filters["iso"] = lambda d: "" if d is None else d.isoformat(timespec="seconds")
    env.globals["ago"] = display.ago
    env.globals["summary"] = display.summary
    env.globals["runtime"] = display.runtime
    env.globals["statuses"] = STATUSES
    return env


@dataclass(frozen=True, slots=True)
class Bar:
    """One minute of the throughput chart, in SVG user units."""

    x: float
    width: float
    ok_y: float
    ok_h: float
    fail_y: float
    fail_h: float
    label: str


CHART_W, CHART_H = 600.0, 120.0


def chart(buckets: list[Bucket]) -> tuple[list[Bar], int]:
    """Bars for a stacked succeeded/failed chart, and the tallest bar's total."""
    peak = max((b.total for b in buckets), default=0)
    scale = CHART_H / peak if peak else 0.0
    step = CHART_W / max(1, len(buckets))
    bars = []
    for i, b in enumerate(buckets):
        ok_h = b.succeeded * scale
        fail_h = b.failed * scale
        label = (f"{b.start.strftime('%H:%M')} UTC: {b.succeeded} succeeded, "
                 f"{b.failed} failed")
        bars.append(Bar(x=round(i * step + 1, 2), width=round(max(1.0, step - 2), 2),
                        ok_y=round(CHART_H - ok_h, 2), ok_h=round(ok_h, 2),
                        fail_y=round(CHART_H - ok_h - fail_h, 2), fail_h=round(fail_h, 2),
                        label=label))
    return bars, peak


def hour_chart(buckets: list[Bucket]) -> tuple[list[Bar], int]:
    """``chart`` for hourly buckets (labels name the hour)."""
    bars, peak = chart(buckets)
    labelled = [Bar(x=b.x, width=b.width, ok_y=b.ok_y, ok_h=b.ok_h, fail_y=b.fail_y,
                    fail_h=b.fail_h,
                    label=f"{k.start.strftime('%d %b %H:00')} UTC: {k.succeeded} succeeded, "
                          f"{k.failed} failed") for b, k in zip(bars, buckets, strict=True)]
    return labelled, peak


class Dashboard:
    """The dashboard's state: where its store comes from, and its templates."""

    def __init__(self, source: str | JobTable | Store | Settings | None, *,
                 live_within: timedelta | None = None, refresh_seconds: float = 3.0) -> None:
        self._lock = threading.Lock()
        self._owned = not isinstance(source, JobTable)
        self._table: JobTable | None = source if isinstance(source, JobTable) else None
        if isinstance(source, JobTable):
            self.settings = source.settings
        elif isinstance(source, Settings):
            self.settings = source
        elif isinstance(source, Store):  # deprecated: opens its own connections to that URL
            self.settings = Settings(database=source.url, stale_limit=source.stale_limit)
        else:
            self.settings = load_settings(database=source)
        self.live_within = live_within or self.settings.rescue_after
        self.refresh_ms = int(refresh_seconds * 1000)
        self.templates = Jinja2Templates(env=_environment())
        self._day: tuple[float, list[Bucket]] | None = None

    async def _hourly(self) -> list[Bucket]:
        """The 24-hour chart's buckets, read at most once a minute: it reads a day of
        finished rows, and the overview refreshes every few seconds."""
        cached = self._day
        if cached is not None and time.monotonic() - cached[0] < DAY_CHART_TTL:
            return cached[1]
        hourly = await self.db(JobTable.throughput_by_hour, 24)
        self._day = (time.monotonic(), hourly)
        return hourly

    def table(self) -> JobTable:
        """The ``JobTable``, opened (and its database checked) on first use."""
        if self._table is None:
            with self._lock:
                if self._table is None:
                    table = JobTable(settings=self.settings)
                    try:
                        table.ready()
                    except BaseException:
                        table.close()
                        raise
                    self._table = table
        return self._table

    def close(self) -> None:
        """Close the ``JobTable`` if the dashboard opened it."""
        with self._lock:
            if self._owned and self._table is not None:
                self._table.close()
                self._table = None

    async def db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(table, ...)`` off the event loop."""
        def call() -> T:
            return fn(self.table(), *args, **kwargs)

        return await run_in_threadpool(call)

    def render(self, request: Request, name: str, context: dict[str, Any],
               status: int = 200) -> Response:
        """A page, with the CSRF cookie and security headers set."""
        token, new = csrf_token(request)
        base = str(request.scope.get("root_path") or "")
        context = {"request": request, "base": base, "csrf": token, "csrf_field": CSRF_FIELD,
                   "page": "",
                   "now": utcnow(), "refresh_ms": self.refresh_ms,
                   "dialect": self.settings.database.split(":", 1)[0], **context}
        response = self.templates.TemplateResponse(request, name, context, status_code=status,
                                                   headers=SECURITY_HEADERS)
        if new:
            set_csrf_cookie(response, request, token)
        return response

    def error(self, request: Request, status: int, title: str, message: str) -> Response:
        """An error page."""
        return self.render(request, "error.html", {"title": title, "message": message},
                           status)

    # -- pages -------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        """Counts, throughput, lag and workers; refreshed in place by the page's script."""
        return self.render(request, "overview.html", await self._overview_context())

    async def overview_partial(self, request: Request) -> Response:
        """The live part of the overview, for the page's refresh."""
        return self.render(request, "_overview.html", await self._overview_context())

    async def _overview_context(self) -> dict[str, Any]:
        stats = await self.db(JobTable.stats, self.live_within)
        bars, peak = chart(stats.throughput)
        hourly = await self._hourly()
        day_bars, day_peak = hour_chart(hourly)
        return {"stats": stats, "bars": bars, "peak": peak, "chart_w": CHART_W,
                "chart_h": CHART_H, "page": "overview", "day_bars": day_bars,
                "day_peak": day_peak, "day_total": sum(b.total for b in hourly)}

    async def jobs(self, request: Request) -> Response:
        """The jobs list with filters, pagination and bulk actions."""
        return await self._jobs(request, "jobs.html")

    async def jobs_partial(self, request: Request) -> Response:
        """The jobs list's table, for the page's refresh."""
        return await self._jobs(request, "_jobs_table.html")

    async def _jobs(self, request: Request, template: str) -> Response:
        q = request.query_params
        filters = {"status": q.get("status", ""), "type": q.get("type", "").strip(),
                   "user_id": q.get("user_id", "").strip(), "data": q.get("data", "").strip()}
        try:
            status = check_status(filters["status"])
            user_id = _int(filters["user_id"], "user id") if filters["user_id"] else None
            page = _int(q.get("page") or "1", "page")
            if page < 1:
                raise ConfigError(f"page must be 1 or more, got {page}")
        except ConfigError as exc:
            return self.render(request, template, {
                "page": "jobs", "filters": filters, "rows": [], "total": 0, "more": False,
                "types": [],
                "pageno": 1, "pages": 1, "problem": str(exc), "flash": None,
                "query": _query(filters), "page_query": "", "window": SEARCH_WINDOW}, 400)
        # The type filter matches the start of the type: "send" finds send_report too.
        prefix = filters["type"] or None

        text = filters["data"]

        def load(table: JobTable) -> tuple[list[WorkerJob], int | None, list[str]]:
            if text:  # bounded to the newest jobs, and so not counted
                rows = table.search_job_data(text, window=SEARCH_WINDOW, status=status,
                                             type_prefix=prefix, user_id=user_id,
                                             limit=PER_PAGE, offset=(page - 1) * PER_PAGE)
                return rows, None, table.job_types()
            rows = table.list_jobs(status=status, type_prefix=prefix, user_id=user_id,
                                   limit=PER_PAGE, offset=(page - 1) * PER_PAGE)
            total = table.count_jobs(status=status, type_prefix=prefix, user_id=user_id,
                                     at_most=COUNT_CAP + 1)
            return rows, total, table.job_types()

        rows, total, types = await self.db(load)
        more = total is not None and total > COUNT_CAP
        if total is None or more:
            pages = page + (1 if len(rows) == PER_PAGE else 0)
            total = COUNT_CAP if more else None
        else:
            pages = max(1, -(-total // PER_PAGE))
        query = _query(filters)
        return self.render(request, template, {
            "page": "jobs", "filters": filters, "rows": rows, "total": total, "types": types,
            "pageno": page, "pages": pages, "per_page": PER_PAGE, "problem": None,
            "more": more,
            "query": query, "page_query": _query({**filters, "page": str(page)}),
            "flash": _bulk_flash(request), "window": SEARCH_WINDOW})

    async def search(self, request: Request) -> Response:
        """``/search?q=``: an id (``42`` or ``#42``) opens that job; ``data:TEXT`` lists
        the newest jobs whose data contains TEXT; anything else lists the jobs whose type
        starts with it."""
        text = request.query_params.get("q", "").strip()
        base = str(request.scope.get("root_path") or "")
        number = text.removeprefix("#").strip()
        if number.isdigit():
            return RedirectResponse(f"{base}/jobs/{int(number)}", status_code=303,
                                    headers=SECURITY_HEADERS)
        if text.lower().startswith("data:"):
            target = f"{base}/jobs?{_query({'data': text[5:].strip()})}"
            return RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)
        target = f"{base}/jobs" + (f"?{_query({'type': text})}" if text else "")
        return RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)

    async def bulk(self, request: Request) -> Response:
        """POST retry / cancel of the jobs ticked on the list: CSRF-checked, confirmed,
        then done through ``JobTable.retry_jobs`` / ``cancel_jobs``."""
        form = await request.form()
        submitted = form.get(CSRF_FIELD)
        problem = csrf_problem(request, submitted if isinstance(submitted, str) else None)
        if problem is not None:
            return self.error(request, 403, "Action refused", f"Nothing was done: {problem}.")
        action = str(form.get("action") or "")
        if action not in BULK_ACTIONS:
            return self.error(request, 400, "Unknown action",
                              f"Nothing was done: bulk actions are {', '.join(BULK_ACTIONS)}, "
                              f"got {action!r}.")
        raw = [str(v) for v in form.getlist("ids")]
        bad = [v for v in raw if not v.isdigit()]
        if bad:
            return self.error(request, 400, "Bad selection",
                              f"Nothing was done: job ids are whole numbers, got {bad[0]!r}.")
        ids = list(dict.fromkeys(int(v) for v in raw))
        if not ids:
            return self.error(request, 400, "Nothing selected",
                              "Nothing was done: tick the jobs to act on first.")
        if len(ids) > BULK_LIMIT:
            return self.error(request, 400, "Too many jobs",
                              f"Nothing was done: at most {BULK_LIMIT} jobs at once, "
                              f"got {len(ids)}.")
        # Back to the same list: its filters and page, nothing else.
        back = urlencode([(k, v) for k, v in parse_qsl(str(form.get("back") or ""))
                          if k in ("status", "type", "user_id", "data", "page")])
        if form.get("confirm") != "yes":
            return self.render(request, "confirm_bulk.html", {
                "page": "jobs", "action": action, "ids": ids, "back": back})
        if action == "retry":
            rows = await self.db(JobTable.retry_jobs, ids)
        else:
            rows = await self.db(JobTable.cancel_jobs, ids)
        base = str(request.scope.get("root_path") or "")
        done = urlencode({"done": action, "n": len(rows), "of": len(ids)})
        target = f"{base}/jobs?{back + '&' if back else ''}{done}"
        return RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)

    async def workers(self, request: Request) -> Response:
        """Live workers: id, host, pid, slots, started, last seen, running jobs."""
        return self.render(request, "workers.html", await self._workers_context())

    async def workers_partial(self, request: Request) -> Response:
        """The workers table, for the page's refresh."""
        return self.render(request, "_workers.html", await self._workers_context())

    async def _workers_context(self) -> dict[str, Any]:
        def load(table: JobTable) -> tuple[list[Any], dict[str, list[WorkerJob]]]:
            workers = table.live_workers(self.live_within)
            running: dict[str, list[WorkerJob]] = {}
            for job in table.list_jobs(status="running", limit=RUNNING_SHOWN):
                if job.claimed_by is not None and table.is_running(job):
                    running.setdefault(job.claimed_by, []).append(job)
            return workers, running

        workers, running = await self.db(load)
        return {"page": "workers", "workers": workers, "running": running}

    async def job(self, request: Request) -> Response:
        """One job: every field, data, result, traceback, chain and actions."""
        job_id = int(request.path_params["job_id"])
        return await self._job_page(request, job_id)

    async def job_partial(self, request: Request) -> Response:
        """The live part of a job's page, for its refresh until the job has finished."""
        job_id = int(request.path_params["job_id"])
        return await self._job_page(request, job_id, template="_job.html")

    async def _job_page(self, request: Request, job_id: int, problem: str | None = None,
                        status: int = 200, template: str = "job.html") -> Response:
        def load(table: JobTable) -> tuple[WorkerJob | None, list[WorkerJob], bool]:
            job = table.get_job(job_id)
            if job is None:
                return None, [], False
            return job, table.job_chain(job_id), table.is_running(job)

        job, chain, running = await self.db(load)
        if job is None:
            return self.error(request, 404, "No such job", f"There is no job with id {job_id}.")
        result = job.result
        traceback = None
        if isinstance(result, dict) and isinstance(result.get("traceback"), str):
            traceback = result["traceback"]
            result = {k: v for k, v in result.items() if k != "traceback"}
        flash = FLASH.get(request.query_params.get("flash", ""))
        fields = [(name, value) for name, value in job.to_dict().items()
                  if name not in ("data", "result")]
        return self.render(request, template, {
            "page": "jobs", "job": job, "chain": chain, "running": running,
            "result": result, "traceback": traceback, "fields": fields, "flash": flash,
            "problem": problem,
            # Pending: cancelled at once; running: its worker is asked to stop it.
            "can_cancel": job.finished is None and job.cancel_requested is None,
            "can_retry": rules.retry_refusal(job) is None,
            "can_run_now": job.status == JobStatus.PENDING and job.due > utcnow()}, status)

    async def cron(self, request: Request) -> Response:
        """Cron chains: schedule, next run, last outcome."""
        chains = await self.db(JobTable.cron_chains)
        flash = FLASH.get(request.query_params.get("flash", ""))
        return self.render(request, "cron.html",
                           {"page": "cron", "chains": chains, "flash": flash})

    async def cron_partial(self, request: Request) -> Response:
        """The cron chains' table, for the page's refresh."""
        chains = await self.db(JobTable.cron_chains)
        return self.render(request, "_cron.html", {"page": "cron", "chains": chains})

    async def action(self, request: Request) -> Response:
        """POST cancel / retry / run-now: CSRF-checked, confirmed, then done."""
        job_id = int(request.path_params["job_id"])
        action = str(request.path_params["action"])
        if action not in ACTIONS:
            return self.error(request, 404, "Unknown action",
                              f"Actions are {', '.join(ACTIONS)}.")
        form = await request.form()
        submitted = form.get(CSRF_FIELD)
        problem = csrf_problem(request, submitted if isinstance(submitted, str) else None)
        if problem is not None:
            return self.error(request, 403, "Action refused", f"Nothing was done: {problem}.")
        back = "cron" if form.get("back") == "cron" else "job"
        if form.get("confirm") != "yes":
            job = await self.db(JobTable.get_job, job_id)
            if job is None:
                return self.error(request, 404, "No such job",
                                  f"There is no job with id {job_id}.")
            return self.render(request, "confirm.html",
                               {"page": "jobs", "job": job, "action": action, "back": back})
        operation = {"cancel": JobTable.cancel_job, "retry": JobTable.retry_job,
                     "run-now": JobTable.run_job_now}[action]
        try:
            row = await self.db(operation, job_id)
        except JobNotFoundError:
            return self.error(request, 404, "No such job", f"There is no job with id {job_id}.")
        except ActionRefusedError as exc:
            return await self._job_page(request, job_id, problem=str(exc), status=409)
        base = str(request.scope.get("root_path") or "")
        flash = {"cancel": "cancelled", "retry": "retried", "run-now": "run-now"}[action]
        if action == "cancel" and row.finished is None:
            flash = "cancel-requested"
        target = f"{base}/cron?flash={flash}" if back == "cron" else \
            f"{base}/jobs/{row.id}?flash={flash}"
        return RedirectResponse(target, status_code=303, headers=SECURITY_HEADERS)

    async def queues(self, request: Request, problem: str | None = None,
                     status: int = 200) -> Response:
        """Queues: pending and running jobs, pause state, pause/resume buttons."""
        queues = await self.db(JobTable.list_queues)
        flash = FLASH.get(request.query_params.get("flash", ""))
        return self.render(request, "queues.html", {
            "page": "queues", "queues": queues, "flash": flash, "problem": problem}, status)

    async def queue_action(self, request: Request) -> Response:
        """POST pause / resume of a queue, CSRF-checked like the job actions."""
        name = str(request.path_params["name"])
        action = str(request.path_params["action"])
        if action not in ("pause", "resume"):
            return self.error(request, 404, "Unknown action", "Actions are pause, resume.")
        form = await request.form()
        submitted = form.get(CSRF_FIELD)
        problem = csrf_problem(request, submitted if isinstance(submitted, str) else None)
        if problem is not None:
            return self.error(request, 403, "Action refused", f"Nothing was done: {problem}.")
        length = form.get("for")
        try:
            if action == "pause":
                await self.db(JobTable.pause_queue, name,
                              length if isinstance(length, str) and length else None)
            else:
                await self.db(JobTable.resume_queue, name)
        except JobTableError as exc:
            return await self.queues(request, problem=str(exc), status=400)
        base = str(request.scope.get("root_path") or "")
        flash = "paused" if action == "pause" else "resumed"
        return RedirectResponse(f"{base}/queues?flash={flash}", status_code=303,
                                headers=SECURITY_HEADERS)

    async def metrics(self, request: Request) -> Response:
        """Prometheus metrics."""
        body = await self.db(metrics.render, self.live_within)
        return Response(body, media_type=metrics.CONTENT_TYPE)

    async def database_error(self, request: Request, exc: Exception) -> Response:
        """The database could not be reached."""
        return self.error(request, 503, "Database unavailable", str(exc))

    async def jobtable_error(self, request: Request, exc: Exception) -> Response:
        """Any other error jobtable raises on purpose."""
        return self.error(request, 400, "Request refused", str(exc))


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(f"{what} must be a whole number, got {text!r}") from None


def _query(filters: dict[str, str]) -> str:
    return urlencode({k: v for k, v in filters.items() if v})


def _bulk_flash(request: Request) -> str | None:
    """The message after a bulk action, from the redirect's query."""
    q = request.query_params
    done, n, of = q.get("done"), q.get("n", ""), q.get("of", "")
    if done not in BULK_ACTIONS or not n.isdigit() or not of.isdigit():
        return None
    verb = {"retry": "Retried", "cancel": "Cancelled"}[done]
    skipped = int(of) - int(n)
    extra = f"; {skipped} skipped (not {'failed or cancelled' if done == 'retry' else 'pending'})" \
        if skipped > 0 else ""
    return f"{verb} {n} of {of} selected job{'s' if int(of) != 1 else ''}{extra}."


def create_app(database: str | JobTable | Store | Settings | None = None, *,
               token: str | None = None,
               username: str | None = None, password: str | None = None,
               trust_remote: bool = False, live_within: timedelta | None = None,
               refresh_seconds: float = 3.0, allowed_hosts: str | Sequence[str] | None = None,
               origin: str | Sequence[str] | None = None) -> Starlette:
    """The dashboard as an ASGI app.

    ``database`` is a URL, a ``JobTable`` (kept open; yours to close) or ``Settings``;
    by default the usual settings resolution. (A ``Store`` is still accepted for its URL
    and settings, deprecated.) Serve it with any ASGI server, or mount
    it in your own Starlette/FastAPI app: ``app.mount("/jobs", create_app(url))``.

    Without ``token`` or ``username``/``password`` it answers loopback clients only;
    pass ``trust_remote=True`` when your application already authenticates users.
    Without credentials it also answers only to a loopback ``Host`` (DNS rebinding).
    ``allowed_hosts`` (``["ops.example.com", "*.example.com:8443"]``) limits the
    ``Host`` header in any mode; ``origin`` (``"https://ops.example.com"``) is the
    public origin that POSTs must come from, for a dashboard behind a proxy.
    """
    parse_allowed_hosts(allowed_hosts), parse_origins(origin)  # refuse bad ones now
    dashboard = Dashboard(database, live_within=live_within, refresh_seconds=refresh_seconds)
    routes = [
        Route("/", dashboard.overview, name="overview"),
        Route("/partials/overview", dashboard.overview_partial, name="overview_partial"),
        Route("/partials/jobs", dashboard.jobs_partial, name="jobs_partial"),
        Route("/partials/jobs/{job_id:int}", dashboard.job_partial, name="job_partial"),
        Route("/partials/workers", dashboard.workers_partial, name="workers_partial"),
        Route("/partials/cron", dashboard.cron_partial, name="cron_partial"),
        Route("/search", dashboard.search, name="search"),
        Route("/workers", dashboard.workers, name="workers"),
        Route("/jobs", dashboard.jobs, name="jobs"),
        Route("/jobs/bulk", dashboard.bulk, methods=["POST"], name="bulk"),
        Route("/jobs/{job_id:int}", dashboard.job, name="job"),
        Route("/jobs/{job_id:int}/{action}", dashboard.action, methods=["POST"], name="action"),
        Route("/cron", dashboard.cron, name="cron"),
        Route("/queues", dashboard.queues, name="queues"),
        Route("/queues/{name}/{action}", dashboard.queue_action, methods=["POST"],
              name="queue_action"),
        Route("/metrics", dashboard.metrics, name="metrics"),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await run_in_threadpool(dashboard.close)

    app = Starlette(
        routes=routes, lifespan=lifespan,
        middleware=[Middleware(Guard, token=token, username=username, password=password,
                               trust_remote=trust_remote, allowed_hosts=allowed_hosts,
                               origin=origin)],
        exception_handlers={DatabaseUnavailableError: dashboard.database_error,
                            JobTableError: dashboard.jobtable_error})
    app.state.dashboard = dashboard
    return app


__all__ = ["Dashboard", "create_app"]

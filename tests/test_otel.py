"""OpenTelemetry on both databases, with the SDK's in-memory exporter: a PRODUCER span
when a job is scheduled, its W3C context stored in the row, a CONSUMER span when the job
runs (child of and linked to it), messaging attributes, error status, retries keeping
the context; nothing of OpenTelemetry is imported when the setting is off."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import open_table, run_burst, write_jobs
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from jobtable import JobStatus, WorkerJobConfig

_EXPORTER = InMemorySpanExporter()

JOBS = {
    "work": """
        from opentelemetry import trace

        def run(params):
            with trace.get_tracer("test").start_as_current_span("inside the job"):
                pass
            return {"n": params.job.data.get("n")}
    """,
    "sleepy": """
        from jobtable import Snooze

        def run(params):
            raise Snooze(3600)
    """,
    "flaky": """
        def run(params):
            if params.job.retry_count == 0:
                raise ValueError("first run fails")
            return "ok"
    """,
}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


def _named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


def test_a_scheduled_job_is_traced_from_send_to_process(
        db_url: str, tmp_path: Path, spans: InMemorySpanExporter) -> None:
    jobs = write_jobs(tmp_path / "jobs", JOBS, recorder=False)
    with open_table(db_url, jobs, otel=True) as jt:
        with trace.get_tracer("test").start_as_current_span("request") as request:
            job = jt.schedule_job(WorkerJobConfig(type="work", data={"n": 1}, queue="mail"))
        assert job.trace_context is not None
        assert job.trace_context["traceparent"].split("-")[1] == format(
            request.get_span_context().trace_id, "032x")
        assert jt.require_job(job.id).trace_context == job.trace_context
        run_burst(jt)
        assert jt.require_job(job.id).status is JobStatus.SUCCEEDED
    [send] = _named(spans, "send work")
    [process] = _named(spans, "process work")
    [inside] = _named(spans, "inside the job")
    assert send.kind is SpanKind.PRODUCER and process.kind is SpanKind.CONSUMER
    assert send.parent is not None
    assert send.parent.span_id == request.get_span_context().span_id
    assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert process.context.trace_id == send.context.trace_id
    assert [link.context.span_id for link in process.links] == [send.context.span_id]
    assert inside.parent is not None and inside.parent.span_id == process.context.span_id
    assert send.attributes is not None and process.attributes is not None
    assert dict(send.attributes) == {
        "messaging.system": "jobtable", "messaging.operation.type": "send",
        "messaging.operation.name": "send", "messaging.destination.name": "mail",
        "jobtable.job.type": "work", "messaging.message.id": str(job.id)}
    assert {k: process.attributes[k] for k in (
        "messaging.system", "messaging.operation.type", "messaging.destination.name",
        "messaging.message.id")} == {
        "messaging.system": "jobtable", "messaging.operation.type": "process",
        "messaging.destination.name": "mail", "messaging.message.id": str(job.id)}
    assert process.status.status_code is StatusCode.UNSET


def test_a_failed_run_is_an_error_span_and_its_retry_keeps_the_context(
        db_url: str, tmp_path: Path, spans: InMemorySpanExporter) -> None:
    jobs = write_jobs(tmp_path / "jobs", JOBS, recorder=False)
    with open_table(db_url, jobs, otel=True) as jt:
        first = jt.schedule_job(WorkerJobConfig(
            type="flaky", auto_reschedule_on_failure=True,
            auto_reschedule_on_failure_delay=timedelta(0)))
        run_burst(jt)
        [retry] = [j for j in jt.list_jobs() if j.rescheduled_from_job == first.id]
        assert retry.status is JobStatus.SUCCEEDED
        assert retry.trace_context == first.trace_context
    [send] = _named(spans, "send flaky")
    failed, ok = sorted(_named(spans, "process flaky"),
                        key=lambda s: int(str((s.attributes or {})["messaging.message.id"])))
    assert failed.status.status_code is StatusCode.ERROR
    assert "first run fails" in (failed.status.description or "")
    assert [e.name for e in failed.events] == ["exception"]
    assert ok.status.status_code is StatusCode.UNSET
    for process in (failed, ok):
        assert process.parent is not None and process.parent.span_id == send.context.span_id
    assert (ok.attributes or {})["jobtable.job.retry_count"] == 1


def test_batches_and_cron_chains_are_traced(
        db_url: str, tmp_path: Path, spans: InMemorySpanExporter) -> None:
    jobs = write_jobs(tmp_path / "jobs", JOBS, recorder=False)
    with open_table(db_url, jobs, otel=True) as jt:
        rows = jt.schedule_jobs([WorkerJobConfig(type="work", user_id=u) for u in range(3)])
        chain = jt.schedule_cron_job(WorkerJobConfig(type="flaky", user_id=9), "0 0 1 1 *")
    [batch] = _named(spans, "send work")
    assert (batch.attributes or {})["messaging.batch.message_count"] == 3
    assert {r.trace_context["traceparent"].rsplit("-", 1)[0] for r in rows
            if r.trace_context} == {
        f"00-{batch.context.trace_id:032x}-{batch.context.span_id:016x}"}
    assert chain.trace_context is not None and _named(spans, "send flaky")


def test_without_the_setting_nothing_of_opentelemetry_is_imported(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"plain": "def run(params):\n    return 1\n"},
                      recorder=False)
    script = textwrap.dedent(f"""
        import asyncio, sys
        from jobtable import JobTable, Worker, WorkerJobConfig
        from jobtable.settings import load_settings
        jt = JobTable(settings=load_settings(database={db_url!r}, jobs={str(jobs)!r}))
        job = jt.schedule_job(WorkerJobConfig(type="plain"))
        asyncio.run(Worker(jt, burst=True).run())
        assert jt.require_job(job.id).trace_context is None
        loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
        assert not loaded, loaded
        jt.close()
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr



def test_the_scheduling_that_reports_what_it_cancelled_is_traced_too(
        db_url: str, tmp_path: Path, spans: InMemorySpanExporter) -> None:
    jobs = write_jobs(tmp_path / "jobs", JOBS, recorder=False)
    with open_table(db_url, jobs, otel=True) as jt:
        first = jt.schedule_job(WorkerJobConfig(type="work"))
        report = jt.schedule_job_report(WorkerJobConfig(type="work"))  # what the CLI uses
        assert report.cancelled == [first.id]
    sends = _named(spans, "send work")
    assert len(sends) == 2
    assert (sends[1].attributes or {})["messaging.message.id"] == str(report.job.id)
    assert report.job.trace_context is not None


def test_a_snoozed_run_is_not_an_error_span(
        db_url: str, tmp_path: Path, spans: InMemorySpanExporter) -> None:
    jobs = write_jobs(tmp_path / "jobs", JOBS, recorder=False)
    with open_table(db_url, jobs, otel=True) as jt:
        job = jt.schedule_job(WorkerJobConfig(type="sleepy"))
        run_burst(jt)
        assert jt.require_job(job.id).status is JobStatus.PENDING
    [process] = _named(spans, "process sleepy")
    assert process.status.status_code is StatusCode.UNSET
    assert (process.attributes or {})["jobtable.job.snoozed"] is True

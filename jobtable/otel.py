"""OpenTelemetry tracing of jobs (``jobtable[otel]``, on with the ``otel`` setting).

Scheduling opens a PRODUCER span ``send {type}`` and stores its W3C trace context
(``traceparent``, ``tracestate``) in the row's ``trace_context``; the follow-ups of a row
(its retries, a cron job's next run, a retry by hand) keep the context of the row they
copy, so every run of a job links back to where it was first scheduled. Running a job
opens a CONSUMER span ``process {type}``, a child of the stored context (and linked to
it), current while the job runs so that the job's own spans nest under it. Both carry the
messaging semantic-convention attributes (``messaging.system`` = ``jobtable``,
``messaging.operation.type``, ``messaging.destination.name`` = the job's queue,
``messaging.message.id`` = the job id); a failed run sets the span's status to ERROR.

Spans go to the tracer provider the application configured (``opentelemetry.trace``);
without one they cost next to nothing. This module is imported only when ``otel`` is on,
so the core never imports OpenTelemetry otherwise. It is also the middleware the
``otel`` setting adds first to the ``hooks``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

from jobtable._extras import require_extra

require_extra("otel", "the otel setting (OpenTelemetry tracing)")

from opentelemetry import trace  # noqa: E402
from opentelemetry.trace import Link, SpanKind, Status, StatusCode  # noqa: E402
from opentelemetry.trace.propagation.tracecontext import (  # noqa: E402
    TraceContextTextMapPropagator,
)

from jobtable.model import JobParams, NewJob, WorkerJob  # noqa: E402
from jobtable.signals import Snooze  # noqa: E402

SYSTEM = "jobtable"
_W3C = TraceContextTextMapPropagator()


def _tracer() -> trace.Tracer:
    from jobtable import __version__

    return trace.get_tracer("jobtable", __version__)


def send(jobs: list[NewJob], write: Callable[[list[NewJob]], list[WorkerJob]]
         ) -> list[WorkerJob]:
    """Write ``jobs`` with ``write`` inside a PRODUCER span whose context each row keeps."""
    if not jobs:
        return write(jobs)
    types = sorted({job.type for job in jobs})
    queues = sorted({job.queue for job in jobs})
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "send",
        "messaging.operation.name": "send",
        "jobtable.job.type": types[0] if len(types) == 1 else ",".join(types),
    }
    if len(queues) == 1:
        attributes["messaging.destination.name"] = queues[0]
    if len(jobs) > 1:
        attributes["messaging.batch.message_count"] = len(jobs)
    name = f"send {types[0]}" if len(types) == 1 else "send"
    with _tracer().start_as_current_span(name, kind=SpanKind.PRODUCER,
                                         attributes=attributes) as span:
        carrier: dict[str, str] = {}
        _W3C.inject(carrier)
        rows = write([replace(job, trace_context=dict(carrier) or None) for job in jobs])
        if len(rows) == 1:
            span.set_attribute("messaging.message.id", str(rows[0].id))
        return rows


async def around(params: JobParams[Any], call_next: Callable[[], Awaitable[Any]]) -> Any:
    """The CONSUMER span ``process {type}`` around one run of a job."""
    job = params.job
    parent = _W3C.extract(job.trace_context or {})
    producer = trace.get_current_span(parent).get_span_context()
    links = [Link(producer)] if producer.is_valid else []
    attributes: dict[str, Any] = {
        "messaging.system": SYSTEM,
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": job.queue,
        "messaging.message.id": str(job.id),
        "jobtable.job.type": job.type,
        "jobtable.job.user_id": job.user_id,
        "jobtable.job.attempt": job.attempts,
        "jobtable.job.retry_count": job.retry_count,
    }
    with _tracer().start_as_current_span(
            f"process {job.type}", context=parent, kind=SpanKind.CONSUMER, links=links,
            attributes=attributes, record_exception=False,
            set_status_on_exception=False) as span:
        try:
            return await call_next()
        except Snooze:
            span.set_attribute("jobtable.job.snoozed", True)  # not a failure
            raise
        except BaseException as exc:
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            raise

"""A job that fails on its first attempt and succeeds when retried."""

from typing import Any


def run(params: Any) -> str:
    """A plain ``def``: it runs in a thread, never blocking the worker's event loop."""
    if params.job.rescheduled_from_job is None:
        raise ConnectionError("the mail server did not answer (first attempt)")
    params.log.info("retry of job %s worked", params.job.rescheduled_from_job)
    return "sent on retry"

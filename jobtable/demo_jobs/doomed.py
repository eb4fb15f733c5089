"""A job that always fails: its retries are bounded, so the chain stops."""

from typing import Any


def run(params: Any) -> str:
    """Fails every time; the worker retries it up to ``max_retries`` times."""
    raise RuntimeError(f"the printer is on fire (retry {params.job.retry_count})")

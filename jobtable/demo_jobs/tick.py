"""A cron job: records when it ran."""

from typing import Any


async def run(params: Any) -> str:
    """Each run is a new row; the next run is scheduled when this one finishes."""
    params.log.info("tick")
    return "tick"

"""A one-off job: greets someone and returns what it did."""

from typing import Any


async def run(params: Any) -> dict[str, str]:
    """Log a greeting; the return value is stored in the row's ``result``."""
    name = params.job.data.get("name", "world")
    params.log.info("hello, %s", name)
    return {"greeted": name}

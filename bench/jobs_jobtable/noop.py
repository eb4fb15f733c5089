"""The bench's no-op job for jobtable (file name = job type)."""

from __future__ import annotations

from typing import Any

from systems.common import report_start


async def run(params: Any) -> None:
    report_start(params.data)

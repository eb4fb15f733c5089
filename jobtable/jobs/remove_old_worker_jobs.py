"""Built-in: delete succeeded jobs past their ``remove_at`` and failed or cancelled jobs
older than the retention period (``failed_retention``, default 7 days).

Scheduled by every worker at start-up as a cron job for ``user_id`` 0. It never
deletes an unfinished row, nor its own.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def run(params: Any) -> dict[str, int]:
    """Delete removable rows in batches; return how many."""
    jobtable = params.jobtable
    deleted = await asyncio.to_thread(
        jobtable.store.cleanup, jobtable.settings.failed_retention, params.job.id)
    if deleted:
        params.log.info("removed %d old jobs", deleted)
    return {"deleted": deleted}

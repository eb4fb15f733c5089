"""Built-in: delete succeeded jobs past their ``remove_at`` and failed or cancelled jobs
older than the retention period (``failed_retention``, default 7 days).

Then, when the table is bloating (dead rows above a fifth of the live ones) and no
vacuum ran within ``vacuum_interval`` (default 2 minutes; 0 never), it vacuums and
analyzes the table itself: a queue's churn must not depend on the server's autovacuum.

Scheduled by every worker at start-up as a cron job for ``user_id`` 0. It never
deletes an unfinished row, nor its own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from jobtable.store.base import BLOAT_RATIO


async def run(params: Any) -> dict[str, int]:
    """Delete removable rows in batches, vacuum when bloating; return what it did."""
    jobtable = params.jobtable
    deleted = await asyncio.to_thread(
        jobtable.store.cleanup, jobtable.settings.failed_retention, params.job.id)
    if deleted:
        params.log.info("removed %d old jobs", deleted)
    vacuumed = await asyncio.to_thread(jobtable.store.maintain,
                                       jobtable.settings.vacuum_interval)
    if vacuumed:
        params.log.info("vacuumed worker_jobs (dead rows above %d %% of live ones)",
                        int(BLOAT_RATIO * 100))
    # "vacuumed" only when it did: the result stays {"deleted": n} otherwise.
    return {"deleted": deleted, "vacuumed": 1} if vacuumed else {"deleted": deleted}

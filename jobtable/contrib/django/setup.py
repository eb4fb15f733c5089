"""The middleware the Django worker adds first to the ``hooks``: importing it sets
Django up (``django.setup()``) in every worker process, including supervised and
isolated child processes, before any job module is imported, so job modules may import
models at their top."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import django
from django.apps import apps

if not apps.ready:
    django.setup()


async def around(params: Any, call_next: Callable[[], Awaitable[Any]]) -> Any:
    """Run the job as it is (this module's work is done at import)."""
    return await call_next()

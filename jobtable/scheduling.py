"""Deprecated: the scheduling rules now live in ``jobtable.rules``; kept importable."""

from __future__ import annotations

from jobtable.rules import dedupe_batch, follow_up, new_job

__all__ = ["dedupe_batch", "follow_up", "new_job"]

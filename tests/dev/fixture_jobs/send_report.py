"""An async job whose Data is a TypedDict (one key optional) and whose result is typed."""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class Data(TypedDict):
    to: str
    cc: NotRequired[list[str]]


class Report(TypedDict):
    sent: bool
    recipients: int


async def run(params: Any) -> Report:
    data = params.job.data
    return {"sent": True, "recipients": 1 + len(data.get("cc", []))}

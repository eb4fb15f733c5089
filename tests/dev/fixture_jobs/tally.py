"""A job whose Data has no required key, so data may be left out."""

from typing import Any, TypedDict


class Data(TypedDict, total=False):
    step: int


def run(params: Any) -> int:
    return int(params.job.data.get("step", 1))

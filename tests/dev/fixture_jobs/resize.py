"""A plain def job whose Data is a dataclass with defaults."""

from dataclasses import dataclass
from typing import Any, Literal


@dataclass
class Data:
    width: int
    height: int = 10
    mode: Literal["fit", "fill"] = "fit"


def run(params: Any) -> dict[str, int] | None:
    data = params.job.data
    return {"area": data["width"] * data.get("height", 10)}

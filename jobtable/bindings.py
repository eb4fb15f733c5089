"""What generated job bindings (``jobtable codegen``) use at run time.

A generated module (default ``<jobs folder>/_generated.py``) imports only this module
from jobtable besides the public names: ``make_config`` builds the ``WorkerJobConfig``
behind its typed ``job_config`` / ``schedule_job`` / ``schedule_cron_job`` (and async
twins), and ``lazy_attribute`` imports a job module's ``Data`` class on first use. The
registry reads a bindings file's ``REGISTRY`` through ``read_registry`` without
importing it. The generator itself (``jobtable.codegen``) is never imported by a
running application or worker.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jobtable.errors import InvalidDataError
from jobtable.model import WorkerJobConfig
from jobtable.settings import find_pyproject

__all__ = [
    "GENERATED_NAME",
    "data_dict",
    "lazy_attribute",
    "make_config",
    "read_registry",
    "resolve_bindings",
]

#: The file name of the bindings module in the jobs folder, unless settings say otherwise.
GENERATED_NAME = "_generated.py"


def data_dict(data: Any) -> dict[str, Any] | None:
    """``data`` as the dict stored in the row: dicts as they are, dataclass instances and
    pydantic models converted."""
    if data is None or isinstance(data, dict):
        return data
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        return dataclasses.asdict(data)
    dump = getattr(data, "model_dump", None)
    if callable(dump):
        dumped = dump(mode="json")
        if isinstance(dumped, dict):
            return dumped
    if isinstance(data, Mapping):
        return dict(data)
    raise InvalidDataError(
        f"data must be a dict, a dataclass instance or a pydantic model, "
        f"got {type(data).__name__}")


def make_config(job_type: str, data: Any = None, **options: Any) -> WorkerJobConfig:
    """The ``WorkerJobConfig`` behind every generated function."""
    return WorkerJobConfig(type=job_type, data=data_dict(data), **options)


def lazy_attribute(module: str, table: Mapping[str, tuple[str, str]], name: str) -> Any:
    """Import a job module's ``Data`` class the first time the bindings are asked for it."""
    target = table.get(name)
    if target is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    return getattr(importlib.import_module(target[0]), target[1])


def resolve_bindings(folder: Path, bindings: str | Path | None) -> Path:
    """The bindings file: ``bindings`` (relative to the project's pyproject.toml folder, or
    the working directory) or ``_generated.py`` in the jobs folder."""
    if bindings is None or str(bindings) == "":
        return folder / GENERATED_NAME
    path = Path(bindings)
    if not path.is_absolute():
        pyproject = find_pyproject()
        path = (pyproject.parent if pyproject else Path.cwd()) / path
    return path.resolve()


def read_registry(path: Path) -> dict[str, str] | None:
    """``REGISTRY`` of a generated bindings file, read without importing it; None when
    the file is missing or holds none."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    except (OSError, SyntaxError, ValueError):
        return None
    for node in tree.body:
        target: ast.expr | None = None
        value: ast.expr | None = None
        if isinstance(node, ast.AnnAssign):
            target, value = node.target, node.value
        elif isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        if isinstance(target, ast.Name) and target.id == "REGISTRY" and value is not None:
            try:
                found = ast.literal_eval(value)
            except ValueError:
                return None
            if isinstance(found, dict) and all(
                    isinstance(k, str) and isinstance(v, str) for k, v in found.items()):
                return found
            return None
    return None

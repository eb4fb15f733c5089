"""Where a jobs folder is, the dotted name it is imported by, and where its bindings go."""

from __future__ import annotations

import importlib.util
import keyword
from dataclasses import dataclass
from pathlib import Path

from jobtable.bindings import resolve_bindings
from jobtable.errors import ConfigError
from jobtable.registry import package_name_of
from jobtable.settings import Settings


@dataclass(frozen=True)
class JobsLocation:
    """The jobs folder, the dotted name it is imported by, and where its bindings go."""

    folder: Path
    package: str
    bindings: Path


def locate(settings: Settings, output: str | Path | None = None) -> JobsLocation:
    """Resolve the jobs folder (or dotted package) of ``settings`` and its bindings file."""
    jobs = settings.jobs
    path = Path(jobs)
    if path.is_dir():
        folder = path.resolve()
        package = package_name_of(folder)
    elif all(part.isidentifier() for part in jobs.split(".")):
        try:
            spec = importlib.util.find_spec(jobs)
        except ImportError as exc:
            raise ConfigError(f"jobs package {jobs!r} cannot be found: {exc}") from None
        locations = None if spec is None else spec.submodule_search_locations
        if not locations:
            raise ConfigError(
                f"jobs {jobs!r} is neither a folder nor an importable package; create the "
                "folder or pass --jobs")
        folder = Path(next(iter(locations))).resolve()
        package = jobs
    else:
        raise ConfigError(f"jobs folder {jobs!r} does not exist; create it or pass --jobs")
    bad = [p for p in package.split(".") if not p.isidentifier() or keyword.iskeyword(p)]
    if bad:
        raise ConfigError(
            f"the jobs folder is imported as {package!r}, and {bad[0]!r} is not a Python "
            "identifier; rename the folder (letters, digits and underscores)")
    target = output if output is not None else settings.bindings
    bindings = resolve_bindings(folder, target)
    if bindings.parent == folder and not bindings.stem.startswith("_"):
        raise ConfigError(
            f"bindings file {bindings.name} inside the jobs folder would be taken for a job "
            "type; start its name with '_' (default _generated.py)")
    return JobsLocation(folder=folder, package=package, bindings=bindings)

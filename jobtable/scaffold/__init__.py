"""``jobtable init DIR``: a runnable project with two example jobs and typed bindings.

The templates beside this module (``template/``) are copied with ``${name}`` and
``${package}`` filled in; a ``__package__`` folder becomes the application package.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from importlib.abc import Traversable
from pathlib import Path
from string import Template

from jobtable.errors import ConfigError

_SUFFIX = ".tmpl"
_RENAMES = {"gitignore": ".gitignore"}
# Settings a shell may carry for another project; the new project must use its own.
_FOREIGN_ENV = ("JOBTABLE_JOBS", "JOBTABLE_BINDINGS", "JOBTABLE_APP", "JOBTABLE_DATABASE_URL",
                "JOBTABLE_DATABASE")


@dataclass(frozen=True)
class Project:
    """A created project: where it is, its name and its application package."""

    root: Path
    name: str
    package: str
    files: tuple[Path, ...]


def package_name(name: str) -> str:
    """A Python package name for a project name: ``my-shop`` becomes ``my_shop``."""
    cleaned = re.sub(r"\W+", "_", name.strip().lower()).strip("_") or "app"
    if cleaned[0].isdigit():
        cleaned = "app_" + cleaned
    if cleaned in {"jobs", "tests", "jobtable"} or not cleaned.isidentifier():
        cleaned = f"{cleaned}_app"
    return cleaned


def _templates(folder: Traversable, relative: tuple[str, ...] = ()) -> list[
        tuple[tuple[str, ...], Traversable]]:
    found = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.is_dir():
            found += _templates(entry, (*relative, entry.name))
        elif entry.name.endswith(_SUFFIX):
            found.append(((*relative, entry.name[: -len(_SUFFIX)]), entry))
    return found


def clean_env() -> dict[str, str]:
    """The environment without jobtable settings that point at another project."""
    return {k: v for k, v in os.environ.items() if k not in _FOREIGN_ENV}


def create_project(target: str | Path, *, generate: bool = True) -> Project:
    """Create a project in ``target`` (a new or empty folder); with ``generate``, write
    its typed bindings by running ``jobtable codegen`` there."""
    root = Path(target).resolve()
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise ConfigError(f"{target} already exists and is not an empty folder; "
                          "choose a new folder")
    name = root.name
    package = package_name(name)
    values = {"name": name, "package": package}
    files = []
    for parts, template in _templates(resources.files(__name__).joinpath("template")):
        names = [package if p == "__package__" else _RENAMES.get(p, p) for p in parts]
        path = root.joinpath(*names)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(template.read_text(encoding="utf-8")).substitute(values),
                        encoding="utf-8")
        files.append(path)
    if generate:
        done = subprocess.run([sys.executable, "-m", "jobtable", "codegen"], cwd=root,
                              env=clean_env(), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ConfigError(f"the new project's bindings could not be generated:\n"
                              f"{done.stderr.strip() or done.stdout.strip()}")
        files.append(root / "jobs" / "_generated.py")
    return Project(root=root, name=name, package=package, files=tuple(sorted(files)))

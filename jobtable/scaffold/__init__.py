"""``jobtable init DIR``: a runnable project with two example jobs and typed bindings.

The templates beside this module (``template/``) are copied with ``${name}`` and
``${package}`` filled in; a ``__package__`` folder becomes the application package.
Into an existing folder (``jobtable init .``) only the missing files are added: an
existing file is never overwritten, and is reported as skipped.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
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
    skipped: tuple[Path, ...] = ()

    def missing_settings(self) -> str | None:
        """The ``[tool.jobtable]`` table to add by hand when an existing pyproject.toml
        (kept as it was) has none; None when there is nothing to add."""
        pyproject = self.root / "pyproject.toml"
        if pyproject not in self.skipped:
            return None
        try:
            table = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("tool", {})
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            table = {}
        if "jobtable" in table:
            return None
        return (f'[tool.jobtable]\ndatabase = "sqlite:///jobtable.db"\njobs = "jobs"\n'
                f'app = "{self.package}.bootstrap:create_app"\n')


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
    """Create a project in ``target`` (a new folder, or an existing one: only missing
    files are added, none is overwritten); with ``generate``, write its typed bindings
    by running ``jobtable codegen`` there (unless they already exist)."""
    root = Path(target).resolve()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{target} is a file; give a new or existing folder")
    name = root.name
    package = package_name(name)
    values = {"name": name, "package": package}
    files: list[Path] = []
    skipped: list[Path] = []
    for parts, template in _templates(resources.files(__name__).joinpath("template")):
        names = [package if p == "__package__" else _RENAMES.get(p, p) for p in parts]
        path = root.joinpath(*names)
        if path.exists() or path.is_symlink():
            skipped.append(path)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        text = Template(template.read_text(encoding="utf-8")).substitute(values)
        try:
            with path.open("x", encoding="utf-8") as out:  # never replace a file
                out.write(text)
        except FileExistsError:
            skipped.append(path)
            continue
        files.append(path)
    bindings = root / "jobs" / "_generated.py"
    if generate and bindings.exists():
        skipped.append(bindings)
    elif generate:
        done = subprocess.run([sys.executable, "-m", "jobtable", "codegen"], cwd=root,
                              env=clean_env(), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ConfigError(f"the new project's bindings could not be generated:\n"
                              f"{done.stderr.strip() or done.stdout.strip()}")
        files.append(bindings)
    return Project(root=root, name=name, package=package, files=tuple(sorted(files)),
                   skipped=tuple(sorted(skipped)))

"""Support for the dev-mode tests: projects in temporary folders, the CLI, mypy, waiting."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TypeVar

import jobtable

HERE = Path(__file__).resolve().parent
FIXTURE_JOBS = HERE / "fixture_jobs"
EXPECTED = HERE / "expected_generated.txt"
T = TypeVar("T")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without jobtable settings of the surrounding shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBTABLE_")}
    env.update(extra)
    return env


def fixture_project(root: Path) -> Path:
    """A project folder whose ``jobs`` package is a copy of the fixture jobs."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copytree(FIXTURE_JOBS, root / "jobs",
                    ignore=shutil.ignore_patterns("__pycache__", "_generated.py"))
    return root


def cli(*args: str, cwd: Path, check: bool = False,
        timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m jobtable ARGS`` in ``cwd``."""
    done = subprocess.run([sys.executable, "-m", "jobtable", *args], cwd=cwd,
                          env=clean_env(), capture_output=True, text=True, timeout=timeout,
                          check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"jobtable {' '.join(args)} exited {done.returncode}:\n"
                             f"{done.stdout}\n{done.stderr}")
    return done


def run_mypy(cwd: Path, *targets: str) -> subprocess.CompletedProcess[str]:
    """mypy --strict on ``targets`` in ``cwd``, with jobtable importable from source (an
    editable install hides it from mypy) and its own modules not re-checked."""
    stubs = cwd / ".mypy-path"
    stubs.mkdir(exist_ok=True)
    link = stubs / "jobtable"
    if not link.exists():
        link.symlink_to(Path(jobtable.__file__).resolve().parent, target_is_directory=True)
    config = cwd / ".mypy-test.ini"
    config.write_text("[mypy]\nstrict = True\n\n[mypy-jobtable.*]\nfollow_imports = silent\n\n"
                      "[mypy-croniter.*]\nignore_missing_imports = True\n")
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir",
         str(cwd / ".mypy-cache"), "--no-color-output", "--hide-error-context", *targets],
        cwd=cwd, env=clean_env(MYPYPATH=str(stubs)), capture_output=True, text=True,
        timeout=300, check=False)

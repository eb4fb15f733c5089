"""``jobtable init DIR``: a project whose own tests, type checks and bindings check pass."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest

from jobtable.scaffold import package_name

from ._support import clean_env, cli, run_mypy


def test_init_creates_a_project_whose_tests_types_and_bindings_check_out(
        tmp_path: Path) -> None:
    done = cli("init", "shop-app", cwd=tmp_path, check=True)
    root = tmp_path / "shop-app"
    created = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    assert created == [".gitignore", "README.md", "jobs/__init__.py", "jobs/_generated.py",
                       "jobs/heartbeat.py", "jobs/send_welcome.py", "pyproject.toml",
                       "shop_app/__init__.py", "shop_app/bootstrap.py", "shop_app/signup.py",
                       "tests/__init__.py", "tests/test_jobs.py"]
    assert "next: cd shop-app && jobtable dev" in done.stdout
    pyproject = (root / "pyproject.toml").read_text()
    assert '[tool.jobtable]\ndatabase = "sqlite:///jobtable.db"\njobs = "jobs"\n' \
           'app = "shop_app.bootstrap:create_app"' in pyproject
    assert cli("codegen", "--check", cwd=root).returncode == 0

    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                           cwd=root, env=clean_env(), capture_output=True, text=True,
                           timeout=120, check=False)
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "3 passed" in tests.stdout

    typed = run_mypy(root, "shop_app", "jobs", "tests")
    assert typed.returncode == 0, typed.stdout + typed.stderr


def test_the_scaffold_schedules_through_its_typed_bindings(tmp_path: Path) -> None:
    cli("init", "shop", cwd=tmp_path, check=True)
    root = tmp_path / "shop"
    done = subprocess.run([sys.executable, "-m", "shop.signup", "bo@example.com", "Bo"],
                          cwd=root, env=clean_env(), capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "scheduled job 1 (send_welcome) for bo@example.com"
    burst = cli("worker", "--burst", cwd=root, check=True)
    assert "mail to bo@example.com: Welcome, Bo!" in burst.stderr


def test_the_scaffold_send_welcome_is_retried_as_its_module_says(tmp_path: Path) -> None:
    cli("init", "shop", cwd=tmp_path, check=True)
    root = tmp_path / "shop"
    done = subprocess.run([sys.executable, "-m", "shop.signup", "bo@example.com", "Bo"],
                          cwd=root, env=clean_env(), capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    with closing(sqlite3.connect(root / "jobtable.db")) as db:
        rows = db.execute("SELECT auto_reschedule_on_failure, auto_reschedule_on_failure_delay"
                          " FROM worker_jobs WHERE type = 'send_welcome'").fetchall()
    assert rows == [(1, 10_000)]  # AUTO_RESCHEDULE_ON_FAILURE(_DELAY) of send_welcome


def test_init_refuses_a_folder_that_is_not_empty(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    done = cli("init", "taken", cwd=tmp_path)
    assert done.returncode == 1
    assert "taken already exists and is not an empty folder; choose a new folder" \
           in done.stderr
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["notes.txt"]


@pytest.mark.parametrize(("name", "package"), [
    ("shop", "shop"), ("My-Shop", "my_shop"), ("2fast", "app_2fast"), ("jobs", "jobs_app"),
    ("---", "app"),
])
def test_a_project_name_becomes_a_package_name(name: str, package: str) -> None:
    assert package_name(name) == package

"""``jobtable init DIR``: a project whose own tests, type checks and bindings check pass."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import zipfile
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


def test_init_into_an_existing_folder_adds_what_is_missing_and_overwrites_nothing(
        tmp_path: Path) -> None:
    root = tmp_path / "legacy"
    (root / "jobs").mkdir(parents=True)
    mine = {
        "pyproject.toml": "[project]\nname = 'legacy'\nversion = '3.0'\n",
        "notes.txt": "mine",
        "jobs/heartbeat.py": "def run(params):\n    return 'my own heartbeat'\n",
        "README.md": "# legacy\n",
    }
    for name, text in mine.items():
        (root / name).write_text(text)

    done = cli("init", ".", cwd=root)
    assert done.returncode == 0, done.stderr
    for name, text in mine.items():
        assert (root / name).read_text() == text, f"{name} was overwritten"
    for name in ("pyproject.toml", "README.md", "jobs/heartbeat.py"):
        assert f"skipped {name} (exists; left as it was)" in done.stdout
    assert "created jobs/send_welcome.py" in done.stdout
    assert "next: jobtable dev   (see its README.md)" in done.stdout
    assert (root / "legacy" / "bootstrap.py").is_file()
    assert (root / "tests" / "test_jobs.py").is_file()
    assert (root / "jobs" / "_generated.py").is_file()
    # The kept pyproject has no [tool.jobtable]: init says what to add.
    assert 'add to pyproject.toml:\n[tool.jobtable]\ndatabase = "sqlite:///jobtable.db"\n' \
           'jobs = "jobs"\napp = "legacy.bootstrap:create_app"' in done.stdout

    again = cli("init", ".", cwd=root, check=True)
    assert "created" not in again.stdout
    assert "skipped jobs/_generated.py (exists; left as it was)" in again.stdout


def test_init_refuses_a_file(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("mine")
    done = cli("init", "taken", cwd=tmp_path)
    assert done.returncode != 0
    assert (tmp_path / "taken").read_text() == "mine"


@pytest.mark.slow
def test_the_scaffold_builds_as_a_package_with_its_app_and_jobs(tmp_path: Path) -> None:
    # `pip install -e .` failed here: setuptools found several top-level packages.
    cli("init", "shop", cwd=tmp_path, check=True)
    root = tmp_path / "shop"
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                            str(tmp_path / "dist"), str(root)], cwd=tmp_path,
                           env=clean_env(), capture_output=True, text=True, timeout=300,
                           check=False)
    assert built.returncode == 0, built.stdout + built.stderr
    [wheel] = (tmp_path / "dist").glob("shop-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"shop/__init__.py", "shop/bootstrap.py", "jobs/__init__.py",
            "jobs/heartbeat.py", "jobs/send_welcome.py", "jobs/_generated.py"} <= names
    assert not any(name.startswith("tests/") for name in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    # What the project's README runs is declared: `pip install -e '.[dev]'`.
    assert "Provides-Extra: dev" in text
    for requirement in ("jobtable[dev]", "mypy", "pytest"):
        assert f"Requires-Dist: {requirement}" in text


@pytest.mark.parametrize(("name", "package"), [
    ("shop", "shop"), ("My-Shop", "my_shop"), ("2fast", "app_2fast"), ("jobs", "jobs_app"),
    ("---", "app"),
])
def test_a_project_name_becomes_a_package_name(name: str, package: str) -> None:
    assert package_name(name) == package

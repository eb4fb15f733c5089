"""What an install promises: a lean core, extras that commands name when missing, one
version, supported Pythons, and a PostgreSQL script that exits without close()."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import subprocess
import sys
import tarfile
import textwrap
import tomllib
from pathlib import Path

import pytest

import jobtable

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRA_MODULES = ["starlette", "jinja2", "uvicorn", "prometheus_client", "multipart",
                 "python_multipart", "watchfiles", "opentelemetry"]


def _without(modules: list[str], code: str, *, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter where ``modules`` cannot be imported (as when
    their extra is not installed)."""
    blocked = f"import sys\nfor _name in {modules!r}:\n    sys.modules[_name] = None\n"
    return subprocess.run([sys.executable, "-c", blocked + textwrap.dedent(code)], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


def _cli_without(modules: list[str], *args: str,
                 cwd: Path) -> subprocess.CompletedProcess[str]:
    return _without(modules, f"""
        from jobtable.cli import main
        sys.argv = ["jobtable", *{list(args)!r}]
        main()
        """, cwd=cwd)


@pytest.mark.parametrize(("command", "missing", "message"), [
    (["dashboard"], ["starlette"],
     "error: the dashboard needs `pip install 'jobtable[dashboard]'` "
     "(not installed: starlette)"),
    (["dashboard"], ["uvicorn", "prometheus_client"],
     "error: the dashboard needs `pip install 'jobtable[dashboard]'` "
     "(not installed: uvicorn, prometheus_client)"),
    (["dev"], ["watchfiles"],
     "error: jobtable dev needs `pip install 'jobtable[dev]'` (not installed: watchfiles)"),
])
def test_a_command_whose_extra_is_missing_names_it_in_one_line(
        tmp_path: Path, command: list[str], missing: list[str], message: str) -> None:
    done = _cli_without(missing, *command, cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.strip() == message
    assert "Traceback" not in done.stderr
    assert list(tmp_path.iterdir()) == []  # nothing was created


def test_importing_the_dashboard_without_its_extra_says_which_to_install(
        tmp_path: Path) -> None:
    done = _without(["jinja2"], """
        try:
            import jobtable.dashboard
        except Exception as exc:
            print(type(exc).__name__, exc)
        """, cwd=tmp_path)
    assert done.stdout.strip() == ("MissingExtraError jobtable.dashboard needs "
                                   "`pip install 'jobtable[dashboard]'` (not installed: jinja2)")


def test_the_core_works_without_any_extra(tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "hello.py").write_text("def run(params):\n    return 'hi'\n")
    for args in (["--help"], ["schedule", "hello", "--user-id", "1"], ["worker", "--burst"],
                 ["jobs", "--status", "succeeded", "--json"]):
        done = _cli_without(EXTRA_MODULES, *args, cwd=tmp_path)
        assert done.returncode == 0, (args, done.stderr)
    assert [job["type"] for job in json.loads(done.stdout)] == ["hello"]


def test_postgresql_without_libpq_says_how_to_get_it(tmp_path: Path) -> None:
    done = _without(["psycopg"], """
        from jobtable.store import open_store
        try:
            open_store("postgresql://127.0.0.1:5432/postgres")
        except Exception as exc:
            print(type(exc).__name__, exc)
        """, cwd=tmp_path)
    assert done.stdout.startswith("ConfigError PostgreSQL needs libpq, which was not found: "
                                  "install `pip install 'jobtable[postgres-binary]'`")
    assert "apt install libpq5" in done.stdout


def test_the_core_dependencies_are_lean_and_the_extras_complete() -> None:
    project = PYPROJECT["project"]
    core = {dep.split(">")[0].split("[")[0] for dep in project["dependencies"]}
    assert core == {"croniter", "click", "psycopg", "psycopg-pool", "rich"}
    assert not any("[binary]" in dep for dep in project["dependencies"])
    extras = project["optional-dependencies"]
    assert {"postgres-binary", "dashboard", "dev", "otel", "all", "test", "docs"} <= set(extras)
    assert extras["all"] == ["jobtable[postgres-binary,dashboard,dev,otel]"]
    assert "jobtable[all]" in extras["test"]
    with pytest.raises(ValueError, match="unknown extra 'nope'"):
        from jobtable._extras import require_extra
        require_extra("nope")


def test_one_version_everywhere(tmp_path: Path) -> None:
    assert "version" in PYPROJECT["project"]["dynamic"]
    assert importlib.metadata.version("jobtable") == jobtable.__version__
    done = subprocess.run([sys.executable, "-m", "jobtable", "--version"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, check=True)
    assert jobtable.__version__ in done.stdout


def test_supported_pythons_are_declared() -> None:
    classifiers = PYPROJECT["project"]["classifiers"]
    for version in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert PYPROJECT["project"]["requires-python"] == ">=3.11"
    assert PYPROJECT["project"]["license"] == "MIT"
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text()


@pytest.mark.skipif(sys.version_info < (3, 13), reason=(
    "the pool threads held the interpreter at exit on Python 3.13; CI runs this test in "
    "its Python 3.13 environment"))
def test_a_script_that_forgets_close_exits_promptly(pg_url: str, tmp_path: Path) -> None:
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "hello.py").write_text("def run(params):\n    return 1\n")
    script = tmp_path / "forgetful.py"
    script.write_text(textwrap.dedent(f"""
        from jobtable import JobTable, WorkerJobConfig
        jt = JobTable({pg_url!r}, jobs="jobs")
        print(jt.schedule_job(WorkerJobConfig(type="hello", user_id=1)).id)
        """))
    proc = subprocess.Popen([sys.executable, str(script)], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Without the fix the pool's threads held the process for about 20 seconds.
        out, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the script did not exit within 10 s after its last statement")
    assert proc.returncode == 0, err
    assert out.strip() == "1"
    assert "couldn't stop thread" not in err



@pytest.mark.slow
def test_the_sdist_carries_the_licence_the_changelog_and_the_metadata(tmp_path: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True, text=True).stdout.splitlines()
    source = tmp_path / "src"
    for name in listed:
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(ROOT / name, source / name)
    subprocess.run([sys.executable, "-m", "build", "--sdist", "--outdir", str(tmp_path),
                    str(source)], check=True, capture_output=True, timeout=300)
    [sdist] = tmp_path.glob("jobtable-*.tar.gz")
    top = f"jobtable-{jobtable.__version__}"
    with tarfile.open(sdist) as tar:
        names = set(tar.getnames())
        metadata = tar.extractfile(f"{top}/PKG-INFO")
        assert metadata is not None
        info = metadata.read().decode()
    for name in ("LICENSE", "CHANGELOG.md", "README.md", "jobtable/store/queries.sql"):
        assert f"{top}/{name}" in names
    assert "License-Expression: MIT" in info
    assert "License-File: LICENSE" in info
    assert "Classifier: Programming Language :: Python :: 3.13" in info
    assert "Project-URL: Changelog, " in info
    assert "Provides-Extra: dashboard" in info

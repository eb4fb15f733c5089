"""Settings: arguments, then JOBTABLE_* variables, then [tool.jobtable] in pyproject.toml,
then defaults; durations in several spellings; clear errors for bad values; and the
settings that change behaviour (stale limit, database, auto-migrate) on both databases."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import RECORD_JOB, Side, now, row_count, run_burst, set_times, write_jobs

from jobtable import ConfigError, JobTable, MigrationError, Settings, WorkerJobConfig, load_settings


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No JOBTABLE_* variables, and a working directory without pyproject.toml."""
    for name in list(os.environ):
        if name.startswith("JOBTABLE_") or name == "WORKER_COUNT":
            monkeypatch.delenv(name)
    home = tmp_path / "cwd"
    home.mkdir()
    monkeypatch.chdir(home)


def _pyproject(folder: Path, body: str) -> None:
    (folder / "pyproject.toml").write_text("[project]\nname = 'app'\n\n[tool.jobtable]\n" + body)


def test_defaults() -> None:
    settings = load_settings()
    assert settings == Settings()
    assert settings.database == "sqlite:///jobtable.db"
    assert settings.jobs == "jobs"
    assert settings.stale_limit == timedelta(hours=1)
    assert settings.grace_period == timedelta(seconds=30)
    assert settings.concurrency == 10
    assert settings.failed_retention == timedelta(days=7)
    assert settings.cleanup_cron == "0 * * * * *"


def test_arguments_beat_environment_which_beats_pyproject(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _pyproject(Path.cwd(), 'concurrency = 3\nstale_limit = "2h"\ngrace-period = "5s"\n'
                           'app = "pkg.mod:make"\n')
    from_file = load_settings()
    assert (from_file.concurrency, from_file.stale_limit) == (3, timedelta(hours=2))
    assert from_file.grace_period == timedelta(seconds=5)
    assert from_file.app == "pkg.mod:make"

    monkeypatch.setenv("JOBTABLE_CONCURRENCY", "7")
    monkeypatch.setenv("JOBTABLE_STALE_LIMIT", "30m")
    from_env = load_settings()
    assert (from_env.concurrency, from_env.stale_limit) == (7, timedelta(minutes=30))
    assert from_env.grace_period == timedelta(seconds=5)

    explicit = load_settings(concurrency=2, stale_limit=None)
    assert explicit.concurrency == 2
    assert explicit.stale_limit == timedelta(minutes=30)  # None means "not given"


def test_a_relative_jobs_folder_in_pyproject_is_relative_to_that_file(
        monkeypatch: pytest.MonkeyPatch) -> None:
    project = Path.cwd()
    (project / "app" / "jobs").mkdir(parents=True)
    _pyproject(project, 'jobs = "app/jobs"\n')
    monkeypatch.chdir(project / "app")
    assert Path(load_settings().jobs) == project / "app" / "jobs"


@pytest.mark.parametrize(("text", "expected"), [
    ("30", timedelta(seconds=30)), ("30s", timedelta(seconds=30)),
    ("5m", timedelta(minutes=5)), ("2h", timedelta(hours=2)), ("7d", timedelta(days=7)),
    ("1.5s", timedelta(seconds=1.5)), (90, timedelta(seconds=90)),
    (timedelta(minutes=3), timedelta(minutes=3))])
def test_durations_accept_seconds_and_units(text: object, expected: timedelta) -> None:
    assert load_settings(grace_period=text).grace_period == expected


@pytest.mark.parametrize(("values", "words"), [
    ({"concurrency": "0"}, ["setting concurrency", "at least 1"]),
    ({"concurrency": "many"}, ["setting concurrency"]),
    ({"stale_limit": "soon"}, ["setting stale_limit", "cannot read", "e.g. 30s"]),
    ({"stale_limit": "-5s"}, ["setting stale_limit"]),
    ({"auto_migrate": "maybe"}, ["setting auto_migrate", "true or false"]),
    # A zero stale limit or rescue window would make every running job pending again
    # at once (run twice); a zero poll interval would spin.
    ({"stale_limit": "0s"}, ["setting stale_limit", "must be greater than 0"]),
    ({"rescue_after": 0}, ["setting rescue_after", "must be greater than 0"]),
    ({"poll_interval": "0"}, ["setting poll_interval", "must be greater than 0"]),
    ({"grace_period": -1}, ["setting grace_period", "must not be negative"]),
    ({"stale_limit": timedelta(seconds=-5)}, ["setting stale_limit", "greater than 0"]),
    ({"colour": "blue"}, ["unknown setting 'colour'", "concurrency", "stale_limit"]),
])
def test_bad_values_are_refused_naming_the_setting(
        values: dict[str, object], words: list[str]) -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(**values)
    for word in words:
        assert word in str(caught.value)


def test_a_zero_grace_period_and_retention_are_allowed() -> None:
    settings = load_settings(grace_period=0, failed_retention="0s")
    assert settings.grace_period == settings.failed_retention == timedelta(0)


def test_a_bad_environment_value_is_refused_naming_the_setting(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBTABLE_GRACE_PERIOD", "a while")
    with pytest.raises(ConfigError, match="setting grace_period"):
        load_settings()


def test_an_unreadable_pyproject_is_a_clear_error() -> None:
    (Path.cwd() / "pyproject.toml").write_text("[tool.jobtable\nconcurrency = ")
    with pytest.raises(ConfigError, match=r"pyproject.toml: cannot read \[tool.jobtable\]"):
        load_settings()


def test_the_database_and_stale_limit_come_from_the_environment(
        db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"note": RECORD_JOB})
    side = Side(db_url, tmp_path)
    monkeypatch.setenv("JOBTABLE_DATABASE_URL", db_url)
    monkeypatch.setenv("JOBTABLE_JOBS", str(jobs))
    monkeypatch.setenv("JOBTABLE_STALE_LIMIT", "10m")
    monkeypatch.setenv("JOBTABLE_POLL_INTERVAL", "0.05")
    with JobTable() as jt, side.env():
        assert jt.store.stale_limit == timedelta(minutes=10)
        job = jt.schedule_job(WorkerJobConfig(type="note", user_id=1))
        set_times(db_url, job.id, started=now() - timedelta(minutes=11))
        run_burst(jt)
        assert side.job_ids() == [job.id]
    assert row_count(db_url) >= 1


def test_without_auto_migrate_an_unmigrated_database_is_refused_untouched(
        db_url: str, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs", {"note": RECORD_JOB})
    with JobTable(db_url, jobs=jobs, auto_migrate=False) as jt:
        with pytest.raises(MigrationError, match="run 'jobtable migrate'"):
            jt.schedule_job(WorkerJobConfig(type="note"))
        assert row_count(db_url) == 0
        assert jt.migrate()
        assert jt.schedule_job(WorkerJobConfig(type="note")).id >= 1


def _jobtable(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "jobtable", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("database", [None, "sqlite:///data/app.db"])
def test_the_sqlite_database_follows_the_project_not_the_working_directory(
        tmp_path: Path, database: str | None) -> None:
    # `jobtable jobs` in a subfolder used to create an empty jobtable.db there.
    root = tmp_path / "project"
    (root / "jobs").mkdir(parents=True)
    (root / "jobs" / "hello.py").write_text("def run(params):\n    return 1\n")
    (root / "src" / "deep").mkdir(parents=True)
    (root / "data").mkdir()
    _pyproject(root, 'jobs = "jobs"\n' + (f'database = "{database}"\n' if database else ""))
    done = _jobtable("schedule", "hello", "--user-id", "5", cwd=root / "src" / "deep")
    assert done.returncode == 0, done.stderr

    listed = _jobtable("jobs", "--json", cwd=root / "src")
    assert listed.returncode == 0, listed.stderr
    assert [(j["type"], j["user_id"]) for j in json.loads(listed.stdout)] == [("hello", 5)]
    expected = root / ("data/app.db" if database else "jobtable.db")
    assert expected.is_file()
    assert sorted(p.name for p in root.rglob("*.db")) == [expected.name]
    assert load_settings().database == Settings().database  # no pyproject: as given


def test_explicit_and_environment_databases_stay_relative_to_the_working_directory(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _pyproject(tmp_path, "")
    assert load_settings().database == f"sqlite:///{tmp_path.resolve() / 'jobtable.db'}"
    monkeypatch.setenv("JOBTABLE_DATABASE_URL", "sqlite:///here.db")
    assert load_settings().database == "sqlite:///here.db"
    assert load_settings(database="sqlite:///there.db").database == "sqlite:///there.db"


def test_hooks_and_otel_come_from_pyproject_the_environment_or_arguments(
        monkeypatch: pytest.MonkeyPatch) -> None:
    _pyproject(Path.cwd(), 'hooks = ["myapp.jobhooks", "myapp.metrics"]\notel = true\n')
    settings = load_settings()
    assert settings.hooks == ("myapp.jobhooks", "myapp.metrics") and settings.otel is True
    monkeypatch.setenv("JOBTABLE_HOOKS", " tracing , myapp.jobhooks,")
    monkeypatch.setenv("JOBTABLE_OTEL", "false")
    settings = load_settings()
    assert settings.hooks == ("tracing", "myapp.jobhooks") and settings.otel is False
    assert load_settings(hooks=["only"]).hooks == ("only",)
    assert Settings().hooks == () and Settings().otel is False
    with pytest.raises(ConfigError, match="setting hooks: 'my app' is not a dotted module"):
        load_settings(hooks="my app")
    with pytest.raises(ConfigError, match="setting hooks: expected a list of module names"):
        load_settings(hooks=[1])

"""jobtable.contrib.django against a real minimal Django project made in a temporary
folder, on SQLite and PostgreSQL: manage.py jobtable_schedule and jobtable_worker as
subprocesses, settings from settings.JOBTABLE and DATABASES, scheduling inside
Django's transaction (a rolled-back transaction writes no job)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from helpers import subprocess_env

from jobtable import ConfigError, JobStatus, JobTable
from jobtable.contrib.django import database_url

pytest.importorskip("django")

SEND_REPORT = """
from django.apps import apps
from django.conf import settings


def run(params):
    apps.check_apps_ready()   # Django is set up in this worker process
    return {"sent_to": params.job.data["to"], "site": settings.SITE_NAME}
"""


def _project(root: Path, db_url: str) -> Path:
    """A Django project: manage.py, mysite/settings.py, jobs/send_report.py."""
    if db_url.startswith("sqlite"):
        database = {"ENGINE": "django.db.backends.sqlite3",
                    "NAME": db_url.removeprefix("sqlite:///")}
    else:
        url = urlsplit(db_url)
        database = {"ENGINE": "django.db.backends.postgresql", "NAME": url.path.lstrip("/"),
                    "USER": url.username or "", "HOST": url.hostname or "",
                    "PORT": str(url.port or "")}
    (root / "mysite").mkdir(parents=True)
    (root / "mysite" / "__init__.py").write_text("")
    (root / "mysite" / "settings.py").write_text(textwrap.dedent(f"""
        from pathlib import Path
        BASE_DIR = Path(__file__).resolve().parent.parent
        SECRET_KEY = "not secret"
        INSTALLED_APPS = ["jobtable.contrib.django"]
        DATABASES = {{"default": {database!r},
                      "other": {{"ENGINE": "django.db.backends.sqlite3",
                                 "NAME": str(BASE_DIR / "other.sqlite3")}}}}
        USE_TZ = True
        SITE_NAME = "example"
        JOBTABLE = {{"JOBS": BASE_DIR / "jobs", "poll_interval": 0.05}}
    """))
    (root / "manage.py").write_text(textwrap.dedent("""
        import os, sys
        if __name__ == "__main__":
            os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
            from django.core.management import execute_from_command_line
            execute_from_command_line(sys.argv)
    """))
    # A hook from [tool.jobtable] (kept beside the Django set-up middleware).
    (root / "pyproject.toml").write_text('[tool.jobtable]\nhooks = ["sitehooks"]\n')
    (root / "sitehooks.py").write_text(textwrap.dedent("""
        from pathlib import Path

        def on_success(params, result):
            (Path(__file__).parent / "hooked.txt").write_text(str(params.job.id))
    """))
    (root / "jobs").mkdir()
    (root / "jobs" / "send_report.py").write_text(textwrap.dedent(SEND_REPORT))
    return root


def _manage(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "manage.py", *args], cwd=project,
                          env=subprocess_env(), capture_output=True, text=True, timeout=120,
                          check=False)


def test_manage_py_schedules_and_a_burst_worker_runs_the_job(
        db_url: str, tmp_path: Path) -> None:
    project = _project(tmp_path / "site", db_url)
    scheduled = _manage(project, "jobtable_schedule", "send_report", "--user-id", "7",
                        "--data", '{"to": "a@b.c"}')
    assert scheduled.returncode == 0, scheduled.stderr
    ran = _manage(project, "jobtable_worker", "--burst", "--concurrency", "2")
    assert ran.returncode == 0, ran.stderr
    with JobTable(db_url, project / "jobs") as jt:
        [job] = jt.list_jobs(type="send_report")
        assert job.status is JobStatus.SUCCEEDED, job.result
        assert job.result == {"sent_to": "a@b.c", "site": "example"}
        assert job.user_id == 7
    assert (project / "hooked.txt").read_text() == str(job.id)
    helped = _manage(project, "help", "jobtable_worker")
    assert helped.returncode == 0 and "--burst" in helped.stdout


def test_a_job_scheduled_in_a_rolled_back_transaction_is_not_written(
        db_url: str, tmp_path: Path) -> None:
    project = _project(tmp_path / "site", db_url)
    script = textwrap.dedent("""
        import json
        from django.db import transaction
        from jobtable import WorkerJobConfig
        from jobtable.contrib.django import get_jobtable, schedule_job

        try:
            with transaction.atomic():
                row = schedule_job(WorkerJobConfig(type="send_report", user_id=1,
                                                   data={"to": "rolled back"}))
                # Written on Django's connection, in its transaction: unseen outside it.
                assert row is not None and row.id
                assert get_jobtable().get_job(row.id) is None
                raise RuntimeError("the view failed")
        except RuntimeError:
            pass
        with transaction.atomic():
            row = schedule_job(WorkerJobConfig(type="send_report", user_id=2,
                                               data={"to": "committed"}))
            assert row is not None
        row = schedule_job(WorkerJobConfig(type="send_report", user_id=3, data={"to": "now"}))
        assert row is not None and row.id
        # A transaction of another database: the job is scheduled when it commits.
        with transaction.atomic(using="other"):
            assert schedule_job(WorkerJobConfig(type="send_report", user_id=4,
                                                data={"to": "on commit"}), using="other") is None
            assert get_jobtable().list_jobs(user_id=4) == []
        assert len(get_jobtable().list_jobs(user_id=4)) == 1
        jt = get_jobtable()
        assert jt.settings.database.startswith(("sqlite:///", "postgresql://"))
        print(json.dumps(sorted(j.data["to"] for j in jt.list_jobs())))
    """)
    done = _manage(project, "shell", "-c", script)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == ["committed", "now", "on commit"]


def test_database_urls_from_django_databases() -> None:
    assert database_url({"ENGINE": "django.db.backends.sqlite3", "NAME": "/srv/db.sqlite3"}
                        ) == "sqlite:////srv/db.sqlite3"
    assert database_url({"ENGINE": "django.db.backends.postgresql", "NAME": "app",
                         "USER": "web", "PASSWORD": "p@ss word", "HOST": "db.internal",
                         "PORT": 5433, "OPTIONS": {"sslmode": "require"}}
                        ) == "postgresql://web:p%40ss%20word@db.internal:5433/app?sslmode=require"
    assert database_url({"ENGINE": "django.db.backends.postgresql", "NAME": "app"}
                        ) == "postgresql:///app"
    with pytest.raises(ConfigError, match="SQLite and PostgreSQL"):
        database_url({"ENGINE": "django.db.backends.mysql", "NAME": "app"})
    with pytest.raises(ConfigError, match="not a file"):
        database_url({"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"})

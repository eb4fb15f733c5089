"""jobtable in a Django project.

``INSTALLED_APPS += ["jobtable.contrib.django"]``; settings in ``settings.JOBTABLE``
(the keys of ``[tool.jobtable]``, any case: ``{"JOBS": BASE_DIR / "jobs",
"CONCURRENCY": 20}``). Without ``DATABASE`` the queue lives in Django's ``default``
database (``DATABASE_ALIAS`` names another), its URL built from ``DATABASES``
(SQLite or PostgreSQL). ``manage.py jobtable_worker`` and ``manage.py
jobtable_schedule`` take the options of ``jobtable worker`` and ``jobtable schedule``.
``get_jobtable()`` is the project's one ``JobTable``; ``schedule_job(config)`` schedules
inside the current Django transaction.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from jobtable.client import JobTable
from jobtable.errors import ConfigError
from jobtable.model import WorkerJob, WorkerJobConfig
from jobtable.settings import _ENV, Settings, load_settings

__all__ = ["database_url", "get_jobtable", "jobtable_settings", "schedule_job"]

#: The middleware the worker commands add first: sets Django up in every process.
SETUP_HOOK = "jobtable.contrib.django.setup"

_POSTGRES_ENGINES = ("postgresql", "postgresql_psycopg2", "postgis")
_lock = threading.Lock()
_table: JobTable | None = None


def database_url(database: Mapping[str, Any]) -> str:
    """The jobtable URL of one entry of Django's ``DATABASES`` (SQLite or PostgreSQL)."""
    engine = str(database.get("ENGINE", ""))
    name = database.get("NAME")
    if engine.endswith(".sqlite3") or engine.endswith(".spatialite"):
        if not name or str(name) == ":memory:" or str(name).startswith("file:"):
            raise ConfigError(
                f"Django's database NAME {name!r} is not a file; jobtable needs a database "
                "that worker processes share: set JOBTABLE['DATABASE']")
        return f"sqlite:///{Path(str(name)).resolve()}"
    if engine.rsplit(".", 1)[-1] in _POSTGRES_ENGINES:
        user = quote(str(database.get("USER") or ""), safe="")
        password = quote(str(database.get("PASSWORD") or ""), safe="")
        auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
        host = str(database.get("HOST") or "")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 address
        port = f":{database['PORT']}" if database.get("PORT") else ""
        options = {k: v for k, v in (database.get("OPTIONS") or {}).items()
                   if isinstance(v, (str, int)) and not isinstance(v, bool)}
        query = f"?{urlencode(options)}" if options else ""
        if host.startswith("/"):  # a socket folder
            options["host"] = host
            host, query = "", f"?{urlencode(options)}"
        return f"postgresql://{auth}{host}{port}/{quote(str(name or ''), safe='')}{query}"
    raise ConfigError(
        f"jobtable runs on SQLite and PostgreSQL; Django's database uses {engine!r}: set "
        "JOBTABLE['DATABASE'] to a sqlite:/// or postgresql:// URL")


def _configured() -> tuple[dict[str, Any], bool]:
    """``settings.JOBTABLE`` as jobtable setting names, with the database filled in; and
    whether the database is Django's own (so scheduling can join its transaction)."""
    from django.conf import settings

    given = getattr(settings, "JOBTABLE", None) or {}
    if not isinstance(given, Mapping):
        raise ConfigError(f"settings.JOBTABLE must be a dict, got {type(given).__name__}")
    values = {str(k).lower().replace("-", "_"): v for k, v in given.items()}
    alias = str(values.pop("database_alias", "default"))
    own = values.get("database") is None
    if own:
        if alias not in settings.DATABASES:
            raise ConfigError(f"JOBTABLE['DATABASE_ALIAS'] {alias!r} is not in DATABASES "
                              f"({', '.join(settings.DATABASES)})")
        values["database"] = database_url(settings.DATABASES[alias])
    values = {k: str(v) if isinstance(v, Path) else v for k, v in values.items()}
    Settings().with_overrides(**values)  # unknown keys and bad values fail here, named
    return values, own


def jobtable_settings() -> Settings:
    """jobtable's settings in this Django project: ``settings.JOBTABLE`` first, then
    ``JOBTABLE_*`` variables and ``[tool.jobtable]``."""
    return load_settings(**_configured()[0])


def export_settings() -> None:
    """Put ``settings.JOBTABLE`` (and the database) into ``JOBTABLE_*`` variables, where
    the commands and their child processes read them; the Django set-up middleware goes
    first in the hooks."""
    values, _ = _configured()
    hooks = load_settings(**values).hooks  # settings.JOBTABLE, JOBTABLE_HOOKS, pyproject
    values["hooks"] = [SETUP_HOOK, *(h for h in hooks if h != SETUP_HOOK)]
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            text = ",".join(str(v) for v in value)
        elif isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, timedelta):
            text = f"{value.total_seconds():g}"
        else:
            text = str(value)
        os.environ[_ENV[name][0]] = text


def get_jobtable() -> JobTable:
    """The project's ``JobTable`` (one per process, made on first use)."""
    global _table
    with _lock:
        if _table is None:
            _table = JobTable(settings=jobtable_settings())
        return _table


def schedule_job(config: WorkerJobConfig, *, using: str | None = None) -> WorkerJob | None:
    """Schedule ``config`` as part of the current Django transaction of database ``using``
    (default: ``JOBTABLE['DATABASE_ALIAS']``, else ``default``): a transaction that rolls
    back writes no job, and workers see the job only once it commits.

    Outside ``transaction.atomic()`` the job is scheduled at once. Inside one, when the
    queue lives in that database (no ``JOBTABLE['DATABASE']`` of its own), the row is
    written on Django's connection, in its transaction (``JobTable.schedule_job(...,
    connection=)``: SQLite, or PostgreSQL through psycopg 3), and returned; when the
    queue is in another database, the job is scheduled when the transaction commits
    (``transaction.on_commit``) and None is returned.
    """
    from django.db import connections, transaction

    table = get_jobtable()
    own = _configured()[1]
    alias = using or _alias()
    connection = connections[alias]
    if not connection.in_atomic_block:
        return table.schedule_job(config)
    if own and alias == _alias():
        return table.schedule_job(config, connection=connection)
    transaction.on_commit(lambda: table.schedule_job(config), using=alias)
    return None


def _alias() -> str:
    """The Django database alias the queue is taken from."""
    from django.conf import settings

    given = getattr(settings, "JOBTABLE", None) or {}
    return str({str(k).lower(): v for k, v in given.items()}.get("database_alias", "default"))

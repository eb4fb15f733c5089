"""Settings: explicit arguments, then ``JOBTABLE_*`` environment variables, then
``[tool.jobtable]`` in the nearest pyproject.toml, then defaults.

Paths in pyproject.toml (``jobs``, a relative SQLite ``database``) and the default SQLite
file are relative to the folder of that pyproject.toml, wherever the command runs.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from jobtable.errors import ConfigError
from jobtable.logs import check_log_format
from jobtable.timeutil import parse_duration

DEFAULT_DATABASE = "sqlite:///jobtable.db"


@dataclass(frozen=True)
class Settings:
    """Every setting jobtable reads. Durations accept seconds or '30s', '5m', '1h', '7d'."""

    database: str = DEFAULT_DATABASE
    jobs: str = "jobs"
    app: str | None = None
    log_level: str = "INFO"
    log_format: str = "text"
    concurrency: int = 10
    processes: str = "1"
    stale_limit: timedelta = timedelta(hours=1)
    grace_period: timedelta = timedelta(seconds=30)
    poll_interval: timedelta = timedelta(seconds=1)
    rescue_after: timedelta = timedelta(seconds=30)
    max_attempts: int = 4
    cleanup_cron: str = "0 * * * * *"
    failed_retention: timedelta = timedelta(days=7)
    vacuum_interval: timedelta = timedelta(minutes=2)
    auto_migrate: bool = True
    isolate_suspects: bool = True
    bindings: str | None = None
    hooks: tuple[str, ...] = ()
    otel: bool = False
    queues: str | None = None
    max_retries: int | None = 25
    max_backoff: timedelta = timedelta(hours=1)

    def with_overrides(self, **values: Any) -> Settings:
        """A copy with the given non-None values applied (after conversion)."""
        clean = {k: _convert(k, v) for k, v in values.items() if v is not None}
        return replace(self, **clean)


_ENV = {
    "database": ("JOBTABLE_DATABASE_URL", "JOBTABLE_DATABASE"),
    "jobs": ("JOBTABLE_JOBS",),
    "app": ("JOBTABLE_APP",),
    "log_level": ("JOBTABLE_LOG_LEVEL", "WORKER_LOG_LEVEL"),
    "log_format": ("JOBTABLE_LOG_FORMAT",),
    "concurrency": ("JOBTABLE_CONCURRENCY",),
    "processes": ("JOBTABLE_WORKER_COUNT", "WORKER_COUNT"),
    "stale_limit": ("JOBTABLE_STALE_LIMIT",),
    "grace_period": ("JOBTABLE_GRACE_PERIOD",),
    "poll_interval": ("JOBTABLE_POLL_INTERVAL",),
    "rescue_after": ("JOBTABLE_RESCUE_AFTER",),
    "max_attempts": ("JOBTABLE_MAX_ATTEMPTS",),
    "cleanup_cron": ("JOBTABLE_CLEANUP_CRON",),
    "failed_retention": ("JOBTABLE_FAILED_RETENTION",),
    "vacuum_interval": ("JOBTABLE_VACUUM_INTERVAL",),
    "auto_migrate": ("JOBTABLE_AUTO_MIGRATE",),
    "isolate_suspects": ("JOBTABLE_ISOLATE_SUSPECTS",),
    "bindings": ("JOBTABLE_BINDINGS",),
    "hooks": ("JOBTABLE_HOOKS",),
    "otel": ("JOBTABLE_OTEL",),
    "queues": ("JOBTABLE_QUEUES",),
    "max_retries": ("JOBTABLE_MAX_RETRIES",),
    "max_backoff": ("JOBTABLE_MAX_BACKOFF",),
}

_FIELD_TYPES = {f.name: f.default for f in fields(Settings)}
_POSITIVE = ("stale_limit", "rescue_after", "poll_interval")


def _convert(name: str, value: Any) -> Any:
    if name not in _FIELD_TYPES:
        raise ConfigError(f"unknown setting {name!r}; known: {', '.join(sorted(_FIELD_TYPES))}")
    default = _FIELD_TYPES[name]
    if name == "queues":
        from jobtable.routing import format_queues, parse_queues

        return format_queues(parse_queues(value))
    try:
        if isinstance(default, tuple):
            return _names(value)
        if name == "max_retries":
            return _max_retries(value)
        if isinstance(default, timedelta):
            if isinstance(value, timedelta):
                delta = value
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                delta = timedelta(seconds=value)
            else:
                delta = parse_duration(str(value), name)
            # Zero would make every running job pending (or its worker dead) at once.
            if name in _POSITIVE and delta <= timedelta(0):
                raise ValueError(f"must be greater than 0, got {delta.total_seconds():g}s")
            if delta < timedelta(0):
                raise ValueError(f"must not be negative, got {delta.total_seconds():g}s")
            return delta
        if isinstance(default, bool):
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"expected true or false, got {value!r}")
        if isinstance(default, int):
            number = int(value)
            if number < 1:
                raise ValueError(f"must be at least 1, got {number}")
            return number
        if name == "log_format":
            return check_log_format(str(value))
        return str(value)
    except ConfigError as exc:
        raise ConfigError(f"setting {name}: {exc}") from None
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"setting {name}: {exc}") from None


def _names(value: Any) -> tuple[str, ...]:
    """A list of dotted module names: a list of strings, or one comma-separated string."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(i, str) for i in items):
        raise ValueError(f"expected a list of module names (or one comma-separated string), "
                         f"got {value!r}")
    names = tuple(i.strip() for i in items if i.strip())
    for item in names:
        if not all(part.isidentifier() for part in item.split(".")):
            raise ValueError(f"{item!r} is not a dotted module name such as 'myapp.jobhooks'")
    return names


def _max_retries(value: Any) -> int | None:
    # 0 is a value here (no retry); "unlimited" (or "none") lifts the bound.
    if isinstance(value, str) and value.strip().lower() in ("unlimited", "none"):
        return None
    if isinstance(value, (bool, float)):
        raise ValueError(f"expected a whole number of at least 0 or 'unlimited', got {value!r}")
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(
            f"expected a whole number of at least 0 or 'unlimited', got {value!r}") from None
    if number < 0:
        raise ValueError(f"must be at least 0 (or 'unlimited'), got {number}")
    return number


def find_pyproject(start: Path | None = None) -> Path | None:
    """The nearest pyproject.toml at or above ``start`` (default: the working directory)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        candidate = folder / "pyproject.toml"
        if candidate.is_file():
            return candidate
    return None


def project_database(url: str, root: Path) -> str:
    """``url`` with a relative SQLite path made absolute under ``root``; other URLs as given.

    ``sqlite:///jobtable.db`` under ``/srv/app`` becomes ``sqlite:////srv/app/jobtable.db``.
    """
    for prefix in ("sqlite:///", "sqlite://"):
        if url.startswith(prefix):
            path = url[len(prefix):] or "jobtable.db"
            break
    else:
        if not url.endswith((".db", ".sqlite", ".sqlite3")) or "://" in url:
            return url
        path = url
    if path == ":memory:" or path.startswith(("/", "file:")) or Path(path).is_absolute():
        return url
    return f"sqlite:///{(root / path).resolve()}"


def load_settings(**overrides: Any) -> Settings:
    """Resolve settings: ``overrides`` (None = unset) > environment > pyproject > defaults."""
    values: dict[str, Any] = {}
    pyproject = find_pyproject()
    if pyproject is not None:
        try:
            table = tomllib.loads(pyproject.read_text()).get("tool", {}).get("jobtable", {})
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{pyproject}: cannot read [tool.jobtable]: {exc}") from None
        for key, value in table.items():
            values[key.replace("-", "_")] = value
        if "jobs" in values and not Path(str(values["jobs"])).is_absolute():
            candidate = pyproject.parent / str(values["jobs"])
            if candidate.exists():
                values["jobs"] = str(candidate)
        # The SQLite file belongs to the project, like the jobs folder: the default and a
        # relative path in [tool.jobtable] are resolved next to pyproject.toml, so a
        # command run in a subfolder uses the project's database, not a new empty one.
        values["database"] = project_database(str(values.get("database", DEFAULT_DATABASE)),
                                              pyproject.parent)
    for name, names in _ENV.items():
        for env in names:
            if os.environ.get(env):
                values[name] = os.environ[env]
                break
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings().with_overrides(**values)

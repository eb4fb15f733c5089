"""Optional dependencies ("extras"): a command that needs one says which to install.

The core (library, worker, command line on SQLite and PostgreSQL) needs no extra;
``jobtable dashboard`` needs ``jobtable[dashboard]``, ``jobtable dev`` needs
``jobtable[dev]``. PostgreSQL needs libpq: the system's (the pure-Python psycopg uses
it) or the one bundled by ``jobtable[postgres-binary]``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from jobtable.errors import ConfigError

#: The import names each extra provides (top-level modules).
EXTRAS: dict[str, tuple[str, ...]] = {
    "dashboard": ("starlette", "jinja2", "uvicorn", "prometheus_client"),
    "dev": ("watchfiles",),
    "otel": ("opentelemetry",),
}


class MissingExtraError(ConfigError):
    """A feature needs an optional dependency group that is not installed."""

    def __init__(self, extra: str, feature: str, missing: Sequence[str]) -> None:
        self.extra = extra
        self.missing = tuple(missing)
        super().__init__(
            f"{feature} needs `pip install 'jobtable[{extra}]'` "
            f"(not installed: {', '.join(self.missing)})")


def missing_modules(modules: Sequence[str]) -> list[str]:
    """The names in ``modules`` that cannot be imported here."""
    return [name for name in modules if importlib.util.find_spec(name) is None]


def require_extra(extra: str, feature: str | None = None) -> None:
    """Raise ``MissingExtraError`` naming ``jobtable[extra]`` unless all its modules import.

    ``feature`` is what the user asked for (``"jobtable dashboard"``); it starts the message.
    """
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}; known: {', '.join(sorted(EXTRAS))}")
    missing = missing_modules(EXTRAS[extra])
    if missing:
        raise MissingExtraError(extra, feature or "this feature of jobtable", missing)


def require_postgres() -> None:
    """Make sure psycopg can load a libpq; otherwise say how to get one."""
    try:
        import psycopg  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "PostgreSQL needs libpq, which was not found: install "
            "`pip install 'jobtable[postgres-binary]'` (bundles it) or the system's libpq "
            f"(Debian/Ubuntu: apt install libpq5; macOS: brew install libpq) [{_first_line(exc)}]"
        ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


__all__ = ["EXTRAS", "MissingExtraError", "missing_modules", "require_extra",
           "require_postgres"]

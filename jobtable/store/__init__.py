"""Storage: one ``Store`` interface, one implementation per database."""

from __future__ import annotations

from datetime import timedelta

from jobtable.errors import ConfigError
from jobtable.store.base import DEFAULT_STALE_LIMIT, Store

__all__ = ["Store", "open_store"]


def open_store(url: str, *, stale_limit: timedelta = DEFAULT_STALE_LIMIT) -> Store:
    """Open the database named by ``url``: ``sqlite:///file.db`` or ``postgresql://...``."""
    if url.startswith("sqlite:") or url.endswith((".db", ".sqlite", ".sqlite3")):
        from jobtable.store.sqlite import SqliteStore

        return SqliteStore(url, stale_limit=stale_limit)
    if url.startswith(("postgresql://", "postgres://")):
        from jobtable._extras import require_postgres

        require_postgres()  # says how to get libpq when there is none
        from jobtable.store.postgres import PostgresStore

        return PostgresStore(url, stale_limit=stale_limit)
    raise ConfigError(
        f"unsupported database URL {url!r}; use sqlite:///path/to/file.db or "
        "postgresql://user@host:5432/dbname")

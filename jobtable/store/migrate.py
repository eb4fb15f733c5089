"""One migration runner for both dialects.

Migrations are numbered SQL files in ``migrations/<dialect>/``; each is applied in its
own write transaction together with its row in ``jobtable_migrations``, so a crash
leaves every migration either applied and recorded or not at all. Concurrent migrators
are serialised (SQLite: the single writer; PostgreSQL: an advisory lock), and a
database that has migrations this version does not know is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from typing import TYPE_CHECKING

from jobtable.errors import MigrationError

if TYPE_CHECKING:
    from jobtable.store.base import Store


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered migration file."""

    version: int
    name: str
    sql: str


def migration_files(dialect: str) -> list[Migration]:
    """The migrations of ``dialect``, in order."""
    folder = resources.files("jobtable.store").joinpath("migrations", dialect)
    out = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            out.append(Migration(version, entry.name.removesuffix(".sql"), entry.read_text()))
    return sorted(out, key=lambda m: m.version)


def applied(store: Store) -> list[tuple[int, str]]:
    """(version, name) of every applied migration (none before the first)."""
    if not store.read("migrations_table_exists")[0]["present"]:
        return []
    return [(int(r["version"]), str(r["name"])) for r in store.read("applied_migrations")]


def pending(store: Store) -> list[str]:
    """Names of the migrations not yet applied."""
    done = {v for v, _ in applied(store)}
    return [m.name for m in migration_files(store.dialect) if m.version not in done]


def migrate(store: Store, up_to: int | None = None) -> list[str]:
    """Apply pending migrations, each in its own transaction; return their names.

    ``up_to`` stops after that version (a database as an earlier release left it).
    """
    files = migration_files(store.dialect)
    known = {m.version for m in files}
    names = []
    for migration in files:
        if up_to is not None and migration.version > up_to:
            break
        with store.transaction() as tx:
            store._lock_migrations(tx)
            tx.q("create_migrations_table")
            done = {int(r["version"]) for r in tx.q("applied_migrations")}
            if done - known:
                raise MigrationError(
                    f"the database has migrations {sorted(done - known)} this jobtable does "
                    "not know; upgrade jobtable")
            if migration.version in done:
                continue
            store._run_script(tx, migration.sql)
            tx.q("record_migration", version=migration.version, migration=migration.name,
                 applied_at=store._t(datetime.now(UTC)))
        names.append(migration.name)
    return names

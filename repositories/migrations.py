"""Versioned SQL migrations from `sql/migrations`, applied in order under an advisory lock."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib.resources.abc import Traversable
from typing import Final

import psycopg
import structlog

from repositories.errors import MigrationError
from repositories.queries import SQL_DIR

log = structlog.get_logger(__name__)

MIGRATIONS_DIR: Final = SQL_DIR / "migrations"
# Any constant works; it only has to be the same for every instance of this service.
ADVISORY_LOCK_KEY: Final = 7_326_019_442
_FILE = re.compile(r"^(?P<version>\d{4})_(?P<name>[a-z0-9_]+)\.sql$")


@dataclass(frozen=True)
class Migration:
    """One file `NNNN_name.sql` of `sql/migrations`: its version (NNNN), name and SQL text."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        """SHA-256 of the SQL text (UTF-8), 64 hex digits: recorded when applied, compared
        whenever migrations run, so that an edited applied migration is refused
        (MigrationError)."""
        return hashlib.sha256(self.sql.encode("utf-8")).hexdigest()


def discover(directory: Traversable = MIGRATIONS_DIR) -> list[Migration]:
    """The migrations in `directory` (a Path or package data), ordered by version.

    Raises MigrationError for a `.sql` file whose name is not `NNNN_name.sql` and for two
    files with the same version.
    """
    found: list[Migration] = []
    files = [p for p in directory.iterdir() if p.name.endswith(".sql")]
    for path in sorted(files, key=lambda p: p.name):
        match = _FILE.match(path.name)
        if match is None:
            raise MigrationError(f"migration file name not understood: {path.name}")
        found.append(
            Migration(int(match["version"]), match["name"], path.read_text(encoding="utf-8"))
        )
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("two migrations share a version number")
    return found


def latest_version(directory: Traversable = MIGRATIONS_DIR) -> int:
    """The newest migration's version (0 when there is none): what `/ready` expects the
    database to have applied. Raises MigrationError as `discover` does."""
    migrations = discover(directory)
    return migrations[-1].version if migrations else 0


_BOOKKEEPING: Final = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    integer     PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


async def migrate(
    conninfo: str, *, directory: Traversable = MIGRATIONS_DIR, **kwargs: object
) -> list[int]:
    """Apply pending migrations; returns the versions applied (empty when up to date).

    Each migration runs in its own transaction, which first takes a transaction-level
    advisory lock and re-reads what is applied: concurrent instances serialise, and it stays
    correct through PgBouncer in transaction mode, where a session-level lock would not.
    Prepared statements are off for the same reason. `kwargs` go to psycopg's connect (e.g.
    `connect_timeout`, whole seconds).

    Raises MigrationError when an applied migration's file was edited since (its checksum),
    psycopg.Error when the database fails or a migration's SQL does (that migration is rolled
    back; the ones before it stay applied).
    """
    migrations = discover(directory)
    applied_now: list[int] = []
    async with await psycopg.AsyncConnection.connect(
        conninfo,
        autocommit=True,
        prepare_threshold=None,
        **kwargs,  # type: ignore[arg-type]
    ) as conn:
        while True:
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(%s)", (ADVISORY_LOCK_KEY,))
                await conn.execute(_BOOKKEEPING)
                cur = await conn.execute("SELECT version, checksum FROM schema_migrations")
                applied = {int(v): str(c) for v, c in await cur.fetchall()}
                _check_checksums(migrations, applied)
                pending = [m for m in migrations if m.version not in applied]
                if not pending:
                    return applied_now
                migration = pending[0]
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
            applied_now.append(migration.version)
            log.info("migration_applied", version=migration.version, name=migration.name)


def _check_checksums(migrations: list[Migration], applied: dict[int, str]) -> None:
    # An applied migration that changed means this database and a fresh one would differ;
    # only a new migration can change a schema that already exists somewhere.
    for migration in migrations:
        if migration.version in applied and applied[migration.version] != migration.checksum:
            raise MigrationError(
                f"migration {migration.version:04d}_{migration.name} was edited after it was "
                "applied; add a new migration instead"
            )

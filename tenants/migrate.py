"""Versioned migrations: the shared schema first, then every tenant schema.

One runner at a time (a PostgreSQL advisory lock), schemas migrated with bounded concurrency, each
migration of each schema applied in its own transaction together with its ledger row, so a schema is
always exactly at some version and an interrupted or failed run resumes where it stopped. The ledger
lives in the shared schema, so finding that nothing is to be done is one query, whatever the number of
tenants. Migrations are additive (expand/contract): see docs/architecture.md.
"""

import asyncio
import hashlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import asyncpg

from tenants.db import asyncpg_dsn
from tenants.schema_names import SHARED_SCHEMA, quote_schema, tenant_search_path, validate_schema_name

log = logging.getLogger(__name__)

# Held exclusively by a migration run, shared by each tenant provisioning.
MIGRATION_LOCK_KEY = 0x5969_7961_6E67  # "Yiyang"
_FILE_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")

LEDGER_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {SHARED_SCHEMA};
CREATE TABLE IF NOT EXISTS {SHARED_SCHEMA}.shared_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS {SHARED_SCHEMA}.tenant_migrations (
    schema_name text NOT NULL,
    version integer NOT NULL,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schema_name, version)
);
"""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class MigrationSet:
    migrations: tuple[Migration, ...]

    @classmethod
    def from_files(cls, files: Iterable[tuple[str, str]]) -> "MigrationSet":
        found: list[Migration] = []
        for file_name, sql in files:
            match = _FILE_NAME.match(file_name)
            if match:
                found.append(Migration(int(match.group(1)), match.group(2), sql))
        found.sort(key=lambda m: m.version)
        versions = [m.version for m in found]
        if len(set(versions)) != len(versions):
            raise ValueError(f"duplicate migration versions: {versions}")
        return cls(tuple(found))

    @classmethod
    def from_directory(cls, path: Path) -> "MigrationSet":
        return cls.from_files((p.name, p.read_text(encoding="utf-8")) for p in sorted(path.glob("*.sql")))

    @classmethod
    def from_package(cls, package: str) -> "MigrationSet":
        root = resources.files(package)
        return cls.from_files(
            (entry.name, entry.read_text(encoding="utf-8")) for entry in root.iterdir() if entry.is_file()
        )

    @property
    def latest(self) -> int:
        return self.migrations[-1].version if self.migrations else 0

    def after(self, version: int) -> list[Migration]:
        return [m for m in self.migrations if m.version > version]


def shared_migrations() -> MigrationSet:
    return MigrationSet.from_package("migrations.shared")


def tenant_migrations() -> MigrationSet:
    return MigrationSet.from_package("migrations.tenant")


@dataclass(frozen=True)
class SchemaFailure:
    schema_name: str
    version: int
    error: str


@dataclass
class MigrationReport:
    shared_applied: list[int] = field(default_factory=list)
    schemas_total: int = 0
    schemas_migrated: int = 0
    migrations_applied: int = 0
    failures: list[SchemaFailure] = field(default_factory=list)


class MigrationFailed(RuntimeError):
    def __init__(self, report: MigrationReport) -> None:
        self.report = report
        listed = ", ".join(f"{f.schema_name}@{f.version}: {f.error}" for f in report.failures[:5])
        super().__init__(f"{len(report.failures)} schema(s) failed to migrate: {listed}")


async def apply_tenant_migration(conn: asyncpg.Connection, schema_name: str, migration: Migration) -> None:
    """Apply one migration to one schema; the caller owns the transaction."""
    await conn.execute(f"SET LOCAL search_path TO {tenant_search_path(schema_name)}")
    await conn.execute("SET LOCAL lock_timeout = '15s'")
    await conn.execute(migration.sql)
    await conn.execute(
        f"INSERT INTO {SHARED_SCHEMA}.tenant_migrations (schema_name, version, name, checksum)"
        " VALUES ($1, $2, $3, $4)",
        schema_name,
        migration.version,
        migration.name,
        migration.checksum,
    )


async def create_tenant_schema(conn: asyncpg.Connection, schema_name: str, migrations: MigrationSet) -> None:
    """Create a tenant schema at the latest version; the caller owns the transaction."""
    await conn.execute("SELECT pg_advisory_xact_lock_shared($1)", MIGRATION_LOCK_KEY)
    await conn.execute(f"CREATE SCHEMA {quote_schema(schema_name)}")
    for migration in migrations.migrations:
        await apply_tenant_migration(conn, schema_name, migration)


async def _apply_shared(conn: asyncpg.Connection, migrations: MigrationSet, report: MigrationReport) -> None:
    applied = await conn.fetchval(f"SELECT coalesce(max(version), 0) FROM {SHARED_SCHEMA}.shared_migrations")
    for migration in migrations.after(applied):
        async with conn.transaction():
            await conn.execute(migration.sql)
            await conn.execute(
                f"INSERT INTO {SHARED_SCHEMA}.shared_migrations (version, name, checksum)"
                " VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
        report.shared_applied.append(migration.version)


async def _tenant_versions(conn: asyncpg.Connection) -> dict[str, int]:
    has_registry = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{SHARED_SCHEMA}.institution")
    if not has_registry:
        return {}
    rows = await conn.fetch(
        f"""SELECT i.schema_name, coalesce(max(m.version), 0) AS version
            FROM {SHARED_SCHEMA}.institution i
            LEFT JOIN {SHARED_SCHEMA}.tenant_migrations m ON m.schema_name = i.schema_name
            GROUP BY i.schema_name"""
    )
    return {row["schema_name"]: row["version"] for row in rows}


async def _migrate_schema(
    pool: asyncpg.Pool, schema_name: str, pending: list[Migration], report: MigrationReport
) -> None:
    async with pool.acquire() as conn:
        for migration in pending:
            try:
                async with conn.transaction():
                    await apply_tenant_migration(conn, schema_name, migration)
            except (asyncpg.PostgresError, OSError) as exc:
                log.error("migration %s failed in %s: %s", migration.version, schema_name, exc)
                report.failures.append(SchemaFailure(schema_name, migration.version, str(exc)))
                return
            report.migrations_applied += 1
    report.schemas_migrated += 1


async def migrate_all(
    database_url: str,
    *,
    concurrency: int = 8,
    shared: MigrationSet | None = None,
    tenant: MigrationSet | None = None,
) -> MigrationReport:
    """Bring the shared schema and every tenant schema to the latest version."""
    shared = shared or shared_migrations()
    tenant = tenant or tenant_migrations()
    report = MigrationReport()
    dsn = asyncpg_dsn(database_url)
    lock_conn = await asyncpg.connect(dsn, server_settings={"search_path": SHARED_SCHEMA})
    try:
        await lock_conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        await lock_conn.execute(LEDGER_DDL)
        await _apply_shared(lock_conn, shared, report)
        versions = await _tenant_versions(lock_conn)
        report.schemas_total = len(versions)
        work = {
            validate_schema_name(name): tenant.after(version)
            for name, version in versions.items()
            if version < tenant.latest
        }
        if work:
            pool = await asyncpg.create_pool(
                dsn, min_size=1, max_size=concurrency, server_settings={"search_path": SHARED_SCHEMA}
            )
            try:
                await asyncio.gather(*(_migrate_schema(pool, n, p, report) for n, p in work.items()))
            finally:
                await pool.close()
    finally:
        await lock_conn.close()  # closing the session releases the advisory lock
    if report.failures:
        raise MigrationFailed(report)
    return report

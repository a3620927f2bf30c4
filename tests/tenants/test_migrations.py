"""Migrations across hundreds of tenant schemas: applied everywhere, no-op when done, resumable after a
failure in one schema, and never interleaved between two runners."""

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from api.services import scratch_database
from tenants.migrate import (
    MigrationFailed,
    MigrationSet,
    create_tenant_schema,
    migrate_all,
    shared_migrations,
)
from tests.conftest import Endpoints

SCHEMAS = 210
V1 = ("0001_things.sql", "CREATE TABLE thing (id bigint PRIMARY KEY);")
V2 = ("0002_thing_note.sql", "ALTER TABLE thing ADD COLUMN note text;")
V3 = ("0003_two_tables.sql", "CREATE TABLE first_new (id int);\nCREATE TABLE clash (id int);")
V4 = ("0004_slow.sql", "SELECT pg_sleep(0.002);\nALTER TABLE thing ADD COLUMN c4 int;")


def tenant_set(*files: tuple[str, str]) -> MigrationSet:
    return MigrationSet.from_files(files)


@pytest.fixture(scope="module")
async def many_schemas(endpoints: Endpoints) -> AsyncIterator[tuple[str, list[str]]]:
    """A database of its own with SCHEMAS tenant schemas at version 1."""
    async with scratch_database(endpoints.database_url, "yiyang_migrations") as url:
        await migrate_all(url, tenant=tenant_set(V1))
        conn = await asyncpg.connect(url)
        names = [f"t_mig{n:04d}" for n in range(SCHEMAS)]
        try:
            region = await conn.fetchval(
                "INSERT INTO shared.region (code, name) VALUES ('m', 'm') RETURNING id"
            )
            for schema in names:
                async with conn.transaction():
                    await conn.execute(
                        "INSERT INTO shared.institution (name, region_id, schema_name) VALUES ($1, $2, $1)",
                        schema,
                        region,
                    )
                    await create_tenant_schema(conn, schema, tenant_set(V1))
        finally:
            await conn.close()
        yield url, names


async def versions(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(
            "SELECT schema_name, max(version) AS v FROM shared.tenant_migrations GROUP BY 1"
        )
        return {row["schema_name"]: row["v"] for row in rows}
    finally:
        await conn.close()


async def has_column(url: str, schema: str, table: str, column: str) -> bool:
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetchval(
            "SELECT count(*) = 1 FROM information_schema.columns"
            " WHERE table_schema = $1 AND table_name = $2 AND column_name = $3",
            schema,
            table,
            column,
        )
    finally:
        await conn.close()


async def test_a_new_migration_reaches_every_schema_once(many_schemas: tuple[str, list[str]]) -> None:
    url, names = many_schemas
    report = await migrate_all(url, tenant=tenant_set(V1, V2))
    assert report.schemas_total == SCHEMAS and report.migrations_applied == SCHEMAS
    assert set((await versions(url)).values()) == {2}
    assert all([await has_column(url, schema, "thing", "note") for schema in (names[0], names[-1])])

    again = await migrate_all(url, tenant=tenant_set(V1, V2))
    assert again.migrations_applied == 0 and again.schemas_migrated == 0
    assert again.shared_applied == []


async def test_a_failure_in_one_schema_leaves_all_consistent_and_a_rerun_completes(
    many_schemas: tuple[str, list[str]],
) -> None:
    url, names = many_schemas
    await migrate_all(url, tenant=tenant_set(V1, V2))
    victim = names[17]
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f'CREATE TABLE "{victim}".clash (id int)')
        with pytest.raises(MigrationFailed) as failed:
            await migrate_all(url, tenant=tenant_set(V1, V2, V3))
        assert [f.schema_name for f in failed.value.report.failures] == [victim]
        reached = await versions(url)
        assert reached[victim] == 2
        assert {v for s, v in reached.items() if s != victim} == {3}
        # The statement before the failing one in the same file did not persist in the victim.
        assert await conn.fetchval("SELECT to_regclass($1)", f"{victim}.first_new") is None
        assert await conn.fetchval("SELECT to_regclass($1)", f"{names[18]}.first_new") is not None

        await conn.execute(f'DROP TABLE "{victim}".clash')
        rerun = await migrate_all(url, tenant=tenant_set(V1, V2, V3))
        assert rerun.migrations_applied == 1 and rerun.schemas_migrated == 1
        assert set((await versions(url)).values()) == {3}
    finally:
        await conn.close()


async def test_two_runners_do_not_interleave(many_schemas: tuple[str, list[str]]) -> None:
    url, _ = many_schemas
    await migrate_all(url, tenant=tenant_set(V1, V2, V3))
    migrations = tenant_set(V1, V2, V3, V4)
    first, second = await asyncio.gather(
        migrate_all(url, tenant=migrations), migrate_all(url, tenant=migrations)
    )
    # The lock holder did all of it; the other found nothing left to do.
    assert sorted([first.migrations_applied, second.migrations_applied]) == [0, SCHEMAS]
    conn = await asyncpg.connect(url)
    try:
        assert (
            await conn.fetchval("SELECT count(*) FROM shared.tenant_migrations WHERE version = 4") == SCHEMAS
        )
    finally:
        await conn.close()


async def test_released_migration_files_are_well_formed() -> None:
    from tenants.migrate import tenant_migrations

    for migration_set in (shared_migrations(), tenant_migrations()):
        versions_found = [m.version for m in migration_set.migrations]
        assert versions_found == list(range(1, len(versions_found) + 1))

"""The tenant unit of work: the only way to reach tenant tables, and it leaves nothing behind."""

import asyncpg
import pytest
from tortoise.exceptions import OperationalError

from care.models import Resident
from care.residents import ResidentChanges, get_resident, update_resident
from tenants.context import OutsideTenantScope, TenantRef, current_tenant_or_none
from tenants.db import default_connection
from tenants.models import Institution
from tenants.registry import tenant_ref
from tenants.schema_names import InvalidSchemaName, validate_schema_name
from tenants.unit_of_work import run_in_tenant, tenant_transaction
from tests.conftest import World


async def tenants_of(world: World, *indexes: int) -> list[TenantRef]:
    return [tenant_ref(await Institution.get(id=world.institution_ids[i])) for i in indexes]


async def residents_in(tenant: TenantRef) -> int:
    """The tenant's residents counted by naming its schema (no search_path): what a unit of work for it
    must see. (Other tests admit residents too: the world's six are not all there may be.)"""
    _, rows = await default_connection().execute_query(
        f'SELECT count(*) FROM "{validate_schema_name(tenant.schema_name)}".resident'
    )
    return rows[0][0]


async def test_tenant_models_refuse_to_work_outside_a_unit_of_work(world: World) -> None:
    with pytest.raises(OutsideTenantScope):
        await Resident.all().count()
    with pytest.raises(OutsideTenantScope):
        await Resident(name="x").save()


async def test_pooled_connections_cannot_see_tenant_tables_by_default(world: World) -> None:
    with pytest.raises(OperationalError) as refused:
        await default_connection().execute_query("SELECT count(*) FROM resident")
    assert isinstance(refused.value.__cause__, asyncpg.exceptions.UndefinedTableError)


async def test_search_path_does_not_leak_to_the_next_borrower(world: World) -> None:
    (tenant,) = await tenants_of(world, 11)
    expected = await residents_in(tenant)

    async def count() -> int:
        return await Resident.all().count()

    for _ in range(30):
        assert await run_in_tenant(tenant, count) == expected
    client = default_connection()
    pool = client._pool
    held = [await pool.acquire() for _ in range(pool.get_size())]
    try:
        paths = {await conn.fetchval("SHOW search_path") for conn in held}
    finally:
        for conn in held:
            await pool.release(conn)
    assert paths == {"shared"}
    assert current_tenant_or_none() is None


async def test_a_unit_of_work_for_another_tenant_cannot_nest(world: World) -> None:
    mine, theirs = await tenants_of(world, 11, 12)
    expected = await residents_in(mine)
    async with tenant_transaction(mine):
        with pytest.raises(OutsideTenantScope):
            async with tenant_transaction(theirs):
                pass
        async with tenant_transaction(mine):  # the same tenant joins the open unit of work
            assert await Resident.all().count() == expected


async def test_a_failing_unit_of_work_keeps_none_of_its_writes(world: World) -> None:
    (tenant,) = await tenants_of(world, 12)

    async def rename_then_fail() -> None:
        await update_resident(1, ResidentChanges(name="改名后失败"))
        assert (await get_resident(1)).require_identity().name == "改名后失败"
        raise RuntimeError("fails after the write")

    with pytest.raises(RuntimeError):
        await run_in_tenant(tenant, rename_then_fail)

    async def name_of_first() -> str:
        return (await get_resident(1)).require_identity().name

    assert await run_in_tenant(tenant, name_of_first) == world.resident_names[tenant.institution_id][0]


async def test_a_stale_cached_statement_is_retried_once(world: World) -> None:
    (tenant,) = await tenants_of(world, 13)
    expected = await residents_in(tenant)
    attempts: list[int] = []

    async def stale_once() -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise asyncpg.exceptions.InvalidCachedStatementError("cached plan must not change result type")
        return await Resident.all().count()

    assert await run_in_tenant(tenant, stale_once) == expected
    assert len(attempts) == 2

    async def always_stale() -> int:
        raise asyncpg.exceptions.InvalidCachedStatementError("cached plan must not change result type")

    with pytest.raises(asyncpg.exceptions.InvalidCachedStatementError):
        await run_in_tenant(tenant, always_stale)


@pytest.mark.parametrize(
    "name", ['t_x"; DROP SCHEMA shared; --', "public", "shared", "T_ABC", "t_", "t_" + "a" * 41, "t_a-b", ""]
)
def test_schema_names_outside_the_pattern_are_refused(name: str) -> None:
    with pytest.raises(InvalidSchemaName):
        validate_schema_name(name)


async def test_a_released_connection_comes_back_clean_without_a_reset_query(app: object) -> None:
    """Pool connections skip asyncpg's reset round trip (tenants/db.py): what a borrower left behind in
    a transaction must still be gone for the next one."""
    from tenants.db import PooledConnection, default_connection

    client = default_connection()
    async with client.acquire_connection() as connection:
        assert isinstance(connection, PooledConnection) and connection.get_reset_query() == ""
        pid = await connection.fetchval("SELECT pg_backend_pid()")
        await connection.execute("BEGIN; SET LOCAL search_path TO pg_catalog")  # left open on purpose
    for _ in range(client._pool.get_max_size()):  # type: ignore[attr-defined]
        async with client.acquire_connection() as connection:
            if await connection.fetchval("SELECT pg_backend_pid()") == pid:
                assert not connection.is_in_transaction()
                assert await connection.fetchval("SHOW search_path") == "shared"
                return
    pytest.fail("the released connection did not come back")

"""The application's database role (docs/security.md, "The application's database role"): the pool logs
in as `yiyang_app`, which appends to the audit log but cannot change it by any means, owns nothing, and
cannot become the owner; in schemas provisioned after the migrations, in schemas that existed before
them, and in tables of later migrations."""

from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from api.services import scratch_database
from api.settings import ConfigurationError, Settings
from compliance.audit import record_event
from tenants.context import TenantRef
from tenants.db import (
    APP_ROLE,
    app_database_url,
    asyncpg_dsn,
    connection_credentials,
    default_connection,
)
from tenants.migrate import Migration, MigrationSet, create_tenant_schema, migrate_all, tenant_migrations
from tests.compliance.audit_support import append, event, fresh_tenant, in_tenant, rows
from tests.conftest import Endpoints, World

ROLE_MIGRATION = 17  # migrations/tenant/0017_application_role.sql
INSUFFICIENT_PRIVILEGE = "42501"


def refusal(exc: BaseException) -> tuple[str | None, str]:
    """The SQLSTATE and message of the PostgreSQL error behind `exc` (the ORM wraps asyncpg's)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, asyncpg.PostgresError):
            return seen.sqlstate, str(seen)
        seen = seen.__cause__ or seen.__context__
    return None, str(exc)


async def refused(attempt: Callable[[], Awaitable[object]]) -> str:
    """The message of the privilege error `attempt` ends with; the append-only triggers raise the same
    SQLSTATE, so the message must show that the privilege, not a trigger, stopped it."""
    with pytest.raises(Exception) as caught:
        await attempt()
    sqlstate, message = refusal(caught.value)
    assert sqlstate == INSUFFICIENT_PRIVILEGE, message
    assert "append-only" not in message
    return message


def in_unit(tenant: TenantRef, sql: str) -> Callable[[], Awaitable[object]]:
    """`sql` through the pool in a unit of work of `tenant`, each in a transaction of its own."""

    async def work() -> object:
        return await default_connection().execute_query(sql)

    return lambda: in_tenant(tenant, work)


async def test_the_pool_logs_in_as_the_application_role_which_owns_nothing(
    world: World, settings: Settings
) -> None:
    tenant = await fresh_tenant("应用角色养老院")

    async def who() -> dict:
        (found,) = await default_connection().execute_query_dict(
            """SELECT current_user AS current, session_user AS session, r.rolsuper, r.rolbypassrls,
                      r.rolcreaterole, r.rolcreatedb,
                      (SELECT count(*) FROM pg_class WHERE relowner = r.oid) AS relations,
                      (SELECT count(*) FROM pg_namespace WHERE nspowner = r.oid) AS schemas,
                      (SELECT count(*) FROM pg_proc WHERE proowner = r.oid) AS functions,
                      (SELECT count(*) FROM pg_auth_members WHERE member = r.oid) AS memberships
               FROM pg_roles r WHERE r.rolname = current_user"""
        )
        return dict(found)

    found = await in_tenant(tenant, who)
    assert found == {
        "current": APP_ROLE,
        "session": APP_ROLE,
        "rolsuper": False,
        "rolbypassrls": False,
        "rolcreaterole": False,
        "rolcreatedb": False,
        "relations": 0,
        "schemas": 0,
        "functions": 0,
        "memberships": 0,
    }
    # The owner (DATABASE_URL's user) is another role.
    assert connection_credentials(settings.database_url)["user"] != APP_ROLE


async def test_the_application_role_appends_audit_rows_but_cannot_change_them(
    world: World, settings: Settings
) -> None:
    tenant = await fresh_tenant("应用角色审计养老院")  # provisioned after the migrations
    await append(tenant, 3)

    async def one_more() -> object:
        return await record_event(event(4))

    await in_tenant(tenant, one_more)
    assert [row["seq"] for row in await rows(tenant)] == [1, 2, 3, 4]

    owner = connection_credentials(settings.database_url)["user"]
    denied = {
        "UPDATE audit_event SET purpose = 'x' WHERE seq = 1": "permission denied for table audit_event",
        "DELETE FROM audit_event WHERE seq = 4": "permission denied for table audit_event",
        "TRUNCATE audit_event": "permission denied for table audit_event",
        "ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only": "must be owner",
        "ALTER TABLE audit_event DISABLE TRIGGER ALL": "must be owner",
        "DROP TABLE audit_event": "must be owner",
        "DROP TRIGGER audit_event_append_only ON audit_event": "must be owner",
        "CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger LANGUAGE plpgsql"
        " AS $$ BEGIN RETURN NULL; END $$": "permission denied for schema",
        "CREATE TABLE audit_event_copy (seq bigint)": "permission denied for schema",
        "SET session_replication_role = replica": "permission denied to set parameter",
        f'SET ROLE "{owner}"': "permission denied to set role",
        f'SET SESSION AUTHORIZATION "{owner}"': "permission denied to set session authorization",
    }
    for sql, message in denied.items():
        assert message in await refused(in_unit(tenant, sql)), sql
    assert [row["seq"] for row in await rows(tenant)] == [1, 2, 3, 4]
    # A grant without the grant option is no error, only a warning; nothing is granted (checked below).
    await in_unit(tenant, "GRANT UPDATE, DELETE, TRUNCATE ON audit_event TO PUBLIC")()

    async def privileges() -> dict:
        (found,) = await default_connection().execute_query_dict(
            """SELECT has_table_privilege('audit_event', 'SELECT') AS select,
                      has_table_privilege('audit_event', 'INSERT') AS insert,
                      has_table_privilege('audit_event', 'UPDATE') AS update,
                      has_table_privilege('audit_event', 'DELETE') AS delete,
                      has_table_privilege('audit_event', 'TRUNCATE') AS truncate,
                      has_table_privilege('audit_event', 'TRIGGER') AS trigger,
                      has_table_privilege('resident', 'SELECT, INSERT, UPDATE, DELETE') AS resident_dml"""
        )
        return dict(found)

    assert await in_tenant(tenant, privileges) == {
        "select": True,
        "insert": True,
        "update": False,
        "delete": False,
        "truncate": False,
        "trigger": False,
        "resident_dml": True,
    }


async def test_the_application_role_cannot_change_the_audit_checkpoints(world: World) -> None:
    from compliance.audit.checkpoints import checkpoint

    tenant = await fresh_tenant("应用角色签点养老院")
    await append(tenant, 2)
    assert await checkpoint(tenant) is not None  # INSERT of a checkpoint (and of the key, first time)
    mine = f"WHERE institution_id = {tenant.institution_id}"
    for sql, message in {
        f"UPDATE shared.audit_checkpoint SET seq = 1 {mine}": "permission denied",
        f"DELETE FROM shared.audit_checkpoint {mine}": "permission denied",
        "TRUNCATE shared.audit_checkpoint": "permission denied",
        "ALTER TABLE shared.audit_checkpoint DISABLE TRIGGER ALL": "must be owner",
        "DELETE FROM shared.audit_signing_key": "permission denied",
        "UPDATE shared.audit_signing_key SET public_key = sha256(public_key)": "permission denied",
        "UPDATE shared.auth_event SET reason = 'x'": "permission denied",
        "DELETE FROM shared.tenant_migrations": "permission denied",
    }.items():
        assert message in await refused(lambda sql=sql: default_connection().execute_query(sql)), sql
    # A root-key rotation re-seals the signing keys: that column alone may be updated.
    (allowed,) = await default_connection().execute_query_dict(
        "SELECT has_column_privilege('shared.audit_signing_key', 'private_key_sealed', 'UPDATE') AS reseal,"
        " has_column_privilege('shared.audit_signing_key', 'public_key', 'UPDATE') AS public_key"
    )
    assert dict(allowed) == {"reseal": True, "public_key": False}


@pytest.fixture(scope="module")
async def migrated_later(endpoints: Endpoints) -> AsyncIterator[tuple[str, str]]:
    """A database of its own whose tenant schema existed before migration 0017, then migrated (0017 and a
    later migration's new table): (owner URL, schema)."""
    before = MigrationSet(tuple(m for m in tenant_migrations().migrations if m.version < ROLE_MIGRATION))
    later = Migration(
        tenant_migrations().latest + 1, "later_table", "CREATE TABLE later_table (id bigint PRIMARY KEY);"
    )
    schema = "t_role_before"
    async with scratch_database(endpoints.database_url, "yiyang_app_role") as url:
        await migrate_all(url, tenant=before)
        conn = await asyncpg.connect(asyncpg_dsn(url))
        try:
            async with conn.transaction():
                region = await conn.fetchval(
                    "INSERT INTO shared.region (code, name) VALUES ('r', 'r') RETURNING id"
                )
                await conn.execute(
                    "INSERT INTO shared.institution (name, region_id, schema_name) VALUES ($1, $2, $1)",
                    schema,
                    region,
                )
                await create_tenant_schema(conn, schema, before)
        finally:
            await conn.close()
        await migrate_all(url, tenant=MigrationSet((*tenant_migrations().migrations, later)))
        yield url, schema


async def test_a_schema_migrated_to_0017_and_a_later_table_are_covered(
    migrated_later: tuple[str, str],
) -> None:
    url, schema = migrated_later
    app = await asyncpg.connect(asyncpg_dsn(app_database_url(url, environ={})))
    try:
        assert await app.fetchval("SELECT current_user") == APP_ROLE
        async with app.transaction():
            await app.execute(f'SET LOCAL search_path TO "{schema}", shared')
            await app.execute("INSERT INTO later_table VALUES (1)")  # default privileges of 0017
            await app.execute("UPDATE later_table SET id = 2")
            await app.execute("DELETE FROM later_table")
            assert await app.fetchval("SELECT count(*) FROM audit_event") == 0
        for sql in (
            "UPDATE audit_event SET purpose = 'x'",
            "DELETE FROM audit_event",
            "TRUNCATE audit_event",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="permission denied for table"):
                await app.execute(f'SET search_path TO "{schema}"; {sql}')
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="must be owner"):
            await app.execute(f'ALTER TABLE "{schema}".audit_event DISABLE TRIGGER ALL')
    finally:
        await app.close()


def test_the_pool_url_is_derived_or_given() -> None:
    owner = "postgres://owner:secret@db.internal:5433/yiyang?sslmode=require"
    assert (
        app_database_url(owner, environ={}) == "postgres://yiyang_app@db.internal:5433/yiyang?sslmode=require"
    )
    given = "postgres://yiyang_app:app-secret@pooler.internal:6432/yiyang"
    environ = {"DATABASE_URL": owner, "YIYANG_APP_DATABASE_URL": given}
    assert app_database_url(owner, environ=environ) == given
    # Another database of the server (a scratch database): the role's own URL names the deployment's.
    scratch = "postgres://owner:secret@db.internal:5433/yiyang_test_1"
    assert (
        app_database_url(scratch, environ=environ) == "postgres://yiyang_app@db.internal:5433/yiyang_test_1"
    )

    base = {"DATABASE_URL": owner, "REDIS_URL": "redis://x"}
    Settings.from_environ(base | {"YIYANG_APP_DATABASE_URL": given})
    with pytest.raises(ConfigurationError, match="YIYANG_APP_DATABASE_URL must be a postgres"):
        Settings.from_environ(base | {"YIYANG_APP_DATABASE_URL": "mysql://yiyang_app@db/yiyang"})
    with pytest.raises(ConfigurationError, match="not as DATABASE_URL's owner"):
        Settings.from_environ(base | {"YIYANG_APP_DATABASE_URL": owner})

"""SQL of the key tables. Tenant-schema tables are named unqualified: these run inside a tenant unit of
work, whose search_path is the tenant schema, then `shared`."""

from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient

from compliance.encryption.format import Algorithm
from compliance.encryption.keys import (
    RootKeyring,
    TenantKey,
    new_tenant_key,
    unwrap_tenant_key,
    wrap_tenant_key,
)
from tenants.schema_names import SHARED_SCHEMA

TENANT_KEY = f"{SHARED_SCHEMA}.tenant_key"


def db() -> BaseDBAsyncClient:
    """The connection of the open transaction (the unit of work's), else the pool."""
    return connections.get("default")


async def current_tenant_key(
    client: BaseDBAsyncClient,
    keyring: RootKeyring,
    institution_id: int,
    *,
    for_share: bool,
    create_with: Algorithm | None = None,
) -> TenantKey | None:
    """The highest tenant-key version not retired (created as version 1 with `create_with` if there is
    none). `for_share` locks its row until the transaction ends: a rotation retires a version only after
    every transaction that may wrap a data key under it has ended."""
    lock = " FOR SHARE" if for_share else ""
    sql = (
        f"SELECT version, algorithm, wrapped_key, root_key_id FROM {TENANT_KEY}"
        f" WHERE institution_id = $1 AND retired_at IS NULL ORDER BY version DESC LIMIT 1{lock}"
    )
    for _ in range(2):
        rows = await client.execute_query_dict(sql, [institution_id])
        if rows:
            row = rows[0]
            return unwrap_tenant_key(
                keyring,
                institution_id,
                row["version"],
                row["algorithm"],
                row["wrapped_key"],
                row["root_key_id"],
            )
        if create_with is None:
            return None
        # Two first uses at once: the second INSERT waits for the first and then does nothing.
        await insert_tenant_key(
            client, keyring, new_tenant_key(institution_id, 1, create_with), if_absent=True
        )
    raise RuntimeError(f"no tenant key for institution {institution_id} after creating one")


async def insert_tenant_key(
    client: BaseDBAsyncClient, keyring: RootKeyring, tenant_key: TenantKey, *, if_absent: bool = False
) -> bool:
    conflict = " ON CONFLICT (institution_id, version) DO NOTHING" if if_absent else ""
    rows = await client.execute_query_dict(
        f"INSERT INTO {TENANT_KEY} (institution_id, version, algorithm, wrapped_key, root_key_id)"
        f" VALUES ($1, $2, $3, $4, $5){conflict} RETURNING version",
        [
            tenant_key.institution_id,
            tenant_key.version,
            tenant_key.algorithm.label,
            wrap_tenant_key(keyring.primary, tenant_key),
            keyring.primary_id,
        ],
    )
    return bool(rows)

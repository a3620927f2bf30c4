"""Key rotation, online: readers and writers keep working while it runs.

Tenant key (`rotate_tenant_key`, `yiyang keys rotate --institution ID`):
1. A new tenant-key version is inserted and committed. From then on every new data key is wrapped by it
   (writers lock the highest version not retired, FOR SHARE, for the rest of their unit of work).
2. The tenant's data keys still wrapped by an older version are re-wrapped by the new one in batches, one
   short transaction each. Readers are not blocked: each data-key row names its tenant-key version and
   every version stays usable meanwhile. Field ciphertexts are untouched (they are sealed by data keys,
   which do not change).
3. One last transaction locks the older versions FOR UPDATE, which waits for every unit of work that
   locked one before step 1 committed (and may have wrapped a data key with it), re-wraps what they left,
   then retires the older versions and erases their wrapped key.

Root key (`rotate_root_key`, `yiyang keys rotate --root`): every tenant key not yet wrapped by the
keyring's primary root key is re-wrapped by it, in batches; then what the root key seals directly (the
access-token signing keys, the TOTP secrets, the audit log's checkpoint signing keys) is sealed again
under it. See docs/security.md for the procedure (YIYANG_ROOT_KEY_NEW alongside YIYANG_ROOT_KEY during
the switch).
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
from tortoise.exceptions import OperationalError
from tortoise.transactions import in_transaction

from compliance.audit.checkpoints import reseal_audit_keys
from compliance.encryption.format import Algorithm, KeyUnavailable
from compliance.encryption.keys import (
    RootKeyring,
    TenantKey,
    new_tenant_key,
    process_root_keyring,
    unwrap_data_key,
    unwrap_tenant_key,
    wrap_data_key,
    wrap_tenant_key,
)
from compliance.encryption.store import TENANT_KEY, current_tenant_key, db, insert_tenant_key
from compliance.identity.keys import reseal_signing_keys
from compliance.identity.totp import reseal_secrets
from tenants.context import TenantRef
from tenants.errors import NotFound
from tenants.models import Institution
from tenants.registry import tenant_ref
from tenants.unit_of_work import run_in_tenant

DEFAULT_BATCH = 500


@dataclass
class TenantRotation:
    institution_id: int
    new_version: int
    algorithm: Algorithm
    data_keys_rewrapped: int = 0
    versions_retired: list[int] = field(default_factory=list)
    superseded: bool = False  # a later rotation of the same institution took over


@dataclass
class RootRotation:
    root_key_id: str
    tenant_keys_rewrapped: int = 0
    signing_keys_resealed: int = 0
    totp_secrets_resealed: int = 0
    audit_keys_resealed: int = 0


def _is_deadlock(problem: BaseException) -> bool:
    seen: BaseException | None = problem
    while seen is not None:
        if isinstance(seen, asyncpg.exceptions.DeadlockDetectedError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _retrying(work: Callable[[], Awaitable[int]], attempts: int = 3) -> int:
    """A batch that PostgreSQL chose as a deadlock victim (against a writer touching the same rows)
    is simply run again."""
    for attempt in range(attempts):
        try:
            return await work()
        except (OperationalError, asyncpg.exceptions.PostgresError) as problem:
            if attempt + 1 == attempts or not _is_deadlock(problem):
                raise
    raise AssertionError("unreachable")


async def _tenant(institution_id: int) -> TenantRef:
    institution = await Institution.get_or_none(id=institution_id)
    if institution is None:
        raise NotFound("Institution not found or not active.")
    return tenant_ref(institution)


async def rotate_tenant_key(
    institution_id: int,
    *,
    algorithm: Algorithm | None = None,
    keyring: RootKeyring | None = None,
    batch_size: int = DEFAULT_BATCH,
    after_batch: Callable[[int], Awaitable[None]] | None = None,
) -> TenantRotation:
    """A new tenant-key version for the institution (of `algorithm`, by default the current one's), its
    data keys re-wrapped in batches of `batch_size`, the older versions retired. `after_batch` (tests,
    progress) is awaited after each committed batch with the number it re-wrapped."""
    keyring = keyring or process_root_keyring()
    tenant = await _tenant(institution_id)

    # 1. The new version, committed on its own.
    async with in_transaction("default") as connection:
        await connection.execute_query(
            "SELECT pg_advisory_xact_lock(hashtextextended('yiyang/tenant-key-rotation/' || $1::bigint::text,"
            " 0))",
            [institution_id],
        )
        current = await current_tenant_key(connection, keyring, institution_id, for_share=False)
        chosen = algorithm or (current.algorithm if current else Algorithm.AES_256_GCM)
        index_secret = current.index_secret if current else None
        top = await connection.execute_query_dict(
            f"SELECT coalesce(max(version), 0) AS v FROM {TENANT_KEY} WHERE institution_id = $1",
            [institution_id],
        )
        new = new_tenant_key(institution_id, top[0]["v"] + 1, chosen, index_secret=index_secret)
        await insert_tenant_key(connection, keyring, new)
    rotation = TenantRotation(institution_id, new.version, chosen)

    # 2. Re-wrap in batches, each a short unit of work of its own.
    while True:
        count = await _retrying(
            lambda: run_in_tenant(tenant, lambda: _rewrap_batch(keyring, new, batch_size))
        )
        if count < 0:
            rotation.superseded = True
            return rotation
        rotation.data_keys_rewrapped += count
        if after_batch is not None:
            await after_batch(count)
        if count < batch_size:
            break

    # 3. Wait out the writers that locked an older version, re-wrap what they left, retire.
    async def finish() -> int:
        connection = db()
        old = await connection.execute_query_dict(
            f"""SELECT version FROM {TENANT_KEY} WHERE institution_id = $1 AND version < $2
                AND retired_at IS NULL ORDER BY version FOR UPDATE""",
            [institution_id, new.version],
        )
        left = 0
        while (count := await _rewrap_batch(keyring, new, batch_size)) > 0:
            left += count
        if count < 0:
            rotation.superseded = True
            return left
        await connection.execute_query(
            f"""UPDATE {TENANT_KEY} SET retired_at = now(), wrapped_key = NULL, root_key_id = NULL
                WHERE institution_id = $1 AND version = ANY($2::int[])""",
            [institution_id, [row["version"] for row in old]],
        )
        rotation.versions_retired = [row["version"] for row in old]
        return left

    rotation.data_keys_rewrapped += await _retrying(lambda: run_in_tenant(tenant, finish))
    return rotation


async def _rewrap_batch(keyring: RootKeyring, new: TenantKey, batch_size: int) -> int:
    """Re-wrap up to `batch_size` data keys wrapped by versions older than `new`; -1 if `new` itself
    was retired meanwhile (a later rotation took over, and re-wraps these keys itself)."""
    connection = db()
    live = await connection.execute_query_dict(
        f"""SELECT 1 FROM {TENANT_KEY} WHERE institution_id = $1 AND version = $2 AND retired_at IS NULL
            FOR SHARE""",
        [new.institution_id, new.version],
    )
    if not live:
        return -1
    rows = await connection.execute_query_dict(
        f"""SELECT d.subject_id, d.version, d.algorithm, d.tenant_key_version, d.wrapped_key,
                   t.algorithm AS tenant_algorithm, t.wrapped_key AS tenant_wrapped_key, t.root_key_id
            FROM data_key d
            LEFT JOIN {TENANT_KEY} t ON t.institution_id = $1 AND t.version = d.tenant_key_version
            WHERE d.tenant_key_version < $2 AND d.wrapped_key IS NOT NULL
            ORDER BY d.subject_id, d.version LIMIT $3 FOR UPDATE OF d""",
        [new.institution_id, new.version, batch_size],
    )
    opened: dict[int, TenantKey] = {}
    updates = []
    for row in rows:
        old = opened.get(row["tenant_key_version"])
        if old is None:
            old = opened[row["tenant_key_version"]] = unwrap_tenant_key(
                keyring,
                new.institution_id,
                row["tenant_key_version"],
                row["tenant_algorithm"] or "",
                row["tenant_wrapped_key"],
                row["root_key_id"],
            )
        data_key = unwrap_data_key(
            old, row["subject_id"], row["version"], row["algorithm"], row["wrapped_key"]
        )
        updates.append(
            [
                row["subject_id"],
                row["version"],
                new.version,
                wrap_data_key(new, row["subject_id"], row["version"], data_key),
            ]
        )
    if updates:
        await connection.execute_many(
            """UPDATE data_key SET tenant_key_version = $3, wrapped_key = $4, rewrapped_at = now()
               WHERE subject_id = $1 AND version = $2""",
            updates,
        )
    return len(updates)


async def rotate_root_key(
    keyring: RootKeyring | None = None,
    *,
    batch_size: int = DEFAULT_BATCH,
    after_batch: Callable[[int], Awaitable[None]] | None = None,
) -> RootRotation:
    """Re-wrap every tenant key (every institution, every live version) by `keyring.primary`, in batches,
    then re-seal what the root key seals directly: the access-token signing keys and the TOTP secrets.
    Each row is opened by a root key of the keyring (KeyUnavailable / RootKeyError if none opens it).
    Afterwards the primary alone opens everything: the previous key can leave the environment."""
    keyring = keyring or process_root_keyring()
    rotation = RootRotation(keyring.primary_id)

    async def batch() -> int:
        async with in_transaction("default") as connection:
            rows = await connection.execute_query_dict(
                f"""SELECT institution_id, version, algorithm, wrapped_key, root_key_id FROM {TENANT_KEY}
                    WHERE wrapped_key IS NOT NULL AND root_key_id <> $1
                    ORDER BY institution_id, version LIMIT $2 FOR UPDATE""",
                [keyring.primary_id, batch_size],
            )
            updates = []
            for row in rows:
                tenant_key = unwrap_tenant_key(
                    keyring,
                    row["institution_id"],
                    row["version"],
                    row["algorithm"],
                    row["wrapped_key"],
                    row["root_key_id"],
                )
                updates.append(
                    [
                        row["institution_id"],
                        row["version"],
                        wrap_tenant_key(keyring.primary, tenant_key),
                        keyring.primary_id,
                    ]
                )
            if updates:
                await connection.execute_many(
                    f"""UPDATE {TENANT_KEY} SET wrapped_key = $3, root_key_id = $4, rewrapped_at = now()
                        WHERE institution_id = $1 AND version = $2""",
                    updates,
                )
            return len(updates)

    while True:
        count = await _retrying(batch)
        rotation.tenant_keys_rewrapped += count
        if after_batch is not None:
            await after_batch(count)
        if count < batch_size:
            break
    rotation.signing_keys_resealed = await reseal_signing_keys(keyring.keys)
    rotation.totp_secrets_resealed = await reseal_secrets(keyring.keys, batch_size=batch_size)
    rotation.audit_keys_resealed = await reseal_audit_keys(keyring.keys)
    return rotation


async def tenant_keys_not_under(root_key_id: str) -> int:
    """How many live tenant keys another root key wraps (0 once a root rotation is complete)."""
    rows = await db().execute_query_dict(
        f"SELECT count(*) AS n FROM {TENANT_KEY} WHERE wrapped_key IS NOT NULL AND root_key_id <> $1",
        [root_key_id],
    )
    return rows[0]["n"]


__all__ = ["KeyUnavailable", "RootRotation", "TenantRotation", "rotate_root_key", "rotate_tenant_key"]

"""Signed checkpoints of a tenant's audit chain, kept outside the tenant schema (shared.audit_checkpoint).

`checkpoint(tenant)` signs the tenant's latest (seq, hash) with the audit signing key (Ed25519) and stores
it; a worker or `yiyang audit checkpoint` calls it (every N events or on demand). Whoever rewrites a
tenant's audit_event and recomputes the whole chain cannot make it match a checkpoint without the private
key, which is sealed under the root key of the environment (compliance/identity/keys.py `seal`), its key
id bound in as associated data, and created on first use.

Signed message (fixed widths, so unambiguous): the tag, then institution id and seq as 8-byte big-endian
integers, the 32-byte hash, the signing time in µs since the epoch (8 bytes), then the key id (ASCII).
"""

import hashlib
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from tortoise.transactions import in_transaction

from compliance.audit.chain import microseconds
from compliance.identity.keys import RootKeyError, resealed, root_keys_from_environ, seal, unseal
from tenants.context import TenantRef
from tenants.db import default_connection
from tenants.schema_names import quote_schema

MESSAGE_TAG = b"yiyang-audit-checkpoint-v1\x00"
# Serialises the creation of the audit signing key among processes ("YYAK").
_KEY_CREATION_LOCK = 0x5959_414B


@dataclass(frozen=True, slots=True)
class Checkpoint:
    institution_id: int
    seq: int
    hash: bytes
    signature: bytes
    key_id: str
    signed_at: datetime


@dataclass(frozen=True, slots=True)
class AuditSigningKey:
    key_id: str
    private_key: Ed25519PrivateKey


def checkpoint_message(
    institution_id: int, seq: int, digest: bytes, signed_at: datetime, key_id: str
) -> bytes:
    return (
        MESSAGE_TAG
        + struct.pack(">qq", institution_id, seq)
        + digest
        + struct.pack(">q", microseconds(signed_at))
        + key_id.encode("ascii")
    )


def key_id_of(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:32]


def _public_raw(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


async def _rows(sql: str, parameters: Sequence[object] = ()) -> list[dict[str, object]]:
    return await default_connection().execute_query_dict(sql, list(parameters))


class AuditKeys:
    """The audit signing key of a process: read (or created) once, opened once."""

    def __init__(self, root_keys: Sequence[bytes]) -> None:
        self._root_keys = tuple(root_keys)
        self._signing: AuditSigningKey | None = None

    async def signing_key(self) -> AuditSigningKey:
        if self._signing is None:
            self._signing = await self._read_or_create()
        return self._signing

    async def _read_or_create(self) -> AuditSigningKey:
        async with in_transaction("default") as connection:
            await connection.execute_query("SELECT pg_advisory_xact_lock($1)", [_KEY_CREATION_LOCK])
            rows = await connection.execute_query_dict(
                "SELECT key_id, public_key, private_key_sealed FROM shared.audit_signing_key"
                " ORDER BY created_at DESC"
            )
            for row in rows:  # the newest key that is ours (a row someone slipped in does not open)
                opened = _opened(self._root_keys, row)
                if opened is not None:
                    return opened
            key = Ed25519PrivateKey.generate()
            public_raw = _public_raw(key)
            key_id = key_id_of(public_raw)
            private_raw = key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
            await connection.execute_query(
                "INSERT INTO shared.audit_signing_key (key_id, public_key, private_key_sealed)"
                " VALUES ($1, $2, $3)",
                [key_id, public_raw, seal(self._root_keys[0], private_raw, key_id.encode())],
            )
            return AuditSigningKey(key_id, key)


def _opened(root_keys: Sequence[bytes], row: Mapping[str, object]) -> AuditSigningKey | None:
    """The key of a shared.audit_signing_key row if it is ours: its sealed private key opens with the root
    key and yields the row's public key and key id; None otherwise."""
    key_id = str(row["key_id"])
    try:
        raw = unseal(root_keys, bytes(row["private_key_sealed"]), key_id.encode(), what=f"audit key {key_id}")  # type: ignore[call-overload]
        private = Ed25519PrivateKey.from_private_bytes(raw)
    except (RootKeyError, ValueError):
        return None
    public_raw = _public_raw(private)
    if public_raw != bytes(row["public_key"]) or key_id_of(public_raw) != key_id:  # type: ignore[call-overload]
        return None
    return AuditSigningKey(key_id, private)


async def reseal_audit_keys(root_keys: Sequence[bytes]) -> int:
    """Seal every audit signing key under `root_keys[0]` (a root-key rotation; opened with any of
    `root_keys`). Returns how many were re-sealed. Called by `rotate_root_key`."""
    count = 0
    async with in_transaction("default") as connection:
        rows = await connection.execute_query_dict(
            "SELECT key_id, private_key_sealed FROM shared.audit_signing_key FOR UPDATE"
        )
        for row in rows:
            key_id = str(row["key_id"])
            try:
                again = resealed(
                    root_keys, bytes(row["private_key_sealed"]), key_id.encode(), what=f"audit key {key_id}"
                )
            except RootKeyError:  # not ours (verify refuses it too): left as it is
                continue
            if again is not None:
                await connection.execute_query(
                    "UPDATE shared.audit_signing_key SET private_key_sealed = $1 WHERE key_id = $2",
                    [again, key_id],
                )
                count += 1
    return count


_process_keys: AuditKeys | None = None


def process_audit_keys() -> AuditKeys:
    global _process_keys
    if _process_keys is None:
        _process_keys = AuditKeys(root_keys_from_environ())
    return _process_keys


async def checkpoint(tenant: TenantRef, keys: AuditKeys | None = None) -> Checkpoint | None:
    """Sign and store the latest (seq, hash) of `tenant`'s audit chain; None if it has no event yet. A
    checkpoint of the same seq already stored is kept (and returned)."""
    key = await (keys or process_audit_keys()).signing_key()
    last = await _rows(
        f"SELECT seq, hash FROM {quote_schema(tenant.schema_name)}.audit_event ORDER BY seq DESC LIMIT 1"
    )
    if not last:
        return None
    seq, digest = int(last[0]["seq"]), bytes(last[0]["hash"])  # type: ignore[call-overload,arg-type]
    signed_at = datetime.now(UTC)
    signature = key.private_key.sign(
        checkpoint_message(tenant.institution_id, seq, digest, signed_at, key.key_id)
    )
    await _rows(
        "INSERT INTO shared.audit_checkpoint (institution_id, seq, hash, signature, key_id, signed_at)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (institution_id, seq) DO NOTHING",
        [tenant.institution_id, seq, digest, signature, key.key_id, signed_at],
    )
    stored = await checkpoints_of(tenant.institution_id, seq=seq)
    return stored[0]


async def checkpoints_of(institution_id: int, *, seq: int | None = None) -> list[Checkpoint]:
    """The checkpoints of an institution in seq order (the one of `seq` only, if given)."""
    clause = " AND seq = $2" if seq is not None else ""
    rows = await _rows(
        "SELECT institution_id, seq, hash, signature, key_id, signed_at FROM shared.audit_checkpoint"
        f" WHERE institution_id = $1{clause} ORDER BY seq",
        [institution_id] if seq is None else [institution_id, seq],
    )
    return [
        Checkpoint(
            institution_id=int(row["institution_id"]),  # type: ignore[call-overload]
            seq=int(row["seq"]),  # type: ignore[call-overload]
            hash=bytes(row["hash"]),  # type: ignore[call-overload]
            signature=bytes(row["signature"]),  # type: ignore[call-overload]
            key_id=str(row["key_id"]),
            signed_at=row["signed_at"],  # type: ignore[arg-type]
        )
        for row in rows
    ]


async def public_keys(
    root_keys: Sequence[bytes] | None = None,
) -> tuple[dict[str, Ed25519PublicKey], list[str]]:
    """The audit public keys that verify checkpoints, and the key ids refused. A key is trusted only if
    its sealed private key opens with the root key and yields its public key and id: a key row inserted
    by someone with database access but not the root key signs nothing that verifies."""
    keys = tuple(root_keys) if root_keys is not None else root_keys_from_environ()
    trusted: dict[str, Ed25519PublicKey] = {}
    refused: list[str] = []
    for row in await _rows("SELECT key_id, public_key, private_key_sealed FROM shared.audit_signing_key"):
        opened = _opened(keys, row)
        if opened is None:
            refused.append(str(row["key_id"]))
        else:
            trusted[opened.key_id] = opened.private_key.public_key()
    return trusted, refused


def signature_valid(point: Checkpoint, keys: Mapping[str, Ed25519PublicKey]) -> bool:
    public = keys.get(point.key_id)
    if public is None:
        return False
    message = checkpoint_message(point.institution_id, point.seq, point.hash, point.signed_at, point.key_id)
    try:
        public.verify(point.signature, message)
    except InvalidSignature:
        return False
    return True

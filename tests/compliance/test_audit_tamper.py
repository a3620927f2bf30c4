"""Tampering with the audit log directly in SQL (as the database superuser, the append-only trigger
bypassed) is found by `audit verify`, which says where; the application's connection cannot UPDATE,
DELETE or TRUNCATE it (its role lacks the privilege, and the append-only trigger refuses the owner too); a
forged checkpoint is reported."""

import os
import subprocess
import sys
from dataclasses import fields, replace
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from api.settings import REPO_ROOT, Settings
from compliance.audit.chain import ChainedRow, event_hash
from compliance.audit.checkpoints import checkpoint, checkpoint_message, key_id_of
from compliance.audit.verify import Problem, verify_tenant
from compliance.identity.keys import seal
from tenants.context import TenantRef
from tenants.db import default_connection
from tests.compliance.audit_support import append, event, fresh_tenant, in_tenant, rows, tamper
from tests.conftest import World

EVENTS = 10
# The application's role lacks the privilege (tests/compliance/test_application_role.py); the append-only
# triggers refuse the same to the owner.
REFUSED = "append-only|permission denied"


async def chained(name: str, *, checkpoint_at: tuple[int, ...] = (EVENTS,)) -> TenantRef:
    """A tenant with EVENTS events and checkpoints at the given seqs."""
    tenant = await fresh_tenant(name)
    written = 0
    for seq in (*checkpoint_at, EVENTS):
        if seq > written:
            await append(tenant, seq - written, first=written + 1)
            written = seq
            if seq in checkpoint_at:
                await checkpoint(tenant)
    return tenant


async def findings(tenant: TenantRef) -> list[tuple[Problem, int]]:
    report = await verify_tenant(tenant)
    return [(finding.problem, finding.seq) for finding in report.findings]


def as_row(stored: dict) -> ChainedRow:
    return ChainedRow(**{column.name: stored[column.name] for column in fields(ChainedRow)})


async def rehash_from(tenant: TenantRef, seq: int) -> None:
    """Recompute hash and prev_hash from `seq` on, as someone hiding a change would."""
    stored = await rows(tenant)
    previous = bytes(stored[seq - 2]["hash"]) if seq > 1 else bytes(32)
    for row in stored[seq - 1 :]:
        fixed = replace(as_row(row), prev_hash=previous)
        digest = event_hash(tenant.institution_id, fixed)
        await tamper(
            tenant,
            "UPDATE audit_event SET prev_hash = $1, hash = $2 WHERE seq = $3",
            parameters=[previous, digest, row["seq"]],
        )
        previous = digest


async def test_an_intact_chain_has_no_findings(world: World) -> None:
    tenant = await chained("审计完好养老院", checkpoint_at=(4, EVENTS))
    assert await findings(tenant) == []


async def test_a_changed_row_is_found(world: World) -> None:
    tenant = await chained("审计改动养老院")
    await tamper(tenant, "UPDATE audit_event SET principal_subject = 'account:1' WHERE seq = 4")
    assert await findings(tenant) == [(Problem.HASH_MISMATCH, 4)]


async def test_a_changed_row_with_its_hash_recomputed_breaks_the_next_link(world: World) -> None:
    tenant = await chained("审计重算养老院")
    await tamper(tenant, "UPDATE audit_event SET outcome = 'permitted', reason_code = NULL WHERE seq = 5")
    stored = {row["seq"]: row for row in await rows(tenant)}
    await tamper(
        tenant,
        "UPDATE audit_event SET hash = $1 WHERE seq = 5",
        parameters=[event_hash(tenant.institution_id, as_row(stored[5]))],
    )
    assert await findings(tenant) == [(Problem.BROKEN_LINK, 6)]


async def test_a_rewritten_chain_does_not_match_its_checkpoint(world: World) -> None:
    tenant = await chained("审计整链养老院", checkpoint_at=(3, 8))
    await tamper(tenant, "UPDATE audit_event SET resident_id = 99 WHERE seq = 5")
    await rehash_from(tenant, 5)
    # Every hash and link is consistent again; only the signed checkpoint at 8 tells.
    assert await findings(tenant) == [(Problem.CHECKPOINT_MISMATCH, 8)]


async def test_a_deleted_row_is_found(world: World) -> None:
    tenant = await chained("审计删除养老院")
    await tamper(tenant, "DELETE FROM audit_event WHERE seq IN (4, 5)")
    report = await verify_tenant(tenant)
    assert [(f.problem, f.seq) for f in report.findings] == [(Problem.GAP, 3)]
    assert "rows 4..5 are missing" in report.findings[0].detail


async def test_a_deleted_first_row_is_found(world: World) -> None:
    tenant = await chained("审计删首养老院")
    await tamper(tenant, "DELETE FROM audit_event WHERE seq = 1")
    assert await findings(tenant) == [(Problem.GAP, 0)]


async def test_a_truncated_tail_is_found(world: World) -> None:
    tenant = await chained("审计截尾养老院")
    await tamper(tenant, "DELETE FROM audit_event WHERE seq > 7")
    report = await verify_tenant(tenant)
    assert [(f.problem, f.seq) for f in report.findings] == [(Problem.TRUNCATED, EVENTS)]
    assert "beyond the last row (seq 7)" in report.findings[0].detail


async def test_a_deleted_checkpointed_row_is_found(world: World) -> None:
    tenant = await chained("审计删点养老院", checkpoint_at=(5, EVENTS))
    await tamper(tenant, "DELETE FROM audit_event WHERE seq = 5")
    assert await findings(tenant) == [(Problem.CHECKPOINT_MISSING_ROW, 5), (Problem.GAP, 4)]


async def test_an_inserted_row_is_found(world: World) -> None:
    tenant = await chained("审计插入养老院")
    stored = await rows(tenant)
    # Make room after seq 5 and slip a row in, with a hash computed as the application would.
    await tamper(
        tenant,
        "UPDATE audit_event SET seq = seq + 1000 WHERE seq > 5",
        "UPDATE audit_event SET seq = seq - 999 WHERE seq > 1000",
    )
    forged = replace(as_row(stored[5]), seq=6, prev_hash=bytes(stored[4]["hash"]))
    digest = event_hash(tenant.institution_id, forged)
    await tamper(
        tenant,
        "INSERT INTO audit_event SELECT 6, occurred_at, principal_subject, principal_kind, roles, client_id,"
        " action, resident_id, data_categories, purpose, outcome, reason_code, request_id, client_ip, $1, $2"
        " FROM audit_event WHERE seq = 7",
        parameters=[bytes(stored[4]["hash"]), digest],
    )
    found = await findings(tenant)
    # The inserted row links and hashes; every row after it moved, so its seq no longer hashes.
    assert found[0] == (Problem.BROKEN_LINK, 7)
    assert (Problem.HASH_MISMATCH, 7) in found and (Problem.HASH_MISMATCH, EVENTS + 1) in found
    assert (Problem.CHECKPOINT_MISMATCH, EVENTS) in found


async def test_an_appended_row_with_a_made_up_hash_is_found(world: World) -> None:
    tenant = await chained("审计追加养老院")
    await tamper(
        tenant,
        "INSERT INTO audit_event SELECT 11, occurred_at, principal_subject, principal_kind, roles, client_id,"
        " action, resident_id, data_categories, purpose, outcome, reason_code, request_id, client_ip,"
        " hash, sha256(hash) FROM audit_event WHERE seq = 10",
    )
    assert await findings(tenant) == [(Problem.HASH_MISMATCH, 11)]


async def test_reordered_rows_are_found(world: World) -> None:
    tenant = await chained("审计换序养老院")
    await tamper(
        tenant,
        "UPDATE audit_event SET seq = seq + 1000 WHERE seq IN (3, 4)",
        "UPDATE audit_event SET seq = CASE seq WHEN 1003 THEN 4 ELSE 3 END WHERE seq > 1000",
    )
    found = await findings(tenant)
    assert (Problem.HASH_MISMATCH, 3) in found and (Problem.HASH_MISMATCH, 4) in found
    assert (Problem.BROKEN_LINK, 3) in found


async def test_a_forged_checkpoint_is_found(world: World) -> None:
    tenant = await chained("审计伪点养老院")
    real = await checkpoint(tenant)
    assert real is not None
    connection = default_connection()
    # A signature made up for seq 7 with the real key id.
    await connection.execute_query(
        "INSERT INTO shared.audit_checkpoint VALUES ($1, 7, $2, $3, $4, now())",
        [tenant.institution_id, bytes((await rows(tenant))[6]["hash"]), bytes(64), real.key_id],
    )
    # A key of the forger's own (not sealed under our root key) and a checkpoint it signed.
    forger = Ed25519PrivateKey.generate()
    public = forger.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    key_id = key_id_of(public)
    await connection.execute_query(
        "INSERT INTO shared.audit_signing_key (key_id, public_key, private_key_sealed) VALUES ($1, $2, $3)",
        [key_id, public, seal(os.urandom(32), b"not the key", key_id.encode())],
    )
    stored = await rows(tenant)
    signed_at = datetime.now(UTC).replace(microsecond=0)
    message = checkpoint_message(tenant.institution_id, 3, bytes(stored[2]["hash"]), signed_at, key_id)
    await connection.execute_query(
        "INSERT INTO shared.audit_checkpoint VALUES ($1, 3, $2, $3, $4, $5)",
        [tenant.institution_id, bytes(stored[2]["hash"]), forger.sign(message), key_id, signed_at],
    )
    assert await findings(tenant) == [(Problem.BAD_SIGNATURE, 3), (Problem.BAD_SIGNATURE, 7)]


async def test_the_application_connection_cannot_update_delete_or_truncate(world: World) -> None:
    tenant = await chained("审计只增养老院", checkpoint_at=(5,))
    for statement in (
        "UPDATE audit_event SET purpose = 'x' WHERE seq = 1",
        "DELETE FROM audit_event WHERE seq = 10",
        "TRUNCATE audit_event",
    ):

        async def attempt(statement: str = statement) -> None:
            await default_connection().execute_query(statement)

        with pytest.raises(Exception, match=REFUSED):
            await in_tenant(tenant, attempt)
    for statement in (
        f"UPDATE shared.audit_checkpoint SET seq = 2 WHERE institution_id = {tenant.institution_id}",
        f"DELETE FROM shared.audit_checkpoint WHERE institution_id = {tenant.institution_id}",
        "DELETE FROM shared.audit_signing_key",
    ):
        with pytest.raises(Exception, match=REFUSED):
            await default_connection().execute_query(statement)
    assert len(await rows(tenant)) == EVENTS
    assert await findings(tenant) == []


def audit_cli(settings: Settings, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "audit", *arguments],
        cwd=REPO_ROOT,
        env={**os.environ, "DATABASE_URL": settings.database_url, "YIYANG_ENV": "test"},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_the_cli_verifies_and_exits_non_zero_on_tampering(world: World, settings: Settings) -> None:
    tenant = await chained("审计命令养老院", checkpoint_at=(6,))
    institution = str(tenant.institution_id)
    signed = audit_cli(settings, "checkpoint", "--institution", institution)
    assert signed.returncode == 0 and f"checkpoint at seq {EVENTS}" in signed.stdout, signed.stderr
    intact = audit_cli(settings, "verify", "--institution", institution)
    assert intact.returncode == 0, intact.stdout + intact.stderr
    assert "intact, 10 events, 2 checkpoints" in intact.stdout
    await tamper(tenant, "DELETE FROM audit_event WHERE seq = 8")
    broken = audit_cli(settings, "verify", "--institution", institution)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    assert "NOT INTACT" in broken.stdout and "seq 7: gap: rows 8..8 are missing" in broken.stdout
    assert audit_cli(settings, "verify", "--institution", "987654321").returncode == 2


async def test_a_unit_of_work_joins_the_chain_after_tampering_is_repaired(world: World) -> None:
    # Appends never read anything but the last row: an event written after tampering still chains.
    tenant = await chained("审计续写养老院")
    await tamper(tenant, "UPDATE audit_event SET action = 'x' WHERE seq = 2")
    from compliance.audit import record_event

    async def more() -> None:
        await record_event(event(11))

    await in_tenant(tenant, more)
    assert await findings(tenant) == [(Problem.HASH_MISMATCH, 2)]


async def test_a_root_key_rotation_reseals_the_audit_key_and_checkpoints_still_verify(world: World) -> None:
    from compliance.audit.checkpoints import public_keys, reseal_audit_keys
    from compliance.identity.keys import root_keys_from_environ

    tenant = await chained("审计换根养老院")
    (current,) = root_keys_from_environ()
    new = os.urandom(32)
    try:
        assert await reseal_audit_keys((new, current)) >= 1
        trusted, _ = await public_keys((new,))
        report = await verify_tenant(tenant, trusted)
        assert report.intact and report.checkpoints == 1, report.lines()
    finally:
        await reseal_audit_keys((current, new))
    with pytest.raises(Exception, match=REFUSED):
        await default_connection().execute_query(
            "UPDATE shared.audit_signing_key SET public_key = sha256(public_key)"
            " WHERE key_id IN (SELECT key_id FROM shared.audit_checkpoint LIMIT 1)"
        )
    with pytest.raises(Exception, match=REFUSED):
        await default_connection().execute_query(
            "UPDATE shared.audit_signing_key SET created_at = created_at - interval '1 day'"
        )
    assert await findings(tenant) == []

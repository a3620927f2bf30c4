"""`yiyang audit verify`: recompute each tenant's audit chain and check it against the signed checkpoints.

The rows are streamed in seq order through a server-side cursor (constant memory) in one read-only
repeatable-read transaction. What is found, and where:

- a changed row: its stored hash is not the hash of its columns (`seq N: hash mismatch`);
- a row changed with its hash recomputed: the next row's prev_hash no longer links (`broken link`);
- the whole chain recomputed after a change: a checkpoint no longer matches (`checkpoint mismatch`);
- a deleted row: the numbering jumps (`gap after seq N`), or a checkpoint names a seq with no row;
- an inserted or reordered row: seq is in the hash, so a row moved or renumbered mismatches, and its
  successor's link breaks; a row appended with a made-up hash or link mismatches likewise;
- a truncated tail: a checkpoint at a seq beyond the last row;
- a forged checkpoint: its signature does not verify, or its key is not ours (`bad signature`).
"""

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from compliance.audit.chain import GENESIS_HASH, canonical_encoding
from compliance.audit.checkpoints import Checkpoint, checkpoints_of, public_keys, signature_valid
from tenants.context import TenantRef
from tenants.db import default_connection
from tenants.models import Institution
from tenants.registry import tenant_ref
from tenants.schema_names import quote_schema

FETCH_ROWS = 10_000
MAX_FINDINGS = 1_000  # per tenant: a wholesale rewrite is reported by its first findings and a count


class Problem(StrEnum):
    HASH_MISMATCH = "hash mismatch"
    BROKEN_LINK = "broken link"
    GAP = "gap"
    CHECKPOINT_MISMATCH = "checkpoint mismatch"
    CHECKPOINT_MISSING_ROW = "checkpoint names a missing row"
    TRUNCATED = "truncated tail"
    BAD_SIGNATURE = "bad signature"


@dataclass(frozen=True, slots=True)
class Finding:
    problem: Problem
    seq: int
    detail: str

    def __str__(self) -> str:
        return f"seq {self.seq}: {self.problem}: {self.detail}"


@dataclass
class ChainReport:
    institution_id: int
    schema_name: str
    events: int = 0
    last_seq: int = 0
    checkpoints: int = 0
    last_checkpoint: int | None = None
    findings: list[Finding] = field(default_factory=list)
    finding_count: int = 0

    @property
    def intact(self) -> bool:
        return self.finding_count == 0

    def add(self, problem: Problem, seq: int, detail: str) -> None:
        self.finding_count += 1
        if len(self.findings) < MAX_FINDINGS:
            self.findings.append(Finding(problem, seq, detail))

    def lines(self) -> list[str]:
        head = f"institution {self.institution_id} ({self.schema_name}): "
        covered = f", last checkpoint at seq {self.last_checkpoint}" if self.last_checkpoint else ""
        summary = f"{self.events} events, {self.checkpoints} checkpoints{covered}"
        if self.intact:
            return [head + "intact, " + summary]
        shown = [f"  {finding}" for finding in self.findings]
        more = self.finding_count - len(self.findings)
        return [head + f"NOT INTACT, {self.finding_count} findings, " + summary, *shown] + (
            [f"  … and {more} more"] if more else []
        )


_SELECT = """
SELECT seq, occurred_at, principal_subject, principal_kind, roles, client_id, action, resident_id,
       data_categories, purpose, outcome, reason_code, request_id, client_ip, prev_hash, hash
FROM {schema}.audit_event ORDER BY seq
"""


async def verify_tenant(
    tenant: TenantRef, keys: Mapping[str, Ed25519PublicKey] | None = None, *, fetch_rows: int = FETCH_ROWS
) -> ChainReport:
    """The report of one tenant's chain against its checkpoints (`keys`: the trusted public keys)."""
    if keys is None:
        keys, _ = await public_keys()
    report = ChainReport(tenant.institution_id, tenant.schema_name)
    points = await checkpoints_of(tenant.institution_id)
    report.checkpoints = len(points)
    valid: list[Checkpoint] = []
    for point in points:
        if signature_valid(point, keys):
            valid.append(point)
        else:
            report.add(Problem.BAD_SIGNATURE, point.seq, "the checkpoint's signature does not verify")
    report.last_checkpoint = valid[-1].seq if valid else None
    pending = iter(valid)
    next_point = next(pending, None)
    institution = tenant.institution_id
    sha256 = hashlib.sha256
    expected, prev_hash = 1, GENESIS_HASH
    async with default_connection().acquire_connection() as connection:
        async with connection.transaction(isolation="repeatable_read", readonly=True):
            cursor = await connection.cursor(_SELECT.format(schema=quote_schema(tenant.schema_name)))
            while rows := await cursor.fetch(fetch_rows):
                for row in rows:
                    seq = row[0]
                    stored_prev, stored = bytes(row[14]), bytes(row[15])
                    while next_point is not None and next_point.seq < seq:
                        report.add(
                            Problem.CHECKPOINT_MISSING_ROW, next_point.seq, "the checkpointed row is gone"
                        )
                        next_point = next(pending, None)
                    if seq != expected:
                        report.add(Problem.GAP, expected - 1, f"rows {expected}..{seq - 1} are missing")
                    elif stored_prev != prev_hash:
                        report.add(Problem.BROKEN_LINK, seq, f"prev_hash is not the hash of seq {seq - 1}")
                    recomputed = sha256(
                        canonical_encoding(institution, *row[:14], stored_prev)  # type: ignore[arg-type]
                    ).digest()
                    if recomputed != stored:
                        report.add(Problem.HASH_MISMATCH, seq, "the row's columns do not hash to its hash")
                    if next_point is not None and next_point.seq == seq:
                        if next_point.hash != stored:
                            report.add(
                                Problem.CHECKPOINT_MISMATCH,
                                seq,
                                "the chain differs from its signed checkpoint: rows up to it were rewritten",
                            )
                        next_point = next(pending, None)
                    expected, prev_hash = seq + 1, stored
                    report.events += 1
                    report.last_seq = seq
    while next_point is not None:
        report.add(
            Problem.TRUNCATED,
            next_point.seq,
            f"a checkpoint at seq {next_point.seq} lies beyond the last row (seq {report.last_seq})",
        )
        next_point = next(pending, None)
    return report


async def verify_tenants(tenants: Iterable[TenantRef]) -> list[ChainReport]:
    keys, _ = await public_keys()
    return [await verify_tenant(tenant, keys) for tenant in tenants]


async def institutions(institution_id: int | None = None) -> list[TenantRef]:
    """Every institution (or the one named), in id order."""
    query = Institution.all() if institution_id is None else Institution.filter(id=institution_id)
    return [tenant_ref(row) for row in await query.order_by("id")]

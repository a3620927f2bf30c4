"""Recording audit events: `await record_event(AuditEvent(...))` inside a tenant unit of work.

The event is written in the transaction of the work it records: it commits with it, rolls back with it,
and if it cannot be written the work fails (the error propagates). Appends of one tenant are serialised by
a transaction-level advisory lock on (AUDIT_LOCK_CLASS, institution id), held until the unit of work ends:
the next writer numbers after the last committed row, so `seq` has no gaps and every `prev_hash` is the
hash of the row before. Coroutines of one unit of work (resolvers of one request run concurrently on its
one connection) take turns through an in-process lock of that unit of work, because the advisory lock is
re-entrant within the transaction and would not separate them.

No health data: an event names the categories of data touched, never their values.
"""

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from compliance.audit.chain import GENESIS_HASH, ChainedRow, event_hash
from compliance.principals import Principal
from tenants.context import current_tenant, current_unit_of_work
from tenants.db import default_connection

# Class half of the advisory lock (int4 "YYAD"); the institution id is the other half.
AUDIT_LOCK_CLASS = 0x5959_4144
# Who acts when no principal does (a scheduled job): its principal_kind.
SYSTEM_KIND = "system"


class Outcome(StrEnum):
    PERMITTED = "permitted"
    DENIED = "denied"  # with a reason code
    FAILED = "failed"  # with a reason code


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """What happened; the chain (seq, time, hashes) is added when it is recorded."""

    principal_subject: str  # account:<id>, client:<client_id>, or system:<job>
    principal_kind: str  # a PrincipalKind value, or SYSTEM_KIND
    action: str  # a compliance.policy.Action value (or a job's own action name)
    outcome: Outcome = Outcome.PERMITTED
    reason_code: str | None = None  # required unless permitted
    resident_id: int | None = None
    data_categories: tuple[str, ...] = ()  # category names, never values
    purpose: str | None = None
    roles: tuple[str, ...] = ()
    client_id: str | None = None
    request_id: str | None = None
    client_ip: str | None = None

    def __post_init__(self) -> None:
        if (self.outcome is Outcome.PERMITTED) != (self.reason_code is None):
            raise ValueError("a denied or failed event needs a reason code, a permitted one none")

    @classmethod
    def by(
        cls,
        principal: Principal,
        action: str,
        *,
        outcome: Outcome = Outcome.PERMITTED,
        reason_code: str | None = None,
        resident_id: int | None = None,
        data_categories: Iterable[str] = (),
        purpose: str | None = None,
        request_id: str | None = None,
        client_ip: str | None = None,
    ) -> "AuditEvent":
        """The event of `principal` (its subject, kind, staff and chain roles, OAuth2 client)."""
        roles = sorted(
            {str(role) for role in principal.roles} | {str(role) for role in principal.chain_roles}
        )
        return cls(
            principal_subject=principal.subject,
            principal_kind=str(principal.kind),
            action=str(action),
            outcome=outcome,
            reason_code=reason_code,
            resident_id=resident_id,
            data_categories=tuple(sorted(set(data_categories))),
            purpose=purpose,
            roles=tuple(roles),
            client_id=principal.client_id,
            request_id=request_id,
            client_ip=client_ip or None,
        )


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    seq: int
    hash: bytes


@dataclass
class _UnitLock:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


# One entry per unit of work currently appending; removed when its last user is done (no leak).
_unit_locks: dict[object, _UnitLock] = {}

_INSERT = """
INSERT INTO audit_event (
    seq, occurred_at, principal_subject, principal_kind, roles, client_id, action, resident_id,
    data_categories, purpose, outcome, reason_code, request_id, client_ip, prev_hash, hash
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
"""


def _now() -> datetime:
    return datetime.now(UTC)


async def record_event(event: AuditEvent) -> RecordedEvent:
    """Append `event` to the audit log of the current tenant, in the open unit of work."""
    tenant = current_tenant()  # OutsideTenantScope without a unit of work
    unit = current_unit_of_work()
    entry = _unit_locks.setdefault(unit, _UnitLock())
    entry.users += 1
    try:
        async with entry.lock:
            return await _append(tenant.institution_id, event)
    finally:
        entry.users -= 1
        if entry.users == 0:
            del _unit_locks[unit]


async def _append(institution_id: int, event: AuditEvent) -> RecordedEvent:
    connection = default_connection()
    await connection.execute_query("SELECT pg_advisory_xact_lock($1, $2)", [AUDIT_LOCK_CLASS, institution_id])
    # A statement after the lock: its snapshot sees the last writer's committed row.
    _, last = await connection.execute_query("SELECT seq, hash FROM audit_event ORDER BY seq DESC LIMIT 1")
    seq, prev_hash = (last[0]["seq"] + 1, bytes(last[0]["hash"])) if last else (1, GENESIS_HASH)
    row = ChainedRow(
        seq=seq,
        occurred_at=_now(),
        principal_subject=event.principal_subject,
        principal_kind=event.principal_kind,
        roles=list(event.roles),
        client_id=event.client_id,
        action=event.action,
        resident_id=event.resident_id,
        data_categories=list(event.data_categories),
        purpose=event.purpose,
        outcome=str(event.outcome),
        reason_code=event.reason_code,
        request_id=event.request_id,
        client_ip=event.client_ip,
        prev_hash=prev_hash,
        hash=b"",
    )
    digest = event_hash(institution_id, row)
    await connection.execute_query(
        _INSERT,
        [
            row.seq,
            row.occurred_at,
            row.principal_subject,
            row.principal_kind,
            row.roles,
            row.client_id,
            row.action,
            row.resident_id,
            row.data_categories,
            row.purpose,
            row.outcome,
            row.reason_code,
            row.request_id,
            row.client_ip,
            row.prev_hash,
            digest,
        ],
    )
    return RecordedEvent(seq=seq, hash=digest)


class RequestFacts(Protocol):
    """What a request context offers the audit (schema/context.py RequestContext has all three)."""

    @property
    def principal(self) -> Principal | None: ...

    @property
    def request_id(self) -> str: ...

    @property
    def client_address(self) -> str: ...


ANONYMOUS_SUBJECT = "anonymous"
ANONYMOUS_KIND = "anonymous"


async def record_request_event(
    request: RequestFacts,
    action: str,
    *,
    resident_id: int | None = None,
    data_categories: Iterable[str] = (),
    purpose: str | None = None,
    outcome: Outcome = Outcome.PERMITTED,
    reason_code: str | None = None,
) -> RecordedEvent:
    """Record an event of the request: principal, request id and client address from its context."""
    principal = request.principal
    if principal is None:
        return await record_event(
            AuditEvent(
                principal_subject=ANONYMOUS_SUBJECT,
                principal_kind=ANONYMOUS_KIND,
                action=str(action),
                outcome=outcome,
                reason_code=reason_code,
                resident_id=resident_id,
                data_categories=tuple(sorted(set(data_categories))),
                purpose=purpose,
                request_id=request.request_id,
                client_ip=request.client_address or None,
            )
        )
    return await record_event(
        AuditEvent.by(
            principal,
            action,
            outcome=outcome,
            reason_code=reason_code,
            resident_id=resident_id,
            data_categories=data_categories,
            purpose=purpose,
            request_id=request.request_id,
            client_ip=request.client_address,
        )
    )

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
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from compliance.audit.chain import COLUMNS, GENESIS_HASH, ChainedRow, event_hash
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

# The table's own column names and types; one row per element of the arrays (a request's events).
_INSERT = """
INSERT INTO audit_event (
    seq, occurred_at, principal_subject, principal_kind, roles, client_id, action, resident_id,
    data_categories, purpose, outcome, reason_code, request_id, client_ip, prev_hash, hash
)
SELECT seq, occurred_at, principal_subject, principal_kind, string_to_array(roles, ','), client_id, action,
       resident_id, string_to_array(data_categories, ','), purpose, outcome, reason_code, request_id,
       client_ip, prev_hash, hash
FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
            $8::bigint[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
            $15::bytea[], $16::bytea[])
     AS e (seq, occurred_at, principal_subject, principal_kind, roles, client_id, action, resident_id,
           data_categories, purpose, outcome, reason_code, request_id, client_ip, prev_hash, hash)
"""


def _now() -> datetime:
    return datetime.now(UTC)


async def record_event(event: AuditEvent) -> RecordedEvent:
    """Append `event` to the audit log of the current tenant, in the open unit of work."""
    (recorded,) = await record_events([event])
    return recorded


async def record_events(events: Sequence[AuditEvent]) -> list[RecordedEvent]:
    """Append `events`, in order, to the audit log of the current tenant, in the open unit of work: one
    lock, one read of the chain's end, one INSERT for all of them (a request's events: AuditTrail)."""
    if not events:
        return []
    tenant = current_tenant()  # OutsideTenantScope without a unit of work
    unit = current_unit_of_work()
    entry = _unit_locks.setdefault(unit, _UnitLock())
    entry.users += 1
    try:
        async with entry.lock:
            return await _append(tenant.institution_id, events)
    finally:
        entry.users -= 1
        if entry.users == 0:
            del _unit_locks[unit]


async def _append(institution_id: int, events: Sequence[AuditEvent]) -> list[RecordedEvent]:
    connection = default_connection()
    await connection.execute_query("SELECT pg_advisory_xact_lock($1, $2)", [AUDIT_LOCK_CLASS, institution_id])
    # A statement after the lock: its snapshot sees the last writer's committed row.
    _, last = await connection.execute_query("SELECT seq, hash FROM audit_event ORDER BY seq DESC LIMIT 1")
    seq, prev_hash = (last[0]["seq"], bytes(last[0]["hash"])) if last else (0, GENESIS_HASH)
    occurred_at = _now()
    rows: list[ChainedRow] = []
    for event in events:
        seq += 1
        row = ChainedRow(
            seq=seq,
            occurred_at=occurred_at,
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
        prev_hash = event_hash(institution_id, row)
        rows.append(replace(row, hash=prev_hash))
    columns = [[_column_value(getattr(row, name)) for row in rows] for name in COLUMNS]
    await connection.execute_query(_INSERT, columns)
    return [RecordedEvent(seq=row.seq, hash=row.hash) for row in rows]


def _column_value(value: object) -> object:
    # unnest() flattens arrays of arrays: the two list columns travel as comma-joined text (names of roles
    # and data categories, which hold no comma) and become arrays again in the INSERT.
    return ",".join(value) if isinstance(value, list) else value


# Joins the actions of a coalesced read (policy actions hold no comma).
ACTION_SEPARATOR = ","


def is_read(action: str) -> bool:
    """Every read action of the policy is `<what>.view`; so is each of a coalesced read's actions."""
    if ACTION_SEPARATOR not in action:
        return action.endswith(".view")
    return all(part.endswith(".view") for part in action.split(ACTION_SEPARATOR))


@dataclass(slots=True)
class _Read:
    """A request's reads of one resident with one outcome, reason and purpose: one event when written."""

    resident_id: int
    outcome: Outcome
    reason_code: str | None
    purpose: str | None
    actions: set[str]
    categories: set[str]


class AuditTrail:
    """The events of one request (`request`: its principal, id and client address), written together
    when its unit of work ends (api/graphql.py): one INSERT per request, the tenant's append lock held
    once.

    A request's reads of one resident with one outcome, reason and purpose, in one operation field, are
    one event: its actions and categories joined (`resident.view,vitals.view`; identity, vitals). A page
    of 50 residents with four parts each is then 50 rows, not 200: the rows, not the data, are what the
    chain's hashing and the INSERT cost (docs/benchmarks.md). Writes are one event each.

    Each event names the operation field (a root field of the GraphQL operation) it was decided in:
    when that field's work does not happen after all (user errors, a refusal or a fault after the
    decision), its permitted events are recorded as failed instead (`fail`)."""

    def __init__(self, request: "RequestFacts") -> None:
        self._request = request
        self._entries: list[AuditEvent | _Read] = []
        self._fields: list[str | None] = []
        self._reads: dict[tuple[object, ...], _Read] = {}

    def decided(
        self,
        action: str,
        resident_id: int,
        categories: Iterable[str],
        purpose: str | None,
        outcome: Outcome,
        reason_code: str | None,
        *,
        field: str | None,
    ) -> None:
        """A decision about a resident's data: a read joins the request's other reads of the resident."""
        if not is_read(action):
            event = request_event(
                self._request,
                action,
                resident_id=resident_id,
                data_categories=categories,
                purpose=purpose,
                outcome=outcome,
                reason_code=reason_code,
            )
            self.add(event, field=field)
            return
        key = (field, resident_id, outcome, reason_code, purpose)
        read = self._reads.get(key)
        if read is None:
            read = _Read(resident_id, outcome, reason_code, purpose, {action}, set(categories))
            self._reads[key] = read
            self._entries.append(read)
            self._fields.append(field)
        else:
            read.actions.add(action)
            read.categories.update(categories)

    def add(self, event: AuditEvent, *, field: str | None = None) -> None:
        self._entries.append(event)
        self._fields.append(field)

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[AuditEvent]:
        return iter(self._events())

    def fail(self, field: str, reason_code: str) -> None:
        """The work of operation field `field` did not happen: its permitted events become failed."""
        self._entries = [
            _failed(entry, reason_code) if named == field else entry
            for entry, named in zip(self._entries, self._fields, strict=True)
        ]
        self._reads.clear()  # nothing more joins reads that changed

    def fail_all(self, reason_code: str) -> None:
        """Nothing of the request happened (its unit of work rolled back)."""
        self._entries = [_failed(entry, reason_code) for entry in self._entries]
        self._reads.clear()

    def _events(self) -> list[AuditEvent]:
        return [self._event(entry) if isinstance(entry, _Read) else entry for entry in self._entries]

    def _event(self, read: _Read) -> AuditEvent:
        return request_event(
            self._request,
            ACTION_SEPARATOR.join(sorted(read.actions)),
            resident_id=read.resident_id,
            data_categories=read.categories,
            purpose=read.purpose,
            outcome=read.outcome,
            reason_code=read.reason_code,
        )

    async def flush(self) -> list[RecordedEvent]:
        """Write the events gathered so far (in the open unit of work) and start afresh."""
        events = self._events()
        self._entries, self._fields = [], []
        self._reads.clear()
        return await record_events(events)


def _failed(entry: AuditEvent | _Read, reason_code: str) -> AuditEvent | _Read:
    if entry.outcome is not Outcome.PERMITTED:
        return entry
    if isinstance(entry, _Read):
        return _Read(
            entry.resident_id, Outcome.FAILED, reason_code, entry.purpose, entry.actions, entry.categories
        )
    return replace(entry, outcome=Outcome.FAILED, reason_code=reason_code)


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


def request_event(
    request: RequestFacts,
    action: str,
    *,
    resident_id: int | None = None,
    data_categories: Iterable[str] = (),
    purpose: str | None = None,
    outcome: Outcome = Outcome.PERMITTED,
    reason_code: str | None = None,
) -> AuditEvent:
    """An event of the request: principal, request id and client address from its context."""
    principal = request.principal
    if principal is None:
        return AuditEvent(
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
    return AuditEvent.by(
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
    """Record an event of the request now (`request_event`, then `record_event`)."""
    return await record_event(
        request_event(
            request,
            action,
            resident_id=resident_id,
            data_categories=data_categories,
            purpose=purpose,
            outcome=outcome,
            reason_code=reason_code,
        )
    )

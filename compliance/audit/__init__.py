"""The audit log of resident data (issue 5): events recorded in the unit of work of the work they record
(events.py), hash-chained per tenant (chain.py), checkpoints signed with Ed25519 outside the tenant
schemas (checkpoints.py), and the verification of both (verify.py)."""

from compliance.audit.events import (
    AuditEvent,
    AuditTrail,
    Outcome,
    RecordedEvent,
    RequestFacts,
    record_event,
    record_events,
    record_request_event,
    request_event,
)

__all__ = [
    "AuditEvent",
    "AuditTrail",
    "Outcome",
    "RecordedEvent",
    "RequestFacts",
    "record_event",
    "record_events",
    "record_request_event",
    "request_event",
]

"""The audit log and access reports in GraphQL (compliance/audit/report.py): `auditEvents` for the
compliance officer (and the institution admin), `Resident.accessReport` for them and for the resident's
guardian. Both are read newest first, a page at a time; reading either is itself an audit event
(audit.view, access_report.view), and so is a refused reading (denied, with the reason code forbidden, or
not_guardian for a family account that follows the resident but is not their guardian)."""

from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo

import strawberry

from compliance.audit import Outcome
from compliance.audit import report as domain
from compliance.consent import Category, Purpose
from compliance.policy import Action, require
from schema.consents import ConsentPurpose, DataCategory
from schema.context import YiyangInfo
from schema.ids import decode_id, encode_id
from schema.pagination import Connection, connection, page_request
from schema.resident_access import ResidentNode, audit_request
from tenants.errors import Forbidden, NotFound

AuditOutcome = strawberry.enum(Outcome, name="AuditOutcome")
AuditPrincipalKind = strawberry.enum(domain.AuditPrincipalKind, name="AuditPrincipalKind")
DataAccess = strawberry.enum(domain.Access, name="DataAccess")


@strawberry.type(name="AuditPrincipal")
class AuditPrincipalType:
    subject: str = strawberry.field(
        description="account:<id>, client:<client_id>, system:<job> or anonymous, as recorded."
    )
    kind: AuditPrincipalKind
    roles: list[str] = strawberry.field(description="Staff and chain roles held when acting.")
    client_id: str | None = strawberry.field(description="The OAuth2 client the request came through.")
    display_name: str | None = strawberry.field(
        description="The account's display name or the integrator client's name; null when unknown."
    )

    @classmethod
    def of(cls, event: domain.LoggedEvent) -> "AuditPrincipalType":
        return cls(
            subject=event.principal_subject,
            kind=event.principal_kind,
            roles=list(event.roles),
            client_id=event.client_id,
            display_name=event.display_name,
        )


def _categories(event: domain.LoggedEvent) -> list[Category]:
    # Every event the product records names Category values; anything else (a hand-made row) is left
    # out rather than failing the whole page.
    return [Category(name) for name in event.data_categories if name in Category._value2member_map_]


def _purpose(event: domain.LoggedEvent) -> Purpose | None:
    return Purpose(event.purpose) if event.purpose in Purpose._value2member_map_ else None


_WHEN = "When it happened (the time of the request's unit of work)."


@strawberry.type(name="AccessReportEntry")
class AccessReportEntryType:
    """One access to the resident's data (or a refusal of one): who, when, what, why, with what outcome."""

    id: strawberry.ID
    occurred_at: datetime = strawberry.field(description=_WHEN)
    principal: AuditPrincipalType
    action: str = strawberry.field(description="What was done, e.g. vitals.view, health_record.edit.")
    access: DataAccess
    data_categories: list[DataCategory]
    purpose: ConsentPurpose | None
    outcome: AuditOutcome
    reason_code: str | None = strawberry.field(description="Why it was denied or failed, e.g. no_consent.")

    @classmethod
    def of(cls, event: domain.LoggedEvent, institution_id: int) -> "AccessReportEntryType":
        return cls(
            id=strawberry.ID(encode_id("AuditEvent", institution_id, event.seq)),
            occurred_at=event.occurred_at,
            principal=AuditPrincipalType.of(event),
            action=event.action,
            access=event.access,
            data_categories=_categories(event),
            purpose=_purpose(event),
            outcome=event.outcome,
            reason_code=event.reason_code,
        )


@strawberry.type(name="AuditEvent")
class AuditEventType:
    """One event of the institution's audit log (docs/security.md "Audit log")."""

    id: strawberry.ID
    seq: int = strawberry.field(description="Its number in the institution's chain (audit verify names it).")
    occurred_at: datetime = strawberry.field(description=_WHEN)
    principal: AuditPrincipalType
    action: str
    access: DataAccess
    resident_id: strawberry.ID | None = strawberry.field(description="The resident it is about, if any.")
    data_categories: list[DataCategory]
    purpose: ConsentPurpose | None
    outcome: AuditOutcome
    reason_code: str | None
    request_id: str | None
    client_ip: str | None

    @classmethod
    def of(cls, event: domain.LoggedEvent, institution_id: int) -> "AuditEventType":
        resident = event.resident_id
        return cls(
            id=strawberry.ID(encode_id("AuditEvent", institution_id, event.seq)),
            seq=event.seq,
            occurred_at=event.occurred_at,
            principal=AuditPrincipalType.of(event),
            action=event.action,
            access=event.access,
            resident_id=None
            if resident is None
            else strawberry.ID(encode_id("Resident", institution_id, resident)),
            data_categories=_categories(event),
            purpose=_purpose(event),
            outcome=event.outcome,
            reason_code=event.reason_code,
            request_id=event.request_id,
            client_ip=event.client_ip,
        )


@strawberry.input
class AuditEventFilterInput:
    resident_id: strawberry.ID | None = strawberry.field(
        default=None, description="Events about this resident."
    )
    principal_subject: str | None = strawberry.field(
        default=None, description="Events of one principal, e.g. account:42 or client:<client_id>."
    )
    action: str | None = strawberry.field(default=None, description="e.g. vitals.view.")
    outcome: AuditOutcome | None = None
    since: datetime | None = strawberry.field(
        default=None, description="Inclusive; without an offset: local."
    )
    until: datetime | None = strawberry.field(
        default=None, description="Exclusive; without an offset: local."
    )


def _local(moment: datetime | None, zone: str) -> datetime | None:
    """A time without an offset is the institution's local time, as on its clocks."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=ZoneInfo(zone))


def _denied(info: YiyangInfo, action: Action, refused: Forbidden, resident_id: int | None = None) -> None:
    audit_request(
        info,
        action,
        resident_id=resident_id,
        outcome=Outcome.DENIED,
        reason_code=domain.refusal_reason(refused),
    )


async def resident_access_report(
    root: ResidentNode,
    info: YiyangInfo,
    first: int | None = None,
    after: str | None = None,
    since: Annotated[datetime | None, strawberry.argument(description="Inclusive.")] = None,
    until: Annotated[datetime | None, strawberry.argument(description="Exclusive.")] = None,
) -> Connection[AccessReportEntryType]:
    """Who accessed the resident's data (or was refused), newest first: the compliance officer, the
    institution admin, and a guardian of the resident (a family account that granted one of the
    resident's consents as guardian)."""
    tenant = info.context.require_tenant()
    try:
        await domain.require_access_report(
            info.context.principal,
            Action.ACCESS_REPORT_VIEW,
            root.pk,
            institution=root.institution_id,
            consents=info.context.loaders.consent_terms.load,
        )
    except Forbidden as refused:
        _denied(info, Action.ACCESS_REPORT_VIEW, refused, root.pk)
        raise
    page = page_request(first, after)
    since, until = _local(since, tenant.time_zone), _local(until, tenant.time_zone)
    domain.check_range(since, until)
    rows = await domain.access_report(
        root.pk, since=since, until=until, before_seq=page.after_key, limit=page.size + 1
    )
    audit_request(info, Action.ACCESS_REPORT_VIEW, resident_id=root.pk)
    return connection(
        rows,
        page,
        key=lambda row: row.seq,
        node=lambda row: AccessReportEntryType.of(row, root.institution_id),
        count_total=lambda: domain.access_report_size(root.pk, since=since, until=until),
    )


@strawberry.type
class AuditQueries:
    @strawberry.field(
        description="The institution's audit log, newest first (compliance officers and institution "
        "admins). Reading it is itself recorded."
    )
    async def audit_events(
        self,
        info: YiyangInfo,
        filter: AuditEventFilterInput | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[AuditEventType]:
        principal = info.context.principal
        given = filter or AuditEventFilterInput()
        institution_id: int | None = None
        resident_id: int | None = None
        if given.resident_id is not None:
            institution_id, resident_id = decode_id(
                "Resident", given.resident_id, 2, field="filter.residentId"
            )
        acting = info.context.tenant
        try:
            require(principal, Action.AUDIT_VIEW, institution=institution_id)
        except Forbidden as refused:
            if acting is not None and institution_id in (None, acting.institution_id):
                _denied(info, Action.AUDIT_VIEW, refused, resident_id)
            raise
        tenant = info.context.require_tenant()
        if institution_id is not None and institution_id != tenant.institution_id:
            raise NotFound("Not found.", field="filter.residentId")
        page = page_request(first, after)
        criteria = domain.EventFilter(
            resident_id=resident_id,
            principal_subject=given.principal_subject,
            action=given.action,
            outcome=None if given.outcome is None else Outcome(given.outcome),
            since=_local(given.since, tenant.time_zone),
            until=_local(given.until, tenant.time_zone),
        )
        rows = await domain.events(criteria, before_seq=page.after_key, limit=page.size + 1)
        audit_request(info, Action.AUDIT_VIEW, resident_id=resident_id)
        return connection(
            rows,
            page,
            key=lambda row: row.seq,
            node=lambda row: AuditEventType.of(row, tenant.institution_id),
            count_total=lambda: domain.count(criteria),
        )

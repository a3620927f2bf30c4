"""Reading the audit log back (compliance/audit/report.py): filters, newest first with a keyset cursor,
actors named from the shared schema, time bounds, and who may read a resident's access report (the
policy, then for family accounts: guardians only)."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from compliance.audit import AuditEvent, Outcome, record_event, report
from compliance.consent import (
    Category,
    ConsentStatus,
    ConsentTerms,
    GranteeKind,
    GrantorKind,
    Purpose,
)
from compliance.identity.account_models import AccountKind
from compliance.identity.accounts import NewAccount, add_staff_membership, create_account
from compliance.identity.clients import create_integrator_client
from compliance.policy import Action
from compliance.principals import Principal, PrincipalKind, StaffRole
from tenants.context import TenantRef
from tenants.errors import Forbidden, InvalidInput, NotFound
from tests.compliance.audit_support import fresh_tenant, in_tenant
from tests.conftest import World


def _event(subject: str, kind: str, action: str, resident_id: int | None, **extra: object) -> AuditEvent:
    return AuditEvent(
        principal_subject=subject,
        principal_kind=kind,
        action=action,
        resident_id=resident_id,
        **extra,  # type: ignore[arg-type]
    )


async def _record(tenant: TenantRef, *events: AuditEvent) -> list[int]:
    seqs = []
    for given in events:

        async def one(given: AuditEvent = given) -> int:
            return (await record_event(given)).seq

        seqs.append(await in_tenant(tenant, one))
    return seqs


@pytest.fixture(scope="module")
async def logged(world: World) -> tuple[TenantRef, str, str]:
    """A tenant with ten events: a named staff account, an integrator client, a job, nobody."""
    tenant = await fresh_tenant("审计报告领域养老院")
    nurse = await create_account(
        NewAccount(
            AccountKind.STAFF, f"audit-{uuid.uuid4().hex[:10]}@example.com", "护士王芳", "a-long-pass-77"
        )
    )
    await add_staff_membership(nurse, tenant.institution_id, StaffRole.NURSE)
    created = await create_integrator_client(
        "血压计对接", scopes=["residents:read"], created_by="test", institution_id=tenant.institution_id
    )
    staff, client = f"account:{nurse.id}", f"client:{created.client.client_id}"
    await _record(
        tenant,
        _event(staff, "staff", "vitals.view", 1, data_categories=("vitals",), roles=("nurse",)),
        _event(staff, "staff", "health_record.edit", 1, data_categories=("medical_history",)),
        _event(
            client,
            "integrator",
            "vitals.view",
            1,
            data_categories=("vitals",),
            outcome=Outcome.DENIED,
            reason_code="no_consent",
            client_id=created.client.client_id,
        ),
        _event(staff, "staff", "vitals.view", 2, data_categories=("vitals",)),
        _event("system:checkpoint", "system", "audit.checkpoint", None),
        _event("anonymous", "anonymous", "resident.view", 1, outcome=Outcome.DENIED, reason_code="forbidden"),
        *(_event(staff, "staff", "resident.view", 1, data_categories=("identity",)) for _ in range(4)),
    )
    return tenant, staff, client


async def test_events_newest_first_with_filters(logged: tuple[TenantRef, str, str]) -> None:
    tenant, staff, client = logged

    async def read() -> dict[str, object]:
        everything = await report.events(report.EventFilter(), limit=100)
        return {
            "all": [e.seq for e in everything],
            "resident 1": [e.seq for e in await report.events(report.EventFilter(resident_id=1), limit=100)],
            "staff": len(await report.events(report.EventFilter(principal_subject=staff), limit=100)),
            "denied": [
                e.principal_kind
                for e in await report.events(report.EventFilter(outcome=Outcome.DENIED), limit=100)
            ],
            "action": await report.count(report.EventFilter(action="vitals.view")),
            "count": await report.count(report.EventFilter(resident_id=1)),
            "events": everything,
        }

    found = await in_tenant(tenant, read)
    assert found["all"] == list(range(10, 0, -1))
    assert found["resident 1"] == [10, 9, 8, 7, 6, 3, 2, 1]
    assert found["staff"] == 7
    assert found["denied"] == [report.AuditPrincipalKind.ANONYMOUS, report.AuditPrincipalKind.INTEGRATOR]
    assert found["action"] == 3 and found["count"] == 8
    by_seq = {e.seq: e for e in found["events"]}  # type: ignore[union-attr]
    assert by_seq[1].display_name == "护士王芳" and by_seq[1].roles == ("nurse",)
    assert by_seq[3].display_name == "血压计对接" and by_seq[3].principal_subject == client
    assert by_seq[3].reason_code == "no_consent"
    assert by_seq[5].display_name is None and by_seq[5].principal_kind is report.AuditPrincipalKind.SYSTEM
    assert by_seq[1].access is report.Access.READ and by_seq[2].access is report.Access.WRITE


async def test_keyset_pages_never_skip_nor_repeat(logged: tuple[TenantRef, str, str]) -> None:
    tenant, _, _ = logged

    async def pages() -> list[list[int]]:
        seen: list[list[int]] = []
        before: int | None = None
        while True:
            page = await report.access_report(1, before_seq=before, limit=3)
            if not page:
                return seen
            seen.append([e.seq for e in page])
            before = page[-1].seq

    assert await in_tenant(tenant, pages) == [[10, 9, 8], [7, 6, 3], [2, 1]]


async def test_time_range(logged: tuple[TenantRef, str, str]) -> None:
    tenant, _, _ = logged
    now = datetime.now(UTC)

    async def read() -> tuple[int, int, int]:
        return (
            await report.access_report_size(1, since=now - timedelta(hours=1)),
            await report.access_report_size(1, until=now - timedelta(hours=1)),
            await report.access_report_size(
                1, since=now - timedelta(hours=1), until=now + timedelta(hours=1)
            ),
        )

    assert await in_tenant(tenant, read) == (8, 0, 8)
    with pytest.raises(InvalidInput) as empty:
        report.EventFilter(since=now, until=now)
    assert empty.value.message == report.EMPTY_RANGE and empty.value.field == "until"
    with pytest.raises(InvalidInput):
        report.EventFilter(principal_subject="x" * 201)


def test_bounds_given_as_text_are_local_days() -> None:
    shanghai = "Asia/Shanghai"
    assert report.moment("2026-12-01", shanghai, end=False, field="since") == datetime(
        2026, 11, 30, 16, tzinfo=UTC
    )
    # A day as the end of a range includes that day.
    assert report.moment("2026-12-01", shanghai, end=True, field="until") == datetime(
        2026, 12, 1, 16, tzinfo=UTC
    )
    assert report.moment("2026-12-01T08:00:00", shanghai, end=False, field="since") == datetime(
        2026, 12, 1, 0, tzinfo=UTC
    )
    assert report.moment("2026-12-01T08:00:00Z", shanghai, end=False, field="since") == datetime(
        2026, 12, 1, 8, tzinfo=UTC
    )
    with pytest.raises(InvalidInput) as bad:
        report.moment("yesterday", shanghai, end=False, field="since")
    assert bad.value.field == "since"


def _terms(grantor_kind: GrantorKind, grantor_accounts: frozenset[int]) -> ConsentTerms:
    return ConsentTerms(
        consent_id=1,
        version=2,
        resident_id=7,
        grantor_kind=grantor_kind,
        grantor_family_member_id=3 if grantor_kind is GrantorKind.GUARDIAN else None,
        grantee_kind=GranteeKind.FAMILY_MEMBER,
        grantee_family_member_id=3,
        grantee_client_id=None,
        purposes=frozenset({Purpose.FAMILY_SHARING}),
        categories=frozenset({Category.VITALS}),
        period_start=datetime(2026, 1, 1, tzinfo=UTC),
        period_end=None,
        stored_status=ConsentStatus.WITHDRAWN,  # withdrawn since: still their guardian
        grantor_accounts=grantor_accounts,
        grantee_accounts=frozenset({41, 42}),
    )


async def test_who_may_read_an_access_report() -> None:
    def family(account: int) -> Principal:
        return Principal(
            f"account:{account}", PrincipalKind.FAMILY, institution_id=1, followed_resident_ids=frozenset({7})
        )

    def staff(role: StaffRole) -> Principal:
        return Principal("account:9", PrincipalKind.STAFF, institution_id=1, roles=frozenset({role}))

    consents = [_terms(GrantorKind.GUARDIAN, frozenset({41})), _terms(GrantorKind.RESIDENT, frozenset())]

    async def load(resident_id: int) -> list[ConsentTerms]:
        assert resident_id == 7
        return consents

    async def refusal(principal: Principal, **place: object) -> type[Exception] | None:
        try:
            await report.require_access_report(
                principal,
                Action.ACCESS_REPORT_VIEW,
                7,
                consents=load,
                **place,  # type: ignore[arg-type]
            )
        except (Forbidden, NotFound) as refused:
            return type(refused)
        return None

    assert await refusal(staff(StaffRole.COMPLIANCE_OFFICER)) is None
    assert await refusal(staff(StaffRole.INSTITUTION_ADMIN)) is None
    assert await refusal(staff(StaffRole.HEAD_NURSE)) is Forbidden
    assert await refusal(staff(StaffRole.CAREGIVER)) is Forbidden
    assert await refusal(staff(StaffRole.COMPLIANCE_OFFICER), institution=2) is NotFound
    assert await refusal(family(41)) is None  # the guardian who granted it
    assert await refusal(family(42)) is report.NotAGuardian  # named by it, but no guardian
    assert (
        await refusal(Principal("account:5", PrincipalKind.SUPERVISOR, region_ids=frozenset({1})))
        is Forbidden
    )
    not_following = Principal("account:41", PrincipalKind.FAMILY, institution_id=1)
    assert await refusal(not_following) is NotFound
    assert report.refusal_reason(report.NotAGuardian(report.NOT_A_GUARDIAN)) == "not_guardian"
    assert report.refusal_reason(Forbidden("x")) == "forbidden"

"""Consent records and the decision point on real PostgreSQL (compliance/consent.py): versions kept,
withdrawal as a new version, checks reported at once with nothing written, sealed free texts, and
`decide` reading the current consents in the unit of work (one query, none for staff)."""

from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest

from compliance import consent
from compliance.consent import (
    Authority,
    Category,
    ConsentStatus,
    Decision,
    DecisionReason,
    Grantee,
    GranteeKind,
    Grantor,
    GrantorKind,
    NewConsent,
    Purpose,
    RecordingMethod,
)
from compliance.policy import Action
from compliance.principals import Principal, PrincipalKind, StaffRole
from tenants.db import default_connection
from tenants.errors import Conflict, ConsentRequired, Forbidden, NotFound, ValidationFailed
from tenants.models import Institution
from tenants.registry import tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.api.test_consents_graphql import Home, new_home
from tests.api.test_resident_page_queries import counted_queries
from tests.conftest import World

T = TypeVar("T")
HASH = "ab" * 32


@pytest.fixture(scope="module")
async def home(world: World) -> Home:
    return await new_home("授权领域测试养老院")


async def within(home: Home, work: Callable[[], Awaitable[T]]) -> T:
    return await run_in_tenant(tenant_ref(await Institution.get(id=home.institution_id)), work)


def pk_of(global_id: str) -> int:
    from schema.ids import decode_id

    for type_name in ("FamilyMember", "Resident", "Consent"):
        try:
            return decode_id(type_name, global_id, 2)[1]
        except NotFound:
            continue
    raise AssertionError(global_id)


def to_client(home: Home, **changes: object) -> NewConsent:
    given = NewConsent(
        resident_id=home.resident_pk,
        grantor=Grantor(),
        grantee=Grantee(GranteeKind.INTEGRATOR, client_id=home.client_id),
        purposes=frozenset({Purpose.THIRD_PARTY_INTEGRATION}),
        categories=frozenset({Category.VITALS, Category.MEDICATIONS}),
        notice_version="v2",
        notice_sha256=HASH.upper(),
        method=RecordingMethod.VERBAL_WITNESSED,
        note="护士长与家属在场见证",
    )
    return replace(given, **changes)  # type: ignore[arg-type]


def integrator(home: Home) -> Principal:
    return Principal(
        f"client:{home.client_id}",
        PrincipalKind.INTEGRATOR,
        institution_id=home.institution_id,
        scopes=frozenset({"vitals:write"}),
        client_id=home.client_id,
    )


async def test_versions_are_kept_and_a_withdrawal_is_a_version(home: Home) -> None:
    async def work() -> tuple[list[consent.ConsentVersion], list[dict]]:
        first = await consent.record_consent(to_client(home), recorded_by="account:1")
        amended = await consent.record_consent(
            to_client(home, categories=frozenset({Category.VITALS})),
            recorded_by="account:2",
            amends=first.terms.consent_id,
        )
        assert amended.terms.consent_id == first.terms.consent_id and amended.terms.version == 2
        withdrawn = await consent.withdraw_consent(
            first.terms.consent_id, "  家属来电撤回  ", recorded_by="account:3"
        )
        assert withdrawn.terms.stored_status is ConsentStatus.WITHDRAWN and withdrawn.terms.version == 3
        assert withdrawn.withdrawal_reason == "家属来电撤回" and withdrawn.recorded_by == "account:3"
        with pytest.raises(Conflict):
            await consent.withdraw_consent(first.terms.consent_id, "again", recorded_by="account:3")
        with pytest.raises(Conflict):
            await consent.record_consent(to_client(home), recorded_by="x", amends=first.terms.consent_id)
        rows = await default_connection().execute_query_dict(
            "SELECT version, status, categories, note, notice_sha256 FROM consent WHERE consent_id = $1"
            " ORDER BY version",
            [first.terms.consent_id],
        )
        return await consent.consent_history(first.terms.consent_id), rows

    history, rows = await within(home, work)
    assert [v.terms.version for v in history] == [3, 2, 1]
    assert [v.terms.stored_status for v in history] == [
        ConsentStatus.WITHDRAWN,
        ConsentStatus.ACTIVE,
        ConsentStatus.ACTIVE,
    ]
    assert history[2].terms.categories == {Category.VITALS, Category.MEDICATIONS}
    assert history[0].note == history[2].note == "护士长与家属在场见证"
    assert history[0].notice_sha256 == HASH  # normalised to lower case
    # Plain what SQL decides on; the free texts sealed, each version under its own row.
    assert [row["status"] for row in rows] == ["active", "active", "withdrawn"]
    assert rows[0]["categories"] == ["medications", "vitals"]
    assert all("护士长".encode() not in bytes(row["note"]) for row in rows)
    assert len({bytes(row["note"]) for row in rows}) == 3
    assert bytes(rows[0]["notice_sha256"]).hex() == HASH


async def test_checks_report_every_problem_and_write_nothing(home: Home) -> None:
    now = datetime.now(UTC)
    bad = to_client(
        home,
        grantor=Grantor(GrantorKind.GUARDIAN, pk_of(home.stranger), Authority.SELF),
        grantee=Grantee(GranteeKind.FAMILY_MEMBER, family_member_id=pk_of(home.stranger), client_id="x" * 20),
        purposes=frozenset(),
        categories=frozenset(),
        period_start=now,
        period_end=now,
        notice_version="",
        notice_sha256="g" * 64,
        note="x" * 2001,
    )

    async def work() -> int:
        with pytest.raises(ValidationFailed) as failed:
            await consent.record_consent(bad, recorded_by="account:1")
        fields = sorted(problem.field or "" for problem in failed.value.problems)
        assert fields == sorted(
            [
                "grantor.authority",
                "grantor.familyMemberId",
                "grantee.clientId",
                "grantee.familyMemberId",
                "purposes",
                "categories",
                "periodEnd",
                "noticeVersion",
                "noticeSha256",
                "note",
            ]
        )
        resident_grants = to_client(
            home, grantor=Grantor(GrantorKind.RESIDENT, None, Authority.LEGAL_GUARDIAN)
        )
        with pytest.raises(ValidationFailed):
            await consent.record_consent(resident_grants, recorded_by="account:1")
        with pytest.raises(NotFound):
            await consent.withdraw_consent(10**9, "reason", recorded_by="account:1")
        rows = await default_connection().execute_query_dict(
            "SELECT count(*) AS n FROM consent WHERE note IS NOT NULL AND octet_length(note) > 2000"
        )
        return rows[0]["n"]

    assert await within(home, work) == 0


async def test_decide_reads_the_current_consents_in_the_unit_of_work(home: Home) -> None:
    client = integrator(home)
    nurse = Principal(
        "account:7",
        PrincipalKind.STAFF,
        institution_id=home.institution_id,
        roles=frozenset({StaffRole.NURSE}),
    )

    async def work() -> None:
        resident = home.resident_pk
        before = await consent.decide(client, Action.VITALS_RECORD, resident, Category.ASSESSMENTS)
        assert before == Decision(False, DecisionReason.NO_CONSENT)
        with pytest.raises(ConsentRequired) as refused:
            await consent.require_consent(client, Action.VITALS_RECORD, resident, Category.ASSESSMENTS)
        assert refused.value.code == "FORBIDDEN" and refused.value.reason == "CONSENT_REQUIRED"
        granted = await consent.record_consent(
            to_client(home, categories=frozenset({Category.ASSESSMENTS})), recorded_by="account:1"
        )
        with counted_queries() as counted:
            after = await consent.decide(client, Action.ASSESSMENT_VIEW, resident, Category.ASSESSMENTS)
        assert after == Decision(True, DecisionReason.CONSENT, granted.terms.consent_id)
        assert len(counted) == 1
        with counted_queries() as counted:
            staff = await consent.decide(nurse, Action.ASSESSMENT_VIEW, resident, Category.ASSESSMENTS)
        assert staff == Decision(True, DecisionReason.CARE_DELIVERY) and counted == []
        await consent.withdraw_consent(granted.terms.consent_id, "到期不续", recorded_by="account:1")
        withdrawn = await consent.decide(client, Action.ASSESSMENT_VIEW, resident, Category.ASSESSMENTS)
        assert withdrawn == Decision(False, DecisionReason.CONSENT_WITHDRAWN)
        supervisor = Principal("account:8", PrincipalKind.SUPERVISOR, region_ids=frozenset({1}))
        with pytest.raises(Forbidden) as denied:
            await consent.require_consent(supervisor, Action.ASSESSMENT_VIEW, resident, Category.ASSESSMENTS)
        assert not isinstance(denied.value, ConsentRequired)

    await within(home, work)


async def test_family_grantees_and_grantors_go_by_their_links(home: Home) -> None:
    async def work() -> None:
        son, daughter = pk_of(home.son), pk_of(home.daughter)
        granted = await consent.record_consent(
            to_client(
                home,
                grantor=Grantor(GrantorKind.GUARDIAN, daughter, Authority.POWER_OF_ATTORNEY),
                grantee=Grantee(GranteeKind.FAMILY_MEMBER, family_member_id=son),
                purposes=frozenset({Purpose.PHOTOS}),
                categories=frozenset({Category.PHOTOS}),
                period_start=datetime.now(UTC) - timedelta(minutes=1),
            ),
            recorded_by="account:1",
        )
        (terms,) = [
            t
            for t in await consent.current_terms(home.resident_pk)
            if t.consent_id == granted.terms.consent_id
        ]
        assert len(terms.grantee_accounts) == 1 and len(terms.grantor_accounts) == 1
        son_account, daughter_account = next(iter(terms.grantee_accounts)), next(iter(terms.grantor_accounts))
        assert son_account != daughter_account

        def family(account: int) -> Principal:
            return Principal(
                f"account:{account}",
                PrincipalKind.FAMILY,
                institution_id=home.institution_id,
                followed_resident_ids=frozenset({home.resident_pk}),
            )

        photo = await consent.decide(
            family(son_account), Action.RESIDENT_PHOTO_VIEW, home.resident_pk, Category.PHOTOS
        )
        assert photo.permit and photo.reason is DecisionReason.CONSENT
        assert not (
            await consent.decide(
                family(daughter_account), Action.RESIDENT_PHOTO_VIEW, home.resident_pk, Category.PHOTOS
            )
        ).permit
        # The grantee may not withdraw; the guardian may.
        with pytest.raises(NotFound):
            await consent.withdraw_consent(
                granted.terms.consent_id, "r", recorded_by="x", by=family(son_account)
            )
        withdrawn = await consent.withdraw_consent(
            granted.terms.consent_id,
            "r",
            recorded_by=f"account:{daughter_account}",
            by=family(daughter_account),
        )
        assert withdrawn.terms.stored_status is ConsentStatus.WITHDRAWN

    await within(home, work)


def test_every_resident_action_has_a_category() -> None:
    from compliance.policy import PERMISSIONS, Level

    resident_actions = {
        action
        for action, grant in PERMISSIONS.items()
        if grant.level is Level.RESIDENT
        # Consents, the audit trail, access reports and data-subject requests (export, erasure) span every
        # category.
        and not action.value.startswith(("consent.", "audit.", "access_report.", "data_subject."))
    }
    assert {a for a in resident_actions if consent.category_of(a) is None} == set()

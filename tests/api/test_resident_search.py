"""Encrypted resident identity through the API: search by name part, room, bed, care level, exact ID-card
number and phone; validation of ID-card numbers; a ciphertext copied elsewhere; an erased resident."""

import uuid
from dataclasses import dataclass
from datetime import date

import httpx
import pytest

from care.models import CareLevel, Gender, Relationship
from care.residents import (
    Admission,
    NewFamilyMember,
    Placement,
    add_family_member,
    admit_resident,
    get_resident,
    id_card_check_character,
)
from compliance.encryption import CiphertextRejected, destroy_data_key
from compliance.principals import Principal, PrincipalKind, StaffRole
from tenants.db import default_connection
from tenants.models import Institution
from tenants.registry import NewInstitution, provision_institution, tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.conftest import World, gql, token_for


def staff_token(institution_id: int) -> str:
    """A staff token of a subject of its own: each gets its own rate-limit bucket."""
    return token_for(
        Principal(
            subject=f"account:{uuid.uuid4().int % 10**9}",
            kind=PrincipalKind.STAFF,
            institution_id=institution_id,
            roles=frozenset({StaffRole.INSTITUTION_ADMIN}),
        )
    )


def id_card(area: str, birth: date, sequence: int) -> str:
    first17 = f"{area}{birth:%Y%m%d}{sequence:03d}"
    return first17 + id_card_check_character(first17)


# (name, gender, birth, care level, room, bed, ID-card number or None, phone or None)
PEOPLE = (
    ("王秀英", Gender.FEMALE, date(1938, 5, 20), CareLevel.FULL_CARE, "201", "1", ("330106", 20), None),
    ("王建国", Gender.MALE, date(1941, 2, 3), CareLevel.ASSISTED, "201", "2", None, "13900001111"),
    ("李秀兰", Gender.FEMALE, date(1936, 11, 30), CareLevel.SPECIAL_CARE, "202", "1", None, None),
    ("张德明", Gender.MALE, date(1944, 7, 7), CareLevel.ASSISTED, "203", "1", ("110105", 35), None),
)
DAUGHTER_PHONE = "13812345678"
PAGE = """query($filter: ResidentFilterInput) {
  residents(first: 10, filter: $filter) {
    totalCount edges { node { id name gender birthDate age idCardNumber phone room bed careLevel } }
  }
}"""


@dataclass
class Place:
    institution_id: int

    @property
    def token(self) -> str:
        return staff_token(self.institution_id)

    ids: dict[str, int]  # name -> resident id
    id_cards: dict[str, str]


async def _provision(name: str) -> Institution:
    return await provision_institution(NewInstitution(name=name, region_code="test-east"))


@pytest.fixture(scope="module")
async def place(world: World) -> Place:
    institution = await _provision("加密检索测试院")

    async def admit_all() -> tuple[dict[str, int], dict[str, str]]:
        ids, cards = {}, {}
        for k, (name, gender, birth, level, room, bed, card, phone) in enumerate(PEOPLE):
            number = None if card is None else id_card(card[0], birth, card[1])
            record = await admit_resident(
                Admission(
                    name=name,
                    gender=gender,
                    birth_date=birth,
                    care_level=level,
                    admission_date=date(2024, 3, 1 + k),
                    placement=Placement(building="A", room=room, bed=bed),
                    id_card_number=number,
                    phone=phone,
                )
            )
            ids[name] = record.id
            if number:
                cards[name] = number
        await add_family_member(
            ids["李秀兰"], NewFamilyMember("赵丽", Relationship.DAUGHTER, DAUGHTER_PHONE, True)
        )
        return ids, cards

    ids, cards = await run_in_tenant(tenant_ref(institution), admit_all)
    return Place(institution.id, ids, cards)


async def names(client: httpx.AsyncClient, place: Place, **filter: object) -> list[str]:
    body = await gql(client, PAGE, {"filter": filter}, token=place.token)
    assert "errors" not in body, body
    page = body["data"]["residents"]
    assert page["totalCount"] == len(page["edges"])
    return [edge["node"]["name"] for edge in page["edges"]]


async def test_identity_reads_back_decrypted(client: httpx.AsyncClient, place: Place) -> None:
    body = await gql(client, PAGE, {"filter": {"room": "201"}}, token=place.token)
    nodes = {n["name"]: n for n in (e["node"] for e in body["data"]["residents"]["edges"])}
    assert nodes["王秀英"]["idCardNumber"] == place.id_cards["王秀英"]
    assert nodes["王秀英"]["gender"] == "FEMALE" and nodes["王秀英"]["birthDate"] == "1938-05-20"
    assert nodes["王建国"]["phone"] == "13900001111" and nodes["王建国"]["idCardNumber"] is None


async def test_search_by_name_part_room_bed_and_care_level(client: httpx.AsyncClient, place: Place) -> None:
    assert await names(client, place, nameContains="秀") == ["王秀英", "李秀兰"]
    assert await names(client, place, nameContains=" 王 ") == ["王秀英", "王建国"]
    assert await names(client, place, nameContains="不存在") == []
    assert await names(client, place, nameContains="%") == []
    assert await names(client, place, room="201") == ["王秀英", "王建国"]
    assert await names(client, place, room="201", bed="2") == ["王建国"]
    assert await names(client, place, careLevel="ASSISTED") == ["王建国", "张德明"]
    assert await names(client, place, careLevel="ASSISTED", nameContains="王") == ["王建国"]


async def test_exact_search_by_id_card_and_phone(client: httpx.AsyncClient, place: Place) -> None:
    number = place.id_cards["王秀英"]
    assert await names(client, place, idCardNumber=number) == ["王秀英"]
    spaced = f"{number[:6]} {number[6:14]} {number[14:].lower()}"  # normalized before the lookup
    assert await names(client, place, idCardNumber=spaced) == ["王秀英"]
    other = id_card("330106", date(1938, 5, 20), 2)  # valid, nobody's
    assert await names(client, place, idCardNumber=other) == []
    assert await names(client, place, phone="13900001111") == ["王建国"]
    assert await names(client, place, phone="+86 139-0000-1111") == ["王建国"]
    # A family member's phone finds their resident.
    assert await names(client, place, phone=DAUGHTER_PHONE) == ["李秀兰"]
    assert await names(client, place, phone="13700000000") == []


@pytest.mark.parametrize(
    "number",
    ["33010619380520001", "3301061938052000Y", "330106193805200012", "330106193802300016"],
)
async def test_a_bad_id_card_number_is_bad_user_input(
    client: httpx.AsyncClient, place: Place, number: str
) -> None:
    if len(number) == 18 and number[-1].isdigit() and number != "330106193802300016":
        # A valid shape with a wrong check character.
        right = id_card_check_character(number[:17])
        number = number[:17] + ("0" if right != "0" else "1")
    body = await gql(client, PAGE, {"filter": {"idCardNumber": number}}, token=place.token)
    assert body["data"] is None or body["data"]["residents"] is None
    (error,) = body["errors"]
    assert error["extensions"]["code"] == "BAD_USER_INPUT"
    assert error["extensions"]["field"] == "idCardNumber"
    assert "身份证号" in error["message"]


ADMIT = """mutation($input: AdmitResidentInput!) {
  admitResident(input: $input) { resident { id name idCardNumber phone } userErrors { field code message } }
}"""
UPDATE = """mutation($input: UpdateResidentInput!) {
  updateResident(input: $input) { resident { id name idCardNumber phone } userErrors { field code } }
}"""


async def _counts(place: Place) -> tuple[int, int]:
    async def count() -> tuple[int, int]:
        from care.models import Resident

        connection = Resident._choose_db()
        residents = await connection.execute_query_dict("SELECT count(*) AS n FROM resident")
        keys = await connection.execute_query_dict("SELECT count(*) AS n FROM data_key")
        return residents[0]["n"], keys[0]["n"]

    institution = await Institution.get(id=place.institution_id)
    return await run_in_tenant(tenant_ref(institution), count)


async def test_admission_validates_identity_and_writes_nothing_when_refused(
    client: httpx.AsyncClient, place: Place
) -> None:
    before = await _counts(place)
    base = {
        "gender": "MALE",
        "birthDate": "1940-01-02",
        "careLevel": "ASSISTED",
        "admissionDate": "2025-01-02",
    }
    refused = [
        ({"name": "周强", "idCardNumber": "110105194001020011X"}, "idCardNumber"),  # 19 characters
        ({"name": "周强", "idCardNumber": id_card("110105", date(1941, 1, 2), 11)}, "idCardNumber"),  # birth
        ({"name": "周强", "phone": "12345"}, "phone"),
        # The bed is taken: the spent id's data key goes with the refused row.
        ({"name": "周强", "placement": {"building": "A", "room": "201", "bed": "1"}}, "bed"),
    ]
    for extra, field in refused:
        payload = (await gql(client, ADMIT, {"input": base | extra}, token=place.token))["data"][
            "admitResident"
        ]
        assert payload["resident"] is None and payload["userErrors"][0]["field"] == field, payload
    assert await _counts(place) == before

    number = id_card("110105", date(1940, 1, 2), 11)
    admitted = await gql(
        client,
        ADMIT,
        {"input": base | {"name": "周强", "idCardNumber": number, "phone": "021-64370000"}},
        token=place.token,
    )
    resident = admitted["data"]["admitResident"]["resident"]
    assert (resident["idCardNumber"], resident["phone"]) == (number, "021-64370000")
    assert await _counts(place) == (before[0] + 1, before[1] + 1)
    changed = await gql(client, UPDATE, {"input": {"id": resident["id"], "phone": ""}}, token=place.token)
    assert changed["data"]["updateResident"]["resident"]["phone"] is None
    mismatch = await gql(
        client, UPDATE, {"input": {"id": resident["id"], "birthDate": "1940-01-03"}}, token=place.token
    )
    assert mismatch["data"]["updateResident"]["userErrors"] == [
        {"field": "birthDate", "code": "BAD_USER_INPUT"}
    ]
    assert await names(client, place, idCardNumber=number) == ["周强"]


async def test_a_ciphertext_copied_elsewhere_is_an_error_never_other_data(
    client: httpx.AsyncClient, world: World
) -> None:
    """Copies of a sealed name onto another row, another column, and the same row of another tenant."""
    first, second = await _provision("密文复制测试院甲"), await _provision("密文复制测试院乙")

    async def admit_two() -> None:
        for k, name in enumerate(("甲一", "甲二")):
            await admit_resident(
                Admission(name, Gender.MALE, date(1940, 1, 1), CareLevel.ASSISTED, date(2024, 1, 1 + k))
            )

    await run_in_tenant(tenant_ref(first), admit_two)
    await run_in_tenant(tenant_ref(second), admit_two)
    connection = default_connection()
    a, b = f'"{first.schema_name}".resident', f'"{second.schema_name}".resident'
    await connection.execute_script(
        f"UPDATE {a} SET name_enc = (SELECT name_enc FROM {a} WHERE id = 1) WHERE id = 2;"  # another row
    )

    async def read(resident_id: int) -> object:
        return await get_resident(resident_id)

    with pytest.raises(CiphertextRejected):
        await run_in_tenant(tenant_ref(first), lambda: read(2))
    assert (await run_in_tenant(tenant_ref(first), lambda: read(1))).identity.name == "甲一"

    await connection.execute_script(
        f"UPDATE {b} SET name_enc = (SELECT name_enc FROM {a} WHERE id = 1) WHERE id = 1;"
    )
    with pytest.raises(CiphertextRejected):  # same row id and subject, another tenant
        await run_in_tenant(tenant_ref(second), lambda: read(1))
    await connection.execute_script(
        f"UPDATE {b} SET phone_enc = name_enc, phone_bidx = decode(repeat('00', 16), 'hex') WHERE id = 2;"
    )
    with pytest.raises(CiphertextRejected):  # another column of the same row
        await run_in_tenant(tenant_ref(second), lambda: read(2))

    # Through the API: an internal error, no name of anyone.
    body = await gql(
        client, "{ residents(first: 10) { edges { node { name } } } }", token=staff_token(first.id)
    )
    assert body["data"] is None and body["errors"][0]["extensions"]["code"] == "INTERNAL"
    assert "甲" not in str(body)


async def test_an_erased_resident_reads_as_gone_and_others_are_unaffected(
    client: httpx.AsyncClient, world: World
) -> None:
    institution = await _provision("删除测试院")
    token = staff_token(institution.id)

    async def admit_three() -> None:
        for k, name in enumerate(("留一", "删二", "留三")):
            record = await admit_resident(
                Admission(
                    name,
                    Gender.FEMALE,
                    date(1940, 1, 1),
                    CareLevel.ASSISTED,
                    date(2024, 1, 1 + k),
                    phone="13900002222" if k == 1 else None,
                )
            )
            await add_family_member(
                record.id, NewFamilyMember(f"{name}的女儿", Relationship.DAUGHTER, "13811112222")
            )
        await destroy_data_key(2)

    await run_in_tenant(tenant_ref(institution), admit_three)
    body = await gql(
        client,
        """{ residents(first: 10) { totalCount edges { node {
               name gender birthDate age phone careLevel room
               familyMembers { edges { node { name phone relationship } } } } } } }""",
        token=token,
    )
    nodes = [e["node"] for e in body["data"]["residents"]["edges"]]
    assert body["data"]["residents"]["totalCount"] == 3
    assert [n["name"] for n in nodes] == ["留一", None, "留三"]
    assert nodes[0]["familyMembers"]["edges"][0]["node"]["name"] == "留一的女儿"
    erased = nodes[1]
    assert erased["careLevel"] == "ASSISTED" and erased["gender"] is None and erased["phone"] is None
    assert erased["familyMembers"]["edges"][0]["node"] == {
        "name": None,
        "phone": None,
        "relationship": "DAUGHTER",
    }
    gone = {(error["path"][-1], error["extensions"]["code"]) for error in body["errors"]}
    assert gone == {(field, "GONE") for field in ("name", "gender", "birthDate", "age", "phone")}
    assert all(error["path"][2] == 1 for error in body["errors"])  # the second resident's only
    assert all("个人信息已被删除" in error["message"] for error in body["errors"])

    # Not findable by name nor by phone any more; the rest of the record is still there.
    found = await gql(client, '{ residents(filter: {nameContains: "删"}) { totalCount } }', token=token)
    assert found["data"]["residents"]["totalCount"] == 0
    resident_id = (await gql(client, "{ residents(first: 2) { edges { node { id } } } }", token=token))[
        "data"
    ]["residents"]["edges"][1]["node"]["id"]
    changed = await gql(client, UPDATE, {"input": {"id": resident_id, "name": "复活"}}, token=token)
    assert changed["data"] is None  # the payload is not nullable
    assert changed["errors"][0]["extensions"]["code"] == "GONE"
    care = await gql(
        client,
        """mutation($id: ID!) { updateResident(input: {id: $id, careLevel: SPECIAL_CARE}) {
             resident { careLevel } userErrors { field } } }""",
        {"id": resident_id},
        token=token,
    )
    assert care["data"]["updateResident"] == {"resident": {"careLevel": "SPECIAL_CARE"}, "userErrors": []}
    discharged = await gql(
        client,
        """mutation($id: ID!) {
             dischargeResident(input: {id: $id, dischargedOn: "2025-01-02", reason: DECEASED})
             { resident { status name } userErrors { field } } }""",
        {"id": resident_id},
        token=token,
    )
    assert discharged["data"]["dischargeResident"]["resident"]["status"] == "DISCHARGED"
    assert [e["extensions"]["code"] for e in discharged["errors"]] == ["GONE"]  # its name only
    statuses = await gql(client, "{ residents(first: 3) { edges { node { status } } } }", token=token)
    assert [e["node"]["status"] for e in statuses["data"]["residents"]["edges"]] == [
        "IN_RESIDENCE",
        "DISCHARGED",
        "IN_RESIDENCE",
    ]
    family = await gql(
        client,
        """mutation($id: ID!) { addFamilyMember(input: {residentId: $id, name: "新人", relationship: SON,
             phone: "13800001111"}) { familyMember { id } userErrors { field } } }""",
        {"id": resident_id},
        token=token,
    )
    assert family["errors"][0]["extensions"]["code"] == "GONE"

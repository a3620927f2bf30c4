"""The resident slice end to end: admit, change, add family, discharge, list with filters and cursors."""

import httpx
import pytest

from tests.conftest import World, gql, operator_token

RESIDENT_FIELDS = (
    "id name gender birthDate age building room bed careLevel admissionDate status"
    " dischargedOn dischargeReason"
)
ADMIT = f"""mutation($input: AdmitResidentInput!) {{
  admitResident(input: $input) {{ resident {{ {RESIDENT_FIELDS} }} userErrors {{ field message code }} }}
}}"""
UPDATE = f"""mutation($input: UpdateResidentInput!) {{
  updateResident(input: $input) {{ resident {{ {RESIDENT_FIELDS} }} userErrors {{ field message code }} }}
}}"""
DISCHARGE = f"""mutation($input: DischargeResidentInput!) {{
  dischargeResident(input: $input) {{ resident {{ {RESIDENT_FIELDS} }} userErrors {{ field message code }} }}
}}"""
ADD_FAMILY = """mutation($input: AddFamilyMemberInput!) {
  addFamilyMember(input: $input) {
    familyMember { id name relationship phone isEmergencyContact }
    resident { familyMembers { totalCount edges { node { name } } } }
    userErrors { field message code }
  }
}"""


def admission(**overrides: object) -> dict:
    return {
        "name": "王秀英",
        "gender": "FEMALE",
        "birthDate": "1938-05-20",
        "careLevel": "FULL_CARE",
        "admissionDate": "2025-03-01",
        "placement": {"building": "B", "room": "201", "bed": "2"},
    } | overrides


async def test_admit_change_family_discharge(client: httpx.AsyncClient, world: World) -> None:
    token = world.token(world.institution_ids[5])
    admitted = (await gql(client, ADMIT, {"input": admission()}, token=token))["data"]["admitResident"]
    assert admitted["userErrors"] == []
    resident = admitted["resident"]
    assert (
        resident["status"] == "IN_RESIDENCE"
        and resident["careLevel"] == "FULL_CARE"
        and resident["age"] >= 86
    )

    changed = await gql(
        client, UPDATE, {"input": {"id": resident["id"], "careLevel": "SPECIAL_CARE"}}, token=token
    )
    assert changed["data"]["updateResident"]["resident"]["careLevel"] == "SPECIAL_CARE"
    assert changed["data"]["updateResident"]["resident"]["name"] == "王秀英"

    family = await gql(
        client,
        ADD_FAMILY,
        {
            "input": {
                "residentId": resident["id"],
                "name": "李娜",
                "relationship": "DAUGHTER",
                "phone": "13912345678",
                "isEmergencyContact": True,
            }
        },
        token=token,
    )
    payload = family["data"]["addFamilyMember"]
    assert payload["userErrors"] == []
    assert payload["familyMember"]["relationship"] == "DAUGHTER"
    assert payload["resident"]["familyMembers"]["totalCount"] == 1

    discharged = await gql(
        client,
        DISCHARGE,
        {"input": {"id": resident["id"], "dischargedOn": "2025-06-30", "reason": "RETURNED_HOME"}},
        token=token,
    )
    result = discharged["data"]["dischargeResident"]["resident"]
    assert result["status"] == "DISCHARGED" and result["dischargeReason"] == "RETURNED_HOME"

    again = await gql(
        client,
        DISCHARGE,
        {"input": {"id": resident["id"], "dischargedOn": "2025-07-01", "reason": "OTHER"}},
        token=token,
    )
    assert again["data"]["dischargeResident"]["userErrors"][0]["code"] == "CONFLICT"

    # The bed is free again after the discharge.
    next_one = await gql(client, ADMIT, {"input": admission(name="赵建国", gender="MALE")}, token=token)
    assert next_one["data"]["admitResident"]["userErrors"] == []


async def test_validation_problems_are_user_errors(client: httpx.AsyncClient, world: World) -> None:
    token = world.token(world.institution_ids[6])
    body = await gql(
        client,
        ADMIT,
        {"input": admission(name="  ", birthDate="2090-01-01", placement={"bed": "1"})},
        token=token,
    )
    payload = body["data"]["admitResident"]
    assert payload["resident"] is None
    fields = {error["field"] for error in payload["userErrors"]}
    assert {"name", "birthDate", "bed"} <= fields
    assert all(error["code"] == "BAD_USER_INPUT" for error in payload["userErrors"])
    assert any("出生日期" in error["message"] for error in payload["userErrors"])


async def test_occupied_bed_is_a_conflict_and_the_request_goes_on(
    client: httpx.AsyncClient, world: World
) -> None:
    token = world.token(world.institution_ids[7])
    placement = {"building": "C", "room": "301", "bed": "1"}
    first = await gql(client, ADMIT, {"input": admission(placement=placement)}, token=token)
    assert first["data"]["admitResident"]["userErrors"] == []
    both = await gql(
        client,
        """mutation($a: AdmitResidentInput!, $b: AdmitResidentInput!) {
             clash: admitResident(input: $a) { resident { id } userErrors { field code } }
             fine: admitResident(input: $b) { resident { id } userErrors { field code } }
           }""",
        {"a": admission(placement=placement), "b": admission(placement={**placement, "bed": "2"})},
        token=token,
    )
    assert both["data"]["clash"]["userErrors"] == [{"field": "bed", "code": "CONFLICT"}]
    assert both["data"]["fine"]["resident"] is not None  # the savepoint kept the transaction usable


async def test_bad_phone_is_refused(client: httpx.AsyncClient, world: World) -> None:
    token = world.token(world.institution_ids[8])
    resident = (await gql(client, "{ residents(first: 1) { edges { node { id } } } }", token=token))["data"]
    resident_id = resident["residents"]["edges"][0]["node"]["id"]
    body = await gql(
        client,
        ADD_FAMILY,
        {"input": {"residentId": resident_id, "name": "李娜", "relationship": "DAUGHTER", "phone": "12345"}},
        token=token,
    )
    assert body["data"]["addFamilyMember"]["userErrors"][0]["field"] == "phone"


async def test_filters_and_cursor_pagination(client: httpx.AsyncClient, world: World) -> None:
    institution = world.institution_ids[9]
    token = world.token(institution)
    query = """query($after: String, $filter: ResidentFilterInput) {
      residents(first: 4, after: $after, filter: $filter) {
        totalCount edges { cursor node { name } } pageInfo { hasNextPage endCursor }
      }
    }"""
    seen: list[str] = []
    after = None
    while True:
        page = (await gql(client, query, {"after": after}, token=token))["data"]["residents"]
        seen += [edge["node"]["name"] for edge in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert seen == world.resident_names[institution]
    assert page["totalCount"] == len(seen)
    filtered = await gql(client, query, {"filter": {"nameContains": "-3"}}, token=token)
    assert [e["node"]["name"] for e in filtered["data"]["residents"]["edges"]] == [
        world.resident_names[institution][3]
    ]
    for wildcard in ("%", "_", "\\"):  # taken literally: no name holds them
        literal = await gql(client, query, {"filter": {"nameContains": wildcard}}, token=token)
        assert literal["data"]["residents"]["edges"] == [], wildcard
    by_level = """query($filter: ResidentFilterInput) {
      residents(first: 100, filter: $filter) { edges { node { careLevel status } } }
    }"""
    everyone = await gql(client, by_level, {}, token=token)
    levels = [e["node"]["careLevel"] for e in everyone["data"]["residents"]["edges"]]
    for level in set(levels):
        chosen = await gql(
            client, by_level, {"filter": {"careLevel": level, "status": "IN_RESIDENCE"}}, token=token
        )
        nodes = [e["node"] for e in chosen["data"]["residents"]["edges"]]
        assert nodes and {(n["careLevel"], n["status"]) for n in nodes} == {(level, "IN_RESIDENCE")}


async def test_institutions_visible_to_staff_and_operators(client: httpx.AsyncClient, world: World) -> None:
    query = (
        "{ institutions(first: 100) { totalCount"
        " edges { node { id name region { code } chain { name } } } } }"
    )
    staff = (await gql(client, query, token=world.token(world.institution_ids[0])))["data"]["institutions"]
    assert staff["totalCount"] == 1
    operator = (await gql(client, query, token=operator_token()))["data"]["institutions"]
    assert operator["totalCount"] >= len(world.institution_ids)


async def test_operator_provisions_an_institution(client: httpx.AsyncClient, world: World) -> None:
    mutation = """mutation($input: ProvisionInstitutionInput!) {
      provisionInstitution(input: $input) { institution { id name timeZone } userErrors { field code } }
    }"""
    body = await gql(
        client,
        mutation,
        {"input": {"name": "新开养老院", "regionCode": "test-east", "bedCapacity": 120}},
        token=operator_token(),
    )
    created = body["data"]["provisionInstitution"]
    assert created["userErrors"] == [] and created["institution"]["timeZone"] == "Asia/Shanghai"
    invalid = await gql(
        client,
        mutation,
        {"input": {"name": "", "regionCode": "nowhere", "timeZone": "Mars/Base", "currency": "rmb"}},
        token=operator_token(),
    )
    fields = {error["field"] for error in invalid["data"]["provisionInstitution"]["userErrors"]}
    assert fields == {"name", "regionCode", "timeZone", "currency"}
    refused = await gql(
        client,
        mutation,
        {"input": {"name": "x", "regionCode": "test-east"}},
        token=world.token(world.institution_ids[0]),
    )
    assert refused["errors"][0]["extensions"]["code"] == "FORBIDDEN"


async def test_healthz_and_metrics(client: httpx.AsyncClient) -> None:
    health = await client.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok", "database": True, "redis": True}
    metrics = (await client.get("/metrics")).text
    for name in (
        "yiyang_http_requests_total",
        "yiyang_http_request_duration_seconds_bucket",
        "yiyang_graphql_errors_total",
        "yiyang_db_pool_in_use",
    ):
        assert name in metrics


async def test_graphiql_page_in_development(settings) -> None:
    from dataclasses import replace

    from api.app import create_app

    development = create_app(replace(settings, environment="development"))
    production = create_app(replace(settings, environment="production"))
    for application, expected in ((development, 200), (production, 401)):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://yiyang.test") as http:
            page = await http.get("/graphql", headers={"Accept": "text/html"})
        assert page.status_code == expected
        if expected == 200:
            assert "graphiql" in page.text.lower()


async def test_an_unexpected_failure_rolls_back_the_whole_operation(
    client: httpx.AsyncClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import care.residents

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk on fire")

    token = world.token(world.institution_ids[10])
    first = (await gql(client, "{ residents(first: 1) { edges { node { id } } } }", token=token))["data"]
    resident_id = first["residents"]["edges"][0]["node"]["id"]
    monkeypatch.setattr(care.residents, "update_resident", broken)
    body = await gql(
        client,
        """mutation($input: AdmitResidentInput!, $id: ID!) {
             admitResident(input: $input) { resident { id } }
             updateResident(input: {id: $id, name: "x"}) { resident { id } }
           }""",
        {"input": admission(name="回滚测试", placement=None), "id": resident_id},
        token=token,
    )
    assert body["data"] is None
    assert [e["extensions"]["code"] for e in body["errors"]] == ["INTERNAL"]
    found = await gql(client, '{ residents(filter: {nameContains: "回滚测试"}) { totalCount } }', token=token)
    assert found["data"]["residents"]["totalCount"] == 0


async def test_placement_has_a_floor_to_file_and_filter_by(client: httpx.AsyncClient, world: World) -> None:
    from compliance.principals import StaffRole
    from tenants.registry import NewInstitution, provision_institution
    from tests.conftest import staff_token

    assert world.institution_ids  # its regions exist
    home = await provision_institution(NewInstitution(name="楼层测试养老院", region_code="test-east"))
    token = staff_token(home.id, StaffRole.INSTITUTION_ADMIN)
    on_three = {"building": "A", "floor": "3层", "room": "305", "bed": "1"}
    admitted = await gql(client, ADMIT, {"input": admission(placement=on_three)}, token=token)
    assert admitted["data"]["admitResident"]["userErrors"] == []
    other = await gql(
        client,
        ADMIT,
        {"input": admission(name="李桂兰", placement={**on_three, "floor": "1层", "room": "101"})},
        token=token,
    )
    resident = admitted["data"]["admitResident"]["resident"]["id"]
    assert other["data"]["admitResident"]["userErrors"] == []

    by_floor = (
        "query($floor: String) { residents(filter: {floor: $floor}) { edges { node { name floor } } } }"
    )
    found = await gql(client, by_floor, {"floor": "3层"}, token=token)
    assert [e["node"] for e in found["data"]["residents"]["edges"]] == [{"name": "王秀英", "floor": "3层"}]

    moved = await gql(
        client,
        "mutation($input: UpdateResidentInput!) { updateResident(input: $input) {"
        " resident { floor room } userErrors { field } } }",
        {"input": {"id": resident, "placement": {**on_three, "floor": "2层", "room": "205"}}},
        token=token,
    )
    assert moved["data"]["updateResident"] == {"resident": {"floor": "2层", "room": "205"}, "userErrors": []}
    too_long = await gql(
        client,
        ADMIT,
        {"input": admission(placement={**on_three, "floor": "楼" * 21, "bed": "2"})},
        token=token,
    )
    assert too_long["data"]["admitResident"]["userErrors"][0]["field"] == "floor"

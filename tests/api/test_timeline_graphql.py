"""The service timeline through GraphQL: every kind round-trips, filters and pages, bad input as
userErrors that write nothing, roles, other institutions, erased residents, the dashboard loader."""

import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

import httpx

from care.models import CareLevel, Gender
from care.residents import Admission, Placement, admit_resident
from compliance.encryption import destroy_data_key
from compliance.policy import Action, may
from compliance.principals import Principal, PrincipalKind, StaffRole
from schema.ids import encode_id
from tenants.models import Institution
from tenants.registry import tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.conftest import World, gql, token_for

T = TypeVar("T")
MINE, OTHER = 12, 13  # indexes into world.institution_ids: only the timeline tests write there

RECORD_FIELDS = """
  __typename id kind occurredAt recordedBy recordedAt
  ... on CareRecord { item durationMinutes note }
  ... on MealRecord { meal portion fluidIntakeMl note }
  ... on ActivityRecord { name participation endedAt note }
  ... on VisitorRecord { visitorName relationship leftAt note }
  ... on OutingRecord { destination companion expectedBack returnedAt note }
  ... on ObservationRecord {
    diet { appetite } sleep { hours quality nightWakings }
    excretion { bowelMovements urination stoolNote } mood note
  }"""
RECORD = f"""mutation($input: RecordServiceInput!) {{
  recordService(input: $input) {{ serviceRecord {{ {RECORD_FIELDS} }} userErrors {{ field message code }} }}
}}"""
TIMELINE = f"""query($id: ID!, $first: Int, $after: String, $kinds: [ServiceRecordKind!], $from: DateTime,
               $to: DateTime) {{
  resident(id: $id) {{
    timeline(first: $first, after: $after, kinds: $kinds, from: $from, to: $to) {{
      totalCount pageInfo {{ hasNextPage hasPreviousPage endCursor }}
      edges {{ cursor node {{ {RECORD_FIELDS} }} }}
    }}
  }}
}}"""
COUNT = """query($id: ID!) { resident(id: $id) { timeline { totalCount } } }"""
DASHBOARD = """query($first: Int) {
  residents(first: $first, filter: {building: "时间线楼"}) {
    edges { node { id latestServices(first: 2) { kind occurredAt } } }
  }
}"""

_subjects = itertools.count(880_000)


def staff(world: World, index: int, *roles: StaffRole) -> str:
    """A staff token of a subject of its own: each test spends its own rate-limit budget."""
    return token_for(
        Principal(
            f"account:{next(_subjects)}",
            PrincipalKind.STAFF,
            institution_id=world.institution_ids[index],
            roles=frozenset(roles),
        )
    )


async def in_tenant(institution_id: int, work: Callable[[], Awaitable[T]]) -> T:
    return await run_in_tenant(tenant_ref(await Institution.get(id=institution_id)), work)


async def admitted(
    world: World, index: int, name: str, placement: Placement = Placement()
) -> tuple[int, str]:
    async def admit() -> int:
        record = await admit_resident(
            Admission(name, Gender.MALE, date(1938, 8, 8), CareLevel.ASSISTED, date(2026, 2, 3), placement)
        )
        return record.id

    pk = await in_tenant(world.institution_ids[index], admit)
    return pk, encode_id("Resident", world.institution_ids[index], pk)


def ago(hours: float) -> str:
    return (datetime.now(UTC) - timedelta(hours=hours)).isoformat()


async def record(client: httpx.AsyncClient, token: str, resident: str, **input: Any) -> dict:
    body = await gql(client, RECORD, {"input": {"residentId": resident, **input}}, token=token)
    assert "errors" not in body, body
    return body["data"]["recordService"]


async def total(client: httpx.AsyncClient, token: str, resident: str) -> int:
    body = await gql(client, COUNT, {"id": resident}, token=token)
    return body["data"]["resident"]["timeline"]["totalCount"]


def codes(body: dict) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


async def test_every_kind_round_trips(client: httpx.AsyncClient, world: World) -> None:
    _, resident = await admitted(world, MINE, "时间线接口甲")
    nurse = staff(world, MINE, StaffRole.NURSE)
    butler = staff(world, MINE, StaffRole.BUTLER)
    sent: list[tuple[str, str, float, dict]] = [
        (nurse, "care", 9, {"item": "WOUND_CARE", "durationMinutes": 20, "note": " 足跟压疮换药 "}),
        (nurse, "meal", 8, {"meal": "LUNCH", "portion": "MOST", "fluidIntakeMl": 300, "note": "喜欢红烧鱼"}),
        (butler, "activity", 7, {"name": "书法班", "participation": "ACTIVE", "endedAt": ago(6)}),
        (butler, "visitor", 6, {"visitorName": "王丽华", "relationship": "女儿", "leftAt": ago(5)}),
        (butler, "outing", 5, {"destination": "社区医院", "companion": "护理员", "expectedBack": ago(-3)}),
        (
            nurse,
            "observation",
            4,
            {
                "diet": {"appetite": "POOR"},
                "sleep": {"hours": 5.5, "quality": "FAIR", "nightWakings": 2},
                "excretion": {"bowelMovements": 1, "urination": "CATHETER", "stoolNote": "偏干"},
                "mood": "CONFUSED",
                "note": "傍晚有些糊涂",
            },
        ),
    ]
    written = []
    for token, kind, hours, details in sent:
        payload = await record(client, token, resident, occurredAt=ago(hours), details={kind: details})
        assert payload["userErrors"] == [], payload
        assert payload["serviceRecord"]["kind"] == kind.upper()
        written.append(payload["serviceRecord"])
    assert written[0]["note"] == "足跟压疮换药"  # trimmed
    assert written[5]["sleep"] == {"hours": 5.5, "quality": "FAIR", "nightWakings": 2}
    assert written[4]["returnedAt"] is None and written[3]["recordedBy"].startswith("account:")

    body = await gql(client, TIMELINE, {"id": resident}, token=staff(world, MINE, StaffRole.CAREGIVER))
    timeline = body["data"]["resident"]["timeline"]
    assert timeline["totalCount"] == 6
    assert [edge["node"] for edge in timeline["edges"]] == written[::-1]
    assert [node["__typename"] for node in written] == [
        "CareRecord",
        "MealRecord",
        "ActivityRecord",
        "VisitorRecord",
        "OutingRecord",
        "ObservationRecord",
    ]


async def test_filters_by_kind_and_time_and_pages(client: httpx.AsyncClient, world: World) -> None:
    _, resident = await admitted(world, MINE, "时间线接口乙")
    caregiver = staff(world, MINE, StaffRole.CAREGIVER)
    for hours in range(10):
        details = (
            {"meal": {"meal": "SNACK", "portion": "ALL"}}
            if hours % 2
            else {"care": {"item": "REPOSITIONING", "durationMinutes": 5}}
        )
        payload = await record(client, caregiver, resident, occurredAt=ago(hours + 1), details=details)
        assert payload["userErrors"] == []

    async def timeline(**variables: Any) -> dict:
        body = await gql(client, TIMELINE, {"id": resident, **variables}, token=caregiver)
        assert "errors" not in body, body
        return body["data"]["resident"]["timeline"]

    meals = await timeline(kinds=["MEAL"])
    assert meals["totalCount"] == 5 and {e["node"]["kind"] for e in meals["edges"]} == {"MEAL"}
    both = await timeline(kinds=["MEAL", "CARE"])
    assert both["totalCount"] == 10
    assert (await timeline(kinds=["VISITOR"]))["totalCount"] == 0
    window = await timeline(**{"from": ago(5.5), "to": ago(2.5)})  # records 5, 4 and 3 hours ago
    assert window["totalCount"] == 3 and len(window["edges"]) == 3

    seen: list[str] = []
    after = None
    while True:
        page = await timeline(first=3, after=after)
        seen.extend(edge["node"]["id"] for edge in page["edges"])
        assert page["pageInfo"]["hasPreviousPage"] is (after is not None)
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    everything = await timeline(first=20)
    assert seen == [edge["node"]["id"] for edge in everything["edges"]] and len(set(seen)) == 10
    stamps = [edge["node"]["occurredAt"] for edge in everything["edges"]]
    assert stamps == sorted(stamps, reverse=True)

    broken = await gql(client, TIMELINE, {"id": resident, "after": "bm90LWEtY3Vyc29y"}, token=caregiver)
    assert codes(broken) == ["BAD_USER_INPUT"]
    backwards = await gql(client, TIMELINE, {"id": resident, "from": ago(1), "to": ago(2)}, token=caregiver)
    assert codes(backwards) == ["BAD_USER_INPUT"]


async def test_bad_input_gives_every_user_error_and_writes_nothing(
    client: httpx.AsyncClient, world: World
) -> None:
    _, resident = await admitted(world, MINE, "时间线接口丙")
    nurse = staff(world, MINE, StaffRole.NURSE)
    soon = (datetime.now(UTC) + timedelta(minutes=30)).isoformat()
    meal = await record(
        client,
        nurse,
        resident,
        occurredAt=soon,
        details={"meal": {"meal": "DINNER", "portion": "NONE", "fluidIntakeMl": 5001, "note": "长" * 501}},
    )
    assert meal["serviceRecord"] is None
    assert {(e["field"], e["code"]) for e in meal["userErrors"]} == {
        ("occurredAt", "BAD_USER_INPUT"),
        ("details.meal.fluidIntakeMl", "BAD_USER_INPUT"),
        ("details.meal.note", "BAD_USER_INPUT"),
    }
    assert any("毫升" in e["message"] for e in meal["userErrors"])  # translated
    outing = await record(
        client,
        nurse,
        resident,
        occurredAt="2025-01-01T09:00:00+08:00",  # before the admission
        details={"outing": {"destination": " ", "returnedAt": "2024-12-31T09:00:00+08:00"}},
    )
    assert {e["field"] for e in outing["userErrors"]} == {
        "occurredAt",
        "details.outing.destination",
        "details.outing.returnedAt",
    }
    observation = await record(
        client,
        nurse,
        resident,
        details={"observation": {"sleep": {"hours": 25, "nightWakings": -1}}},
    )
    assert {e["field"] for e in observation["userErrors"]} == {
        "details.observation.sleep.hours",
        "details.observation.sleep.nightWakings",
    }
    empty = await record(client, nurse, resident, details={"observation": {}})
    assert [e["field"] for e in empty["userErrors"]] == ["details.observation"]
    activity = await record(
        client,
        nurse,
        resident,
        occurredAt=ago(1),
        details={"activity": {"name": "合唱", "participation": "ACTIVE", "endedAt": ago(2)}},
    )
    assert [e["field"] for e in activity["userErrors"]] == ["details.activity.endedAt"]
    # oneOf: two kinds at once, or none, are refused by GraphQL before anything runs
    two = await gql(
        client,
        RECORD,
        {
            "input": {
                "residentId": resident,
                "details": {"care": {"item": "BATHING"}, "meal": {"meal": "LUNCH", "portion": "ALL"}},
            }
        },
        token=nurse,
    )
    assert two.get("data") is None and two["errors"]
    none = await gql(client, RECORD, {"input": {"residentId": resident, "details": {}}}, token=nurse)
    assert none.get("data") is None and none["errors"]
    assert await total(client, nurse, resident) == 0


async def test_roles_decide_who_reads_and_who_records_which_kind(
    client: httpx.AsyncClient, world: World
) -> None:
    pk, resident = await admitted(world, MINE, "时间线接口丁")
    butler = staff(world, MINE, StaffRole.BUTLER)
    visit = {"visitor": {"visitorName": "赵志强", "relationship": "老同事"}}
    assert (await record(client, butler, resident, details=visit))["userErrors"] == []
    meal = {"meal": {"meal": "BREAKFAST", "portion": "ALL"}}
    refused = await gql(client, RECORD, {"input": {"residentId": resident, "details": meal}}, token=butler)
    assert codes(refused) == ["FORBIDDEN"]
    finance = staff(world, MINE, StaffRole.FINANCE)
    assert codes(await gql(client, TIMELINE, {"id": resident}, token=finance)) == ["FORBIDDEN"]
    written = await gql(client, RECORD, {"input": {"residentId": resident, "details": visit}}, token=finance)
    assert codes(written) == ["FORBIDDEN"]
    for role in (StaffRole.INSTITUTION_ADMIN, StaffRole.HEAD_NURSE, StaffRole.CAREGIVER, StaffRole.BUTLER):
        assert await total(client, staff(world, MINE, role), resident) == 1
    admin_writes = await gql(
        client,
        RECORD,
        {"input": {"residentId": resident, "details": meal}},
        token=staff(world, MINE, StaffRole.INSTITUTION_ADMIN),
    )
    assert codes(admin_writes) == ["FORBIDDEN"]
    family = Principal(
        "account:880999",
        PrincipalKind.FAMILY,
        institution_id=world.institution_ids[MINE],
        followed_resident_ids=frozenset({pk}),
    )
    assert not may(
        family, Action.SERVICE_RECORD_VIEW, institution=world.institution_ids[MINE], resident_id=pk
    )
    assert await total(client, butler, resident) == 1


async def test_another_institutions_resident_is_not_found(client: httpx.AsyncClient, world: World) -> None:
    _, theirs = await admitted(world, OTHER, "时间线接口戊")
    nurse_here = staff(world, MINE, StaffRole.NURSE)
    read = await gql(client, TIMELINE, {"id": theirs}, token=nurse_here)
    assert codes(read) == ["NOT_FOUND"]
    written = await gql(
        client,
        RECORD,
        {"input": {"residentId": theirs, "details": {"care": {"item": "BATHING"}}}},
        token=nurse_here,
    )
    assert codes(written) == ["NOT_FOUND"]
    assert await total(client, staff(world, OTHER, StaffRole.NURSE), theirs) == 0


async def test_an_erased_resident_is_gone_and_the_dashboard_shows_the_others(
    client: httpx.AsyncClient, world: World
) -> None:
    nurse = staff(world, OTHER, StaffRole.NURSE)
    kept_pk, kept = await admitted(
        world, OTHER, "时间线接口己", Placement(building="时间线楼", room="101", bed="1")
    )
    erased_pk, erased = await admitted(
        world, OTHER, "时间线接口庚", Placement(building="时间线楼", room="102", bed="1")
    )
    for resident in (kept, erased):
        for hours in (3, 2, 1):
            details = {"observation": {"mood": "CALM", "diet": {"appetite": "GOOD"}}}
            assert (await record(client, nurse, resident, occurredAt=ago(hours), details=details))[
                "userErrors"
            ] == []

    async def erase() -> None:
        await destroy_data_key(erased_pk)

    await in_tenant(world.institution_ids[OTHER], erase)
    assert codes(await gql(client, TIMELINE, {"id": erased}, token=nurse)) == ["GONE"]
    again = await gql(
        client,
        RECORD,
        {"input": {"residentId": erased, "details": {"care": {"item": "BATHING"}}}},
        token=nurse,
    )
    assert codes(again) == ["GONE"]

    body = await gql(client, DASHBOARD, {"first": 100}, token=nurse)
    nodes = {edge["node"]["id"]: edge["node"] for edge in body["data"]["residents"]["edges"]}
    assert [e["path"][-1] for e in body["errors"] if e["extensions"]["code"] == "GONE"].count(
        "latestServices"
    ) == 1
    assert nodes[erased]["latestServices"] is None
    latest = nodes[kept]["latestServices"]
    assert [r["kind"] for r in latest] == ["OBSERVATION", "OBSERVATION"]
    assert latest[0]["occurredAt"] > latest[1]["occurredAt"]
    assert kept_pk != erased_pk
    too_many = await gql(client, DASHBOARD.replace("first: 2)", "first: 51)"), {"first": 2}, token=nurse)
    assert "BAD_USER_INPUT" in codes(too_many)


REMOVE = """mutation($id: ID!) {
  removeServiceRecord(input: {id: $id}) { removedId userErrors { field code } }
}"""


async def test_the_author_removes_a_mistaken_record_and_nobody_else_does(
    client: httpx.AsyncClient, world: World
) -> None:
    _, resident = await admitted(world, MINE, "时间线接口辛")
    author = staff(world, MINE, StaffRole.CAREGIVER)
    details = {"care": {"item": "TOILETING", "durationMinutes": 10}}
    first = (await record(client, author, resident, occurredAt=ago(2), details=details))["serviceRecord"]
    second = (await record(client, author, resident, occurredAt=ago(1), details=details))["serviceRecord"]
    colleague = staff(world, MINE, StaffRole.HEAD_NURSE)
    refused = (await gql(client, REMOVE, {"id": first["id"]}, token=colleague))["data"]["removeServiceRecord"]
    assert refused == {"removedId": None, "userErrors": [{"field": "id", "code": "CONFLICT"}]}
    butler = staff(world, MINE, StaffRole.BUTLER)  # may not record care, so may not remove it either
    assert codes(await gql(client, REMOVE, {"id": first["id"]}, token=butler)) == ["FORBIDDEN"]
    elsewhere = staff(world, OTHER, StaffRole.CAREGIVER)
    assert codes(await gql(client, REMOVE, {"id": first["id"]}, token=elsewhere)) == ["NOT_FOUND"]

    page = await gql(client, TIMELINE, {"id": resident, "first": 1}, token=author)
    cursor = page["data"]["resident"]["timeline"]["pageInfo"]["endCursor"]
    removed = (await gql(client, REMOVE, {"id": second["id"]}, token=author))["data"]["removeServiceRecord"]
    assert removed == {"removedId": second["id"], "userErrors": []}
    # the next page after a removed record's cursor still reads (the cursor is a position, not a row)
    after = await gql(client, TIMELINE, {"id": resident, "after": cursor}, token=author)
    assert [e["node"]["id"] for e in after["data"]["resident"]["timeline"]["edges"]] == [first["id"]]
    assert await total(client, author, resident) == 1
    gone = await gql(client, REMOVE, {"id": second["id"]}, token=author)
    assert codes(gone) == ["NOT_FOUND"]


END = f"""mutation($input: EndServiceRecordInput!) {{
  endServiceRecord(input: $input) {{ serviceRecord {{ {RECORD_FIELDS} }} userErrors {{ field code }} }}
}}"""


async def test_an_outing_gets_its_return_later_once(client: httpx.AsyncClient, world: World) -> None:
    _, resident = await admitted(world, MINE, "时间线接口壬")
    butler = staff(world, MINE, StaffRole.BUTLER)
    outing = {"outing": {"destination": "女儿家", "companion": "女儿", "expectedBack": ago(-2)}}
    out = (await record(client, butler, resident, occurredAt=ago(3), details=outing))["serviceRecord"]
    assert out["returnedAt"] is None

    async def end(token: str, record_id: str, ended_at: str | None = None) -> dict:
        variables = {"input": {"id": record_id, **({"endedAt": ended_at} if ended_at else {})}}
        return await gql(client, END, variables, token=token)

    early = (await end(butler, out["id"], ago(4)))["data"]["endServiceRecord"]
    assert early == {"serviceRecord": None, "userErrors": [{"field": "endedAt", "code": "BAD_USER_INPUT"}]}
    back = (await end(butler, out["id"], ago(0.5)))["data"]["endServiceRecord"]
    assert back["userErrors"] == [] and back["serviceRecord"]["returnedAt"] is not None
    assert {k: v for k, v in back["serviceRecord"].items() if k != "returnedAt"} == {
        k: v for k, v in out.items() if k != "returnedAt"
    }
    twice = (await end(butler, out["id"]))["data"]["endServiceRecord"]
    assert twice["userErrors"] == [{"field": "endedAt", "code": "CONFLICT"}]

    nurse = staff(world, MINE, StaffRole.NURSE)
    meal = {"meal": {"meal": "LUNCH", "portion": "ALL"}}
    lunch = (await record(client, nurse, resident, occurredAt=ago(2), details=meal))["serviceRecord"]
    no_end = (await end(nurse, lunch["id"]))["data"]["endServiceRecord"]
    assert no_end["userErrors"] == [{"field": "endedAt", "code": "BAD_USER_INPUT"}]
    assert codes(await end(butler, lunch["id"])) == ["FORBIDDEN"]  # a meal is not the butler's to change
    body = await gql(client, TIMELINE, {"id": resident, "kinds": ["OUTING"]}, token=butler)
    [edge] = body["data"]["resident"]["timeline"]["edges"]
    assert edge["node"]["returnedAt"] == back["serviceRecord"]["returnedAt"]

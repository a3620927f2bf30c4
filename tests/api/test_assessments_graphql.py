"""Assessments through GraphQL: recorded and scored by the system, read back with labels, the care-level
suggestion and applying it, userErrors all at once with nothing written, GONE, NOT_FOUND, FORBIDDEN, and
one load for a page of residents."""

import httpx

from care.models import CareLevel
from compliance.encryption import destroy_data_key
from compliance.principals import StaffRole
from schema.ids import encode_id
from tests.api.test_resident_page_queries import counted_queries
from tests.care.test_assessment_records import HOME, OTHER, admitted, in_tenant
from tests.care.test_assessments import answers_totalling
from tests.conftest import World, gql, staff_token

RECORD = """
mutation($input: RecordAssessmentInput!) {
  recordAssessment(input: $input) {
    assessment { id scale version reason assessedOn answers { item value }
      capability { total level levelLabel { zh en text } rulesMet
                   rulesApplied { rule levelBefore levelAfter basis } domains { code score maxScore } }
      barthel { total dependency dependencyLabel { zh } } }
    careLevelSuggestion { careLevel currentCareLevel differs }
    userErrors { field code message }
  }
}"""
RESIDENT = """
query($id: ID!) { resident(id: $id) {
  careLevel
  assessments(first: 10) { totalCount edges { node { version scale reason capability { level } } } }
  latestAssessments { capability { version capability { level levelLabel { text } } }
                      barthel { version barthel { total dependency } } }
  careLevelSuggestion { careLevel label { zh } currentCareLevel differs fromBarthel barthelRaised
                        capabilityAssessment { id } barthelAssessment { id } }
} }"""
APPLY = """
mutation($input: ApplyCareLevelSuggestionInput!) {
  applyCareLevelSuggestion(input: $input) {
    resident { careLevel } previousCareLevel userErrors { field code }
  }
}"""


def answers(total: int) -> list[dict[str, object]]:
    return [{"item": code, "value": value} for code, value in answers_totalling(total).items()]


def barthel(total: int) -> list[dict[str, object]]:
    """Barthel answers adding up to `total`: bathing and grooming 0 and the rest from the stairs down."""
    order = [
        ("stairs", [10, 5, 0]),
        ("mobility", [15, 10, 5, 0]),
        ("transfers", [15, 10, 5, 0]),
        ("toilet_use", [10, 5, 0]),
        ("bladder", [10, 5, 0]),
        ("bowels", [10, 5, 0]),
        ("dressing", [10, 5, 0]),
        ("feeding", [10, 5, 0]),
        ("bathing", [5, 0]),
        ("grooming", [5, 0]),
    ]
    given, deficit = [], 100 - total
    for item, allowed in order:
        value = min(v for v in allowed if allowed[0] - v <= deficit)
        deficit -= allowed[0] - value
        given.append({"item": item, "value": value})
    assert deficit == 0
    return given


def capability_input(resident: str, total: int, **changes: object) -> dict[str, object]:
    return {
        "residentId": resident,
        "scale": "CAPABILITY",
        "assessedOn": "2026-06-01",
        "reason": "ADMISSION",
        "answers": answers(total),
    } | changes


async def recorded(client: httpx.AsyncClient, token: str, given: dict[str, object]) -> dict:
    body = await gql(client, RECORD, {"input": given}, token=token)
    assert "errors" not in body, body
    payload = body["data"]["recordAssessment"]
    assert payload["userErrors"] == [], payload
    return payload["assessment"] | {"suggested": payload["careLevelSuggestion"]}


async def test_record_read_suggest_and_apply(client: httpx.AsyncClient, world: World) -> None:
    institution = world.institution_ids[HOME]
    pk = await admitted(institution, "图谱评估长者", CareLevel.SELF_CARE)
    resident = encode_id("Resident", institution, pk)
    nurse = staff_token(institution, StaffRole.NURSE)

    first = await recorded(
        client,
        nurse,
        capability_input(
            resident,
            60,
            reason="CHANGE_IN_CONDITION",
            diagnoses=[{"icd10": "F03"}],
            riskEvents=[{"kind": "FALL", "occurredOn": "2026-05-20"}],
        ),
    )
    capability = first["capability"]
    assert (first["version"], first["scale"], capability["total"]) == (1, "CAPABILITY", 60)
    assert capability["level"] == 3 and capability["levelLabel"]["zh"] == "重度失能"
    assert capability["levelLabel"]["text"] == "重度失能"  # Chinese unless English is asked for
    assert capability["rulesMet"] == ["DIAGNOSIS"]
    assert capability["rulesApplied"] == [
        {"rule": "DIAGNOSIS", "levelBefore": 2, "levelAfter": 3, "basis": ["F03"]}
    ]
    assert sum(d["score"] for d in capability["domains"]) == 60
    index = await recorded(
        client,
        nurse,
        {"residentId": resident, "scale": "BARTHEL", "assessedOn": "2026-06-01", "reason": "ADMISSION"}
        | {"answers": barthel(15)},
    )
    assert index["barthel"] == {"total": 15, "dependency": "TOTAL", "dependencyLabel": {"zh": "完全依赖"}}
    assert (
        first["suggested"]
        == index["suggested"]
        == {
            "careLevel": "FULL_CARE",
            "currentCareLevel": "SELF_CARE",
            "differs": True,
        }
    )

    caregiver = staff_token(institution, StaffRole.CAREGIVER)
    read = (await gql(client, RESIDENT, {"id": resident}, token=caregiver))["data"]["resident"]
    assert read["assessments"]["totalCount"] == 2
    assert read["latestAssessments"]["capability"]["capability"]["level"] == 3
    assert read["latestAssessments"]["barthel"]["barthel"] == {"total": 15, "dependency": "TOTAL"}
    suggestion = read["careLevelSuggestion"]
    assert suggestion == {
        "careLevel": "FULL_CARE",
        "label": {"zh": "全护"},
        "currentCareLevel": "SELF_CARE",
        "differs": True,
        "fromBarthel": "FULL_CARE",
        "barthelRaised": False,
        "capabilityAssessment": {"id": first["id"]},
        "barthelAssessment": {"id": index["id"]},
    }

    # A caregiver reads but neither records nor applies.
    refused = await gql(
        client, APPLY, {"input": {"residentId": resident, "assessmentId": first["id"]}}, token=caregiver
    )
    assert [e["extensions"]["code"] for e in refused["errors"]] == ["FORBIDDEN"]
    applied = await gql(
        client, APPLY, {"input": {"residentId": resident, "assessmentId": first["id"]}}, token=nurse
    )
    assert applied["data"]["applyCareLevelSuggestion"] == {
        "resident": {"careLevel": "FULL_CARE"},
        "previousCareLevel": "SELF_CARE",
        "userErrors": [],
    }
    second = await recorded(client, nurse, capability_input(resident, 88, assessedOn="2026-07-01"))
    assert second["version"] == 2 and second["capability"]["level"] == 1
    stale = await gql(
        client, APPLY, {"input": {"residentId": resident, "assessmentId": first["id"]}}, token=nurse
    )
    payload = stale["data"]["applyCareLevelSuggestion"]
    assert payload["resident"] is None and payload["userErrors"] == [
        {"field": "assessmentId", "code": "CONFLICT"}
    ]
    english = await gql(
        client,
        "query { assessmentScales { scale maxTotal domains { items { code allowedValues } } "
        "grades { label { text } } } }",
        token=caregiver,
    )
    capability_scale, barthel_scale = english["data"]["assessmentScales"]
    assert capability_scale["maxTotal"] == 90 and barthel_scale["maxTotal"] == 100
    assert sum(len(d["items"]) for d in capability_scale["domains"]) == 26
    assert {"code": "B3.9", "allowedValues": [2, 1, 0]} in capability_scale["domains"][2]["items"]
    assert capability_scale["grades"][0]["label"]["text"] == "能力完好"


async def test_bad_input_is_reported_at_once_and_nothing_is_written(
    client: httpx.AsyncClient, world: World
) -> None:
    institution = world.institution_ids[HOME]
    pk = await admitted(institution, "图谱错误输入长者")
    resident = encode_id("Resident", institution, pk)
    doctor = staff_token(institution, StaffRole.DOCTOR)
    given = [a for a in answers(70) if a["item"] != "B2.2"] + [
        {"item": "B9.9", "value": 1},
        {"item": "B1.1", "value": 3},
    ]
    given = [{"item": "B4.1", "value": 3} if a["item"] == "B4.1" else a for a in given]
    body = await gql(
        client,
        RECORD,
        {
            "input": capability_input(
                resident, 70, answers=given, assessedOn="2099-01-01", diagnoses=[{"icd10": "痴呆"}]
            )
        },
        token=doctor,
    )
    payload = body["data"]["recordAssessment"]
    assert payload["assessment"] is None
    assert sorted(e["field"] for e in payload["userErrors"]) == sorted(
        ["assessedOn", "B1.1", "B2.2", "B4.1", "B9.9", "diagnoses"]
    ), payload
    assert {e["code"] for e in payload["userErrors"]} == {"BAD_USER_INPUT"}
    barthel_answers = [
        {"item": "feeding", "value": 7} if a["item"] == "feeding" else a
        for a in barthel(100)
        if a["item"] != "stairs"
    ]
    body = await gql(
        client,
        RECORD,
        {
            "input": {
                "residentId": resident,
                "scale": "BARTHEL",
                "assessedOn": "2026-06-01",
                "reason": "OTHER",
                "answers": barthel_answers,
                "riskEvents": [{"kind": "FALL", "occurredOn": "2026-05-01"}],
            }
        },
        token=doctor,
    )
    errors = body["data"]["recordAssessment"]["userErrors"]
    assert {e["field"] for e in errors} == {"feeding", "stairs", "riskEvents"}
    unknown_scale = await gql(
        client, RECORD, {"input": capability_input(resident, 70, scale="KATZ")}, token=doctor
    )
    assert unknown_scale["errors"] and unknown_scale.get("data") is None
    count = await gql(
        client,
        "query($id: ID!) { resident(id: $id) { assessments { totalCount } } }",
        {"id": resident},
        token=doctor,
    )
    assert count["data"]["resident"]["assessments"]["totalCount"] == 0


async def test_access_other_institution_role_and_erasure(client: httpx.AsyncClient, world: World) -> None:
    home, other = world.institution_ids[HOME], world.institution_ids[OTHER]
    pk = await admitted(other, "图谱他院长者")
    resident = encode_id("Resident", other, pk)
    nurse_there = staff_token(other, StaffRole.HEAD_NURSE)
    await recorded(client, nurse_there, capability_input(resident, 50))

    nurse_here = staff_token(home, StaffRole.NURSE)
    for query, variables in (
        (RECORD, {"input": capability_input(resident, 50)}),
        (RESIDENT, {"id": resident}),
    ):
        body = await gql(client, query, variables, token=nurse_here)
        assert {e["extensions"]["code"] for e in body["errors"]} == {"NOT_FOUND"}, body

    finance = staff_token(other, StaffRole.FINANCE)
    written = await gql(client, RECORD, {"input": capability_input(resident, 50)}, token=finance)
    assert [e["extensions"]["code"] for e in written["errors"]] == ["FORBIDDEN"]
    read = await gql(
        client,
        "query($id: ID!) { resident(id: $id) { careLevel latestAssessments { capability { version } } } }",
        {"id": resident},
        token=finance,
    )
    assert read["data"]["resident"] == {"careLevel": "ASSISTED", "latestAssessments": None}
    assert [e["extensions"]["code"] for e in read["errors"]] == ["FORBIDDEN"]
    scales = await gql(client, "{ assessmentScales { scale } }", token=finance)
    assert [e["extensions"]["code"] for e in scales["errors"]] == ["FORBIDDEN"]

    async def erase() -> None:
        await destroy_data_key(pk)

    await in_tenant(other, erase)
    gone = await gql(client, RESIDENT, {"id": resident}, token=nurse_there)
    assert gone["data"]["resident"]["careLevel"] == "ASSISTED"  # the rest of the resident still reads
    by_field = {e["path"][-1]: e["extensions"]["code"] for e in gone["errors"]}
    assert by_field == {"assessments": "GONE", "latestAssessments": "GONE", "careLevelSuggestion": "GONE"}
    again = await gql(client, RECORD, {"input": capability_input(resident, 50)}, token=nurse_there)
    assert [e["extensions"]["code"] for e in again["errors"]] == ["GONE"]


PAGE = """query($first: Int!) { residents(first: $first) { edges { node {
  careLevel latestAssessments { capability { version capability { level } } barthel { version } }
  careLevelSuggestion { careLevel currentCareLevel }
} } } }"""


async def test_a_page_of_residents_loads_latest_assessments_at_once(
    client: httpx.AsyncClient, world: World
) -> None:
    institution = world.institution_ids[HOME]
    head_nurse = staff_token(institution, StaffRole.HEAD_NURSE)
    for k in range(6):
        pk = await admitted(institution, f"图谱分页长者{k}")
        await recorded(
            client, head_nurse, capability_input(encode_id("Resident", institution, pk), 40 + 8 * k)
        )
    costs = {}
    for first in (2, 40):
        with counted_queries() as statements:
            body = await gql(client, PAGE, {"first": first}, token=head_nurse)
        assert "errors" not in body, body
        costs[first] = len(statements)
        nodes = [edge["node"] for edge in body["data"]["residents"]["edges"]]
    assert costs[2] == costs[40], costs
    suggested = [n for n in nodes if n["careLevelSuggestion"] is not None]
    assert len(suggested) >= 6

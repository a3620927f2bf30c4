"""SOPs through GraphQL: the default template and template versions, bad templates as userErrors, chain
templates kept by chain admins and seen by the chain's institutions only, a resident's instances and
butler, my steps of a day, completion into the family log (its outcome required), skipping, and who may
do what."""

import uuid
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import httpx

from compliance.principals import ChainRole, Principal, PrincipalKind, StaffRole
from schema.ids import encode_id
from tenants.registry import NewInstitution, get_or_create_chain, provision_institution
from tests.care.notification_support import staff_account
from tests.conftest import World, gql, staff_member_token, token_for

SHANGHAI = ZoneInfo("Asia/Shanghai")
TEMPLATE = (
    "template { id scope version name anchor isDefault retiredAt steps { title dayOffset timeOfDay assignee"
)
TEMPLATE += " requiresOutcome graceHours escalationRole } }"
SET = "mutation($input: SetSopTemplateInput!) { setSopTemplate(input: $input) { " + TEMPLATE
SET += " userErrors { field message code } } }"
SET_CHAIN = "mutation($input: SetChainSopTemplateInput!) { setChainSopTemplate(input: $input) { " + TEMPLATE
SET_CHAIN += " userErrors { field message } } }"
RETIRE = "mutation($id: ID!) { retireSopTemplate(input: {templateId: $id}) { template { id retiredAt } } }"
LIST = "{ sopTemplates(first: 10) { totalCount edges { node { id name version isDefault scope } } } }"
CHAIN_LIST = (
    "query($chain: ID) { chainSopTemplates(chainId: $chain) { totalCount edges { node { id name } } } }"
)
ADMIT = (
    'mutation($day: Date!) { admitResident(input: {name: "流程长者", gender: FEMALE, birthDate: "1938-04-04",'
    " careLevel: ASSISTED, admissionDate: $day}) { resident { id } userErrors { field } } }"
)
STEP = "id title status dueAt assignee requiresOutcome familyCommunicationId skipReason closedReason"
INSTANCES = (
    "query($id: ID!) { resident(id: $id) { butlerId sopInstances { name anchor anchorDate templateVersion"
    " scope steps { " + STEP + " } } familyCommunications { edges { node { id summary channel } } } } }"
)
ASSIGN = (
    "mutation($resident: ID!, $butler: ID) { assignResidentButler(input: {residentId: $resident,"
    " butlerId: $butler}) { butlerId steps { id } userErrors { field message } } }"
)
MINE = "query($day: Date) { mySopSteps(day: $day) { totalCount edges { node { id title residentId } } } }"
COMPLETE = (
    "mutation($input: CompleteSopStepInput!) { completeSopStep(input: $input) { step { " + STEP + " }"
    " userErrors { field message } } }"
)
SKIP = (
    "mutation($id: ID!, $reason: String!) { skipSopStep(input: {stepId: $id, reason: $reason}) {"
    " step { " + STEP + " } userErrors { field } } }"
)


def chain_admin(chain_id: int) -> str:
    return token_for(
        Principal(
            f"account:{880_000 + uuid.uuid4().int % 10_000}",
            PrincipalKind.STAFF,
            chain_id=chain_id,
            chain_roles=frozenset({ChainRole.CHAIN_ADMIN}),
        )
    )


def codes(body: dict) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


def step(**changes: object) -> dict[str, object]:
    given: dict[str, object] = {
        "title": "入住一周小结",
        "dayOffset": 7,
        "timeOfDay": "09:30",
        "assignee": "butler",
        "graceHours": 12,
        "requiresOutcome": "FAMILY_COMMUNICATION",
    }
    given.update(changes)
    return given


async def test_templates_versions_and_bad_input(client: httpx.AsyncClient, world: World) -> None:
    assert world.institution_ids
    institution = await provision_institution(NewInstitution(name="SOP模板养老院", region_code="test-east"))
    head_nurse = staff_member_token(institution.id, StaffRole.HEAD_NURSE)

    listed = (await gql(client, LIST, token=head_nurse))["data"]["sopTemplates"]
    assert listed["totalCount"] == 1
    (default,) = [edge["node"] for edge in listed["edges"]]
    assert (default["name"], default["isDefault"], default["scope"]) == (
        "新入住长者30天关怀计划",
        True,
        "INSTITUTION",
    )

    bad = await gql(
        client,
        SET,
        {
            "input": {
                "name": "错误模板",
                "anchor": "ADMISSION",
                "steps": [
                    step(dayOffset=-3),
                    step(assignee="janitor"),
                    step(timeOfDay="7pm"),
                    step(graceHours=0),
                ],
            }
        },
        token=head_nurse,
    )
    payload = bad["data"]["setSopTemplate"]
    assert payload["template"] is None
    assert [(e["field"], e["code"]) for e in payload["userErrors"]] == [
        ("steps.0.dayOffset", "BAD_USER_INPUT"),
        ("steps.1.assignee", "BAD_USER_INPUT"),
        ("steps.2.timeOfDay", "BAD_USER_INPUT"),
        ("steps.3.graceHours", "BAD_USER_INPUT"),
    ]
    assert payload["userErrors"][0]["message"] == "偏移量不能使步骤早于起算事件。"
    for steps, field in (([], "steps"), ([step(dayOffset=d) for d in range(31)], "steps")):
        refused = await gql(
            client, SET, {"input": {"name": "x", "anchor": "ADMISSION", "steps": steps}}, token=head_nurse
        )
        assert [e["field"] for e in refused["data"]["setSopTemplate"]["userErrors"]] == [field]

    created = (
        await gql(
            client,
            SET,
            {"input": {"name": "入住跟进", "anchor": "ADMISSION", "steps": [step()]}},
            token=head_nurse,
        )
    )["data"]["setSopTemplate"]
    assert created["userErrors"] == [] and created["template"]["version"] == 1
    template = created["template"]
    assert template["steps"][0] == {
        "title": "入住一周小结",
        "dayOffset": 7,
        "timeOfDay": "09:30",
        "assignee": "butler",
        "requiresOutcome": "FAMILY_COMMUNICATION",
        "graceHours": 12,
        "escalationRole": "head_nurse",
    }
    edited = (
        await gql(
            client,
            SET,
            {
                "input": {
                    "templateId": template["id"],
                    "name": "入住跟进（新）",
                    "anchor": "ADMISSION",
                    "steps": [step()],
                }
            },
            token=head_nurse,
        )
    )["data"]["setSopTemplate"]["template"]
    assert (edited["id"], edited["version"], edited["name"]) == (template["id"], 2, "入住跟进（新）")
    retired = (await gql(client, RETIRE, {"id": template["id"]}, token=head_nurse))["data"][
        "retireSopTemplate"
    ]
    assert retired["template"]["retiredAt"] is not None
    assert (await gql(client, LIST, token=head_nurse))["data"]["sopTemplates"]["totalCount"] == 1

    caregiver = staff_member_token(institution.id, StaffRole.CAREGIVER)
    forbidden = await gql(
        client, SET, {"input": {"name": "x", "anchor": "ADMISSION", "steps": [step()]}}, token=caregiver
    )
    assert codes(forbidden) == ["FORBIDDEN"]
    assert codes(await gql(client, LIST, token=caregiver)) == ["FORBIDDEN"]


async def test_chain_templates_are_the_chain_admins_and_reach_the_chains_institutions(
    client: httpx.AsyncClient, world: World
) -> None:
    assert world.institution_ids
    name = f"SOP连锁{uuid.uuid4().hex[:6]}"
    chain = await get_or_create_chain(name)
    member = await provision_institution(
        NewInstitution(name="SOP连锁成员院", region_code="test-east", chain_name=name)
    )
    outsider = await provision_institution(NewInstitution(name="SOP非连锁院", region_code="test-east"))
    admin = chain_admin(chain.id)
    chain_id = encode_id("Chain", chain.id)

    created = (
        await gql(
            client,
            SET_CHAIN,
            {
                "input": {
                    "chainId": chain_id,
                    "name": "连锁入住问候",
                    "anchor": "ADMISSION",
                    "steps": [step()],
                }
            },
            token=admin,
        )
    )["data"]["setChainSopTemplate"]
    assert created["userErrors"] == [] and created["template"]["scope"] == "CHAIN"
    listed = (await gql(client, CHAIN_LIST, {"chain": chain_id}, token=admin))["data"]["chainSopTemplates"]
    assert [e["node"]["name"] for e in listed["edges"]] == ["连锁入住问候"]
    seen = await gql(
        client, CHAIN_LIST, {"chain": None}, token=staff_member_token(member.id, StaffRole.HEAD_NURSE)
    )
    assert [e["node"]["name"] for e in seen["data"]["chainSopTemplates"]["edges"]] == ["连锁入住问候"]
    unseen = await gql(
        client, CHAIN_LIST, {"chain": None}, token=staff_member_token(outsider.id, StaffRole.HEAD_NURSE)
    )
    assert unseen["data"]["chainSopTemplates"]["totalCount"] == 0

    # Admitted in the chain's institution: the chain's template and the default one start.
    today = datetime.now(SHANGHAI).date()
    intake = staff_member_token(member.id, StaffRole.INSTITUTION_ADMIN)
    resident = (await gql(client, ADMIT, {"day": today.isoformat()}, token=intake))["data"]["admitResident"]
    instances = (await gql(client, INSTANCES, {"id": resident["resident"]["id"]}, token=intake))["data"]
    assert sorted((i["scope"], i["name"]) for i in instances["resident"]["sopInstances"]) == [
        ("CHAIN", "连锁入住问候"),
        ("INSTITUTION", "新入住长者30天关怀计划"),
    ]

    nowhere = await gql(
        client, SET_CHAIN, {"input": {"name": "x", "anchor": "ADMISSION", "steps": [step()]}}, token=admin
    )
    assert [e["field"] for e in nowhere["data"]["setChainSopTemplate"]["userErrors"]] == ["chainId"]
    other = await get_or_create_chain(f"SOP他链{uuid.uuid4().hex[:6]}")
    edited = await gql(
        client,
        SET_CHAIN,
        {
            "input": {
                "templateId": created["template"]["id"],
                "name": "篡改",
                "anchor": "ADMISSION",
                "steps": [step()],
            }
        },
        token=chain_admin(other.id),
    )
    assert codes(edited) == ["NOT_FOUND"]
    assert codes(await gql(client, CHAIN_LIST, {"chain": chain_id}, token=chain_admin(other.id))) == [
        "NOT_FOUND"
    ]
    director = token_for(
        Principal(
            "account:889999",
            PrincipalKind.STAFF,
            chain_id=chain.id,
            chain_roles=frozenset({ChainRole.CHAIN_DIRECTOR}),
        )
    )
    refused = await gql(
        client,
        SET_CHAIN,
        {"input": {"chainId": chain_id, "name": "x", "anchor": "ADMISSION", "steps": [step()]}},
        token=director,
    )
    assert codes(refused) == ["FORBIDDEN"]


async def test_a_residents_steps_butler_and_completion(client: httpx.AsyncClient, world: World) -> None:
    assert world.institution_ids
    institution = await provision_institution(NewInstitution(name="SOP管家养老院", region_code="test-east"))
    head_nurse = staff_member_token(institution.id, StaffRole.HEAD_NURSE)
    today = datetime.now(SHANGHAI).date()
    admitted = await gql(
        client, ADMIT, {"day": today.isoformat()}, token=staff_member_token(institution.id, StaffRole.SALES)
    )
    resident = admitted["data"]["admitResident"]["resident"]["id"]

    read = (await gql(client, INSTANCES, {"id": resident}, token=head_nurse))["data"]["resident"]
    assert read["butlerId"] is None
    (instance,) = read["sopInstances"]
    assert (instance["anchor"], instance["anchorDate"], instance["templateVersion"]) == (
        "ADMISSION",
        today.isoformat(),
        1,
    )
    steps = instance["steps"]
    assert [
        (datetime.fromisoformat(s["dueAt"]).astimezone(SHANGHAI).date() - today, s["status"]) for s in steps
    ] == [(timedelta(days=d), "OPEN") for d in (3, 7, 15, 30)]
    assert {datetime.fromisoformat(s["dueAt"]).astimezone(SHANGHAI).hour for s in steps} == {10}

    nurse = await staff_account(institution.id, StaffRole.NURSE)
    not_butler = await gql(
        client,
        ASSIGN,
        {"resident": resident, "butler": encode_id("StaffMember", institution.id, nurse.id)},
        token=head_nurse,
    )
    assert [e["field"] for e in not_butler["data"]["assignResidentButler"]["userErrors"]] == ["butlerId"]
    butler = await staff_account(institution.id, StaffRole.BUTLER)
    butler_id = encode_id("StaffMember", institution.id, butler.id)
    assigned = (await gql(client, ASSIGN, {"resident": resident, "butler": butler_id}, token=head_nurse))[
        "data"
    ]
    assert assigned["assignResidentButler"]["butlerId"] == butler_id
    assert len(assigned["assignResidentButler"]["steps"]) == 4
    read = (await gql(client, INSTANCES, {"id": resident}, token=head_nurse))["data"]["resident"]
    assert read["butlerId"] == butler_id
    caregiver_assigns = await gql(
        client,
        ASSIGN,
        {"resident": resident, "butler": butler_id},
        token=staff_member_token(institution.id, StaffRole.CAREGIVER),
    )
    assert codes(caregiver_assigns) == ["FORBIDDEN"]

    # The butler's day 3: the resident's first step; another butler's day is empty of it.
    mine = staff_member_token(institution.id, StaffRole.BUTLER, butler.id)
    day3 = (today + timedelta(days=3)).isoformat()
    found = (await gql(client, MINE, {"day": day3}, token=mine))["data"]["mySopSteps"]
    assert [(e["node"]["id"], e["node"]["residentId"]) for e in found["edges"]] == [
        (steps[0]["id"], resident)
    ]
    other_butler = staff_member_token(
        institution.id, StaffRole.BUTLER, (await staff_account(institution.id, StaffRole.BUTLER)).id
    )
    assert (await gql(client, MINE, {"day": day3}, token=other_butler))["data"]["mySopSteps"][
        "totalCount"
    ] == 0

    missing = (await gql(client, COMPLETE, {"input": {"stepId": steps[0]["id"]}}, token=mine))["data"]
    assert [e["field"] for e in missing["completeSopStep"]["userErrors"]] == ["outcome"]
    done = (
        await gql(
            client,
            COMPLETE,
            {
                "input": {
                    "stepId": steps[0]["id"],
                    "outcome": {"summary": "入住三天回访，老人适应良好。", "channel": "PHONE"},
                }
            },
            token=mine,
        )
    )["data"]["completeSopStep"]
    assert done["userErrors"] == [] and done["step"]["status"] == "DONE"
    assert done["step"]["familyCommunicationId"] is not None
    again = (
        await gql(
            client,
            COMPLETE,
            {"input": {"stepId": steps[0]["id"], "outcome": {"summary": "重复", "channel": "PHONE"}}},
            token=mine,
        )
    )["data"]["completeSopStep"]
    assert [e["field"] for e in again["userErrors"]] == ["stepId"]
    skipped = (await gql(client, SKIP, {"id": steps[1]["id"], "reason": "家属出差，改期联系"}, token=mine))[
        "data"
    ]
    assert (skipped["skipSopStep"]["step"]["status"], skipped["skipSopStep"]["step"]["skipReason"]) == (
        "SKIPPED",
        "家属出差，改期联系",
    )
    read = (await gql(client, INSTANCES, {"id": resident}, token=head_nurse))["data"]["resident"]
    log = [e["node"] for e in read["familyCommunications"]["edges"]]
    assert [(e["summary"], e["channel"], e["id"]) for e in log] == [
        ("入住三天回访，老人适应良好。", "PHONE", done["step"]["familyCommunicationId"])
    ]
    caregiver = staff_member_token(institution.id, StaffRole.CAREGIVER)
    assert codes(await gql(client, SKIP, {"id": steps[2]["id"], "reason": "x"}, token=caregiver)) == [
        "FORBIDDEN"
    ]
    # butlerId, sopInstances (and the family log) are refused to caregivers.
    assert set(codes(await gql(client, INSTANCES, {"id": resident}, token=caregiver))) == {"FORBIDDEN"}

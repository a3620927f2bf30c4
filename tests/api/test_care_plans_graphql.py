"""Care plans and tasks through GraphQL: a plan item and its tasks, my tasks of a day, check-off with a
measured value landing in the vitals, not done with a reason, edits keeping what was done, bad input as
userErrors, and who may do what (family and supervisors refused, another institution NOT_FOUND)."""

import uuid
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx

from care.models import CareLevel, Gender, Relationship
from care.residents import Admission, NewFamilyMember, add_family_member, admit_resident
from compliance.identity.account_models import AccountKind
from compliance.identity.accounts import (
    NewAccount,
    add_family_link,
    add_staff_membership,
    create_account,
)
from compliance.principals import Principal, PrincipalKind, StaffRole
from schema.ids import encode_id
from tenants.registry import NewInstitution, provision_institution, tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.conftest import World, gql, staff_member_token, token_for

SHANGHAI = ZoneInfo("Asia/Shanghai")
TASK_FIELDS = (
    "id status dueAt kind itemVersion result notDoneReason readingId measure assigneeRole caregiverId"
)
SET_ITEM = (
    "mutation($input: SetCarePlanItemInput!) { setCarePlanItem(input: $input) {"
    " item { id version kind label recurrence assigneeRole caregiverId durationMinutes measure }"
    " tasks { " + TASK_FIELDS + " } userErrors { field message code } } }"
)
PLAN = (
    "query($id: ID!) { resident(id: $id) { carePlan { items { id label version } }"
    " tasks(first: 2) { totalCount edges { cursor node { id dueAt status } }"
    " pageInfo { hasNextPage endCursor } }"
    " } }"
)
MORE_TASKS = (
    "query($id: ID!, $after: String) { resident(id: $id) { tasks(first: 100, after: $after) {"
    " edges { node { " + TASK_FIELDS + " } } } } }"
)
MY_TASKS = (
    "query($day: Date) { myTasks(day: $day) { totalCount"
    " edges { node { id dueAt residentId assigneeRole } } } }"
)
COMPLETE = (
    "mutation($input: CompleteTaskInput!) { completeTask(input: $input) {"
    " task { " + TASK_FIELDS + " } userErrors { field code } } }"
)
NOT_DONE = (
    "mutation($input: MarkTaskNotDoneInput!) { markTaskNotDone(input: $input) {"
    " task { " + TASK_FIELDS + " } userErrors { field code } } }"
)
REMOVE = "mutation($id: ID!) { removeCarePlanItem(input: {itemId: $id}) { removedId userErrors { field } } }"
VITALS = "query($id: ID!) { resident(id: $id) { vitals { edges { node { id measure value } } } } }"


async def staff_account(institution_id: int, role: StaffRole) -> int:
    account = await create_account(
        NewAccount(
            AccountKind.STAFF, f"tasks-{uuid.uuid4().hex[:12]}@example.com", "护理员", "task-password-9"
        )
    )
    await add_staff_membership(account, institution_id, role)
    return account.id


async def home(name: str) -> tuple[int, int, int]:
    """(institution id, resident pk, family member pk) of a new institution."""
    institution = await provision_institution(NewInstitution(name=name, region_code="test-east"))

    async def admit() -> tuple[int, int]:
        resident = await admit_resident(
            Admission("任务长者", Gender.MALE, date(1937, 7, 7), CareLevel.ASSISTED, date(2026, 2, 1))
        )
        son = await add_family_member(resident.id, NewFamilyMember("儿子", Relationship.SON, "13700004444"))
        return resident.id, son.id

    resident, son = await run_in_tenant(tenant_ref(institution), admit)
    return institution.id, resident, son


def item_input(resident: str, **changes: object) -> dict[str, object]:
    given: dict[str, object] = {
        "residentId": resident,
        "kind": "HYGIENE",
        "label": "协助洗漱",
        "recurrence": "FREQ=DAILY;BYHOUR=8;BYMINUTE=0",
        "assigneeRole": "caregiver",
        "durationMinutes": 15,
    }
    given.update(changes)
    return given


def codes(body: dict) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


async def test_plan_items_tasks_and_check_off(client: httpx.AsyncClient, world: World) -> None:
    assert world.institution_ids
    institution, resident_pk, _ = await home("任务养老院")
    resident = encode_id("Resident", institution, resident_pk)
    head_nurse = staff_member_token(institution, StaffRole.HEAD_NURSE)
    named = await staff_account(institution, StaffRole.CAREGIVER)
    caregiver = staff_member_token(institution, StaffRole.CAREGIVER, named)

    added = (await gql(client, SET_ITEM, {"input": item_input(resident)}, token=head_nurse))["data"]
    payload = added["setCarePlanItem"]
    assert payload["userErrors"] == []
    item = payload["item"]
    assert (item["version"], item["kind"], item["label"], item["assigneeRole"]) == (
        1,
        "HYGIENE",
        "协助洗漱",
        "caregiver",
    )
    assert len(payload["tasks"]) == 7
    assert {datetime.fromisoformat(t["dueAt"]).astimezone(SHANGHAI).hour for t in payload["tasks"]} == {8}

    measured = await gql(
        client,
        SET_ITEM,
        {
            "input": item_input(
                resident,
                kind="VITAL_SIGN",
                label=None,
                recurrence="FREQ=DAILY;BYHOUR=9;BYMINUTE=0",
                assigneeRole=None,
                caregiverId=encode_id("StaffMember", institution, named),
                measure="HEART_RATE",
            )
        },
        token=head_nurse,
    )
    measured_tasks = measured["data"]["setCarePlanItem"]["tasks"]
    assert {(t["measure"], t["caregiverId"]) for t in measured_tasks} == {
        ("HEART_RATE", encode_id("StaffMember", institution, named))
    }

    plan = (await gql(client, PLAN, {"id": resident}, token=caregiver))["data"]["resident"]
    assert [i["label"] for i in plan["carePlan"]["items"]] == ["协助洗漱", None]
    assert plan["tasks"]["totalCount"] == 14 and plan["tasks"]["pageInfo"]["hasNextPage"]
    rest = await gql(
        client, MORE_TASKS, {"id": resident, "after": plan["tasks"]["pageInfo"]["endCursor"]}, token=caregiver
    )
    every = [e["node"]["id"] for e in plan["tasks"]["edges"]] + [
        e["node"]["id"] for e in rest["data"]["resident"]["tasks"]["edges"]
    ]
    assert len(every) == len(set(every)) == 14

    tomorrow = (datetime.now(SHANGHAI) + timedelta(days=1)).date().isoformat()
    mine = (await gql(client, MY_TASKS, {"day": tomorrow}, token=caregiver))["data"]["myTasks"]
    assert mine["totalCount"] == 2  # one of the role, one named
    assert {n["node"]["residentId"] for n in mine["edges"]} == {resident}
    nurse_day = await gql(
        client, MY_TASKS, {"day": tomorrow}, token=staff_member_token(institution, StaffRole.NURSE)
    )
    assert nurse_day["data"]["myTasks"]["totalCount"] == 0

    first_hygiene = payload["tasks"][0]["id"]
    done = (
        await gql(client, COMPLETE, {"input": {"taskId": first_hygiene, "result": "已协助"}}, token=caregiver)
    )["data"]["completeTask"]
    assert done["userErrors"] == [] and (done["task"]["status"], done["task"]["result"]) == ("DONE", "已协助")
    again = (await gql(client, COMPLETE, {"input": {"taskId": first_hygiene}}, token=caregiver))["data"]
    assert again["completeTask"]["userErrors"] == [{"field": "taskId", "code": "CONFLICT"}]

    heart = measured_tasks[0]["id"]
    without = (await gql(client, COMPLETE, {"input": {"taskId": heart}}, token=caregiver))["data"]
    assert without["completeTask"]["userErrors"] == [{"field": "measurement", "code": "BAD_USER_INPUT"}]
    wrong = await gql(
        client, COMPLETE, {"input": {"taskId": heart, "measurement": {"value": 900}}}, token=caregiver
    )
    assert wrong["data"]["completeTask"]["userErrors"] == [{"field": "value", "code": "BAD_USER_INPUT"}]
    measured_done = await gql(
        client, COMPLETE, {"input": {"taskId": heart, "measurement": {"value": 72}}}, token=caregiver
    )
    reading = measured_done["data"]["completeTask"]["task"]["readingId"]
    assert reading is not None
    readings = (await gql(client, VITALS, {"id": resident}, token=head_nurse))["data"]["resident"]["vitals"]
    assert [(e["node"]["id"], e["node"]["measure"], e["node"]["value"]) for e in readings["edges"]] == [
        (reading, "HEART_RATE", 72.0)
    ]

    second_hygiene = payload["tasks"][1]["id"]
    blank = await gql(client, NOT_DONE, {"input": {"taskId": second_hygiene, "reason": " "}}, token=caregiver)
    assert blank["data"]["markTaskNotDone"]["userErrors"] == [{"field": "reason", "code": "BAD_USER_INPUT"}]
    refused = await gql(
        client, NOT_DONE, {"input": {"taskId": second_hygiene, "reason": "长者拒绝"}}, token=caregiver
    )
    assert refused["data"]["markTaskNotDone"]["task"]["notDoneReason"] == "长者拒绝"

    # An edit: a new version; the two closed tasks stay as they were, the open ones follow the new time.
    edited = await gql(
        client,
        SET_ITEM,
        {
            "input": {
                **item_input(resident, recurrence="FREQ=DAILY;BYHOUR=10;BYMINUTE=0"),
                "residentId": None,
                "itemId": item["id"],
            }
        },
        token=head_nurse,
    )
    assert edited["data"]["setCarePlanItem"]["item"]["version"] == 2
    after_edit = await gql(client, MORE_TASKS, {"id": resident, "after": None}, token=caregiver)
    hygiene = [
        e["node"] for e in after_edit["data"]["resident"]["tasks"]["edges"] if e["node"]["kind"] == "HYGIENE"
    ]
    closed = {(t["id"], t["status"], t["itemVersion"]) for t in hygiene if t["status"] != "OPEN"}
    assert closed == {(first_hygiene, "DONE", 1), (second_hygiene, "NOT_DONE", 1)}
    assert {
        datetime.fromisoformat(t["dueAt"]).astimezone(SHANGHAI).hour for t in hygiene if t["status"] == "OPEN"
    } == {10}

    removed = (await gql(client, REMOVE, {"id": item["id"]}, token=head_nurse))["data"]["removeCarePlanItem"]
    assert removed == {"removedId": item["id"], "userErrors": []}
    plan = (await gql(client, PLAN, {"id": resident}, token=caregiver))["data"]["resident"]
    assert [i["label"] for i in plan["carePlan"]["items"]] == [None]
    assert codes(await gql(client, REMOVE, {"id": item["id"]}, token=head_nurse)) == ["NOT_FOUND"]


async def test_bad_items_are_user_errors(client: httpx.AsyncClient, world: World) -> None:
    assert world.institution_ids
    institution, resident_pk, _ = await home("计划检查养老院")
    resident = encode_id("Resident", institution, resident_pk)
    doctor = staff_member_token(institution, StaffRole.DOCTOR)
    elsewhere = await provision_institution(NewInstitution(name="别家", region_code="test-east"))
    stranger = await staff_account(elsewhere.id, StaffRole.CAREGIVER)

    async def errors(**changes: object) -> list[str | None]:
        body = await gql(client, SET_ITEM, {"input": item_input(resident, **changes)}, token=doctor)
        payload = body["data"]["setCarePlanItem"]
        assert payload["item"] is None and {e["code"] for e in payload["userErrors"]} == {"BAD_USER_INPUT"}
        return [e["field"] for e in payload["userErrors"]]

    assert await errors(recurrence="FREQ=YEARLY;BYMONTH=4;BYMONTHDAY=31") == ["recurrence"]
    assert await errors(recurrence="FREQ=SECONDLY") == ["recurrence"]
    assert await errors(assigneeRole="gardener") == ["assigneeRole"]
    assert await errors(assigneeRole=None, caregiverId=encode_id("StaffMember", institution, stranger)) == [
        "caregiverId"
    ]
    assert await errors(durationMinutes=0) == ["durationMinutes"]
    assert await errors(recurrence="FREQ=MINUTELY", durationMinutes=0, assigneeRole="x") == [
        "recurrence",
        "assigneeRole",
        "durationMinutes",
    ]
    message = await gql(client, SET_ITEM, {"input": item_input(resident, durationMinutes=0)}, token=doctor)
    assert message["data"]["setCarePlanItem"]["userErrors"][0]["message"] == "预计用时须为 1 至 480 分钟。"
    assert await errors(residentId=None) == ["residentId"]  # neither a resident nor an item
    plan = await gql(client, PLAN, {"id": resident}, token=doctor)
    assert plan["data"]["resident"]["carePlan"]["items"] == []


async def test_who_may_see_and_do_tasks(client: httpx.AsyncClient, world: World) -> None:
    assert world.institution_ids
    institution, resident_pk, son = await home("任务权限养老院")
    resident = encode_id("Resident", institution, resident_pk)
    head_nurse = staff_member_token(institution, StaffRole.HEAD_NURSE)
    added = await gql(client, SET_ITEM, {"input": item_input(resident)}, token=head_nurse)
    item = added["data"]["setCarePlanItem"]["item"]["id"]
    task = added["data"]["setCarePlanItem"]["tasks"][0]["id"]

    account = await create_account(
        NewAccount(
            AccountKind.FAMILY, f"tasks-{uuid.uuid4().hex[:10]}@example.com", "家属", "a-long-passphrase-9"
        )
    )
    await add_family_link(account, institution, family_member_id=son, resident_id=resident_pk)
    family = token_for(Principal(f"account:{account.id}", PrincipalKind.FAMILY))
    supervisor = token_for(
        Principal("account:870002", PrincipalKind.SUPERVISOR, region_ids=frozenset({1, 2}))
    )
    butler = staff_member_token(institution, StaffRole.BUTLER)
    caregiver = staff_member_token(institution, StaffRole.CAREGIVER)

    care_plan = "query($id: ID!) { resident(id: $id) { carePlan { items { id } } } }"
    tasks = "query($id: ID!) { resident(id: $id) { tasks { totalCount } } }"
    for token in (family, butler):
        assert "FORBIDDEN" in codes(await gql(client, care_plan, {"id": resident}, token=token))
        assert "FORBIDDEN" in codes(await gql(client, tasks, {"id": resident}, token=token))
    for token in (family, supervisor):
        assert codes(await gql(client, MY_TASKS, {}, token=token)) == ["FORBIDDEN"]
        assert codes(await gql(client, COMPLETE, {"input": {"taskId": task}}, token=token)) in (
            ["FORBIDDEN"],
            ["NOT_FOUND"],
        )
    assert codes(await gql(client, SET_ITEM, {"input": item_input(resident)}, token=caregiver)) == [
        "FORBIDDEN"
    ]
    assert codes(await gql(client, COMPLETE, {"input": {"taskId": task}}, token=butler)) == ["FORBIDDEN"]

    other, _, _ = await home("任务别家养老院")
    theirs = staff_member_token(other, StaffRole.HEAD_NURSE)
    assert codes(await gql(client, care_plan, {"id": resident}, token=theirs)) == ["NOT_FOUND"]
    assert codes(await gql(client, COMPLETE, {"input": {"taskId": task}}, token=theirs)) == ["NOT_FOUND"]
    assert codes(await gql(client, NOT_DONE, {"input": {"taskId": task, "reason": "x"}}, token=theirs)) == [
        "NOT_FOUND"
    ]
    assert codes(await gql(client, REMOVE, {"id": item}, token=theirs)) == ["NOT_FOUND"]
    edit = {**item_input(resident), "residentId": None, "itemId": item}
    assert codes(await gql(client, SET_ITEM, {"input": edit}, token=theirs)) == ["NOT_FOUND"]
    # Nothing changed by the refused calls.
    assert (await gql(client, MORE_TASKS, {"id": resident}, token=head_nurse))["data"]["resident"]["tasks"][
        "edges"
    ][0]["node"]["status"] == "OPEN"

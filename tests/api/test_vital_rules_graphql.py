"""Rules over vital signs through GraphQL: the default rules listed, a rule added, edited (a new version) and
retired, bad input as userErrors, who may do what; glucose recorded high on three days fires once, the
firing on the resident, its task in the doctor's myTasks and completed, the notification without a value."""

import json
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import httpx

from care.models import CareLevel, Gender
from care.residents import Admission, admit_resident
from compliance.principals import StaffRole
from schema.ids import encode_id
from tenants.context import TenantRef
from tenants.db import default_connection
from tenants.registry import NewInstitution, provision_institution, tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.conftest import World, gql, staff_member_token

SHANGHAI = ZoneInfo("Asia/Shanghai")
RULE_FIELDS = (
    "id version name measure condition times days direction notifyRoles taskRole taskLabel taskDueMinutes"
    " active retiredAt"
)
RULES = (
    "query($all: Boolean!) { vitalRules(includeRetired: $all) { totalCount edges { node { "
    + RULE_FIELDS
    + " } } } }"
)
SET_RULE = (
    "mutation($input: SetVitalRuleInput!) { setVitalRule(input: $input) { rule { " + RULE_FIELDS + " }"
    " userErrors { field message code } } }"
)
RETIRE = (
    "mutation($id: ID!) { retireVitalRule(input: {ruleId: $id}) { rule { id retiredAt }"
    " userErrors { field code } } }"
)
RECORD = (
    "mutation($input: RecordVitalSignInput!) { recordVitalSign(input: $input) { reading { id flag }"
    " userErrors { field } } }"
)
FIRINGS = (
    "query($id: ID!) { resident(id: $id) { vitalRuleFirings(first: 10) { totalCount edges { node {"
    " id ruleId ruleVersion ruleName measure condition direction times days readingId measuredAt firedAt"
    " endedAt endedReason taskId } } } } }"
)
MY_TASKS = (
    "query($day: Date) { myTasks(day: $day) { totalCount edges { node { id residentId itemId itemVersion"
    " ruleFiringId kind assigneeRole status dueAt } } } }"
)
COMPLETE = (
    "mutation($input: CompleteTaskInput!) { completeTask(input: $input) {"
    " task { id status result ruleFiringId } userErrors { field code } } }"
)


async def home(name: str) -> tuple[int, int, TenantRef]:
    institution = await provision_institution(
        NewInstitution(name=name, region_code="test-east", time_zone="Asia/Shanghai")
    )

    async def admit() -> int:
        record = await admit_resident(
            Admission("规则长者", Gender.FEMALE, date(1938, 3, 4), CareLevel.ASSISTED, date(2026, 1, 2))
        )
        return record.id

    tenant = tenant_ref(institution)
    return institution.id, await run_in_tenant(tenant, admit), tenant


def codes(body: dict) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


def rule_input(**changes: object) -> dict[str, object]:
    given: dict[str, object] = {
        "name": "心率一天内三次偏快",
        "measure": "HEART_RATE",
        "condition": "COUNT_WITHIN_DAYS",
        "times": 3,
        "days": 1,
        "direction": "ABOVE",
        "notifyRoles": ["head_nurse"],
        "taskRole": "nurse",
        "taskLabel": "复测心率",
        "taskDueMinutes": 30,
    }
    given.update(changes)
    return given


async def test_rules_listed_added_edited_and_retired(client: httpx.AsyncClient, world: World) -> None:
    assert world.institution_ids
    institution, _, _ = await home("规则配置养老院")
    doctor = staff_member_token(institution, StaffRole.DOCTOR)

    listed = await gql(client, RULES, {"all": False}, token=doctor)
    defaults = [edge["node"] for edge in listed["data"]["vitalRules"]["edges"]]
    assert {(r["measure"], r["condition"], r["times"], r["days"], r["direction"]) for r in defaults} == {
        ("GLUCOSE", "CONSECUTIVE_DAYS", 3, 3, "ABOVE"),
        ("BLOOD_PRESSURE", "COUNT_WITHIN_DAYS", 3, 7, "ABOVE"),
        ("SPO2", "COUNT_WITHIN_DAYS", 2, 1, "BELOW"),
    }

    added = (await gql(client, SET_RULE, {"input": rule_input()}, token=doctor))["data"]["setVitalRule"]
    assert added["userErrors"] == []
    rule = added["rule"]
    assert (rule["version"], rule["measure"], rule["taskRole"], rule["taskDueMinutes"]) == (
        1,
        "HEART_RATE",
        "nurse",
        30,
    )
    edited = await gql(
        client,
        SET_RULE,
        {"input": rule_input(ruleId=rule["id"], times=4, notifyRoles=["doctor"])},
        token=doctor,
    )
    assert edited["data"]["setVitalRule"]["rule"]["id"] == rule["id"]
    assert edited["data"]["setVitalRule"]["rule"]["version"] == 2
    assert edited["data"]["setVitalRule"]["rule"]["notifyRoles"] == ["doctor"]

    retired = await gql(client, RETIRE, {"id": rule["id"]}, token=doctor)
    assert retired["data"]["retireVitalRule"]["rule"]["retiredAt"] is not None
    again = await gql(client, RETIRE, {"id": rule["id"]}, token=doctor)
    assert again["data"]["retireVitalRule"]["userErrors"] == [{"field": "ruleId", "code": "CONFLICT"}]
    assert (await gql(client, RULES, {"all": False}, token=doctor))["data"]["vitalRules"]["totalCount"] == 3
    assert (await gql(client, RULES, {"all": True}, token=doctor))["data"]["vitalRules"]["totalCount"] == 4

    # Who may: nurses read, not edit; caregivers neither; another institution's rule is not found.
    nurse = staff_member_token(institution, StaffRole.NURSE)
    assert codes(await gql(client, RULES, {"all": False}, token=nurse)) == []
    assert codes(await gql(client, SET_RULE, {"input": rule_input()}, token=nurse)) == ["FORBIDDEN"]
    caregiver = staff_member_token(institution, StaffRole.CAREGIVER)
    assert codes(await gql(client, RULES, {"all": False}, token=caregiver)) == ["FORBIDDEN"]
    other = staff_member_token(world.institution_ids[0], StaffRole.DOCTOR)
    foreign = await gql(client, SET_RULE, {"input": rule_input(ruleId=rule["id"])}, token=other)
    assert codes(foreign) == ["NOT_FOUND"] and foreign["data"] is None


async def test_bad_rules_are_user_errors(client: httpx.AsyncClient, world: World) -> None:
    assert world.institution_ids
    institution, _, _ = await home("规则校验养老院")
    admin = staff_member_token(institution, StaffRole.INSTITUTION_ADMIN)

    async def errors(**changes: object) -> list[tuple[str, str]]:
        body = await gql(client, SET_RULE, {"input": rule_input(**changes)}, token=admin)
        payload = body["data"]["setVitalRule"]
        assert payload["rule"] is None or payload["userErrors"] == []
        return sorted((e["field"], e["code"]) for e in payload["userErrors"])

    assert await errors(times=0) == [("times", "BAD_USER_INPUT")]
    assert await errors(days=0) == [("days", "BAD_USER_INPUT")]
    assert await errors(days=91) == [("days", "BAD_USER_INPUT")]
    assert await errors(condition="CONSECUTIVE_DAYS", times=5, days=3) == [("times", "BAD_USER_INPUT")]
    assert await errors(measure="pulse") == [("measure", "BAD_USER_INPUT")]
    assert await errors(notifyRoles=["nobody"]) == [("notifyRoles", "BAD_USER_INPUT")]
    assert await errors(taskRole="sales") == [("taskRole", "BAD_USER_INPUT")]
    assert await errors(notifyRoles=[]) == [("notifyRoles", "BAD_USER_INPUT")]  # no recipients
    several = await errors(times=0, days=0, measure="pulse", notifyRoles=[])
    assert [field for field, _ in several] == ["days", "measure", "notifyRoles", "times"]
    body = await gql(client, SET_RULE, {"input": rule_input(times=0)}, token=admin)
    assert "次数" in body["data"]["setVitalRule"]["userErrors"][0]["message"]  # in Chinese
    assert (await gql(client, RULES, {"all": True}, token=admin))["data"]["vitalRules"]["totalCount"] == 3


async def test_glucose_fires_once_task_in_my_tasks_and_completed(
    client: httpx.AsyncClient, world: World
) -> None:
    assert world.institution_ids
    institution, resident_pk, tenant = await home("规则触发养老院")
    resident = encode_id("Resident", institution, resident_pk)
    nurse = staff_member_token(institution, StaffRole.NURSE)
    first_day = datetime.now(SHANGHAI).date() - timedelta(days=6)

    async def glucose(offset: int, value: float, hour: int = 7) -> None:
        measured = datetime.combine(first_day + timedelta(days=offset), time(hour), SHANGHAI)
        given = {
            "residentId": resident,
            "measure": "GLUCOSE",
            "value": value,
            "context": "FASTING",
            "measuredAt": measured.isoformat(),
        }
        body = await gql(client, RECORD, {"input": given}, token=nurse)
        assert body["data"]["recordVitalSign"]["userErrors"] == [], body

    for offset in (0, 1, 2, 3):  # fires on the third day, not again on the fourth
        await glucose(offset, 8.6)
    await glucose(3, 9.1, hour=19)
    found = await gql(client, FIRINGS, {"id": resident}, token=nurse)
    firings = found["data"]["resident"]["vitalRuleFirings"]
    assert firings["totalCount"] == 1
    firing = firings["edges"][0]["node"]
    assert (firing["measure"], firing["condition"], firing["direction"], firing["ruleVersion"]) == (
        "GLUCOSE",
        "CONSECUTIVE_DAYS",
        "ABOVE",
        1,
    )
    assert firing["endedAt"] is None and firing["taskId"] is not None
    await glucose(4, 5.0)  # back in range: the episode ends
    ended = (await gql(client, FIRINGS, {"id": resident}, token=nurse))["data"]["resident"][
        "vitalRuleFirings"
    ]
    assert ended["edges"][0]["node"]["endedReason"] == "BACK_IN_RANGE"

    # The task is the doctor's (the default rule's role): in myTasks of its day, and it can be completed.
    doctor = staff_member_token(institution, StaffRole.DOCTOR)
    tasks = await gql(
        client,
        "query($id: ID!) { resident(id: $id) { tasks(first: 10) { edges { node { id } } } } }",
        {"id": resident},
        token=doctor,
    )
    assert [e["node"]["id"] for e in tasks["data"]["resident"]["tasks"]["edges"]] == [firing["taskId"]]
    due_day = None
    for offset in (0, 1):
        day = (datetime.now(SHANGHAI) + timedelta(days=offset)).date().isoformat()
        mine = (await gql(client, MY_TASKS, {"day": day}, token=doctor))["data"]["myTasks"]
        if mine["totalCount"]:
            due_day = day
            (task,) = [edge["node"] for edge in mine["edges"]]
    assert due_day is not None
    assert (task["id"], task["ruleFiringId"], task["itemId"], task["itemVersion"]) == (
        firing["taskId"],
        firing["id"],
        None,
        None,
    )
    assert (task["kind"], task["assigneeRole"], task["status"], task["residentId"]) == (
        "OBSERVATION",
        "doctor",
        "OPEN",
        resident,
    )
    caregiver_day = await gql(
        client, MY_TASKS, {"day": due_day}, token=staff_member_token(institution, StaffRole.CAREGIVER)
    )
    assert caregiver_day["data"]["myTasks"]["totalCount"] == 0
    done = await gql(client, COMPLETE, {"input": {"taskId": task["id"], "result": "已评估"}}, token=doctor)
    assert done["data"]["completeTask"]["task"]["status"] == "DONE"
    assert done["data"]["completeTask"]["task"]["ruleFiringId"] == firing["id"]

    # One notification, to the rule's roles, with the rule's id only: no value.
    async def outbox() -> list[dict]:
        return await default_connection().execute_query_dict(
            "SELECT kind, recipient_roles, message_params::text AS params, subject_type"
            " FROM notification_outbox WHERE resident_id = $1",
            [resident_pk],
        )

    sent = await run_in_tenant(tenant, outbox)
    assert [(row["kind"], row["subject_type"]) for row in sent] == [("vital.rule_fired", "VitalRuleFiring")]
    assert set(json.loads(sent[0]["params"])) == {"rule_id"}
    assert all(value not in json.dumps(sent, default=str) for value in ("8.6", "9.1"))

    # Firings are read as vitals: not by a butler, not from another institution.
    other = staff_member_token(world.institution_ids[0], StaffRole.DOCTOR)
    assert codes(await gql(client, FIRINGS, {"id": resident}, token=other)) == ["NOT_FOUND"]
    butler = staff_member_token(institution, StaffRole.BUTLER)
    assert codes(await gql(client, FIRINGS, {"id": resident}, token=butler)) == ["FORBIDDEN"]

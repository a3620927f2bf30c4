"""Work orders through GraphQL: staff and family accounts raise them (a family account only about a
resident it follows, and it sees only its own), handlers assign, move and comment them, the requester
rates once after resolution, admins set routing and deadlines, KPIs per category; bad input as
userErrors; other roles FORBIDDEN, other institutions and other families NOT_FOUND."""

import uuid
from datetime import UTC, date, datetime, timedelta

import httpx

from care.models import CareLevel, Gender, Relationship
from care.residents import Admission, NewFamilyMember, add_family_member, admit_resident
from compliance.identity.account_models import AccountKind
from compliance.identity.accounts import NewAccount, add_family_link, create_account
from compliance.principals import Principal, PrincipalKind, StaffRole
from schema.ids import encode_id
from tenants.db import default_connection
from tenants.models import Institution
from tenants.registry import NewInstitution, provision_institution, tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.care.notification_support import staff_account
from tests.conftest import World, gql, staff_member_token, token_for

FIELDS = (
    "id kind category priority residentId location title description requesterKind requestedByMe department"
    " assigneeId status responseDueAt resolutionDueAt respondedAt resolvedAt closedAt responseBreached"
    " resolutionBreached responseMinutes resolutionMinutes rating ratingComment"
)
RAISE = (
    "mutation($input: RaiseWorkOrderInput!) { raiseWorkOrder(input: $input) {"
    " workOrder { " + FIELDS + " } userErrors { field code } } }"
)
CHANGE = (
    "mutation($id: ID!, $change: WorkOrderChange!) { changeWorkOrderStatus(input: {workOrderId: $id,"
    " change: $change}) { workOrder { status respondedAt resolvedAt closedAt } userErrors { field code } } }"
)
ASSIGN = (
    "mutation($input: AssignWorkOrderInput!) { assignWorkOrder(input: $input) {"
    " workOrder { status assigneeId department respondedAt } userErrors { field code } } }"
)
COMMENT = (
    "mutation($id: ID!, $body: String!) { commentOnWorkOrder(input: {workOrderId: $id, body: $body}) {"
    " comment { body byMe authorKind } userErrors { field code } } }"
)
RATE = (
    "mutation($id: ID!, $rating: Int!, $comment: String) { rateWorkOrder(input: {workOrderId: $id,"
    " rating: $rating, comment: $comment}) { workOrder { rating ratingComment status }"
    " userErrors { field code } } }"
)
ONE = (
    "query($id: ID!) { workOrder(id: $id) { id status title comments { body byMe }"
    " history { action actor } } }"
)
LIST = (
    "query($filter: WorkOrderFilterInput) { workOrders(filter: $filter) { totalCount"
    " edges { node { id title status department } } } }"
)
MINE = "{ myWorkOrders { totalCount edges { node { id } } } }"
KPIS = (
    "query($from: DateTime!, $to: DateTime!) { workOrderKpis(from: $from, to: $to) { category raised"
    " responded resolved medianResponseMinutes responseWithinSlaPercent averageRating ratings } }"
)
ROUTE = (
    "mutation($input: SetWorkOrderRoutingRuleInput!) { setWorkOrderRoutingRule(input: $input) {"
    " rule { category priority department } userErrors { field code } } }"
)
SLA = (
    "mutation($input: SetWorkOrderSlaPolicyInput!) { setWorkOrderSlaPolicy(input: $input) {"
    " policy { category priority responseMinutes resolutionMinutes } userErrors { field code } } }"
)


def codes(body: dict) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


async def family_token(institution_id: int, resident_pk: int, member_pk: int) -> str:
    account = await create_account(
        NewAccount(
            AccountKind.FAMILY, f"wo-{uuid.uuid4().hex[:10]}@example.com", "家属", "a-long-passphrase-9"
        )
    )
    await add_family_link(account, institution_id, family_member_id=member_pk, resident_id=resident_pk)
    return token_for(Principal(f"account:{account.id}", PrincipalKind.FAMILY))


async def home(name: str) -> tuple[int, list[tuple[int, int]]]:
    """(institution id, [(resident pk, family member pk)] of two residents)."""
    institution = await provision_institution(NewInstitution(name=name, region_code="test-east"))

    async def admit() -> list[tuple[int, int]]:
        found = []
        for label in ("甲", "乙"):
            resident = await admit_resident(
                Admission(
                    f"工单长者{label}", Gender.MALE, date(1937, 7, 7), CareLevel.ASSISTED, date(2026, 2, 1)
                )
            )
            son = await add_family_member(
                resident.id, NewFamilyMember("儿子", Relationship.SON, "13700004444")
            )
            found.append((resident.id, son.id))
        return found

    return institution.id, await run_in_tenant(tenant_ref(institution), admit)


def raise_input(**changes: object) -> dict[str, object]:
    given: dict[str, object] = {
        "category": "maintenance",
        "priority": "high",
        "title": "台灯不亮",
        "location": "302",
    }
    given.update(changes)
    return given


async def test_the_whole_flow_with_a_family_requester(client: httpx.AsyncClient, world: World) -> None:
    assert world.institution_ids
    institution, [(resident_pk, son), (other_pk, other_son)] = await home("工单流程养老院")
    resident = encode_id("Resident", institution, resident_pk)
    other = encode_id("Resident", institution, other_pk)
    family = await family_token(institution, resident_pk, son)
    other_family = await family_token(institution, other_pk, other_son)
    fixer_pk = (await staff_account(institution, StaffRole.LOGISTICS)).id
    fixer = staff_member_token(institution, StaffRole.LOGISTICS, fixer_pk)
    butler = staff_member_token(
        institution, StaffRole.BUTLER, (await staff_account(institution, StaffRole.BUTLER)).id
    )
    admin = staff_member_token(
        institution,
        StaffRole.INSTITUTION_ADMIN,
        (await staff_account(institution, StaffRole.INSTITUTION_ADMIN)).id,
    )

    # A family account raises about the resident it follows; not about another; not about no one.
    raised = await gql(
        client,
        RAISE,
        {"input": raise_input(residentId=resident, kind="complaint", description="晚上看不清")},
        token=family,
    )
    payload = raised["data"]["raiseWorkOrder"]
    assert payload["userErrors"] == []
    order = payload["workOrder"]
    assert (order["residentId"], order["kind"], order["category"], order["priority"]) == (
        resident,
        "COMPLAINT",
        "MAINTENANCE",
        "HIGH",
    )
    assert (order["department"], order["status"], order["requesterKind"], order["requestedByMe"]) == (
        "logistics",
        "OPEN",
        "FAMILY",
        True,
    )
    due = datetime.fromisoformat(order["responseDueAt"])
    assert datetime.fromisoformat(order["resolutionDueAt"]) - due == timedelta(hours=8) - timedelta(
        minutes=30
    )
    assert codes(await gql(client, RAISE, {"input": raise_input(residentId=other)}, token=family)) == [
        "NOT_FOUND"
    ]
    nobody = (await gql(client, RAISE, {"input": raise_input()}, token=family))["data"]["raiseWorkOrder"]
    assert nobody == {"workOrder": None, "userErrors": [{"field": "residentId", "code": "BAD_USER_INPUT"}]}

    staff_order = (await gql(client, RAISE, {"input": raise_input(title="电梯异响")}, token=butler))["data"][
        "raiseWorkOrder"
    ]["workOrder"]
    assert staff_order["residentId"] is None and staff_order["requesterKind"] == "STAFF"

    # A family account sees only what it raised; another family's is NOT_FOUND.
    listed = (await gql(client, LIST, {}, token=family))["data"]["workOrders"]
    assert [e["node"]["id"] for e in listed["edges"]] == [order["id"]] and listed["totalCount"] == 1
    assert (await gql(client, MINE, token=family))["data"]["myWorkOrders"]["totalCount"] == 1
    assert codes(await gql(client, ONE, {"id": order["id"]}, token=other_family)) == ["NOT_FOUND"]
    assert codes(await gql(client, ONE, {"id": staff_order["id"]}, token=family)) == ["NOT_FOUND"]
    assert (await gql(client, LIST, {}, token=other_family))["data"]["workOrders"]["totalCount"] == 0
    every = (await gql(client, LIST, {}, token=butler))["data"]["workOrders"]
    assert every["totalCount"] == 2 and every["edges"][0]["node"]["title"] == "电梯异响"

    # Handling: a family account may not; a resolve before acknowledging is refused.
    assert codes(await gql(client, CHANGE, {"id": order["id"], "change": "ACKNOWLEDGE"}, token=family)) == [
        "FORBIDDEN"
    ]
    early = (await gql(client, CHANGE, {"id": order["id"], "change": "RESOLVE"}, token=fixer))["data"]
    assert early["changeWorkOrderStatus"]["userErrors"] == [{"field": "change", "code": "CONFLICT"}]
    wrong_assignee = await gql(
        client,
        ASSIGN,
        {"input": {"workOrderId": order["id"], "assigneeId": encode_id("StaffMember", institution, 1)}},
        token=admin,
    )
    assert wrong_assignee["data"]["assignWorkOrder"]["userErrors"] == [
        {"field": "assigneeId", "code": "BAD_USER_INPUT"}
    ]
    unknown = await gql(
        client, ASSIGN, {"input": {"workOrderId": order["id"], "department": "garden"}}, token=admin
    )
    assert unknown["data"]["assignWorkOrder"]["userErrors"] == [
        {"field": "department", "code": "BAD_USER_INPUT"}
    ]
    assigned = await gql(
        client,
        ASSIGN,
        {
            "input": {
                "workOrderId": order["id"],
                "assigneeId": encode_id("StaffMember", institution, fixer_pk),
            }
        },
        token=admin,
    )
    assigned_order = assigned["data"]["assignWorkOrder"]["workOrder"]
    assert (assigned_order["status"], assigned_order["assigneeId"]) == (
        "ACKNOWLEDGED",
        encode_id("StaffMember", institution, fixer_pk),
    )
    assert assigned_order["respondedAt"] is not None
    for change, status in (("START", "IN_PROGRESS"), ("RESOLVE", "RESOLVED")):
        moved = (await gql(client, CHANGE, {"id": order["id"], "change": change}, token=fixer))["data"]
        assert moved["changeWorkOrderStatus"]["workOrder"]["status"] == status
    commented = (await gql(client, COMMENT, {"id": order["id"], "body": "已更换灯泡"}, token=fixer))["data"]
    assert commented["commentOnWorkOrder"]["comment"] == {
        "body": "已更换灯泡",
        "byMe": True,
        "authorKind": "STAFF",
    }
    thanks = (await gql(client, COMMENT, {"id": order["id"], "body": "谢谢"}, token=family))["data"]
    assert thanks["commentOnWorkOrder"]["comment"]["authorKind"] == "FAMILY"
    blank = (await gql(client, COMMENT, {"id": order["id"], "body": " "}, token=family))["data"]
    assert blank["commentOnWorkOrder"]["userErrors"] == [{"field": "body", "code": "BAD_USER_INPUT"}]

    # Rating: the requester only, 1 to 5, once.
    assert codes(await gql(client, RATE, {"id": order["id"], "rating": 5}, token=admin)) == ["FORBIDDEN"]
    assert codes(await gql(client, RATE, {"id": order["id"], "rating": 5}, token=other_family)) == [
        "NOT_FOUND"
    ]
    out_of_range = (await gql(client, RATE, {"id": order["id"], "rating": 6}, token=family))["data"]
    assert out_of_range["rateWorkOrder"]["userErrors"] == [{"field": "rating", "code": "BAD_USER_INPUT"}]
    rated = (await gql(client, RATE, {"id": order["id"], "rating": 5, "comment": "很快"}, token=family))[
        "data"
    ]
    assert rated["rateWorkOrder"]["workOrder"] == {"rating": 5, "ratingComment": "很快", "status": "CLOSED"}
    again = (await gql(client, RATE, {"id": order["id"], "rating": 4}, token=family))["data"]
    assert again["rateWorkOrder"]["userErrors"] == [{"field": "workOrderId", "code": "CONFLICT"}]

    seen = (await gql(client, ONE, {"id": order["id"]}, token=family))["data"]["workOrder"]
    assert [c["body"] for c in seen["comments"]] == ["已更换灯泡", "谢谢"]
    assert [c["byMe"] for c in seen["comments"]] == [False, True]
    assert [h["action"] for h in seen["history"]] == [
        "raised",
        "assigned",
        "started",
        "resolved",
        "commented",
        "commented",
        "rated",
        "closed",
    ]

    # The requester cancels its own staff work order; KPIs count both.
    cancelled = (await gql(client, CHANGE, {"id": staff_order["id"], "change": "CANCEL"}, token=butler))[
        "data"
    ]
    assert cancelled["changeWorkOrderStatus"]["workOrder"]["status"] == "CANCELLED"
    now = datetime.now(UTC)
    window = {"from": (now - timedelta(hours=1)).isoformat(), "to": (now + timedelta(hours=1)).isoformat()}
    figures = (await gql(client, KPIS, window, token=admin))["data"]["workOrderKpis"]
    maintenance = next(f for f in figures if f["category"] == "MAINTENANCE")
    assert (maintenance["raised"], maintenance["responded"], maintenance["resolved"]) == (2, 1, 1)
    assert (
        maintenance["responseWithinSlaPercent"],
        maintenance["averageRating"],
        maintenance["ratings"],
    ) == (
        100.0,
        5.0,
        1,
    )
    assert codes(await gql(client, KPIS, window, token=family)) == ["FORBIDDEN"]
    assert codes(await gql(client, KPIS, window, token=fixer)) == ["FORBIDDEN"]


async def test_configuration_and_bad_input(client: httpx.AsyncClient, world: World) -> None:
    assert world.institution_ids
    institution, [(resident_pk, _), _] = await home("工单配置养老院")
    admin = staff_member_token(
        institution,
        StaffRole.INSTITUTION_ADMIN,
        (await staff_account(institution, StaffRole.INSTITUTION_ADMIN)).id,
    )
    caregiver = staff_member_token(
        institution, StaffRole.CAREGIVER, (await staff_account(institution, StaffRole.CAREGIVER)).id
    )

    def errors(body: dict, name: str) -> list[tuple[str, str]]:
        return [(e["field"], e["code"]) for e in body["data"][name]["userErrors"]]

    bad = await gql(
        client,
        RAISE,
        {"input": raise_input(category="gardening", priority="soon", kind="praise", title="")},
        token=caregiver,
    )
    assert errors(bad, "raiseWorkOrder") == [
        ("kind", "BAD_USER_INPUT"),
        ("category", "BAD_USER_INPUT"),
        ("priority", "BAD_USER_INPUT"),
        ("title", "BAD_USER_INPUT"),
    ]
    bad_sla = await gql(
        client,
        SLA,
        {"input": {"category": "care", "priority": "urgent", "responseMinutes": 0, "resolutionMinutes": -1}},
        token=admin,
    )
    assert errors(bad_sla, "setWorkOrderSlaPolicy") == [
        ("responseMinutes", "BAD_USER_INPUT"),
        ("resolutionMinutes", "BAD_USER_INPUT"),
    ]
    bad_rule = await gql(
        client, ROUTE, {"input": {"category": "toys", "priority": "x", "department": "garden"}}, token=admin
    )
    assert errors(bad_rule, "setWorkOrderRoutingRule") == [
        ("category", "BAD_USER_INPUT"),
        ("priority", "BAD_USER_INPUT"),
        ("department", "BAD_USER_INPUT"),
    ]
    sla_input = {"category": "care", "priority": "urgent", "responseMinutes": 10, "resolutionMinutes": 120}
    assert codes(await gql(client, SLA, {"input": sla_input}, token=caregiver)) == ["FORBIDDEN"]
    route_input = {"category": "care", "priority": "urgent", "department": "front_desk"}
    assert codes(await gql(client, ROUTE, {"input": route_input}, token=caregiver)) == ["FORBIDDEN"]
    policy = (await gql(client, SLA, {"input": sla_input}, token=admin))["data"]["setWorkOrderSlaPolicy"]
    assert policy["policy"] == {
        "category": "CARE",
        "priority": "URGENT",
        "responseMinutes": 10,
        "resolutionMinutes": 120,
    }
    rule = (await gql(client, ROUTE, {"input": route_input}, token=admin))["data"]["setWorkOrderRoutingRule"]
    assert rule["rule"] == {"category": "CARE", "priority": "URGENT", "department": "front_desk"}

    resident = encode_id("Resident", institution, resident_pk)
    urgent = await gql(
        client,
        RAISE,
        {"input": raise_input(residentId=resident, category="care", priority="urgent")},
        token=caregiver,
    )
    order = urgent["data"]["raiseWorkOrder"]["workOrder"]
    assert order["department"] == "front_desk"
    assert datetime.fromisoformat(order["resolutionDueAt"]) - datetime.fromisoformat(
        order["responseDueAt"]
    ) == (timedelta(minutes=110))
    configured = await gql(
        client,
        "{ workOrderDepartments { code name memberRoles } workOrderSlaPolicies { category } }",
        token=caregiver,
    )
    departments = {d["code"]: d for d in configured["data"]["workOrderDepartments"]}
    assert departments["nursing"]["name"] == "护理" and "nurse" in departments["nursing"]["memberRoles"]
    assert len(configured["data"]["workOrderSlaPolicies"]) == 24
    filtered = await gql(
        client, LIST, {"filter": {"category": "CARE", "statuses": ["OPEN"]}}, token=caregiver
    )
    assert [e["node"]["id"] for e in filtered["data"]["workOrders"]["edges"]] == [order["id"]]

    # Another institution: NOT_FOUND for its work orders, residents and staff.
    elsewhere, _ = await home("工单别家养老院")
    theirs = staff_member_token(
        elsewhere,
        StaffRole.INSTITUTION_ADMIN,
        (await staff_account(elsewhere, StaffRole.INSTITUTION_ADMIN)).id,
    )
    assert codes(await gql(client, ONE, {"id": order["id"]}, token=theirs)) == ["NOT_FOUND"]
    assert codes(await gql(client, CHANGE, {"id": order["id"], "change": "ACKNOWLEDGE"}, token=theirs)) == [
        "NOT_FOUND"
    ]
    assert codes(await gql(client, RAISE, {"input": raise_input(residentId=resident)}, token=theirs)) == [
        "NOT_FOUND"
    ]
    assert (await gql(client, LIST, {}, token=theirs))["data"]["workOrders"]["totalCount"] == 0


async def test_routing_decides_who_handles_a_work_order(client: httpx.AsyncClient, world: World) -> None:
    """Routed to logistics: logistics staff, the assignee and the admin handle it; a nurse sees it but may
    not change, assign or comment on it (FORBIDDEN, NOT_HANDLER); re-routed to nursing, the roles turn;
    the queue filters."""
    assert world.institution_ids
    institution, _ = await home("工单部门路由养老院")

    async def token(role: StaffRole) -> tuple[str, int]:
        account_id = (await staff_account(institution, role)).id
        return staff_member_token(institution, role, account_id), account_id

    requester, _ = await token(StaffRole.CAREGIVER)
    fixer, _ = await token(StaffRole.LOGISTICS)
    nurse, nurse_pk = await token(StaffRole.NURSE)
    head_nurse, _ = await token(StaffRole.HEAD_NURSE)
    admin, _ = await token(StaffRole.INSTITUTION_ADMIN)
    order = (await gql(client, RAISE, {"input": raise_input()}, token=requester))["data"]["raiseWorkOrder"][
        "workOrder"
    ]
    assert order["department"] == "logistics"
    meals = (await gql(client, RAISE, {"input": raise_input(category="meals")}, token=requester))["data"][
        "raiseWorkOrder"
    ]["workOrder"]
    care_order = (await gql(client, RAISE, {"input": raise_input(category="care")}, token=requester))["data"][
        "raiseWorkOrder"
    ]["workOrder"]

    def refused(body: dict) -> list[tuple[str, str]]:
        return [(e["extensions"]["code"], e["extensions"].get("reason")) for e in body.get("errors", [])]

    not_handler = [("FORBIDDEN", "NOT_HANDLER")]
    for other in (nurse, head_nurse):
        acknowledge = {"id": order["id"], "change": "ACKNOWLEDGE"}
        assert refused(await gql(client, CHANGE, acknowledge, token=other)) == not_handler
        reroute = {"input": {"workOrderId": order["id"], "department": "nursing"}}
        assert refused(await gql(client, ASSIGN, reroute, token=other)) == not_handler
        comment = {"id": order["id"], "body": "我来看看"}
        assert refused(await gql(client, COMMENT, comment, token=other)) == not_handler
        seen = (await gql(client, ONE, {"id": order["id"]}, token=other))["data"]["workOrder"]
        assert seen["status"] == "OPEN" and [h["action"] for h in seen["history"]] == ["raised"]

    async def denials() -> list[tuple[str, str]]:
        _, rows = await default_connection().execute_query(
            "SELECT principal_subject, reason_code FROM audit_event"
            " WHERE action = 'work_order.handle' AND outcome = 'denied' ORDER BY seq"
        )
        return [(row["principal_subject"], row["reason_code"]) for row in rows]

    institution_ref = tenant_ref(await Institution.get(id=institution))
    assert [reason for _, reason in await run_in_tenant(institution_ref, denials)] == ["not_handler"] * 6
    handled = await gql(client, CHANGE, {"id": order["id"], "change": "ACKNOWLEDGE"}, token=fixer)
    assert handled["data"]["changeWorkOrderStatus"]["workOrder"]["status"] == "ACKNOWLEDGED"
    started = await gql(client, CHANGE, {"id": order["id"], "change": "START"}, token=admin)
    assert started["data"]["changeWorkOrderStatus"]["workOrder"]["status"] == "IN_PROGRESS"
    # The head nurse supervises nursing (a lead role) but not logistics.
    cared = await gql(client, CHANGE, {"id": care_order["id"], "change": "ACKNOWLEDGE"}, token=head_nurse)
    assert cared["data"]["changeWorkOrderStatus"]["workOrder"]["status"] == "ACKNOWLEDGED"

    # Queues: a logistics worker's departments (logistics, kitchen, housekeeping); a nurse's (nursing).
    def ids(body: dict) -> list[str]:
        return [edge["node"]["id"] for edge in body["data"]["workOrders"]["edges"]]

    queue = {"filter": {"myDepartments": True}}
    assert ids(await gql(client, LIST, queue, token=fixer)) == [meals["id"], order["id"]]
    assert ids(await gql(client, LIST, queue, token=nurse)) == [care_order["id"]]
    assert ids(await gql(client, LIST, queue, token=admin)) == [care_order["id"], meals["id"], order["id"]]
    assert len(ids(await gql(client, LIST, {}, token=nurse))) == 3  # viewing stays the role's
    mine = {"filter": {"mine": True, "category": "MAINTENANCE"}}
    assert ids(await gql(client, LIST, mine, token=requester)) == [order["id"]]
    assert ids(await gql(client, LIST, mine, token=fixer)) == []

    # Re-routing by a handler: recorded, deadlines kept; then nursing handles it, logistics no longer.
    rerouted = await gql(
        client, ASSIGN, {"input": {"workOrderId": order["id"], "department": "nursing"}}, token=fixer
    )
    assert rerouted["data"]["assignWorkOrder"]["workOrder"]["department"] == "nursing"
    assert rerouted["data"]["assignWorkOrder"]["workOrder"]["status"] == "IN_PROGRESS"
    comment = {"id": order["id"], "body": "已转护理部"}
    assert refused(await gql(client, COMMENT, comment, token=fixer)) == not_handler
    assert ids(await gql(client, LIST, queue, token=fixer)) == [meals["id"]]
    assigned = await gql(
        client,
        ASSIGN,
        {
            "input": {
                "workOrderId": order["id"],
                "assigneeId": encode_id("StaffMember", institution, nurse_pk),
            }
        },
        token=head_nurse,
    )
    assert assigned["data"]["assignWorkOrder"]["userErrors"] == []
    resolved = await gql(client, CHANGE, {"id": order["id"], "change": "RESOLVE"}, token=nurse)
    assert resolved["data"]["changeWorkOrderStatus"]["workOrder"]["status"] == "RESOLVED"
    after = (
        await gql(
            client,
            "query($id: ID!) { workOrder(id: $id) { responseDueAt resolutionDueAt"
            " history { action department } } }",
            {"id": order["id"]},
            token=requester,
        )
    )["data"]["workOrder"]
    assert (after["responseDueAt"], after["resolutionDueAt"]) == (
        order["responseDueAt"],
        order["resolutionDueAt"],
    )
    assert [(h["action"], h["department"]) for h in after["history"]] == [
        ("raised", "logistics"),
        ("acknowledged", None),
        ("started", None),
        ("rerouted", "nursing"),
        ("assigned", "nursing"),
        ("resolved", None),
    ]

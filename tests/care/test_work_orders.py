"""Work orders in the domain: routing by rules kept as data, SLA deadlines per category and priority,
escalation once per deadline (response and resolution) with a controllable clock, the KPI timestamps and
the KPI query, the status flow refusing invalid changes, the requester's single rating, sealed free text
(under the resident's key, else the institution's), and bad input reported all at once."""

import asyncio
from datetime import UTC, date, datetime, timedelta

import asyncpg
import pytest

from care import data_requests
from care import work_orders as wo
from care.models import CareLevel, Gender
from care.residents import Admission, admit_resident
from compliance.encryption import destroy_data_key
from compliance.principals import StaffRole
from tenants.context import TenantRef
from tenants.db import asyncpg_dsn, default_connection
from tenants.errors import Conflict, Forbidden, ValidationFailed
from tests.care.notification_support import staff_account
from tests.compliance.audit_support import fresh_tenant, in_tenant
from tests.conftest import World
from tests.demo_support import SeededDemo

T0 = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai
STAFF = wo.Requester(wo.RequesterKind.STAFF, 880_001)
FAMILY = wo.Requester(wo.RequesterKind.FAMILY, 880_002)


async def resident_of(tenant: TenantRef) -> int:
    async def admit() -> int:
        record = await admit_resident(
            Admission("工单长者", Gender.FEMALE, date(1938, 2, 3), CareLevel.ASSISTED, date(2026, 1, 5))
        )
        return record.id

    return await in_tenant(tenant, admit)


def new(category: str = "maintenance", priority: str = "normal", **changes: object) -> wo.NewWorkOrder:
    given: dict[str, object] = {
        "kind": "request",
        "category": category,
        "priority": priority,
        "title": "房间台灯不亮",
        "description": "3号楼302床头灯",
        "location": "3号楼 302",
    }
    given.update(changes)
    return wo.NewWorkOrder(**given)  # type: ignore[arg-type]


async def outbox() -> list[tuple[object, ...]]:
    _, rows = await default_connection().execute_query(
        "SELECT kind, recipient_roles, recipient_account_ids, subject_id, idempotency_key "
        "FROM notification_outbox ORDER BY id"
    )
    return [tuple(row.values()) for row in rows]


async def test_routing_and_deadlines_follow_the_data(world: World) -> None:
    assert world.institution_ids
    tenant = await fresh_tenant("工单路由养老院")

    async def work() -> None:
        lamp = await wo.raise_work_order(new(), STAFF, now=T0)
        assert (lamp.department_code, lamp.status) == ("logistics", wo.Status.OPEN)
        assert lamp.response_due_at == T0 + timedelta(hours=2)
        assert lamp.resolution_due_at == T0 + timedelta(days=1)
        assert (lamp.title, lamp.description, lamp.location) == (
            "房间台灯不亮",
            "3号楼302床头灯",
            "3号楼 302",
        )
        urgent_care = await wo.raise_work_order(new("care", "urgent", title="呼叫铃无人应答"), STAFF, now=T0)
        assert urgent_care.department_code == "nursing"
        assert urgent_care.response_due_at - T0 == timedelta(minutes=15)
        assert urgent_care.resolution_due_at - T0 == timedelta(hours=4)
        low_cleaning = await wo.raise_work_order(new("cleaning", "low"), STAFF, now=T0)
        assert low_cleaning.department_code == "housekeeping"
        assert (low_cleaning.response_due_at - T0, low_cleaning.resolution_due_at - T0) == (
            timedelta(hours=4),
            timedelta(days=2),
        )
        assert (await wo.raise_work_order(new("billing"), STAFF, now=T0)).department_code == "finance"
        assert (await wo.raise_work_order(new("meals"), STAFF, now=T0)).department_code == "kitchen"
        assert (await wo.raise_work_order(new("other"), STAFF, now=T0)).department_code == "front_desk"

        # A rule with a priority wins over the category's; an edited policy applies to new work orders.
        await wo.set_routing_rule("maintenance", "urgent", "front_desk", by="account:1", now=T0)
        await wo.set_routing_rule("maintenance", None, "housekeeping", by="account:1", now=T0)
        await wo.set_sla_policy("maintenance", "urgent", 5, 60, by="account:1", now=T0)
        urgent = await wo.raise_work_order(new(priority="urgent"), STAFF, now=T0)
        assert urgent.department_code == "front_desk"
        assert (urgent.response_due_at - T0, urgent.resolution_due_at - T0) == (
            timedelta(minutes=5),
            timedelta(hours=1),
        )
        assert (await wo.raise_work_order(new(), STAFF, now=T0)).department_code == "housekeeping"
        assert (await wo.work_order(lamp.id)).response_due_at == T0 + timedelta(hours=2)  # not moved
        rules = {
            (r.category.value, r.priority.value if r.priority else None) for r in await wo.routing_rules()
        }
        assert ("maintenance", "urgent") in rules and len(rules) == 7
        assert len(await wo.sla_policies()) == 24

        # The department's members are told of each new work order, once.
        created = [row for row in await outbox() if row[0] == "work_order.created"]
        assert created[0] == (
            "work_order.created",
            ["logistics"],
            [],
            lamp.id,
            f"work_order.created:{lamp.id}",
        )
        assert created[1][1] == ["caregiver", "head_nurse", "nurse"]

    await in_tenant(tenant, work)


async def test_bad_input_is_reported_at_once(world: World) -> None:
    assert world.institution_ids
    tenant = await fresh_tenant("工单输入养老院")

    async def work() -> None:
        with pytest.raises(ValidationFailed) as raised:
            await wo.raise_work_order(
                new("gardening", "whenever", kind="praise", title="  ", location="x" * 101), STAFF, now=T0
            )
        assert [p.field for p in raised.value.problems] == [
            "kind",
            "category",
            "priority",
            "title",
            "location",
        ]
        with pytest.raises(ValidationFailed) as raised:
            await wo.set_sla_policy("care", "urgent", 0, -5, by="account:1", now=T0)
        assert [p.field for p in raised.value.problems] == ["responseMinutes", "resolutionMinutes"]
        with pytest.raises(ValidationFailed) as raised:
            await wo.set_sla_policy("care", "urgent", 60, 30, by="account:1", now=T0)
        assert [p.field for p in raised.value.problems] == ["resolutionMinutes"]
        with pytest.raises(ValidationFailed) as raised:
            await wo.set_routing_rule("toys", "soon", "garden", by="account:1", now=T0)
        assert [p.field for p in raised.value.problems] == ["category", "priority", "department"]
        assert (await wo.sla_for(wo.Category.CARE, wo.Priority.URGENT)).response_minutes == 15

    await in_tenant(tenant, work)


async def test_status_flow_kpi_timestamps_and_invalid_changes(world: World) -> None:
    assert world.institution_ids
    tenant = await fresh_tenant("工单流程养老院")
    fixer = (await staff_account(tenant.institution_id, StaffRole.LOGISTICS)).id
    nurse = (await staff_account(tenant.institution_id, StaffRole.NURSE)).id

    async def work() -> None:
        found = await wo.raise_work_order(new(), STAFF, now=T0)
        with pytest.raises(Conflict):
            await wo.change_status(found.id, wo.Transition.RESOLVE, actor="account:2", now=T0)
        with pytest.raises(Conflict):
            await wo.change_status(found.id, wo.Transition.CLOSE, actor="account:2", now=T0)
        with pytest.raises(ValidationFailed) as raised:
            await wo.assign(found.id, assignee_account_id=nurse, department_code=None, actor="a", now=T0)
        assert [p.field for p in raised.value.problems] == ["assigneeId"]
        with pytest.raises(ValidationFailed) as raised:
            await wo.assign(found.id, assignee_account_id=None, department_code="garden", actor="a", now=T0)
        assert [p.field for p in raised.value.problems] == ["department"]

        assigned = await wo.assign(
            found.id,
            assignee_account_id=fixer,
            department_code=None,
            actor="account:3",
            now=T0 + timedelta(minutes=20),
        )
        assert (assigned.status, assigned.assignee_account_id) == (wo.Status.ACKNOWLEDGED, fixer)
        assert assigned.responded_at == T0 + timedelta(minutes=20)
        started = await wo.change_status(
            found.id, wo.Transition.START, actor="account:3", now=T0 + timedelta(hours=1)
        )
        assert started.responded_at == T0 + timedelta(minutes=20)  # the first response stays
        resolved = await wo.change_status(
            found.id, wo.Transition.RESOLVE, actor="account:3", now=T0 + timedelta(hours=3)
        )
        assert (resolved.status, resolved.resolved_at) == (wo.Status.RESOLVED, T0 + timedelta(hours=3))
        assert (resolved.response_minutes, resolved.resolution_minutes) == (20, 180)
        reopened = await wo.change_status(
            found.id, wo.Transition.REOPEN, actor="account:880001", now=T0 + timedelta(hours=4)
        )
        assert (reopened.status, reopened.resolved_at, reopened.reopened_count) == (
            wo.Status.IN_PROGRESS,
            None,
            1,
        )
        await wo.change_status(
            found.id, wo.Transition.RESOLVE, actor="account:3", now=T0 + timedelta(hours=5)
        )
        closed = await wo.change_status(
            found.id, wo.Transition.CLOSE, actor="account:3", now=T0 + timedelta(hours=6)
        )
        assert (closed.status, closed.closed_at) == (wo.Status.CLOSED, T0 + timedelta(hours=6))
        for change in wo.Transition:
            if change is not wo.Transition.CLOSE:
                with pytest.raises(Conflict):
                    await wo.change_status(found.id, change, actor="account:3", now=T0 + timedelta(hours=7))
        with pytest.raises(Conflict):
            await wo.assign(found.id, assignee_account_id=fixer, department_code=None, actor="a", now=T0)

        cancelled = await wo.raise_work_order(new(), STAFF, now=T0)
        done = await wo.change_status(cancelled.id, wo.Transition.CANCEL, actor="account:880001", now=T0)
        assert (done.status, done.cancelled_at) == (wo.Status.CANCELLED, T0)
        with pytest.raises(Conflict):
            await wo.change_status(cancelled.id, wo.Transition.REOPEN, actor="account:3", now=T0)

        history = [(e.action, e.from_status, e.to_status) for e in (await wo.events_of([found.id]))[found.id]]
        assert [action for action, _, _ in history] == [
            "raised",
            "assigned",
            "started",
            "resolved",
            "reopened",
            "resolved",
            "closed",
        ]
        # The requester is told of each resolution, once each.
        resolved_rows = [row for row in await outbox() if row[0] == "work_order.resolved"]
        assert [(row[2], row[4]) for row in resolved_rows] == [
            ([STAFF.account_id], f"work_order.resolved:{found.id}:0"),
            ([STAFF.account_id], f"work_order.resolved:{found.id}:1"),
        ]

    await in_tenant(tenant, work)


async def test_sla_breaches_escalate_once_per_deadline(world: World) -> None:
    assert world.institution_ids
    tenant = await fresh_tenant("工单超时养老院")
    resident = await resident_of(tenant)

    async def work() -> None:
        urgent = await wo.raise_work_order(new("care", "urgent", resident_id=resident), STAFF, now=T0)
        calm = await wo.raise_work_order(new("cleaning", "low"), STAFF, now=T0 + timedelta(days=1))
        assert await wo.sweep_sla_breaches(T0 + timedelta(minutes=15)) == 0  # exactly at the deadline
        assert await wo.sweep_sla_breaches(T0 + timedelta(minutes=16)) == 1
        assert await wo.sweep_sla_breaches(T0 + timedelta(minutes=17)) == 0  # once
        found = await wo.work_order(urgent.id)
        assert found.response_escalated_at == T0 + timedelta(minutes=16)
        assert found.response_breached(T0 + timedelta(minutes=16)) and not found.resolution_breached(T0)
        # Responded late: the response breach stays on record, the resolution deadline still counts.
        await wo.change_status(
            urgent.id, wo.Transition.START, actor="account:3", now=T0 + timedelta(minutes=30)
        )
        assert await wo.sweep_sla_breaches(T0 + timedelta(hours=4, minutes=1)) == 1
        assert await wo.sweep_sla_breaches(T0 + timedelta(hours=4, minutes=2)) == 0
        late = await wo.work_order(urgent.id)
        assert late.resolution_escalated_at == T0 + timedelta(hours=4, minutes=1)
        assert late.response_breached(T0) and late.resolution_breached(T0 + timedelta(hours=5))
        # The low-priority cleaning misses both deadlines in one sweep: each escalated once.
        assert await wo.sweep_sla_breaches(T0 + timedelta(days=3, minutes=1)) == 1
        assert await wo.sweep_sla_breaches(T0 + timedelta(days=4)) == 0
        both = await wo.work_order(calm.id)
        assert both.response_escalated_at == both.resolution_escalated_at == T0 + timedelta(days=3, minutes=1)

        breached = [row for row in await outbox() if row[0] == "work_order.sla_breached"]
        assert [(row[1], row[3], row[4]) for row in breached] == [
            (["head_nurse"], urgent.id, f"work_order.sla_breached:{urgent.id}:response"),
            (["head_nurse"], urgent.id, f"work_order.sla_breached:{urgent.id}:resolution"),
            (["institution_admin"], calm.id, f"work_order.sla_breached:{calm.id}:response"),
            (["institution_admin"], calm.id, f"work_order.sla_breached:{calm.id}:resolution"),
        ]
        history = [e.action for e in (await wo.events_of([calm.id]))[calm.id]]
        assert history == ["raised", "response_breached", "resolution_breached"]
        # The sweep is on the resident's audit trail as the system; the other work order has no resident.
        _, audited = await default_connection().execute_query(
            "SELECT principal_subject, action, resident_id FROM audit_event"
            " WHERE action = 'work_order.escalate'"
        )
        assert [tuple(row.values()) for row in audited] == [
            ("system:work-orders", "work_order.escalate", resident),
            ("system:work-orders", "work_order.escalate", resident),
        ]
        # Filters on breaches.
        now = T0 + timedelta(days=4)
        assert {
            w.id
            for w in await wo.work_orders_page(
                wo.WorkOrderFilter(breached=True), now=now, after_id=None, limit=10
            )
        } == {
            urgent.id,
            calm.id,
        }
        assert await wo.count_work_orders(wo.WorkOrderFilter(breached=False), now=now) == 0
        assert await wo.count_work_orders(wo.WorkOrderFilter(breached=False), now=T0 + timedelta(days=1)) == 1

    await in_tenant(tenant, work)


async def test_rating_by_the_requester_once_after_resolution(world: World) -> None:
    assert world.institution_ids
    tenant = await fresh_tenant("工单评价养老院")
    resident = await resident_of(tenant)

    async def work() -> None:
        found = await wo.raise_work_order(
            new("meals", kind="complaint", resident_id=resident), FAMILY, now=T0
        )
        with pytest.raises(Conflict):
            await wo.rate(found.id, 5, None, requester=FAMILY, now=T0)  # not resolved yet
        await wo.change_status(found.id, wo.Transition.ACKNOWLEDGE, actor="account:3", now=T0)
        await wo.change_status(
            found.id, wo.Transition.RESOLVE, actor="account:3", now=T0 + timedelta(hours=1)
        )
        with pytest.raises(Forbidden):
            await wo.rate(found.id, 5, None, requester=STAFF, now=T0)
        for wrong in (0, 6):
            with pytest.raises(ValidationFailed) as raised:
                await wo.rate(found.id, wrong, None, requester=FAMILY, now=T0)
            assert [p.field for p in raised.value.problems] == ["rating"]
        rated = await wo.rate(found.id, 4, "饭菜已改善", requester=FAMILY, now=T0 + timedelta(hours=2))
        assert (rated.rating, rated.rating_comment, rated.status) == (4, "饭菜已改善", wo.Status.CLOSED)
        assert rated.closed_at == rated.rated_at == T0 + timedelta(hours=2)
        with pytest.raises(Conflict):
            await wo.rate(found.id, 5, None, requester=FAMILY, now=T0)

        comment = await wo.add_comment(found.id, " 谢谢 ", author=FAMILY, now=T0)
        assert (await wo.comments_of([found.id]))[found.id] == [comment]
        assert comment.body == "谢谢"

        # The resident's data-subject export holds the work orders about them, comments and history too.
        exported = await data_requests.export_resident(resident)
        (held,) = exported["work_orders"]
        assert (held["title"], held["rating"], held["rating_comment"]) == ("房间台灯不亮", 4, "饭菜已改善")
        assert [c["body"] for c in held["comments"]] == ["谢谢"]
        assert [e["action"] for e in held["history"]][-1] == "commented"

    await in_tenant(tenant, work)


async def test_kpis_per_category_without_residents(world: World) -> None:
    assert world.institution_ids
    tenant = await fresh_tenant("工单指标养老院")

    async def work() -> None:
        async def handled(category: str, respond: int, resolve: int, rating: int | None = None) -> None:
            found = await wo.raise_work_order(new(category), STAFF, now=T0)
            await wo.change_status(
                found.id, wo.Transition.ACKNOWLEDGE, actor="a", now=T0 + timedelta(minutes=respond)
            )
            await wo.change_status(
                found.id, wo.Transition.RESOLVE, actor="a", now=T0 + timedelta(minutes=resolve)
            )
            if rating is not None:
                await wo.rate(
                    found.id, rating, None, requester=STAFF, now=T0 + timedelta(minutes=resolve + 1)
                )

        await handled("maintenance", 10, 100, 5)
        await handled("maintenance", 30, 200, 3)
        await handled("maintenance", 200, 2000)  # late on both (normal: 120 min, 1 day)
        await wo.raise_work_order(new("maintenance", kind="complaint"), STAFF, now=T0)  # untouched
        await wo.raise_work_order(new("billing"), STAFF, now=T0 - timedelta(days=40))  # outside the period

        figures = {
            k.category: k
            for k in await wo.kpis(T0 - timedelta(days=1), T0 + timedelta(days=1), now=T0 + timedelta(days=3))
        }
        maintenance = figures[wo.Category.MAINTENANCE]
        assert (maintenance.raised, maintenance.complaints, maintenance.responded, maintenance.resolved) == (
            4,
            1,
            3,
            3,
        )
        assert (maintenance.median_response_minutes, maintenance.median_resolution_minutes) == (30, 200)
        # 2 of 4 responded in time (the untouched one is past due); 2 of 4 resolved in time.
        assert (maintenance.response_within_sla_percent, maintenance.resolution_within_sla_percent) == (
            50,
            50,
        )
        assert (maintenance.average_rating, maintenance.ratings) == (4, 2)
        assert figures[wo.Category.BILLING].raised == 0
        assert figures[wo.Category.BILLING].median_response_minutes is None
        assert len(figures) == len(wo.Category)

    await in_tenant(tenant, work)


async def test_free_text_is_sealed_and_erasure_leaves_it_unreadable(world: World) -> None:
    assert world.institution_ids
    tenant = await fresh_tenant("工单加密养老院")
    resident = await resident_of(tenant)

    async def work() -> None:
        about = await wo.raise_work_order(
            new("care", title="夜间血糖偏高未处理", resident_id=resident), FAMILY, now=T0
        )
        general = await wo.raise_work_order(new(title="电梯异响"), STAFF, now=T0)
        await wo.add_comment(about.id, "已联系医生", author=STAFF, now=T0)
        _, rows = await default_connection().execute_query(
            "SELECT title, description FROM work_order UNION ALL SELECT body, NULL FROM work_order_comment"
        )
        for row in rows:
            assert "血糖".encode() not in bytes(row["title"]) and "电梯".encode() not in bytes(row["title"])
            assert "医生".encode() not in bytes(row["title"])
        _, keys = await default_connection().execute_query(
            "SELECT subject_id FROM data_key ORDER BY subject_id"
        )
        assert [row["subject_id"] for row in keys] == [wo.INSTITUTION_SUBJECT, resident]

        await destroy_data_key(resident)
        gone = await wo.work_order(about.id)
        assert (gone.erased, gone.title, gone.description, gone.category) == (
            True,
            None,
            None,
            wo.Category.CARE,
        )
        assert (await wo.comments_of([about.id]))[about.id][0].body is None
        assert (await wo.work_order(general.id)).title == "电梯异响"

    await in_tenant(tenant, work)


async def test_the_demo_world_has_work_orders(seeded_demo: SeededDemo) -> None:
    """`make run` shows work orders in every institution: open, closed and rated, escalated."""
    conn = await asyncpg.connect(asyncpg_dsn(seeded_demo.url))
    try:
        schemas = [
            row["schema_name"] for row in await conn.fetch("SELECT schema_name FROM shared.institution")
        ]
        for schema in schemas:
            row = await conn.fetchrow(
                f"SELECT count(*) AS n, count(*) FILTER (WHERE status = 'closed') AS closed,"
                f" count(rating) AS rated, count(response_escalated_at) AS escalated,"
                f" count(*) FILTER (WHERE status = 'open') AS open FROM \"{schema}\".work_order"
            )
            assert row is not None and row["n"] >= 5, schema
            assert row["closed"] >= 2 and row["rated"] >= 2 and row["escalated"] >= 1 and row["open"] >= 1
    finally:
        await conn.close()


async def test_two_sweeps_at_once_escalate_once(world: World) -> None:
    assert world.institution_ids
    tenant = await fresh_tenant("工单并发养老院")

    async def raise_one() -> int:
        return (await wo.raise_work_order(new("care", "urgent"), STAFF, now=T0)).id

    found = await in_tenant(tenant, raise_one)
    at = T0 + timedelta(minutes=20)
    swept = await asyncio.gather(*(in_tenant(tenant, lambda: wo.sweep_sla_breaches(at)) for _ in range(2)))
    assert sorted(swept) == [0, 1]

    async def breached() -> list[tuple[object, ...]]:
        return [row for row in await outbox() if row[0] == "work_order.sla_breached"]

    assert [row[3] for row in await in_tenant(tenant, breached)] == [found]


async def test_routing_decides_who_handles_and_rerouting_keeps_the_deadlines(world: World) -> None:
    """A work order routed to logistics is handled by logistics staff, its assignee and the supervisors
    (the admin everywhere, the head nurse for nursing); re-routing it to nursing moves who handles it,
    is recorded in the history, tells nursing, keeps the deadlines and is no response; the queues."""
    assert world.institution_ids
    tenant = await fresh_tenant("工单部门养老院")
    fixer = (await staff_account(tenant.institution_id, StaffRole.LOGISTICS)).id
    nurse = (await staff_account(tenant.institution_id, StaffRole.NURSE)).id
    logistics = frozenset({StaffRole.LOGISTICS})
    nursing = frozenset({StaffRole.NURSE})
    head_nurse = frozenset({StaffRole.HEAD_NURSE})
    admin = frozenset({StaffRole.INSTITUTION_ADMIN})

    async def work() -> None:
        found = await wo.raise_work_order(new(), STAFF, now=T0)
        assert found.department_code == "logistics"
        await wo.require_handler(found.id, account_id=fixer, roles=logistics)
        await wo.require_handler(found.id, account_id=1, roles=admin)
        for account_id, roles in ((nurse, nursing), (2, head_nurse), (3, frozenset({StaffRole.FINANCE}))):
            with pytest.raises(wo.NotHandler) as refused:
                await wo.require_handler(found.id, account_id=account_id, roles=roles)
            assert isinstance(refused.value, Forbidden) and refused.value.reason == "NOT_HANDLER"

        rerouted = await wo.assign(
            found.id, assignee_account_id=None, department_code="nursing", actor="account:9", now=T0
        )
        assert (rerouted.department_code, rerouted.status, rerouted.responded_at) == (
            "nursing",
            wo.Status.OPEN,
            None,
        )
        assert (rerouted.response_due_at, rerouted.resolution_due_at) == (
            found.response_due_at,
            found.resolution_due_at,
        )
        with pytest.raises(wo.NotHandler):
            await wo.require_handler(found.id, account_id=fixer, roles=logistics)
        await wo.require_handler(found.id, account_id=nurse, roles=nursing)
        await wo.require_handler(found.id, account_id=2, roles=head_nurse)
        await wo.require_handler(found.id, account_id=1, roles=admin)

        # The assignee handles it, whatever their roles say today.
        assigned = await wo.assign(
            found.id, assignee_account_id=nurse, department_code=None, actor="account:2", now=T0
        )
        assert (assigned.status, assigned.responded_at) == (wo.Status.ACKNOWLEDGED, T0)
        await wo.require_handler(found.id, account_id=nurse, roles=frozenset())

        history = (await wo.events_of([found.id]))[found.id]
        assert [(e.action, e.actor, e.department_code, e.assignee_account_id) for e in history] == [
            ("raised", STAFF.subject, "logistics", None),
            ("rerouted", "account:9", "nursing", None),
            ("assigned", "account:2", "nursing", nurse),
        ]
        told = [row for row in await outbox() if row[0] == "work_order.rerouted"]
        assert [(sorted(row[1]), row[3]) for row in told] == [
            (["caregiver", "head_nurse", "nurse"], found.id)
        ]

        # Queues: what a staff member handles (their departments, or assigned to them).
        other = await wo.raise_work_order(new("cleaning"), STAFF, now=T0)
        assert (await wo.queue_of(fixer, logistics)).department_codes == {
            "logistics",
            "housekeeping",
            "kitchen",
        }
        assert (await wo.queue_of(1, admin)).department_codes == {d.code for d in await wo.departments()}

        async def listed(account_id: int, roles: frozenset[StaffRole]) -> list[int]:
            given = wo.WorkOrderFilter(queue=await wo.queue_of(account_id, roles))
            page = await wo.work_orders_page(given, now=T0, after_id=None, limit=10)
            assert await wo.count_work_orders(given, now=T0) == len(page)
            return [row.id for row in page]

        assert await listed(fixer, logistics) == [other.id]
        assert await listed(nurse, frozenset()) == [found.id]  # assigned to them
        assert await listed(3, frozenset({StaffRole.FINANCE})) == []
        assert await listed(1, admin) == [other.id, found.id]

    await in_tenant(tenant, work)

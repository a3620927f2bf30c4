"""Care plans and tasks in the domain: rules expanded at local times across a daylight-saving change and a
month boundary, idempotent materialization, edits that keep checked-off tasks, measured tasks in the
vitals, not-done reasons, escalation once, a caregiver's day, and bad input reported all at once."""

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TypeVar
from zoneinfo import ZoneInfo

import pytest

from care import care_plans as plans
from care import tasks, vitals
from care.models import CareLevel, Gender
from care.residents import Admission, admit_resident
from compliance.identity.account_models import AccountKind
from compliance.identity.accounts import NewAccount, add_staff_membership, create_account
from compliance.principals import StaffRole
from tenants.context import TenantRef
from tenants.db import default_connection
from tenants.errors import Conflict, ValidationFailed
from tenants.registry import NewInstitution, provision_institution, tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.conftest import World

T = TypeVar("T")
BERLIN = ZoneInfo("Europe/Berlin")
NURSE = vitals.Recorder("account:1", vitals.Source.STAFF)


async def berlin(name: str) -> TenantRef:
    institution = await provision_institution(
        NewInstitution(name=name, region_code="test-east", time_zone="Europe/Berlin")
    )
    return tenant_ref(institution)


async def staff_account(institution_id: int, role: StaffRole) -> int:
    account = await create_account(
        NewAccount(
            AccountKind.STAFF, f"plan-{uuid.uuid4().hex[:12]}@example.com", "护理员", "care-plan-password"
        )
    )
    await add_staff_membership(account, institution_id, role)
    return account.id


async def scene(tenant: TenantRef) -> int:
    async def admit() -> int:
        record = await admit_resident(
            Admission("计划长者", Gender.FEMALE, date(1939, 4, 5), CareLevel.ASSISTED, date(2026, 1, 5))
        )
        return record.id

    return await run_in_tenant(tenant, admit)


def daily(hour: int, **changes: object) -> plans.NewItem:
    given: dict[str, object] = {
        "kind": plans.TaskKind.HYGIENE,
        "recurrence": f"FREQ=DAILY;BYHOUR={hour};BYMINUTE=0",
        "duration_minutes": 15,
        "starts_at": datetime(2026, 10, 20, 0, 0),
        "label": "协助洗漱",
        "role": StaffRole.CAREGIVER,
    }
    given.update(changes)
    return plans.NewItem(**given)  # type: ignore[arg-type]


async def in_tenant(tenant: TenantRef, work: Callable[[], Awaitable[T]]) -> T:
    return await run_in_tenant(tenant, work)


async def test_daily_rule_keeps_local_time_across_dst_and_month_end(world: World) -> None:
    assert world.institution_ids
    tenant = await berlin("夏令时护理计划")
    resident = await scene(tenant)
    now = datetime(2026, 10, 22, 0, 0, tzinfo=UTC)

    async def work() -> list[tasks.Task]:
        await plans.add_item(resident, daily(8), recorded_by="account:1", now=now)
        await tasks.materialize(now, timedelta(days=12))
        return await tasks.resident_tasks(resident, now, now + timedelta(days=12), after_key=None, limit=50)

    found = await in_tenant(tenant, work)
    local = [task.due_at.astimezone(BERLIN) for task in found]
    assert [(moment.month, moment.day, moment.hour, moment.minute) for moment in local] == [
        (10, day, 8, 0) for day in range(22, 32)
    ] + [(11, 1, 8, 0), (11, 2, 8, 0)]
    # Summer time (UTC+2) until 25 October, winter time (UTC+1) from then on.
    assert found[0].due_at.astimezone(UTC).hour == 6 and found[-1].due_at.astimezone(UTC).hour == 7
    assert {task.status for task in found} == {tasks.TaskStatus.OPEN}
    assert {task.role for task in found} == {StaffRole.CAREGIVER}


async def test_month_end_and_spring_gap(world: World) -> None:
    assert world.institution_ids
    tenant = await berlin("月末护理计划")
    resident = await scene(tenant)
    now = datetime(2027, 1, 1, tzinfo=UTC)

    async def work() -> tuple[list[tasks.Task], list[datetime]]:
        last_day = await plans.add_item(
            resident,
            daily(0, recurrence="FREQ=MONTHLY;BYMONTHDAY=-1;BYHOUR=10;BYMINUTE=0"),
            recorded_by="account:1",
            now=now,
        )
        await tasks.materialize(now, timedelta(days=90))
        gap = await plans.add_item(
            resident,
            daily(0, recurrence="FREQ=DAILY;BYHOUR=2;BYMINUTE=30", starts_at=datetime(2027, 3, 27)),
            recorded_by="account:1",
            now=now,
        )
        spring = plans.occurrences(
            await plans.current_item_row(gap.id),
            datetime(2027, 3, 27, tzinfo=UTC),
            datetime(2027, 3, 30, tzinfo=UTC),
            BERLIN,
        )
        rows = await tasks.resident_tasks(resident, now, now + timedelta(days=90), after_key=None, limit=50)
        return [row for row in rows if row.item_id == last_day.id], spring

    found, spring = await in_tenant(tenant, work)
    assert [task.due_at.astimezone(BERLIN).date() for task in found] == [
        date(2027, 1, 31),
        date(2027, 2, 28),
        date(2027, 3, 31),
    ]
    # 02:30 does not exist on 28 March 2027 in Berlin: that day's task is at 03:30 summer time.
    assert [moment.astimezone(BERLIN).strftime("%m-%d %H:%M") for moment in spring] == [
        "03-27 02:30",
        "03-28 03:30",
        "03-29 02:30",
    ]


async def test_materialize_twice_adds_nothing_and_edits_keep_closed_tasks(world: World) -> None:
    assert world.institution_ids
    tenant = await berlin("计划修改")
    resident = await scene(tenant)
    start = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)

    async def work() -> None:
        item = await plans.add_item(resident, daily(9), recorded_by="account:1", now=start)
        assert await tasks.materialize(start) == 7
        assert await tasks.materialize(start) == 0
        assert await tasks.materialize(start + timedelta(hours=1)) == 0
        first = await tasks.resident_tasks(
            resident, start, start + timedelta(days=7), after_key=None, limit=50
        )
        assert len(first) == 7
        # Two days later: day 1 done, day 2 left open (past), day 3 done early, day 4 not done in advance.
        await tasks.complete_task(first[0].id, result="已完成", measurement=None, recorder=NURSE, now=start)
        await tasks.complete_task(first[2].id, result=None, measurement=None, recorder=NURSE, now=start)
        await tasks.mark_not_done(first[3].id, "外出就医", by="account:1", now=start)
        later = start + timedelta(days=2)
        edited = await plans.edit_item(item.id, daily(10), recorded_by="account:2", now=later)
        assert edited.version == 2
        upcoming = await tasks.rematerialize_item(item.id, later)
        await tasks.materialize(later)
        await tasks.materialize(later)
        rows = await tasks.resident_tasks(
            resident, start, later + timedelta(days=7), after_key=None, limit=50
        )
        seen = [
            (row.due_at.astimezone(BERLIN).strftime("%m-%d %H:%M"), row.status.value, row.item_version)
            for row in rows
        ]
        assert seen == [
            ("11-02 09:00", "done", 1),
            ("11-03 09:00", "open", 1),  # past: left as it was (it escalates)
            ("11-04 09:00", "done", 1),  # done early: kept as it was
            ("11-04 10:00", "open", 2),
            ("11-05 09:00", "not_done", 1),
            ("11-05 10:00", "open", 2),
            ("11-06 10:00", "open", 2),
            ("11-07 10:00", "open", 2),
            ("11-08 10:00", "open", 2),
            ("11-09 10:00", "open", 2),
            ("11-10 10:00", "open", 2),
        ]
        assert [row.id for row in upcoming] == [row.id for row in rows if row.due_at >= later]
        done = rows[0]
        assert done.note == "已完成" and done.done_by == "account:1"
        assert rows[4].note == "外出就医"
        # Removed: its open future tasks go, its history stays.
        await plans.remove_item(item.id, removed_by="account:1", now=later)
        await tasks.rematerialize_item(item.id, later)
        assert await tasks.materialize(later) == 0
        left = await tasks.resident_tasks(
            resident, start, later + timedelta(days=7), after_key=None, limit=50
        )
        assert [row.status.value for row in left] == ["done", "open", "done", "not_done"]
        assert await plans.plan_of(resident) == []
        # Sealed at rest: the label and the notes are not in the rows.
        raw = await default_connection().execute_query_dict(
            "SELECT label AS sealed FROM care_plan_item_version UNION ALL SELECT note FROM care_task"
        )
        stored = b"".join(bytes(row["sealed"]) for row in raw if row["sealed"] is not None)
        assert stored and all(text.encode() not in stored for text in ("协助洗漱", "外出就医", "已完成"))

    await in_tenant(tenant, work)


async def test_measured_task_lands_in_vitals_and_not_done_needs_a_reason(world: World) -> None:
    assert world.institution_ids
    tenant = await berlin("测量任务")
    resident = await scene(tenant)
    now = datetime.now(UTC).replace(microsecond=0)

    async def work() -> None:
        item = await plans.add_item(
            resident,
            plans.NewItem(
                kind=plans.TaskKind.VITAL_SIGN,
                recurrence="FREQ=HOURLY;BYMINUTE=0",
                duration_minutes=5,
                role=StaffRole.NURSE,
                measure=vitals.Measure.HEART_RATE,
            ),
            recorded_by="account:1",
            now=now,
        )
        upcoming = await tasks.rematerialize_item(item.id, now)
        assert len(upcoming) == 7 * 24
        first, second = upcoming[0], upcoming[1]
        with pytest.raises(ValidationFailed) as missing:
            await tasks.complete_task(first.id, result=None, measurement=None, recorder=NURSE, now=now)
        assert [p.field for p in missing.value.problems] == ["measurement"]
        done = await tasks.complete_task(
            first.id,
            result="安静时测量",
            measurement=vitals.NewReading(vitals.Measure.HEART_RATE, value=Decimal("72")),
            recorder=NURSE,
            now=now,
        )
        assert done.status is tasks.TaskStatus.DONE and done.reading_id is not None
        readings = await vitals.list_readings(resident, vitals.ReadingFilter(), after_id=None, limit=10)
        assert [(r.id, r.measure, r.value) for r in readings] == [
            (done.reading_id, vitals.Measure.HEART_RATE, Decimal("72"))
        ]
        with pytest.raises(Conflict):
            await tasks.mark_not_done(first.id, "重复", by="account:1", now=now)
        with pytest.raises(ValidationFailed) as no_reason:
            await tasks.mark_not_done(second.id, "  ", by="account:1", now=now)
        assert [p.field for p in no_reason.value.problems] == ["reason"]
        closed = await tasks.mark_not_done(second.id, "长者拒绝", by="account:1", now=now)
        assert closed.status is tasks.TaskStatus.NOT_DONE and closed.note == "长者拒绝"

    await in_tenant(tenant, work)


async def test_overdue_tasks_escalate_once(world: World) -> None:
    assert world.institution_ids
    tenant = await berlin("逾期升级")
    resident = await scene(tenant)
    start = datetime(2026, 11, 2, 6, 0, tzinfo=UTC)  # 07:00 in Berlin

    async def work() -> None:
        await plans.add_item(resident, daily(8, duration_minutes=20), recorded_by="account:1", now=start)
        await tasks.materialize(start)
        due = datetime(2026, 11, 2, 7, 0, tzinfo=UTC)
        # due + 20 min + 30 min of grace: not yet at 07:50, overdue after it.
        assert await tasks.escalate_overdue(due + timedelta(minutes=50)) == []
        escalated = await tasks.escalate_overdue(due + timedelta(minutes=51))
        assert [(task.due_at, task.escalated_at) for task in escalated] == [
            (due, due + timedelta(minutes=51))
        ]
        assert await tasks.escalate_overdue(due + timedelta(hours=2)) == []
        # The shift lead is notified once, through the outbox of this unit of work.
        _, outbox = await default_connection().execute_query(
            "SELECT kind, recipient_roles, resident_id, subject_type, subject_id FROM notification_outbox"
        )
        assert [tuple(row.values()) for row in outbox] == [
            ("task.overdue", ["head_nurse"], resident, "CareTask", escalated[0].id)
        ]
        # The sweep's work is on the resident's audit trail, as the system acting for the institution.
        _, audited = await default_connection().execute_query(
            "SELECT principal_subject, principal_kind, action, resident_id, data_categories, purpose "
            "FROM audit_event ORDER BY seq"
        )
        assert [tuple(row.values()) for row in audited] == [
            ("system:care-tasks", "system", action, resident, ["daily_care"], "care_delivery")
            for action in ("task.materialize", "task.escalate")
        ]
        # A task checked off in time never escalates.
        tomorrow = await tasks.resident_tasks(
            resident, due + timedelta(days=1), due + timedelta(days=2), after_key=None, limit=5
        )
        await tasks.complete_task(tomorrow[0].id, result=None, measurement=None, recorder=NURSE, now=due)
        assert await tasks.escalate_overdue(due + timedelta(days=1, hours=2)) == []

    await in_tenant(tenant, work)


async def test_tasks_of_a_caregiver_for_a_local_day(world: World) -> None:
    assert world.institution_ids
    tenant = await berlin("我的任务")
    resident = await scene(tenant)
    named = await staff_account(tenant.institution_id, StaffRole.CAREGIVER)
    other = await staff_account(tenant.institution_id, StaffRole.CAREGIVER)
    start = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)

    async def work() -> None:
        await plans.add_item(resident, daily(8), recorded_by="account:1", now=start)
        await plans.add_item(
            resident, daily(21, role=None, caregiver_id=named), recorded_by="account:1", now=start
        )
        await plans.add_item(resident, daily(12, role=StaffRole.NURSE), recorded_by="account:1", now=start)
        await tasks.materialize(start)
        day = date(2026, 11, 3)
        mine = await tasks.tasks_of_caregiver(named, {StaffRole.CAREGIVER}, day, after_key=None, limit=10)
        assert [t.due_at.astimezone(BERLIN).hour for t in mine] == [8, 21]
        assert await tasks.count_tasks_of_caregiver(named, {StaffRole.CAREGIVER}, day) == 2
        theirs = await tasks.tasks_of_caregiver(other, {StaffRole.CAREGIVER}, day, after_key=None, limit=10)
        assert [t.due_at.astimezone(BERLIN).hour for t in theirs] == [8]
        page = await tasks.tasks_of_caregiver(named, {StaffRole.CAREGIVER}, day, after_key=None, limit=1)
        rest = await tasks.tasks_of_caregiver(
            named, {StaffRole.CAREGIVER}, day, after_key=tasks.page_key(page[0]), limit=10
        )
        assert [t.id for t in page + rest] == [t.id for t in mine]

    await in_tenant(tenant, work)


async def test_bad_items_are_refused_with_every_problem(world: World) -> None:
    assert world.institution_ids
    tenant = await berlin("计划输入检查")
    resident = await scene(tenant)
    elsewhere = await provision_institution(NewInstitution(name="别家养老院", region_code="test-east"))
    stranger = await staff_account(elsewhere.id, StaffRole.CAREGIVER)
    now = datetime(2026, 11, 2, tzinfo=UTC)

    async def problems(**changes: object) -> list[tuple[str | None, str]]:
        with pytest.raises(ValidationFailed) as refused:
            await plans.add_item(resident, daily(8, **changes), recorded_by="account:1", now=now)
        return [(p.field, p.message) for p in refused.value.problems]

    async def work() -> None:
        never = "The recurrence rule never fires in the coming year."
        often = "A care task can recur at most every 15 minutes."
        assert await problems(
            recurrence="FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=30", role="janitor", duration_minutes=0
        ) == [
            ("recurrence", never),
            ("assigneeRole", "Unknown role; one of: {roles}."),
            ("durationMinutes", "The expected duration is 1 to {max} minutes."),
        ]
        assert await problems(recurrence="FREQ=DAILY;BYMONTH=2;BYMONTHDAY=31") == [("recurrence", never)]
        assert await problems(recurrence="FREQ=DAILY;UNTIL=20200101T000000") == [("recurrence", never)]
        assert await problems(recurrence="FREQ=SECONDLY") == [("recurrence", often)]
        assert await problems(recurrence="FREQ=MINUTELY;INTERVAL=5") == [("recurrence", often)]
        assert await problems(recurrence="FREQ=DAILY;BYHOUR=8;BYMINUTE=0,10") == [("recurrence", often)]
        assert await problems(recurrence="FREQ=FORTNIGHTLY") == [
            ("recurrence", "The recurrence rule cannot be read.")
        ]
        assert await problems(recurrence="FREQ=DAILY;BYYEARDAY=3") == [
            ("recurrence", "Rule part {part} is not supported.")
        ]
        assert await problems(role=None, caregiver_id=stranger) == [
            ("caregiverId", "This caregiver is not on the staff of the institution.")
        ]
        assert await problems(duration_minutes=481) == [
            ("durationMinutes", "The expected duration is 1 to {max} minutes.")
        ]
        # Every 15 minutes is the most a task may recur.
        fine = await plans.add_item(
            resident, daily(8, recurrence="FREQ=MINUTELY;INTERVAL=15"), recorded_by="account:1", now=now
        )
        assert fine.recurrence == "FREQ=MINUTELY;INTERVAL=15"
        assert [item.id for item in await plans.plan_of(resident)] == [fine.id]

    await in_tenant(tenant, work)

"""Rules over vital signs in the domain: the glucose rule fires once per episode, readings of one local day
count once, the count-within-days window, a rule's new version, two readings recorded at once fire once,
the rule's task for a role (my tasks, completed), the notification without a value, the export, and bad
input reported all at once."""

import asyncio
import dataclasses
import json
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from care import data_requests, tasks, vitals
from care import vital_rules as rules
from care.models import CareLevel, Gender
from care.residents import Admission, admit_resident
from compliance.principals import StaffRole
from tenants.context import TenantRef
from tenants.db import default_connection
from tenants.errors import Conflict, ValidationFailed
from tenants.registry import NewInstitution, provision_institution, tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.compliance.audit_support import in_tenant
from tests.conftest import World

SHANGHAI = ZoneInfo("Asia/Shanghai")
NURSE = vitals.Recorder("account:1", vitals.Source.STAFF)
HIGH_GLUCOSE, NORMAL_GLUCOSE = Decimal("8.4"), Decimal("5.2")


async def institution(name: str) -> TenantRef:
    created = await provision_institution(
        NewInstitution(name=name, region_code="test-east", time_zone="Asia/Shanghai")
    )
    return tenant_ref(created)


async def resident_of(tenant: TenantRef) -> int:
    async def admit() -> int:
        record = await admit_resident(
            Admission("规则长者", Gender.MALE, date(1940, 2, 3), CareLevel.ASSISTED, date(2026, 1, 5))
        )
        return record.id

    return await in_tenant(tenant, admit)


def first_day() -> date:
    """A local day far enough back that 14 days of readings stay in the past."""
    return datetime.now(SHANGHAI).date() - timedelta(days=15)


def at(day: date, hour: int = 7, minute: int = 30) -> datetime:
    return datetime.combine(day, time(hour, minute), SHANGHAI)


def glucose(value: Decimal, when: datetime) -> vitals.NewReading:
    return vitals.NewReading(
        vitals.Measure.GLUCOSE, value=value, context=vitals.GlucoseContext.FASTING, measured_at=when
    )


def pressure(systolic: int, diastolic: int, when: datetime) -> vitals.NewReading:
    return vitals.NewReading(
        vitals.Measure.BLOOD_PRESSURE,
        systolic=Decimal(systolic),
        diastolic=Decimal(diastolic),
        measured_at=when,
    )


def spo2(value: int, when: datetime) -> vitals.NewReading:
    return vitals.NewReading(vitals.Measure.SPO2, value=Decimal(value), measured_at=when)


async def record(tenant: TenantRef, resident: int, new: vitals.NewReading) -> vitals.Reading:
    return await in_tenant(tenant, lambda: vitals.record_reading(resident, new, NURSE))


async def firings(tenant: TenantRef, resident: int) -> list[rules.Firing]:
    found = await in_tenant(tenant, lambda: rules.firings_of(resident, before_id=None, limit=100))
    return list(reversed(found))  # oldest first


async def default_rule(tenant: TenantRef, measure: vitals.Measure) -> rules.Rule:
    found = await in_tenant(tenant, lambda: rules.rules(include_retired=False, after_id=None, limit=100))
    (matching,) = [rule for rule in found if rule.measure is measure]
    return matching


async def rows(tenant: TenantRef, sql: str, *parameters: object) -> list[dict[str, Any]]:
    async def work() -> list[dict[str, Any]]:
        return await default_connection().execute_query_dict(sql, list(parameters))

    return await in_tenant(tenant, work)


async def test_default_rules_ship_with_every_institution(world: World) -> None:
    assert world.institution_ids
    tenant = await institution("默认规则")
    found = await in_tenant(tenant, lambda: rules.rules(include_retired=False, after_id=None, limit=100))
    shapes = {(r.measure, r.condition, r.times, r.days, r.direction) for r in found}
    assert shapes == {
        (vitals.Measure.GLUCOSE, rules.Condition.CONSECUTIVE_DAYS, 3, 3, rules.Direction.ABOVE),
        (vitals.Measure.BLOOD_PRESSURE, rules.Condition.COUNT_WITHIN_DAYS, 3, 7, rules.Direction.ABOVE),
        (vitals.Measure.SPO2, rules.Condition.COUNT_WITHIN_DAYS, 2, 1, rules.Direction.BELOW),
    }
    assert all(r.version == 1 and r.active and r.notify_roles for r in found)


async def test_the_glucose_rule_fires_once_per_episode(world: World) -> None:
    assert world.institution_ids
    tenant = await institution("血糖规则")
    resident = await resident_of(tenant)
    rule = await default_rule(tenant, vitals.Measure.GLUCOSE)
    day = first_day()

    await record(tenant, resident, glucose(HIGH_GLUCOSE, at(day)))
    await record(tenant, resident, glucose(HIGH_GLUCOSE, at(day + timedelta(days=1))))
    assert await firings(tenant, resident) == []
    third = await record(tenant, resident, glucose(HIGH_GLUCOSE, at(day + timedelta(days=2))))
    (first,) = await firings(tenant, resident)  # on the third day's reading
    assert (first.rule_id, first.rule_version, first.reading_id) == (rule.id, 1, third.id)
    assert first.ended_at is None and first.task_id is not None

    # A fourth high day, and a second reading of it: the episode is open, nothing fires again.
    await record(tenant, resident, glucose(HIGH_GLUCOSE, at(day + timedelta(days=3))))
    await record(tenant, resident, glucose(HIGH_GLUCOSE, at(day + timedelta(days=3), 18)))
    assert [f.id for f in await firings(tenant, resident)] == [first.id]

    # A normal reading ends the episode.
    normal = await record(tenant, resident, glucose(NORMAL_GLUCOSE, at(day + timedelta(days=4))))
    (ended,) = await firings(tenant, resident)
    assert ended.ended_reason is rules.EndReason.BACK_IN_RANGE and ended.ended_at == normal.measured_at

    # Three more high days fire again, on the third.
    await record(tenant, resident, glucose(HIGH_GLUCOSE, at(day + timedelta(days=5))))
    await record(tenant, resident, glucose(HIGH_GLUCOSE, at(day + timedelta(days=6))))
    assert len(await firings(tenant, resident)) == 1
    seventh = await record(tenant, resident, glucose(HIGH_GLUCOSE, at(day + timedelta(days=7))))
    again = await firings(tenant, resident)
    assert len(again) == 2 and again[1].reading_id == seventh.id and again[1].ended_at is None

    # One notification per firing, to the rule's roles, naming the rule by id and no value.
    sent = await rows(
        tenant,
        "SELECT kind, recipient_roles, message_key, message_params::text AS params, subject_type, subject_id,"
        " resident_id FROM notification_outbox WHERE kind = 'vital.rule_fired' ORDER BY id",
    )
    assert [row["subject_id"] for row in sent] == [first.id, again[1].id]
    assert {row["subject_type"] for row in sent} == {"VitalRuleFiring"}
    assert {row["resident_id"] for row in sent} == {resident}
    assert {tuple(row["recipient_roles"]) for row in sent} == {
        tuple(sorted(r.value for r in rule.notify_roles))
    }
    assert [json.loads(row["params"]) for row in sent] == [{"rule_id": rule.id}] * 2
    for row in sent:
        assert "8.4" not in json.dumps(row, default=str) and "5.2" not in json.dumps(row, default=str)


async def test_readings_of_one_local_day_count_once_and_a_gap_clears_the_run(world: World) -> None:
    assert world.institution_ids
    tenant = await institution("血糖同日")
    resident = await resident_of(tenant)
    day = first_day()
    for hour in (6, 12, 20):  # three high readings of one day
        await record(tenant, resident, glucose(HIGH_GLUCOSE, at(day, hour)))
    await record(tenant, resident, glucose(HIGH_GLUCOSE, at(day + timedelta(days=1))))
    assert await firings(tenant, resident) == []  # two days, not four
    # 23:30 and 00:30 local are two days (15:30 and 16:30 UTC are one UTC day).
    await record(tenant, resident, glucose(HIGH_GLUCOSE, at(day + timedelta(days=1), 23, 30)))
    late = await record(tenant, resident, glucose(HIGH_GLUCOSE, at(day + timedelta(days=2), 0, 30)))
    (fired,) = await firings(tenant, resident)
    assert fired.reading_id == late.id

    # A day without a reading: the run is broken, the episode ends when the next reading finds it so.
    await record(tenant, resident, glucose(HIGH_GLUCOSE, at(day + timedelta(days=4))))
    (ended,) = await firings(tenant, resident)
    assert ended.ended_reason is rules.EndReason.WINDOW_CLEARED
    await record(tenant, resident, glucose(HIGH_GLUCOSE, at(day + timedelta(days=5))))
    assert len(await firings(tenant, resident)) == 1
    await record(tenant, resident, glucose(HIGH_GLUCOSE, at(day + timedelta(days=6))))
    assert len(await firings(tenant, resident)) == 2  # days 4, 5, 6


async def test_count_within_days_window(world: World) -> None:
    assert world.institution_ids
    tenant = await institution("血压血氧规则")
    resident = await resident_of(tenant)
    day = first_day()
    # Blood pressure high 3 times within 7 days: days 0, 3 and 8 are not within 7 days of each other.
    for offset in (0, 3, 8):
        await record(tenant, resident, pressure(152, 96, at(day + timedelta(days=offset))))
    await record(tenant, resident, pressure(120, 80, at(day + timedelta(days=8), 12)))  # normal between
    assert await firings(tenant, resident) == []
    ninth = await record(tenant, resident, pressure(148, 92, at(day + timedelta(days=9))))
    (fired,) = await firings(tenant, resident)  # days 3, 8 and 9 are within 7 days
    assert fired.reading_id == ninth.id and fired.measure is vitals.Measure.BLOOD_PRESSURE
    await record(tenant, resident, pressure(150, 90, at(day + timedelta(days=10))))
    assert len(await firings(tenant, resident)) == 1  # the episode is open

    # SpO2 low twice within one local day; a new day starts a new window.
    await record(tenant, resident, spo2(91, at(day + timedelta(days=11), 8)))
    await record(tenant, resident, spo2(90, at(day + timedelta(days=11), 20)))
    spo2_firings = [f for f in await firings(tenant, resident) if f.measure is vitals.Measure.SPO2]
    assert len(spo2_firings) == 1
    await record(tenant, resident, spo2(92, at(day + timedelta(days=12), 9)))
    cleared = [f for f in await firings(tenant, resident) if f.measure is vitals.Measure.SPO2]
    assert cleared[0].ended_reason is rules.EndReason.WINDOW_CLEARED
    await record(tenant, resident, spo2(89, at(day + timedelta(days=12), 15)))
    assert len([f for f in await firings(tenant, resident) if f.measure is vitals.Measure.SPO2]) == 2
    # A low SpO2 never counts for a high-pressure rule, nor a normal one against the SpO2 rule.
    assert (
        len([f for f in await firings(tenant, resident) if f.measure is vitals.Measure.BLOOD_PRESSURE]) == 1
    )


async def test_an_edit_is_a_new_version_and_firings_name_theirs(world: World) -> None:
    assert world.institution_ids
    tenant = await institution("规则版本")
    resident = await resident_of(tenant)
    rule = await default_rule(tenant, vitals.Measure.GLUCOSE)
    edit = rules.NewRule(
        name="血糖连续两天偏高",
        measure="glucose",
        condition="consecutive_days",
        times=2,
        days=None,
        direction="above",
        notify_roles=["head_nurse"],
        task_role="nurse",
        task_label="复测血糖",
        task_due_minutes=30,
    )
    edited = await in_tenant(tenant, lambda: rules.set_rule(rule.id, edit, recorded_by="account:5"))
    assert (edited.id, edited.version, edited.times, edited.days) == (rule.id, 2, 2, 2)
    versions = await rows(tenant, "SELECT version, times FROM vital_rule_version WHERE rule_id = $1", rule.id)
    assert sorted((r["version"], r["times"]) for r in versions) == [(1, 3), (2, 2)]

    day = first_day()
    await record(tenant, resident, glucose(HIGH_GLUCOSE, at(day)))
    await record(tenant, resident, glucose(HIGH_GLUCOSE, at(day + timedelta(days=1))))
    (fired,) = await firings(tenant, resident)
    assert (fired.rule_version, fired.rule_name) == (2, "血糖连续两天偏高")
    task_rows = await rows(
        tenant, "SELECT assignee_role, due_at FROM care_task WHERE rule_firing_id = $1", fired.id
    )
    assert [r["assignee_role"] for r in task_rows] == ["nurse"]
    assert task_rows[0]["due_at"] - fired.fired_at == timedelta(minutes=30)

    # Inactive: not evaluated. Retired: its open episode ends, and it cannot be edited any more.
    inactive = await in_tenant(
        tenant,
        lambda: rules.set_rule(
            rule.id,
            dataclasses.replace(edit, active=False),
            recorded_by="account:5",
        ),
    )
    assert (inactive.version, inactive.active) == (3, False)
    await record(tenant, resident, glucose(NORMAL_GLUCOSE, at(day + timedelta(days=2))))
    assert (await firings(tenant, resident))[0].ended_at is None  # an inactive rule ends nothing either
    retired = await in_tenant(
        tenant, lambda: rules.retire_rule(rule.id, retired_by="account:5", now=datetime.now(UTC))
    )
    assert retired.retired_at is not None
    assert (await firings(tenant, resident))[0].ended_reason is rules.EndReason.RULE_RETIRED
    with pytest.raises(Conflict):
        await in_tenant(tenant, lambda: rules.set_rule(rule.id, edit, recorded_by="account:5"))
    remaining = await in_tenant(tenant, lambda: rules.rules(include_retired=False, after_id=None, limit=100))
    assert rule.id not in {r.id for r in remaining}


async def test_two_readings_recorded_at_once_fire_once(world: World) -> None:
    assert world.institution_ids
    tenant = await institution("并发规则")
    resident = await resident_of(tenant)
    day = first_day()
    await record(tenant, resident, glucose(HIGH_GLUCOSE, at(day)))
    await record(tenant, resident, glucose(HIGH_GLUCOSE, at(day + timedelta(days=1))))
    first_recorded, second_started = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async def work() -> None:
            await vitals.record_reading(
                resident, glucose(HIGH_GLUCOSE, at(day + timedelta(days=2), 8)), NURSE
            )
            first_recorded.set()
            await asyncio.wait_for(second_started.wait(), 10)
            await asyncio.sleep(0.2)  # the second unit of work reaches the resident's row meanwhile

        await run_in_tenant(tenant, work)

    async def second() -> None:
        await asyncio.wait_for(first_recorded.wait(), 10)

        async def work() -> None:
            second_started.set()
            await vitals.record_reading(
                resident, glucose(HIGH_GLUCOSE, at(day + timedelta(days=2), 9)), NURSE
            )

        await run_in_tenant(tenant, work)

    await asyncio.gather(first(), second())
    fired = await firings(tenant, resident)
    assert len(fired) == 1
    assert len(await rows(tenant, "SELECT 1 FROM care_task WHERE rule_firing_id = $1", fired[0].id)) == 1
    assert len(await rows(tenant, "SELECT 1 FROM notification_outbox WHERE kind = 'vital.rule_fired'")) == 1

    # The database holds it too: a second open episode of the rule for the resident is refused.
    async def second_open_episode() -> None:
        await default_connection().execute_query(
            "INSERT INTO vital_rule_firing (rule_id, rule_version, resident_id, measured_at)"
            " VALUES ($1, $2, $3, now())",
            [fired[0].rule_id, fired[0].rule_version, resident],
        )

    with pytest.raises(Exception, match="vital_rule_firing_open_idx"):
        await in_tenant(tenant, second_open_episode)


async def test_the_rule_task_is_the_roles_and_can_be_completed(world: World) -> None:
    assert world.institution_ids
    tenant = await institution("规则任务")
    resident = await resident_of(tenant)
    day = first_day()
    for offset in range(3):
        await record(tenant, resident, glucose(HIGH_GLUCOSE, at(day + timedelta(days=offset))))
    (fired,) = await firings(tenant, resident)
    assert fired.task_id is not None
    task = await in_tenant(tenant, lambda: tasks.task(fired.task_id or 0))
    assert (task.item_id, task.item_version, task.rule_firing_id) == (None, None, fired.id)
    assert task.role is StaffRole.DOCTOR and task.status is tasks.TaskStatus.OPEN
    due_day = task.due_at.astimezone(SHANGHAI).date()

    async def doctors_day() -> list[tasks.Task]:
        return await tasks.tasks_of_caregiver(424242, {StaffRole.DOCTOR}, due_day, after_key=None, limit=50)

    assert [t.id for t in await in_tenant(tenant, doctors_day)] == [task.id]
    listed = await in_tenant(
        tenant,
        lambda: tasks.resident_tasks(
            resident,
            task.due_at - timedelta(hours=1),
            task.due_at + timedelta(hours=1),
            after_key=None,
            limit=9,
        ),
    )
    assert [t.id for t in listed] == [task.id]
    done = await in_tenant(
        tenant,
        lambda: tasks.complete_task(
            task.id,
            result="已复查，通知家属",
            measurement=None,
            recorder=vitals.Recorder("account:424242", vitals.Source.STAFF),
            now=datetime.now(UTC),
        ),
    )
    assert done.status is tasks.TaskStatus.DONE and done.note == "已复查，通知家属"

    exported = await in_tenant(tenant, lambda: data_requests.export_resident(resident))
    assert [f["id"] for f in exported["vital_rule_firings"]] == [fired.id]
    assert [t["rule_firing_id"] for t in exported["care_tasks"]] == [fired.id]


async def test_bad_rules_are_reported_all_at_once(world: World) -> None:
    assert world.institution_ids
    tenant = await institution("规则校验")
    bad = rules.NewRule(
        name=" ",
        measure="pulse_pressure",
        condition="consecutive_days",
        times=0,
        days=91,
        direction="sideways",
        notify_roles=["janitor"],
        task_role="butler",
        task_label=None,
        task_due_minutes=-5,
    )
    with pytest.raises(ValidationFailed) as caught:
        await in_tenant(tenant, lambda: rules.set_rule(None, bad, recorded_by="account:5"))
    fields = {problem.field for problem in caught.value.problems}
    assert fields == {
        "name",
        "measure",
        "direction",
        "times",
        "days",
        "notifyRoles",
        "taskRole",
        "taskLabel",
        "taskDueMinutes",
    }

    def problems_of(**changes: object) -> set[str | None]:
        given: dict[str, object] = {
            "name": "规则",
            "measure": "GLUCOSE",
            "condition": "count_within_days",
            "times": 2,
            "days": 3,
            "direction": "either",
            "notify_roles": ["doctor"],
        }
        given.update(changes)
        try:
            rules.check_rule(rules.NewRule(**given))  # type: ignore[arg-type]
        except ValidationFailed as failed:
            return {problem.field for problem in failed.problems}
        return set()

    assert problems_of() == set()
    assert problems_of(times=0) == {"times"}
    assert problems_of(days=0) == {"days"}
    assert problems_of(days=None) == {"days"}  # a count needs its window
    assert problems_of(condition="consecutive_days", times=4, days=3) == {"times"}  # N > D
    assert problems_of(condition="consecutive_days", times=4, days=None) == set()  # D = N
    assert problems_of(notify_roles=[]) == {"notifyRoles"}  # no recipients
    assert problems_of(notify_roles=["doctor", "astronaut"]) == {"notifyRoles"}
    assert problems_of(task_label="复测") == {"taskRole"}
    assert problems_of(task_role="nurse") == {"taskLabel"}
    assert await in_tenant(tenant, lambda: rules.rules(include_retired=True, after_id=None, limit=100))
    count = await rows(tenant, "SELECT count(*) AS n FROM vital_rule")
    assert count[0]["n"] == 3  # nothing was written

"""SOPs in the domain (care/sops.py): the default new-resident plan's reminders at local times across a
daylight-saving change and a month boundary, reminders and escalations once, the resident's butler,
completion into the family log, template versions pinned by instances in flight, chain templates,
birthday and discharge anchors, backdated admissions, and bad templates reported all at once."""

import asyncio
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from care import family_log, sops
from care.models import CareLevel, DischargeReason, Gender
from care.residents import Admission, Discharge, admit_resident, discharge_resident
from compliance.principals import StaffRole
from tenants.context import TenantRef
from tenants.db import default_connection
from tenants.errors import Conflict, InvalidInput, ValidationFailed
from tenants.registry import NewInstitution, get_or_create_chain, provision_institution, tenant_ref
from tests.care.notification_support import staff_account
from tests.compliance.audit_support import in_tenant
from tests.conftest import World

BERLIN = ZoneInfo("Europe/Berlin")
BY = "account:1"


async def berlin(name: str, chain: str | None = None) -> TenantRef:
    institution = await provision_institution(
        NewInstitution(name=name, region_code="test-east", time_zone="Europe/Berlin", chain_name=chain)
    )
    return tenant_ref(institution)


def at(moment: datetime, monkeypatch: pytest.MonkeyPatch) -> None:
    """The clock of the admission and discharge hooks."""
    monkeypatch.setattr(sops, "clock", lambda: moment)


async def admit(tenant: TenantRef, admitted: date, birth: date = date(1940, 3, 1)) -> int:
    async def work() -> int:
        record = await admit_resident(
            Admission("流程长者", Gender.FEMALE, birth, CareLevel.ASSISTED, admitted)
        )
        return record.id

    return await in_tenant(tenant, work)


async def outbox(tenant: TenantRef, kind: str) -> list[dict[str, Any]]:
    async def work() -> list[dict[str, Any]]:
        return await default_connection().execute_query_dict(
            """SELECT kind, recipient_roles, recipient_account_ids, subject_id, next_attempt_at, resident_id
               FROM notification_outbox WHERE kind = $1 ORDER BY id""",
            [kind],
        )

    return await in_tenant(tenant, work)


def step(title: str, day: int, **changes: Any) -> sops.NewStep:
    given: dict[str, Any] = {
        "title": title,
        "day_offset": day,
        "assignee": "butler",
        "grace_hours": 24,
        "time_of_day": "09:30",
    }
    given.update(changes)
    return sops.NewStep(**given)


async def test_new_resident_plan_reminds_at_local_times_and_escalates_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert world.institution_ids
    tenant = await berlin("SOP夏令时养老院")
    admitted_at = datetime(2026, 10, 15, 8, 0, tzinfo=UTC)
    at(admitted_at, monkeypatch)
    resident = await admit(tenant, date(2026, 10, 15))

    (instance,) = await in_tenant(tenant, lambda: sops.instances_of(resident))
    assert (instance.anchor, instance.anchor_date, instance.template_version) == (
        sops.Anchor.ADMISSION,
        date(2026, 10, 15),
        1,
    )
    local = [s.due_at.astimezone(BERLIN) for s in instance.steps]
    # Day 3, 7, 15 and 30 after admission at 10:00 Berlin time: summer time (UTC+2) until 25 October,
    # winter time (UTC+1) after it, and the last one in November.
    assert [(m.month, m.day, m.hour, m.minute) for m in local] == [
        (10, 18, 10, 0),
        (10, 22, 10, 0),
        (10, 30, 10, 0),
        (11, 14, 10, 0),
    ]
    assert [s.due_at.astimezone(UTC).hour for s in instance.steps] == [8, 8, 9, 9]
    assert {s.status for s in instance.steps} == {sops.StepStatus.OPEN}
    assert {s.assignee for s in instance.steps} == {"butler"}
    first, second, third, _ = instance.steps

    # The day before day 3: its reminder is written once, to be delivered at the due time, to the butler
    # role (no butler assigned yet).
    now = datetime(2026, 10, 17, 9, 0, tzinfo=UTC)
    swept = await in_tenant(tenant, lambda: sops.sweep_sop_steps(now))
    assert (swept.reminded, swept.escalated) == (1, 0)
    again = await in_tenant(tenant, lambda: sops.sweep_sop_steps(now))
    assert (again.reminded, again.escalated) == (0, 0)
    (due,) = await outbox(tenant, "sop.step_due")
    assert (due["subject_id"], due["next_attempt_at"], due["recipient_roles"]) == (
        first.id,
        first.due_at,
        ["butler"],
    )

    # Day 3 done with the call recorded in the family log.
    async def complete_first() -> tuple[sops.Step, int | None]:
        call = family_log.NewFamilyCommunication(
            occurred_at=datetime(2026, 10, 18, 10, 20),
            channel=family_log.Channel.PHONE,
            direction=family_log.Direction.TO_FAMILY,
            summary="入住第三天回访：睡眠尚可。",
        )
        return await sops.complete_step(first.id, call, by=BY, now=datetime(2026, 10, 18, 8, 30, tzinfo=UTC))

    done, entry = await in_tenant(tenant, complete_first)
    assert done.status is sops.StepStatus.DONE and done.family_communication_id == entry is not None

    butler = await staff_account(tenant.institution_id, StaffRole.BUTLER)
    await in_tenant(tenant, lambda: sops.assign_butler(resident, butler.id, by=BY))

    # Day 7 goes to the assigned butler; not done, it escalates to the head nurse once, after its grace.
    await in_tenant(tenant, lambda: sops.sweep_sop_steps(datetime(2026, 10, 21, 9, 0, tzinfo=UTC)))
    _, to_butler = await outbox(tenant, "sop.step_due")
    assert (to_butler["subject_id"], to_butler["recipient_account_ids"], to_butler["recipient_roles"]) == (
        second.id,
        [butler.id],
        [],
    )
    before_grace = datetime(2026, 10, 23, 7, 59, tzinfo=UTC)
    assert (await in_tenant(tenant, lambda: sops.sweep_sop_steps(before_grace))).escalated == 0
    late = datetime(2026, 10, 23, 9, 0, tzinfo=UTC)
    assert (await in_tenant(tenant, lambda: sops.sweep_sop_steps(late))).escalated == 1
    assert (await in_tenant(tenant, lambda: sops.sweep_sop_steps(late + timedelta(hours=1)))).escalated == 0
    (missed,) = await outbox(tenant, "sop.step_missed")
    assert (missed["subject_id"], missed["recipient_roles"], missed["resident_id"]) == (
        second.id,
        ["head_nurse"],
        resident,
    )

    # Day 15, after the change to winter time: delivered at 10:00 CET = 09:00 UTC.
    await in_tenant(tenant, lambda: sops.sweep_sop_steps(datetime(2026, 10, 29, 10, 0, tzinfo=UTC)))
    reminders = await outbox(tenant, "sop.step_due")
    assert [r["subject_id"] for r in reminders] == [first.id, second.id, third.id]
    assert reminders[-1]["next_attempt_at"] == datetime(2026, 10, 30, 9, 0, tzinfo=UTC)

    steps = (await in_tenant(tenant, lambda: sops.instances_of(resident)))[0].steps
    assert [s.escalated_at is not None for s in steps] == [False, True, False, False]
    assert [s.reminded_at is not None for s in steps] == [True, True, True, False]


async def test_completion_needs_its_outcome_and_writes_the_family_log(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert world.institution_ids
    tenant = await berlin("SOP回访记录养老院")
    at(datetime(2026, 11, 20, 8, 0, tzinfo=UTC), monkeypatch)
    resident = await admit(tenant, date(2026, 11, 20))
    steps = (await in_tenant(tenant, lambda: sops.instances_of(resident)))[0].steps
    now = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)

    with pytest.raises(InvalidInput) as refused:
        await in_tenant(tenant, lambda: sops.complete_step(steps[0].id, None, by=BY, now=now))
    assert refused.value.field == "outcome"

    async def complete() -> tuple[list[family_log.FamilyCommunication], sops.Step]:
        call = family_log.NewFamilyCommunication(
            occurred_at=now,
            channel=family_log.Channel.VIDEO,
            direction=family_log.Direction.TO_FAMILY,
            summary="视频回访，家属满意。",
        )
        found, _ = await sops.complete_step(steps[0].id, call, by=BY, now=now)
        log = await family_log.communications_page(resident, after_id=None, limit=10)
        return log, found

    log, found = await in_tenant(tenant, complete)
    assert [(e.summary, e.channel, e.recorded_by) for e in log] == [
        ("视频回访，家属满意。", family_log.Channel.VIDEO, BY)
    ]
    assert found.family_communication_id == log[0].id

    with pytest.raises(Conflict):
        await in_tenant(tenant, lambda: sops.skip_step(steps[0].id, "重复", by=BY, now=now))
    with pytest.raises(ValidationFailed):
        await in_tenant(tenant, lambda: sops.skip_step(steps[1].id, "  ", by=BY, now=now))
    skipped = await in_tenant(
        tenant, lambda: sops.skip_step(steps[1].id, "家属出国，改为第10天联系", by=BY, now=now)
    )
    assert (skipped.status, skipped.note, skipped.closed_reason) == (
        sops.StepStatus.SKIPPED,
        "家属出国，改为第10天联系",
        "skipped",
    )
    # A skipped step is neither reminded nor escalated.
    swept = await in_tenant(tenant, lambda: sops.sweep_sop_steps(datetime(2026, 12, 30, tzinfo=UTC)))
    assert swept.escalated == 2  # day 15 and 30 only


async def test_template_edits_never_change_instances_in_flight(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert world.institution_ids
    tenant = await berlin("SOP版本养老院")
    at(datetime(2026, 11, 1, 8, 0, tzinfo=UTC), monkeypatch)
    template = await in_tenant(
        tenant,
        lambda: sops.create_template(
            sops.NewTemplate("入住评估跟进", "admission", [step("一周小结", 7), step("两周小结", 14)]), by=BY
        ),
    )
    first = await admit(tenant, date(2026, 11, 1))
    edited = await in_tenant(
        tenant,
        lambda: sops.edit_template(
            sops.Source.INSTITUTION,
            template.id,
            sops.NewTemplate("入住评估跟进", "admission", [step("五天小结", 5, time_of_day="15:00")]),
            by=BY,
        ),
    )
    assert edited.version == 2
    second = await admit(tenant, date(2026, 11, 1))

    def ours(instances: list[sops.Instance]) -> sops.Instance:
        (found,) = [i for i in instances if i.template_id == template.id]
        return found

    kept = ours(await in_tenant(tenant, lambda: sops.instances_of(first)))
    assert kept.template_version == 1
    assert [(s.title, s.due_at.astimezone(BERLIN).day) for s in kept.steps] == [
        ("一周小结", 8),
        ("两周小结", 15),
    ]
    new = ours(await in_tenant(tenant, lambda: sops.instances_of(second)))
    assert new.template_version == 2
    assert [(s.title, s.due_at.astimezone(BERLIN).hour) for s in new.steps] == [("五天小结", 15)]

    await in_tenant(
        tenant,
        lambda: sops.retire_template(sops.Source.INSTITUTION, template.id, by=BY, now=datetime.now(UTC)),
    )
    third = await admit(tenant, date(2026, 11, 1))
    assert [i.template_id for i in await in_tenant(tenant, lambda: sops.instances_of(third))] != []
    assert all(
        i.template_id != template.id for i in await in_tenant(tenant, lambda: sops.instances_of(third))
    )
    # Retiring left the instance in flight as it was.
    assert ours(await in_tenant(tenant, lambda: sops.instances_of(first))).steps == kept.steps


async def test_a_chain_template_applies_to_every_institution_of_the_chain_only(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert world.institution_ids
    chain = f"SOP连锁{uuid.uuid4().hex[:6]}"
    await get_or_create_chain(chain)
    north, south = await berlin("SOP连锁北院", chain), await berlin("SOP连锁南院", chain)
    alone = await berlin("SOP独立养老院")
    assert north.chain_id is not None and north.chain_id == south.chain_id
    template = await sops.create_template(
        sops.NewTemplate("连锁入住关怀", "admission", [step("院长问候", 1, assignee="institution_admin")]),
        by=BY,
        chain_id=north.chain_id,
    )
    assert template.source is sops.Source.CHAIN and template.owner_id == north.chain_id
    at(datetime(2026, 11, 10, 8, 0, tzinfo=UTC), monkeypatch)
    for tenant, expected in ((north, True), (south, True), (alone, False)):
        resident = await admit(tenant, date(2026, 11, 10))
        instances = await in_tenant(tenant, lambda resident=resident: sops.instances_of(resident))
        chained = [i for i in instances if i.source is sops.Source.CHAIN and i.template_id == template.id]
        assert bool(chained) is expected, tenant.institution_id
        assert any(i.name == "新入住长者30天关怀计划" for i in instances)  # the default, everywhere
    (found,) = [i for i in instances if i.source is sops.Source.INSTITUTION]
    assert found.template_version == 1


async def test_birthday_and_discharge_anchors(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    assert world.institution_ids
    tenant = await berlin("SOP生日养老院")
    await in_tenant(
        tenant,
        lambda: sops.create_template(
            sops.NewTemplate(
                "生日关怀", "birthday", [step("生日祝福", 0, assignee="butler", time_of_day="09:00")]
            ),
            by=BY,
        ),
    )
    await in_tenant(
        tenant,
        lambda: sops.create_template(
            sops.NewTemplate(
                "出院回访", "discharge", [step("出院一周回访", 7, requires_outcome="family_communication")]
            ),
            by=BY,
        ),
    )
    at(datetime(2026, 10, 1, 8, 0, tzinfo=UTC), monkeypatch)
    resident = await admit(tenant, date(2026, 10, 1), birth=date(1940, 11, 2))
    early = datetime(2026, 10, 10, 8, 0, tzinfo=UTC)
    assert (await in_tenant(tenant, lambda: sops.sweep_sop_steps(early))).started == 0  # 23 days ahead
    now = datetime(2026, 10, 25, 8, 0, tzinfo=UTC)
    assert (await in_tenant(tenant, lambda: sops.sweep_sop_steps(now))).started == 1
    assert (await in_tenant(tenant, lambda: sops.sweep_sop_steps(now + timedelta(hours=2)))).started == 0
    birthday = [
        i
        for i in await in_tenant(tenant, lambda: sops.instances_of(resident))
        if i.anchor is sops.Anchor.BIRTHDAY
    ]
    assert [(i.anchor_date, i.steps[0].due_at.astimezone(BERLIN).hour) for i in birthday] == [
        (date(2026, 11, 2), 9)
    ]

    at(datetime(2026, 11, 20, 8, 0, tzinfo=UTC), monkeypatch)
    await in_tenant(
        tenant, lambda: discharge_resident(resident, Discharge(date(2026, 11, 20), DischargeReason.OTHER))
    )
    instances = await in_tenant(tenant, lambda: sops.instances_of(resident))
    (leaving,) = [i for i in instances if i.anchor is sops.Anchor.DISCHARGE]
    assert leaving.steps[0].due_at.astimezone(BERLIN).date() == date(2026, 11, 27)
    assert leaving.steps[0].status is sops.StepStatus.OPEN
    others = [s for i in instances if i.anchor is not sops.Anchor.DISCHARGE for s in i.steps]
    assert sops.StepStatus.OPEN not in {s.status for s in others}
    assert "discharged" in {s.closed_reason for s in others}


async def test_a_backdated_admission_does_not_escalate_what_was_past(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert world.institution_ids
    tenant = await berlin("SOP补录养老院")
    at(datetime(2026, 11, 10, 8, 0, tzinfo=UTC), monkeypatch)
    resident = await admit(tenant, date(2026, 10, 30))  # entered 11 days late
    (instance,) = await in_tenant(tenant, lambda: sops.instances_of(resident))
    assert [(s.status, s.closed_reason) for s in instance.steps] == [
        (sops.StepStatus.SKIPPED, "before_start"),
        (sops.StepStatus.SKIPPED, "before_start"),
        (sops.StepStatus.OPEN, None),
        (sops.StepStatus.OPEN, None),
    ]
    swept = await in_tenant(tenant, lambda: sops.sweep_sop_steps(datetime(2026, 11, 10, 8, 5, tzinfo=UTC)))
    assert (swept.reminded, swept.escalated) == (0, 0)


async def test_the_butler_must_hold_the_role_here(world: World) -> None:
    assert world.institution_ids
    tenant = await berlin("SOP管家养老院")
    resident = await admit(tenant, date(2026, 11, 1))
    nurse = await staff_account(tenant.institution_id, StaffRole.NURSE)
    elsewhere = await staff_account(world.institution_ids[0], StaffRole.BUTLER)
    for account in (nurse.id, elsewhere.id):
        with pytest.raises(ValidationFailed) as refused:
            await in_tenant(tenant, lambda account=account: sops.assign_butler(resident, account, by=BY))
        assert refused.value.problems[0].field == "butlerId"
    butler = await staff_account(tenant.institution_id, StaffRole.BUTLER)
    await in_tenant(tenant, lambda: sops.assign_butler(resident, butler.id, by=BY))
    assert await in_tenant(tenant, lambda: sops.butler_of(resident)) == butler.id


def test_bad_templates_are_reported_at_once() -> None:
    with pytest.raises(ValidationFailed) as refused:
        sops.check_template(
            sops.NewTemplate(
                " ",
                "moon_phase",
                [
                    step("前一天", -1),
                    step("未知岗位", 1, assignee="janitor"),
                    step("时间不对", 2, time_of_day="25:00"),
                    step("无宽限", 3, grace_hours=0),
                    step("升级给谁", 4, escalation_role="family"),
                    step("负小时", 5, hour_offset=-2),
                ],
            )
        )
    assert [(p.field, p.message) for p in refused.value.problems] == [
        ("name", "This field is required."),
        ("anchor", "Unknown anchor event."),
        ("steps.0.dayOffset", "An offset cannot put a step before its anchor event."),
        ("steps.1.assignee", "Unknown role; one of: {roles}."),
        ("steps.2.timeOfDay", "The time of day is HH:MM, from 00:00 to 23:59."),
        ("steps.3.graceHours", "The grace period is 1 to {max} hours."),
        ("steps.4.escalationRole", "Unknown role; one of: {roles}."),
        ("steps.5.hourOffset", "An offset cannot put a step before its anchor event."),
    ]
    with pytest.raises(ValidationFailed) as empty:
        sops.check_template(sops.NewTemplate("空流程", "admission", []))
    assert [p.field for p in empty.value.problems] == ["steps"]
    with pytest.raises(ValidationFailed) as many:
        sops.check_template(sops.NewTemplate("太长", "admission", [step(f"第{d}天", d) for d in range(31)]))
    assert [p.message for p in many.value.problems] == ["At most {max} steps."]


async def test_the_export_holds_the_residents_sop_steps(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert world.institution_ids
    from care.data_requests import export_resident

    tenant = await berlin("SOP导出养老院")
    at(datetime(2026, 11, 20, 8, 0, tzinfo=UTC), monkeypatch)
    resident = await admit(tenant, date(2026, 11, 20))
    butler = await staff_account(tenant.institution_id, StaffRole.BUTLER)

    async def work() -> dict[str, Any]:
        await sops.assign_butler(resident, butler.id, by=BY)
        (instance,) = await sops.instances_of(resident)
        await sops.skip_step(instance.steps[0].id, "家属要求改为第五天", by=BY, now=datetime.now(UTC))
        return await export_resident(resident)

    document = await in_tenant(tenant, work)
    assert document["sop_butler_account_id"] == butler.id
    (instance,) = document["sop_instances"]
    assert [s["status"] for s in instance["steps"]] == ["skipped", "open", "open", "open"]
    assert instance["steps"][0]["note"] == "家属要求改为第五天"


async def test_demo_residents_get_a_butler_and_a_plan_under_way(world: World) -> None:
    assert world.institution_ids
    from care import demo_sops
    from tenants.models import Institution

    tenant = await berlin("SOP演示养老院")
    today = datetime.now(BERLIN).date()
    resident = await admit(tenant, today - timedelta(days=10))
    butler = await staff_account(tenant.institution_id, StaffRole.BUTLER)

    async def as_bulk_inserted() -> None:  # the demo inserts residents without admit_resident
        await default_connection().execute_query(
            "DELETE FROM sop_instance WHERE resident_id = $1", [resident]
        )

    await in_tenant(tenant, as_bulk_inserted)
    institution = await Institution.get(id=tenant.institution_id)
    assert await demo_sops.seed_demo_sops([institution]) == 1
    assert await in_tenant(tenant, lambda: sops.butler_of(resident)) == butler.id
    (instance,) = await in_tenant(tenant, lambda: sops.instances_of(resident))
    assert [s.status for s in instance.steps] == [
        sops.StepStatus.DONE,
        sops.StepStatus.OPEN,
        sops.StepStatus.OPEN,
        sops.StepStatus.OPEN,
    ]
    assert instance.steps[0].family_communication_id is not None


async def test_two_sweeps_at_once_notify_once(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    assert world.institution_ids
    tenant = await berlin("SOP并发养老院")
    at(datetime(2026, 11, 1, 8, 0, tzinfo=UTC), monkeypatch)
    for _ in range(3):
        await admit(tenant, date(2026, 11, 1))
    now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # day 3, 7 and 15 past their grace, day 30 due soon
    first, second = await asyncio.gather(
        in_tenant(tenant, lambda: sops.sweep_sop_steps(now)),
        in_tenant(tenant, lambda: sops.sweep_sop_steps(now)),
    )
    assert (first.reminded + second.reminded, first.escalated + second.escalated) == (12, 9)
    assert len(await outbox(tenant, "sop.step_due")) == 12
    assert len(await outbox(tenant, "sop.step_missed")) == 9

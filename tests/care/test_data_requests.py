"""Data-subject requests: the export holds every part of the record; erasure leaves nothing that opens or
singles the resident out, and nobody else is touched."""

import json
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import TypeVar

import pytest

from care import care_plans, family_log, health_record, preferences, tasks, vitals
from care.data_requests import EXPORT_FORMAT, ErasureReason, erase_resident, export_resident
from care.models import CareLevel, Gender, Relationship
from care.residents import (
    Admission,
    NewFamilyMember,
    ResidentFilter,
    add_family_member,
    admit_resident,
    get_resident,
    id_card_check_character,
    list_residents,
)
from compliance.principals import StaffRole
from tenants.db import default_connection
from tenants.errors import Conflict, Erased, ValidationFailed
from tenants.models import Institution
from tenants.registry import NewInstitution, provision_institution, tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.conftest import World

T = TypeVar("T")
ID_CARD_17 = "33010619400315002"
ID_CARD = ID_CARD_17 + id_card_check_character(ID_CARD_17)


@pytest.fixture
async def institution(world: World) -> Institution:
    assert world.institution_ids  # its regions exist
    return await provision_institution(NewInstitution(name="数据请求测试养老院", region_code="test-east"))


def in_tenant(institution: Institution) -> Callable[[Callable[[], Awaitable[T]]], Awaitable[T]]:
    return lambda work: run_in_tenant(tenant_ref(institution), work)


async def _admit(name: str, phone: str, id_card: str | None = None) -> int:
    resident = await admit_resident(
        Admission(
            name,
            Gender.FEMALE,
            date(1940, 3, 15),
            CareLevel.ASSISTED,
            date(2025, 5, 1),
            id_card_number=id_card,
            phone=phone,
        )
    )
    await add_family_member(resident.id, NewFamilyMember("宋小红", Relationship.DAUGHTER, "13912345678"))
    await health_record.add_medication(
        resident.id,
        health_record.NewMedication(
            "阿托伐他汀钙片",
            Decimal(20),
            health_record.DoseUnit.MG,
            health_record.Route.ORAL,
            health_record.Frequency.AT_NIGHT,
            date(2025, 5, 2),
        ),
        recorded_by="account:1",
    )
    await vitals.record_reading(
        resident.id,
        vitals.NewReading(
            vitals.Measure.HEART_RATE, Decimal(72), measured_at=datetime(2026, 11, 30, tzinfo=UTC)
        ),
        vitals.Recorder("account:1", vitals.Source.STAFF),
    )
    await preferences.set_preferences(
        resident.id, preferences.Preferences(religion="佛教", hobbies=("书法",)), recorded_by="account:1"
    )
    await care_plans.add_item(
        resident.id,
        care_plans.NewItem(
            kind=care_plans.TaskKind.OBSERVATION,
            recurrence="FREQ=DAILY;BYHOUR=9;BYMINUTE=0",
            duration_minutes=10,
            label="晨间观察情绪",
            role=StaffRole.CAREGIVER,
        ),
        recorded_by="account:1",
        now=datetime(2026, 11, 30, tzinfo=UTC),
    )
    await tasks.materialize(datetime(2026, 11, 30, tzinfo=UTC))
    await family_log.record_family_communication(
        resident.id,
        family_log.NewFamilyCommunication(
            datetime(2026, 11, 20, 10, 0),
            family_log.Channel.PHONE,
            family_log.Direction.TO_FAMILY,
            "告知入住适应情况良好",
        ),
        recorded_by="account:1",
    )
    return resident.id


async def test_the_export_holds_every_part_of_the_record(institution: Institution) -> None:
    async def work() -> dict:
        resident = await _admit("宋玉兰", "13800001111", ID_CARD)
        return await export_resident(resident)

    document = await in_tenant(institution)(work)
    assert document["format"] == EXPORT_FORMAT
    text = json.dumps(document, ensure_ascii=False)
    for value in (
        "宋玉兰",
        ID_CARD,
        "13800001111",
        "宋小红",
        "阿托伐他汀钙片",
        "佛教",
        "书法",
        "告知入住适应情况良好",
        "晨间观察情绪",
    ):
        assert value in text, value
    assert len(document["care_plan"]) == 1 and len(document["care_tasks"]) == 7  # a week ahead
    assert document["resident"]["identity"]["birth_date"] == "1940-03-15"
    assert [r["value"] for r in document["vital_readings"]] == ["72"]
    assert len(document["family_communications"]) == 1 and document["photo"] is None


async def test_erasure_leaves_nothing_that_opens_and_touches_nobody_else(institution: Institution) -> None:
    async def work() -> None:
        erased = await _admit("宋玉兰", "13800002222", ID_CARD)
        kept = await _admit("林秀英", "13800003333")
        done = await erase_resident(
            erased,
            reason=ErasureReason.DATA_SUBJECT_REQUEST,
            reference="PIPL-2026/017",
            erased_by="account:9",
        )
        assert done.data_keys_destroyed == 1 and done.relatives_removed == 1

        assert (await get_resident(erased)).identity is None
        with pytest.raises(Erased):
            await export_resident(erased)
        assert (await get_resident(kept)).require_identity().name == "林秀英"
        assert (await export_resident(kept))["family_members"][0]["name"] == "宋小红"
        # Neither the ID-card number nor the phone finds the erased resident any more.
        assert await list_residents(ResidentFilter(id_card_number=ID_CARD), after_id=None, limit=10) == []
        assert await list_residents(ResidentFilter(phone="13800002222"), after_id=None, limit=10) == []
        _, rows = await default_connection().execute_query(
            "SELECT id_card_number_bidx, phone_bidx FROM resident WHERE id = $1", [erased]
        )
        assert tuple(rows[0]) == (None, None)
        _, tombstone = await default_connection().execute_query(
            "SELECT erased_by, reason, reference FROM resident_erasure WHERE resident_id = $1", [erased]
        )
        assert tuple(tombstone[0]) == ("account:9", "data_subject_request", "PIPL-2026/017")
        with pytest.raises(Conflict):
            await erase_resident(
                erased, reason=ErasureReason.GUARDIAN_REQUEST, reference=None, erased_by="account:9"
            )

    await in_tenant(institution)(work)


async def test_a_reference_that_could_hold_personal_data_is_refused(institution: Institution) -> None:
    async def work() -> None:
        resident = await _admit("周桂芳", "13800004444")
        with pytest.raises(ValidationFailed):
            await erase_resident(
                resident, reason=ErasureReason.DATA_SUBJECT_REQUEST, reference="周桂芳的申请", erased_by="a"
            )
        assert (await get_resident(resident)).identity is not None  # nothing done

    await in_tenant(institution)(work)

"""Preferences, emergency contacts and the family communication log in the domain: round trips, sealed at
rest, ciphertexts bound to their rows, input checked as a whole with nothing written, erased residents,
bulk reads and demo data."""

import random
import time as clock
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import TypeVar

import pytest

from care import emergency_contacts as contacts
from care import family_log as log
from care import preferences as prefs
from care.models import CareLevel, Gender, Relationship
from care.residents import Admission, NewFamilyMember, add_family_member, admit_resident
from compliance.encryption import CiphertextRejected, destroy_data_key
from tenants.db import default_connection
from tenants.errors import Erased, NotFound, ValidationFailed
from tenants.models import Institution
from tenants.registry import tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.conftest import World

T = TypeVar("T")
PLAINTEXTS = ("清真", "伊斯兰", "不吃猪肉", "下象棋", "不要提起去世的老伴", "邻居老周", "13912345678", "跌倒")


async def in_tenant(institution_id: int, work: Callable[[], Awaitable[T]]) -> T:
    return await run_in_tenant(tenant_ref(await Institution.get(id=institution_id)), work)


async def sql(query: str, *parameters: object) -> list[dict]:
    _, rows = await default_connection().execute_query(query, list(parameters))
    return [dict(row) for row in rows]


async def admitted(name: str) -> int:
    record = await admit_resident(
        Admission(name, Gender.FEMALE, date(1940, 2, 3), CareLevel.ASSISTED, date(2026, 6, 1))
    )
    return record.id


def halal() -> prefs.Preferences:
    return prefs.Preferences(
        diet=prefs.Diet(prefs.DietKind.HALAL, " 不吃猪肉 ", "不爱吃胡萝卜"),
        routine=prefs.Routine(time(6, 30), time(21, 0), True, "每周二、五上午洗澡"),
        hobbies=("下象棋", "听京剧", "下象棋"),
        religion="伊斯兰教",
        personality="开朗",
        avoid="不要提起去世的老伴",
        notes=None,
    )


def phone_call(**changes: object) -> log.NewFamilyCommunication:
    given: dict[str, object] = {
        "occurred_at": datetime(2026, 7, 1, 10, 30),
        "channel": log.Channel.PHONE,
        "direction": log.Direction.TO_FAMILY,
        "summary": "告知家属老人夜间跌倒未受伤",
    }
    return log.NewFamilyCommunication(**(given | changes))  # type: ignore[arg-type]


async def test_preferences_round_trip_keep_versions_and_are_sealed_at_rest(world: World) -> None:
    institution = world.institution_ids[10]

    async def work() -> None:
        resident = await admitted("偏好长者甲")
        other = await admitted("偏好长者乙")
        first = await prefs.set_preferences(resident, halal(), recorded_by="account:1")
        assert first.version == 1
        assert first.preferences.diet.taboos == "不吃猪肉" and first.preferences.hobbies == (
            "下象棋",
            "听京剧",
        )
        second = await prefs.set_preferences(
            resident, prefs.Preferences(diet=prefs.Diet(prefs.DietKind.SOFT)), recorded_by="account:2"
        )
        assert second.version == 2

        current = await prefs.current_preferences_of([resident, other])
        assert current[other] is None
        read = current[resident]
        assert isinstance(read, prefs.ResidentPreferences)
        assert read.version == 2 and read.preferences == prefs.Preferences(
            diet=prefs.Diet(prefs.DietKind.SOFT)
        )
        history = await prefs.preferences_history(resident)
        assert [h.version for h in history] == [2, 1]
        assert history[1].preferences == first.preferences
        assert history[1].preferences.routine.wake_time == time(6, 30)

        rows = await sql("SELECT * FROM resident_preferences WHERE resident_id = $1", resident)
        raw = b"".join(bytes(row["document"]) for row in rows)
        for plaintext in (*PLAINTEXTS, "halal", "soft", "diet"):
            assert plaintext.encode() not in raw
        assert all(len(bytes(row["document"])) > 256 for row in rows)  # padded to whole blocks

        # A document moved to the other resident's row (or to another row of the same) does not open.
        await prefs.set_preferences(other, prefs.Preferences(), recorded_by="account:1")
        await sql(
            """UPDATE resident_preferences SET document = (
                   SELECT document FROM resident_preferences WHERE resident_id = $1 AND version = 1)
               WHERE resident_id = $2""",
            resident,
            other,
        )
        with pytest.raises(CiphertextRejected):
            await prefs.current_preferences_of([other])
        # Put right again: the institution's pages are read by other tests.
        await sql("DELETE FROM resident_preferences WHERE resident_id = $1", other)

    await in_tenant(institution, work)


async def test_bad_preferences_are_reported_together_and_nothing_is_written(world: World) -> None:
    institution = world.institution_ids[10]

    async def work() -> None:
        resident = await admitted("偏好长者丙")
        bad = prefs.Preferences(
            diet=prefs.Diet(prefs.DietKind.NORMAL, "忌" * 201),
            routine=prefs.Routine(time(7, 0, 30), time(7, 0, 30)),
            hobbies=("", "x" * 31, *[f"爱好{n}" for n in range(20)]),
            personality="p" * 1001,
            notes="\0",
        )
        with pytest.raises(ValidationFailed) as failed:
            await prefs.set_preferences(resident, bad, recorded_by="account:1")
        assert {p.field for p in failed.value.problems} == {
            "diet.taboos",
            "routine.wakeTime",
            "routine.bedTime",
            "hobbies",
            "personality",
            "notes",
        }
        assert await sql("SELECT 1 FROM resident_preferences WHERE resident_id = $1", resident) == []
        with pytest.raises(NotFound):
            await prefs.set_preferences(999_999, prefs.Preferences(), recorded_by="account:1")

    await in_tenant(institution, work)


async def test_emergency_contacts_merge_flagged_family_first_and_are_sealed(world: World) -> None:
    institution = world.institution_ids[10]

    async def work() -> None:
        resident = await admitted("紧急联系长者")
        daughter = await add_family_member(
            resident, NewFamilyMember("女儿小红", Relationship.DAUGHTER, "13700001111", True)
        )
        await add_family_member(resident, NewFamilyMember("外甥", Relationship.OTHER_RELATIVE, "13700002222"))
        doctor = await contacts.add_contact(
            resident,
            contacts.NewEmergencyContact("家庭医生王", "家庭医生", "0571-87654321", 5, "工作日可联系"),
            recorded_by="account:1",
        )
        neighbour = await contacts.add_contact(
            resident,
            contacts.NewEmergencyContact("邻居老周", "邻居", "13912345678", 1),
            recorded_by="account:1",
        )
        appended = await contacts.add_contact(
            resident, contacts.NewEmergencyContact("老同事", "老同事", "13612345678"), recorded_by="account:1"
        )
        assert appended.priority == 6  # after the others

        (call_list,) = (await contacts.emergency_contacts_of([resident])).values()
        assert [entry.id for entry in call_list] == [daughter.id, neighbour.id, doctor.id, appended.id]
        assert call_list[2] == doctor and doctor.note == "工作日可联系"

        moved = await contacts.update_contact(
            resident, doctor.id, contacts.EmergencyContactChanges(priority=1, note="")
        )
        assert moved.note is None and moved.name == "家庭医生王"
        found = (await contacts.contacts_of([resident]))[resident]
        assert isinstance(found, list) and [c.id for c in found] == [
            doctor.id,
            neighbour.id,
            appended.id,
        ]  # ties: first added first

        rows = await sql("SELECT * FROM emergency_contact WHERE resident_id = $1", resident)
        raw = b"".join(bytes(row[c]) for row in rows for c in contacts.SEALED if row[c] is not None)
        for plaintext in ("邻居老周", "13912345678", "家庭医生", "老同事", "0571"):
            assert plaintext.encode() not in raw

        # The neighbour's phone moved onto the doctor's row: an error, never the neighbour's number.
        await sql(
            "UPDATE emergency_contact SET phone = (SELECT phone FROM emergency_contact WHERE id = $1)"
            " WHERE id = $2",
            neighbour.id,
            doctor.id,
        )
        with pytest.raises(CiphertextRejected):
            await contacts.contacts_of([resident])

        await contacts.remove_contact(resident, doctor.id)
        assert await sql("SELECT 1 FROM emergency_contact WHERE id = $1", doctor.id) == []
        with pytest.raises(NotFound):
            await contacts.remove_contact(resident, doctor.id)

    await in_tenant(institution, work)


async def test_bad_contacts_are_reported_together_and_nothing_is_written(world: World) -> None:
    institution = world.institution_ids[10]

    async def work() -> None:
        resident = await admitted("联系人校验长者")
        with pytest.raises(ValidationFailed) as failed:
            await contacts.add_contact(
                resident,
                contacts.NewEmergencyContact(" ", "r" * 51, "12345", 0, "n" * 501),
                recorded_by="account:1",
            )
        assert {p.field for p in failed.value.problems} == {"name", "role", "phone", "priority", "note"}
        assert await sql("SELECT 1 FROM emergency_contact WHERE resident_id = $1", resident) == []

    await in_tenant(institution, work)


async def test_family_log_round_trip_order_checks_and_sealing(world: World) -> None:
    institution = world.institution_ids[10]

    async def work() -> tuple[int, int]:
        resident = await admitted("家属沟通长者")
        other = await admitted("别人家的长者")
        son = await add_family_member(resident, NewFamilyMember("儿子", Relationship.SON, "13700003333"))
        strangers = await add_family_member(other, NewFamilyMember("别人", Relationship.SON, "13700004444"))
        early = await log.record_family_communication(
            resident, phone_call(family_member_id=son.id), recorded_by="account:7"
        )
        assert early.occurred_at.utcoffset() == timedelta(hours=8)  # local time of Asia/Shanghai
        late = await log.record_family_communication(
            resident,
            phone_call(
                occurred_at=datetime(2026, 8, 1, 9, 0, tzinfo=UTC),
                channel=log.Channel.VISIT,
                direction=log.Direction.FROM_FAMILY,
                summary="女儿来院探望",
                follow_up_needed=True,
                follow_up_due=date(2026, 8, 5),
            ),
            recorded_by="account:7",
        )
        # Logged after the others but happened earlier: it comes last.
        backdated = await log.record_family_communication(
            resident, phone_call(occurred_at=datetime(2026, 6, 15, 9, 0)), recorded_by="account:7"
        )
        page = await log.communications_page(resident, after_id=None, limit=10)
        assert [e.id for e in page] == [late.id, early.id, backdated.id]
        assert page[1] == early and page[1].family_member_id == son.id
        assert [e.id for e in await log.communications_page(resident, after_id=late.id, limit=1)] == [
            early.id
        ]
        assert await log.count_communications(resident) == 3
        pages = await log.first_pages_of([resident, other], 2)
        first = pages[resident]
        assert isinstance(first, log.FamilyCommunicationPage)
        assert [e.id for e in first.entries] == [late.id, early.id] and first.total == 3
        assert pages[other] == log.FamilyCommunicationPage([], 0)

        rows = await sql("SELECT summary FROM family_communication WHERE resident_id = $1", resident)
        raw = b"".join(bytes(row["summary"]) for row in rows)
        assert "跌倒".encode() not in raw and "探望".encode() not in raw

        with pytest.raises(ValidationFailed) as failed:
            await log.record_family_communication(
                resident,
                phone_call(
                    occurred_at=datetime.now(UTC) + timedelta(hours=1),
                    summary=" ",
                    family_member_id=strangers.id,
                    follow_up_due=date(2026, 1, 1),
                ),
                recorded_by="account:7",
            )
        assert {p.field for p in failed.value.problems} == {
            "occurredAt",
            "summary",
            "familyMemberId",
            "followUpDue",
        }
        with pytest.raises(ValidationFailed) as failed:
            await log.record_family_communication(
                resident,
                phone_call(
                    occurred_at=datetime(2024, 1, 1, 9, 0),
                    summary="长" * 2001,
                    follow_up_needed=True,
                    follow_up_due=date(2023, 12, 31),
                ),
                recorded_by="account:7",
            )
        assert {p.field for p in failed.value.problems} == {"occurredAt", "summary", "followUpDue"}
        assert await log.count_communications(resident) == 3  # nothing written
        return resident, late.id

    resident, late_id = await in_tenant(institution, work)

    async def moved() -> None:
        # The summary of one entry moved onto another: an error, never the other summary.
        await sql(
            """UPDATE family_communication SET summary = (
                   SELECT summary FROM family_communication WHERE id = $1)
               WHERE resident_id = $2 AND id <> $1""",
            late_id,
            resident,
        )
        with pytest.raises(CiphertextRejected):
            await log.communications_page(resident, after_id=None, limit=10)
        await sql("DELETE FROM family_communication WHERE resident_id = $1 AND id <> $2", resident, late_id)

    await in_tenant(institution, moved)


async def test_an_erased_resident_reads_and_writes_as_gone(world: World) -> None:
    institution = world.institution_ids[10]

    async def work() -> tuple[int, int]:
        resident = await admitted("将被删除的长者")
        kept = await admitted("不受影响的长者")
        for pk in (resident, kept):
            await prefs.set_preferences(pk, halal(), recorded_by="account:1")
            await contacts.add_contact(
                pk, contacts.NewEmergencyContact("邻居", "邻居", "13912345678"), recorded_by="account:1"
            )
            await log.record_family_communication(pk, phone_call(), recorded_by="account:1")
        return resident, kept

    resident, kept = await in_tenant(institution, work)

    async def erase() -> None:
        await destroy_data_key(resident)

    await in_tenant(institution, erase)

    async def read() -> None:
        current = await prefs.current_preferences_of([resident, kept])
        assert isinstance(current[resident], Erased)
        assert isinstance(current[kept], prefs.ResidentPreferences)
        found = await contacts.contacts_of([resident, kept])
        assert isinstance(found[resident], Erased) and isinstance(found[kept], list)
        pages = await log.first_pages_of([resident, kept], 5)
        assert isinstance(pages[resident], Erased) and isinstance(pages[kept], log.FamilyCommunicationPage)
        with pytest.raises(Erased):
            await log.communications_page(resident, after_id=None, limit=5)
        with pytest.raises(Erased):
            await prefs.set_preferences(resident, prefs.Preferences(), recorded_by="account:1")
        with pytest.raises(Erased):
            await log.record_family_communication(resident, phone_call(), recorded_by="account:1")
        with pytest.raises(Erased):
            await contacts.add_contact(
                resident, contacts.NewEmergencyContact("新邻居", "邻居", "13912345679"), recorded_by="x"
            )

    await in_tenant(institution, read)


async def test_seed_demo_fills_most_residents_quickly(world: World) -> None:
    from tenants.registry import NewInstitution, provision_institution

    institution = await provision_institution(NewInstitution(name="偏好演示养老院", region_code="test-east"))

    async def work() -> tuple[int, int, int, float, list[int]]:
        resident_ids = [await admitted(f"演示长者{k:03d}") for k in range(150)]
        for pk in resident_ids[::3]:
            await add_family_member(pk, NewFamilyMember("家属", Relationship.SON, "13700005555", True))
        rng = random.Random(7)
        today = date(2026, 12, 1)
        started = clock.perf_counter()
        written = (
            await prefs.seed_demo(rng, today),
            await contacts.seed_demo(rng, today),
            await log.seed_demo(rng, today),
        )
        elapsed = clock.perf_counter() - started
        current = await prefs.current_preferences_of(resident_ids)
        with_preferences = [pk for pk, found in current.items() if found is not None]
        await contacts.emergency_contacts_of(resident_ids)  # every contact opens
        pages = await log.first_pages_of(resident_ids, 10)
        assert all(isinstance(page, log.FamilyCommunicationPage) for page in pages.values())
        counts = [page.total for page in pages.values() if isinstance(page, log.FamilyCommunicationPage)]
        return written[0], written[1], written[2], elapsed, [len(with_preferences), max(counts)]

    preferences, contact_rows, entries, elapsed, (with_preferences, most) = await run_in_tenant(
        tenant_ref(institution), work
    )
    assert preferences >= with_preferences >= 120
    assert contact_rows > 10 and 150 <= entries <= 900 and most <= 6
    assert elapsed < 0.5, elapsed


async def test_concurrent_changes_get_consecutive_versions(world: World) -> None:
    import asyncio

    institution = world.institution_ids[10]
    resident = await in_tenant(institution, lambda: admitted("并发偏好长者"))

    async def change(kind: prefs.DietKind) -> int:
        async def work() -> int:
            written = await prefs.set_preferences(
                resident, prefs.Preferences(diet=prefs.Diet(kind)), recorded_by="account:1"
            )
            return written.version

        return await in_tenant(institution, work)

    versions = await asyncio.gather(*(change(kind) for kind in list(prefs.DietKind)[:4]))
    assert sorted(versions) == [1, 2, 3, 4]

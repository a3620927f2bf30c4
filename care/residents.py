"""Admission, change, discharge and look-up of residents and their family members.

Every function runs inside the caller's tenant unit of work (`tenants.unit_of_work`).
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import date, datetime
from zoneinfo import ZoneInfo

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q

from care.models import (
    CareLevel,
    DischargeReason,
    FamilyMember,
    Gender,
    Relationship,
    Resident,
    ResidentStatus,
)
from tenants.context import current_tenant
from tenants.errors import Conflict, InvalidInput, NotFound, ValidationFailed
from tenants.unit_of_work import savepoint

MAX_AGE_YEARS = 125
_PHONE = re.compile(r"^(?:\+?86[- ]?)?(?:1[3-9]\d{9}|0\d{2,3}-?\d{7,8})$")


def institution_today() -> date:
    return datetime.now(ZoneInfo(current_tenant().time_zone)).date()


@dataclass(frozen=True)
class Placement:
    building: str | None = None
    room: str | None = None
    bed: str | None = None


@dataclass(frozen=True)
class Admission:
    name: str
    gender: Gender
    birth_date: date
    care_level: CareLevel
    admission_date: date
    placement: Placement = Placement()


@dataclass(frozen=True)
class ResidentChanges:
    """Fields left as None are not changed."""

    name: str | None = None
    gender: Gender | None = None
    birth_date: date | None = None
    care_level: CareLevel | None = None
    admission_date: date | None = None
    placement: Placement | None = None


@dataclass(frozen=True)
class Discharge:
    discharged_on: date
    reason: DischargeReason
    note: str | None = None


@dataclass(frozen=True)
class NewFamilyMember:
    name: str
    relationship: Relationship
    phone: str
    is_emergency_contact: bool = False


@dataclass(frozen=True)
class ResidentFilter:
    status: ResidentStatus | None = None
    care_level: CareLevel | None = None
    building: str | None = None
    name_contains: str | None = None
    only_ids: frozenset[int] | None = None  # None: every resident


def _check_name(name: str, field: str, problems: list[InvalidInput]) -> None:
    if not name.strip() or len(name.strip()) > 100:
        problems.append(InvalidInput("Name must be 1 to 100 characters.", field=field))


def _check_dates(birth: date, admitted: date, today: date, problems: list[InvalidInput]) -> None:
    if birth >= today:
        problems.append(InvalidInput("Birth date must be in the past.", field="birthDate"))
    elif today.year - birth.year > MAX_AGE_YEARS:
        problems.append(InvalidInput("Birth date is implausibly early.", field="birthDate"))
    if admitted < birth:
        problems.append(InvalidInput("Admission date cannot precede the birth date.", field="admissionDate"))
    if (admitted - today).days > 90:
        problems.append(InvalidInput("Admission date can be at most 90 days ahead.", field="admissionDate"))


def _check_placement(placement: Placement, problems: list[InvalidInput]) -> None:
    for field, value, limit in (
        ("building", placement.building, 50),
        ("room", placement.room, 20),
        ("bed", placement.bed, 20),
    ):
        if value is not None and (not value.strip() or len(value) > limit):
            problems.append(
                InvalidInput("{field} must be 1 to {limit} characters.", field=field, limit=limit)
            )
    if placement.bed is not None and (placement.building is None or placement.room is None):
        problems.append(InvalidInput("A bed needs its building and room.", field="bed"))


def _raise_if(problems: Sequence[InvalidInput]) -> None:
    if problems:
        raise ValidationFailed(list(problems))


async def _save_placed(resident: Resident) -> None:
    try:
        async with savepoint():
            await resident.save()
    except IntegrityError as exc:
        if "resident_bed_occupied_idx" in str(exc):
            raise Conflict(
                "Bed {bed} of room {room} is already occupied.",
                field="bed",
                bed=resident.bed,
                room=resident.room,
            ) from exc
        raise


async def admit_resident(admission: Admission) -> Resident:
    problems: list[InvalidInput] = []
    _check_name(admission.name, "name", problems)
    _check_dates(admission.birth_date, admission.admission_date, institution_today(), problems)
    _check_placement(admission.placement, problems)
    _raise_if(problems)
    resident = Resident(
        name=admission.name.strip(),
        gender=admission.gender,
        birth_date=admission.birth_date,
        care_level=admission.care_level,
        admission_date=admission.admission_date,
        building=admission.placement.building,
        room=admission.placement.room,
        bed=admission.placement.bed,
    )
    await _save_placed(resident)
    return resident


async def get_resident(resident_id: int) -> Resident:
    resident = await Resident.get_or_none(id=resident_id)
    if resident is None:
        raise NotFound("Resident not found.")
    return resident


async def update_resident(resident_id: int, changes: ResidentChanges) -> Resident:
    resident = await Resident.select_for_update().get_or_none(id=resident_id)
    if resident is None:
        raise NotFound("Resident not found.")
    problems: list[InvalidInput] = []
    if changes.name is not None:
        _check_name(changes.name, "name", problems)
    if changes.placement is not None:
        _check_placement(changes.placement, problems)
    birth = changes.birth_date or resident.birth_date
    admitted = changes.admission_date or resident.admission_date
    _check_dates(birth, admitted, institution_today(), problems)
    if (
        resident.discharged_on is not None
        and changes.admission_date
        and changes.admission_date > resident.discharged_on
    ):
        problems.append(
            InvalidInput("Admission date cannot follow the discharge date.", field="admissionDate")
        )
    _raise_if(problems)
    if changes.name is not None:
        resident.name = changes.name.strip()
    if changes.gender is not None:
        resident.gender = changes.gender
    if changes.care_level is not None:
        resident.care_level = changes.care_level
    resident.birth_date, resident.admission_date = birth, admitted
    if changes.placement is not None:
        resident.building = changes.placement.building
        resident.room = changes.placement.room
        resident.bed = changes.placement.bed
    await _save_placed(resident)
    return resident


async def discharge_resident(resident_id: int, discharge: Discharge) -> Resident:
    resident = await Resident.select_for_update().get_or_none(id=resident_id)
    if resident is None:
        raise NotFound("Resident not found.")
    if resident.status == ResidentStatus.DISCHARGED:
        raise Conflict("The resident was already discharged.")
    problems: list[InvalidInput] = []
    if discharge.discharged_on < resident.admission_date:
        problems.append(InvalidInput("Discharge date cannot precede admission.", field="dischargedOn"))
    if discharge.discharged_on > institution_today():
        problems.append(InvalidInput("Discharge date cannot be in the future.", field="dischargedOn"))
    if discharge.note is not None and len(discharge.note) > 2000:
        problems.append(InvalidInput("Note must be at most 2000 characters.", field="note"))
    _raise_if(problems)
    resident.status = ResidentStatus.DISCHARGED
    resident.discharged_on = discharge.discharged_on
    resident.discharge_reason = discharge.reason
    resident.discharge_note = discharge.note
    await resident.save()
    return resident


async def add_family_member(resident_id: int, member: NewFamilyMember) -> FamilyMember:
    resident = await get_resident(resident_id)
    problems: list[InvalidInput] = []
    _check_name(member.name, "name", problems)
    phone = member.phone.strip()
    if not _PHONE.fullmatch(phone):
        problems.append(
            InvalidInput("Phone must be a mainland China mobile or landline number.", field="phone")
        )
    _raise_if(problems)
    return await FamilyMember.create(
        resident=resident,
        name=member.name.strip(),
        relationship=member.relationship,
        phone=phone,
        is_emergency_contact=member.is_emergency_contact,
    )


def _filtered(criteria: ResidentFilter) -> Q:
    conditions = Q()
    if criteria.status is not None:
        conditions &= Q(status=criteria.status)
    if criteria.care_level is not None:
        conditions &= Q(care_level=criteria.care_level)
    if criteria.building is not None:
        conditions &= Q(building=criteria.building)
    if criteria.name_contains:
        conditions &= Q(name__icontains=criteria.name_contains.strip())
    if criteria.only_ids is not None:
        conditions &= Q(id__in=sorted(criteria.only_ids))
    return conditions


@dataclass(frozen=True, slots=True)
class ResidentSummary:
    """A resident as a list shows one: read straight from the rows, without building ORM models."""

    id: int
    name: str
    gender: Gender
    birth_date: date
    building: str | None
    room: str | None
    bed: str | None
    care_level: CareLevel
    admission_date: date
    status: ResidentStatus
    discharged_on: date | None
    discharge_reason: DischargeReason | None


_SUMMARY_COLUMNS = ", ".join(field.name for field in fields(ResidentSummary))


def _like_pattern(fragment: str) -> str:
    escaped = fragment.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def resident_page_sql(
    criteria: ResidentFilter, *, after_id: int | None, limit: int
) -> tuple[str, list[object]]:
    """The SELECT of one page of residents in id order after the keyset cursor, and its parameters.

    A page of residents is the most frequent read of the API. Written out here rather than through the ORM,
    it costs a third of the CPU (measured in-process for 21 rows: about 0.4 ms instead of 1.1 ms beyond the
    unit of work): no query building, no model instances.
    """
    conditions: list[str] = []
    parameters: list[object] = []

    def bind(value: object) -> str:
        parameters.append(value)
        return f"${len(parameters)}"

    if criteria.status is not None:
        conditions.append(f"status = {bind(criteria.status.value)}")
    if criteria.care_level is not None:
        conditions.append(f"care_level = {bind(criteria.care_level.value)}")
    if criteria.building is not None:
        conditions.append(f"building = {bind(criteria.building)}")
    if criteria.name_contains and criteria.name_contains.strip():
        conditions.append(f"name ILIKE {bind(_like_pattern(criteria.name_contains.strip()))}")
    if criteria.only_ids is not None:
        conditions.append(f"id = ANY({bind(sorted(criteria.only_ids))}::bigint[])")
    if after_id is not None:
        conditions.append(f"id > {bind(after_id)}")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return f"SELECT {_SUMMARY_COLUMNS} FROM resident{where} ORDER BY id LIMIT {bind(limit)}", parameters


async def list_residents(
    criteria: ResidentFilter, *, after_id: int | None, limit: int
) -> list[ResidentSummary]:
    """Residents in id order after the keyset cursor `after_id`, at most `limit` of them."""
    sql, parameters = resident_page_sql(criteria, after_id=after_id, limit=limit)
    # The model's connection: the unit of work's transaction, and its guard against use outside one.
    _, rows = await Resident._choose_db().execute_query(sql, parameters)
    return [
        ResidentSummary(
            id=row["id"],
            name=row["name"],
            gender=Gender(row["gender"]),
            birth_date=row["birth_date"],
            building=row["building"],
            room=row["room"],
            bed=row["bed"],
            care_level=CareLevel(row["care_level"]),
            admission_date=row["admission_date"],
            status=ResidentStatus(row["status"]),
            discharged_on=row["discharged_on"],
            discharge_reason=None
            if row["discharge_reason"] is None
            else DischargeReason(row["discharge_reason"]),
        )
        for row in rows
    ]


async def count_residents(criteria: ResidentFilter) -> int:
    return await Resident.filter(_filtered(criteria)).count()


async def family_members_of(resident_ids: Sequence[int]) -> dict[int, list[FamilyMember]]:
    members = await FamilyMember.filter(resident_id__in=list(resident_ids)).order_by("id")
    grouped: dict[int, list[FamilyMember]] = {rid: [] for rid in resident_ids}
    for member in members:
        grouped[member.resident_id].append(member)
    return grouped

"""Admission, change, discharge and look-up of residents and their family members.

Every function runs inside the caller's tenant unit of work (`tenants.unit_of_work`).

Identity fields (name, gender, birth date, ID-card number, phone; a family member's name and phone; the
free-text discharge note) are sealed by field-level encryption (`compliance.encryption`) under the
resident's data key, with the row id in the associated data: a new row takes its id from the sequence
first, then its fields are sealed and the row is inserted whole. Reads decrypt; a resident whose data key
was destroyed (crypto-shredding) reads as erased (`identity` None), and asking for its identity raises
`Erased`. Placement, care level, status and dates stay plaintext: they are filtered and counted in SQL
(docs/security.md, "Encrypted fields").
"""

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from zoneinfo import ZoneInfo

from tortoise.exceptions import IntegrityError

from care.models import (
    CareLevel,
    DischargeReason,
    FamilyMember,
    Gender,
    Relationship,
    Resident,
    ResidentStatus,
)
from compliance.encryption import (
    DataKeyDestroyed,
    FieldCipher,
    field_cipher,
    normalize_id_card,
    normalize_phone,
    normalize_text,
)
from compliance.identity.account_models import FamilyLink
from tenants.context import current_tenant
from tenants.errors import Conflict, Erased, InvalidInput, NotFound, raise_if_any
from tenants.unit_of_work import savepoint

MAX_AGE_YEARS = 125
_PHONE = re.compile(r"^(?:\+?86[- ]?)?(?:1[3-9]\d{9}|0\d{2,3}-?\d{7,8})$")
_ID_CARD = re.compile(r"^\d{17}[\dX]$")
_ID_CARD_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CARD_CHECK = "10X98765432"

RESIDENT_TABLE = "resident"
FAMILY_TABLE = "family_member"
# Plaintexts are padded to these sizes (NUL bytes), so that a ciphertext's length tells little about the
# value: gender is one byte, a birth date ten, an ID-card number eighteen.
_NAME_BLOCK = 32
_PHONE_BLOCK = 24
_NOTE_BLOCK = 64
_GENDER_CODE = {Gender.FEMALE: b"F", Gender.MALE: b"M"}
_GENDER_OF_CODE = {code: gender for gender, code in _GENDER_CODE.items()}


def institution_today() -> date:
    return datetime.now(ZoneInfo(current_tenant().time_zone)).date()


# ID-card numbers -------------------------------------------------------------------------------------


def id_card_check_character(first17: str) -> str:
    """The check character (18th) of a resident ID-card number, GB 11643-1999 (ISO 7064 MOD 11-2)."""
    total = sum(int(digit) * weight for digit, weight in zip(first17, _ID_CARD_WEIGHTS, strict=True))
    return _ID_CARD_CHECK[total % 11]


def id_card_birth_date(number: str) -> date | None:
    """The birth date an 18-character ID-card number carries (digits 7 to 14), None if not a date."""
    try:
        return date(int(number[6:10]), int(number[10:12]), int(number[12:14]))
    except ValueError:
        return None


def valid_id_card(value: str) -> str | None:
    """The normalized ID-card number if `value` is a valid 18-character one (GB 11643), else None."""
    number = normalize_id_card(value)
    if not _ID_CARD.fullmatch(number) or id_card_check_character(number[:17]) != number[17]:
        return None
    if id_card_birth_date(number) is None:
        return None
    return number


def _check_id_card(value: str, birth: date | None, problems: list["InvalidInput"]) -> str | None:
    number = valid_id_card(value)
    if number is None:
        problems.append(
            InvalidInput(
                "ID-card number must be 18 characters with a valid check character.", field="idCardNumber"
            )
        )
        return None
    if birth is not None and id_card_birth_date(number) != birth:
        problems.append(
            InvalidInput("The ID-card number does not match the birth date.", field="idCardNumber")
        )
    return number


def _check_phone(value: str, field: str, problems: list["InvalidInput"]) -> str:
    phone = value.strip()
    if not _PHONE.fullmatch(phone):
        problems.append(
            InvalidInput("Phone must be a mainland China mobile or landline number.", field=field)
        )
    return phone


# Sealing ---------------------------------------------------------------------------------------------


def _padded(text: str, block: int) -> bytes:
    raw = text.encode()
    return raw.ljust(-(-max(len(raw), 1) // block) * block, b"\0")


def _unpadded(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode()


class _Fields:
    """Seals the fields of one row of one table for one subject."""

    __slots__ = ("cipher", "row_id", "subject_id", "table")

    def __init__(self, cipher: FieldCipher, table: str, row_id: int, subject_id: int) -> None:
        self.cipher, self.table, self.row_id, self.subject_id = cipher, table, row_id, subject_id

    async def seal(self, column: str, plaintext: bytes) -> bytes:
        return await self.cipher.encrypt(
            plaintext, table=self.table, column=column, row_id=self.row_id, subject_id=self.subject_id
        )


# Domain values -------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)  # four texts in a row: by name only
class Placement:
    building: str | None = None
    floor: str | None = None
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
    id_card_number: str | None = None
    phone: str | None = None


@dataclass(frozen=True)
class ResidentChanges:
    """Fields left as None are not changed; an empty ID-card number or phone removes it."""

    name: str | None = None
    gender: Gender | None = None
    birth_date: date | None = None
    care_level: CareLevel | None = None
    admission_date: date | None = None
    placement: Placement | None = None
    id_card_number: str | None = None
    phone: str | None = None


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
class FamilyMemberChanges:
    """Fields left None keep their value."""

    name: str | None = None
    relationship: Relationship | None = None
    phone: str | None = None
    is_emergency_contact: bool | None = None


@dataclass(frozen=True)
class ResidentFilter:
    status: ResidentStatus | None = None
    care_level: CareLevel | None = None
    building: str | None = None
    floor: str | None = None
    room: str | None = None
    bed: str | None = None
    name_contains: str | None = None  # part of the name, decrypted and compared in memory
    id_card_number: str | None = None  # exact, through the blind index
    phone: str | None = None  # exact, the resident's or a family member's, through blind indexes
    only_ids: frozenset[int] | None = None  # None: every resident


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a resident is: the fields sealed under the resident's data key."""

    name: str
    gender: Gender
    birth_date: date
    id_card_number: str | None = None
    phone: str | None = None


@dataclass(frozen=True, slots=True)
class ResidentRecord:
    """A resident as read (decrypted): `identity` is None when the resident was erased (its data key
    destroyed). Read straight from the rows, without building ORM models."""

    id: int
    identity: Identity | None
    building: str | None
    floor: str | None
    room: str | None
    bed: str | None
    care_level: CareLevel
    admission_date: date
    status: ResidentStatus
    discharged_on: date | None
    discharge_reason: DischargeReason | None
    discharge_note: str | None = None

    @property
    def erased(self) -> bool:
        return self.identity is None

    def require_identity(self) -> Identity:
        if self.identity is None:
            raise Erased("The personal data of this resident was erased.")
        return self.identity


ResidentSummary = ResidentRecord  # the name a page of residents used before encryption


@dataclass(frozen=True, slots=True)
class FamilyMemberRecord:
    """A family member as read; name and phone are None when their resident was erased."""

    id: int
    resident_id: int
    name: str | None
    relationship: Relationship
    phone: str | None
    is_emergency_contact: bool

    @property
    def erased(self) -> bool:
        return self.name is None


# Checks --------------------------------------------------------------------------------------------


def _check_name(name: str, field: str, problems: list[InvalidInput]) -> None:
    if not name.strip() or len(name.strip()) > 100 or "\0" in name:
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
        ("floor", placement.floor, 20),
        ("room", placement.room, 20),
        ("bed", placement.bed, 20),
    ):
        if value is not None and not value.strip():
            problems.append(InvalidInput("This field is required.", field=field))
        elif value is not None and len(value) > limit:
            problems.append(InvalidInput("At most {max} characters.", field=field, max=limit))
    if placement.bed is not None and (placement.building is None or placement.room is None):
        problems.append(InvalidInput("A bed needs its building and room.", field="bed"))


# Sealing rows --------------------------------------------------------------------------------------


async def blind_index_of_id_card(cipher: FieldCipher, number: str) -> bytes:
    return await cipher.blind_index(
        number, table=RESIDENT_TABLE, column="id_card_number_bidx", normalize=normalize_id_card
    )


async def blind_index_of_phone(cipher: FieldCipher, table: str, phone: str) -> bytes:
    return await cipher.blind_index(phone, table=table, column="phone_bidx", normalize=normalize_phone)


async def seal_identity(cipher: FieldCipher, resident: Resident, identity: Identity) -> None:
    """Sets the sealed identity columns of `resident` (its id given, its data key loaded or created)."""
    sealer = _Fields(cipher, RESIDENT_TABLE, resident.id, resident.id)
    resident.name_enc = await sealer.seal("name_enc", _padded(identity.name, _NAME_BLOCK))
    resident.gender_enc = await sealer.seal("gender_enc", _GENDER_CODE[Gender(identity.gender)])
    resident.birth_date_enc = await sealer.seal("birth_date_enc", identity.birth_date.isoformat().encode())
    if identity.id_card_number:
        resident.id_card_number_enc = await sealer.seal(
            "id_card_number_enc", identity.id_card_number.encode()
        )
        resident.id_card_number_bidx = await blind_index_of_id_card(cipher, identity.id_card_number)
    else:
        resident.id_card_number_enc = resident.id_card_number_bidx = None
    if identity.phone:
        resident.phone_enc = await sealer.seal("phone_enc", _padded(identity.phone, _PHONE_BLOCK))
        resident.phone_bidx = await blind_index_of_phone(cipher, RESIDENT_TABLE, identity.phone)
    else:
        resident.phone_enc = resident.phone_bidx = None


async def seal_discharge_note(cipher: FieldCipher, resident: Resident, note: str | None) -> None:
    resident.discharge_note_enc = (
        None
        if note is None
        else await _Fields(cipher, RESIDENT_TABLE, resident.id, resident.id).seal(
            "discharge_note_enc", _padded(note, _NOTE_BLOCK)
        )
    )


async def seal_family_member(cipher: FieldCipher, member: FamilyMember, name: str, phone: str) -> None:
    """Sets the sealed columns of `member` (its id and resident id given), under its resident's key."""
    sealer = _Fields(cipher, FAMILY_TABLE, member.id, member.resident_id)
    member.name_enc = await sealer.seal("name_enc", _padded(name, _NAME_BLOCK))
    member.phone_enc = await sealer.seal("phone_enc", _padded(phone, _PHONE_BLOCK))
    member.phone_bidx = await blind_index_of_phone(cipher, FAMILY_TABLE, phone)


async def next_ids(table: str, count: int) -> list[int]:
    """`count` fresh ids of `table` taken from its identity sequence (before the rows are written, so that
    their fields can be sealed with the row id in the associated data)."""
    rows = await Resident._choose_db().execute_query_dict(
        f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) AS id FROM generate_series(1, $1)",
        [count],
    )
    return [row["id"] for row in rows]


_IDENTITY_COLUMNS = (
    "name_enc",
    "gender_enc",
    "birth_date_enc",
    "id_card_number_enc",
    "phone_enc",
    "discharge_note_enc",
)


async def _open_identity(cipher: FieldCipher, row: dict) -> tuple[Identity | None, str | None]:
    """(identity, discharge note) of a resident row; (None, None) when its data key was destroyed.
    CiphertextRejected (a ciphertext that is not this row's) propagates: an error, never other data."""
    try:
        name, gender, birth, id_card, phone, note = await cipher.open_row(
            [row[column] for column in _IDENTITY_COLUMNS],
            table=RESIDENT_TABLE,
            columns=_IDENTITY_COLUMNS,
            row_id=row["id"],
            subject_id=row["id"],
        )
    except DataKeyDestroyed:
        return None, None
    assert name is not None and gender is not None and birth is not None  # NOT NULL columns
    identity = Identity(
        name=_unpadded(name),
        gender=_GENDER_OF_CODE[gender],
        birth_date=date.fromisoformat(birth.decode()),
        id_card_number=None if id_card is None else id_card.decode(),
        phone=None if phone is None else _unpadded(phone),
    )
    return identity, None if note is None else _unpadded(note)


_ROW_COLUMNS = (
    "id",
    "name_enc",
    "gender_enc",
    "birth_date_enc",
    "id_card_number_enc",
    "phone_enc",
    "building",
    "floor",
    "room",
    "bed",
    "care_level",
    "admission_date",
    "status",
    "discharged_on",
    "discharge_reason",
    "discharge_note_enc",
)
_SELECT_ROW = ", ".join(_ROW_COLUMNS)


def _plain_record(row: dict, identity: Identity | None, note: str | None) -> ResidentRecord:
    reason = row["discharge_reason"]
    return ResidentRecord(
        id=row["id"],
        identity=identity,
        building=row["building"],
        floor=row["floor"],
        room=row["room"],
        bed=row["bed"],
        care_level=CareLevel(row["care_level"]),
        admission_date=row["admission_date"],
        status=ResidentStatus(row["status"]),
        discharged_on=row["discharged_on"],
        discharge_reason=None if reason is None else DischargeReason(reason),
        discharge_note=note,
    )


async def _records(rows: Sequence[dict]) -> list[ResidentRecord]:
    """Decrypted records of resident rows; rows selected with the cipher's `data_keys_column` bring their
    data keys along, the others' keys are read in one query for all."""
    cipher = await field_cipher()
    if rows and "data_keys" in rows[0]:
        await cipher.take_data_keys((row["id"], row["data_keys"]) for row in rows)
    else:
        await cipher.load_data_keys(row["id"] for row in rows)
    records = []
    for row in rows:
        identity, note = await _open_identity(cipher, row)
        records.append(_plain_record(row, identity, note))
    return records


def _model_row(resident: Resident) -> dict:
    return {column: getattr(resident, column) for column in _ROW_COLUMNS}


# Writing -------------------------------------------------------------------------------------------


async def _save_placed(resident: Resident, *, created: bool = False) -> None:
    try:
        async with savepoint():
            await resident.save(force_create=created)
    except IntegrityError as exc:
        if "resident_bed_occupied_idx" in str(exc):
            raise Conflict(
                "Bed {bed} of room {room} is already occupied.",
                field="bed",
                bed=resident.bed,
                room=resident.room,
            ) from exc
        raise


async def _erasable(cipher: FieldCipher, subject_id: int) -> None:
    """Creates the subject's data key if it has none; Erased if it was destroyed."""
    try:
        await cipher.ensure_data_keys([subject_id])
    except DataKeyDestroyed as exc:
        raise Erased("The personal data of this resident was erased.") from exc


async def admit_resident(admission: Admission) -> ResidentRecord:
    problems: list[InvalidInput] = []
    _check_name(admission.name, "name", problems)
    _check_dates(admission.birth_date, admission.admission_date, institution_today(), problems)
    _check_placement(admission.placement, problems)
    id_card = phone = None
    if admission.id_card_number:
        id_card = _check_id_card(admission.id_card_number, admission.birth_date, problems)
    if admission.phone:
        phone = _check_phone(admission.phone, "phone", problems)
    raise_if_any(problems)
    (pk,) = await next_ids(RESIDENT_TABLE, 1)
    cipher = await field_cipher()
    await cipher.ensure_data_keys([pk])  # outside the savepoint below: the key row must not roll back alone
    identity = Identity(admission.name.strip(), admission.gender, admission.birth_date, id_card, phone)
    resident = Resident(
        id=pk,
        care_level=admission.care_level,
        admission_date=admission.admission_date,
        building=admission.placement.building,
        floor=admission.placement.floor,
        room=admission.placement.room,
        bed=admission.placement.bed,
        status=ResidentStatus.IN_RESIDENCE,
    )
    await seal_identity(cipher, resident, identity)
    await seal_discharge_note(cipher, resident, None)
    try:
        await _save_placed(resident, created=True)
    except Conflict:
        # The id is spent and no row has it: its fresh data key goes too, leaving nothing half-written.
        await Resident._choose_db().execute_query("DELETE FROM data_key WHERE subject_id = $1", [pk])
        raise
    from care import sops  # SOP instances anchored on admission, in this unit of work (care/sops.py)

    await sops.on_admission(pk, admission.admission_date)
    return _plain_record(_model_row(resident), identity, None)


async def _row(resident_id: int, *, for_update: bool = False) -> dict:
    lock = " FOR UPDATE" if for_update else ""
    rows = await Resident._choose_db().execute_query_dict(
        f"SELECT {_SELECT_ROW} FROM resident WHERE id = $1{lock}", [resident_id]
    )
    if not rows:
        raise NotFound("Resident not found.")
    return rows[0]


async def get_resident(resident_id: int) -> ResidentRecord:
    (record,) = await _records([await _row(resident_id)])
    return record


async def update_resident(resident_id: int, changes: ResidentChanges) -> ResidentRecord:
    resident = await Resident.select_for_update().get_or_none(id=resident_id)
    if resident is None:
        raise NotFound("Resident not found.")
    cipher = await field_cipher()
    current, note = await _open_identity(cipher, _model_row(resident))
    if current is None:
        return await _update_erased(resident, changes)
    problems: list[InvalidInput] = []
    if changes.name is not None:
        _check_name(changes.name, "name", problems)
    if changes.placement is not None:
        _check_placement(changes.placement, problems)
    birth = changes.birth_date or current.birth_date
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
    id_card, phone = current.id_card_number, current.phone
    if changes.id_card_number is not None:
        id_card = _check_id_card(changes.id_card_number, birth, problems) if changes.id_card_number else None
    elif id_card is not None and changes.birth_date is not None and id_card_birth_date(id_card) != birth:
        problems.append(InvalidInput("The ID-card number does not match the birth date.", field="birthDate"))
    if changes.phone is not None:
        phone = _check_phone(changes.phone, "phone", problems) if changes.phone.strip() else None
    raise_if_any(problems)
    identity = Identity(
        name=changes.name.strip() if changes.name is not None else current.name,
        gender=changes.gender or current.gender,
        birth_date=birth,
        id_card_number=id_card,
        phone=phone,
    )
    if identity != current:
        await seal_identity(cipher, resident, identity)
    _apply_care_changes(resident, changes, admitted)
    await _save_placed(resident)
    return _plain_record(_model_row(resident), identity, note)


def _apply_care_changes(resident: Resident, changes: ResidentChanges, admitted: date) -> None:
    if changes.care_level is not None:
        resident.care_level = changes.care_level
    resident.admission_date = admitted
    if changes.placement is not None:
        resident.building = changes.placement.building
        resident.floor = changes.placement.floor
        resident.room = changes.placement.room
        resident.bed = changes.placement.bed


async def _update_erased(resident: Resident, changes: ResidentChanges) -> ResidentRecord:
    """An erased resident keeps its care record: placement, care level and admission date may still
    change; its identity cannot (Erased), nor be checked against (the birth date is gone)."""
    identity_changes = (
        changes.name,
        changes.gender,
        changes.birth_date,
        changes.id_card_number,
        changes.phone,
    )
    if any(change is not None for change in identity_changes):
        raise Erased("The personal data of this resident was erased.")
    problems: list[InvalidInput] = []
    if changes.placement is not None:
        _check_placement(changes.placement, problems)
    admitted = changes.admission_date or resident.admission_date
    if (admitted - institution_today()).days > 90:
        problems.append(InvalidInput("Admission date can be at most 90 days ahead.", field="admissionDate"))
    if resident.discharged_on is not None and admitted > resident.discharged_on:
        problems.append(
            InvalidInput("Admission date cannot follow the discharge date.", field="admissionDate")
        )
    raise_if_any(problems)
    _apply_care_changes(resident, changes, admitted)
    await _save_placed(resident)
    return _plain_record(_model_row(resident), None, None)


async def discharge_resident(resident_id: int, discharge: Discharge) -> ResidentRecord:
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
    raise_if_any(problems)
    cipher = await field_cipher()
    if discharge.note is not None:
        await _erasable(cipher, resident.id)  # an erased resident is discharged without a note
    await seal_discharge_note(cipher, resident, discharge.note)
    resident.status = ResidentStatus.DISCHARGED
    resident.discharged_on = discharge.discharged_on
    resident.discharge_reason = discharge.reason
    await resident.save()
    from care import sops  # the open SOP steps end, the discharge instances start (care/sops.py)

    await sops.on_discharge(resident.id, discharge.discharged_on)
    (record,) = await _records([_model_row(resident)])
    return record


async def add_family_member(resident_id: int, member: NewFamilyMember) -> FamilyMemberRecord:
    await _row(resident_id)
    problems: list[InvalidInput] = []
    _check_name(member.name, "name", problems)
    phone = _check_phone(member.phone, "phone", problems)
    raise_if_any(problems)
    cipher = await field_cipher()
    await _erasable(cipher, resident_id)
    (pk,) = await next_ids(FAMILY_TABLE, 1)
    row = FamilyMember(
        id=pk,
        resident_id=resident_id,
        relationship=member.relationship,
        is_emergency_contact=member.is_emergency_contact,
    )
    name = member.name.strip()
    await seal_family_member(cipher, row, name, phone)
    await row.save(force_create=True)
    return FamilyMemberRecord(pk, resident_id, name, member.relationship, phone, member.is_emergency_contact)


async def resident_of_family_member(member_id: int) -> int:
    rows = await Resident._choose_db().execute_query_dict(
        "SELECT resident_id FROM family_member WHERE id = $1", [member_id]
    )
    if not rows:
        raise NotFound("Not found.")
    return int(rows[0]["resident_id"])


async def update_family_member(
    resident_id: int, member_id: int, changes: FamilyMemberChanges
) -> FamilyMemberRecord:
    """Correct a family member, checked as when added (ValidationFailed: nothing written). A changed name
    or phone is sealed again under the resident's key with the same row id, a changed phone's blind index
    recomputed; the other sealed column is left as it is. NotFound, Erased."""
    member = await FamilyMember.select_for_update().get_or_none(id=member_id, resident_id=resident_id)
    if member is None:
        raise NotFound("Not found.")
    cipher = await field_cipher()
    try:
        sealed_name, sealed_phone = await cipher.open_row(
            [member.name_enc, member.phone_enc],
            table=FAMILY_TABLE,
            columns=_FAMILY_COLUMNS,
            row_id=member.id,
            subject_id=resident_id,
        )
    except DataKeyDestroyed as exc:
        raise Erased("The personal data of this resident was erased.") from exc
    name, phone = _unpadded(sealed_name or b""), _unpadded(sealed_phone or b"")
    problems: list[InvalidInput] = []
    new_name, new_phone = name, phone
    if changes.name is not None:
        _check_name(changes.name, "name", problems)
        new_name = changes.name.strip()
    if changes.phone is not None:
        new_phone = _check_phone(changes.phone, "phone", problems)
    raise_if_any(problems)
    sealer = _Fields(cipher, FAMILY_TABLE, member.id, resident_id)
    changed: list[str] = []
    if new_name != name:
        member.name_enc = await sealer.seal("name_enc", _padded(new_name, _NAME_BLOCK))
        changed.append("name_enc")
    if new_phone != phone:
        member.phone_enc = await sealer.seal("phone_enc", _padded(new_phone, _PHONE_BLOCK))
        member.phone_bidx = await blind_index_of_phone(cipher, FAMILY_TABLE, new_phone)
        changed += ["phone_enc", "phone_bidx"]
    if changes.relationship is not None and changes.relationship != member.relationship:
        member.relationship = changes.relationship
        changed.append("relationship")
    if (
        changes.is_emergency_contact is not None
        and changes.is_emergency_contact != member.is_emergency_contact
    ):
        member.is_emergency_contact = changes.is_emergency_contact
        changed.append("is_emergency_contact")
    if changed:
        await member.save(update_fields=changed)
    return FamilyMemberRecord(
        member.id,
        resident_id,
        new_name,
        Relationship(member.relationship),
        new_phone,
        member.is_emergency_contact,
    )


async def remove_family_member(resident_id: int, member_id: int) -> int:
    """Delete a family member (NotFound if it is not the resident's). Its entries in the family
    communication log stay, without it (ON DELETE SET NULL); the family accounts that followed the
    resident as this relative stop following (their links are deleted in the same transaction): the
    number of those is returned. Works for an erased resident too (its relatives' rows are unreadable
    leftovers)."""
    deleted = await FamilyMember.filter(id=member_id, resident_id=resident_id).delete()
    if not deleted:
        raise NotFound("Not found.")
    return await FamilyLink.filter(
        institution_id=current_tenant().institution_id, resident_id=resident_id, family_member_id=member_id
    ).delete()


# Reading and searching -----------------------------------------------------------------------------


class _Where:
    """The WHERE clause of a resident query and its parameters."""

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.parameters: list[object] = []

    def bind(self, value: object) -> str:
        self.parameters.append(value)
        return f"${len(self.parameters)}"

    def sql(self) -> str:
        return f" WHERE {' AND '.join(self.conditions)}" if self.conditions else ""


def _search_id_card(value: str) -> str:
    number = valid_id_card(value)
    if number is None:
        raise InvalidInput(
            "ID-card number must be 18 characters with a valid check character.", field="idCardNumber"
        )
    return number


def _search_phone(value: str) -> str:
    phone = normalize_phone(value)
    if not _PHONE.fullmatch(phone):
        raise InvalidInput("Phone must be a mainland China mobile or landline number.", field="phone")
    return phone


async def _blind_indexes(criteria: ResidentFilter) -> dict[str, bytes]:
    """The blind indexes an exact ID-card or phone search compares with (BAD_USER_INPUT if malformed)."""
    indexes: dict[str, bytes] = {}
    if criteria.id_card_number is None and criteria.phone is None:
        return indexes
    cipher = await field_cipher()
    if criteria.id_card_number is not None:
        indexes["id_card"] = await blind_index_of_id_card(cipher, _search_id_card(criteria.id_card_number))
    if criteria.phone is not None:
        phone = _search_phone(criteria.phone)
        indexes["phone"] = await blind_index_of_phone(cipher, RESIDENT_TABLE, phone)
        indexes["family_phone"] = await blind_index_of_phone(cipher, FAMILY_TABLE, phone)
    return indexes


def _where(criteria: ResidentFilter, indexes: dict[str, bytes]) -> _Where:
    """Every condition of `criteria` but the name, which is not in SQL (see `narrow_by_name`)."""
    where = _Where()
    if criteria.status is not None:
        where.conditions.append(f"status = {where.bind(ResidentStatus(criteria.status).value)}")
    if criteria.care_level is not None:
        where.conditions.append(f"care_level = {where.bind(CareLevel(criteria.care_level).value)}")
    for column in ("building", "floor", "room", "bed"):
        value = getattr(criteria, column)
        if value is not None:
            where.conditions.append(f"{column} = {where.bind(value.strip())}")
    if criteria.id_card_number is not None:
        where.conditions.append(f"id_card_number_bidx = {where.bind(indexes['id_card'])}")
    if criteria.phone is not None:
        own, relatives = where.bind(indexes["phone"]), where.bind(indexes["family_phone"])
        where.conditions.append(
            f"(phone_bidx = {own} OR id IN "
            f"(SELECT resident_id FROM family_member WHERE phone_bidx = {relatives}))"
        )
    if criteria.only_ids is not None:
        where.conditions.append(f"id = ANY({where.bind(sorted(criteria.only_ids))}::bigint[])")
    return where


async def narrow_by_name(criteria: ResidentFilter) -> ResidentFilter:
    """`criteria` with its name part replaced by the ids of the residents whose name contains it.

    Names are sealed, so no index can find a part of one: the names of the residents that match the other
    conditions are decrypted in memory (their data keys in one query) and compared after `normalize_text`
    (full-width folded, case-folded). Measured in docs/benchmarks.md ("Search of encrypted residents").
    Erased residents never match.
    """
    fragment = normalize_text(criteria.name_contains or "")
    if not fragment:
        return _replace(criteria, name_contains=None)
    where = _where(criteria, await _blind_indexes(criteria))
    rows = await Resident._choose_db().execute_query_dict(
        f"SELECT id, name_enc FROM resident{where.sql()}", where.parameters
    )
    cipher = await field_cipher()
    await cipher.load_data_keys(row["id"] for row in rows)
    matching = []
    for row in rows:
        try:
            name = await cipher.decrypt(
                row["name_enc"],
                table=RESIDENT_TABLE,
                column="name_enc",
                row_id=row["id"],
                subject_id=row["id"],
            )
        except DataKeyDestroyed:
            continue
        if fragment in normalize_text(_unpadded(name)):
            matching.append(row["id"])
    only = frozenset(matching)
    if criteria.only_ids is not None:
        only &= criteria.only_ids
    return _replace(criteria, name_contains=None, only_ids=only)


def _replace(criteria: ResidentFilter, **changes: object) -> ResidentFilter:
    return replace(criteria, **changes)  # type: ignore[arg-type]


def resident_page_sql(
    criteria: ResidentFilter,
    *,
    after_id: int | None,
    limit: int,
    indexes: dict[str, bytes] | None = None,
    data_keys_column: str | None = None,
) -> tuple[str, list[object]]:
    """The SELECT of one page of residents in id order after the keyset cursor, and its parameters
    (`criteria` without a name part: `narrow_by_name` first; with an ID-card or phone part, `indexes` from
    `_blind_indexes`).

    A page of residents is the most frequent read of the API. Written out here rather than through the ORM,
    it costs a third of the CPU (measured in-process for 21 rows: about 0.4 ms instead of 1.1 ms beyond the
    unit of work): no query building, no model instances. With `data_keys_column` (the cipher's), the
    page's data keys come in the same round trip (docs/benchmarks.md, "Search of encrypted residents").
    """
    where = _where(criteria, indexes or {})
    if after_id is not None:
        where.conditions.append(f"id > {where.bind(after_id)}")
    columns = _SELECT_ROW if data_keys_column is None else f"{_SELECT_ROW}, {data_keys_column}"
    return (
        f"SELECT {columns} FROM resident{where.sql()} ORDER BY id LIMIT {where.bind(limit)}",
        where.parameters,
    )


async def list_residents(
    criteria: ResidentFilter, *, after_id: int | None, limit: int
) -> list[ResidentRecord]:
    """Residents in id order after the keyset cursor `after_id`, at most `limit` of them, decrypted."""
    if criteria.name_contains is not None:
        criteria = await narrow_by_name(criteria)
    indexes = await _blind_indexes(criteria)
    cipher = await field_cipher()
    sql, parameters = resident_page_sql(
        criteria,
        after_id=after_id,
        limit=limit,
        indexes=indexes,
        data_keys_column=cipher.data_keys_column("resident.id"),
    )
    # The model's connection: the unit of work's transaction, and its guard against use outside one.
    rows = await Resident._choose_db().execute_query_dict(sql, parameters)
    records = await _records(rows)
    if criteria.id_card_number is not None:  # a blind index finds; the decrypted value confirms
        wanted = normalize_id_card(criteria.id_card_number)
        records = [r for r in records if r.identity is None or r.identity.id_card_number == wanted]
    return records


async def count_residents(criteria: ResidentFilter) -> int:
    if criteria.name_contains is not None:
        criteria = await narrow_by_name(criteria)
    where = _where(criteria, await _blind_indexes(criteria))
    rows = await Resident._choose_db().execute_query_dict(
        f"SELECT count(*) AS n FROM resident{where.sql()}", where.parameters
    )
    return rows[0]["n"]


_FAMILY_COLUMNS = ("name_enc", "phone_enc")


async def family_members_of(resident_ids: Iterable[int]) -> dict[int, list[FamilyMemberRecord]]:
    """The family members of each resident, decrypted (their residents' data keys in one query)."""
    ids = list(resident_ids)
    rows = await Resident._choose_db().execute_query_dict(
        """SELECT id, resident_id, name_enc, relationship, phone_enc, is_emergency_contact
           FROM family_member WHERE resident_id = ANY($1::bigint[]) ORDER BY id""",
        [ids],
    )
    grouped: dict[int, list[FamilyMemberRecord]] = {rid: [] for rid in ids}
    if not rows:
        return grouped
    cipher = await field_cipher()
    await cipher.load_data_keys(row["resident_id"] for row in rows)
    for row in rows:
        try:
            sealed_name, sealed_phone = await cipher.open_row(
                [row["name_enc"], row["phone_enc"]],
                table=FAMILY_TABLE,
                columns=_FAMILY_COLUMNS,
                row_id=row["id"],
                subject_id=row["resident_id"],
            )
            name: str | None = _unpadded(sealed_name or b"")
            phone: str | None = _unpadded(sealed_phone or b"")
        except DataKeyDestroyed:
            name = phone = None
        grouped[row["resident_id"]].append(
            FamilyMemberRecord(
                row["id"],
                row["resident_id"],
                name,
                Relationship(row["relationship"]),
                phone,
                row["is_emergency_contact"],
            )
        )
    return grouped

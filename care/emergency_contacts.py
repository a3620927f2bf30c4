"""Emergency contacts of a resident: who the nurse calls at 3 a.m., in order.

Family members flagged `is_emergency_contact` (care/residents.py) come first, in the order they were
registered: they are the relatives the institution's contract names and who decide on a transfer to
hospital. Then the contacts who are not family (a neighbour, a friend, a guardian from a public office,
the family doctor), kept here in table `emergency_contact`, by their `priority` (1 first; ties in the
order they were added). `emergency_contacts_of` merges both for many residents at once.

Name, role, phone and note are sealed under the resident's data key; the priority stays plain (the list
is ordered in SQL; a number says nothing about anyone). A removed contact is deleted, not kept: it is a
third party's name and phone, held only while it serves (data minimization); the contact is not history.
"""

import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date

from care.residents import (
    FamilyMemberRecord,
    _check_phone,  # the phone rules of family members (mainland mobile or landline)
    family_members_of,
    next_ids,
)
from care.sealed_rows import (
    ERASED,
    admission_date_of,
    execute,
    open_row,
    padded,
    seal,
    text,
    unpadded,
    writable,
)
from compliance.encryption import field_cipher
from tenants.errors import Erased, InvalidInput, NotFound, raise_if_any

TABLE = "emergency_contact"
SEALED = ("name", "role", "phone", "note")
MAX_NAME = 100
MAX_ROLE = 50
MAX_NOTE = 500
MAX_PRIORITY = 99
MAX_CONTACTS = 20
_BLOCKS = {"name": 32, "role": 32, "phone": 24, "note": 64}


@dataclass(frozen=True, slots=True)
class NewEmergencyContact:
    name: str
    role: str  # relationship or role in words: 邻居, 老同事, 街道民政监护人, 家庭医生
    phone: str
    priority: int | None = None  # None: after the resident's other contacts
    note: str | None = None


@dataclass(frozen=True, slots=True)
class EmergencyContactChanges:
    """Fields left None keep their value; an empty note removes it."""

    name: str | None = None
    role: str | None = None
    phone: str | None = None
    priority: int | None = None
    note: str | None = None


@dataclass(frozen=True, slots=True)
class EmergencyContact:
    id: int
    resident_id: int
    name: str
    role: str
    phone: str
    priority: int
    note: str | None


EmergencyContactEntry = FamilyMemberRecord | EmergencyContact


# Checks ------------------------------------------------------------------------------------------


def _check_priority(priority: int | None, problems: list[InvalidInput]) -> None:
    if priority is not None and not 1 <= priority <= MAX_PRIORITY:
        problems.append(
            InvalidInput("Priority must be between 1 and {max}.", field="priority", max=MAX_PRIORITY)
        )


def check_contact(new: NewEmergencyContact) -> NewEmergencyContact:
    problems: list[InvalidInput] = []
    name = text(new.name, "name", problems, limit=MAX_NAME, required=True)
    role = text(new.role, "role", problems, limit=MAX_ROLE, required=True)
    phone = _check_phone(new.phone, "phone", problems)
    _check_priority(new.priority, problems)
    note = text(new.note, "note", problems, limit=MAX_NOTE)
    raise_if_any(problems)
    return NewEmergencyContact(name or "", role or "", phone, new.priority, note)


def check_changes(changes: EmergencyContactChanges) -> EmergencyContactChanges:
    problems: list[InvalidInput] = []
    name = role = phone = None
    if changes.name is not None:
        name = text(changes.name, "name", problems, limit=MAX_NAME, required=True)
    if changes.role is not None:
        role = text(changes.role, "role", problems, limit=MAX_ROLE, required=True)
    if changes.phone is not None:
        phone = _check_phone(changes.phone, "phone", problems)
    _check_priority(changes.priority, problems)
    note = None
    if changes.note is not None:
        note = text(changes.note, "note", problems, limit=MAX_NOTE) or ""
    raise_if_any(problems)
    return EmergencyContactChanges(name, role, phone, changes.priority, note)


# Storage -----------------------------------------------------------------------------------------


def _plaintexts(contact: NewEmergencyContact) -> dict[str, bytes | None]:
    return {
        "name": padded(contact.name, _BLOCKS["name"]),
        "role": padded(contact.role, _BLOCKS["role"]),
        "phone": padded(contact.phone, _BLOCKS["phone"]),
        "note": None if contact.note is None else padded(contact.note, _BLOCKS["note"]),
    }


async def _sealed(resident_id: int, row_id: int, contact: NewEmergencyContact) -> dict[str, bytes | None]:
    cipher = await field_cipher()
    return {
        column: None if value is None else await seal(cipher, TABLE, column, row_id, resident_id, value)
        for column, value in _plaintexts(contact).items()
    }


async def add_contact(resident_id: int, new: NewEmergencyContact, *, recorded_by: str) -> EmergencyContact:
    """Add a contact who is not family (ValidationFailed, NotFound, Erased)."""
    checked = check_contact(new)
    await admission_date_of(resident_id, lock=True)
    count = (await execute(f"SELECT count(*) AS n FROM {TABLE} WHERE resident_id = $1", [resident_id]))[0]
    if count["n"] >= MAX_CONTACTS:
        raise InvalidInput("At most {max} emergency contacts.", field="residentId", max=MAX_CONTACTS)
    await writable(await field_cipher(), resident_id)
    priority = checked.priority
    if priority is None:
        rows = await execute(
            f"SELECT coalesce(max(priority), 0) + 1 AS p FROM {TABLE} WHERE resident_id = $1", [resident_id]
        )
        priority = min(rows[0]["p"], MAX_PRIORITY)
    (row_id,) = await next_ids(TABLE, 1)
    sealed = await _sealed(resident_id, row_id, checked)
    await execute(
        f"""INSERT INTO {TABLE} (id, resident_id, name, role, phone, note, priority, recorded_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        [
            row_id,
            resident_id,
            sealed["name"],
            sealed["role"],
            sealed["phone"],
            sealed["note"],
            priority,
            recorded_by,
        ],
    )
    return EmergencyContact(
        row_id, resident_id, checked.name, checked.role, checked.phone, priority, checked.note
    )


async def resident_of_contact(contact_id: int) -> int:
    rows = await execute(f"SELECT resident_id FROM {TABLE} WHERE id = $1", [contact_id])
    if not rows:
        raise NotFound("Not found.")
    return int(rows[0]["resident_id"])


async def _opened(row: dict) -> EmergencyContact:
    opened = await open_row(await field_cipher(), TABLE, row, SEALED)
    note = opened["note"]
    return EmergencyContact(
        row["id"],
        row["resident_id"],
        unpadded(opened["name"] or b""),
        unpadded(opened["role"] or b""),
        unpadded(opened["phone"] or b""),
        row["priority"],
        None if note is None else unpadded(note),
    )


async def update_contact(
    resident_id: int, contact_id: int, changes: EmergencyContactChanges
) -> EmergencyContact:
    """Change a contact (all its fields are sealed again, under its row id). ValidationFailed, NotFound,
    Erased."""
    checked = check_changes(changes)
    rows = await execute(
        f"SELECT * FROM {TABLE} WHERE id = $1 AND resident_id = $2 FOR UPDATE", [contact_id, resident_id]
    )
    if not rows:
        raise NotFound("Not found.")
    current = await _opened(dict(rows[0]))
    note = current.note if checked.note is None else (checked.note or None)
    updated = EmergencyContact(
        contact_id,
        resident_id,
        checked.name if checked.name is not None else current.name,
        checked.role if checked.role is not None else current.role,
        checked.phone if checked.phone is not None else current.phone,
        checked.priority if checked.priority is not None else current.priority,
        note,
    )
    sealed = await _sealed(
        resident_id,
        contact_id,
        NewEmergencyContact(updated.name, updated.role, updated.phone, updated.priority, updated.note),
    )
    await execute(
        f"""UPDATE {TABLE} SET name = $2, role = $3, phone = $4, note = $5, priority = $6,
                   updated_at = now() WHERE id = $1""",
        [contact_id, sealed["name"], sealed["role"], sealed["phone"], sealed["note"], updated.priority],
    )
    return updated


async def remove_contact(resident_id: int, contact_id: int) -> None:
    """Delete the contact (NotFound if it is not the resident's)."""
    rows = await execute(
        f"DELETE FROM {TABLE} WHERE id = $1 AND resident_id = $2 RETURNING id", [contact_id, resident_id]
    )
    if not rows:
        raise NotFound("Not found.")


async def contacts_of(resident_ids: Iterable[int]) -> dict[int, list[EmergencyContact] | Erased]:
    """The contacts (not family) of each resident in priority order; an `Erased` error for a resident
    whose data key was destroyed. One query for the rows, one for the data keys."""
    wanted = sorted(set(resident_ids))
    found: dict[int, list[EmergencyContact] | Erased] = {resident_id: [] for resident_id in wanted}
    if not wanted:
        return found
    rows = await execute(
        f"SELECT * FROM {TABLE} WHERE resident_id = ANY($1::bigint[]) ORDER BY resident_id, priority, id",
        [wanted],
    )
    if rows:
        await (await field_cipher()).load_data_keys(row["resident_id"] for row in rows)
    for row in rows:
        contacts = found[row["resident_id"]]
        if isinstance(contacts, Erased):
            continue
        try:
            contacts.append(await _opened(dict(row)))
        except Erased as erased:
            found[row["resident_id"]] = erased
    return found


async def load_contacts(resident_ids: list[int]) -> list[list[EmergencyContact] | BaseException]:
    """DataLoader batch function (schema/context.py): `contacts_of` in the order asked."""
    found = await contacts_of(resident_ids)
    return [found[resident_id] for resident_id in resident_ids]


def call_list(
    family: Iterable[FamilyMemberRecord], contacts: Iterable[EmergencyContact]
) -> list[EmergencyContactEntry]:
    """The whole call list of one resident: the family members flagged as emergency contacts first (in
    registration order), then the other contacts by priority. Erased if the resident was erased."""
    members = [member for member in family if member.is_emergency_contact]
    if any(member.erased for member in members):
        raise Erased(ERASED)
    return [*members, *sorted(contacts, key=lambda contact: (contact.priority, contact.id))]


async def emergency_contacts_of(resident_ids: Iterable[int]) -> dict[int, list[EmergencyContactEntry]]:
    """The call list of each resident (`call_list`), for code outside the API; Erased as above."""
    wanted = sorted(set(resident_ids))
    family = await family_members_of(wanted)
    contacts = await contacts_of(wanted)
    lists: dict[int, list[EmergencyContactEntry]] = {}
    for resident_id in wanted:
        own = contacts[resident_id]
        if isinstance(own, Erased):
            raise own
        lists[resident_id] = call_list(family.get(resident_id, []), own)
    return lists


# Demo data ---------------------------------------------------------------------------------------

_SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗"
_GIVEN = ("建国", "秀英", "桂兰", "志强", "丽华", "海燕", "德明", "玉珍", "国平", "春梅", "卫东", "晓红")
_ROLES = (
    ("邻居", "住同一小区，有家里钥匙"),
    ("老同事", None),
    ("街道民政监护人", "工作日 9:00–17:00 可联系，夜间请先拨家属"),
    ("家庭医生", "社区卫生服务中心签约医生"),
    ("干女儿", "子女在国外时由她代为处理"),
    ("老朋友", "每周来探望"),
)


def _demo_phone(rng: random.Random) -> str:
    return f"1{rng.choice('3578')}{rng.randint(0, 9)}{rng.randint(0, 99_999_999):08d}"


async def seed_demo(rng: random.Random, today: date) -> int:
    """A few contacts who are not family for about one resident in five; returns the rows written."""
    residents = await execute("SELECT id FROM resident ORDER BY id", [])
    rows: list[tuple[int, NewEmergencyContact]] = []
    for row in residents:
        if rng.random() >= 0.2:
            continue
        for priority in range(1, rng.randint(1, 2) + 1):
            role, note = rng.choice(_ROLES)
            name = rng.choice(_SURNAMES) + rng.choice(_GIVEN)
            rows.append((row["id"], NewEmergencyContact(name, role, _demo_phone(rng), priority, note)))
    if not rows:
        return 0
    cipher = await field_cipher()
    await cipher.ensure_data_keys({resident_id for resident_id, _ in rows})
    ids = await next_ids(TABLE, len(rows))
    columns: dict[str, list[bytes | None]] = {column: [] for column in SEALED}
    for row_id, (resident_id, contact) in zip(ids, rows, strict=True):
        for column, value in _plaintexts(contact).items():
            columns[column].append(
                None if value is None else await seal(cipher, TABLE, column, row_id, resident_id, value)
            )
    await execute(
        f"""INSERT INTO {TABLE} (id, resident_id, name, role, phone, note, priority, recorded_by)
            SELECT i, r, n, ro, ph, no, p, 'demo' FROM unnest(
                $1::bigint[], $2::bigint[], $3::bytea[], $4::bytea[], $5::bytea[], $6::bytea[], $7::int[]
            ) AS t (i, r, n, ro, ph, no, p)""",
        [
            ids,
            [resident_id for resident_id, _ in rows],
            columns["name"],
            columns["role"],
            columns["phone"],
            columns["note"],
            [contact.priority or 1 for _, contact in rows],
        ],
    )
    return len(rows)

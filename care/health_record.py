"""The health part of the resident record: diagnoses, medications and allergies.

Every health field is sealed with the resident's data key (compliance/encryption) before it is written and
opened after it is read: an entry's sealed values are one document (`details`, migration 0012; rows from
before it hold one ciphertext per column and still read). A row's id is taken from its sequence first,
because the ciphertext is bound to it.

Input is checked as a whole and reported together (ValidationFailed): nothing is written unless all of it
is valid. Reads of many residents at once (`health_records_of`) load their data keys in one query.

Corrections (migrations/tenant/0011_health_record_corrections.sql): a diagnosis or an allergy is changed in
place, its document sealed again under the same row id; an entry recorded in error is marked
(`entered_in_error_at`, `entered_in_error_by`), not deleted, and from then on left out of every read and
every change (NotFound). Changes and marks of an erased resident's record raise Erased.
"""

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from enum import Enum, StrEnum
from typing import Any

from care.residents import next_ids
from care.sealed_rows import ERASED, execute, text
from compliance.encryption import FieldCipher, field_cipher
from tenants.db import default_connection
from tenants.errors import Erased, InvalidInput, NotFound, ValidationFailed, raise_if_any

MAX_TEXT = 200
MAX_DOSE = Decimal(10_000)
_ICD10 = re.compile(r"^[A-TV-Z][0-9][0-9A-Z](\.[0-9A-Z]{1,4})?$")


class Route(StrEnum):
    ORAL = "oral"
    SUBLINGUAL = "sublingual"
    INTRAVENOUS = "intravenous"
    INTRAMUSCULAR = "intramuscular"
    SUBCUTANEOUS = "subcutaneous"
    INHALED = "inhaled"
    TOPICAL = "topical"
    RECTAL = "rectal"
    EYE = "eye"
    EAR = "ear"
    NASAL = "nasal"


class DoseUnit(StrEnum):
    MG = "mg"
    G = "g"
    MCG = "mcg"
    ML = "ml"
    IU = "IU"
    TABLET = "tablet"
    CAPSULE = "capsule"
    DROP = "drop"
    PUFF = "puff"
    PATCH = "patch"


class Frequency(StrEnum):
    ONCE_DAILY = "qd"
    TWICE_DAILY = "bid"
    THREE_TIMES_DAILY = "tid"
    FOUR_TIMES_DAILY = "qid"
    AT_NIGHT = "qn"
    EVERY_OTHER_DAY = "qod"
    WEEKLY = "qw"
    AS_NEEDED = "prn"


class AllergySeverity(StrEnum):
    MILD = "mild"
    MODERATE = "moderate"
    SEVERE = "severe"


# What is sealed, per table: the values of the entry's sealed document (`details`); rows written before
# migration 0012 hold them as sealed columns of these names.
DOCUMENT_COLUMN = "details"
DOCUMENT_BLOCK = 32
SEALED_COLUMNS: Mapping[str, tuple[str, ...]] = {
    "diagnosis": ("condition", "icd10", "note"),
    "medication": ("drug", "dose", "route", "frequency", "prescriber"),
    "allergy": ("substance", "reaction", "severity"),
}


@dataclass(frozen=True, slots=True)
class NewDiagnosis:
    condition: str
    icd10: str | None = None
    note: str | None = None
    diagnosed_on: date | None = None
    resolved_on: date | None = None


@dataclass(frozen=True, slots=True)
class NewMedication:
    drug: str
    dose_amount: Decimal
    dose_unit: DoseUnit
    route: Route
    frequency: Frequency
    started_on: date
    ended_on: date | None = None
    prescriber: str | None = None


@dataclass(frozen=True, slots=True)
class NewAllergy:
    substance: str
    severity: AllergySeverity
    reaction: str | None = None


class Keep(Enum):
    """A date left out of a change keeps its value (None clears it)."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True, slots=True)
class DiagnosisChanges:
    """Texts left None keep their value, an empty one clears an optional text (icd10, note); dates left
    KEEP keep theirs, None clears them."""

    condition: str | None = None
    icd10: str | None = None
    note: str | None = None
    diagnosed_on: date | Keep | None = KEEP
    resolved_on: date | Keep | None = KEEP


@dataclass(frozen=True, slots=True)
class AllergyChanges:
    """Fields left None keep their value; an empty reaction clears it."""

    substance: str | None = None
    reaction: str | None = None
    severity: AllergySeverity | None = None


class Entry(StrEnum):
    """The kinds of health-record entries, by table."""

    DIAGNOSIS = "diagnosis"
    MEDICATION = "medication"
    ALLERGY = "allergy"


@dataclass(frozen=True, slots=True)
class Diagnosis:
    id: int
    resident_id: int
    condition: str
    icd10: str | None
    note: str | None
    diagnosed_on: date | None
    resolved_on: date | None


@dataclass(frozen=True, slots=True)
class Medication:
    id: int
    resident_id: int
    drug: str
    dose_amount: Decimal
    dose_unit: DoseUnit
    route: Route
    frequency: Frequency
    prescriber: str | None
    started_on: date
    ended_on: date | None

    def current_on(self, day: date) -> bool:
        return self.started_on <= day and (self.ended_on is None or self.ended_on >= day)


@dataclass(frozen=True, slots=True)
class Allergy:
    id: int
    resident_id: int
    substance: str
    reaction: str | None
    severity: AllergySeverity


@dataclass(slots=True)
class HealthRecord:
    diagnoses: list[Diagnosis] = field(default_factory=list)
    medications: list[Medication] = field(default_factory=list)
    allergies: list[Allergy] = field(default_factory=list)
    erased: bool = False  # the resident's data key was destroyed: nothing of the record can be read


# Checks ------------------------------------------------------------------------------------------


def _not_after(day: date | None, today: date, name: str, problems: list[InvalidInput]) -> None:
    if day is not None and day > today:
        problems.append(InvalidInput("The date cannot be in the future.", field=name))


def _icd10(value: str | None, problems: list[InvalidInput]) -> str | None:
    icd10 = text(value, "icd10", problems, limit=MAX_TEXT)
    if icd10 is not None:
        icd10 = icd10.upper()
        if not _ICD10.match(icd10):
            problems.append(InvalidInput("Not an ICD-10 code (e.g. I10, E11.9).", field="icd10"))
    return icd10


def check_diagnosis(new: NewDiagnosis, today: date) -> NewDiagnosis:
    problems: list[InvalidInput] = []
    condition = text(new.condition, "condition", problems, limit=MAX_TEXT, required=True)
    icd10 = _icd10(new.icd10, problems)
    note = text(new.note, "note", problems, limit=MAX_TEXT)
    _not_after(new.diagnosed_on, today, "diagnosedOn", problems)
    _not_after(new.resolved_on, today, "resolvedOn", problems)
    if new.diagnosed_on and new.resolved_on and new.resolved_on < new.diagnosed_on:
        problems.append(InvalidInput("Resolved before it was diagnosed.", field="resolvedOn"))
    raise_if_any(problems)
    return NewDiagnosis(condition or "", icd10, note, new.diagnosed_on, new.resolved_on)


def check_diagnosis_changes(current: Diagnosis, changes: DiagnosisChanges, today: date) -> Diagnosis:
    """`current` with `changes` applied, every problem of the changes reported at once (ValidationFailed):
    the same rules as a new diagnosis, on the dates as they would be after the change."""
    problems: list[InvalidInput] = []
    condition = current.condition
    if changes.condition is not None:
        condition = text(changes.condition, "condition", problems, limit=MAX_TEXT, required=True) or ""
    icd10 = current.icd10 if changes.icd10 is None else _icd10(changes.icd10, problems)
    note = current.note
    if changes.note is not None:
        note = text(changes.note, "note", problems, limit=MAX_TEXT)
    diagnosed_on, resolved_on = current.diagnosed_on, current.resolved_on
    if not isinstance(changes.diagnosed_on, Keep):
        diagnosed_on = changes.diagnosed_on
        _not_after(diagnosed_on, today, "diagnosedOn", problems)
    if not isinstance(changes.resolved_on, Keep):
        resolved_on = changes.resolved_on
        _not_after(resolved_on, today, "resolvedOn", problems)
    if diagnosed_on and resolved_on and resolved_on < diagnosed_on:
        field = "diagnosedOn" if isinstance(changes.resolved_on, Keep) else "resolvedOn"
        problems.append(InvalidInput("Resolved before it was diagnosed.", field=field))
    raise_if_any(problems)
    return Diagnosis(current.id, current.resident_id, condition, icd10, note, diagnosed_on, resolved_on)


def check_medication(new: NewMedication) -> NewMedication:
    problems: list[InvalidInput] = []
    drug = text(new.drug, "drug", problems, limit=MAX_TEXT, required=True)
    prescriber = text(new.prescriber, "prescriber", problems, limit=MAX_TEXT)
    try:
        amount = Decimal(new.dose_amount)
        if not amount.is_finite() or amount <= 0 or amount > MAX_DOSE:
            raise InvalidOperation
    except (InvalidOperation, TypeError, ValueError):
        problems.append(
            InvalidInput("A dose is a number above 0 and at most {max}.", field="doseAmount", max=MAX_DOSE)
        )
        amount = Decimal(0)
    if new.ended_on is not None and new.ended_on < new.started_on:
        problems.append(InvalidInput("It cannot end before it started.", field="endedOn"))
    raise_if_any(problems)
    return NewMedication(
        drug or "", amount, new.dose_unit, new.route, new.frequency, new.started_on, new.ended_on, prescriber
    )


def check_allergy(new: NewAllergy) -> NewAllergy:
    problems: list[InvalidInput] = []
    substance = text(new.substance, "substance", problems, limit=MAX_TEXT, required=True)
    reaction = text(new.reaction, "reaction", problems, limit=MAX_TEXT)
    raise_if_any(problems)
    return NewAllergy(substance or "", new.severity, reaction)


def check_allergy_changes(current: Allergy, changes: AllergyChanges) -> Allergy:
    """`current` with `changes` applied, every problem reported at once (ValidationFailed)."""
    problems: list[InvalidInput] = []
    substance = current.substance
    if changes.substance is not None:
        substance = text(changes.substance, "substance", problems, limit=MAX_TEXT, required=True) or ""
    reaction = current.reaction
    if changes.reaction is not None:
        reaction = text(changes.reaction, "reaction", problems, limit=MAX_TEXT)
    raise_if_any(problems)
    return Allergy(current.id, current.resident_id, substance, reaction, changes.severity or current.severity)


# Storage -----------------------------------------------------------------------------------------


async def _require_resident(resident_id: int) -> None:
    if not await execute("SELECT 1 FROM resident WHERE id = $1", [resident_id]):
        raise NotFound("Resident not found.")


def entry_document(values: Mapping[str, str | None]) -> bytes:
    """The sealed part of an entry as one JSON document, padded with spaces to whole blocks (JSON allows
    trailing space) so that its length tells little about the texts inside."""
    raw = json.dumps({k: v for k, v in values.items() if v is not None}, ensure_ascii=False).encode()
    return raw.ljust(-(-len(raw) // DOCUMENT_BLOCK) * DOCUMENT_BLOCK, b" ")


async def _seal_document(
    cipher: FieldCipher, table: str, row_id: int, resident_id: int, values: Mapping[str, str | None]
) -> bytes:
    return await cipher.encrypt(
        entry_document(values), table=table, column=DOCUMENT_COLUMN, row_id=row_id, subject_id=resident_id
    )


async def _insert_sealed(
    cipher: FieldCipher,
    table: str,
    resident_id: int,
    sealed: Mapping[str, str | None],
    plain: Mapping[str, object],
) -> int:
    (row_id,) = await next_ids(table, 1)
    values: dict[str, object] = {"id": row_id, "resident_id": resident_id, **plain}
    values[DOCUMENT_COLUMN] = await _seal_document(cipher, table, row_id, resident_id, sealed)
    columns = list(values)
    placeholders = ", ".join(f"${n}" for n in range(1, len(columns) + 1))
    # Table and column names come from SEALED_COLUMNS and this module, never from input.
    await execute(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})", list(values.values())
    )
    return row_id


async def _open(cipher: FieldCipher, table: str, row: Mapping[str, Any]) -> dict[str, str | None]:
    """The sealed values of an entry by column name: from its document, or, for a row written before
    documents (migration 0012), from its sealed columns."""
    columns = SEALED_COLUMNS[table]
    if row[DOCUMENT_COLUMN] is not None:
        plain = await cipher.decrypt(
            row[DOCUMENT_COLUMN],
            table=table,
            column=DOCUMENT_COLUMN,
            row_id=row["id"],
            subject_id=row["resident_id"],
        )
        document = json.loads(plain)
        return {column: document.get(column) for column in columns}
    opened = await cipher.open_row(
        [row[column] for column in columns],
        table=table,
        columns=columns,
        row_id=row["id"],
        subject_id=row["resident_id"],
    )
    return {
        column: None if value is None else value.decode()
        for column, value in zip(columns, opened, strict=True)
    }


def _dose_text(amount: Decimal, unit: DoseUnit) -> str:
    return f"{amount.normalize():f} {unit.value}"


def _dose_of(text: str) -> tuple[Decimal, DoseUnit]:
    amount, _, unit = text.partition(" ")
    return Decimal(amount), DoseUnit(unit)


async def add_diagnosis(resident_id: int, new: NewDiagnosis, *, recorded_by: str, today: date) -> Diagnosis:
    checked = check_diagnosis(new, today)
    await _require_resident(resident_id)
    cipher = await field_cipher()
    row_id = await _insert_sealed(
        cipher,
        "diagnosis",
        resident_id,
        {"condition": checked.condition, "icd10": checked.icd10, "note": checked.note},
        {
            "diagnosed_on": checked.diagnosed_on,
            "resolved_on": checked.resolved_on,
            "recorded_by": recorded_by,
        },
    )
    return Diagnosis(
        row_id,
        resident_id,
        checked.condition,
        checked.icd10,
        checked.note,
        checked.diagnosed_on,
        checked.resolved_on,
    )


async def add_medication(resident_id: int, new: NewMedication, *, recorded_by: str) -> Medication:
    checked = check_medication(new)
    await _require_resident(resident_id)
    cipher = await field_cipher()
    row_id = await _insert_sealed(
        cipher,
        "medication",
        resident_id,
        {
            "drug": checked.drug,
            "dose": _dose_text(checked.dose_amount, checked.dose_unit),
            "route": checked.route.value,
            "frequency": checked.frequency.value,
            "prescriber": checked.prescriber,
        },
        {"started_on": checked.started_on, "ended_on": checked.ended_on, "recorded_by": recorded_by},
    )
    return Medication(
        row_id,
        resident_id,
        checked.drug,
        checked.dose_amount,
        checked.dose_unit,
        checked.route,
        checked.frequency,
        checked.prescriber,
        checked.started_on,
        checked.ended_on,
    )


async def resident_of_entry(entry: Entry, row_id: int) -> int:
    """The resident of a diagnosis, medication or allergy; NotFound if there is none or it was marked as
    entered in error."""
    rows = await execute(
        f"SELECT resident_id FROM {entry.value} WHERE id = $1 AND entered_in_error_at IS NULL", [row_id]
    )
    if not rows:
        raise NotFound("Not found.")
    return int(rows[0]["resident_id"])


async def resident_of_medication(medication_id: int) -> int:
    return await resident_of_entry(Entry.MEDICATION, medication_id)


async def _entry_to_change(entry: Entry, resident_id: int, row_id: int) -> Mapping[str, Any]:
    """The entry's row, locked until the unit of work ends; NotFound if it is not the resident's or was
    marked as entered in error."""
    rows = await execute(
        f"SELECT * FROM {entry.value} WHERE id = $1 AND resident_id = $2 AND entered_in_error_at IS NULL"
        " FOR UPDATE",
        [row_id, resident_id],
    )
    if not rows:
        raise NotFound("Not found.")
    return rows[0]


async def _writable_cipher(resident_id: int) -> FieldCipher:
    """The cipher with the resident's data keys read; Erased if they were destroyed."""
    cipher = await field_cipher()
    await cipher.load_data_keys([resident_id])
    if cipher.erased(resident_id):
        raise Erased(ERASED)
    return cipher


async def _update_entry(
    cipher: FieldCipher,
    entry: Entry,
    row: Mapping[str, Any],
    sealed: Mapping[str, str | None],
    plain: Mapping[str, object],
    changed_by: str,
) -> None:
    """Write the changed values: `sealed` (the changed sealed values) into the entry's document, sealed
    again under the row's id (a row from before documents becomes one), and `plain` as they are."""
    values: dict[str, object] = dict(plain)
    if sealed:
        current = await _open(cipher, entry.value, row)
        values[DOCUMENT_COLUMN] = await _seal_document(
            cipher, entry.value, row["id"], row["resident_id"], {**current, **sealed}
        )
        values.update(dict.fromkeys(SEALED_COLUMNS[entry.value]))
    if not values:
        return
    assignments = ", ".join(f"{column} = ${n}" for n, column in enumerate(values, start=3))
    # Table and column names come from Entry and SEALED_COLUMNS, never from input.
    await execute(
        f"UPDATE {entry.value} SET {assignments}, updated_at = now(), updated_by = $2 WHERE id = $1",
        [row["id"], changed_by, *values.values()],
    )


def _changed(before: object, after: object, columns: Iterable[str]) -> dict[str, Any]:
    return {
        column: getattr(after, column)
        for column in columns
        if getattr(after, column) != getattr(before, column)
    }


async def end_medication(
    resident_id: int, medication_id: int, ended_on: date, *, changed_by: str | None = None
) -> Medication:
    row = await _entry_to_change(Entry.MEDICATION, resident_id, medication_id)
    if ended_on < row["started_on"]:
        raise ValidationFailed([InvalidInput("It cannot end before it started.", field="endedOn")])
    await execute(
        "UPDATE medication SET ended_on = $2, updated_at = now(), updated_by = $3 WHERE id = $1",
        [medication_id, ended_on, changed_by],
    )
    cipher = await field_cipher()
    return await _medication(cipher, {**row, "ended_on": ended_on})


async def update_diagnosis(
    resident_id: int, diagnosis_id: int, changes: DiagnosisChanges, *, changed_by: str, today: date
) -> Diagnosis:
    """Correct a diagnosis (e.g. mark it resolved): checked whole first (ValidationFailed, nothing
    written), then only the changed columns sealed again under the same row id. NotFound, Erased."""
    row = await _entry_to_change(Entry.DIAGNOSIS, resident_id, diagnosis_id)
    cipher = await _writable_cipher(resident_id)
    current = await _diagnosis(cipher, row)
    updated = check_diagnosis_changes(current, changes, today)
    await _update_entry(
        cipher,
        Entry.DIAGNOSIS,
        row,
        _changed(current, updated, SEALED_COLUMNS["diagnosis"]),
        _changed(current, updated, ("diagnosed_on", "resolved_on")),
        changed_by,
    )
    return updated


async def update_allergy(
    resident_id: int, allergy_id: int, changes: AllergyChanges, *, changed_by: str
) -> Allergy:
    """Correct an allergy, as `update_diagnosis` does a diagnosis."""
    row = await _entry_to_change(Entry.ALLERGY, resident_id, allergy_id)
    cipher = await _writable_cipher(resident_id)
    current = await _allergy(cipher, row)
    updated = check_allergy_changes(current, changes)
    sealed = _changed(current, updated, SEALED_COLUMNS["allergy"])
    if "severity" in sealed:
        sealed["severity"] = updated.severity.value
    await _update_entry(cipher, Entry.ALLERGY, row, sealed, {}, changed_by)
    return updated


async def mark_entered_in_error(entry: Entry, resident_id: int, row_id: int, *, marked_by: str) -> None:
    """Take an entry recorded in error out of the record: it is kept (sealed) and marked with when and by
    whom, and no read or change sees it again. NotFound, Erased."""
    await _writable_cipher(resident_id)
    # execute_query_dict: tortoise's execute_query returns no rows for an UPDATE, RETURNING or not.
    rows = await default_connection().execute_query_dict(
        f"""UPDATE {entry.value} SET entered_in_error_at = now(), entered_in_error_by = $3
            WHERE id = $1 AND resident_id = $2 AND entered_in_error_at IS NULL RETURNING id""",
        [row_id, resident_id, marked_by],
    )
    if not rows:
        raise NotFound("Not found.")


async def add_allergy(resident_id: int, new: NewAllergy, *, recorded_by: str) -> Allergy:
    checked = check_allergy(new)
    await _require_resident(resident_id)
    cipher = await field_cipher()
    row_id = await _insert_sealed(
        cipher,
        "allergy",
        resident_id,
        {"substance": checked.substance, "reaction": checked.reaction, "severity": checked.severity.value},
        {"recorded_by": recorded_by},
    )
    return Allergy(row_id, resident_id, checked.substance, checked.reaction, checked.severity)


async def _diagnosis(cipher: FieldCipher, row: Mapping[str, Any]) -> Diagnosis:
    opened = await _open(cipher, "diagnosis", row)
    return Diagnosis(
        row["id"],
        row["resident_id"],
        opened["condition"] or "",
        opened["icd10"],
        opened["note"],
        row["diagnosed_on"],
        row["resolved_on"],
    )


async def _allergy(cipher: FieldCipher, row: Mapping[str, Any]) -> Allergy:
    opened = await _open(cipher, "allergy", row)
    return Allergy(
        row["id"],
        row["resident_id"],
        opened["substance"] or "",
        opened["reaction"],
        AllergySeverity(opened["severity"]),
    )


async def _medication(cipher: FieldCipher, row: Mapping[str, Any]) -> Medication:
    opened = await _open(cipher, "medication", row)
    amount, unit = _dose_of(opened["dose"] or "")
    return Medication(
        row["id"],
        row["resident_id"],
        opened["drug"] or "",
        amount,
        unit,
        Route(opened["route"]),
        Frequency(opened["frequency"]),
        opened["prescriber"],
        row["started_on"],
        row["ended_on"],
    )


async def health_records_of(resident_ids: Iterable[int]) -> dict[int, HealthRecord]:
    """The health records of several residents: three queries and one for their keys, however many."""
    wanted = sorted(set(resident_ids))
    records = {resident_id: HealthRecord() for resident_id in wanted}
    if not wanted:
        return records
    cipher = await field_cipher()
    await cipher.load_data_keys(wanted)
    for resident_id in wanted:
        records[resident_id].erased = cipher.erased(resident_id)
    readable = [resident_id for resident_id in wanted if not records[resident_id].erased]
    # Entries marked as entered in error stay in the tables but are no longer part of the record.
    current = "resident_id = ANY($1::bigint[]) AND entered_in_error_at IS NULL ORDER BY id"
    for row in await execute(f"SELECT * FROM diagnosis WHERE {current}", [readable]):
        records[row["resident_id"]].diagnoses.append(await _diagnosis(cipher, row))
    for row in await execute(f"SELECT * FROM medication WHERE {current}", [readable]):
        records[row["resident_id"]].medications.append(await _medication(cipher, row))
    for row in await execute(f"SELECT * FROM allergy WHERE {current}", [readable]):
        records[row["resident_id"]].allergies.append(await _allergy(cipher, row))
    return records

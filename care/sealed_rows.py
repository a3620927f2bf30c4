"""Sealing and opening the fields of one row under its resident's data key, for the preferences, the
emergency contacts and the family communication log (care/preferences.py, care/emergency_contacts.py,
care/family_log.py).

A row's id is taken from its sequence first (`care.residents.next_ids`): the ciphertexts are bound to it.
Text is padded with NUL bytes to whole blocks before sealing, so that a ciphertext's length tells little
about the value. A resident whose data key was destroyed reads and writes as `Erased` (GONE).
"""

from collections.abc import Iterable, Mapping, Sequence
from datetime import date
from typing import Any

from compliance.encryption import DataKeyDestroyed, FieldCipher, field_cipher
from tenants.db import default_connection
from tenants.errors import Erased, InvalidInput, NotFound

ERASED = "The personal data of this resident was erased."


async def execute(sql: str, parameters: Sequence[object]) -> list[dict[str, Any]]:
    """The rows of a statement (RETURNING rows of an INSERT, UPDATE or DELETE too), as dicts."""
    return await default_connection().execute_query_dict(sql, list(parameters))


def padded(text: str, block: int) -> bytes:
    raw = text.encode()
    return raw.ljust(-(-max(len(raw), 1) // block) * block, b"\0")


def unpadded(raw: bytes) -> str:
    return raw.rstrip(b"\0").decode()


async def admission_date_of(resident_id: int, *, lock: bool = False) -> date:
    """The resident's admission date (NotFound if there is no such resident). `lock` holds the resident
    row (FOR NO KEY UPDATE) until the unit of work ends, so that writers of one resident take turns."""
    clause = " FOR NO KEY UPDATE" if lock else ""
    rows = await execute(f"SELECT admission_date FROM resident WHERE id = $1{clause}", [resident_id])
    if not rows:
        raise NotFound("Resident not found.")
    return rows[0]["admission_date"]


async def writable(cipher: FieldCipher, resident_id: int) -> None:
    """The resident's data key, created if it has none; Erased if it was destroyed. Call it before the
    first write, so that an erased resident leaves nothing half-written."""
    try:
        await cipher.ensure_data_keys([resident_id])
    except DataKeyDestroyed as exc:
        raise Erased(ERASED) from exc


async def seal(
    cipher: FieldCipher, table: str, column: str, row_id: int, resident_id: int, value: bytes
) -> bytes:
    try:
        return await cipher.encrypt(value, table=table, column=column, row_id=row_id, subject_id=resident_id)
    except DataKeyDestroyed as exc:
        raise Erased(ERASED) from exc


async def open_row(
    cipher: FieldCipher, table: str, row: Mapping[str, Any], columns: Iterable[str]
) -> dict[str, bytes | None]:
    """The plaintexts of the sealed `columns` of `row` (None where the column is null). Erased if the
    resident's data key was destroyed; CiphertextRejected (an error, never other data) if a ciphertext
    is not this row's."""
    names = tuple(columns)
    try:
        opened = await cipher.open_row(
            [row[column] for column in names],
            table=table,
            columns=names,
            row_id=row["id"],
            subject_id=row["resident_id"],
        )
    except DataKeyDestroyed as exc:
        raise Erased(ERASED) from exc
    return dict(zip(names, opened, strict=True))


async def opened_texts(table: str, rows: Sequence[Mapping[str, Any]], column: str) -> dict[int, str]:
    """The text sealed in `column` of each of `rows` where it is set, by row id: the residents' data keys
    are loaded at once (Erased, CiphertextRejected as `open_row`)."""
    sealed = [row for row in rows if row[column] is not None]
    texts: dict[int, str] = {}
    if sealed:
        cipher = await field_cipher()
        await cipher.load_data_keys({row["resident_id"] for row in sealed})
        for row in sealed:
            opened = await open_row(cipher, table, row, (column,))
            texts[row["id"]] = unpadded(opened[column] or b"")
    return texts


def text(
    value: str | None, name: str, problems: list[InvalidInput], *, limit: int, required: bool = False
) -> str | None:
    """`value` stripped, None when empty; a problem when required and empty, or longer than `limit`."""
    cleaned = value.strip() if value is not None else ""
    if not cleaned:
        if required:
            problems.append(InvalidInput("This field is required.", field=name))
        return None
    if len(cleaned) > limit:
        problems.append(InvalidInput("At most {max} characters.", field=name, max=limit))
    elif "\0" in cleaned:
        problems.append(InvalidInput("The text contains a NUL character.", field=name))
    return cleaned

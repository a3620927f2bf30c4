"""No identity in plaintext anywhere in a tenant schema: every text, varchar and bytea column of every
tenant schema is read whole (what pg_dump would write) and searched for the names, ID-card numbers and
phones that were admitted or seeded, as text and as UTF-8 inside bytea.

Two databases: the test world plus admissions with ID-card numbers, phones and family members here; and
the demo data seeded into a scratch database once per run (`seeded_demo`, tests/demo_support.py), whose
plaintexts are known by decrypting them through the domain.
"""

from datetime import date

import ahocorasick
import asyncpg
import pytest

from care.models import CareLevel, Gender, Relationship
from care.residents import (
    Admission,
    NewFamilyMember,
    Placement,
    add_family_member,
    admit_resident,
    id_card_check_character,
)
from tenants.db import asyncpg_dsn
from tenants.models import Institution
from tenants.registry import tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.conftest import World
from tests.demo_support import SeededDemo

SEPARATOR = "\n\x00\n"


async def tenant_columns(conn: asyncpg.Connection) -> list[tuple[str, str, str, str]]:
    """(schema, table, column, type) of every text, varchar, char and bytea column of every tenant schema."""
    schemas = [row["schema_name"] for row in await conn.fetch("SELECT schema_name FROM shared.institution")]
    rows = await conn.fetch(
        """SELECT c.table_schema, c.table_name, c.column_name, c.data_type
           FROM information_schema.columns c
           JOIN information_schema.tables t USING (table_schema, table_name)
           WHERE c.table_schema = ANY($1::text[]) AND t.table_type = 'BASE TABLE'
             AND c.data_type IN ('text', 'character varying', 'character', 'bytea')""",
        schemas,
    )
    assert rows and {row["table_schema"] for row in rows} == set(schemas)
    return [tuple(row) for row in rows]


def _automaton(needles: set[str], *, as_bytes: bool) -> ahocorasick.Automaton:
    """One automaton for every needle: as text, or as its UTF-8 bytes (read as Latin-1, one character a
    byte, so that bytea values are searched byte for byte)."""
    automaton = ahocorasick.Automaton()
    for needle in needles:
        key = needle.encode().decode("latin-1") if as_bytes else needle
        automaton.add_word(key, needle)
    automaton.make_automaton()
    return automaton


async def plaintexts_found(conn: asyncpg.Connection, needles: set[str]) -> list[tuple[str, str]]:
    """(schema.table.column, needle) for every needle found in a column, as text or as UTF-8 bytes."""
    found: set[tuple[str, str]] = set()
    text_automaton = _automaton(needles, as_bytes=False)
    bytes_automaton = _automaton(needles, as_bytes=True)
    for schema, table, column, data_type in await tenant_columns(conn):
        values = await conn.fetch(
            f'SELECT "{column}" AS v FROM "{schema}"."{table}" WHERE "{column}" IS NOT NULL'
        )
        if data_type == "bytea":
            haystack = SEPARATOR.encode().join(bytes(row["v"]) for row in values).decode("latin-1")
            automaton = bytes_automaton
        else:
            haystack = SEPARATOR.join(row["v"] for row in values)
            automaton = text_automaton
        if haystack:
            found.update((f"{schema}.{table}.{column}", needle) for _, needle in automaton.iter(haystack))
    return sorted(found)


def id_card(area: str, birth: date, sequence: int) -> str:
    first17 = f"{area}{birth:%Y%m%d}{sequence:03d}"
    return first17 + id_card_check_character(first17)


async def test_no_identity_in_plaintext_in_the_test_world(app: object, world: World, settings) -> None:
    institution = await Institution.get(id=world.institution_ids[19])
    people = [
        ("欧阳明月", Gender.FEMALE, date(1939, 4, 1), "13566667777", "欧阳小雨", "18611112222"),
        ("司马长风", Gender.MALE, date(1942, 9, 9), "15088889999", "司马青", "13033334444"),
    ]
    needles = {name for names in world.resident_names.values() for name in names}

    async def admit_all() -> None:
        for k, (name, gender, birth, phone, relative, relative_phone) in enumerate(people):
            number = id_card("440305", birth, 11 + k * 10 + (1 if gender is Gender.MALE else 0))
            needles.update({name, phone, number, relative, relative_phone})
            record = await admit_resident(
                Admission(
                    name,
                    gender,
                    birth,
                    CareLevel.FULL_CARE,
                    date(2025, 2, 1),
                    Placement(building="扫描楼", room=f"90{k}", bed="1"),
                    id_card_number=number,
                    phone=phone,
                )
            )
            await add_family_member(
                record.id, NewFamilyMember(relative, Relationship.DAUGHTER, relative_phone)
            )

    await run_in_tenant(tenant_ref(institution), admit_all)
    conn = await asyncpg.connect(asyncpg_dsn(settings.database_url))
    try:
        # The scan does see plaintext where there is some (placement is plaintext on purpose).
        assert await plaintexts_found(conn, {"扫描楼"}), "the scan found nothing it should"
        assert await plaintexts_found(conn, needles) == []
    finally:
        await conn.close()


async def test_no_identity_or_health_data_in_plaintext_in_the_demo_data(seeded_demo: SeededDemo) -> None:
    url, plain = seeded_demo.url, seeded_demo.plain
    needles: set[str] = set()
    record_texts: set[str] = set()
    for institution in plain.values():
        for resident in institution["residents"]:
            needles.update(v for k, v in resident.items() if k in ("name", "id_card_number", "phone") and v)
        for member in institution["family"]:
            needles.update((member["name"], member["phone"]))
        record_texts.update(institution["record_texts"])
    assert len(needles) > 3000
    assert len(record_texts) > 30  # diagnoses, medications, allergies, and the rest of the record
    needles |= record_texts
    conn = await asyncpg.connect(url)
    try:
        assert await plaintexts_found(conn, {"号楼"})  # placement: plaintext on purpose
        assert await plaintexts_found(conn, needles) == []
    finally:
        await conn.close()


@pytest.mark.parametrize("value", ["张", "13800138000"])
def test_the_scan_matches_bytes_and_text(value: str) -> None:
    """What `plaintexts_found` relies on: a value is found as UTF-8 inside bytes, and inside text."""
    in_bytes = (b"\x01\xe5" + SEPARATOR.encode() + f"x{value}y".encode()).decode("latin-1")
    assert [n for _, n in _automaton({value, "无关"}, as_bytes=True).iter(in_bytes)] == [value]
    assert [n for _, n in _automaton({value, "无关"}, as_bytes=False).iter(f"x{value}y")] == [value]
    assert list(_automaton({value}, as_bytes=True).iter("\x01\x02")) == []

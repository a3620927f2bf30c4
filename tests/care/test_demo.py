"""`yiyang seed` on a fresh database: the demo world a newcomer sees, loaded once.

The world is seeded once per test run (the `seeded_demo` fixture, tests/demo_support.py): in a
subprocess, on a database of its own, checked with asyncpg and decrypted through the domain.
"""

import asyncio
import re
import textwrap
from collections.abc import Awaitable, Callable

import asyncpg

from care.residents import id_card_birth_date, valid_id_card
from tests.demo_support import SeededDemo, decrypted, run_python, seed

MOBILE = r"^1[3-9][0-9]{9}$"


# Seeds with the ORM already open (as a test or a server would), passing a URL it must not use.
SEED_WITH_OPEN_ORM = textwrap.dedent(
    """
    import asyncio, os
    from tortoise import Tortoise
    from care.demo import seed_demo_data
    from tenants.db import close_database, open_database
    from tenants.models import Institution

    async def main():
        await open_database(os.environ["DATABASE_URL"])
        try:
            report = await seed_demo_data("postgres://nobody@invalid.invalid:1/none")
            assert Tortoise._inited, "seed_demo_data closed the caller's ORM"
            print(report.institutions, report.residents, report.skipped, await Institution.all().count())
        finally:
            await close_database()

    asyncio.run(main())
    """
)


def _undated(resident: dict) -> dict:
    """A decrypted resident without what follows today's date (birth date, ID-card number)."""
    return {k: v for k, v in resident.items() if k not in ("birth_date", "id_card_number")}


async def _fingerprint(
    conn: asyncpg.Connection, database_url: str, plain: dict[str, dict] | None = None
) -> list[tuple]:
    """Everything the seed chose except dates (those follow today's date); sealed fields decrypted (their
    ciphertexts differ from one seeding to the next: random nonces, keys of their own). `plain`: the
    decrypted dump when the caller holds it already."""
    plain = plain if plain is not None else await decrypted(database_url)
    rows = []
    for institution in await conn.fetch(
        "SELECT name, schema_name, bed_capacity FROM shared.institution ORDER BY id"
    ):
        schema = institution["schema_name"]
        residents = await conn.fetchval(
            f"""SELECT md5(string_agg(concat_ws('|', id, care_level, building, room, bed,
                                                status, discharge_reason), ',' ORDER BY id))
                FROM "{schema}".resident"""
        )
        family = await conn.fetchval(
            f"""SELECT md5(string_agg(concat_ws('|', resident_id, relationship,
                                                is_emergency_contact), ',' ORDER BY id))
                FROM "{schema}".family_member"""
        )
        sealed = [_undated(r) for r in plain[schema]["residents"]], plain[schema]["family"]
        rows.append((institution["name"], institution["bed_capacity"], residents, family, sealed))
    return rows


def _check_identities(plain: dict, today: object) -> None:
    """Names, ID-card numbers (valid, matching the birth date), phones of one institution, decrypted."""
    from datetime import date

    assert isinstance(today, date)
    residents, family = plain["residents"], plain["family"]
    assert residents and all(r["name"] and 1 <= len(r["name"]) <= 100 for r in residents)
    for resident in residents:
        number, birth = resident["id_card_number"], date.fromisoformat(resident["birth_date"])
        assert valid_id_card(number) == number, number
        assert id_card_birth_date(number) == birth, (number, birth)
        assert int(number[16]) % 2 == (1 if resident["gender"] == "male" else 0), number
        assert resident["phone"] is None or re.fullmatch(MOBILE, resident["phone"]), resident["phone"]
    assert any(r["phone"] for r in residents) and not all(r["phone"] for r in residents)
    assert all(re.fullmatch(MOBILE, m["phone"]) and m["name"] for m in family)
    ages = [(today - date.fromisoformat(r["birth_date"])).days / 365.25 for r in residents]
    assert 60 <= min(ages) and max(ages) <= 106


async def _check_institution(conn: asyncpg.Connection, schema: str) -> int:
    """Checks one institution's residents and families; returns how many live there."""
    counts = dict(await conn.fetch(f'SELECT status, count(*) FROM "{schema}".resident GROUP BY status'))
    assert 40 <= counts.get("in_residence", 0) <= 150, counts
    assert counts.get("discharged", 0) > 0, counts

    # Ages (birth dates are sealed: checked decrypted in _check_ages), and the first admission.
    first_admission = await conn.fetchval(
        f"""SELECT min(admission_date) FROM "{schema}".resident WHERE status = 'in_residence'"""
    )
    assert (await conn.fetchval("SELECT current_date") - first_admission).days <= 5 * 366
    levels = await conn.fetchval(f'SELECT count(DISTINCT care_level) FROM "{schema}".resident')
    assert levels == 4

    discharges = await conn.fetchrow(
        f"""SELECT bool_and(discharge_reason IS NOT NULL) AS with_reason,
                   bool_and(discharged_on >= admission_date) AS after_admission,
                   max(discharged_on) AS last
            FROM "{schema}".resident WHERE status = 'discharged'"""
    )
    assert discharges["with_reason"] and discharges["after_admission"], dict(discharges)
    assert discharges["last"] <= await conn.fetchval("SELECT (now() AT TIME ZONE 'Asia/Shanghai')::date")

    shared_beds = await conn.fetchval(
        f"""SELECT count(*) FROM (SELECT building, room, bed FROM "{schema}".resident
            WHERE status = 'in_residence' GROUP BY 1, 2, 3 HAVING count(*) > 1) AS doubled"""
    )
    assert shared_beds == 0
    # Nor did two stays in one bed overlap in the past.
    overlapping = await conn.fetchval(
        f"""SELECT count(*) FROM "{schema}".resident a JOIN "{schema}".resident b
              ON (a.building, a.room, a.bed) = (b.building, b.room, b.bed) AND a.id < b.id
            WHERE daterange(a.admission_date, coalesce(a.discharged_on, 'infinity'))
               && daterange(b.admission_date, coalesce(b.discharged_on, 'infinity'))"""
    )
    assert overlapping == 0

    families = await conn.fetchrow(
        f"""SELECT min(n) AS fewest, max(n) AS most, bool_and(emergency = 1) AS one_emergency_contact
            FROM (SELECT r.id, count(f.id) AS n,
                         count(f.id) FILTER (WHERE f.is_emergency_contact) AS emergency
                  FROM "{schema}".resident r LEFT JOIN "{schema}".family_member f ON f.resident_id = r.id
                  GROUP BY r.id) AS per_resident"""
    )
    assert families["fewest"] >= 1 and families["most"] <= 3, dict(families)
    assert families["one_emergency_contact"]
    # Phones are sealed: checked decrypted (_check_identities).

    # Rows came with explicit ids: the next admission must still get a fresh one.
    next_id = await conn.fetchval(f"SELECT nextval(pg_get_serial_sequence('\"{schema}\".resident', 'id'))")
    assert next_id > await conn.fetchval(f'SELECT max(id) FROM "{schema}".resident')
    return counts["in_residence"]


async def _check_ages(conn: asyncpg.Connection, schema: str, residents: list[dict]) -> None:
    """Ages of those in residence today, and at admission (the birth dates decrypted)."""
    from datetime import date

    admitted = dict(
        await conn.fetch(
            f"""SELECT id, admission_date FROM "{schema}".resident WHERE status = 'in_residence'"""
        )
    )
    today = await conn.fetchval("SELECT current_date")

    def years(birth: date, on: date) -> int:
        return on.year - birth.year - ((on.month, on.day) < (birth.month, birth.day))

    living = [
        (date.fromisoformat(r["birth_date"]), admitted[r["id"]]) for r in residents if r["id"] in admitted
    ]
    assert 60 <= min(years(b, today) for b, _ in living) and max(years(b, today) for b, _ in living) <= 100
    assert min(years(b, a) for b, a in living) >= 60


async def test_seed_builds_a_living_world_once(seeded_demo: SeededDemo) -> None:
    url, plain = seeded_demo.url, seeded_demo.plain
    assert "demo data:" in seeded_demo.stdout
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM shared.chain") >= 2
        assert await conn.fetchval("SELECT count(DISTINCT region_id) FROM shared.institution") == 3
        institutions = await conn.fetch("SELECT schema_name, chain_id FROM shared.institution")
        assert len(institutions) >= 12
        assert any(row["chain_id"] is None for row in institutions)
        assert len({row["chain_id"] for row in institutions if row["chain_id"] is not None}) >= 2
        living = [await _check_institution(conn, row["schema_name"]) for row in institutions]
        assert len(set(living)) > 3, "the number of residents should vary with the institution"
        today = await conn.fetchval("SELECT (now() AT TIME ZONE 'Asia/Shanghai')::date")
        for row in institutions:
            _check_identities(plain[row["schema_name"]], today)
            await _check_ages(conn, row["schema_name"], plain[row["schema_name"]]["residents"])

        before = await _fingerprint(conn, url, plain)
        second = await seed(url)
        assert "not loaded" in second.stdout
        assert await _fingerprint(conn, url) == before
    finally:
        await conn.close()


async def test_seed_uses_an_open_orm_and_is_deterministic(
    seeded_demo: SeededDemo, migrated_database: Callable[[], Awaitable[str]]
) -> None:
    second_url = await migrated_database()
    loaded = await asyncio.to_thread(run_python, second_url, "-c", SEED_WITH_OPEN_ORM)
    assert loaded.returncode == 0, loaded.stderr
    institutions, residents, skipped, registered = loaded.stdout.split()
    assert (institutions, skipped, registered) == ("12", "False", "12")
    assert int(residents) > 12 * 40

    again = await asyncio.to_thread(run_python, second_url, "-c", SEED_WITH_OPEN_ORM)
    assert again.returncode == 0, again.stderr
    assert again.stdout.split()[2:] == ["True", "12"]

    first, second = await asyncpg.connect(seeded_demo.url), await asyncpg.connect(second_url)
    try:
        assert await _fingerprint(first, seeded_demo.url, seeded_demo.plain) == await _fingerprint(
            second, second_url
        )
    finally:
        await first.close()
        await second.close()

"""`yiyang seed` on a fresh database: the demo world a newcomer sees, loaded once."""

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator

import asyncpg
import pytest

from api.settings import REPO_ROOT
from tenants.db import asyncpg_dsn
from tenants.migrate import migrate_all
from tests.conftest import Endpoints


@pytest.fixture
async def empty_database(endpoints: Endpoints) -> AsyncIterator[str]:
    name = f"yiyang_demo_{secrets.token_hex(4)}"
    admin = await asyncpg.connect(asyncpg_dsn(endpoints.database_url))
    await admin.execute(f'CREATE DATABASE "{name}"')
    url = asyncpg_dsn(endpoints.database_url).rpartition("/")[0] + f"/{name}"
    try:
        await migrate_all(url)
        yield url
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


def _seed(database_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": database_url}
    return subprocess.run(
        [sys.executable, "-m", "api.cli", "seed"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


async def test_seed_builds_a_living_world_once(empty_database: str) -> None:
    first = await asyncio.to_thread(_seed, empty_database)
    assert first.returncode == 0, first.stderr
    conn = await asyncpg.connect(empty_database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM shared.chain") >= 2
        assert await conn.fetchval("SELECT count(DISTINCT region_id) FROM shared.institution") == 3
        institutions = await conn.fetch("SELECT schema_name, chain_id FROM shared.institution")
        assert len(institutions) >= 12
        assert any(row["chain_id"] is None for row in institutions)
        total = 0
        for row in institutions:
            schema = row["schema_name"]
            in_residence = await conn.fetchval(
                f"SELECT count(*) FROM \"{schema}\".resident WHERE status = 'in_residence'"
            )
            assert 40 <= in_residence <= 150
            assert (
                await conn.fetchval(f"SELECT count(*) FROM \"{schema}\".resident WHERE status = 'discharged'")
                > 0
            )
            shared_beds = await conn.fetchval(
                f"""SELECT count(*) FROM (SELECT building, room, bed FROM "{schema}".resident
                    WHERE status = 'in_residence' GROUP BY 1, 2, 3 HAVING count(*) > 1) AS doubled"""
            )
            assert shared_beds == 0
            without_family = await conn.fetchval(
                f"""SELECT count(*) FROM "{schema}".resident r WHERE NOT EXISTS
                    (SELECT 1 FROM "{schema}".family_member f WHERE f.resident_id = r.id)"""
            )
            assert without_family == 0
            phones_ok = await conn.fetchval(
                f"SELECT bool_and(phone ~ '^1[3-9][0-9]{{9}}$') FROM \"{schema}\".family_member"
            )
            assert phones_ok
            total += in_residence
        # The next admission after the bulk load gets a fresh id.
        next_id = await conn.fetchval(
            f"SELECT nextval(pg_get_serial_sequence('\"{schema}\".resident', 'id'))"
        )
        assert next_id > await conn.fetchval(f'SELECT max(id) FROM "{schema}".resident')

        second = await asyncio.to_thread(_seed, empty_database)
        assert second.returncode == 0, second.stderr
        assert await conn.fetchval("SELECT count(*) FROM shared.institution") == len(institutions)
    finally:
        await conn.close()

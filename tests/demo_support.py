"""The demo world seeded once per test run (`yiyang seed` in a subprocess, on a database of its own), and
the helpers of the tests that read it: tests/care/test_demo.py checks what was seeded, and
tests/compliance/test_no_plaintext.py scans it for plaintext.

The ORM is one per process and the session's `app` fixture holds it open on the test database, so seeding
runs in a subprocess and the seeded database is read with asyncpg, or decrypted through the domain in
another subprocess (tests/care/decrypted_dump.py).
"""

import asyncio
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

from api.services import scratch_database
from api.settings import REPO_ROOT
from tenants.migrate import migrate_all


def run_python(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env={**os.environ, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=300,
    )


async def seed(database_url: str) -> subprocess.CompletedProcess[str]:
    done = await asyncio.to_thread(run_python, database_url, "-m", "api.cli", "seed")
    assert done.returncode == 0, done.stderr
    return done


async def decrypted(database_url: str) -> dict[str, dict]:
    """Every institution's residents and family members as the domain decrypts them, by schema."""
    done = await asyncio.to_thread(run_python, database_url, "-m", "tests.care.decrypted_dump")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@dataclass(frozen=True)
class SeededDemo:
    url: str
    stdout: str  # what the first `yiyang seed` printed
    plain: dict[str, dict]  # decrypted right after seeding


@contextlib.asynccontextmanager
async def migrated_databases(server_url: str) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """Makes migrated databases without institutions; drops them on exit."""
    async with contextlib.AsyncExitStack() as stack:

        async def make() -> str:
            url = await stack.enter_async_context(scratch_database(server_url, "yiyang_demo"))
            await migrate_all(url)
            return url

        yield make


@contextlib.asynccontextmanager
async def seeded_demo_database(server_url: str) -> AsyncIterator[SeededDemo]:
    async with migrated_databases(server_url) as make:
        url = await make()
        done = await seed(url)
        yield SeededDemo(url, done.stdout, await decrypted(url))

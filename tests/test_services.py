"""Embedded backing services: they start, keep data across restarts, stop without leftovers, and are
not started at all when the environment names servers."""

import asyncio
from pathlib import Path

import asyncpg
import psutil
import pytest
from redis.asyncio import Redis

from api.services import BackingServices


def _processes_using(folder: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(process.info["cmdline"] or [])
        if str(folder) in cmdline:
            found.append(process)
    return found


async def _write_and_read(
    database_url: str, redis_url: str, value: str | None
) -> tuple[str | None, str | None]:
    conn = await asyncpg.connect(database_url)
    redis = Redis.from_url(redis_url)
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS kept (value text)")
        if value is not None:
            await conn.execute("INSERT INTO kept VALUES ($1)", value)
            await redis.set("kept", value)
        stored = await conn.fetchval("SELECT value FROM kept LIMIT 1")
        cached = await redis.get("kept")
        return stored, cached.decode() if cached else None
    finally:
        await conn.close()
        await redis.aclose()


def test_embedded_servers_keep_data_and_leave_nothing_behind(tmp_path: Path) -> None:
    services = BackingServices(tmp_path, environ={})
    first = services.start()
    assert first.database_url.startswith("postgres://postgres@127.0.0.1:")
    assert asyncio.run(_write_and_read(first.database_url, first.redis_url, "家")) == ("家", "家")
    services.stop()
    assert _processes_using(tmp_path) == []

    again = BackingServices(tmp_path, environ={})
    second = again.start()
    try:
        assert second == first  # the same ports, remembered in the data folder
        assert asyncio.run(_write_and_read(second.database_url, second.redis_url, None)) == ("家", "家")
    finally:
        again.stop()
    assert _processes_using(tmp_path) == []


def test_given_servers_are_used_as_they_are(tmp_path: Path) -> None:
    environ = {
        "DATABASE_URL": "postgres://someone@db.example:5432/x",
        "REDIS_URL": "redis://cache.example:6379/0",
    }
    services = BackingServices(tmp_path, environ=environ)
    endpoints = services.start()
    assert (endpoints.database_url, endpoints.redis_url) == (environ["DATABASE_URL"], environ["REDIS_URL"])
    assert services.postgres is None and services.redis is None
    services.stop()


@pytest.mark.parametrize("given", ["DATABASE_URL", "REDIS_URL"])
def test_only_the_missing_server_is_started(tmp_path: Path, given: str) -> None:
    environ = {given: "postgres://x@127.0.0.1:1/x" if given == "DATABASE_URL" else "redis://127.0.0.1:1/0"}
    services = BackingServices(tmp_path, environ=environ)
    try:
        endpoints = services.start()
        assert environ[given] in (endpoints.database_url, endpoints.redis_url)
        assert (services.postgres is None) == (given == "DATABASE_URL")
        assert (services.redis is None) == (given == "REDIS_URL")
    finally:
        services.stop()
    assert _processes_using(tmp_path) == []

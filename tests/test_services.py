"""Backing services with real processes: embedded servers start, keep data across restarts, stop without
leftovers (even when interrupted or killed), and are not started at all when the environment names servers."""

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import psutil
import pytest
from redis.asyncio import Redis

from api.services import (
    BackingServices,
    ServiceError,
    create_scratch_database,
    database_url_with_name,
    drop_database,
)
from api.settings import REPO_ROOT
from tenants.db import asyncpg_dsn

MACHINE_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/test"
MACHINE_REDIS_URL = "redis://127.0.0.1:6379/0"


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
    except OSError:
        return False
    return True


def _processes_using(folder: Path) -> list[psutil.Process]:
    """Processes whose command line or working directory is inside `folder` (Valkey rewrites its title)."""
    found = []
    for process in psutil.process_iter(["cmdline", "cwd", "status"]):
        if process.info["status"] == psutil.STATUS_ZOMBIE or process.pid == os.getpid():
            continue
        cmdline = " ".join(process.info["cmdline"] or [])
        cwd = process.info["cwd"] or ""
        if str(folder) in cmdline or cwd.startswith(str(folder)):
            found.append(process)
    return found


def _wait_for_no_processes(folder: Path, timeout: float = 10) -> list[str]:
    deadline = time.monotonic() + timeout
    while (left := _processes_using(folder)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [" ".join(p.cmdline()) for p in left if p.is_running()]


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


async def _ping(database_url: str, redis_url: str) -> tuple[int, bool]:
    conn = await asyncpg.connect(database_url)
    redis = Redis.from_url(redis_url)
    try:
        return await conn.fetchval("SELECT 1"), await redis.ping()
    finally:
        await conn.close()
        await redis.aclose()


def test_embedded_servers_keep_data_and_leave_nothing_behind(tmp_path: Path) -> None:
    services = BackingServices(tmp_path, environ={})
    first = services.start()
    assert services.start() is first  # idempotent
    assert first.database_url.startswith("postgres://postgres@127.0.0.1:")
    assert first.database_url.endswith("/yiyang")
    assert first.redis_url.startswith("redis://127.0.0.1:")
    ports = {int(url.rsplit(":", 1)[1].split("/")[0]) for url in (first.database_url, first.redis_url)}
    assert not ports & {5432, 6379}
    assert asyncio.run(_write_and_read(first.database_url, first.redis_url, "家")) == ("家", "家")
    services.stop()
    services.stop()  # idempotent
    assert _wait_for_no_processes(tmp_path) == []

    with BackingServices(tmp_path, environ={}) as second:
        assert second == first  # the same ports, remembered in the data folder
        assert asyncio.run(_write_and_read(second.database_url, second.redis_url, None)) == ("家", "家")
    assert _wait_for_no_processes(tmp_path) == []


def test_one_owner_per_data_folder_and_leftovers_of_a_killed_owner_are_stopped(tmp_path: Path) -> None:
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from api.services import BackingServices\n"
            "services = BackingServices(Path(sys.argv[1]), environ={})\n"
            "print(services.start().redis_url, flush=True)\n"
            "time.sleep(120)",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        redis_url = owner.stdout.readline().strip()
        assert redis_url.startswith("redis://")
        with pytest.raises(ServiceError, match="another process"):
            BackingServices(tmp_path, environ={}).start()
    finally:
        owner.kill()  # no chance to clean up: its servers stay behind
        owner.wait()
    assert len(_processes_using(tmp_path)) >= 2

    services = BackingServices(tmp_path, environ={})
    endpoints = services.start()
    try:
        assert asyncio.run(_write_and_read(endpoints.database_url, endpoints.redis_url, "x")) == ("x", "x")
    finally:
        services.stop()
    assert _wait_for_no_processes(tmp_path) == []


@pytest.mark.parametrize("delay", [0.05, 0.3, 0.6, 1.2])
def test_interrupted_start_leaves_nothing_behind(tmp_path: Path, delay: float) -> None:
    """Ctrl-C at some moment of a first start (initdb, pg_ctl, Valkey, or after): nothing stays running."""
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from api.services import BackingServices\n"
            "services = BackingServices(Path(sys.argv[1]), environ={})\n"
            "try:\n    services.start(); time.sleep(60)\nfinally:\n    services.stop()",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(delay)
    starter.send_signal(signal.SIGINT)
    assert starter.wait(timeout=30) != 0
    assert _wait_for_no_processes(tmp_path) == []


@pytest.mark.parametrize("given", ["DATABASE_URL", "REDIS_URL"])
def test_only_the_missing_server_is_started(tmp_path: Path, given: str) -> None:
    environ = {given: "postgres://x@127.0.0.1:1/x" if given == "DATABASE_URL" else "redis://127.0.0.1:1/0"}
    services = BackingServices(tmp_path, environ=environ)
    try:
        endpoints = services.start()
        assert environ[given] in (endpoints.database_url, endpoints.redis_url)
        assert (services.postgres is None) == (given == "DATABASE_URL")
        assert (services.redis is None) == (given == "REDIS_URL")
        assert len(_processes_using(tmp_path)) >= 1
    finally:
        services.stop()
    assert _wait_for_no_processes(tmp_path) == []


@pytest.mark.skipif(
    not (_answers(5432) and _answers(6379)), reason="no PostgreSQL on :5432 or Redis on :6379 here"
)
def test_the_machines_servers_are_used_as_they_are(tmp_path: Path) -> None:
    environ = {"DATABASE_URL": MACHINE_DATABASE_URL, "REDIS_URL": MACHINE_REDIS_URL}
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    services = BackingServices(tmp_path / "var", environ=environ)
    endpoints = services.start()
    try:
        assert (endpoints.database_url, endpoints.redis_url) == (MACHINE_DATABASE_URL, MACHINE_REDIS_URL)
        assert services.postgres is None and services.redis is None
        assert not (tmp_path / "var").exists()  # not even the data folder: no server could keep data there
        assert {child.pid for child in psutil.Process().children(recursive=True)} <= before
        assert asyncio.run(_ping(endpoints.database_url, endpoints.redis_url)) == (1, True)
    finally:
        services.stop()
    assert _answers(5432) and _answers(6379)  # stop() touched nothing it did not start


def test_database_url_with_name() -> None:
    assert database_url_with_name("postgres://u:p@h:5/a?x=1", "b") == "postgres://u:p@h:5/b?x=1"
    assert database_url_with_name("postgres://u@h:5", "b") == "postgres://u@h:5/b"


async def test_scratch_database_is_created_and_dropped(database_url: str) -> None:
    """On whichever server this pass runs against (embedded, or the machine's)."""
    name = f"yiyang_scratch_{secrets.token_hex(4)}"
    url = await create_scratch_database(database_url, name)
    assert url == database_url_with_name(asyncpg_dsn(database_url), name)
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT current_database()") == name
    finally:
        await conn.close()  # drop_database would disconnect it anyway (WITH FORCE)
    await drop_database(database_url, name)
    await drop_database(database_url, name)  # absent: no error
    admin = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        assert await admin.fetchval("SELECT count(*) FROM pg_database WHERE datname = $1", name) == 0
    finally:
        await admin.close()
    with pytest.raises(ValueError):
        await create_scratch_database(database_url, 'x"; DROP DATABASE postgres; --')

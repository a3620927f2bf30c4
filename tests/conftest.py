"""Shared fixtures: real PostgreSQL and Redis (embedded, or the servers named by DATABASE_URL/REDIS_URL),
a scratch database per test run, the app, and a populated multi-tenant world."""

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest

from api.app import create_app
from api.services import BackingServices, scratch_database
from api.settings import DEFAULT_ISSUER, REPO_ROOT, Settings
from compliance.identity.access_tokens import AccessTokenClaims, encode_access_token
from compliance.identity.keys import ActiveKey, signing_key
from compliance.principals import Principal, PrincipalKind, StaffRole
from tenants.db import APP_DATABASE_URL_VARIABLE

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from tests.demo_support import SeededDemo

TEST_CLIENT_ID = "yiyang-tests"
REDIS_NAMESPACE = f"test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
WORLD_INSTITUTIONS = 20
WORLD_REGIONS = (("test-east", "华东测试区"), ("test-west", "西部测试区"))
WORLD_CHAINS = ("测试连锁", "另一连锁")
RESIDENTS_PER_INSTITUTION = 6

# The pool of every test logs in as `yiyang_app` on the test run's scratch database (DATABASE_URL with the
# user replaced, tenants/db.py `app_database_url`): a deployment's application URL names another database.
os.environ.pop(APP_DATABASE_URL_VARIABLE, None)


@dataclass(frozen=True)
class Endpoints:
    database_url: str
    redis_url: str
    embedded: bool


@pytest.fixture(scope="session")
def endpoints(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Endpoints]:
    if os.environ.get("DATABASE_URL") and os.environ.get("REDIS_URL"):
        yield Endpoints(os.environ["DATABASE_URL"], os.environ["REDIS_URL"], embedded=False)
        return

    services = BackingServices(tmp_path_factory.mktemp("services"), environ={})
    started = services.start()
    try:
        yield Endpoints(started.database_url, started.redis_url, embedded=True)
    finally:
        services.stop()


@pytest.fixture(scope="session")
async def database_url(endpoints: Endpoints) -> AsyncIterator[str]:
    """A database of its own for this test run, dropped afterwards."""
    async with scratch_database(endpoints.database_url, "yiyang_test") as url:
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str, endpoints: Endpoints) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=endpoints.redis_url,
        environment="test",
        max_body_bytes=64 * 1024,
        # Counts of this run only: the machine's Redis outlives test runs (and may serve two at once).
        redis_namespace=REDIS_NAMESPACE,
    )


@pytest.fixture(scope="session")
async def app(settings: Settings) -> AsyncIterator[object]:
    from tenants.migrate import migrate_all

    await migrate_all(settings.database_url)
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        _signing_keys.append(await signing_key())
        yield application


@pytest.fixture(scope="session")
async def client(app: object) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)  # type: ignore[arg-type]
    async with httpx.AsyncClient(transport=transport, base_url="http://yiyang.test", timeout=60) as http:
        yield http


_signing_keys: list[ActiveKey] = []


def token_for(principal: Principal, *, lifetime_seconds: int = 600) -> str:
    """An access token such as the authorization server issues, signed with the real active key (the
    `app` fixture must have run)."""
    claims = AccessTokenClaims.for_principal(
        principal,
        issuer=DEFAULT_ISSUER,
        client_id=principal.client_id or TEST_CLIENT_ID,
        scope=principal.scopes,
        lifetime_seconds=lifetime_seconds,
    )
    return encode_access_token(claims, _signing_keys[-1])


def staff_token(institution_id: int, *roles: StaffRole) -> str:
    return token_for(
        Principal(
            subject=f"account:{900_000 + institution_id}",
            kind=PrincipalKind.STAFF,
            institution_id=institution_id,
            roles=frozenset(roles or {StaffRole.INSTITUTION_ADMIN}),
        )
    )


def staff_member_token(institution_id: int, role: StaffRole, account_id: int | None = None) -> str:
    """A staff member's token with one role: the account's, or a subject of its own (rate limits count
    per subject)."""
    return token_for(
        Principal(
            f"account:{account_id or 860_000 + uuid.uuid4().int % 10_000}",
            PrincipalKind.STAFF,
            institution_id=institution_id,
            roles=frozenset({role}),
        )
    )


def operator_token() -> str:
    return token_for(Principal(subject="account:999999", kind=PrincipalKind.OPERATOR))


async def gql(
    http: httpx.AsyncClient, query: str, variables: dict | None = None, *, token: str | None = None
) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = await http.post(
        "/graphql", json={"query": query, "variables": variables or {}}, headers=headers
    )
    return response.json()


@dataclass(frozen=True)
class World:
    """Institutions whose residents share primary keys: resident k of every institution has id k."""

    institution_ids: list[int]
    resident_names: dict[int, list[str]]  # institution id -> names in id order

    def token(self, institution_id: int, *roles: StaffRole) -> str:
        return staff_token(institution_id, *roles)


@pytest.fixture(scope="session")
async def world(app: object) -> World:
    from care.models import CareLevel, Gender
    from care.residents import Admission, Placement, admit_resident
    from tenants.registry import (
        NewInstitution,
        get_or_create_chain,
        get_or_create_region,
        provision_institution,
        tenant_ref,
    )
    from tenants.unit_of_work import run_in_tenant

    # Two chains and two regions, so that "another chain's director" and "another region's supervisor"
    # exist: even institutions are in 测试连锁 and test-east, odd ones in 另一连锁 and test-west.
    for code, name in WORLD_REGIONS:
        await get_or_create_region(code, name)
    for chain in WORLD_CHAINS:
        await get_or_create_chain(chain)
    ids: list[int] = []
    names: dict[int, list[str]] = {}
    for number in range(WORLD_INSTITUTIONS):
        institution = await provision_institution(
            NewInstitution(
                name=f"测试养老院{number:02d}",
                region_code=WORLD_REGIONS[number % 2][0],
                chain_name=WORLD_CHAINS[number % 2],
            )
        )
        ids.append(institution.id)
        admitted = [f"长者{number:02d}-{k}" for k in range(RESIDENTS_PER_INSTITUTION)]

        async def admit_all(admitted: list[str] = admitted) -> None:
            for k, name in enumerate(admitted):
                await admit_resident(
                    Admission(
                        name=name,
                        gender=Gender.FEMALE if k % 2 else Gender.MALE,
                        birth_date=date(1940 + k, 3, 1),
                        care_level=CareLevel.ASSISTED,
                        admission_date=date(2024, 1, 1 + k),
                        placement=Placement(building="A", room=f"{100 + k}", bed="1"),
                    )
                )

        await run_in_tenant(tenant_ref(institution), admit_all)
        names[institution.id] = admitted
    return World(institution_ids=ids, resident_names=names)


@pytest.fixture(scope="session")
async def seeded_demo(endpoints: Endpoints) -> AsyncIterator["SeededDemo"]:
    """The demo world `yiyang seed` loads, on a database of its own, seeded once per test run."""
    from tests.demo_support import seeded_demo_database

    async with seeded_demo_database(endpoints.database_url) as demo:
        yield demo


@pytest.fixture
async def migrated_database(endpoints: Endpoints) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """Makes migrated databases without institutions, each its own; drops them after the test."""
    from tests.demo_support import migrated_databases

    async with migrated_databases(endpoints.database_url) as make:
        yield make


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator["Redis"]:
    """A Redis client of one test, on the test run's server."""
    from redis.asyncio import Redis

    client = Redis.from_url(settings.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def clock() -> "ManualClock":
    return ManualClock()


class ManualClock:
    """A time source that moves only when a test moves it: TTLs and windows tested without sleeping."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class LiveServer:
    base_url: str
    staff_token: str
    pid: int  # `yiyang serve`; its children are the API processes


@pytest.fixture(scope="session")
def live_server(settings: Settings, world: World) -> Iterator[LiveServer]:
    """The real app as `yiyang run` serves it: `yiyang serve` with two API processes."""
    port = _free_port()
    env = {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "YIYANG_ENV": "test",
        "YIYANG_REDIS_NAMESPACE": REDIS_NAMESPACE,
        "YIYANG_LOG_LEVEL": "warning",
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "api.cli", "serve", "--port", str(port), "--workers", "2"],
        cwd=REPO_ROOT,
        env=env,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base_url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise RuntimeError("the API server did not become healthy within 30 s")
        yield LiveServer(base_url, staff_token(world.institution_ids[0]), process.pid)
    finally:
        process.terminate()
        process.wait(timeout=10)


__all__ = ["Path"]

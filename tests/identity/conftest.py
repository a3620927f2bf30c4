"""Fixtures of the identity tests: a Redis client and a clock that moves only when told."""

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from api.settings import Settings
from tests.conftest import ManualClock


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    client = Redis.from_url(settings.redis_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def public_client(world: object) -> object:
    """A public client of its own (authorization code with PKCE) for one test."""
    from compliance.identity.authorization import create_public_client
    from tests.identity.oauth_support import REDIRECT

    return await create_public_client("测试应用", redirect_uris=[REDIRECT], created_by="test")


@pytest.fixture
async def sign_in_throttle(app: object, clock: ManualClock) -> AsyncIterator[object]:
    """The sign-in page's login throttle for one test: its own keys, a clock the test moves."""
    import uuid

    from compliance.identity.login_throttle import LoginThrottle, ThrottlePolicy

    state = app.state  # type: ignore[attr-defined]
    throttle = LoginThrottle(
        state.redis, prefix=f"test:{uuid.uuid4().hex}", policy=ThrottlePolicy(account_failures=3), clock=clock
    )
    state.login_throttle = throttle
    try:
        yield throttle
    finally:
        state.login_throttle = None

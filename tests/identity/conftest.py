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

"""Login throttling against the real Redis: limits, sliding windows, recovery and concurrency."""

import asyncio
import uuid

import pytest
from redis.asyncio import Redis

from compliance.identity.login_throttle import Attempt, Lockout, LockScope, LoginThrottle, ThrottlePolicy
from tests.conftest import ManualClock

POLICY = ThrottlePolicy(account_failures=5, address_failures=20, window_seconds=900, lockout_seconds=900)


@pytest.fixture
def throttle(redis: Redis, clock: ManualClock) -> LoginThrottle:
    return LoginThrottle(redis, prefix=f"test:{uuid.uuid4().hex}", policy=POLICY, clock=clock)


async def fail(throttle: LoginThrottle, login: str, address: str = "10.0.0.1") -> Lockout | None:
    attempt = await throttle.reserve(login, address)
    assert isinstance(attempt, Attempt), attempt
    return await throttle.failed(attempt)


async def test_the_fifth_failure_locks_the_login_for_the_lockout(
    throttle: LoginThrottle, clock: ManualClock
) -> None:
    for _ in range(4):
        assert await fail(throttle, "a@example.com") is None
    assert await fail(throttle, "a@example.com") == Lockout(LockScope.ACCOUNT, 900)
    clock.now += 600
    assert await throttle.reserve("a@example.com", "10.0.0.2") == Lockout(LockScope.ACCOUNT, 300)
    assert isinstance(await throttle.reserve("b@example.com", "10.0.0.1"), Attempt)  # others go on
    clock.now += 300
    assert isinstance(await throttle.reserve("a@example.com", "10.0.0.1"), Attempt)


async def test_failures_older_than_the_window_no_longer_count(
    throttle: LoginThrottle, clock: ManualClock
) -> None:
    for _ in range(4):
        assert await fail(throttle, "a@example.com") is None
        clock.now += 100
    clock.now += 900 - 4 * 100 + 1  # the first failure is now 901 s old, the others younger
    assert await fail(throttle, "a@example.com") is None
    assert await fail(throttle, "a@example.com") is not None


async def test_success_forgets_the_failures_of_the_login(throttle: LoginThrottle) -> None:
    for _ in range(4):
        await fail(throttle, "a@example.com")
    attempt = await throttle.reserve("a@example.com", "10.0.0.1")
    assert isinstance(attempt, Attempt)
    await throttle.succeeded(attempt)
    for _ in range(4):
        assert await fail(throttle, "a@example.com") is None


async def test_an_address_is_refused_after_its_limit_whatever_the_logins(
    throttle: LoginThrottle, clock: ManualClock
) -> None:
    for number in range(20):
        assert await fail(throttle, f"user{number}@example.com", "10.9.9.9") is None
        clock.now += 1
    refused = await throttle.reserve("fresh@example.com", "10.9.9.9")
    assert refused == Lockout(LockScope.ADDRESS, 900 - 20)  # until the oldest failure leaves
    assert isinstance(await throttle.reserve("fresh@example.com", "10.9.9.8"), Attempt)
    clock.now += 900
    assert isinstance(await throttle.reserve("fresh@example.com", "10.9.9.9"), Attempt)


async def test_logins_are_throttled_under_a_hash_of_their_spelling(
    throttle: LoginThrottle, redis: Redis
) -> None:
    await fail(throttle, "Secret.Person@Example.com")
    keys = [key.decode() async for key in redis.scan_iter(match=f"{throttle.prefix}:*")]
    assert keys and not any("example" in key.lower() for key in keys)
    for _ in range(4):
        await fail(throttle, "secret.person@example.com ")  # the same login, spelt otherwise
    assert isinstance(await throttle.reserve("SECRET.PERSON@EXAMPLE.COM", "10.0.0.3"), Lockout)


async def test_concurrent_attempts_cannot_pass_the_limit(throttle: LoginThrottle) -> None:
    outcomes = await asyncio.gather(*(throttle.reserve("a@example.com", f"10.1.0.{n}") for n in range(30)))
    attempts = [o for o in outcomes if isinstance(o, Attempt)]
    assert len(attempts) == 5
    assert all(o == Lockout(LockScope.ACCOUNT, 900) for o in outcomes if not isinstance(o, Attempt))
    lockouts = await asyncio.gather(*(throttle.failed(a) for a in attempts))
    assert all(lockout is not None and lockout.scope is LockScope.ACCOUNT for lockout in lockouts)

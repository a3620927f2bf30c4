"""Fixtures of the identity tests: an empty key table, a public client, the sign-in page's throttle."""

from collections.abc import AsyncIterator

import pytest

from tests.conftest import ManualClock


@pytest.fixture
async def empty_key_table(app: object) -> AsyncIterator[None]:
    """The signing-key table emptied for one test, and put back as it was afterwards: every other test's
    tokens are signed by the key the test run started with (tests/conftest.py, `token_for`)."""
    from compliance.identity import keys as keys_module
    from compliance.identity.signing_key_model import SigningKey

    fields = ("kid", "algorithm", "public_jwk", "private_key_sealed", "created_at", "activated_at")
    saved = [
        SigningKey(**{name: getattr(row, name) for name in fields}, retired_at=row.retired_at)
        for row in await SigningKey.all()
    ]
    await SigningKey.all().delete()
    try:
        yield
    finally:
        await SigningKey.all().delete()
        await SigningKey.bulk_create(saved)
        keys_module._process_keys = None  # forget what this process cached of the test's keys


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
    usual, state.login_throttle = state.login_throttle, throttle
    try:
        yield throttle
    finally:
        state.login_throttle = usual

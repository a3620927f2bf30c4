"""Signing keys: sealed at rest, created once, rotated with an overlap, seen alike by every process."""

import asyncio
import base64
import hashlib
import json
import time

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet

from api.settings import ConfigurationError, Settings
from compliance.identity import keys as keys_module
from compliance.identity.access_tokens import (
    InvalidAccessToken,
    RefusalReason,
    issue_access_token,
    verify_access_token,
)
from compliance.identity.keys import (
    KEY_CACHE_TTL_SECONDS,
    PUBLISH_AHEAD_SECONDS,
    RETIRE_AFTER_SECONDS,
    RootKeyError,
    SigningKeys,
    open_private_key,
    root_key_from_environ,
    seal_private_key,
)
from compliance.identity.signing_key_model import SigningKey
from compliance.principals import Principal, PrincipalKind, StaffRole
from tests.conftest import ManualClock

ISSUER = "https://yiyang.test"

STAFF = Principal("staff-7", PrincipalKind.STAFF, institution_id=7, roles=frozenset({StaffRole.NURSE}))
ROOT_KEY = root_key_from_environ({})


@pytest.fixture
async def clock(empty_key_table: None) -> ManualClock:
    """A clock for the key caches of a test, over an empty key table."""
    return ManualClock(float(int(time.time())))


def rfc7638_thumbprint(jwk: dict[str, str]) -> str:
    """Computed here from the RFC's definition, not by the library the code uses."""
    canonical = json.dumps({name: jwk[name] for name in ("crv", "kty", "x", "y")}, separators=(",", ":"))
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def test_root_key_is_required_and_checked_in_production() -> None:
    with pytest.raises(RootKeyError, match="required"):
        root_key_from_environ({"YIYANG_ENV": "production"})
    with pytest.raises(RootKeyError, match="base64"):
        root_key_from_environ({"YIYANG_ROOT_KEY": "not base64!"})
    with pytest.raises(RootKeyError, match="32 bytes"):
        root_key_from_environ({"YIYANG_ROOT_KEY": base64.b64encode(b"short").decode()})
    with pytest.raises(RootKeyError, match="development key"):
        root_key_from_environ(
            {"YIYANG_ENV": "production", "YIYANG_ROOT_KEY": base64.b64encode(ROOT_KEY).decode()}
        )
    given = bytes(range(32))
    assert (
        root_key_from_environ(
            {"YIYANG_ENV": "production", "YIYANG_ROOT_KEY": base64.b64encode(given).decode()}
        )
        == given
    )
    assert len(ROOT_KEY) == 32  # development and test fall back to a fixed key


def test_sealed_private_key_opens_only_with_its_root_key_and_kid() -> None:
    sealed = seal_private_key(ROOT_KEY, "kid-a", b"-----BEGIN PRIVATE KEY-----")
    assert b"PRIVATE KEY" not in sealed
    assert open_private_key(ROOT_KEY, "kid-a", sealed) == b"-----BEGIN PRIVATE KEY-----"
    with pytest.raises(RootKeyError):
        open_private_key(bytes(32), "kid-a", sealed)
    with pytest.raises(RootKeyError):  # copied onto another row
        open_private_key(ROOT_KEY, "kid-b", sealed)


async def test_one_key_is_created_and_stored_sealed(clock: ManualClock) -> None:
    first, second = SigningKeys(ROOT_KEY, clock=clock), SigningKeys(ROOT_KEY, clock=clock)
    kids = await asyncio.gather(first.ensure_active_key(), second.ensure_active_key())
    assert kids[0] == kids[1]
    assert await SigningKey.all().count() == 1
    row = await SigningKey.get(kid=kids[0])
    assert "d" not in row.public_jwk
    assert b"PRIVATE KEY" not in bytes(row.private_key_sealed)
    [published] = await first.published_keys()
    assert published["kid"] == rfc7638_thumbprint(published) == kids[0]
    assert (published["alg"], published["crv"], published["use"]) == ("ES256", "P-256", "sig")
    assert (await first.signing_key()).kid == kids[0]


async def test_reading_keys_creates_the_first_one(clock: ManualClock) -> None:
    keys = SigningKeys(ROOT_KEY, clock=clock)
    assert len(await keys.published_keys()) == 1
    assert (await keys.signing_key()).kid == (await keys.published_keys())[0]["kid"]


async def test_rotation_overlaps_old_and_new_keys(clock: ManualClock) -> None:
    keys = SigningKeys(ROOT_KEY, clock=clock)
    old_kid = await keys.ensure_active_key()
    old_token = await issue_access_token(STAFF, issuer=ISSUER, client_id="spa", keys=keys, now=clock.now)

    new_kid = await keys.rotate()
    assert new_kid != old_kid
    assert [k["kid"] for k in await keys.published_keys()] == [new_kid, old_kid]
    # Announced, not yet signing: other processes and JWKS clients learn the new key first.
    assert (await keys.signing_key()).kid == old_kid

    clock.now += PUBLISH_AHEAD_SECONDS
    assert (await keys.signing_key()).kid == new_kid
    new_token = await issue_access_token(STAFF, issuer=ISSUER, client_id="spa", keys=keys, now=clock.now)
    assert json.loads(base64.urlsafe_b64decode(new_token.split(".")[0] + "==="))["kid"] == new_kid
    assert [k["kid"] for k in await keys.published_keys()] == [new_kid, old_kid]

    # A token of the old key, signed at the last moment it signed, is good until its end plus leeway.
    last_old = await issue_access_token(
        STAFF,
        issuer=ISSUER,
        client_id="spa",
        lifetime_seconds=600,
        keys=SigningKeys(ROOT_KEY, clock=ManualClock(clock.now - 0.5)),
        now=clock.now - 1,
    )
    clock.now += RETIRE_AFTER_SECONDS - 2
    assert (await verify_access_token(last_old, issuer=ISSUER, keys=keys, now=clock.now)).subject == "staff-7"

    clock.now += 2  # the old key's window has ended
    with pytest.raises(InvalidAccessToken) as refused:
        await verify_access_token(last_old, issuer=ISSUER, keys=keys, now=clock.now - 600)
    assert refused.value.reason is RefusalReason.UNKNOWN_KEY  # refused for the key, whatever `exp` says
    assert [k["kid"] for k in await keys.published_keys()] == [new_kid]
    with pytest.raises(InvalidAccessToken):
        await verify_access_token(old_token, issuer=ISSUER, keys=keys, now=clock.now)
    assert (
        await verify_access_token(new_token, issuer=ISSUER, keys=keys, now=clock.now - 400)
    ).subject == "staff-7"


async def test_cached_copy_drops_a_key_at_its_retirement_not_at_its_next_read(clock: ManualClock) -> None:
    keys = SigningKeys(ROOT_KEY, ttl_seconds=3600, clock=clock)  # a copy that is never re-read here
    old_kid = await keys.ensure_active_key()
    await keys.rotate()
    await keys.published_keys()
    reads = keys.table_reads
    clock.now += PUBLISH_AHEAD_SECONDS + RETIRE_AFTER_SECONDS - 1
    assert await keys.verification_key(old_kid) is not None
    clock.now += 1
    assert await keys.verification_key(old_kid) is None
    assert old_kid not in [k["kid"] for k in await keys.published_keys()]
    assert keys.table_reads == reads


async def test_two_processes_agree_within_the_cache_ttl(clock: ManualClock) -> None:
    rotating, other = SigningKeys(ROOT_KEY, clock=clock), SigningKeys(ROOT_KEY, clock=clock)
    old_kid = await rotating.ensure_active_key()
    assert (await other.signing_key()).kid == old_kid  # `other` has read the table now

    clock.now += 1
    new_kid = await rotating.rotate()
    assert [k["kid"] for k in await other.published_keys()] == [old_kid]  # its copy is still fresh
    clock.now += KEY_CACHE_TTL_SECONDS
    assert [k["kid"] for k in await other.published_keys()] == [new_kid, old_kid]
    assert await other.published_keys() == await rotating.published_keys()

    # Both switch to the new key at its activation, and each accepts what the other signs.
    clock.now += PUBLISH_AHEAD_SECONDS - KEY_CACHE_TTL_SECONDS
    assert (await other.signing_key()).kid == (await rotating.signing_key()).kid == new_kid
    token = await issue_access_token(STAFF, issuer=ISSUER, client_id="spa", keys=rotating, now=clock.now)
    assert (await verify_access_token(token, issuer=ISSUER, keys=other, now=clock.now)).subject == "staff-7"


async def test_jwks_endpoint_publishes_the_keys_that_verify_our_tokens(
    client: httpx.AsyncClient, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keys_module, "_process_keys", None)  # this process's cache, over the emptied table
    response = await client.get("/.well-known/jwks.json")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=60"
    [published] = response.json()["keys"]
    assert "d" not in published and published["kid"] == rfc7638_thumbprint(published)

    # A resource server that knows only the JWKS document verifies our token with it.
    token = await issue_access_token(STAFF, issuer=ISSUER, client_id="spa")
    decoded = jwt.decode(token, KeySet.import_key_set(response.json()), algorithms=["ES256"])
    assert decoded.header["kid"] == published["kid"] and decoded.claims["sub"] == "staff-7"

    await keys_module.rotate_signing_key()  # the rotating process sees its own rotation at once
    listed = (await client.get("/.well-known/jwks.json")).json()["keys"]
    assert [k["kid"] for k in listed][1:] == [published["kid"]] and len(listed) == 2


async def test_discovery_document_names_the_endpoints(client: httpx.AsyncClient) -> None:
    response = await client.get("/.well-known/openid-configuration")
    assert response.status_code == 200 and "max-age=" in response.headers["cache-control"]
    issuer = "http://127.0.0.1:8000"  # Settings' default: the test settings do not name one
    assert response.json() == {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "authorization_endpoint": f"{issuer}/oauth/authorize",
        "token_endpoint": f"{issuer}/oauth/token",
        "revocation_endpoint": f"{issuer}/oauth/revoke",
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "ui_locales_supported": ["zh-CN", "en"],
    }


def test_issuer_setting_is_checked() -> None:
    base = {"DATABASE_URL": "postgres://x/y", "REDIS_URL": "redis://x"}
    assert Settings.from_environ(base).issuer == "http://127.0.0.1:8000"
    assert (
        Settings.from_environ({**base, "YIYANG_ISSUER": "https://id.yiyang.cn"}).issuer
        == "https://id.yiyang.cn"
    )
    for bad in ("https://id.yiyang.cn/", "id.yiyang.cn", "https://id.yiyang.cn?x=1", "ftp://id.yiyang.cn"):
        with pytest.raises(ConfigurationError):
            Settings.from_environ({**base, "YIYANG_ISSUER": bad})
    production = {**base, "YIYANG_ENV": "production", "YIYANG_TOKEN_SECRET": "s" * 32}
    with pytest.raises(ConfigurationError):  # RFC 8414: https
        Settings.from_environ({**production, "YIYANG_ISSUER": "http://id.yiyang.cn"})


async def test_a_process_whose_clock_is_behind_uses_the_first_key_and_makes_no_second(
    clock: ManualClock,
) -> None:
    ahead = SigningKeys(ROOT_KEY, clock=clock)
    behind = SigningKeys(ROOT_KEY, clock=ManualClock(clock.now - 2))
    kid = await ahead.ensure_active_key()
    assert [k["kid"] for k in await behind.published_keys()] == [kid]
    assert (await behind.signing_key()).kid == kid
    assert await behind.ensure_active_key() == kid
    assert await SigningKey.all().count() == 1

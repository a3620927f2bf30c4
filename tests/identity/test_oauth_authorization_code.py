"""Authorization code with PKCE, refresh-token rotation and reuse detection, revocation and the sign-in
audit, against the real PostgreSQL and Redis (in-process app) and the live server (authlib's client)."""

import asyncio
import time

import httpx
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client

from api import oauth as oauth_module
from api.settings import Settings
from compliance.identity.access_tokens import verify_access_token
from compliance.identity.account_models import AccountStatus
from compliance.identity.accounts import remove_staff_membership
from compliance.identity.authorization import (
    FAMILY_LIFETIME_SECONDS,
    FIRST_PARTY_CALLBACK_PATH,
    FIRST_PARTY_CLIENT_ID,
    SWEEP_GRACE_SECONDS,
    CodeRequest,
    create_public_client,
    new_secret,
    redeem_code,
    revoke_family,
    secret_hash,
    store_code,
    sweep_expired,
)
from compliance.identity.authorization_models import (
    AuthEvent,
    AuthEventKind,
    AuthorizationCode,
    FamilyRevocation,
    RefreshToken,
    TokenFamily,
)
from compliance.identity.client_models import ClientKind, OAuthClient
from compliance.identity.clients import create_integrator_client
from compliance.principals import PrincipalKind, StaffRole
from tenants.errors import InvalidInput
from tests.conftest import LiveServer, World
from tests.identity.oauth_support import (
    AUTHORIZE,
    PASSWORD,
    REDIRECT,
    REVOKE,
    TOKEN,
    Authorization,
    alert_of,
    code_for,
    exchange,
    pkce,
    query_of,
    refresh,
    staff_account,
    transaction_of,
)

pytestmark = pytest.mark.usefixtures("sign_in_throttle")

DAY = 24 * 3600


def assert_oauth_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["error"] == error
    assert "Traceback" not in response.text


async def kinds_of(account_id: int) -> list[str]:
    rows = await AuthEvent.filter(account_id=account_id).order_by("id").values_list("kind", flat=True)
    return [str(kind) for kind in rows]


@pytest.fixture
def moved_clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The grants' clock, moved by the test: offset[0] seconds ahead of real time."""
    offset = [0.0]
    monkeypatch.setattr(oauth_module, "clock", lambda: time.time() + offset[0])
    return offset


async def tokens_for(
    http: httpx.AsyncClient, client: OAuthClient, login: str, **kwargs: object
) -> dict[str, object]:
    verifier, challenge = pkce()
    auth = Authorization(client.client_id)
    code = await code_for(http, auth.params(challenge), login, **kwargs)  # type: ignore[arg-type]
    response = await exchange(http, client.client_id, code, verifier)
    assert response.status_code == 200, response.text
    return response.json()


# --- the first-party client and the discovery ----------------------------------------------------


async def test_the_first_party_client_exists_after_start(
    settings: Settings, client: httpx.AsyncClient
) -> None:
    row = await OAuthClient.get(client_id=FIRST_PARTY_CLIENT_ID)
    assert row.kind is ClientKind.PUBLIC and row.secret_hash is None
    assert f"{settings.issuer}{FIRST_PARTY_CALLBACK_PATH}" in row.redirect_uris
    # Ensured again (every process start): still one row, the URI listed once.
    from compliance.identity.authorization import ensure_first_party_client

    await ensure_first_party_client(settings.issuer)
    again = await OAuthClient.get(client_id=FIRST_PARTY_CLIENT_ID)
    assert again.redirect_uris == row.redirect_uris


async def test_public_clients_need_valid_redirect_uris(world: World) -> None:
    for bad in ("http://app.example/cb", "https://app.example/cb#x", "/relative", "https://u@app.example/cb"):
        with pytest.raises(InvalidInput):
            await create_public_client("x", redirect_uris=[bad], created_by="test")
    with pytest.raises(InvalidInput):
        await create_public_client("x", redirect_uris=[], created_by="test")
    native = await create_public_client("本机", redirect_uris=["http://127.0.0.1:7777/cb"], created_by="test")
    assert native.redirect_uris == ["http://127.0.0.1:7777/cb"]


# --- PKCE and codes ------------------------------------------------------------------------------


async def test_code_with_pkce_issues_tokens_for_the_account(
    client: httpx.AsyncClient, public_client: OAuthClient, world: World, settings: Settings
) -> None:
    institution = world.institution_ids[2]
    account = await staff_account(institution, role=StaffRole.HEAD_NURSE)
    verifier, challenge = pkce()
    auth = Authorization(public_client.client_id)
    code = await code_for(client, auth.params(challenge), account.login)
    row = await AuthorizationCode.get(code_hash=secret_hash(code))
    assert code.encode() not in bytes(row.code_hash)  # stored hashed
    assert (row.expires_at - row.created_at).total_seconds() == 60
    assert row.code_challenge == challenge and row.redirect_uri == REDIRECT

    response = await exchange(client, public_client.client_id, code, verifier)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    assert body["refresh_token"] and body["refresh_token"] != body["access_token"]
    claims = await verify_access_token(body["access_token"], issuer=settings.issuer)
    assert claims.subject == f"account:{account.id}" and claims.kind is PrincipalKind.STAFF
    assert claims.institution_id == institution and claims.roles == frozenset({StaffRole.HEAD_NURSE})
    assert claims.client_id == public_client.client_id
    assert claims.expires_at - claims.issued_at == 300
    stored = await RefreshToken.get(token_hash=secret_hash(body["refresh_token"]))
    assert stored.spent_at is None

    assert await kinds_of(account.id) == ["login_succeeded", "token_issued"]
    issued = await AuthEvent.get(account_id=account.id, kind=AuthEventKind.TOKEN_ISSUED)
    assert issued.jti == claims.token_id and issued.grant_type == "authorization_code"
    assert issued.client_id == public_client.client_id and issued.institution_id == institution
    assert issued.family_id == stored.family_id and issued.ip


async def test_authorization_requests_without_s256_pkce_are_refused(
    client: httpx.AsyncClient, public_client: OAuthClient
) -> None:
    _, challenge = pkce()
    auth = Authorization(public_client.client_id)
    for params in (
        auth.params(None, None),  # no challenge at all
        auth.params(None),  # a method without a challenge
        auth.params(challenge, None),  # no method: RFC 7636 would mean plain
        auth.params(challenge, "plain"),
        auth.params(challenge[:20]),  # too short to be a challenge
    ):
        response = await client.get(AUTHORIZE, params=params)
        # The client and its redirect URI are known: the error goes back to it (RFC 6749 §4.1.2.1).
        assert response.status_code == 302, response.text
        query = query_of(response.headers["location"])
        assert response.headers["location"].startswith(REDIRECT)
        assert query["error"] == "invalid_request" and query["state"] == auth.state
        assert "code" not in query


async def test_unknown_client_or_unregistered_redirect_uri_is_never_redirected_to(
    client: httpx.AsyncClient, public_client: OAuthClient, world: World
) -> None:
    _, challenge = pkce()
    integrator = await create_integrator_client(
        "不能授权", scopes=["residents:read"], created_by="test", institution_id=world.institution_ids[0]
    )
    for params in (
        Authorization("no-such-client-0000000").params(challenge),
        Authorization(public_client.client_id, redirect_uri="https://evil.example/cb").params(challenge),
        Authorization(public_client.client_id, redirect_uri=REDIRECT + "/").params(challenge),  # exact match
        Authorization(public_client.client_id, redirect_uri="https://app.yiyang.test/callbäck").params(
            challenge
        ),
        Authorization(integrator.client_id, redirect_uri=REDIRECT).params(challenge),
    ):
        response = await client.get(AUTHORIZE, params=params)
        assert response.status_code == 400, response.text
        assert "location" not in response.headers
        assert response.headers["content-type"].startswith("text/html")
        assert "此登录链接无效" in alert_of(response.text)


async def test_a_missing_or_wrong_verifier_is_refused(
    client: httpx.AsyncClient, public_client: OAuthClient, world: World
) -> None:
    account = await staff_account(world.institution_ids[2])
    verifier, challenge = pkce()
    code = await code_for(client, Authorization(public_client.client_id).params(challenge), account.login)
    assert_oauth_error(await exchange(client, public_client.client_id, code, None), 400, "invalid_request")
    other_verifier, _ = pkce()
    assert_oauth_error(
        await exchange(client, public_client.client_id, code, other_verifier), 400, "invalid_grant"
    )
    assert_oauth_error(await exchange(client, public_client.client_id, code, "short"), 400, "invalid_request")
    # Failed attempts do not spend the code: the holder of the verifier still gets tokens.
    assert (await exchange(client, public_client.client_id, code, verifier)).status_code == 200


async def test_a_code_is_bound_to_its_client_and_redirect_uri(
    client: httpx.AsyncClient, public_client: OAuthClient, world: World
) -> None:
    account = await staff_account(world.institution_ids[2])
    other = await create_public_client(
        "另一个应用", redirect_uris=[REDIRECT, REDIRECT + "2"], created_by="test"
    )
    verifier, challenge = pkce()
    code = await code_for(client, Authorization(public_client.client_id).params(challenge), account.login)
    assert_oauth_error(await exchange(client, other.client_id, code, verifier), 400, "invalid_grant")
    wrong_uri = await exchange(client, public_client.client_id, code, verifier, redirect_uri=REDIRECT + "2")
    assert_oauth_error(wrong_uri, 400, "invalid_grant")
    unknown = await exchange(client, "no-such-client-0000000", code, verifier)
    assert_oauth_error(unknown, 400, "invalid_client")
    assert (await exchange(client, public_client.client_id, code, verifier)).status_code == 200


async def test_a_code_expires_after_60_seconds(
    client: httpx.AsyncClient, public_client: OAuthClient, world: World, moved_clock: list[float]
) -> None:
    account = await staff_account(world.institution_ids[2])
    verifier, challenge = pkce()
    code = await code_for(client, Authorization(public_client.client_id).params(challenge), account.login)
    moved_clock[0] = 61
    assert_oauth_error(await exchange(client, public_client.client_id, code, verifier), 400, "invalid_grant")


async def test_a_code_used_twice_is_refused_and_revokes_what_it_issued(
    client: httpx.AsyncClient, public_client: OAuthClient, world: World
) -> None:
    account = await staff_account(world.institution_ids[2])
    verifier, challenge = pkce()
    code = await code_for(client, Authorization(public_client.client_id).params(challenge), account.login)
    first = await exchange(client, public_client.client_id, code, verifier)
    assert first.status_code == 200
    second = await exchange(client, public_client.client_id, code, verifier)
    assert_oauth_error(second, 400, "invalid_grant")
    # The refresh token of the first use is dead now.
    assert_oauth_error(
        await refresh(client, public_client.client_id, first.json()["refresh_token"]), 400, "invalid_grant"
    )
    family = await TokenFamily.get(
        authorization_code_id=(await AuthorizationCode.get(code_hash=secret_hash(code))).id
    )
    assert family.revoked_at is not None and family.revoked_reason == "code_reuse"
    assert "code_reuse_detected" in await kinds_of(account.id)


async def test_concurrent_uses_of_one_code_issue_tokens_once(
    client: httpx.AsyncClient, public_client: OAuthClient, world: World
) -> None:
    account = await staff_account(world.institution_ids[2])
    verifier, challenge = pkce()
    code = await code_for(client, Authorization(public_client.client_id).params(challenge), account.login)
    responses = await asyncio.gather(
        *(exchange(client, public_client.client_id, code, verifier) for _ in range(4))
    )
    assert sorted(r.status_code for r in responses) == [200, 400, 400, 400]


# --- refresh tokens ------------------------------------------------------------------------------


async def test_refresh_rotates_the_token(
    client: httpx.AsyncClient, public_client: OAuthClient, world: World, settings: Settings
) -> None:
    institution = world.institution_ids[4]
    account = await staff_account(institution)
    first = await tokens_for(client, public_client, account.login)
    rotated = await refresh(client, public_client.client_id, str(first["refresh_token"]))
    assert rotated.status_code == 200, rotated.text
    body = rotated.json()
    assert body["refresh_token"] != first["refresh_token"]
    claims = await verify_access_token(body["access_token"], issuer=settings.issuer)
    assert claims.subject == f"account:{account.id}" and claims.institution_id == institution
    old = await RefreshToken.get(token_hash=secret_hash(str(first["refresh_token"])))
    new = await RefreshToken.get(token_hash=secret_hash(body["refresh_token"]))
    assert old.spent_at is not None and new.spent_at is None and old.family_id == new.family_id
    again = await refresh(client, public_client.client_id, body["refresh_token"])
    assert again.status_code == 200
    issued = await AuthEvent.filter(account_id=account.id, kind=AuthEventKind.TOKEN_ISSUED).values_list(
        "grant_type", flat=True
    )
    assert issued == ["authorization_code", "refresh_token", "refresh_token"]


async def test_a_reused_refresh_token_revokes_the_whole_family(
    client: httpx.AsyncClient, public_client: OAuthClient, world: World
) -> None:
    account = await staff_account(world.institution_ids[4])
    first = await tokens_for(client, public_client, account.login)
    second = (await refresh(client, public_client.client_id, str(first["refresh_token"]))).json()
    third = (await refresh(client, public_client.client_id, second["refresh_token"])).json()
    # A thief replays the first token: refused, and the family dies with it.
    assert_oauth_error(
        await refresh(client, public_client.client_id, str(first["refresh_token"])), 400, "invalid_grant"
    )
    assert_oauth_error(
        await refresh(client, public_client.client_id, third["refresh_token"]), 400, "invalid_grant"
    )
    family = await TokenFamily.get(
        id=(await RefreshToken.get(token_hash=secret_hash(third["refresh_token"]))).family_id
    )
    assert family.revoked_reason == "reuse"
    kinds = await kinds_of(account.id)
    assert "refresh_reuse_detected" in kinds and "family_revoked" in kinds


async def test_concurrent_uses_of_one_refresh_token_succeed_once(
    client: httpx.AsyncClient, public_client: OAuthClient, world: World
) -> None:
    account = await staff_account(world.institution_ids[4])
    first = await tokens_for(client, public_client, account.login)
    responses = await asyncio.gather(
        *(refresh(client, public_client.client_id, str(first["refresh_token"])) for _ in range(2))
    )
    assert sorted(r.status_code for r in responses) == [200, 400]


async def test_a_refresh_token_belongs_to_its_client(
    client: httpx.AsyncClient, public_client: OAuthClient, world: World
) -> None:
    account = await staff_account(world.institution_ids[4])
    first = await tokens_for(client, public_client, account.login)
    other = await create_public_client("另一个应用", redirect_uris=[REDIRECT], created_by="test")
    assert_oauth_error(
        await refresh(client, other.client_id, str(first["refresh_token"])), 400, "invalid_grant"
    )
    assert (await refresh(client, public_client.client_id, str(first["refresh_token"]))).status_code == 200


async def test_a_disabled_account_or_a_removed_membership_cannot_refresh(
    client: httpx.AsyncClient, public_client: OAuthClient, world: World
) -> None:
    disabled = await staff_account(world.institution_ids[4])
    tokens = await tokens_for(client, public_client, disabled.login)
    disabled.status = AccountStatus.DISABLED
    await disabled.save(update_fields=["status"])
    assert_oauth_error(
        await refresh(client, public_client.client_id, str(tokens["refresh_token"])), 400, "invalid_grant"
    )
    family = await TokenFamily.get(account_id=disabled.id)
    assert family.revoked_reason == "account"

    moved = await staff_account(world.institution_ids[4])
    tokens = await tokens_for(client, public_client, moved.login)
    await remove_staff_membership(moved, world.institution_ids[4], StaffRole.NURSE)
    assert_oauth_error(
        await refresh(client, public_client.client_id, str(tokens["refresh_token"])), 400, "invalid_grant"
    )


async def test_refresh_tokens_expire_when_idle_and_families_at_30_days(
    client: httpx.AsyncClient, public_client: OAuthClient, world: World, moved_clock: list[float]
) -> None:
    account = await staff_account(world.institution_ids[4])
    idle = await tokens_for(client, public_client, account.login)
    moved_clock[0] = 7 * DAY + 1
    assert_oauth_error(
        await refresh(client, public_client.client_id, str(idle["refresh_token"])), 400, "invalid_grant"
    )

    moved_clock[0] = 0
    token = str((await tokens_for(client, public_client, account.login))["refresh_token"])
    for days in (6, 12, 18, 24):  # used every 6 days: never idle for 7
        moved_clock[0] = days * DAY
        response = await refresh(client, public_client.client_id, token)
        assert response.status_code == 200, (days, response.text)
        token = response.json()["refresh_token"]
    moved_clock[0] = 30 * DAY + 1  # the family's absolute end
    assert_oauth_error(await refresh(client, public_client.client_id, token), 400, "invalid_grant")


async def test_unknown_and_malformed_refresh_requests(
    client: httpx.AsyncClient, public_client: OAuthClient
) -> None:
    assert_oauth_error(await refresh(client, public_client.client_id, "no-such-token"), 400, "invalid_grant")
    missing = await client.post(
        TOKEN, data={"grant_type": "refresh_token", "client_id": public_client.client_id}
    )
    assert_oauth_error(missing, 400, "invalid_request")
    no_client = await client.post(TOKEN, data={"grant_type": "refresh_token", "refresh_token": "x"})
    assert_oauth_error(no_client, 401, "invalid_client")


# --- revocation ----------------------------------------------------------------------------------


async def test_revoking_a_refresh_token_revokes_its_family(
    client: httpx.AsyncClient, public_client: OAuthClient, world: World
) -> None:
    account = await staff_account(world.institution_ids[4])
    first = await tokens_for(client, public_client, account.login)
    second = (await refresh(client, public_client.client_id, str(first["refresh_token"]))).json()
    response = await client.post(
        REVOKE,
        data={
            "token": second["refresh_token"],
            "token_type_hint": "refresh_token",
            "client_id": public_client.client_id,
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert_oauth_error(
        await refresh(client, public_client.client_id, second["refresh_token"]), 400, "invalid_grant"
    )
    kinds = await kinds_of(account.id)
    assert "token_revoked" in kinds and "family_revoked" in kinds
    family = await TokenFamily.get(account_id=account.id)
    assert family.revoked_reason == "revocation"


async def test_revocation_answers_200_for_unknown_and_access_tokens(
    client: httpx.AsyncClient, public_client: OAuthClient, world: World
) -> None:
    account = await staff_account(world.institution_ids[4])
    tokens = await tokens_for(client, public_client, account.login)
    for token in ("never-issued", str(tokens["access_token"])):
        response = await client.post(REVOKE, data={"token": token, "client_id": public_client.client_id})
        assert response.status_code == 200, response.text
    # The refresh token still works: revoking an access token revokes nothing (it dies within 5 minutes).
    assert (await refresh(client, public_client.client_id, str(tokens["refresh_token"]))).status_code == 200


async def test_revocation_needs_the_client(
    client: httpx.AsyncClient, public_client: OAuthClient, world: World
) -> None:
    account = await staff_account(world.institution_ids[4])
    tokens = await tokens_for(client, public_client, account.login)
    anonymous = await client.post(REVOKE, data={"token": str(tokens["refresh_token"])})
    assert_oauth_error(anonymous, 401, "invalid_client")
    other = await create_public_client("另一个应用", redirect_uris=[REDIRECT], created_by="test")
    foreign = await client.post(
        REVOKE, data={"token": str(tokens["refresh_token"]), "client_id": other.client_id}
    )
    assert_oauth_error(foreign, 400, "invalid_grant")
    missing = await client.post(REVOKE, data={"client_id": public_client.client_id})
    assert_oauth_error(missing, 400, "invalid_request")
    assert (await refresh(client, public_client.client_id, str(tokens["refresh_token"]))).status_code == 200
    get = await client.get(REVOKE)
    assert_oauth_error(get, 405, "invalid_request")


# --- the audit -----------------------------------------------------------------------------------


async def test_client_credentials_issuance_is_audited(client: httpx.AsyncClient, world: World) -> None:
    created = await create_integrator_client(
        "审计对接", scopes=["residents:read"], created_by="test", institution_id=world.institution_ids[6]
    )
    response = await client.post(
        TOKEN,
        data={"grant_type": "client_credentials"},
        auth=(created.client_id, created.client_secret),
    )
    assert response.status_code == 200, response.text
    event = await AuthEvent.get(client_id=created.client_id, kind=AuthEventKind.TOKEN_ISSUED)
    assert event.grant_type == "client_credentials" and event.institution_id == world.institution_ids[6]
    assert event.account_id is None and event.jti
    refused = await client.post(
        TOKEN, data={"grant_type": "client_credentials"}, auth=(created.client_id, "wrong-secret")
    )
    assert refused.status_code == 401
    assert await AuthEvent.filter(client_id=created.client_id, kind=AuthEventKind.TOKEN_REFUSED).exists()


async def test_the_audit_is_append_only_and_holds_no_secrets(
    client: httpx.AsyncClient, public_client: OAuthClient, world: World
) -> None:
    from tortoise import connections

    account = await staff_account(world.institution_ids[4])
    tokens = await tokens_for(client, public_client, account.login)
    rows = await connections.get("default").execute_query_dict(
        "SELECT * FROM shared.auth_event WHERE account_id = $1", [account.id]
    )
    text = repr(rows)
    for secret in (PASSWORD, account.login, str(tokens["access_token"]), str(tokens["refresh_token"])):
        assert secret not in text
    # The application's role lacks the privilege; the trigger refuses the same to the owner.
    with pytest.raises(Exception, match=r"append-only|permission denied"):
        await AuthEvent.filter(account_id=account.id).update(reason="x")
    with pytest.raises(Exception, match=r"append-only|permission denied"):
        await AuthEvent.filter(account_id=account.id).delete()


# --- end to end, with authlib's client against the live server -------------------------------------


async def test_authlib_client_signs_in_against_the_live_server(live_server: LiveServer, world: World) -> None:
    institution = world.institution_ids[0]
    account = await staff_account(institution, role=StaffRole.INSTITUTION_ADMIN)
    base = live_server.base_url
    redirect_uri = (
        f"http://127.0.0.1:8000{FIRST_PARTY_CALLBACK_PATH}"  # the live server's issuer is the default
    )
    async with AsyncOAuth2Client(
        client_id=FIRST_PARTY_CLIENT_ID,
        redirect_uri=redirect_uri,
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
        timeout=30,
    ) as oauth:
        verifier, _ = pkce()
        url, state = oauth.create_authorization_url(
            f"{base}{AUTHORIZE}", code_verifier=verifier, ui_locales="en"
        )
        page = await oauth.request("GET", url, withhold_token=True)  # a browser: no token yet
        assert page.status_code == 200 and '<html lang="en">' in page.text
        posted = await oauth.request(
            "POST",
            f"{base}{AUTHORIZE}",
            data={"transaction": transaction_of(page.text), "login": account.login, "password": PASSWORD},
            follow_redirects=False,
            withhold_token=True,
        )
        assert posted.status_code == 302, posted.text
        location = posted.headers["location"]
        assert location.startswith(redirect_uri) and query_of(location)["state"] == state

        token = await oauth.fetch_token(
            f"{base}{TOKEN}", authorization_response=location, code_verifier=verifier
        )
        assert token["token_type"] == "Bearer" and token["expires_in"] == 300 and token["refresh_token"]
        refreshed = await oauth.refresh_token(f"{base}{TOKEN}", refresh_token=token["refresh_token"])
        assert refreshed["refresh_token"] != token["refresh_token"]

        # GraphQL with the ES256 access token of the sign-in.
        graphql = await oauth.post(
            f"{base}/graphql",
            json={"query": "{ institutions(first: 5) { edges { node { id name } } } }"},
            headers={"Authorization": f"Bearer {refreshed['access_token']}"},
        )
        revoked = await oauth.revoke_token(
            f"{base}{REVOKE}", token=refreshed["refresh_token"], token_type_hint="refresh_token"
        )
        assert revoked.status_code == 200
        after = await oauth.request(
            "POST",
            f"{base}{TOKEN}",
            withhold_token=True,
            data={
                "grant_type": "refresh_token",
                "refresh_token": refreshed["refresh_token"],
                "client_id": FIRST_PARTY_CLIENT_ID,
            },
        )
        assert after.status_code == 400 and after.json()["error"] == "invalid_grant"

    assert graphql.status_code == 200, graphql.text
    names = [edge["node"]["name"] for edge in graphql.json()["data"]["institutions"]["edges"]]
    assert names, graphql.text
    assert await kinds_of(account.id) == [
        "login_succeeded",
        "token_issued",
        "token_issued",
        "token_revoked",
        "family_revoked",
        "token_refused",  # the revoked refresh token, tried once more
    ]


async def test_the_sweep_deletes_what_can_no_longer_be_used_and_keeps_the_rest(
    public_client: OAuthClient, world: World
) -> None:
    account = await staff_account(world.institution_ids[0])
    now = time.time()
    month_ago = now - FAMILY_LIFETIME_SECONDS - SWEEP_GRACE_SECONDS - 60

    def request() -> CodeRequest:
        return CodeRequest(
            client_id=public_client.client_id,
            account_id=account.id,
            institution_id=world.institution_ids[0],
            redirect_uri=REDIRECT,
            scope="",
            code_challenge=pkce()[1],
            code_challenge_method="S256",
        )

    old_code = await store_code(new_secret(), request(), now=month_ago)
    ended = await redeem_code(old_code, new_secret(), now=month_ago)  # a family whose 30 days are over
    fresh_code = await store_code(new_secret(), request(), now=now)
    live = await redeem_code(fresh_code, new_secret(), now=now)
    revoked_code = await store_code(new_secret(), request(), now=now - 3 * SWEEP_GRACE_SECONDS)
    revoked = await redeem_code(revoked_code, new_secret(), now=now - 3 * SWEEP_GRACE_SECONDS)
    await revoke_family(
        revoked.family_id or 0, FamilyRevocation.REVOCATION, now=now - 2 * SWEEP_GRACE_SECONDS
    )

    swept = await sweep_expired(now=now)

    assert swept.codes >= 2 and swept.families >= 2
    assert not await TokenFamily.filter(id__in=[ended.family_id, revoked.family_id]).exists()
    assert not await AuthorizationCode.filter(id__in=[old_code.id, revoked_code.id]).exists()
    assert not await RefreshToken.filter(family_id__in=[ended.family_id, revoked.family_id]).exists()
    assert await TokenFamily.filter(id=live.family_id).exists()  # still usable: kept
    assert await AuthorizationCode.filter(id=fresh_code.id).exists()
    assert await RefreshToken.filter(family_id=live.family_id).count() == 1

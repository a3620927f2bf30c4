"""Integrator clients and the token endpoint (client-credentials grant), against the real database."""

import asyncio
import base64
import json
import time

import httpx
import pytest
from authlib.integrations.httpx_client import AsyncOAuth2Client
from joserfc import jwt
from joserfc.jwk import KeySet

from api import oauth as oauth_module
from api.settings import Settings
from compliance.identity.access_tokens import verify_access_token
from compliance.identity.client_models import OAuthClient
from compliance.identity.clients import (
    CreatedClient,
    client_secret_matches,
    create_integrator_client,
    revoke_client,
)
from compliance.principals import PrincipalKind, StaffRole
from tenants.errors import InvalidInput, NotFound
from tenants.models import Chain, Institution, InstitutionStatus
from tests.conftest import LiveServer, World, gql, staff_token

TOKEN = "/oauth/token"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def header_of(token: str) -> dict[str, str]:
    encoded = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)))


def basic(client_id: str, secret: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {encoded}", **FORM}


@pytest.fixture
async def integrator(world: World) -> CreatedClient:
    return await create_integrator_client(
        "护理床垫厂商",
        scopes=["residents:read", "vitals:write"],
        created_by="account:1",
        institution_id=world.institution_ids[3],
    )


async def token_request(
    http: httpx.AsyncClient, created: CreatedClient, secret: str | None = None, **form: str
) -> httpx.Response:
    return await http.post(
        TOKEN,
        content=str(httpx.QueryParams({"grant_type": "client_credentials", **form})),
        headers=basic(created.client_id, secret if secret is not None else created.client_secret),
    )


def assert_oauth_error(response: httpx.Response, status: int, error: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["cache-control"] == "no-store"
    assert response.json()["error"] == error
    assert "Traceback" not in response.text


async def test_created_client_keeps_only_a_hash_of_its_secret(integrator: CreatedClient) -> None:
    row = await OAuthClient.get(client_id=integrator.client_id)
    assert integrator.client_secret.encode() not in bytes(row.secret_hash or b"")
    assert len(base64.urlsafe_b64decode(integrator.client_secret + "=")) == 32  # 256 bits
    assert client_secret_matches(row, integrator.client_secret)
    other_last = "B" if integrator.client_secret[-1] == "A" else "A"  # always a different secret
    assert not client_secret_matches(row, integrator.client_secret[:-1] + other_last)
    assert sorted(row.allowed_scopes) == ["residents:read", "vitals:write"]


async def test_a_client_is_bound_to_exactly_one_institution_or_chain(world: World) -> None:
    chain = await Chain.get(name="测试连锁")
    for binding in ({}, {"institution_id": world.institution_ids[0], "chain_id": chain.id}):
        with pytest.raises(InvalidInput):
            await create_integrator_client("x", scopes=[], created_by="account:1", **binding)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput):
        await create_integrator_client(
            "x", scopes=["residents:delete"], created_by="account:1", institution_id=world.institution_ids[0]
        )
    with pytest.raises(NotFound):
        await create_integrator_client("x", scopes=[], created_by="account:1", institution_id=10**12)
    chained = await create_integrator_client("连锁对接", scopes=[], created_by="account:1", chain_id=chain.id)
    assert chained.client.chain_id == chain.id and chained.client.institution_id is None


async def test_client_credentials_issue_an_access_token(
    client: httpx.AsyncClient, integrator: CreatedClient, settings: Settings, world: World
) -> None:
    before = int(time.time())
    response = await token_request(client, integrator, scope="residents:read")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    assert body["scope"] == "residents:read"
    assert "refresh_token" not in body

    claims = await verify_access_token(body["access_token"], issuer=settings.issuer)
    assert claims.client_id == integrator.client_id
    assert claims.scope == frozenset({"residents:read"})
    assert claims.kind is PrincipalKind.INTEGRATOR
    assert claims.institution_id == world.institution_ids[3] and claims.chain_id is None
    assert claims.subject == f"client:{integrator.client_id}"
    assert before <= claims.issued_at and claims.expires_at - claims.issued_at == 300
    principal = claims.principal()
    assert principal.kind is PrincipalKind.INTEGRATOR and principal.roles == frozenset()
    header = header_of(body["access_token"])
    assert header["typ"] == "at+jwt" and header["alg"] == "ES256"


async def test_no_scope_requested_grants_the_clients_scopes(
    client: httpx.AsyncClient, integrator: CreatedClient, settings: Settings
) -> None:
    body = (await token_request(client, integrator)).json()
    assert body["scope"] == "residents:read vitals:write"
    claims = await verify_access_token(body["access_token"], issuer=settings.issuer)
    assert claims.scope == frozenset({"residents:read", "vitals:write"})


async def test_client_secret_post_works_too(
    client: httpx.AsyncClient, integrator: CreatedClient, settings: Settings
) -> None:
    form = {
        "grant_type": "client_credentials",
        "client_id": integrator.client_id,
        "client_secret": integrator.client_secret,
    }
    response = await client.post(TOKEN, data=form)
    assert response.status_code == 200, response.text
    claims = await verify_access_token(response.json()["access_token"], issuer=settings.issuer)
    assert claims.client_id == integrator.client_id


async def test_wrong_secret_unknown_and_revoked_clients_get_invalid_client(
    client: httpx.AsyncClient, integrator: CreatedClient
) -> None:
    wrong = await token_request(client, integrator, secret=integrator.client_secret[:-2] + "xx")
    assert_oauth_error(wrong, 401, "invalid_client")
    assert wrong.headers["www-authenticate"].startswith("Basic")

    unknown = await client.post(
        TOKEN, content="grant_type=client_credentials", headers=basic("no-such-client-0000", "secret")
    )
    assert_oauth_error(unknown, 401, "invalid_client")
    # Unknown and wrong secret read alike.
    assert unknown.json() == wrong.json()

    assert (await token_request(client, integrator)).status_code == 200
    await revoke_client(integrator.client_id)
    revoked = await token_request(client, integrator)
    assert_oauth_error(revoked, 401, "invalid_client")
    assert revoked.json() == wrong.json()

    no_auth = await client.post(TOKEN, content="grant_type=client_credentials", headers=FORM)
    assert_oauth_error(no_auth, 401, "invalid_client")


async def test_clients_of_a_suspended_institution_are_refused(
    client: httpx.AsyncClient, integrator: CreatedClient, world: World
) -> None:
    institution = world.institution_ids[3]
    assert (await token_request(client, integrator)).status_code == 200
    await Institution.filter(id=institution).update(status=InstitutionStatus.SUSPENDED)
    try:
        refused = await token_request(client, integrator)
        wrong = await token_request(client, integrator, secret="not-the-secret")
    finally:
        await Institution.filter(id=institution).update(status=InstitutionStatus.ACTIVE)
    assert_oauth_error(refused, 401, "invalid_client")
    assert refused.json() == wrong.json()
    assert (await token_request(client, integrator)).status_code == 200


async def test_scope_beyond_the_grant_is_refused(
    client: httpx.AsyncClient, integrator: CreatedClient
) -> None:
    beyond = await token_request(client, integrator, scope="residents:read residents:write")
    assert_oauth_error(beyond, 400, "invalid_scope")
    unknown = await token_request(client, integrator, scope="admin")
    assert_oauth_error(unknown, 400, "invalid_scope")


async def test_unsupported_grant_type(client: httpx.AsyncClient, integrator: CreatedClient) -> None:
    for grant in ("password", "implicit"):
        response = await client.post(
            TOKEN,
            content=f"grant_type={grant}&username=a&password=b&code=c&refresh_token=d",
            headers=basic(integrator.client_id, integrator.client_secret),
        )
        assert_oauth_error(response, 400, "unsupported_grant_type")
    # The code and refresh grants exist, for public clients only: an integrator is not authorized.
    for grant in ("authorization_code", "refresh_token"):
        response = await client.post(
            TOKEN,
            content=f"grant_type={grant}&code=c&refresh_token=d",
            headers=basic(integrator.client_id, integrator.client_secret),
        )
        assert_oauth_error(response, 400, "unauthorized_client")


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        ("", FORM),  # no grant_type
        ('{"grant_type": "client_credentials"}', {"Content-Type": "application/json"}),
        ("grant_type=client_credentials&grant_type=client_credentials", FORM),  # repeated
        (b"grant_type=\xff\xfe", FORM),  # not UTF-8
    ],
)
async def test_malformed_requests_are_invalid_request(
    client: httpx.AsyncClient, integrator: CreatedClient, body: str | bytes, headers: dict[str, str]
) -> None:
    auth = basic(integrator.client_id, integrator.client_secret)
    response = await client.post(TOKEN, content=body, headers={**auth, **headers})
    assert_oauth_error(response, 400, "invalid_request")


async def test_two_authentication_methods_at_once_are_refused(
    client: httpx.AsyncClient, integrator: CreatedClient
) -> None:
    content = f"grant_type=client_credentials&client_id={integrator.client_id}&client_secret=x"
    response = await client.post(
        TOKEN, content=content, headers=basic(integrator.client_id, integrator.client_secret)
    )
    assert_oauth_error(response, 400, "invalid_request")


async def test_a_broken_basic_header_is_invalid_client(client: httpx.AsyncClient) -> None:
    for broken in ("Basic ###", "Basic " + base64.b64encode(b"\xff\xfe:x").decode(), "Basic Zm9v"):
        response = await client.post(
            TOKEN, content="grant_type=client_credentials", headers={"Authorization": broken, **FORM}
        )
        assert_oauth_error(response, 401, "invalid_client")


async def test_get_is_refused(client: httpx.AsyncClient, integrator: CreatedClient) -> None:
    response = await client.get(
        TOKEN,
        params={"grant_type": "client_credentials"},
        headers=basic(integrator.client_id, integrator.client_secret),
    )
    assert_oauth_error(response, 405, "invalid_request")
    assert response.headers["allow"] == "POST"


RECORD_CONSENT = """mutation($input: RecordConsentInput!) {
  recordConsent(input: $input) { consent { id } userErrors { field code message } }
}"""


def identity_consent(resident_id: str, client_id: str) -> dict[str, object]:
    return {
        "residentId": resident_id,
        "grantor": {"kind": "RESIDENT", "authority": "SELF"},
        "grantee": {"kind": "INTEGRATOR", "clientId": client_id},
        "purposes": ["THIRD_PARTY_INTEGRATION"],
        "categories": ["IDENTITY"],
        "noticeVersion": "v1",
        "noticeSha256": "ab" * 32,
        "method": "PAPER_SIGNATURE_SCANNED",
    }


async def test_a_chain_bound_client_gets_a_chain_token(
    client: httpx.AsyncClient, settings: Settings, world: World
) -> None:
    chain = await Chain.get(name="测试连锁")
    created = await create_integrator_client(
        "连锁数据平台", scopes=["residents:read"], created_by="account:1", chain_id=chain.id
    )
    response = await token_request(client, created)
    claims = await verify_access_token(response.json()["access_token"], issuer=settings.issuer)
    assert claims.chain_id == chain.id and claims.institution_id is None


async def test_authlib_client_against_the_live_server(
    live_server: LiveServer, world: World, client: httpx.AsyncClient
) -> None:
    institution = world.institution_ids[5]
    created = await create_integrator_client(
        "authlib 端到端",
        scopes=["residents:read", "vitals:write"],
        created_by="account:1",
        institution_id=institution,
    )
    # The first resident's guardian consented to identity for this client; the others did not.
    listed = await gql(
        client, "{ residents(first: 1) { edges { node { id } } } }", token=world.token(institution)
    )
    first_resident = listed["data"]["residents"]["edges"][0]["node"]["id"]
    admin = staff_token(institution, StaffRole.INSTITUTION_ADMIN)
    consented = await gql(
        client, RECORD_CONSENT, {"input": identity_consent(first_resident, created.client_id)}, token=admin
    )
    assert consented["data"]["recordConsent"]["userErrors"] == [], consented
    residents = "{ residents(first: 10) { totalCount edges { node { name } } } }"
    async with AsyncOAuth2Client(
        client_id=created.client_id,
        client_secret=created.client_secret,
        token_endpoint_auth_method="client_secret_basic",
        scope="vitals:write",
    ) as oauth:
        token = await oauth.fetch_token(f"{live_server.base_url}{TOKEN}", grant_type="client_credentials")
        # The integrator's first query, with the client's own session (it sends the bearer token).
        refused = (await oauth.post(f"{live_server.base_url}/graphql", json={"query": residents})).json()
        assert [e["extensions"]["code"] for e in refused["errors"]] == ["FORBIDDEN"]  # scope lacks read
    assert token["token_type"] == "Bearer" and token["scope"] == "vitals:write"
    async with AsyncOAuth2Client(
        client_id=created.client_id,
        client_secret=created.client_secret,
        scope="residents:read",
    ) as reader:
        await reader.fetch_token(f"{live_server.base_url}{TOKEN}", grant_type="client_credentials")
        answer = (await reader.post(f"{live_server.base_url}/graphql", json={"query": residents})).json()
    names = [edge["node"]["name"] for edge in answer["data"]["residents"]["edges"]]
    seeded = world.resident_names[institution]
    assert names[0] == seeded[0] and set(names[1:]) == {None}
    refusals = [(e["path"][-1], e["extensions"].get("reason")) for e in answer["errors"]]
    assert refusals == [("name", "CONSENT_REQUIRED")] * (len(names) - 1)

    # Verify with nothing but the published keys (another API process may take up to 5 s to list a key
    # that its sibling created a moment ago).
    deadline = time.monotonic() + 10
    kid = header_of(token["access_token"])["kid"]
    async with httpx.AsyncClient(base_url=live_server.base_url) as http:
        while True:
            published = (await http.get("/.well-known/jwks.json")).json()
            if kid in {key["kid"] for key in published["keys"]} or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
    decoded = jwt.decode(token["access_token"], KeySet.import_key_set(published), algorithms=["ES256"])
    assert decoded.header["typ"] == "at+jwt"
    assert decoded.claims["client_id"] == created.client_id
    assert decoded.claims["scope"] == "vitals:write"
    assert decoded.claims["kind"] == "integrator"
    assert decoded.claims["institution_id"] == world.institution_ids[5]
    assert decoded.claims["exp"] - decoded.claims["iat"] == 300


async def test_an_unexpected_failure_reveals_nothing(
    client: httpx.AsyncClient, integrator: CreatedClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> object:
        raise RuntimeError("secret internals: /srv/yiyang/keys.py line 12")

    monkeypatch.setattr(oauth_module, "process_signing_keys", broken)
    response = await token_request(client, integrator)
    assert_oauth_error(response, 500, "server_error")
    assert "internals" not in response.text and "RuntimeError" not in response.text


def test_authlib_only_sees_clients_loaded_beforehand() -> None:
    """The bridge fails closed: a client id that was not loaded before authlib ran is no client."""
    server = oauth_module._TokenServer("https://yiyang.test", {}, None)
    assert server.query_client("anything") is None

"""Bad input of every kind gets a clear error with a code, leaks nothing, and the server keeps serving."""

import base64
import hashlib
import hmac
import json
import time

import httpx
import pytest
from joserfc import jwt

from api.settings import DEFAULT_ISSUER
from compliance.identity.access_tokens import AccessTokenClaims, api_audience
from compliance.principals import Principal, PrincipalKind, StaffRole
from tests.conftest import World, _signing_keys, operator_token, staff_token

HEALTHY_QUERY = "{ residents(first: 1) { edges { node { name } } } }"


def codes(body: dict) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


async def post(
    client: httpx.AsyncClient, payload: object, token: str | None, **headers: str
) -> httpx.Response:
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return await client.post("/graphql", json=payload, headers=headers)


@pytest.fixture
def token(world: World) -> str:
    return world.token(world.institution_ids[0])


@pytest.mark.parametrize(
    "query",
    [
        "{ residents(first: 1) { edges { node { name } }",  # unbalanced braces
        "{ residents(first: 1) { edges { node { noSuchField } } } }",
        "mutation { admitResident }",
        '{ residents(first: "many") { edges { node { name } } } }',
    ],
)
async def test_malformed_queries(client: httpx.AsyncClient, token: str, query: str) -> None:
    response = await post(client, {"query": query}, token)
    assert response.status_code in (200, 400)
    assert codes(response.json()) and set(codes(response.json())) == {"BAD_USER_INPUT"}
    assert "requestId" in response.json()["errors"][0]["extensions"]


async def test_wrong_variable_types(client: httpx.AsyncClient, token: str) -> None:
    response = await post(
        client,
        {
            "query": "query($first: Int) { residents(first: $first) { edges { node { name } } } }",
            "variables": {"first": "ten"},
        },
        token,
    )
    assert codes(response.json()) == ["BAD_USER_INPUT"]
    response = await post(
        client,
        {
            "query": 'mutation($d: Date!) { admitResident(input: {name: "张三", gender: MALE, birthDate: $d,'
            ' careLevel: ASSISTED, admissionDate: "2025-01-01"}) { resident { id } } }',
            "variables": {"d": "1940-13-45"},
        },
        token,
    )
    assert codes(response.json()) == ["BAD_USER_INPUT"]


async def test_page_size_is_capped(client: httpx.AsyncClient, token: str) -> None:
    body = (
        await post(client, {"query": "{ residents(first: 1000) { edges { node { name } } } }"}, token)
    ).json()
    assert codes(body) == ["BAD_USER_INPUT"]
    body = (
        await post(client, {"query": '{ residents(after: "garbage!") { edges { node { name } } } }'}, token)
    ).json()
    assert codes(body) == ["BAD_USER_INPUT"]


async def test_too_deep_query(client: httpx.AsyncClient, token: str) -> None:
    too_deep = "{ __schema { types " + "{ fields { type " * 5 + "{ name }" + " } }" * 5 + " } }"
    response = await post(client, {"query": too_deep}, token)
    assert "BAD_USER_INPUT" in codes(response.json())
    assert "depth" in response.json()["errors"][0]["message"]


async def test_too_many_aliases(client: httpx.AsyncClient, token: str) -> None:
    wide = "{ " + " ".join(f"a{n}: __typename" for n in range(40)) + " }"
    body = (await post(client, {"query": wide}, token)).json()
    assert codes(body) == ["BAD_USER_INPUT"]


async def test_too_many_tokens(client: httpx.AsyncClient, token: str) -> None:
    huge = "{ " + " ".join("__typename" for _ in range(3_000)) + " }"
    body = (await post(client, {"query": huge}, token)).json()
    assert codes(body) == ["BAD_USER_INPUT"]


async def test_oversized_body(client: httpx.AsyncClient, token: str) -> None:
    padding = "#" + "x" * (128 * 1024) + "\n"
    response = await post(client, {"query": padding + HEALTHY_QUERY}, token)
    assert response.status_code == 413
    assert codes(response.json()) == ["BAD_USER_INPUT"]


async def test_not_json(client: httpx.AsyncClient, token: str) -> None:
    response = await client.post(
        "/graphql",
        content=b"{not json",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500
    assert "Traceback" not in response.text


def _claims(**overrides: object) -> dict:
    staff = Principal("account:1", PrincipalKind.STAFF, institution_id=1, roles=frozenset(StaffRole))
    claims = AccessTokenClaims.for_principal(staff, issuer=DEFAULT_ISSUER, client_id="tests").to_jwt()
    return claims | overrides


def _signed(claims: dict, **header: object) -> str:
    """Signed with our real active key, so only what the case changes is wrong."""
    key = _signing_keys[-1]
    fields = {"alg": "ES256", "typ": "at+jwt", "kid": key.kid, **header}
    return jwt.encode(fields, claims, key.private_key, algorithms=["ES256"])


def _hs256_with_our_public_key() -> str:
    """Algorithm confusion: an HMAC keyed with our public key (built by hand: JOSE libraries refuse)."""
    public = _signing_keys[-1].private_key.as_pem(private=False)
    header = _b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": _signing_keys[-1].kid}).encode())
    payload = _b64(json.dumps(_claims()).encode())
    mac = hmac.new(public, f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{_b64(mac)}"


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# Each case builds its token when the test runs: the signing key exists only once the app has started.
# The verification module's own tests go through every refusal reason; these show that the endpoint
# answers each with 401 and one UNAUTHENTICATED error.
REFUSED_TOKENS = {
    "missing": lambda: None,
    "garbage": lambda: "not-a-jwt",
    "expired": lambda: _signed(_claims(exp=int(time.time()) - 3600, iat=int(time.time()) - 3900)),
    "not-yet-valid": lambda: _signed(_claims(nbf=int(time.time()) + 3600)),
    "wrong-audience": lambda: _signed(_claims(aud="someone-else")),
    "wrong-issuer": lambda: _signed(_claims(iss="https://evil.example")),
    "institution-not-an-int": lambda: _signed(_claims(institution_id="1")),
    "alg-none": lambda: "eyJhbGciOiJub25lIn0." + _signed(_claims()).split(".")[1] + ".",
    "hs256-with-public-key": _hs256_with_our_public_key,
    "unknown-kid": lambda: _signed(_claims(), kid="not-one-of-ours"),
    "tampered": lambda: _signed(_claims()).replace(".", ".x", 1),
    "audience-of-the-api-elsewhere": lambda: _signed(_claims(aud=api_audience("https://other.example"))),
}


@pytest.mark.parametrize("case", REFUSED_TOKENS)
async def test_refused_tokens(client: httpx.AsyncClient, case: str) -> None:
    response = await post(client, {"query": HEALTHY_QUERY}, REFUSED_TOKENS[case]())
    assert response.status_code == 401
    assert codes(response.json()) == ["UNAUTHENTICATED"]
    assert response.headers["www-authenticate"].startswith("Bearer")


async def test_unknown_institution(client: httpx.AsyncClient) -> None:
    body = (await post(client, {"query": HEALTHY_QUERY}, staff_token(987_654_321))).json()
    assert codes(body) == ["NOT_FOUND"]


async def test_role_without_permission_is_forbidden(client: httpx.AsyncClient, world: World) -> None:
    logistics = staff_token(world.institution_ids[0], StaffRole.LOGISTICS)
    body = (
        await post(
            client,
            {
                "query": 'mutation { admitResident(input: {name: "张三", gender: MALE,'
                ' birthDate: "1940-01-01",'
                ' careLevel: ASSISTED, admissionDate: "2025-01-01"}) { resident { id } } }'
            },
            logistics,
        )
    ).json()
    assert codes(body) == ["FORBIDDEN"]


async def test_operator_sees_no_residents(client: httpx.AsyncClient) -> None:
    body = (await post(client, {"query": HEALTHY_QUERY}, operator_token())).json()
    assert codes(body) == ["FORBIDDEN"]


async def test_messages_follow_accept_language(client: httpx.AsyncClient) -> None:
    chinese = (await post(client, {"query": HEALTHY_QUERY}, None)).json()
    english = (
        await post(client, {"query": HEALTHY_QUERY}, None, **{"Accept-Language": "en-US,en;q=0.9"})
    ).json()
    assert chinese["errors"][0]["message"] == "需要登录认证。"
    assert english["errors"][0]["message"] == "Authentication required."


async def test_internal_errors_are_masked(
    client: httpx.AsyncClient, token: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import care.residents

    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError('relation "t_secret".resident: SELECT password FROM users')

    monkeypatch.setattr(care.residents, "list_residents", broken)
    response = await post(client, {"query": HEALTHY_QUERY}, token)
    body = response.json()
    assert codes(body) == ["INTERNAL"]
    assert (
        "SELECT" not in response.text and "t_secret" not in response.text and "Traceback" not in response.text
    )
    assert body["errors"][0]["extensions"]["requestId"] == response.headers["x-request-id"]


async def test_server_keeps_serving_after_bad_input(client: httpx.AsyncClient, token: str) -> None:
    for payload in ({"query": "{"}, {"query": 42}, [1, 2], {"variables": {}}):
        response = await post(client, payload, token)
        assert 400 <= response.status_code < 500 or codes(response.json())
    body = (await post(client, {"query": HEALTHY_QUERY}, token)).json()
    assert "errors" not in body
    assert body["data"]["residents"]["edges"]


def test_verified_token_cache_never_outlives_expiry() -> None:
    from api.graphql import VerifiedTokenCache

    cache = VerifiedTokenCache(capacity=2)
    someone = Principal(subject="x", kind=PrincipalKind.OPERATOR)
    cache.put("expired", someone, expires_at=time.time() - 1)
    cache.put("valid", someone, expires_at=time.time() + 600)
    assert cache.get("expired") is None
    assert cache.get("valid") == someone
    cache.put("a", someone, expires_at=time.time() + 600)
    cache.put("b", someone, expires_at=time.time() + 600)
    assert cache.get("valid") is None  # the oldest entry made room

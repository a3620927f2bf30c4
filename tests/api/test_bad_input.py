"""Bad input of every kind gets a clear error with a code, leaks nothing, and the server keeps serving."""

import time

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import OctKey

from api.dev_tokens import AUDIENCE, ISSUER, issue_dev_token
from compliance.principals import Principal, PrincipalKind, StaffRole
from tests.conftest import TOKEN_SECRET, World, staff_token

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


def _raw_token(claims: dict, key: str = TOKEN_SECRET, alg: str = "HS256") -> str:
    return jwt.encode({"alg": alg}, claims, OctKey.import_key(key), algorithms=[alg])


def _claims(**overrides: object) -> dict:
    now = int(time.time())
    base = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "x",
        "kind": "staff",
        "roles": ["institution_admin"],
        "inst": 1,
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    return base | overrides


@pytest.mark.parametrize(
    "bad_token",
    [
        pytest.param(None, id="missing"),
        pytest.param("not-a-jwt", id="garbage"),
        pytest.param(_raw_token(_claims(exp=int(time.time()) - 3600)), id="expired"),
        pytest.param(_raw_token(_claims(nbf=int(time.time()) + 3600)), id="not-yet-valid"),
        pytest.param(_raw_token(_claims(), key="another-secret-" + "y" * 32), id="forged"),
        pytest.param(_raw_token(_claims(aud="someone-else")), id="wrong-audience"),
        pytest.param(_raw_token(_claims(iss="evil")), id="wrong-issuer"),
        pytest.param(_raw_token(_claims(inst="1")), id="institution-not-an-int"),
        pytest.param("eyJhbGciOiJub25lIn0." + _raw_token(_claims()).split(".")[1] + ".", id="alg-none"),
    ],
)
async def test_refused_tokens(client: httpx.AsyncClient, bad_token: str | None) -> None:
    response = await post(client, {"query": HEALTHY_QUERY}, bad_token)
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
    operator = issue_dev_token(TOKEN_SECRET, Principal(subject="ops", kind=PrincipalKind.OPERATOR))
    body = (await post(client, {"query": HEALTHY_QUERY}, operator)).json()
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

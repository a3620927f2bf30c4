"""Rate limits of GraphQL operations against the real Redis: cost, budgets, refusal, recovery, isolation.

Operations run through strawberry schemas with the RateLimits extension and a RequestContext built here;
time is a ManualClock handed to the limiter, never the wall clock.
"""

import asyncio
import uuid
from typing import Any

import httpx
import pytest
import strawberry
from graphql import parse
from redis.asyncio import Redis

from api.settings import ConfigurationError, Settings
from compliance.principals import Principal, PrincipalKind, StaffRole
from schema import rate_limits
from schema.context import RequestContext
from schema.execution import YiyangExecutionContext
from schema.rate_limits import (
    Allowed,
    RateLimiter,
    RateLimitPolicy,
    RateLimits,
    Refused,
    TooCostly,
    operation_cost,
    rate_limited_retry_after,
)
from schema.root import Mutation as RootMutation
from schema.root import Query as RootQuery
from schema.root import RequestDocumentLimits, YiyangSchema
from tenants.errors import RateLimited
from tests.conftest import ManualClock, World, token_for

NURSE = Principal("account:1001", PrincipalKind.STAFF, institution_id=1, roles=frozenset({StaffRole.NURSE}))
DOCTOR = Principal("account:1002", PrincipalKind.STAFF, institution_id=1, roles=frozenset({StaffRole.DOCTOR}))


def integrator(client_id: str) -> Principal:
    return Principal(f"client:{client_id}", PrincipalKind.INTEGRATOR, institution_id=1, client_id=client_id)


# A schema of our own whose resolvers count their calls: "nothing executed" is then observable.


@strawberry.type
class Item:
    id: int
    name: str


@strawberry.type
class ItemEdge:
    cursor: str
    node: Item


@strawberry.type
class ItemConnection:
    edges: list[ItemEdge]
    total_count: int


EXECUTED: list[str] = []


@strawberry.type
class Query:
    @strawberry.field
    def items(self, first: int | None = None, after: str | None = None) -> ItemConnection:
        EXECUTED.append("items")
        size = 20 if first is None else first
        edges = [ItemEdge(cursor=str(k), node=Item(id=k, name=f"item {k}")) for k in range(size)]
        return ItemConnection(edges=edges, total_count=1000)


@strawberry.type
class Mutation:
    @strawberry.mutation
    def touch(self) -> int:
        EXECUTED.append("touch")
        return 1


COUNTING_SCHEMA = strawberry.Schema(
    query=Query, mutation=Mutation, extensions=[RequestDocumentLimits, RateLimits]
)
# The product's schema with the extension, as schema/root.py will build it.
PRODUCT_SCHEMA = YiyangSchema(
    query=RootQuery,
    mutation=RootMutation,
    execution_context_class=YiyangExecutionContext,
    extensions=[RequestDocumentLimits, RateLimits],
)

ONE_ITEM = "{ items(first: 1) { edges { node { id } } } }"  # 1 + (1 + 1 × (1 + (1 + 1))) = 5


def limiter_for(redis: Redis, clock: ManualClock, *, user: int = 50, client: int = 200) -> RateLimiter:
    return RateLimiter(
        redis,
        RateLimitPolicy(user_per_minute=user, client_per_minute=client),
        prefix=f"test:{uuid.uuid4().hex}",
        clock=clock,
    )


async def run(
    query: str,
    principal: Principal | None,
    limiter: RateLimiter | None,
    variables: dict[str, Any] | None = None,
    schema: strawberry.Schema = COUNTING_SCHEMA,
) -> Any:
    context = RequestContext(principal=principal, request_id="test", locale="en", rate_limiter=limiter)
    return await schema.execute(query, variable_values=variables, context_value=context)


def cost(
    query: str, variables: dict[str, Any] | None = None, schema: strawberry.Schema = PRODUCT_SCHEMA
) -> int:
    return operation_cost(schema._schema, parse(query), None, variables)


# Cost


def test_the_examples_of_the_docs_cost_what_the_docs_say() -> None:
    assert cost('{ resident(id: "UmVzaWRlbnQ6MQ") { name room } }') == 4
    assert cost("{ residents(first: 20) { totalCount edges { node { id name room } } } }") == 103
    assert cost("{ residents(first: 100) { totalCount edges { node { id name room } } } }") == 503
    assert cost("{ residents { totalCount edges { node { id name room } } } }") == 103  # default page: 20
    assert (
        cost(
            "query ($n: Int) { residents(first: $n) { edges { node { name familyMembers(first: 5)"
            " { edges { node { name phone } } } } } pageInfo { hasNextPage endCursor } } }",
            {"n": 20},
        )
        == 485
    )
    assert (
        cost(
            'mutation { dischargeResident(input: {id: "x", dischargedOn: "2025-01-01", reason: COST})'
            " { resident { id status } userErrors { field message } } }"
        )
        == 17
    )
    assert cost("{ __typename }") == 1
    assert cost("{ __schema { types { name fields { name } } } }") == 11


def test_a_bigger_page_costs_more_literal_or_variable() -> None:
    query = "query ($n: Int) { residents(first: $n) { edges { node { id name } } } }"
    assert cost(query, {"n": 100}) > cost(query, {"n": 1})
    assert cost(query, {"n": 100}) == 1 + 1 + 100 * (1 + 1 + 2)
    assert cost(query, {"n": 1}) == 1 + 1 + 1 * (1 + 1 + 2)
    assert cost(query, {}) == cost(query, {"n": 20}) == cost(query, {"n": None})  # absent: the default page
    assert cost("query ($n: Int = 7) { residents(first: $n) { edges { node { id } } } }") == 1 + 1 + 7 * 3
    # What the resolver refuses (over 100, negative) is charged as its limit: the resolver's error says why.
    assert cost(query, {"n": 5000}) == cost(query, {"n": 100})
    assert cost(query, {"n": -3}) == 2


def test_fragments_and_nesting_are_counted() -> None:
    inline = "{ residents(first: 10) { edges { node { ... on Resident { id name } } } } }"
    named = "query { residents(first: 10) { edges { node { ...R } } } } fragment R on Resident { id name }"
    assert cost(inline) == cost(named) == 1 + 1 + 10 * (1 + 1 + 2)
    # A connection inside a connection multiplies.
    nested = (
        "{ residents(first: 10) { edges { node { familyMembers(first: 10) { edges { node { id } } } } } } }"
    )
    assert cost(nested) == 1 + 1 + 10 * (1 + 1 + (1 + 10 * (1 + 1 + 1)))


def test_mutations_cost_more_than_queries() -> None:
    assert cost("mutation { touch }", schema=COUNTING_SCHEMA) == 1 + 10
    assert cost("{ items(first: 0) { totalCount } }", schema=COUNTING_SCHEMA) == 1 + 1 + 1


# Budgets


async def test_an_exhausted_budget_refuses_without_executing(redis: Redis, clock: ManualClock) -> None:
    limiter = limiter_for(redis, clock, user=50)
    EXECUTED.clear()
    for _ in range(10):  # 10 × 5 = 50: the whole minute's budget
        result = await run(ONE_ITEM, NURSE, limiter)
        assert result.errors is None
    assert len(EXECUTED) == 10

    refused = await run(ONE_ITEM, NURSE, limiter)
    assert refused.data is None
    assert len(EXECUTED) == 10  # nothing executed
    (error,) = refused.errors
    assert error.extensions["code"] == "RATE_LIMITED"
    assert error.extensions["retryAfter"] == 6  # 5 units at 50 a minute (one every 1.2 s)
    assert isinstance(error.original_error, RateLimited)
    assert error.path is None
    assert rate_limited_retry_after(refused) == error.extensions["retryAfter"]
    assert rate_limited_retry_after(result) is None

    # Mutations too, and they are charged more.
    assert (await run("mutation { touch }", NURSE, limiter)).errors[0].extensions["code"] == "RATE_LIMITED"
    assert "touch" not in EXECUTED


async def test_the_budget_comes_back_with_time(redis: Redis, clock: ManualClock) -> None:
    limiter = limiter_for(redis, clock, user=60)  # one unit a second
    assert isinstance(await limiter.charge(NURSE, 60), Allowed)
    refused = await limiter.charge(NURSE, 5)
    assert refused == Refused(cost=5, retry_after_seconds=5)

    clock.now += 4  # not yet: 4 units back, 5 needed
    assert await limiter.charge(NURSE, 5) == Refused(cost=5, retry_after_seconds=1)
    clock.now += 1
    assert await limiter.charge(NURSE, 5) == Allowed(cost=5, remaining=0)

    # Through GraphQL: the retryAfter it gives is enough.
    result = await run(ONE_ITEM, NURSE, limiter)
    retry_after = result.errors[0].extensions["retryAfter"]
    assert retry_after == 5
    clock.now += retry_after
    assert (await run(ONE_ITEM, NURSE, limiter)).errors is None

    # A long pause refills the bucket to a minute's budget, no more.
    clock.now += 3600
    assert isinstance(await limiter.charge(NURSE, 60), Allowed)
    assert isinstance(await limiter.charge(NURSE, 1), Refused)


async def test_each_client_and_each_user_has_its_own_budget(redis: Redis, clock: ManualClock) -> None:
    limiter = limiter_for(redis, clock, user=50, client=200)
    client_a, client_b = integrator("client-aaaaaaaaaaaaaaaa"), integrator("client-bbbbbbbbbbbbbbbb")
    # Integrators get the client budget (200), keyed by client_id.
    assert await limiter.charge(client_a, 200) == Allowed(cost=200, remaining=0)
    assert isinstance(await limiter.charge(client_a, 1), Refused)
    # Another token of the same client (another subject, same client_id) shares the client's bucket.
    same_client = Principal("client:other-token", PrincipalKind.INTEGRATOR, client_id=client_a.client_id)
    assert isinstance(await limiter.charge(same_client, 1), Refused)
    # Client B and users are untouched.
    assert (await run(ONE_ITEM, client_b, limiter)).errors is None
    assert (await run(ONE_ITEM, NURSE, limiter)).errors is None

    # Users: per subject.
    assert isinstance(await limiter.charge(NURSE, 45), Allowed)
    assert isinstance(await limiter.charge(NURSE, 1), Refused)
    assert (await run(ONE_ITEM, DOCTOR, limiter)).errors is None
    refused = await run(ONE_ITEM, NURSE, limiter)
    assert refused.errors[0].extensions["code"] == "RATE_LIMITED"


async def test_an_operation_over_a_whole_bucket_is_refused_outright(redis: Redis, clock: ManualClock) -> None:
    limiter = limiter_for(redis, clock, user=50, client=500)
    EXECUTED.clear()
    big = "{ items(first: 100) { edges { node { id name } } } }"  # 1 + 1 + 100 × 4 = 402
    result = await run(big, NURSE, limiter)
    assert result.data is None and EXECUTED == []
    (error,) = result.errors
    assert error.extensions == {"code": "BAD_USER_INPUT", "cost": 402, "budget": 50}
    assert "costs 402, more than the 50 allowed per minute" in error.message
    assert rate_limited_retry_after(result) is None
    # Nothing was taken: the whole budget is still there.
    assert await limiter.charge(NURSE, 50) == Allowed(cost=50, remaining=0)
    # Over the user budget, within the client one.
    assert (await run(big, integrator("client-cccccccccccccccc"), limiter)).errors is None
    assert await limiter.charge(integrator("client-cccccccccccccccc"), 501) == TooCostly(501, 500)


async def test_concurrent_operations_never_overspend(redis: Redis, clock: ManualClock) -> None:
    limiter = limiter_for(redis, clock, user=50)
    outcomes = await asyncio.gather(*(limiter.charge(NURSE, 5) for _ in range(30)))
    assert sum(isinstance(outcome, Allowed) for outcome in outcomes) == 10


async def test_charges_waiting_together_go_in_one_redis_call(
    redis: Redis, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    limiter = limiter_for(redis, clock, user=50)
    calls: list[int] = []
    script = limiter._take

    async def counted(*, keys: list[str], args: list[object]) -> object:
        calls.append(len(keys))
        return await script(keys=keys, args=args)

    monkeypatch.setattr(limiter, "_take", counted)
    others = [Principal(f"account:{uuid.uuid4().int % 10**9}", PrincipalKind.FAMILY) for _ in range(5)]
    outcomes = await asyncio.gather(
        *(limiter.charge(NURSE, 5) for _ in range(12)), *(limiter.charge(other, 50) for other in others)
    )
    assert sum(calls) == 17 and len(calls) < 17  # every charge went out, fewer round trips
    assert [isinstance(outcome, Allowed) for outcome in outcomes[:12]] == [True] * 10 + [False] * 2
    assert all(isinstance(outcome, Allowed) for outcome in outcomes[12:])  # each bucket its own


async def test_the_product_schema_is_limited_before_any_resolver(redis: Redis, clock: ManualClock) -> None:
    limiter = limiter_for(redis, clock, user=600)
    query = "{ residents(first: 100) { totalCount edges { node { id name room } } } }"  # 503
    first = await run(query, NURSE, limiter, schema=PRODUCT_SCHEMA)
    # Allowed and executed: the resolver ran and refused (this context acts in no institution).
    assert first.errors[0].path == ["residents"]
    second = await run(query, NURSE, limiter, schema=PRODUCT_SCHEMA)
    assert second.data is None
    assert second.errors[0].extensions["code"] == "RATE_LIMITED"
    assert second.errors[0].path is None


async def test_no_limiter_or_no_principal_means_no_limit(redis: Redis, clock: ManualClock) -> None:
    limiter = limiter_for(redis, clock, user=5)
    for _ in range(3):
        assert (await run(ONE_ITEM, NURSE, None)).errors is None
        assert (await run(ONE_ITEM, None, limiter)).errors is None


async def test_invalid_documents_are_not_charged(redis: Redis, clock: ManualClock) -> None:
    limiter = limiter_for(redis, clock, user=5)
    for _ in range(3):
        result = await run("{ items(first: 1) { nope } }", NURSE, limiter)
        assert (
            result.errors[0].extensions is None or result.errors[0].extensions.get("code") != "RATE_LIMITED"
        )
    assert await limiter.charge(NURSE, 5) == Allowed(cost=5, remaining=0)


async def test_without_redis_operations_still_run(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    unreachable = Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    try:
        limiter = RateLimiter(unreachable, RateLimitPolicy(user_per_minute=5), clock=clock)
        result = await run(ONE_ITEM, NURSE, limiter)
    finally:
        await unreachable.aclose()
    assert result.errors is None
    assert "rate limit not applied" in caplog.text


async def test_redis_time_is_used_without_a_clock(redis: Redis) -> None:
    limiter = RateLimiter(redis, RateLimitPolicy(user_per_minute=10), prefix=f"test:{uuid.uuid4().hex}")
    assert await limiter.charge(NURSE, 10) == Allowed(cost=10, remaining=0)
    refused = await limiter.charge(NURSE, 10)
    assert isinstance(refused, Refused) and 1 <= refused.retry_after_seconds <= 60


# Settings


def test_budgets_are_settings_validated_at_start() -> None:
    base = {"DATABASE_URL": "postgres://x/y", "REDIS_URL": "redis://x"}
    defaults = Settings.from_environ(base)
    assert RateLimitPolicy.from_settings(defaults) == RateLimitPolicy()
    assert (defaults.rate_limit_user_per_minute, defaults.rate_limit_client_per_minute) == (
        rate_limits.DEFAULT_USER_PER_MINUTE,
        rate_limits.DEFAULT_CLIENT_PER_MINUTE,
    )
    given = Settings.from_environ(
        base | {"YIYANG_RATE_LIMIT_USER_PER_MINUTE": "300", "YIYANG_RATE_LIMIT_CLIENT_PER_MINUTE": "9000"}
    )
    assert RateLimitPolicy.from_settings(given) == RateLimitPolicy(
        user_per_minute=300, client_per_minute=9000
    )
    for bad in ("0", "-5", "ten", "1.5"):
        with pytest.raises(ConfigurationError, match="YIYANG_RATE_LIMIT_USER_PER_MINUTE"):
            Settings.from_environ(base | {"YIYANG_RATE_LIMIT_USER_PER_MINUTE": bad})
        with pytest.raises(ConfigurationError, match="YIYANG_RATE_LIMIT_CLIENT_PER_MINUTE"):
            Settings.from_environ(base | {"YIYANG_RATE_LIMIT_CLIENT_PER_MINUTE": bad})


async def test_over_http_the_answer_is_429_with_retry_after(
    app: Any, client: httpx.AsyncClient, redis: Redis, world: World
) -> None:
    """The wiring in the app, with a small budget put in for the test."""
    view = app.state.graphql_view
    token = token_for(
        Principal(
            f"account:{uuid.uuid4().int % 10**9}",
            PrincipalKind.STAFF,
            institution_id=world.institution_ids[0],
            roles=frozenset({StaffRole.NURSE}),
        )
    )
    query = {"query": "{ residents(first: 100) { edges { node { name } } } }"}  # costs 302: two do not fit
    headers = {"Authorization": f"Bearer {token}", "Accept-Language": "en"}
    usual, view.rate_limiter = view.rate_limiter, RateLimiter(redis, RateLimitPolicy(user_per_minute=500))
    try:
        first = await client.post("/graphql", json=query, headers=headers)
        second = await client.post("/graphql", json=query, headers=headers)
    finally:
        view.rate_limiter = usual
    assert first.status_code == 200 and "errors" not in first.json()
    assert second.status_code == 429
    retry_after = int(second.headers["retry-after"])
    error = second.json()["errors"][0]
    assert error["extensions"]["code"] == "RATE_LIMITED"
    assert error["extensions"]["retryAfter"] == retry_after and 0 < retry_after <= 60
    assert second.json().get("data") is None

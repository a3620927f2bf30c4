"""Rate limits of GraphQL operations: what an operation costs, and a budget per caller in Redis.

Each operation is charged its cost, computed from the parsed and validated document before anything runs
(`operation_cost`; formula and examples in docs/api.md, "Rate limits"), against a token bucket:

- per principal (`subject`) for staff, family, supervisors and operators: the user budget per minute;
- per OAuth2 client (`client_id`) for integrators, whichever token of the client: the client budget.

A bucket holds one minute's budget and refills continuously (budget / 60 s), so a caller may spend a
minute's budget at once and then its budget per minute. Taking from it is one Lua script (atomic in
Redis, shared by every API process). When the bucket lacks the cost, nothing is executed: the answer is
RATE_LIMITED with `retryAfter`, the whole seconds until the bucket holds the cost again. An operation
costing more than a whole bucket could never run: it is refused at once (BAD_USER_INPUT, nothing taken).

The limiter stands in `RequestContext.rate_limiter`; a context without one (or without a principal:
unauthenticated requests are refused before GraphQL) is not limited. If Redis fails, the operation runs
(logged): the limit protects the service and must not itself take it down.
"""

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLField,
    GraphQLNamedType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    OperationType,
    SelectionSetNode,
    VariableNode,
    get_named_type,
    get_nullable_type,
    is_list_type,
)
from graphql import ExecutionResult as GraphQLExecutionResult
from graphql.utilities import get_operation_ast
from redis.asyncio import Redis
from redis.exceptions import RedisError
from strawberry.extensions import SchemaExtension

from compliance.principals import Principal, PrincipalKind
from schema.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from tenants.errors import DomainError, InvalidInput, RateLimited

if TYPE_CHECKING:
    from api.settings import Settings

log = logging.getLogger("yiyang.rate_limits")

DEFAULT_USER_PER_MINUTE = 10_000
DEFAULT_CLIENT_PER_MINUTE = 50_000

OPERATION_COST = 1  # every operation, whatever it selects
FIELD_COST = 1  # every selected field (`__typename` is free)
MUTATION_FIELD_COST = 10  # a top-level mutation field: a write, in place of FIELD_COST
INTROSPECTION_COST = 10  # `__schema` or `__type`, whatever is selected inside (GraphiQL's schema fetch)

TOO_MANY_OPERATIONS = "Too many requests. Try again in {seconds} seconds."
TOO_COSTLY = (
    "This operation costs {cost}, more than the {budget} allowed per minute: ask for fewer items or fields."
)


# Cost


@dataclass
class _Walk:
    schema: GraphQLSchema
    fragments: Mapping[str, FragmentDefinitionNode]
    variables: Mapping[str, Any]
    variable_defaults: Mapping[str, int | None]

    def page_size(self, node: FieldNode) -> int:
        """The page a `first`/`last` argument asks for (literal or variable), clamped to what the resolver
        allows (it refuses more); the default page size when absent or null."""
        arguments = {argument.name.value: argument.value for argument in node.arguments or ()}
        value = arguments.get("first", arguments.get("last"))
        size: object = None
        if isinstance(value, IntValueNode):
            size = int(value.value)
        elif isinstance(value, VariableNode):
            name = value.name.value
            size = self.variables.get(name, self.variable_defaults.get(name))
        if not isinstance(size, int) or isinstance(size, bool):
            return DEFAULT_PAGE_SIZE
        return max(0, min(size, MAX_PAGE_SIZE))

    def selections(
        self, selection_set: SelectionSetNode, parent: GraphQLNamedType
    ) -> Iterator[tuple[FieldNode, GraphQLNamedType]]:
        """The fields of a selection set with the type each is selected on, fragments flattened (every
        branch of a fragment on an abstract type counts: an upper bound). Fragment cycles are refused by
        validation, which has run."""
        for selection in selection_set.selections:
            if isinstance(selection, FieldNode):
                yield selection, parent
            elif isinstance(selection, InlineFragmentNode):
                condition = selection.type_condition
                on = self.schema.get_type(condition.name.value) if condition else parent
                yield from self.selections(selection.selection_set, on or parent)
            elif isinstance(selection, FragmentSpreadNode):
                fragment = self.fragments.get(selection.name.value)
                if fragment is not None:
                    on = self.schema.get_type(fragment.type_condition.name.value)
                    yield from self.selections(fragment.selection_set, on or parent)

    def cost(
        self,
        selection_set: SelectionSetNode,
        parent: GraphQLNamedType,
        page: int | None,
        weight: int = FIELD_COST,
    ) -> int:
        """What a selection set costs. `page` is the page size of the connection it is selected on: its
        list fields (`edges`, `nodes`) repeat their selection that many times."""
        total = 0
        for node, on in self.selections(selection_set, parent):
            name = node.name.value
            if name == "__typename":
                continue
            if name in ("__schema", "__type"):
                total += INTROSPECTION_COST
                continue
            definition: GraphQLField | None = getattr(on, "fields", {}).get(name)
            if definition is None:  # not after validation; charged as a plain field
                total += weight
                continue
            is_list = is_list_type(get_nullable_type(definition.type))
            times = page if is_list and page is not None else 1
            child_page = None
            if "first" in definition.args or "last" in definition.args:
                size = self.page_size(node)
                if is_list:  # a paginated plain list: its own selection repeats
                    times *= size
                else:  # a connection: its edges repeat
                    child_page = size
            children = 0
            if node.selection_set is not None:
                children = self.cost(node.selection_set, get_named_type(definition.type), child_page)
            total += times * (weight + children)
        return total


def operation_cost(
    schema: GraphQLSchema,
    document: DocumentNode,
    operation_name: str | None = None,
    variables: Mapping[str, Any] | None = None,
) -> int:
    """The cost of the operation `operation_name` of a validated document (docs/api.md, "Rate limits")."""
    operation = get_operation_ast(document, operation_name)
    if operation is None:
        return OPERATION_COST
    root = _root_type(schema, operation)
    if root is None:
        return OPERATION_COST
    walk = _Walk(
        schema=schema,
        fragments={
            definition.name.value: definition
            for definition in document.definitions
            if isinstance(definition, FragmentDefinitionNode)
        },
        variables=variables or {},
        variable_defaults={
            definition.variable.name.value: int(definition.default_value.value)
            if isinstance(definition.default_value, IntValueNode)
            else None
            for definition in operation.variable_definitions or ()
        },
    )
    weight = MUTATION_FIELD_COST if operation.operation == OperationType.MUTATION else FIELD_COST
    return OPERATION_COST + walk.cost(operation.selection_set, root, None, weight)


def _root_type(schema: GraphQLSchema, operation: OperationDefinitionNode) -> GraphQLNamedType | None:
    if operation.operation == OperationType.MUTATION:
        return schema.mutation_type
    if operation.operation == OperationType.SUBSCRIPTION:
        return schema.subscription_type
    return schema.query_type


# Budgets


@dataclass(frozen=True, slots=True)
class RateLimitPolicy:
    user_per_minute: int = DEFAULT_USER_PER_MINUTE  # staff, family, supervisors, operators: per subject
    client_per_minute: int = DEFAULT_CLIENT_PER_MINUTE  # integrators: per OAuth2 client
    window_seconds: int = 60  # a bucket holds this much of the budget and refills over it

    @classmethod
    def from_settings(cls, settings: "Settings") -> "RateLimitPolicy":
        return cls(settings.rate_limit_user_per_minute, settings.rate_limit_client_per_minute)


@dataclass(frozen=True, slots=True)
class Bucket:
    key: str  # without the limiter's prefix
    capacity: int  # the budget per window


def bucket_for(principal: Principal, policy: RateLimitPolicy) -> Bucket:
    """Integrators share their client's bucket (all its tokens alike); everyone else has their own."""
    if principal.kind == PrincipalKind.INTEGRATOR and principal.client_id:
        return Bucket(f"client:{principal.client_id}", policy.client_per_minute)
    return Bucket(f"subject:{principal.subject}", policy.user_per_minute)


@dataclass(frozen=True, slots=True)
class Allowed:
    cost: int
    remaining: int  # whole units left in the bucket after this operation


@dataclass(frozen=True, slots=True)
class Refused:
    cost: int
    retry_after_seconds: int  # until the bucket holds `cost` again


@dataclass(frozen=True, slots=True)
class TooCostly:
    cost: int
    capacity: int  # the whole bucket: the operation could never run


# KEYS: the buckets of one batch (a key may come twice: the charges apply in order). ARGV: now in ms ('' for
# Redis's own clock), window in ms, then capacity and cost of each key in turn.
# A level is kept in units × ms (an integer: exact in Lua's doubles up to capacity × window < 2^53), so a
# refill of `capacity` per window is `capacity` per ms. A missing bucket is full; a full bucket expires.
# Returns, per key, {1, units left} (taken) or {0, ms until the cost is available} (refused, nothing
# written). Redis Cluster would need the keys of one call in one slot (a hash tag); we run no cluster.
_TAKE = """
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local window = tonumber(ARGV[2])
local results = {}
for i, key in ipairs(KEYS) do
  local capacity, cost = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  local full, need = capacity * window, cost * window
  local state = redis.call('HMGET', key, 'level', 'at')
  local level, at = tonumber(state[1]), tonumber(state[2])
  if not level or not at then level, at = full, now end
  if now > at then
    level = math.min(full, level + (now - at) * capacity)
    at = now
  end
  if level < need then
    results[i] = {0, math.ceil((need - level) / capacity)}
  else
    level = level - need
    redis.call('HSET', key, 'level', string.format('%d', level), 'at', string.format('%d', at))
    redis.call('PEXPIRE', key, math.ceil((full - level) / capacity) + 1000)
    results[i] = {1, math.floor(level / window)}
  end
end
return results
"""


@dataclass(slots=True)
class _Charge:
    key: str
    capacity: int
    cost: int
    answer: "asyncio.Future[tuple[int, int]]"


class RateLimiter:
    """Token buckets in Redis, one per principal or integrator client (see the module docstring).

    One Redis call at a time per process: charges that arrive while a call is out wait for the next one,
    which carries them all (one script run, several buckets). A round trip through redis-py costs about
    0.14 ms of CPU (measured on the benchmark machine), a good part of a small query's API time; under
    load this spends it once per batch instead of once per operation, and adds no wait when idle.
    """

    def __init__(
        self,
        redis: Redis,
        policy: RateLimitPolicy = RateLimitPolicy(),
        *,
        prefix: str = "yiyang:ratelimit",
        clock: Callable[[], float] | None = None,  # None: Redis's clock, the same for every API process
    ) -> None:
        self.redis = redis
        self.policy = policy
        self.prefix = prefix
        self.clock = clock
        self._take = redis.register_script(_TAKE)
        self._waiting: list[_Charge] = []
        self._sender: asyncio.Task[None] | None = None

    async def charge(self, principal: Principal, cost: int) -> Allowed | Refused | TooCostly:
        """Take `cost` from the principal's bucket, or say why not."""
        bucket = bucket_for(principal, self.policy)
        if cost > bucket.capacity:
            return TooCostly(cost, bucket.capacity)
        charge = _Charge(
            f"{self.prefix}:{bucket.key}", bucket.capacity, cost, asyncio.get_running_loop().create_future()
        )
        self._waiting.append(charge)
        if self._sender is None:
            self._sender = asyncio.create_task(self._send())
        taken, amount = await charge.answer
        if taken:
            return Allowed(cost, int(amount))
        return Refused(cost, max(1, math.ceil(int(amount) / 1000)))

    async def _send(self) -> None:
        batch: list[_Charge] = []
        try:
            while self._waiting:
                batch, self._waiting = self._waiting, []
                now = "" if self.clock is None else str(int(self.clock() * 1000))
                arguments: list[object] = [now, self.policy.window_seconds * 1000]
                for charge in batch:
                    arguments += [charge.capacity, charge.cost]
                try:
                    answers = await self._take(keys=[charge.key for charge in batch], args=arguments)
                except Exception as failure:  # every waiting operation learns it (RedisError: fail open)
                    for charge in batch:
                        if not charge.answer.done():
                            charge.answer.set_exception(failure)
                    continue
                for charge, (taken, amount) in zip(batch, answers, strict=True):
                    if not charge.answer.done():  # its request may have gone meanwhile
                        charge.answer.set_result((int(taken), int(amount)))
        except BaseException as stopped:  # cancelled (the loop is closing): nobody may wait forever
            for charge in (*batch, *self._waiting):
                if not charge.answer.done():
                    charge.answer.set_exception(stopped)
            self._waiting = []
            raise
        finally:
            self._sender = None


# The schema extension


def _refusal(problem: DomainError, **extensions: Any) -> GraphQLExecutionResult:
    error = GraphQLError(
        str(problem), original_error=problem, extensions={"code": problem.code, **extensions}
    )
    return GraphQLExecutionResult(data=None, errors=[error])


class RateLimits(SchemaExtension):
    """Charges each operation its cost before execution; a refused operation is not executed at all.

    Runs after validation (strawberry reaches `on_execute` only with a valid document). A refusal becomes
    the operation's result: `errors[0].extensions` holds `code` (RATE_LIMITED) and `retryAfter`, or, for
    an operation over a whole bucket, BAD_USER_INPUT with `cost` and `budget`; `data` is null.
    """

    async def on_execute(self) -> AsyncIterator[None]:  # type: ignore[override]
        context = self.execution_context
        request = context.context
        limiter: RateLimiter | None = getattr(request, "rate_limiter", None)
        principal: Principal | None = getattr(request, "principal", None)
        if limiter is not None and principal is not None and context.graphql_document is not None:
            cost = operation_cost(
                context.schema._schema, context.graphql_document, context.operation_name, context.variables
            )
            try:
                outcome = await limiter.charge(principal, cost)
            except RedisError:
                log.warning("rate limit not applied: Redis failed", exc_info=True)
                outcome = Allowed(cost, 0)
            if isinstance(outcome, Refused):
                refusal = RateLimited(
                    TOO_MANY_OPERATIONS,
                    retry_after_seconds=outcome.retry_after_seconds,
                    seconds=outcome.retry_after_seconds,
                )
                context.result = _refusal(refusal, retryAfter=outcome.retry_after_seconds)
            elif isinstance(outcome, TooCostly):
                problem = InvalidInput(TOO_COSTLY, cost=outcome.cost, budget=outcome.capacity)
                context.result = _refusal(problem, cost=outcome.cost, budget=outcome.capacity)
        yield


def rate_limited_retry_after(result: object) -> int | None:
    """The `Retry-After` seconds of a result refused by the rate limit (for the HTTP 429), else None."""
    for error in getattr(result, "errors", None) or ():
        if isinstance(error.original_error, RateLimited):
            return error.original_error.retry_after_seconds
    return None

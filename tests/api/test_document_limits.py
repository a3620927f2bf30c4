"""One document-limits extension behaves as the four strawberry extensions it replaced, caches included."""

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import strawberry
from strawberry.extensions import AddValidationRules, MaxTokensLimiter, ParserCache, ValidationCache

import schema.document_limits as document_limits
from schema.document_limits import DocumentLimits, DocumentLimitsAndCache
from schema.execution import YiyangExecutionContext
from schema.rate_limits import RateLimits
from schema.root import (
    LIMIT_RULES,
    MAX_ALIASES,
    MAX_DEPTH,
    MAX_TOKENS,
    Mutation,
    Query,
    RequestDocumentLimits,
    YiyangSchema,
    build_schema,
)


def four_extension_schema() -> strawberry.Schema:
    """The configuration this extension replaced, to compare against."""
    return YiyangSchema(
        query=Query,
        mutation=Mutation,
        execution_context_class=YiyangExecutionContext,
        extensions=[
            lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
            lambda: AddValidationRules(LIMIT_RULES),
            lambda: ParserCache(maxsize=512),
            lambda: ValidationCache(maxsize=512),
        ],
    )


def nested(depth: int) -> str:
    """Selections nested `depth` deep (the depth rule counts them whether or not the fields exist)."""
    return "{" + " a {" * depth + " b" + " }" * depth + " }"


def unique(query: str) -> str:
    """The same operation under a text no earlier test has put in the shared caches."""
    return f"# {uuid.uuid4()}\n{query}"


TOO_MANY_TOKENS = "{" + " __typename" * MAX_TOKENS + " }"
TOO_DEEP = nested(MAX_DEPTH + 1)
TOO_MANY_ALIASES = "{ " + " ".join(f"a{i}: __typename" for i in range(MAX_ALIASES + 1)) + " }"
CASES = {
    "too many tokens": (
        TOO_MANY_TOKENS,
        f"Syntax Error: Document contains more than {MAX_TOKENS} tokens. Parsing aborted.",
    ),
    "too deep": (TOO_DEEP, f"'anonymous' exceeds maximum operation depth of {MAX_DEPTH}"),
    "too many aliases": (TOO_MANY_ALIASES, f"{MAX_ALIASES + 1} aliases found. Allowed: {MAX_ALIASES}"),
    "syntax error": ("{ __typename", "Syntax Error: Expected Name, found <EOF>."),
    "invalid": (
        "query A { __typename } query A { __typename }",
        "There can be only one operation named 'A'.",
    ),
}


def described(result: Any) -> list[tuple[str, Any, Any]]:
    return [(error.message, error.locations, error.path) for error in result.errors or []]


@pytest.mark.parametrize("name", CASES)
def test_refusals_match_the_four_extensions(name: str) -> None:
    query, message = CASES[name]
    new = build_schema().execute_sync(query)
    old = four_extension_schema().execute_sync(query)
    assert new.data is None
    assert message in [error.message for error in new.errors or []]
    assert described(new) == described(old)
    # Asked again, now that whatever could be cached is: the same answer.
    assert described(build_schema().execute_sync(query)) == described(old)


async def test_refusals_match_when_executed_async() -> None:
    schema, old = build_schema(), four_extension_schema()
    for query, _ in CASES.values():
        assert described(await schema.execute(query)) == described(await old.execute(query))


async def test_the_limits_are_the_boundaries() -> None:
    schema = build_schema()  # executed asynchronously: the rate limiter's hook is async
    at_the_limit = await schema.execute("{" + " __typename" * (MAX_TOKENS - 2) + " }")  # braces count
    assert not any("Syntax Error" in error.message for error in at_the_limit.errors or [])
    aliases = "{ " + " ".join(f"a{i}: __typename" for i in range(MAX_ALIASES)) + " }"
    assert (await schema.execute(aliases)).errors is None
    deep_enough = [error.message for error in (await schema.execute(nested(MAX_DEPTH))).errors or []]
    assert not any("maximum operation depth" in message for message in deep_enough)
    too_deep = [error.message for error in (await schema.execute(nested(MAX_DEPTH + 1))).errors or []]
    assert f"'anonymous' exceeds maximum operation depth of {MAX_DEPTH}" in too_deep


async def test_a_valid_query_executes() -> None:
    result = await build_schema().execute("{ __typename }")
    assert result.errors is None
    assert result.data == {"__typename": "Query"}


class Calls:
    """Wraps a function and counts the calls that reach it."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function = function
        self.count = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.count += 1
        return self.function(*args, **kwargs)


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> Calls:
    calls = Calls(document_limits.parse)
    monkeypatch.setattr(document_limits, "parse", calls)
    return calls


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> Calls:
    calls = Calls(document_limits.validate_document)
    monkeypatch.setattr(document_limits, "validate_document", calls)
    return calls


@pytest.fixture
def strawberry_fallbacks(monkeypatch: pytest.MonkeyPatch) -> list[Calls]:
    """strawberry's own parse and validate, which must not run when the extension has done the work."""
    import strawberry.schema.schema as strawberry_schema

    calls = [Calls(strawberry_schema.parse), Calls(strawberry_schema.validate_document)]
    monkeypatch.setattr(strawberry_schema, "parse", calls[0])
    monkeypatch.setattr(strawberry_schema, "validate_document", calls[1])
    return calls


async def test_the_same_query_is_parsed_and_validated_once(
    parses: Calls, validations: Calls, strawberry_fallbacks: list[Calls]
) -> None:
    query = unique("{ __typename }")
    schema = build_schema()
    for _ in range(3):
        assert (await schema.execute(query)).data == {"__typename": "Query"}
    assert (parses.count, validations.count) == (1, 1)
    assert [calls.count for calls in strawberry_fallbacks] == [0, 0]
    # Every schema built shares the parse cache; validation results are per schema, as with
    # ParserCache and ValidationCache.
    assert (await build_schema().execute(query)).data == {"__typename": "Query"}
    assert (parses.count, validations.count) == (1, 2)


def test_invalid_documents_are_cached_too(parses: Calls, validations: Calls) -> None:
    query = unique(TOO_MANY_ALIASES)
    schema = build_schema()
    first, second = schema.execute_sync(query), schema.execute_sync(query)
    assert (parses.count, validations.count) == (1, 1)
    assert described(first) == described(second)
    assert first.errors is not second.errors  # each request gets its own list of the cached errors


def test_unparsable_documents_are_not_cached(parses: Calls, validations: Calls) -> None:
    query = unique(TOO_MANY_TOKENS)
    schema = build_schema()
    schema.execute_sync(query)
    schema.execute_sync(query)
    assert (parses.count, validations.count) == (2, 0)


def test_the_caches_are_bounded_lrus(parses: Calls, validations: Calls) -> None:
    class TwoDocuments(DocumentLimitsAndCache):
        limits = DocumentLimits(max_tokens=MAX_TOKENS, rules=LIMIT_RULES, cache_size=2)

    schema = YiyangSchema(query=Query, extensions=[TwoDocuments])
    first, second, third = (f"{{ {alias}: __typename }}" for alias in ("a", "b", "c"))
    for query in (first, second, first, third):  # `third` evicts `second`, the least recently used
        assert schema.execute_sync(query).errors is None
    assert (parses.count, validations.count) == (3, 3)
    assert schema.execute_sync(first).errors is None
    assert (parses.count, validations.count) == (3, 3)
    assert schema.execute_sync(second).errors is None
    assert (parses.count, validations.count) == (4, 4)
    assert TwoDocuments.limits.parse.cache_info().currsize == 2
    assert TwoDocuments.limits.validate.cache_info().currsize == 2
    assert RequestDocumentLimits.limits.parse.cache_info().maxsize == 512
    assert RequestDocumentLimits.limits.validate.cache_info().maxsize == 512


def test_the_token_limit_is_part_of_the_parse_cache_key() -> None:
    limits = DocumentLimits(max_tokens=MAX_TOKENS, rules=(), cache_size=8)
    query = "{ a b c }"
    limits.parse(query, MAX_TOKENS)
    with pytest.raises(Exception, match="more than 3 tokens"):
        limits.parse(query, 3)


async def test_each_request_has_its_own_extension_instance() -> None:
    schema = build_schema()
    assert schema.extensions == (RequestDocumentLimits, RateLimits)
    first, second = schema.get_extensions()[0], schema.get_extensions()[0]
    assert isinstance(first, RequestDocumentLimits) and first is not second
    queries = [f"{{ q{i}: __typename }}" if i % 2 else TOO_MANY_ALIASES for i in range(40)]
    results = await asyncio.gather(*(schema.execute(query) for query in queries))
    for i, result in enumerate(results):
        if i % 2:
            assert result.data == {f"q{i}": "Query"} and result.errors is None
        else:
            assert described(result) == [(CASES["too many aliases"][1], None, None)]

"""The token limit, the extra validation rules and the parse and validation caches as one schema extension.

strawberry drives every registered extension through every lifecycle step of every request, building a
context manager per hook and an exit stack per step. These four jobs used to be four extensions
(MaxTokensLimiter, AddValidationRules, ParserCache, ValidationCache); as one, that machinery runs once.
The errors a client sees are the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import lru_cache
from typing import TYPE_CHECKING, ClassVar

from graphql import ASTValidationRule, DocumentNode, GraphQLError, GraphQLSchema, parse
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import validate_document

if TYPE_CHECKING:
    from functools import _lru_cache_wrapper

Rules = tuple[type[ASTValidationRule], ...]


class _SameDocument:
    """A cache key that is a document's identity.

    A DocumentNode hashes and compares by walking its whole tree. The documents validated here come from
    the parse cache, so a repeated query arrives as the very same object; while cached, the key keeps
    that object alive, so its id cannot be reused.
    """

    __slots__ = ("document",)

    def __init__(self, document: DocumentNode) -> None:
        self.document = document

    def __hash__(self) -> int:
        return id(self.document)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _SameDocument) and other.document is self.document


def _parse(query: str, max_tokens: int) -> DocumentNode:
    # What strawberry does once MaxTokensLimiter has set parse_options["max_tokens"].
    return parse(query, max_tokens=max_tokens)


def _validate(schema: GraphQLSchema, document: _SameDocument, rules: Rules) -> list[GraphQLError]:
    # strawberry's own validation (it appends its MaybeNull and OneOf rules), as ValidationCache runs it.
    return validate_document(schema, document.document, rules)


class DocumentLimits:
    """The limits every document must meet, and the caches they share across requests and schemas."""

    __slots__ = ("max_tokens", "parse", "rules", "validate")

    def __init__(self, *, max_tokens: int, rules: Iterable[type[ASTValidationRule]], cache_size: int) -> None:
        self.max_tokens = max_tokens
        self.rules: Rules = tuple(rules)
        # Bounded LRU caches; a failed parse raises and is not cached, as with ParserCache.
        self.parse: _lru_cache_wrapper[DocumentNode] = lru_cache(maxsize=cache_size)(_parse)
        self.validate: _lru_cache_wrapper[list[GraphQLError]] = lru_cache(maxsize=cache_size)(_validate)


class DocumentLimitsAndCache(SchemaExtension):
    """Parses with the token limit and validates with the extra rules, each through its cache.

    Subclass it with ``limits`` set and pass the subclass itself to ``Schema(extensions=[...])``:
    strawberry then constructs a bare instance per request, and everything shared lives in ``limits``.
    """

    limits: ClassVar[DocumentLimits]

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        limits = self.limits
        context.parse_options["max_tokens"] = limits.max_tokens
        if context.query:  # strawberry refuses a request without one before this step
            # A syntax error, or too many tokens, propagates as the GraphQLError that parse raised.
            context.graphql_document = limits.parse(context.query, limits.max_tokens)
        yield

    def on_validate(self) -> Iterator[None]:
        context = self.execution_context
        document = context.graphql_document
        if document is not None:  # always set by now: parsing failures end the request earlier
            rules = context.validation_rules + self.limits.rules
            context.validation_rules = rules
            # Setting the errors, even none, tells strawberry that validation has run. Each request
            # gets its own list: the cached one is shared.
            context.pre_execution_errors = list(
                self.limits.validate(context.schema._schema, _SameDocument(document), rules)
            )
        yield

"""The GraphQL schema: one Query and one Mutation merged from the domain modules."""

import logging

import strawberry
from graphql import GraphQLError
from strawberry.extensions import MaxAliasesLimiter, MaxTokensLimiter, QueryDepthLimiter
from strawberry.types import ExecutionContext

from schema.institutions import InstitutionMutations, InstitutionQueries
from schema.residents import ResidentMutations, ResidentQueries
from tenants.errors import DomainError

MAX_DEPTH = 10
MAX_TOKENS = 2_000
MAX_ALIASES = 30

log = logging.getLogger("yiyang.graphql")


@strawberry.type
class Query(InstitutionQueries, ResidentQueries):
    pass


@strawberry.type
class Mutation(InstitutionMutations, ResidentMutations):
    pass


def is_expected(error: GraphQLError) -> bool:
    """Errors the client caused (bad query, bad input, no access) as opposed to our own faults.

    Errors without a path arise before execution (parsing, validation, variable coercion): the request
    was at fault. Inside execution only our domain errors and GraphQL's own are expected.
    """
    return error.path is None or isinstance(error.original_error, (DomainError, GraphQLError, type(None)))


class YiyangSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Only our own faults deserve a stack trace in the log; the client sees a masked message.
        for error in errors:
            if not is_expected(error):
                log.error("unexpected error in %s", error.path, exc_info=error.original_error)


def build_schema() -> strawberry.Schema:
    return YiyangSchema(
        query=Query,
        mutation=Mutation,
        extensions=[
            lambda: QueryDepthLimiter(max_depth=MAX_DEPTH),
            lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
            lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
        ],
    )

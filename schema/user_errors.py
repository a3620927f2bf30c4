"""Mutation payloads report input problems as `userErrors`; access problems stay GraphQL errors."""

from enum import Enum

import strawberry

from schema.i18n import translate
from tenants.errors import Conflict, DomainError, InvalidInput, ValidationFailed


@strawberry.enum
class UserErrorCode(Enum):
    BAD_USER_INPUT = "BAD_USER_INPUT"
    CONFLICT = "CONFLICT"


@strawberry.type
class UserError:
    field: str | None
    message: str
    code: UserErrorCode


USER_ERROR_TYPES = (InvalidInput, Conflict)


def user_errors(error: DomainError, locale: str) -> list[UserError]:
    problems = error.problems if isinstance(error, ValidationFailed) else [error]
    return [
        UserError(
            field=problem.field,
            message=translate(problem.message, locale, problem.params),
            code=UserErrorCode(problem.code),
        )
        for problem in problems
    ]

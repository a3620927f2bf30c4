"""Mutation payloads report input problems as `userErrors`; access problems stay GraphQL errors."""

from enum import Enum

import strawberry

from schema.context import YiyangInfo
from schema.i18n import translate
from schema.resident_access import operation_field
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


def user_errors(info: YiyangInfo, error: DomainError) -> list[UserError]:
    """The problems of `error`, in the caller's language. The mutation did nothing: its permitted
    decisions go on the audit trail as failed, with the problem's code."""
    problems = error.problems if isinstance(error, ValidationFailed) else [error]
    info.context.audit.fail(operation_field(info), problems[0].code.lower() if problems else "invalid")
    locale = info.context.locale
    return [
        UserError(
            field=problem.field,
            message=translate(problem.message, locale, problem.params),
            code=UserErrorCode(problem.code),
        )
        for problem in problems
    ]

"""Errors the domain raises on purpose, each with the API error code it maps to.

Messages are English msgids of the message catalogs (locale/); the API translates them for the reader,
Simplified Chinese first. `params` fill the msgid's `{placeholders}`.
"""

from collections.abc import Sequence
from typing import ClassVar


class DomainError(Exception):
    code: ClassVar[str] = "BAD_USER_INPUT"
    # A finer reason a client can tell apart, rendered as extensions.reason (e.g. CONSENT_REQUIRED).
    reason: ClassVar[str | None] = None

    def __init__(self, message: str, *, field: str | None = None, **params: object) -> None:
        super().__init__(message.format(**params) if params else message)
        self.message = message
        self.field = field
        self.params = params


class InvalidInput(DomainError):
    code = "BAD_USER_INPUT"


class NotFound(DomainError):
    code = "NOT_FOUND"


class Erased(DomainError):
    """The personal data asked for was erased (crypto-shredding: its data key destroyed). What is not
    personal (placement, care level, dates) may still be read."""

    code = "GONE"


class Conflict(DomainError):
    code = "CONFLICT"


class Forbidden(DomainError):
    code = "FORBIDDEN"


class ConsentRequired(Forbidden):
    """Refused because no active consent allows this use of a resident's data (compliance/consent.py)."""

    reason = "CONSENT_REQUIRED"


class ValidationFailed(InvalidInput):
    """Several input problems at once, reported together as mutation userErrors."""

    def __init__(self, problems: list[InvalidInput]) -> None:
        super().__init__(problems[0].message, field=problems[0].field, **problems[0].params)
        self.problems = problems


def raise_if_any(problems: Sequence[InvalidInput]) -> None:
    """Report every problem found in an input at once (ValidationFailed), or nothing."""
    if problems:
        raise ValidationFailed(list(problems))


class Unauthenticated(DomainError):
    code = "UNAUTHENTICATED"


class RateLimited(DomainError):
    """The caller spent its budget of GraphQL operations: nothing was executed; retry after a while."""

    code = "RATE_LIMITED"

    def __init__(self, message: str, *, retry_after_seconds: int, **params: object) -> None:
        super().__init__(message, **params)
        self.retry_after_seconds = retry_after_seconds

"""Dead letters of the background jobs through GraphQL (workers/dead_letters.py): `deadLetters`, newest
first, and `retryDeadLetter`.

Platform operators see and retry every letter; an institution's admin those that failed in the acting
institution (`dead_letter.view`, `dead_letter.retry`). A letter of another institution, or one of the
platform's own (no institution), is NOT_FOUND to an admin, as any object of another tenant. A letter
holds ids, times and an error's class and short message, no personal data. Retrying enqueues the job
again on its queue under the id `<queue>:dead-letter:<id>` and marks the letter retried, once: a second retry
is a `userErrors` CONFLICT.
"""

import json
from datetime import UTC, datetime

import strawberry
from arq.connections import ArqRedis
from tortoise.transactions import in_transaction

from compliance.policy import Action, Place, require
from compliance.principals import PrincipalKind
from schema.context import YiyangInfo
from schema.ids import decode_id, encode_id
from schema.pagination import Connection, connection, page_request
from schema.user_errors import USER_ERROR_TYPES, UserError, user_errors
from tenants.errors import NotFound
from workers import dead_letters as letters

PLATFORM = 0  # the institution part of the id of a letter that belongs to no institution


@strawberry.type(name="DeadLetter", description="A background job that failed for good.")
class DeadLetterType:
    id: strawberry.ID
    job_name: str = strawberry.field(description="The job, e.g. sweep_due.")
    job_id: str = strawberry.field(description="The arq job id of its last failure.")
    queue_name: str
    arguments: str = strawberry.field(description="The job's arguments as JSON: ids and times only.")
    institution_id: strawberry.ID | None = strawberry.field(
        description="The institution it failed in (an Institution id), if any."
    )
    error_class: str
    error_message: str = strawberry.field(description="Short, without data: the worker's log has details.")
    transient: bool = strawberry.field(description="Whether the failure looked temporary (a connection).")
    tries: int
    first_failed_at: datetime
    last_failed_at: datetime
    retried_at: datetime | None
    retried_by: str | None
    retry_job_id: str | None

    @classmethod
    def of(cls, letter: letters.DeadLetter) -> "DeadLetterType":
        return cls(
            id=strawberry.ID(encode_id("DeadLetter", letter.institution_id or PLATFORM, letter.id)),
            job_name=letter.job_name,
            job_id=letter.job_id,
            queue_name=letter.queue_name,
            arguments=json.dumps(letter.args, sort_keys=True),
            institution_id=(
                strawberry.ID(encode_id("Institution", letter.institution_id))
                if letter.institution_id is not None
                else None
            ),
            error_class=letter.error_class,
            error_message=letter.error_message,
            transient=letter.transient,
            tries=letter.tries,
            first_failed_at=letter.first_failed_at,
            last_failed_at=letter.last_failed_at,
            retried_at=letter.retried_at,
            retried_by=letter.retried_by,
            retry_job_id=letter.retry_job_id,
        )


def _scope(info: YiyangInfo) -> int | None:
    """None: every letter (an operator); else the acting institution's."""
    principal = require(info.context.principal, Action.DEAD_LETTER_VIEW)
    if principal.kind is PrincipalKind.OPERATOR:
        return None
    return info.context.require_tenant().institution_id


@strawberry.type
class WorkerQueries:
    @strawberry.field(
        description="Background jobs that failed for good, newest first: all of them for platform "
        "operators, the acting institution's for its admin."
    )
    async def dead_letters(
        self, info: YiyangInfo, open_only: bool = True, first: int | None = None, after: str | None = None
    ) -> Connection[DeadLetterType]:
        institution_id = _scope(info)
        page = page_request(first, after)
        rows = await letters.page(
            institution_id=institution_id, open_only=open_only, after_id=page.after_key, limit=page.size + 1
        )

        async def count_total() -> int:
            return await letters.count(institution_id=institution_id, open_only=open_only)

        return connection(rows, page, key=lambda row: row.id, node=DeadLetterType.of, count_total=count_total)


@strawberry.input
class RetryDeadLetterInput:
    id: strawberry.ID = strawberry.field(description="A DeadLetter id.")


@strawberry.type
class RetryDeadLetterPayload:
    dead_letter: DeadLetterType | None
    user_errors: list[UserError]


def _queue(info: YiyangInfo) -> ArqRedis:
    """The app's Redis (the rate limiter holds it) as an arq pool, to enqueue with."""
    limiter = info.context.rate_limiter
    if limiter is None:
        raise RuntimeError("no Redis in the request context")
    redis = limiter.redis
    return redis if isinstance(redis, ArqRedis) else ArqRedis(connection_pool=redis.connection_pool)


@strawberry.type
class WorkerMutations:
    @strawberry.mutation(description="Run a dead letter's job again (once per letter).")
    async def retry_dead_letter(
        self, info: YiyangInfo, input: RetryDeadLetterInput
    ) -> RetryDeadLetterPayload:
        institution_id, letter_id = decode_id("DeadLetter", input.id, 2)
        principal = require(
            info.context.principal, Action.DEAD_LETTER_RETRY, institution=Place(institution_id)
        )
        found = await letters.get(letter_id)
        if (found.institution_id or PLATFORM) != institution_id:
            raise NotFound("Not found.")
        try:
            async with in_transaction("default"):
                claimed = await letters.claim_retry(letter_id, by=principal.subject, now=datetime.now(UTC))
                # In the claim's transaction: if Redis refuses, the letter stays open.
                await _queue(info).enqueue_job(
                    claimed.job_name,
                    _job_id=letters.retry_job_id(claimed.queue_name, claimed.id),
                    _queue_name=claimed.queue_name,
                    **letters.restored_args(claimed.args),
                )
        except USER_ERROR_TYPES as error:
            return RetryDeadLetterPayload(dead_letter=None, user_errors=user_errors(info, error))
        return RetryDeadLetterPayload(dead_letter=DeadLetterType.of(claimed), user_errors=[])

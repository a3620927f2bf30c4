"""What every job of the workers runs inside (`durable`): transient failures retried with exponential
backoff through arq's `Retry`, anything else (and the last try of a transient one) written to the
dead-letter table, and the job's outcome and duration counted for `/metrics` (workers/metrics.py).

Transient: the connection to PostgreSQL, Redis or the mail server failed, timed out or was refused, the
server is shutting down or has too many connections, a serialization failure or a deadlock. What is
transient is decided on the exception and the chain of its causes (tortoise wraps asyncpg's errors).
Permanent: everything else (a bug, bad data): trying again would fail the same way, so it goes to the
dead-letter table at once.

Try n (arq's `job_try`, which counts a run cut short by a crash too) waits `backoff(n)` before try n+1:
2, 4, 8, 16 … seconds for the short queue, capped; after `max_tries` the job is a dead letter.
"""

import asyncio
import functools
import inspect
import logging
import smtplib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import asyncpg
import redis.exceptions
from arq import Retry
from arq.worker import Function, func
from tortoise.exceptions import DBConnectionError, OperationalError, TransactionManagementError

from care.notifications import MailError
from workers import dead_letters
from workers import metrics as worker_metrics
from workers.queues import JOB_QUEUES, queue_of

log = logging.getLogger(__name__)

T = TypeVar("T")

TRANSIENT_TYPES: tuple[type[BaseException], ...] = (
    ConnectionError,  # refused, reset, aborted (OSError subclasses)
    TimeoutError,
    asyncio.TimeoutError,
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,  # the connection was closed under the query
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.CrashShutdownError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.DeadlockDetectedError,
    DBConnectionError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    smtplib.SMTPServerDisconnected,
    smtplib.SMTPConnectError,
    MailError,
)
# What the fan-out reports of a failed institution: the class's name only.
TRANSIENT_NAMES = frozenset(kind.__name__ for kind in TRANSIENT_TYPES) | {"OSError"}


def is_transient(error: BaseException) -> bool:
    seen: BaseException | None = error
    depth = 0
    while seen is not None and depth < 10:
        if isinstance(seen, TRANSIENT_TYPES):
            return True
        if isinstance(seen, OSError) and not isinstance(seen, FileNotFoundError | PermissionError):
            return True  # sockets: unreachable network, no route to host
        if isinstance(seen, OperationalError | TransactionManagementError) and _connection_words(seen):
            return True
        seen = seen.__cause__ or seen.__context__
        depth += 1
    return False


def _connection_words(error: BaseException) -> bool:
    text = str(error).lower()
    return any(word in text for word in ("connection", "could not connect", "closed", "terminat"))


def backoff(job_try: int, base: float, cap: float) -> float:
    """Seconds to wait after try `job_try` failed: base, 2·base, 4·base … at most `cap`."""
    return min(base * 2 ** max(job_try - 1, 0), cap)


@dataclass(frozen=True, slots=True)
class JobPolicy:
    max_tries: int = 5
    backoff_base: float = 2.0
    backoff_cap: float = 60.0
    periodic: bool = False  # a cron job: one letter per job name, retried with fresh arguments
    timeout: float | None = None


def _now() -> datetime:
    return datetime.now(UTC)


async def _count(ctx: dict[str, Any], job: str, outcome: str, *, seconds: float | None = None) -> None:
    redis = ctx.get("redis")
    if redis is None:  # called directly (a test, the CLI): nothing to count in
        return
    namespace = ctx.get("metrics_namespace") or worker_metrics.namespace_from_environ()
    try:
        await worker_metrics.record(redis, namespace, job, outcome, seconds=seconds)
    except Exception:  # metrics must never fail a job
        log.warning("could not record the %s metric of %s", outcome, job, exc_info=True)


async def _dead_letter(
    ctx: dict[str, Any], name: str, policy: JobPolicy, kwargs: dict[str, Any], error: BaseException
) -> None:
    job_id = str(ctx.get("job_id") or f"{name}:direct")
    try:
        args = dead_letters.safe_args(kwargs)
    except ValueError:
        args = {}
    try:
        await dead_letters.record(
            job_name=name,
            job_id=job_id,
            queue_name=queue_of_ctx(ctx, name),
            letter_key=name if policy.periodic else job_id,
            args=args,
            institution_id=None,
            error=error,
            transient=is_transient(error),
            tries=int(ctx.get("job_try") or 1),
            now=_now(),
        )
    except Exception:  # the database may be what failed: the worker's log keeps the job then
        log.exception("job %s (%s) failed for good and could not be written as a dead letter", job_id, name)
        return
    await _count(ctx, name, "dead_lettered")


def queue_of_ctx(ctx: dict[str, Any], job_name: str) -> str:
    """The queue the job ran on: the worker's (its Redis pool's default queue), else the job's own."""
    redis = ctx.get("redis")
    queue = getattr(redis, "default_queue_name", None)
    if isinstance(queue, str) and queue and queue != "arq:queue":
        return queue
    namespace = ctx.get("metrics_namespace")
    return queue_of(job_name if job_name in JOB_QUEUES else "sweep_due", namespace)


def durable(
    coroutine: Callable[..., Awaitable[T]], policy: JobPolicy = JobPolicy(), *, name: str | None = None
) -> Function:
    """`coroutine` as an arq function with retries, dead letters and metrics. Its arguments are ids and
    times (they go to the dead-letter table as they are, by name)."""
    job_name = name or coroutine.__name__
    signature = inspect.signature(coroutine)

    @functools.wraps(coroutine)
    async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> T:
        given = signature.bind(ctx, *args, **kwargs).arguments
        named = {key: value for key, value in list(given.items())[1:]}  # without ctx
        started = time.monotonic()
        try:
            result = await coroutine(ctx, *args, **kwargs)
        except Retry:
            await _count(ctx, job_name, "retried")
            raise
        except Exception as error:
            job_try = int(ctx.get("job_try") or 1)
            if is_transient(error) and job_try < policy.max_tries:
                delay = backoff(job_try, policy.backoff_base, policy.backoff_cap)
                log.warning(
                    "%s: transient %s on try %s; retrying in %.1f s",
                    job_name,
                    type(error).__name__,
                    job_try,
                    delay,
                )
                await _count(ctx, job_name, "retried")
                raise Retry(defer=timedelta(seconds=delay)) from error
            await _count(ctx, job_name, "failed")
            await _dead_letter(ctx, job_name, policy, named, error)
            raise
        await _count(ctx, job_name, "completed", seconds=time.monotonic() - started)
        return result

    # arq counts a try cut short by a crash or a shutdown too: leave it room, so that the last try is
    # ours to see (and dead-letter) rather than arq's silent "max retries exceeded".
    return func(run, name=job_name, max_tries=policy.max_tries + 3, timeout=policy.timeout)

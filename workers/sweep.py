"""The sweep every minute (docs/workers.md): in every institution, what has come due, then its delivery.

Pass 1, one unit of work per institution (`tenants.fanout.for_each_tenant`, a few institutions at a time):
overdue care tasks escalated (care/tasks.py), SOP steps reminded and missed ones escalated
(care/sops.py), work orders past their SLA escalated (care/work_orders.py). An institution whose unit
fails is swept again at once with each step in a savepoint: a step that fails is undone alone and the
institution's other steps still commit (the first try goes without savepoints: six round trips fewer
per institution, a third of an idle sweep's cost). Every step is
idempotent (a unique key or a "done at" column set once) and writes its notifications to the outbox in
the same unit of work, so a crash anywhere loses nothing and a second run (the next minute's, a retry,
the same minute's under another job id) adds nothing.

Pass 2, after pass 1 committed: the notification outboxes delivered (inbox, e-mail) and the webhook
deliveries sent, a batch per unit of work, institutions with more than a batch drained. Rows are claimed
with `FOR UPDATE SKIP LOCKED` and written with ON CONFLICT DO NOTHING: two sweeps at once deliver each
notification once.

Failures inside one institution (FanOutResult.failures, or a step's): the sweep itself succeeds (the
others were swept) and the next minute's run is the institution's retry. A permanent failure (a bug, bad
data) is written to the dead-letter table at once; a transient one (the database or the mail server
unreachable) after `TENANT_MAX_RUNS` runs in a row (counted in Redis). Either way the institution keeps
being swept every minute; an administrator's retry runs the sweep for that one institution at once.
A failure of the sweep as a whole (the registry cannot be read) is the job's: retried with backoff,
then a dead letter (workers/jobs.py).

The job id of a run is per minute (`job_id`, and arq's cron id `cron:sweep_due:<ms of the minute>`).
"""

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from care.notifications import Mailer, deliver_pending
from care.sops import sweep_sop_steps
from care.tasks import escalate_overdue
from care.webhooks import HttpxSender, Sender, deliver_webhooks, production_environment
from care.work_orders import sweep_sla_breaches
from tenants.context import TenantRef
from tenants.db import default_connection
from tenants.fanout import FanOutResult, for_each_tenant
from tenants.models import Institution, InstitutionStatus
from tenants.registry import tenant_ref
from tenants.unit_of_work import run_in_tenant, savepoint
from workers import dead_letters
from workers import metrics as worker_metrics
from workers.jobs import TRANSIENT_NAMES, is_transient, queue_of_ctx
from workers.notifications import mailer_from_environ

log = logging.getLogger(__name__)
T = TypeVar("T")

JOB_NAME = "sweep_due"
CONCURRENCY = 16  # institutions at a time (the worker's pool has 20 connections)
BATCH = 200  # notifications (and webhook deliveries) per unit of work
TENANT_MAX_RUNS = 5  # transient failures in a row before an institution's failure is a dead letter


def job_id(moment: datetime) -> str:
    """The job id of the sweep of `moment`'s minute (UTC)."""
    return "sweep:" + moment.astimezone(UTC).strftime("%Y%m%dT%H%M")


@dataclass
class TenantSweep:
    escalated_tasks: int = 0
    sop_reminded: int = 0
    sop_escalated: int = 0
    sla_escalated: int = 0
    failed: list[tuple[str, BaseException]] = field(default_factory=list)  # (step, error)


async def _steps(now: datetime, *, careful: bool = False) -> TenantSweep:
    """Pass 1 in the current institution's unit of work. Careful: each step in a savepoint of its own,
    a failure recorded; else (the first try: no savepoint round trips) a failure fails the unit."""
    swept = TenantSweep()

    async def step(name: str, work: Callable[[], Awaitable[T]]) -> T | None:
        if not careful:
            return await work()
        try:
            async with savepoint():
                return await work()
        except Exception as error:  # one step's failure must not undo the others
            log.exception("sweep step %s failed", name)
            swept.failed.append((name, error))
            return None

    escalated = await step("tasks", lambda: escalate_overdue(now))
    swept.escalated_tasks = len(escalated or [])
    sops = await step("sops", lambda: sweep_sop_steps(now))
    if sops is not None:
        swept.sop_reminded, swept.sop_escalated = sops.reminded, sops.escalated
    swept.sla_escalated = await step("work_orders", lambda: sweep_sla_breaches(now)) or 0
    return swept


@dataclass
class Delivered:
    notifications: int = 0
    inbox_rows: int = 0
    emails: int = 0
    webhooks: int = 0
    more: bool = False


async def _deliver(now: datetime, mailer: Mailer | None, sender: Sender | None, batch: int) -> Delivered:
    """One batch of the current institution's notifications and webhook deliveries."""
    notifications = await deliver_pending(now, mailer, limit=batch)
    done = Delivered(
        notifications=notifications.delivered,
        inbox_rows=notifications.inbox_rows,
        emails=notifications.emails_sent,
        more=notifications.claimed >= batch,
    )
    if sender is not None:
        hooks = await deliver_webhooks(now, sender, limit=batch)
        done.webhooks = hooks.delivered
        done.more = done.more or hooks.claimed >= batch
    return done


async def _each(
    work: Callable[[TenantRef], Awaitable[T]], institution_ids: Sequence[int] | None, concurrency: int
) -> FanOutResult[T]:
    """`for_each_tenant`, or the same over the named institutions only (an administrator's retry)."""
    if institution_ids is None:
        return await for_each_tenant(work, concurrency=concurrency)
    rows = await Institution.filter(status=InstitutionStatus.ACTIVE, id__in=list(institution_ids))
    outcome: FanOutResult[T] = FanOutResult()
    gate = asyncio.Semaphore(concurrency)

    async def one(tenant: TenantRef) -> None:
        async with gate:
            try:
                done = await run_in_tenant(tenant, functools.partial(work, tenant))
                outcome.results[tenant.institution_id] = done
            except Exception as error:  # as the fan-out does
                log.exception("work failed in institution %s", tenant.institution_id)
                outcome.failures[tenant.institution_id] = type(error).__name__

    await asyncio.gather(*(one(tenant_ref(row)) for row in rows))
    return outcome


async def _deliveries(
    institution_ids: Sequence[int] | None,
    now: datetime,
    mailer: Mailer | None,
    sender: Sender | None,
    batch: int,
    concurrency: int,
) -> tuple[Delivered, dict[int, str]]:
    total = Delivered()
    busy: list[TenantRef] = []

    def add(done: Delivered) -> None:
        total.notifications += done.notifications
        total.inbox_rows += done.inbox_rows
        total.emails += done.emails
        total.webhooks += done.webhooks

    async def first(tenant: TenantRef) -> Delivered:
        done = await _deliver(now, mailer, sender, batch)
        if done.more:
            busy.append(tenant)
        return done

    outcome = await _each(first, institution_ids, concurrency)
    for done in outcome.results.values():
        add(done)
    failures = dict(outcome.failures)
    gate = asyncio.Semaphore(concurrency)

    async def drain(tenant: TenantRef) -> None:
        async with gate:
            try:
                while True:
                    done = await run_in_tenant(tenant, lambda: _deliver(now, mailer, sender, batch))
                    add(done)
                    if not done.more:
                        return
            except Exception as error:  # one institution must not stop the others
                log.exception("delivery failed in institution %s", tenant.institution_id)
                failures[tenant.institution_id] = type(error).__name__

    await asyncio.gather(*(drain(tenant) for tenant in busy))
    return total, failures


def _failing_key(namespace: str) -> str:
    return f"{namespace}:workers:failing:{JOB_NAME}"


async def _failures_to_letters(
    ctx: dict[str, Any], now: datetime, failed: dict[int, tuple[str, BaseException | str]], swept: set[int]
) -> int:
    """Dead letters of the institutions that failed (see the module's docstring); the transient count of
    those that succeeded again is cleared. How many letters were written."""
    redis = ctx.get("redis")
    namespace = ctx.get("metrics_namespace") or worker_metrics.namespace_from_environ()
    runs: dict[int, int] = {}
    if redis is not None:
        key = _failing_key(namespace)
        try:
            counted = await redis.hgetall(key)
            recovered = [k for k in counted if int(k) in swept and int(k) not in failed]
            if recovered:
                await redis.hdel(key, *recovered)
            for institution_id, (_, error) in failed.items():
                if _transient(error):
                    runs[institution_id] = int(await redis.hincrby(key, str(institution_id), 1))
        except Exception:  # the counts are best effort; letters below still written
            log.warning("could not count the failing institutions in Redis", exc_info=True)
        if failed:
            await worker_metrics.record(redis, namespace, JOB_NAME, "tenant_failed", count=len(failed))
    written = 0
    for institution_id, (step, error) in sorted(failed.items()):
        transient = _transient(error)
        if transient and runs.get(institution_id, 0) < TENANT_MAX_RUNS:
            continue
        try:
            await dead_letters.record(
                job_name=JOB_NAME,
                job_id=str(ctx.get("job_id") or job_id(now)),
                queue_name=queue_of_ctx(ctx, JOB_NAME),
                letter_key=JOB_NAME,
                args={"institution_ids": [institution_id]},
                institution_id=institution_id,
                error=error if isinstance(error, BaseException) else f"{error} ({step})",
                transient=transient,
                tries=1,
                now=now,
            )
        except Exception:  # the database may be what fails: the log keeps it, the next run tries again
            log.exception("institution %s: the dead letter could not be written", institution_id)
            continue
        written += 1
    if written and redis is not None:
        await worker_metrics.record(redis, namespace, JOB_NAME, "dead_lettered", count=written)
    return written


async def _database_clock() -> datetime:
    rows = await default_connection().execute_query_dict("SELECT clock_timestamp() AS now")
    return rows[0]["now"]


def _transient(error: BaseException | str) -> bool:
    return error in TRANSIENT_NAMES if isinstance(error, str) else is_transient(error)


async def sweep_due(
    ctx: dict[str, Any],
    *,
    now: datetime | None = None,
    institution_ids: list[int] | None = None,
    concurrency: int = CONCURRENCY,
    batch: int = BATCH,
) -> dict[str, float]:
    """One sweep of every institution (or of `institution_ids`) at `now` (default: the clock)."""
    at = now or datetime.now(UTC)
    mailer: Mailer | None = ctx["mailer"] if "mailer" in ctx else mailer_from_environ()
    sender: Sender | None = ctx.get("webhook_sender")
    own_sender = None
    if sender is None and "webhook_sender" not in ctx:
        sender = own_sender = HttpxSender(public_only=production_environment())
    started = time.perf_counter()
    try:
        steps = await _each(lambda tenant: _steps(at), institution_ids, concurrency)
        if steps.failures:  # again, each step on its own: the others commit, the failure is named
            again = await _each(lambda tenant: _steps(at, careful=True), list(steps.failures), concurrency)
            steps.results.update(again.results)
            steps.failures = again.failures
        swept_at = time.perf_counter()
        # The outbox rows pass 1 wrote are due from the database's clock (notify: now()), a moment after
        # `at`: delivered by this sweep, not the next minute's.
        deliver_at = max(at, await _database_clock())
        delivered, delivery_failures = await _deliveries(
            institution_ids, deliver_at, mailer, sender, batch, concurrency
        )
        delivered_at = time.perf_counter()
    finally:
        if own_sender is not None:
            await own_sender.aclose()
    failed: dict[int, tuple[str, BaseException | str]] = {}
    for institution_id, name in {**steps.failures, **delivery_failures}.items():
        failed[institution_id] = ("deliveries" if institution_id in delivery_failures else "steps", name)
    for institution_id, swept in steps.results.items():
        if swept.failed and institution_id not in failed:
            failed[institution_id] = swept.failed[0]
    letters = await _failures_to_letters(ctx, at, failed, set(steps.results))
    results = steps.results.values()
    return {
        "institutions": len(steps.results) + len(steps.failures),
        "escalated_tasks": sum(swept.escalated_tasks for swept in results),
        "sop_reminded": sum(swept.sop_reminded for swept in results),
        "sop_escalated": sum(swept.sop_escalated for swept in results),
        "sla_escalated": sum(swept.sla_escalated for swept in results),
        "notifications": delivered.notifications,
        "inbox_rows": delivered.inbox_rows,
        "emails": delivered.emails,
        "webhooks": delivered.webhooks,
        "failures": len(failed),
        "dead_lettered": letters,
        "steps_seconds": round(swept_at - started, 3),
        "deliveries_seconds": round(delivered_at - swept_at, 3),
    }

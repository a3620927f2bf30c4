"""Deliver the notification outboxes of every institution (care/notifications.py), every minute.

Each institution's batch is one unit of work: the claimed rows stay locked (`FOR UPDATE SKIP LOCKED`)
until their inbox rows, e-mail log rows and new state commit together, so a second worker running at
the same time skips them and a job run twice finds them delivered. An institution with more than a batch
waiting gets further batches, each committed on its own, until it has none left that are due.
"""

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

from api.settings import smtp_setting
from care.notifications import Delivery, Mailer, Notification, SmtpMailer, deliver_pending, notify
from tenants.context import TenantRef
from tenants.fanout import for_each_tenant
from tenants.unit_of_work import run_in_tenant

log = logging.getLogger(__name__)

BATCH = 100
DRAIN_CONCURRENCY = 8


def mailer_from_environ() -> Mailer | None:
    settings = smtp_setting()
    if settings is None:
        log.info("YIYANG_SMTP_URL is not set: notifications are delivered in the app only, e-mail skipped")
        return None
    return SmtpMailer(settings)


async def deliver_notifications(ctx: dict[str, Any], *, batch: int = BATCH) -> dict[str, int]:
    mailer: Mailer | None = ctx["mailer"] if "mailer" in ctx else mailer_from_environ()
    now = datetime.now(UTC)
    busy: list[TenantRef] = []
    total = Delivery()

    def add(delivery: Delivery) -> None:
        total.claimed += delivery.claimed
        total.delivered += delivery.delivered
        total.retried += delivery.retried
        total.dead += delivery.dead

    async def first(tenant: TenantRef) -> Delivery:
        delivery = await deliver_pending(now, mailer, limit=batch)
        if delivery.claimed == batch:
            busy.append(tenant)
        return delivery

    outcome = await for_each_tenant(first)
    for delivery in outcome.results.values():
        add(delivery)
    failures = len(outcome.failures)
    gate = asyncio.Semaphore(DRAIN_CONCURRENCY)

    async def drain(tenant: TenantRef) -> None:
        nonlocal failures
        async with gate:
            try:
                while True:
                    delivery = await run_in_tenant(tenant, lambda: deliver_pending(now, mailer, limit=batch))
                    add(delivery)
                    if delivery.claimed < batch:
                        return
            except Exception:  # like the fan-out: one institution's failure does not stop the others
                log.exception("notification delivery failed in institution %s", tenant.institution_id)
                failures += 1

    await asyncio.gather(*(drain(tenant) for tenant in busy))
    return {
        "institutions": len(outcome.results),
        "delivered": total.delivered,
        "retried": total.retried,
        "dead": total.dead,
        "failures": failures,
    }


async def notify_escalation(notification: Notification) -> int | None:
    """What an escalation (an overdue care task, a missed SOP step) calls in its own unit of work: the
    outbox row commits with the escalation's own change."""
    return await notify(notification)

"""Sweep every 15 minutes: materialize the care plans' tasks of the next 7 days in every institution,
and escalate the overdue ones (care/tasks.py).

Both steps are idempotent (a unique (item, due time); escalated_at set once), so a run repeated or
overlapping another adds nothing. The cron's job id is fixed per run minute (`job_id`), so that two
schedulers enqueue one job. Escalating a task notifies the shift lead
(head nurse) through the outbox in the same unit of work; workers/notifications.py delivers it.
"""

from datetime import UTC, datetime
from typing import Any

from care.tasks import escalate_overdue, materialize
from tenants.context import TenantRef
from tenants.fanout import for_each_tenant

CRON_MINUTES = frozenset(range(0, 60, 15))


def job_id(moment: datetime) -> str:
    """The job id of the run of `moment`'s minute (UTC)."""
    return "care-tasks:" + moment.astimezone(UTC).strftime("%Y%m%dT%H%M")


async def materialize_care_tasks(ctx: dict[str, Any], now: datetime | None = None) -> dict[str, int]:
    at = now or datetime.now(UTC)

    async def one(tenant: TenantRef) -> tuple[int, int]:
        created = await materialize(at)
        escalated = await escalate_overdue(at)
        return created, len(escalated)

    outcome = await for_each_tenant(one)
    return {
        "institutions": len(outcome.results),
        "failures": len(outcome.failures),
        "created": sum(created for created, _ in outcome.results.values()),
        "escalated": sum(escalated for _, escalated in outcome.results.values()),
    }

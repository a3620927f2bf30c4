"""Demo data of the SOPs (care/sops.py): the residents admitted in the last 30 days get a butler (the
institution's demo butler account) and their new-resident plan, its past steps done with the call in the
family log and the latest past one still open (due or missed), so that `make run` shows the butler's day.

The demo residents are inserted in bulk, not through `admit_resident`, so the instances are started here,
as of the admission morning (nothing is closed as "before start"). A few rows per institution: fast.
"""

from datetime import UTC, date, datetime, time, timedelta

from care import family_log, sops
from care.sealed_rows import execute
from tenants.models import Institution
from tenants.registry import tenant_ref
from tenants.unit_of_work import run_in_tenant

RECENT_DAYS = 30
MAX_RESIDENTS = 12
_CALLS = (
    "电话回访：老人饮食睡眠正常，家属放心。",
    "电话回访：老人已参加集体活动，情绪稳定。",
    "视频回访：家属询问康复训练安排，已说明。",
)


async def _seed(institution_id: int, now: datetime) -> int:
    tz = sops.zone()
    today = now.astimezone(tz).date()
    butlers = await execute(
        """SELECT account_id FROM shared.staff_membership WHERE institution_id = $1 AND role = 'butler'
           ORDER BY account_id LIMIT 1""",
        [institution_id],
    )
    residents = await execute(
        """SELECT id, admission_date FROM resident WHERE status <> 'discharged' AND admission_date >= $1
               AND admission_date <= $2 ORDER BY admission_date DESC, id LIMIT $3""",
        [today - timedelta(days=RECENT_DAYS), today, MAX_RESIDENTS],
    )
    for number, row in enumerate(residents):
        admitted: date = row["admission_date"]
        if butlers:
            await sops.assign_butler(row["id"], butlers[0]["account_id"], by="demo")
        morning = datetime.combine(admitted, time(9), tz).astimezone(UTC)
        await sops.start_instances(row["id"], sops.Anchor.ADMISSION, admitted, now=morning)
        past = [
            step
            for instance in await sops.instances_of(row["id"])
            for step in instance.steps
            if step.status is sops.StepStatus.OPEN and step.due_at <= now
        ]
        for step in past[:-1]:  # the latest past one stays open: due, or missed and escalated by the sweep
            call = family_log.NewFamilyCommunication(
                occurred_at=step.due_at + timedelta(minutes=25),
                channel=family_log.Channel.PHONE,
                direction=family_log.Direction.TO_FAMILY,
                summary=_CALLS[number % len(_CALLS)],
            )
            await sops.complete_step(step.id, call, by="demo", now=step.due_at + timedelta(minutes=30))
    return len(residents)


async def seed_demo_sops(institutions: list[Institution]) -> int:
    """The SOP instances of the recently admitted residents of every demo institution (after the demo
    accounts: the butler is one of them). Returns the residents given a plan."""
    now = datetime.now(UTC)
    total = 0
    for institution in institutions:
        tenant = tenant_ref(institution)
        total += await run_in_tenant(tenant, lambda tenant=tenant: _seed(tenant.institution_id, now))
    return total

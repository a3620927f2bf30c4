"""Demo work orders (`make run`): a handful per demo institution, raised by its demo staff and family
accounts (care/demo_accounts.py), some open, some handled and rated, some past their deadlines and
escalated by the SLA sweep, so that the lists, the history and the KPIs have something to show."""

import functools
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from care import work_orders as wo
from care.demo_accounts import DEMO_DOMAIN
from compliance.identity.account_models import FamilyLink, UserAccount
from tenants.models import Institution
from tenants.registry import tenant_ref
from tenants.unit_of_work import run_in_tenant


@dataclass(frozen=True)
class _Scenario:
    requester: str  # a staff login prefix (caregiver, butler, nurse) or "family"
    kind: str
    category: str
    priority: str
    title: str
    location: str | None
    hours_ago: float
    # (change, hours after raising) in order; "assign" hands it to the department's demo member
    steps: tuple[tuple[str, float], ...] = ()
    rating: int | None = None
    comment: str | None = None


_SCENARIOS = (
    _Scenario(
        "caregiver",
        "request",
        "maintenance",
        "high",
        "卫生间扶手松动",
        "2号楼 205",
        72,
        (("acknowledge", 0.3), ("start", 1), ("resolve", 4)),
        5,
        "已加固，谢谢后勤师傅",
    ),
    _Scenario(
        "family",
        "complaint",
        "meals",
        "normal",
        "最近饭菜偏咸，老人血压偏高不宜",
        None,
        50,
        (("acknowledge", 0.5), ("start", 1), ("resolve", 5)),
        4,
        "已调整为低盐餐",
    ),
    _Scenario("butler", "request", "cleaning", "low", "公共活动室地面需清洁", "1号楼 活动室", 1),
    _Scenario("family", "complaint", "care", "urgent", "夜间按呼叫铃后很久无人来", None, 2),
    _Scenario(
        "family",
        "request",
        "billing",
        "normal",
        "本月账单护理费有疑问",
        None,
        26,
        (("acknowledge", 1), ("start", 2)),
    ),
    _Scenario(
        "nurse",
        "request",
        "maintenance",
        "normal",
        "空调不制冷",
        "3号楼 302",
        120,
        (("acknowledge", 3), ("start", 20), ("resolve", 50)),
        2,
        "等了两天才修好",
    ),
)


async def _logins(number: int) -> dict[str, int]:
    prefixes = ("caregiver", "butler", "nurse", "admin", "finance")
    found = await UserAccount.filter(
        login__in=[f"{prefix}{number:02d}@{DEMO_DOMAIN}" for prefix in prefixes]
    ).values_list("login", "id")
    return {login.split("@")[0].rstrip("0123456789"): account_id for login, account_id in found}


async def seed_demo_work_orders(institutions: Sequence[Institution], seed: int) -> int:
    """The demo work orders of every institution (numbered as in care/demo_accounts.py); how many."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    total = 0
    for number, institution in enumerate(institutions, start=1):
        staff = await _logins(number)
        families = (
            await FamilyLink.filter(institution_id=institution.id)
            .order_by("id")
            .values_list("account_id", "resident_id")
        )
        if "caregiver" not in staff:
            continue
        rng = random.Random(f"{seed}:work-orders:{institution.id}")
        work = functools.partial(_fill, staff, list(families), rng, now)
        total += await run_in_tenant(tenant_ref(institution), work)
    return total


async def _fill(
    staff: dict[str, int], families: Sequence[tuple[int, int]], rng: random.Random, now: datetime
) -> int:
    made = 0
    for scenario in _SCENARIOS:
        if scenario.requester == "family":
            if not families:
                continue
            account_id, resident_id = rng.choice(list(families))
            requester = wo.Requester(wo.RequesterKind.FAMILY, account_id)
        else:
            resident_id = None
            requester = wo.Requester(
                wo.RequesterKind.STAFF, staff.get(scenario.requester, staff["caregiver"])
            )
        raised_at = now - timedelta(hours=scenario.hours_ago + rng.random())
        found = await wo.raise_work_order(
            wo.NewWorkOrder(
                kind=scenario.kind,
                category=scenario.category,
                priority=scenario.priority,
                title=scenario.title,
                location=scenario.location,
                resident_id=resident_id,
            ),
            requester,
            now=raised_at,
        )
        handler = f"account:{staff.get('admin', staff['caregiver'])}"
        for change, after in scenario.steps:
            await wo.change_status(
                found.id, wo.Transition(change), actor=handler, now=raised_at + timedelta(hours=after)
            )
        if scenario.rating is not None:
            last = scenario.steps[-1][1] if scenario.steps else 0
            await wo.rate(
                found.id,
                scenario.rating,
                scenario.comment,
                requester=requester,
                now=raised_at + timedelta(hours=last + 2),
            )
        made += 1
    await wo.sweep_sla_breaches(now)  # the late ones escalated, as the worker's sweep would have
    return made

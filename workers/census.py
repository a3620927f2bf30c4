"""Sweep: keep today's census of every institution current in the shared fact table."""

from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

from care.census import record_census
from tenants.context import TenantRef
from tenants.fanout import for_each_tenant


async def record_daily_census(ctx: dict[str, Any]) -> dict[str, int]:
    async def one(tenant: TenantRef) -> int:
        today = datetime.now(ZoneInfo(tenant.time_zone)).date()
        return (await record_census(today)).in_residence

    outcome = await for_each_tenant(one)
    return {"institutions": len(outcome.results), "failures": len(outcome.failures)}

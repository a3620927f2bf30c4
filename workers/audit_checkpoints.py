"""Sweep: sign a checkpoint of every institution's audit chain (compliance/audit/checkpoints.py).

What lies after a tenant's last checkpoint is what someone with write access to the database could
recompute unnoticed: every five minutes keeps that window short. A checkpoint of a seq already signed is
kept as it is, so running the sweep twice changes nothing."""

from typing import Any

from compliance.audit.checkpoints import checkpoint
from tenants.context import TenantRef
from tenants.fanout import for_each_tenant


async def checkpoint_audit_logs(ctx: dict[str, Any]) -> dict[str, int]:
    async def one(tenant: TenantRef) -> int:
        point = await checkpoint(tenant)
        return 0 if point is None else point.seq

    outcome = await for_each_tenant(one)
    return {
        "institutions": len(outcome.results),
        "signed": sum(1 for seq in outcome.results.values() if seq),
        "failures": len(outcome.failures),
    }

"""Sweep: delete authorization codes and refresh-token families past use (compliance/identity)."""

import time
from typing import Any

from compliance.identity.authorization import sweep_expired


async def sweep_expired_authorizations(ctx: dict[str, Any]) -> dict[str, int]:
    swept = await sweep_expired(now=time.time())
    return {"codes": swept.codes, "families": swept.families}

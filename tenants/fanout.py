"""Run one piece of work in every active institution, each in its own unit of work, a few at a time."""

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from tenants.context import TenantRef
from tenants.models import Institution, InstitutionStatus
from tenants.registry import tenant_ref
from tenants.unit_of_work import run_in_tenant

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass
class FanOutResult(Generic[T]):
    results: dict[int, T] = field(default_factory=dict)
    failures: dict[int, str] = field(default_factory=dict)


async def for_each_tenant(
    work: Callable[[TenantRef], Awaitable[T]], *, concurrency: int = 8
) -> FanOutResult[T]:
    """A failure in one institution is recorded and does not stop the others."""
    institutions = await Institution.filter(status=InstitutionStatus.ACTIVE).order_by("id")
    outcome: FanOutResult[T] = FanOutResult()
    gate = asyncio.Semaphore(concurrency)

    async def one(tenant: TenantRef) -> None:
        async with gate:
            try:
                outcome.results[tenant.institution_id] = await run_in_tenant(tenant, lambda: work(tenant))
            except Exception as exc:  # one tenant's failure must not stop the sweep of the others
                log.exception("work failed in institution %s", tenant.institution_id)
                outcome.failures[tenant.institution_id] = type(exc).__name__

    await asyncio.gather(*(one(tenant_ref(row)) for row in institutions))
    return outcome

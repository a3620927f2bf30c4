"""What every resolver receives as `info.context`."""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from strawberry.dataloader import DataLoader
from strawberry.types import Info

from care.health_record import HealthRecord, health_records_of
from care.residents import FamilyMemberRecord, family_members_of
from compliance.identity.login_throttle import LoginThrottle
from compliance.principals import Principal
from tenants.context import TenantRef
from tenants.errors import DomainError, InvalidInput, Unauthenticated
from tenants.models import Institution

if TYPE_CHECKING:
    from schema.rate_limits import RateLimiter


async def _load_institutions(ids: list[int]) -> list[Institution | None]:
    found = {i.id: i for i in await Institution.filter(id__in=ids).select_related("region", "chain")}
    return [found.get(i) for i in ids]


async def _load_health_records(resident_ids: list[int]) -> list[HealthRecord]:
    records = await health_records_of(resident_ids)
    return [records[rid] for rid in resident_ids]


async def _load_family_members(resident_ids: list[int]) -> list[list[FamilyMemberRecord]]:
    grouped = await family_members_of(resident_ids)
    return [grouped[rid] for rid in resident_ids]


@dataclass
class Loaders:
    """Per-request DataLoaders: one query per kind of object, however many parents ask."""

    institution: DataLoader[int, Institution | None] = field(
        default_factory=lambda: DataLoader(load_fn=_load_institutions)
    )
    family_members: DataLoader[int, list[FamilyMemberRecord]] = field(
        default_factory=lambda: DataLoader(load_fn=_load_family_members)
    )
    health_record: DataLoader[int, HealthRecord] = field(
        default_factory=lambda: DataLoader(load_fn=_load_health_records)
    )


@dataclass
class RequestContext:
    principal: Principal | None
    request_id: str
    locale: str
    tenant: TenantRef | None = None
    tenant_problem: DomainError | None = None
    loaders: Loaders = field(default_factory=Loaders)
    # Charges each operation its cost (schema/rate_limits.py); None: not limited (tests, scripts).
    rate_limiter: "RateLimiter | None" = None
    # Sign-in's throttle, for operations that check a password (api/graphql.py sets both).
    login_throttle: LoginThrottle | None = None
    client_address: str = ""

    def require_login_throttle(self) -> LoginThrottle:
        if self.login_throttle is None:  # the app sets it at start: without it, refuse rather than not count
            raise RuntimeError("no login throttle in the request context")
        return self.login_throttle

    def require_tenant(self) -> TenantRef:
        if self.tenant is not None:
            return self.tenant
        if self.tenant_problem is not None:
            raise self.tenant_problem
        if self.principal is None:
            raise Unauthenticated("Authentication required.")
        raise InvalidInput(
            "Name the institution to act in with the Yiyang-Institution header.", field="Yiyang-Institution"
        )


YiyangInfo = Info[RequestContext, None]

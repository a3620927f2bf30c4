"""What every resolver receives as `info.context`."""

from dataclasses import dataclass, field

from strawberry.dataloader import DataLoader
from strawberry.types import Info

from care.models import FamilyMember
from care.residents import family_members_of
from compliance.principals import Principal
from tenants.context import TenantRef
from tenants.errors import DomainError, Unauthenticated
from tenants.models import Institution


async def _load_institutions(ids: list[int]) -> list[Institution | None]:
    found = {i.id: i for i in await Institution.filter(id__in=ids).select_related("region", "chain")}
    return [found.get(i) for i in ids]


async def _load_family_members(resident_ids: list[int]) -> list[list[FamilyMember]]:
    grouped = await family_members_of(resident_ids)
    return [grouped[rid] for rid in resident_ids]


@dataclass
class Loaders:
    """Per-request DataLoaders: one query per kind of object, however many parents ask."""

    institution: DataLoader[int, Institution | None] = field(
        default_factory=lambda: DataLoader(load_fn=_load_institutions)
    )
    family_members: DataLoader[int, list[FamilyMember]] = field(
        default_factory=lambda: DataLoader(load_fn=_load_family_members)
    )


@dataclass
class RequestContext:
    principal: Principal | None
    request_id: str
    locale: str
    tenant: TenantRef | None = None
    tenant_problem: DomainError | None = None
    loaders: Loaders = field(default_factory=Loaders)

    def require_tenant(self) -> TenantRef:
        if self.tenant is not None:
            return self.tenant
        raise self.tenant_problem or Unauthenticated("Authentication required.")


YiyangInfo = Info[RequestContext, None]

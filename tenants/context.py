"""Which tenant the running code acts in. Set only by `tenants.unit_of_work`."""

from contextvars import ContextVar
from dataclasses import dataclass

from tenants.schema_names import validate_schema_name


@dataclass(frozen=True, slots=True)
class TenantRef:
    institution_id: int
    schema_name: str
    time_zone: str = "Asia/Shanghai"
    currency: str = "CNY"
    chain_id: int | None = None  # what the policy checks a chain principal against
    region_id: int | None = None

    def __post_init__(self) -> None:
        validate_schema_name(self.schema_name)


class OutsideTenantScope(RuntimeError):
    """A tenant table was touched with no tenant unit of work open."""


_current_tenant: ContextVar[TenantRef | None] = ContextVar("yiyang_current_tenant", default=None)
# A new object for each unit of work: what a cache bound to one unit of work checks against (cheaper than
# comparing connections, and a unit of work of the same tenant later in the same task is another one).
_current_unit: ContextVar[object | None] = ContextVar("yiyang_current_unit_of_work", default=None)


def current_tenant() -> TenantRef:
    tenant = _current_tenant.get()
    if tenant is None:
        raise OutsideTenantScope("tenant data accessed outside a tenant unit of work")
    return tenant


def current_tenant_or_none() -> TenantRef | None:
    return _current_tenant.get()


def current_unit_of_work() -> object:
    unit = _current_unit.get()
    if unit is None:
        raise OutsideTenantScope("tenant data accessed outside a tenant unit of work")
    return unit


def current_unit_of_work_or_none() -> object | None:
    return _current_unit.get()

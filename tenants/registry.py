"""Regions, chains and institutions: look-ups and provisioning of a new institution."""

import time
import zoneinfo
from dataclasses import dataclass

from tenants.context import TenantRef
from tenants.db import default_connection
from tenants.errors import InvalidInput, NotFound, ValidationFailed
from tenants.migrate import create_tenant_schema, tenant_migrations
from tenants.models import Chain, Institution, InstitutionStatus, Region
from tenants.schema_names import SHARED_SCHEMA, new_schema_name


@dataclass(frozen=True)
class NewInstitution:
    name: str
    region_code: str
    chain_name: str | None = None
    time_zone: str = "Asia/Shanghai"
    currency: str = "CNY"
    bed_capacity: int = 0


def _check(spec: NewInstitution) -> list[InvalidInput]:
    problems: list[InvalidInput] = []
    if not spec.name.strip() or len(spec.name) > 200:
        problems.append(InvalidInput("Name must be 1 to 200 characters.", field="name"))
    try:
        zoneinfo.ZoneInfo(spec.time_zone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        problems.append(InvalidInput("Unknown time zone {zone}.", field="timeZone", zone=spec.time_zone))
    if len(spec.currency) != 3 or not spec.currency.isalpha() or not spec.currency.isupper():
        problems.append(InvalidInput("Currency must be an ISO 4217 code such as CNY.", field="currency"))
    if not 0 <= spec.bed_capacity <= 10_000:
        problems.append(InvalidInput("Bed capacity must be between 0 and 10000.", field="bedCapacity"))
    return problems


async def provision_institution(spec: NewInstitution) -> Institution:
    """Register an institution and create its schema at the latest version, in one transaction."""
    problems = _check(spec)
    region = await Region.get_or_none(code=spec.region_code)
    if region is None:
        problems.append(InvalidInput("Unknown region {code}.", field="regionCode", code=spec.region_code))
    chain = None
    if spec.chain_name is not None:
        chain = await Chain.get_or_none(name=spec.chain_name)
        if chain is None:
            problems.append(InvalidInput("Unknown chain {name}.", field="chainName", name=spec.chain_name))
    if problems:
        raise ValidationFailed(problems)
    assert region is not None
    schema_name = new_schema_name()
    async with default_connection().acquire_connection() as conn, conn.transaction():
        institution_id = await conn.fetchval(
            f"""INSERT INTO {SHARED_SCHEMA}.institution
                    (name, region_id, chain_id, schema_name, time_zone, currency, bed_capacity)
                VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id""",
            spec.name.strip(),
            region.id,
            chain.id if chain else None,
            schema_name,
            spec.time_zone,
            spec.currency,
            spec.bed_capacity,
        )
        await create_tenant_schema(conn, schema_name, tenant_migrations())
    return await Institution.get(id=institution_id)


async def get_or_create_region(code: str, name: str) -> Region:
    region, _ = await Region.get_or_create(code=code, defaults={"name": name})
    return region


async def get_or_create_chain(name: str) -> Chain:
    chain, _ = await Chain.get_or_create(name=name)
    return chain


def tenant_ref(institution: Institution) -> TenantRef:
    return TenantRef(
        institution_id=institution.id,
        schema_name=institution.schema_name,
        time_zone=institution.time_zone,
        currency=institution.currency,
    )


class TenantDirectory:
    """Active institutions by id, cached briefly: every request resolves its tenant through this."""

    def __init__(self, ttl_seconds: float = 30.0, miss_ttl_seconds: float = 2.0) -> None:
        self._ttl = ttl_seconds
        self._miss_ttl = miss_ttl_seconds
        self._cache: dict[int, tuple[float, TenantRef | None]] = {}

    async def resolve(self, institution_id: int) -> TenantRef:
        now = time.monotonic()
        cached = self._cache.get(institution_id)
        if cached is None or cached[0] < now:
            institution = await Institution.get_or_none(id=institution_id, status=InstitutionStatus.ACTIVE)
            ref = tenant_ref(institution) if institution else None
            self._cache[institution_id] = (now + (self._ttl if ref else self._miss_ttl), ref)
            cached = self._cache[institution_id]
        if cached[1] is None:
            raise NotFound("Institution not found or not active.")
        return cached[1]

    def forget(self, institution_id: int) -> None:
        self._cache.pop(institution_id, None)

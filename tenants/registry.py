"""Regions, chains and institutions: look-ups and provisioning of a new institution."""

import asyncio
import math
import time
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass

from tenants.context import TenantRef
from tenants.db import owner_connection
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
    # The owner's connection: the application's role may not create schemas (docs/security.md).
    async with owner_connection() as conn, conn.transaction():
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
        chain_id=institution.chain_id,
        region_id=institution.region_id,
    )


class TenantDirectory:
    """Active institutions by id: every request resolves its tenant through this.

    The whole registry is read at once and re-read every `ttl_seconds`: at 1,500 institutions that is one
    query of a few hundred kilobytes per API process every 30 s, where a cache per institution asked once
    per institution and process, and missed whenever a client's connection landed on another process. An
    id the copy does not hold (an institution provisioned since) is looked up on its own, and an unknown id
    is not asked again for `miss_ttl_seconds`. A suspended institution is refused within `ttl_seconds`.
    """

    def __init__(
        self,
        ttl_seconds: float = 30.0,
        miss_ttl_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._clock = clock
        self._ttl = ttl_seconds
        self._miss_ttl = miss_ttl_seconds
        self._active: dict[int, TenantRef] = {}
        self._expires = -math.inf
        self._misses: dict[int, float] = {}
        self._reading = asyncio.Lock()  # requests arriving during a re-read wait for it, not read again
        self.registry_reads = 0  # whole-registry reads
        self.registry_queries = 0  # every query of the registry, whole reads included

    async def resolve(self, institution_id: int) -> TenantRef:
        if self._clock() >= self._expires:
            await self._reread()
        ref = self._active.get(institution_id)
        if ref is None:
            ref = await self._look_up(institution_id)
        return ref

    async def _reread(self) -> None:
        async with self._reading:
            if self._clock() < self._expires:
                return  # another request re-read while we waited
            active = await Institution.filter(status=InstitutionStatus.ACTIVE)
            self.registry_reads += 1
            self.registry_queries += 1
            self._active = {institution.id: tenant_ref(institution) for institution in active}
            self._misses.clear()
            self._expires = self._clock() + self._ttl

    async def _look_up(self, institution_id: int) -> TenantRef:
        now = self._clock()
        if self._misses.get(institution_id, -math.inf) > now:
            raise NotFound("Institution not found or not active.")
        institution = await Institution.get_or_none(id=institution_id, status=InstitutionStatus.ACTIVE)
        self.registry_queries += 1
        if institution is None:
            self._misses[institution_id] = now + self._miss_ttl
            raise NotFound("Institution not found or not active.")
        ref = self._active[institution_id] = tenant_ref(institution)
        return ref

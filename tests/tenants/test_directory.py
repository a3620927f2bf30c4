"""The tenant directory: which institution a request acts in, without a registry query per request."""

import asyncio

import pytest

from tenants.errors import NotFound
from tenants.models import Institution, InstitutionStatus
from tenants.registry import NewInstitution, TenantDirectory, provision_institution
from tests.conftest import ManualClock, World


async def test_one_read_serves_every_institution(world: World) -> None:
    directory = TenantDirectory()
    first = await directory.resolve(world.institution_ids[0])
    queries = directory.registry_queries
    refs = [await directory.resolve(institution_id) for institution_id in world.institution_ids]
    assert directory.registry_queries == queries
    assert refs[0] == first
    assert [ref.institution_id for ref in refs] == world.institution_ids
    assert len({ref.schema_name for ref in refs}) == len(refs)


async def test_institution_provisioned_after_the_read_is_found_at_once(world: World) -> None:
    directory = TenantDirectory()
    await directory.resolve(world.institution_ids[0])
    created = await provision_institution(NewInstitution(name="新院区", region_code="test-east"))
    assert (await directory.resolve(created.id)).schema_name == created.schema_name


async def test_unknown_ids_are_refused_and_not_asked_again_at_once(world: World) -> None:
    clock = ManualClock()
    directory = TenantDirectory(miss_ttl_seconds=2, clock=clock)
    await directory.resolve(world.institution_ids[0])
    created = await provision_institution(NewInstitution(name="稍后启用", region_code="test-east"))
    await Institution.filter(id=created.id).update(status=InstitutionStatus.SUSPENDED)
    with pytest.raises(NotFound):
        await directory.resolve(created.id)
    await Institution.filter(id=created.id).update(status=InstitutionStatus.ACTIVE)
    clock.now += 1.9
    with pytest.raises(NotFound):  # the miss is remembered for a moment
        await directory.resolve(created.id)
    clock.now += 0.2
    assert (await directory.resolve(created.id)).institution_id == created.id


async def test_suspension_takes_effect_within_the_ttl(world: World) -> None:
    clock = ManualClock()
    directory = TenantDirectory(ttl_seconds=30, clock=clock)
    created = await provision_institution(NewInstitution(name="将停用", region_code="test-east"))
    await directory.resolve(created.id)
    await Institution.filter(id=created.id).update(status=InstitutionStatus.SUSPENDED)
    clock.now += 29.9
    await directory.resolve(created.id)  # still served from the copy
    clock.now += 0.2
    with pytest.raises(NotFound):
        await directory.resolve(created.id)


async def test_concurrent_requests_at_expiry_share_one_read(world: World) -> None:
    directory = TenantDirectory()
    await asyncio.gather(*(directory.resolve(i) for i in world.institution_ids * 5))
    assert directory.registry_reads == 1 and directory.registry_queries == 1

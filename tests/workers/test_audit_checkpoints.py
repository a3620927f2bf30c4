"""The audit checkpoint sweep, run by a real arq worker on real Redis and PostgreSQL: every tenant with
events gets a signed checkpoint of its last event, and running it again changes nothing."""

import uuid

from arq import create_pool
from arq.connections import RedisSettings

from api.settings import Settings
from compliance.audit.checkpoints import checkpoints_of
from compliance.audit.verify import verify_tenants
from tests.compliance.audit_support import append, fresh_tenant
from tests.conftest import World
from tests.workers.arq_support import run_burst
from workers.audit_checkpoints import checkpoint_audit_logs


async def _sweep(settings: Settings) -> dict[str, int]:
    redis_settings = RedisSettings.from_dsn(settings.redis_url)
    queue = f"yiyang:test:{uuid.uuid4().hex}"
    redis = await create_pool(redis_settings)
    try:
        job = await redis.enqueue_job("checkpoint_audit_logs", _queue_name=queue)
        await run_burst(redis_settings, queue, [checkpoint_audit_logs])
        return await job.result(timeout=60)
    finally:
        await redis.aclose()


async def test_the_sweep_signs_every_chain_once(app: object, world: World, settings: Settings) -> None:
    tenant = await fresh_tenant("审计检查点养老院")
    recorded = await append(tenant, 3)
    outcome = await _sweep(settings)
    assert outcome["failures"] == 0 and outcome["institutions"] >= len(world.institution_ids)
    (point,) = await checkpoints_of(tenant.institution_id)
    assert (point.seq, point.hash) == (recorded[-1].seq, recorded[-1].hash)

    await _sweep(settings)  # nothing new: the same checkpoint, not a second one
    assert await checkpoints_of(tenant.institution_id) == [point]
    (report,) = await verify_tenants([tenant])
    assert report.intact and report.last_checkpoint == point.seq

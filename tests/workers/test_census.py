"""The census sweep, enqueued on real Redis and run by a real arq worker against real PostgreSQL."""

import uuid

from arq import create_pool
from arq.connections import RedisSettings
from tortoise import connections

from api.settings import Settings
from tests.conftest import RESIDENTS_PER_INSTITUTION, World
from tests.workers.arq_support import run_burst
from workers.census import record_daily_census


async def test_census_sweep_writes_shared_facts(app: object, world: World, settings: Settings) -> None:
    redis_settings = RedisSettings.from_dsn(settings.redis_url)
    queue = f"yiyang:test:{uuid.uuid4().hex}"
    redis = await create_pool(redis_settings)
    try:
        job_id = f"census-{queue}"
        job = await redis.enqueue_job("record_daily_census", _queue_name=queue, _job_id=job_id)
        # The same job id again is not enqueued twice: the sweep is idempotent by construction.
        assert await redis.enqueue_job("record_daily_census", _queue_name=queue, _job_id=job_id) is None
        await run_burst(redis_settings, queue, [record_daily_census])
        outcome = await job.result(timeout=30)
    finally:
        await redis.aclose()
    assert outcome["failures"] == 0
    assert outcome["institutions"] >= len(world.institution_ids)
    untouched = world.institution_ids[15]
    _, rows = await connections.get("default").execute_query(
        "SELECT residents_in_residence, admissions, discharges FROM shared.institution_daily_census"
        " WHERE institution_id = $1",
        [untouched],
    )
    assert [dict(row) for row in rows] == [
        {"residents_in_residence": RESIDENTS_PER_INSTITUTION, "admissions": 0, "discharges": 0}
    ]

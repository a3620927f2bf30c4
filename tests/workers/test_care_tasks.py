"""The care-task sweep on real Redis and a real arq worker: tasks materialized in every institution,
overdue ones escalated once, the same run (job id of its minute) enqueued once, a second run adding
nothing."""

import uuid
from datetime import UTC, date, datetime, timedelta

from arq import create_pool
from arq.connections import RedisSettings

from api.settings import Settings
from care import care_plans as plans
from care import tasks
from care.models import CareLevel, Gender
from care.residents import Admission, admit_resident
from compliance.principals import StaffRole
from tenants.db import default_connection
from tenants.registry import NewInstitution, provision_institution, tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.conftest import World
from tests.workers.arq_support import run_burst
from workers.care_tasks import CRON_MINUTES, job_id, materialize_care_tasks
from workers.settings import MATERIALIZE, LongWorkerSettings


async def test_sweep_materializes_and_escalates_once(app: object, world: World, settings: Settings) -> None:
    assert world.institution_ids
    tenant = tenant_ref(await provision_institution(NewInstitution(name="任务巡检", region_code="test-east")))
    now = datetime.now(UTC).replace(microsecond=0)
    earlier = now - timedelta(hours=3)

    async def plan() -> int:
        resident = await admit_resident(
            Admission("巡检长者", Gender.FEMALE, date(1940, 1, 2), CareLevel.ASSISTED, date(2026, 1, 2))
        )
        item = await plans.add_item(
            resident.id,
            plans.NewItem(
                kind=plans.TaskKind.REPOSITIONING,
                recurrence="FREQ=HOURLY;BYMINUTE=0",
                duration_minutes=5,
                starts_at=earlier,
                role=StaffRole.CAREGIVER,
            ),
            recorded_by="account:1",
            now=earlier,
        )
        # Made three hours ago, then nothing ran: the first hours are overdue now, the last days missing.
        await tasks.materialize(earlier, timedelta(hours=4))
        return item.id

    item_id = await run_in_tenant(tenant, plan)

    async def state() -> list[tuple[datetime, datetime | None]]:
        rows = await default_connection().execute_query_dict(
            "SELECT due_at, escalated_at FROM care_task WHERE item_id = $1 ORDER BY due_at", [item_id]
        )
        return [(row["due_at"], row["escalated_at"]) for row in rows]

    redis_settings = RedisSettings.from_dsn(settings.redis_url)
    queue = f"yiyang:test:{uuid.uuid4().hex}"
    redis = await create_pool(redis_settings)
    try:
        # arq keeps a job's result an hour under its id: a run of this test in the same minute before (the
        # same Redis) would make this minute's job look enqueued already.
        await redis.delete(f"arq:job:{job_id(now)}", f"arq:result:{job_id(now)}")
        first = await redis.enqueue_job("materialize_care_tasks", now, _queue_name=queue, _job_id=job_id(now))
        assert first is not None
        # The run of the same minute again (a second scheduler): not enqueued twice.
        assert (
            await redis.enqueue_job("materialize_care_tasks", now, _queue_name=queue, _job_id=job_id(now))
            is None
        )
        await run_burst(redis_settings, queue, [materialize_care_tasks])
        outcome = await first.result(timeout=60)
        after_first = await run_in_tenant(tenant, state)
        later = now + timedelta(seconds=30)
        second = await redis.enqueue_job(
            "materialize_care_tasks", later, _queue_name=queue, _job_id=f"{queue}-2"
        )
        assert second is not None
        await run_burst(redis_settings, queue, [materialize_care_tasks])
        again = await second.result(timeout=60)
    finally:
        await redis.aclose()

    assert outcome["failures"] == 0 and outcome["institutions"] >= len(world.institution_ids)
    assert outcome["created"] >= 7 * 24 - 1 and outcome["escalated"] >= 2
    due = [moment for moment, _ in after_first]
    assert len(due) == len(set(due))
    assert min(due) > earlier and max(due) >= now + timedelta(days=6, hours=23)
    overdue = [(moment, at) for moment, at in after_first if moment + timedelta(minutes=35) < now]
    assert len(overdue) >= 2 and all(at == now for _, at in overdue)
    assert all(at is None for moment, at in after_first if moment + timedelta(minutes=35) >= now)
    # A second run: nothing new in this institution, nothing escalated twice.
    assert await run_in_tenant(tenant, state) == after_first
    assert again["failures"] == 0


def test_the_sweep_runs_every_15_minutes() -> None:
    (job,) = [c for c in LongWorkerSettings.cron_jobs if c.name == "cron:materialize_care_tasks"]
    assert job.minute == set(CRON_MINUTES) == {0, 15, 30, 45} and job.unique
    assert MATERIALIZE in LongWorkerSettings.functions and MATERIALIZE.coroutine is job.coroutine
    assert job_id(datetime(2026, 12, 1, 18, 30, 59, tzinfo=UTC)) == "care-tasks:20261201T1830"

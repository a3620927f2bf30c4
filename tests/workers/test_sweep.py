"""The sweep every minute (workers/sweep.py) on real Redis, real arq workers, real PostgreSQL and a real
SMTP server, with an explicit `now`: overdue tasks of several institutions escalated and delivered to
the inbox and by e-mail once; the same job id enqueued twice is one job; two jobs of the same minute
under different ids, even run at once by two workers, have the effect of one."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta

import pytest
from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

from api.settings import Settings
from tests.care.notification_support import MAIL_FROM, MailRoom, smtp_server
from tests.conftest import World
from tests.workers.arq_support import run_burst
from tests.workers.sweep_support import Overdue, escalated, inbox_of, outbox_states, overdue_institution
from workers.settings import SWEEP, ShortWorkerSettings
from workers.sweep import job_id


@pytest.fixture
async def mail_room(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MailRoom]:
    async with smtp_server() as room:
        monkeypatch.setenv("YIYANG_SMTP_URL", f"smtp://127.0.0.1:{room.settings.port}")
        monkeypatch.setenv("YIYANG_MAIL_FROM", MAIL_FROM)
        yield room


@pytest.fixture
async def queue(settings: Settings) -> AsyncIterator[tuple[ArqRedis, str]]:
    redis = await create_pool(RedisSettings.from_dsn(settings.redis_url))
    try:
        yield redis, f"yiyang:test:{uuid.uuid4().hex}"
    finally:
        await redis.aclose()


def minute() -> datetime:
    return datetime.now(UTC).replace(second=0, microsecond=0)


async def assert_delivered_once(setup: Overdue, now: datetime, mail_room: MailRoom) -> None:
    assert await escalated(setup.tenant, setup.task_ids) == {task: now for task in setup.task_ids}
    assert await inbox_of(setup.tenant, setup.lead.id) == sorted(setup.task_ids)
    assert await outbox_states(setup.tenant) == {"delivered": len(setup.task_ids)}
    assert len(mail_room.to(setup.lead.login)) == len(setup.task_ids)


async def test_one_sweep_escalates_and_delivers_in_every_institution_once(
    app: object, world: World, settings: Settings, mail_room: MailRoom, queue: tuple[ArqRedis, str]
) -> None:
    redis, name = queue
    now = minute()
    first, second = [await overdue_institution("巡检", now, residents=2, tasks=4) for _ in range(2)]
    redis_settings = RedisSettings.from_dsn(settings.redis_url)
    this_minute = job_id(now)
    # arq keeps a job's result under its id: a run of this test in the same minute before (same Redis).
    await redis.delete(f"arq:job:{this_minute}", f"arq:result:{this_minute}")
    job = await redis.enqueue_job("sweep_due", now=now, _queue_name=name, _job_id=this_minute)
    assert job is not None
    # The same minute's job again (a second scheduler): not enqueued.
    assert await redis.enqueue_job("sweep_due", now=now, _queue_name=name, _job_id=this_minute) is None
    await run_burst(redis_settings, name, [SWEEP])
    outcome = await job.result(timeout=60)
    assert outcome["institutions"] >= len(world.institution_ids) + 2
    assert outcome["escalated_tasks"] >= 16 and outcome["notifications"] >= 16
    for setup in (first, second):
        await assert_delivered_once(setup, now, mail_room)

    # The same minute under another id (a retry, a scheduler with another clock): nothing more.
    again = await redis.enqueue_job("sweep_due", now=now, _queue_name=name, _job_id=f"{name}-again")
    assert again is not None
    await run_burst(redis_settings, name, [SWEEP])
    await again.result(timeout=60)
    for setup in (first, second):
        await assert_delivered_once(setup, now, mail_room)


async def test_two_ids_of_one_minute_run_at_once_have_one_effect(
    app: object, world: World, settings: Settings, mail_room: MailRoom, queue: tuple[ArqRedis, str]
) -> None:
    redis, name = queue
    now = minute()
    setups = [await overdue_institution("双跑", now, residents=2, tasks=15) for _ in range(3)]
    redis_settings = RedisSettings.from_dsn(settings.redis_url)
    jobs = [
        await redis.enqueue_job("sweep_due", now=now, batch=7, _queue_name=name, _job_id=f"{name}-{n}")
        for n in range(2)
    ]
    await asyncio.gather(*(run_burst(redis_settings, name, [SWEEP]) for _ in range(2)))
    outcomes = [await job.result(timeout=60) for job in jobs if job is not None]
    assert len(outcomes) == 2
    assert sum(outcome["escalated_tasks"] for outcome in outcomes) >= 90
    for setup in setups:
        await assert_delivered_once(setup, now, mail_room)


def test_the_sweep_runs_every_minute_on_the_short_queue() -> None:
    (job,) = [c for c in ShortWorkerSettings.cron_jobs if c.name == "cron:sweep_due"]
    assert job.unique and job.second == 0 and job.minute is None and job.coroutine is SWEEP.coroutine
    assert job.max_tries == SWEEP.max_tries and job.max_tries > 1  # a cron's own default is one try
    assert ShortWorkerSettings.queue_name.endswith(":short")
    assert job_id(datetime(2026, 12, 1, 18, 30, 59, tzinfo=UTC)) == "sweep:20261201T1830"


async def test_the_sweep_reminds_the_butler_of_due_sop_steps_once(app: object, world: World) -> None:
    from zoneinfo import ZoneInfo

    from care import sops
    from care.models import CareLevel, Gender
    from care.residents import Admission, admit_resident
    from compliance.principals import StaffRole
    from tenants.db import default_connection
    from tenants.unit_of_work import run_in_tenant
    from tests.care.notification_support import staff_account
    from tests.compliance.audit_support import fresh_tenant
    from workers.sweep import sweep_due

    tenant = await fresh_tenant(f"入住提醒-{uuid.uuid4().hex[:6]}")
    butler = await staff_account(tenant.institution_id, StaffRole.BUTLER)
    today = datetime.now(ZoneInfo(tenant.time_zone)).date()

    async def admit() -> list[tuple[int, datetime]]:
        resident = await admit_resident(
            Admission("新入住长者", Gender.MALE, date(1938, 5, 6), CareLevel.ASSISTED, today)
        )
        await sops.assign_butler(resident.id, butler.id, by="account:1")
        return sorted(
            (step.due_at, step.id)
            for instance in await sops.instances_of(resident.id)
            for step in instance.steps
        )

    steps = await run_in_tenant(tenant, admit)
    first_due = steps[0][0]  # the day-3 call of the default 30-day plan
    now = first_due + timedelta(minutes=1)  # the clock of the sweep, days ahead
    due = sorted(step_id for due_at, step_id in steps if due_at <= now)
    assert due
    ctx = {"mailer": None, "webhook_sender": None}
    for _ in range(2):  # the second sweep finds nothing new
        await sweep_due(ctx, now=now, institution_ids=[tenant.institution_id])
        rows = await default_connection().execute_query_dict(
            f"""SELECT o.subject_id FROM "{tenant.schema_name}".notification_inbox i
                JOIN "{tenant.schema_name}".notification_outbox o ON o.id = i.outbox_id
                WHERE i.account_id = $1 AND o.kind = 'sop.step_due'""",
            [butler.id],
        )
        assert sorted(row["subject_id"] for row in rows) == due


async def test_the_sweep_escalates_a_work_order_past_its_sla_once(app: object, world: World) -> None:
    from care import work_orders as wo
    from compliance.principals import StaffRole
    from tenants.db import default_connection
    from tenants.unit_of_work import run_in_tenant
    from tests.care.notification_support import staff_account
    from tests.compliance.audit_support import fresh_tenant
    from workers.sweep import sweep_due

    tenant = await fresh_tenant(f"工单巡检-{uuid.uuid4().hex[:6]}")
    await staff_account(tenant.institution_id, StaffRole.HEAD_NURSE)
    raised_at = datetime.now(UTC) - timedelta(hours=1)

    async def raise_one() -> int:
        new = wo.NewWorkOrder(
            kind="request", category="care", priority="urgent", title="呼叫器无响应", description="夜间呼叫器"
        )
        return (
            await wo.raise_work_order(new, wo.Requester(wo.RequesterKind.STAFF, 880_101), now=raised_at)
        ).id

    order = await run_in_tenant(tenant, raise_one)
    ctx = {"mailer": None, "webhook_sender": None}
    swept = [await sweep_due(ctx, institution_ids=[tenant.institution_id]) for _ in range(2)]
    assert [outcome["sla_escalated"] for outcome in swept] == [1, 0]  # once, by the first sweep
    rows = await default_connection().execute_query_dict(
        f"""SELECT state FROM "{tenant.schema_name}".notification_outbox
            WHERE kind = 'work_order.sla_breached' AND subject_id = $1""",
        [order],
    )
    assert [row["state"] for row in rows] == ["delivered"]  # delivered by the same sweep

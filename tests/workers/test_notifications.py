"""The notification delivery job, enqueued on real Redis and run by real arq workers against real
PostgreSQL, mailing a real SMTP server: the same job enqueued twice runs once, two workers at once
deliver each notification once, and a tenant with more than a batch waiting is drained."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from arq import create_pool
from arq.connections import RedisSettings

from api.settings import ConfigurationError, Settings, SmtpSettings, smtp_setting
from care.notifications import notify
from compliance.principals import StaffRole
from tenants.context import TenantRef
from tenants.db import default_connection
from tenants.unit_of_work import run_in_tenant
from tests.care.notification_support import MAIL_FROM, MailRoom, overdue_task, smtp_server, staff_account
from tests.compliance.audit_support import fresh_tenant
from tests.conftest import World
from tests.workers.arq_support import run_burst
from workers.notifications import deliver_notifications
from workers.settings import DELIVER, ShortWorkerSettings


@pytest.fixture
async def mail_room(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[MailRoom]:
    async with smtp_server() as room:
        monkeypatch.setenv("YIYANG_SMTP_URL", f"smtp://127.0.0.1:{room.settings.port}")
        monkeypatch.setenv("YIYANG_MAIL_FROM", MAIL_FROM)
        yield room


async def caused(tenant: TenantRef, count: int) -> None:
    async def cause() -> None:
        for task in range(count):
            await notify(overdue_task(task))

    await run_in_tenant(tenant, cause)


async def inbox_pairs(tenant: TenantRef) -> list[tuple[int, int]]:
    rows = await default_connection().execute_query_dict(
        f'SELECT outbox_id, account_id FROM "{tenant.schema_name}".notification_inbox'
    )
    return [(row["outbox_id"], row["account_id"]) for row in rows]


async def states(tenant: TenantRef) -> set[str]:
    rows = await default_connection().execute_query_dict(
        f'SELECT DISTINCT state FROM "{tenant.schema_name}".notification_outbox'
    )
    return {row["state"] for row in rows}


async def test_the_same_job_enqueued_twice_delivers_once(
    app: object, world: World, settings: Settings, mail_room: MailRoom
) -> None:
    tenant = await fresh_tenant(f"通知作业-{uuid.uuid4().hex[:6]}")
    lead = await staff_account(tenant.institution_id, StaffRole.HEAD_NURSE)
    await caused(tenant, 5)
    redis_settings = RedisSettings.from_dsn(settings.redis_url)
    queue = f"yiyang:test:{uuid.uuid4().hex}"
    redis = await create_pool(redis_settings)
    try:
        job_id = f"deliver-{queue}"
        job = await redis.enqueue_job("deliver_notifications", _queue_name=queue, _job_id=job_id)
        assert await redis.enqueue_job("deliver_notifications", _queue_name=queue, _job_id=job_id) is None
        await run_burst(redis_settings, queue, [deliver_notifications])
        outcome: dict[str, Any] = await job.result(timeout=60)
        # Run again (the next minute's job): nothing is left to deliver here.
        again = await redis.enqueue_job("deliver_notifications", _queue_name=queue, _job_id=f"{job_id}-2")
        await run_burst(redis_settings, queue, [deliver_notifications])
        await again.result(timeout=60)
    finally:
        await redis.aclose()
    assert outcome["failures"] == 0 and outcome["delivered"] >= 5
    assert len(await inbox_pairs(tenant)) == 5
    assert await states(tenant) == {"delivered"}
    assert len(mail_room.to(lead.login)) == 5


async def test_two_workers_at_once_deliver_each_notification_once(
    app: object, world: World, settings: Settings, mail_room: MailRoom
) -> None:
    tenant = await fresh_tenant(f"通知双工-{uuid.uuid4().hex[:6]}")
    lead = await staff_account(tenant.institution_id, StaffRole.HEAD_NURSE)
    nurse = await staff_account(tenant.institution_id, StaffRole.HEAD_NURSE)
    await caused(tenant, 30)
    redis_settings = RedisSettings.from_dsn(settings.redis_url)
    queue = f"yiyang:test:{uuid.uuid4().hex}"
    redis = await create_pool(redis_settings)
    try:
        jobs = [
            await redis.enqueue_job("deliver_notifications", _queue_name=queue, _job_id=f"{queue}-{n}")
            for n in range(4)
        ]
        await asyncio.gather(*(run_burst(redis_settings, queue, [deliver_notifications]) for _ in range(2)))
        outcomes = [await job.result(timeout=60) for job in jobs if job is not None]
    finally:
        await redis.aclose()
    assert all(outcome["failures"] == 0 for outcome in outcomes)
    pairs = await inbox_pairs(tenant)
    assert len(pairs) == len(set(pairs)) == 60
    assert await states(tenant) == {"delivered"}
    assert len(mail_room.to(lead.login)) == 30 and len(mail_room.to(nurse.login)) == 30


async def test_a_tenant_with_more_than_a_batch_is_drained(
    app: object, world: World, mail_room: MailRoom
) -> None:
    tenant = await fresh_tenant(f"通知批量-{uuid.uuid4().hex[:6]}")
    lead = await staff_account(tenant.institution_id, StaffRole.HEAD_NURSE)
    await caused(tenant, 11)
    outcome = await deliver_notifications({}, batch=4)
    assert outcome["failures"] == 0
    assert len(await inbox_pairs(tenant)) == 11
    assert await states(tenant) == {"delivered"}
    assert len(mail_room.to(lead.login)) == 11


def test_deliveries_run_every_minute_under_a_deterministic_id() -> None:
    # The sweep every minute delivers (workers/sweep.py); the job alone stays for a manual run.
    (job,) = [job for job in ShortWorkerSettings.cron_jobs if job.name == "cron:sweep_due"]
    assert job.unique and job.second == 0 and job.minute is None
    assert DELIVER in ShortWorkerSettings.functions


def test_smtp_settings_are_read_from_the_environment() -> None:
    assert smtp_setting({}) is None
    given = smtp_setting(
        {
            "YIYANG_SMTP_URL": "smtp://mailer:p%40ss@mail.example.com:587?starttls=true",
            "YIYANG_MAIL_FROM": "notify@example.com",
        }
    )
    assert given == SmtpSettings(
        host="mail.example.com",
        port=587,
        mail_from="notify@example.com",
        username="mailer",
        password="p@ss",
        starttls=True,
    )
    plain = smtp_setting({"YIYANG_SMTP_URL": "smtp://127.0.0.1", "YIYANG_MAIL_FROM": "a@b.cn"})
    assert plain is not None and (plain.port, plain.starttls, plain.username) == (25, False, None)
    for bad in (
        "http://mail.example.com",
        "smtp://",
        "smtp://h:99999",
        "smtp://h?starttls=maybe",
        "smtp://h?x=1",
    ):
        with pytest.raises(ConfigurationError) as refused:
            smtp_setting({"YIYANG_SMTP_URL": bad, "YIYANG_MAIL_FROM": "a@b.cn"})
        assert "YIYANG_SMTP_URL" in str(refused.value)
    with pytest.raises(ConfigurationError, match="YIYANG_MAIL_FROM"):
        smtp_setting({"YIYANG_SMTP_URL": "smtp://u:secret@h"})
    with pytest.raises(ConfigurationError) as hidden:
        smtp_setting({"YIYANG_SMTP_URL": "smtps://u:secret@h", "YIYANG_MAIL_FROM": "a@b.cn"})
    assert "secret" not in str(hidden.value)

"""Notifications in the domain (care/notifications.py): the outbox in the cause's unit of work, one row per
cause, delivery to role recipients' inboxes and by e-mail through a real SMTP server, retries with
backoff, the dead-letter state, and no health data anywhere."""

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from babel.messages.pofile import read_po

from care import notifications, vitals
from care.models import CareLevel, Gender
from care.notifications import (
    EMAIL_TEXTS,
    MAX_ATTEMPTS,
    MESSAGES,
    VITAL_NEEDS_ATTENTION,
    Channel,
    Notification,
    SmtpMailer,
    backoff,
    deliver_pending,
    notify,
)
from care.residents import Admission, admit_resident
from compliance.principals import StaffRole
from schema.i18n import CATALOG_DIR
from tenants.context import TenantRef
from tenants.db import default_connection
from tenants.unit_of_work import run_in_tenant
from tests.care.notification_support import (
    MailRoom,
    overdue_task,
    smtp_server,
    staff_account,
    unreachable_smtp,
)
from tests.compliance.audit_support import fresh_tenant
from tests.conftest import World


@pytest.fixture
async def mail_room() -> AsyncIterator[MailRoom]:
    async with smtp_server() as room:
        yield room


async def outbox(tenant: TenantRef) -> list[dict[str, Any]]:
    return await default_connection().execute_query_dict(
        f'SELECT * FROM "{tenant.schema_name}".notification_outbox ORDER BY id'
    )


async def inbox(tenant: TenantRef) -> list[dict[str, Any]]:
    return await default_connection().execute_query_dict(
        f'SELECT * FROM "{tenant.schema_name}".notification_inbox ORDER BY outbox_id, account_id'
    )


async def email_log(tenant: TenantRef) -> list[dict[str, Any]]:
    return await default_connection().execute_query_dict(
        f'SELECT * FROM "{tenant.schema_name}".notification_email ORDER BY id'
    )


async def deliver(tenant: TenantRef, now: datetime, mailer: Any) -> notifications.Delivery:
    return await run_in_tenant(tenant, lambda: deliver_pending(now, mailer, limit=50))


def soon() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=5)


async def test_the_outbox_row_commits_and_rolls_back_with_its_cause(world: World) -> None:
    tenant = await fresh_tenant(f"通知事务-{uuid.uuid4().hex[:6]}")

    class Undone(Exception):
        pass

    async def cause_then_fail() -> None:
        await notify(overdue_task(1))
        raise Undone

    with pytest.raises(Undone):
        await run_in_tenant(tenant, cause_then_fail)
    assert await outbox(tenant) == []

    async def cause() -> int | None:
        return await notify(overdue_task(2))

    written = await run_in_tenant(tenant, cause)
    rows = await outbox(tenant)
    assert [row["id"] for row in rows] == [written]
    assert rows[0]["state"] == "pending" and rows[0]["attempts"] == 0
    assert rows[0]["recipient_roles"] == ["head_nurse"]


async def test_one_cause_notifies_once(world: World) -> None:
    tenant = await fresh_tenant(f"通知幂等-{uuid.uuid4().hex[:6]}")
    notification = overdue_task(7)

    async def twice() -> tuple[int | None, int | None]:
        return await notify(notification), await notify(notification)

    first, second = await run_in_tenant(tenant, twice)
    again = await run_in_tenant(tenant, lambda: notify(notification))
    assert first is not None and second is None and again is None
    assert len(await outbox(tenant)) == 1


async def test_role_recipients_get_it_in_the_inbox_and_by_email_once(
    world: World, mail_room: MailRoom
) -> None:
    tenant = await fresh_tenant(f"通知投递-{uuid.uuid4().hex[:6]}")
    lead = await staff_account(tenant.institution_id, StaffRole.HEAD_NURSE)
    by_phone = await staff_account(tenant.institution_id, StaffRole.HEAD_NURSE, email=False)
    caregiver = await staff_account(tenant.institution_id, StaffRole.CAREGIVER)
    elsewhere = await fresh_tenant(f"通知他院-{uuid.uuid4().hex[:6]}")
    other_lead = await staff_account(elsewhere.institution_id, StaffRole.HEAD_NURSE)
    named = await staff_account(tenant.institution_id, StaffRole.LOGISTICS)

    async def cause() -> None:
        await notify(overdue_task(11))
        # A named account of another institution is told nothing.
        await notify(overdue_task(12, roles=frozenset(), account_ids=frozenset({named.id, other_lead.id})))

    await run_in_tenant(tenant, cause)
    mailer = SmtpMailer(mail_room.settings)
    first = await deliver(tenant, soon(), mailer)
    assert (first.claimed, first.delivered, first.inbox_rows, first.emails_sent) == (2, 2, 3, 2)
    second = await deliver(tenant, soon(), mailer)
    assert second.claimed == 0

    rows = await inbox(tenant)
    assert {(row["outbox_id"], row["account_id"]) for row in rows} == {
        (rows[0]["outbox_id"], lead.id),
        (rows[0]["outbox_id"], by_phone.id),
        (rows[-1]["outbox_id"], named.id),
    }
    assert caregiver.id not in {row["account_id"] for row in rows}
    assert [row["state"] for row in await outbox(tenant)] == ["delivered", "delivered"]
    assert len(mail_room.to(lead.login)) == 1 and len(mail_room.to(named.login)) == 1
    assert len(mail_room.received) == 2
    message = mail_room.to(lead.login)[0]
    body = message.get_content()
    assert body.index("一位长者的护理任务已逾期。") < body.index("A care task for a resident is overdue.")
    assert message["Subject"] == "颐养通知 / Yiyang notification"
    assert message["From"] == "notify@yiyang.test"
    logged = await email_log(tenant)
    assert {row["address"] for row in logged} == {lead.login, named.login}
    assert all(row["sent_at"] is not None and row["smtp_response"].startswith("250") for row in logged)


async def test_two_deliveries_at_once_deliver_once(world: World, mail_room: MailRoom) -> None:
    tenant = await fresh_tenant(f"通知并发-{uuid.uuid4().hex[:6]}")
    lead = await staff_account(tenant.institution_id, StaffRole.HEAD_NURSE)

    async def cause() -> None:
        for task in range(20):
            await notify(overdue_task(task))

    await run_in_tenant(tenant, cause)
    mailer = SmtpMailer(mail_room.settings)
    now = soon()
    runs = await asyncio.gather(*(deliver(tenant, now, mailer) for _ in range(3)))
    assert sum(run.delivered for run in runs) == 20
    assert len(await inbox(tenant)) == 20
    assert len(mail_room.to(lead.login)) == 20


async def test_mail_server_down_is_retried_with_backoff_then_delivered(
    app: object, mail_room: MailRoom
) -> None:
    tenant = await fresh_tenant(f"通知重试-{uuid.uuid4().hex[:6]}")
    lead = await staff_account(tenant.institution_id, StaffRole.HEAD_NURSE)
    await run_in_tenant(tenant, lambda: notify(overdue_task(21)))
    now = soon()

    down = await deliver(tenant, now, SmtpMailer(unreachable_smtp(), timeout=2))
    assert (down.delivered, down.retried) == (0, 1)
    (row,) = await outbox(tenant)
    assert row["state"] == "pending" and row["attempts"] == 1
    assert row["next_attempt_at"] == now + backoff(1) == now + timedelta(minutes=1)
    assert row["last_error"]
    assert len(await inbox(tenant)) == 1  # the in-app channel does not wait for the mail server
    (logged,) = await email_log(tenant)
    assert logged["sent_at"] is None

    working = SmtpMailer(mail_room.settings)
    early = await deliver(tenant, now + timedelta(seconds=30), working)
    assert early.claimed == 0 and mail_room.received == []
    later = await deliver(tenant, now + timedelta(seconds=61), working)
    assert later.delivered == 1
    (row,) = await outbox(tenant)
    assert row["state"] == "delivered" and row["attempts"] == 2 and row["last_error"] is None
    assert len(mail_room.to(lead.login)) == 1
    assert len(await inbox(tenant)) == 1


async def test_dead_after_the_last_attempt(world: World) -> None:
    tenant = await fresh_tenant(f"通知死信-{uuid.uuid4().hex[:6]}")
    await staff_account(tenant.institution_id, StaffRole.HEAD_NURSE)
    await run_in_tenant(tenant, lambda: notify(overdue_task(31)))
    down = SmtpMailer(unreachable_smtp(), timeout=2)
    now = soon()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        run = await deliver(tenant, now, down)
        assert run.claimed == 1, attempt
        now += backoff(attempt)
    assert run.dead == 1
    (row,) = await outbox(tenant)
    assert row["state"] == "dead" and row["attempts"] == MAX_ATTEMPTS
    assert (await deliver(tenant, now + timedelta(days=1), down)).claimed == 0
    assert [backoff(n) for n in (1, 2, 3, 8)] == [
        timedelta(minutes=1),
        timedelta(minutes=2),
        timedelta(minutes=4),
        timedelta(hours=1),
    ]


async def test_without_smtp_the_inbox_still_gets_it(world: World, caplog: pytest.LogCaptureFixture) -> None:
    tenant = await fresh_tenant(f"通知无邮件-{uuid.uuid4().hex[:6]}")
    lead = await staff_account(tenant.institution_id, StaffRole.HEAD_NURSE)
    await run_in_tenant(tenant, lambda: notify(overdue_task(41)))
    with caplog.at_level("INFO", logger="care.notifications"):
        run = await deliver(tenant, soon(), None)
    assert run.delivered == 1
    assert [row["account_id"] for row in await inbox(tenant)] == [lead.id]
    assert await email_log(tenant) == []
    assert "no SMTP configured" in caplog.text


async def test_in_app_only_sends_no_mail(world: World, mail_room: MailRoom) -> None:
    tenant = await fresh_tenant(f"通知站内-{uuid.uuid4().hex[:6]}")
    await staff_account(tenant.institution_id, StaffRole.HEAD_NURSE)
    await run_in_tenant(tenant, lambda: notify(overdue_task(51, channels=frozenset({Channel.IN_APP}))))
    assert (await deliver(tenant, soon(), SmtpMailer(mail_room.settings))).delivered == 1
    assert mail_room.received == [] and len(await inbox(tenant)) == 1


async def test_a_notification_about_a_vital_reading_holds_no_value(world: World, mail_room: MailRoom) -> None:
    tenant = await fresh_tenant(f"通知无健康数据-{uuid.uuid4().hex[:6]}")
    lead = await staff_account(tenant.institution_id, StaffRole.HEAD_NURSE)

    async def measure_and_notify() -> None:
        resident = await admit_resident(
            Admission("钱桂兰", Gender.FEMALE, date(1936, 2, 2), CareLevel.ASSISTED, date(2026, 1, 5))
        )
        reading = await vitals.record_reading(
            resident.id,
            vitals.NewReading(vitals.Measure.GLUCOSE, Decimal("17.9"), context=vitals.GlucoseContext.FASTING),
            vitals.Recorder("account:1", vitals.Source.STAFF),
        )
        await notify(
            Notification(
                kind="vital.out_of_range",
                message=VITAL_NEEDS_ATTENTION,
                idempotency_key=f"vital.out_of_range:{reading.id}",
                roles=frozenset({StaffRole.HEAD_NURSE}),
                params={"reading_id": reading.id},
                resident_id=resident.id,
                subject_type="VitalReading",
                subject_id=reading.id,
            )
        )

    await run_in_tenant(tenant, measure_and_notify)
    await deliver(tenant, soon(), SmtpMailer(mail_room.settings))
    stored = repr(await outbox(tenant)) + repr(await inbox(tenant)) + repr(await email_log(tenant))
    (message,) = mail_room.to(lead.login)
    for text in (stored, message.as_string()):
        assert "17.9" not in text and "glucose" not in text.lower() and "血糖" not in text
        assert "钱桂兰" not in text  # nor the resident's name: an id, shown through the decision point

    with pytest.raises(ValueError, match="id or a count"):
        overdue_task(1, params={"glucose": "17.9"})
    with pytest.raises(ValueError, match="id or a count"):
        overdue_task(1, params={"glucose": Decimal("17.9")})
    with pytest.raises(ValueError, match="unknown notification message"):
        overdue_task(1, message="Glucose 17.9 mmol/L for resident 钱桂兰")


def test_every_notification_text_is_translated() -> None:
    with (CATALOG_DIR / "zh_CN.po").open("rb") as handle:
        translated = {message.id for message in read_po(handle) if message.id and message.string}
    assert sorted((set(MESSAGES) | set(EMAIL_TEXTS)) - translated) == []


async def test_a_delivery_that_dies_midway_loses_nothing(world: World, mail_room: MailRoom) -> None:
    tenant = await fresh_tenant(f"通知中断-{uuid.uuid4().hex[:6]}")
    lead = await staff_account(tenant.institution_id, StaffRole.HEAD_NURSE)

    async def cause() -> None:
        for task in range(5):
            await notify(overdue_task(task))

    await run_in_tenant(tenant, cause)
    working = SmtpMailer(mail_room.settings)

    class Killed(BaseException):
        """The process dying: no handler of ours runs, the transaction never commits."""

    class DiesOnTheThird:
        sent = 0

        async def send(self, email: notifications.Email) -> str:
            if self.sent == 2:
                raise Killed
            self.sent += 1
            return await working.send(email)

    now = soon()
    with pytest.raises(Killed):
        await deliver(tenant, now, DiesOnTheThird())
    assert {row["state"] for row in await outbox(tenant)} == {"pending"}
    assert await inbox(tenant) == [] and await email_log(tenant) == []

    assert (await deliver(tenant, now, working)).delivered == 5
    assert len(await inbox(tenant)) == 5
    # At least once: the two accepted before the crash are sent again, none is lost.
    assert len(mail_room.to(lead.login)) == 7
    assert len({row["outbox_id"] for row in await email_log(tenant)}) == 5


async def test_a_row_that_fails_unexpectedly_does_not_hold_up_the_others(world: World) -> None:
    tenant = await fresh_tenant(f"通知毒行-{uuid.uuid4().hex[:6]}")
    await staff_account(tenant.institution_id, StaffRole.HEAD_NURSE)

    async def cause() -> None:
        await notify(overdue_task(61))
        await notify(overdue_task(62, channels=frozenset({Channel.IN_APP})))

    await run_in_tenant(tenant, cause)

    class Broken:
        async def send(self, email: notifications.Email) -> str:
            raise RuntimeError("a bug, not the mail server")

    run = await deliver(tenant, soon(), Broken())
    assert (run.delivered, run.retried) == (1, 1)
    failed, fine = await outbox(tenant)
    assert (failed["state"], failed["attempts"], failed["last_error"]) == (
        "pending",
        1,
        "RuntimeError: could not be delivered",
    )
    assert fine["state"] == "delivered"
    # The failed row's work was undone with its savepoint: its inbox row comes with the retry.
    assert [row["outbox_id"] for row in await inbox(tenant)] == [fine["id"]]

"""Helpers of the notification tests: a real SMTP server (aiosmtpd) on 127.0.0.1, staff accounts with a
role in an institution, a notification about a resident."""

import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage

from aiosmtpd.controller import Controller

from api.settings import SmtpSettings
from care.notifications import TASK_OVERDUE, Notification
from compliance.identity.account_models import AccountKind, UserAccount
from compliance.identity.accounts import NewAccount, add_staff_membership, create_account
from compliance.principals import StaffRole

MAIL_FROM = "notify@yiyang.test"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class MailRoom:
    """What the SMTP server received: one parsed message per recipient address."""

    settings: SmtpSettings
    received: list[tuple[str, EmailMessage]] = field(default_factory=list)

    def to(self, address: str) -> list[EmailMessage]:
        return [message for recipient, message in self.received if recipient == address]

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        parsed = message_from_bytes(envelope.content, policy=policy.default)  # type: ignore[attr-defined]
        for recipient in envelope.rcpt_tos:  # type: ignore[attr-defined]
            self.received.append((recipient, parsed))  # type: ignore[arg-type]
        return "250 Message accepted for delivery"


@asynccontextmanager
async def smtp_server() -> AsyncIterator[MailRoom]:
    """A real SMTP server on a free port of 127.0.0.1 for the block (tests' `mail_room` fixtures)."""
    port = free_port()
    room = MailRoom(SmtpSettings(host="127.0.0.1", port=port, mail_from=MAIL_FROM))
    controller = Controller(room, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield room
    finally:
        controller.stop()


def unreachable_smtp() -> SmtpSettings:
    """A mail server that is down: nothing listens on the port."""
    return SmtpSettings(host="127.0.0.1", port=free_port(), mail_from=MAIL_FROM)


async def staff_account(institution_id: int, role: StaffRole, *, email: bool = True) -> UserAccount:
    login = f"n-{uuid.uuid4().hex[:12]}@example.com" if email else f"139{uuid.uuid4().int % 10**8:08d}"
    account = await create_account(NewAccount(AccountKind.STAFF, login, "通知测试", "notification-password"))
    await add_staff_membership(account, institution_id, role)
    return account


def overdue_task(task_id: int, *, resident_id: int | None = None, **changes: object) -> Notification:
    values: dict[str, object] = {
        "kind": "task.overdue",
        "message": TASK_OVERDUE,
        "idempotency_key": f"task.overdue:{task_id}:{uuid.uuid4().hex[:8]}",
        "roles": frozenset({StaffRole.HEAD_NURSE}),
        "params": {"task_id": task_id},
        "resident_id": resident_id,
        "subject_type": "CareTask",
        "subject_id": task_id,
    }
    values.update(changes)
    return Notification(**values)  # type: ignore[arg-type]

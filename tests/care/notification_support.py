"""Helpers of the notification tests: a real SMTP server (aiosmtpd) on 127.0.0.1, a real webhook receiver
(HTTP) on 127.0.0.1, staff accounts with a role in an institution, an integrator client and a resident's
consent to it, a notification about a resident."""

import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller

from api.settings import SmtpSettings
from care.notifications import TASK_OVERDUE, Notification
from care.webhooks import SIGNATURE_HEADER, verify_signature
from compliance.consent import (
    Category,
    Grantee,
    GranteeKind,
    Grantor,
    NewConsent,
    Purpose,
    RecordingMethod,
)
from compliance.identity.account_models import AccountKind, UserAccount
from compliance.identity.accounts import NewAccount, add_staff_membership, create_account
from compliance.identity.clients import CreatedClient, create_integrator_client
from compliance.principals import StaffRole
from tenants.context import TenantRef

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
async def smtp_server(room_class: type[MailRoom] = MailRoom) -> AsyncIterator[MailRoom]:
    """A real SMTP server on a free port of 127.0.0.1 for the block (tests' `mail_room` fixtures), handled
    by a `room_class` (a subclass may answer slowly: tests/workers/test_worker_process.py)."""
    port = free_port()
    room = room_class(SmtpSettings(host="127.0.0.1", port=port, mail_from=MAIL_FROM))
    controller = Controller(room, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield room
    finally:
        controller.stop()


def unreachable_smtp() -> SmtpSettings:
    """A mail server that is down: nothing listens on the port."""
    return SmtpSettings(host="127.0.0.1", port=free_port(), mail_from=MAIL_FROM)


@dataclass
class Received:
    body: bytes
    headers: dict[str, str]
    verified: bool

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """An HTTP server on 127.0.0.1 that verifies each request's signature as an integrator would (with
    `verify_signature` and its clock `now`) and answers with the next of `statuses` (then 200); an
    unverified request gets 400."""

    url: str
    secret: str = ""
    now: float | None = None  # None: the real clock, as a real receiver's
    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    @property
    def verified(self) -> list[Received]:
        return [request for request in self.received if request.verified]


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def do_POST(self) -> None:
        receiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        now = time.time() if receiver.now is None else receiver.now
        verified = verify_signature(receiver.secret, self.headers.get(SIGNATURE_HEADER, ""), body, now)
        receiver.received.append(Received(body, dict(self.headers.items()), verified))
        status = (receiver.statuses.pop(0) if receiver.statuses else 200) if verified else 400
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return


class _Server(ThreadingHTTPServer):
    receiver: Receiver


def running_receiver() -> Iterator[Receiver]:
    server = _Server(("127.0.0.1", 0), _Handler)
    server.receiver = Receiver(url=f"http://127.0.0.1:{server.server_address[1]}/hooks/yiyang")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.receiver
    finally:
        server.shutdown()
        server.server_close()


async def integrator(tenant: TenantRef, name: str = "对接测试") -> CreatedClient:
    """An integrator client of the tenant's institution (the owner of webhook endpoints)."""
    return await create_integrator_client(
        name,
        scopes=["residents:read", "webhooks:manage"],
        created_by="test",
        institution_id=tenant.institution_id,
    )


def integrator_consent(resident_id: int, client_id: str, categories: frozenset[Category]) -> NewConsent:
    """The resident's consent (on paper) to the integrator client's receiving `categories`: what an
    integrator needs besides its scope (compliance/consent.py)."""
    return NewConsent(
        resident_id=resident_id,
        grantor=Grantor(),
        grantee=Grantee(GranteeKind.INTEGRATOR, client_id=client_id),
        purposes=frozenset({Purpose.THIRD_PARTY_INTEGRATION}),
        categories=categories,
        notice_version="v1",
        notice_sha256="ab" * 32,
        method=RecordingMethod.PAPER_SIGNATURE_SCANNED,
    )


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

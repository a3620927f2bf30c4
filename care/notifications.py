"""Notifications: an outbox written with the change that causes it, delivered by a worker to the in-app
inbox and by e-mail (migrations/tenant/0020_notifications.sql).

`notify` writes in the caller's unit of work, so a change that rolls back notifies nobody and a change
that commits cannot lose its notification. Its idempotency key names the cause: the same cause notified
twice (a job run twice) is one row. `deliver_pending` (workers/notifications.py runs it every minute in
every institution) claims due rows with `FOR UPDATE SKIP LOCKED`, so two workers never deliver the same
row at once, and writes inbox rows and e-mail log rows with ON CONFLICT DO NOTHING, so a retry never
delivers twice. A failed e-mail is retried with exponential backoff; after `MAX_ATTEMPTS` the row is
dead (a dead-letter state an administrator retries later). A row that fails otherwise (a bug, bad data)
is undone alone, in a savepoint, and retried the same way, so it cannot hold up the rows behind it.

No health data in a notification: a message names what happened and whom it concerns by id ("a vital
sign of a resident needs attention"), its parameters are whole numbers (ids, counts), never a value or a
diagnosis. The inbox shows the resident through the decision point when it is read; an e-mail says only
that something happened.
"""

import asyncio
import json
import logging
import smtplib
import ssl
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from tortoise.backends.base.client import BaseDBAsyncClient

from compliance.principals import StaffRole
from schema.i18n import translate  # the catalog alone (Babel), no GraphQL
from tenants.context import current_tenant
from tenants.db import default_connection
from tenants.schema_names import SHARED_SCHEMA
from tenants.unit_of_work import savepoint

if TYPE_CHECKING:
    from api.settings import SmtpSettings

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 6
FIRST_RETRY = timedelta(minutes=1)
LONGEST_RETRY = timedelta(hours=1)

# The messages notifications are sent with: English msgids, translated in schema/locale/zh_CN.po (a test
# checks). Each names what happened, never a value: see the module's docstring.
TASK_OVERDUE = "A care task for a resident is overdue."
VITAL_NEEDS_ATTENTION = "A vital sign reading of a resident needs attention."
SOP_STEP_DUE = "A step of a resident's care procedure is due."
SOP_STEP_MISSED = "A step of a resident's care procedure was missed."
WORK_ORDER_CREATED = "A new work order was raised for your department."
WORK_ORDER_SLA_BREACHED = "A work order missed its service-level deadline."
WORK_ORDER_RESOLVED = "A work order you raised was resolved."
WORK_ORDER_REROUTED = "A work order was passed on to your department."
VITAL_RULE_FIRED = "A rule on the vital signs of a resident fired."
MESSAGES = (
    TASK_OVERDUE,
    VITAL_NEEDS_ATTENTION,
    SOP_STEP_DUE,
    SOP_STEP_MISSED,
    WORK_ORDER_CREATED,
    WORK_ORDER_SLA_BREACHED,
    WORK_ORDER_RESOLVED,
    WORK_ORDER_REROUTED,
    VITAL_RULE_FIRED,
)
EMAIL_SUBJECT = "Yiyang notification"
EMAIL_FOOTER = "Sign in to Yiyang to see the details."
EMAIL_TEXTS = (EMAIL_SUBJECT, EMAIL_FOOTER)


class Channel(StrEnum):
    IN_APP = "in_app"
    EMAIL = "email"


class State(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


@dataclass(frozen=True)
class Notification:
    kind: str  # what happened, dotted: task.overdue, vital.out_of_range
    message: str  # one of MESSAGES
    idempotency_key: str  # the cause, e.g. task.overdue:<task id>: one cause notifies once
    roles: frozenset[StaffRole] = frozenset()  # resolved to the institution's staff at delivery
    account_ids: frozenset[int] = frozenset()
    channels: frozenset[Channel] = frozenset({Channel.IN_APP, Channel.EMAIL})
    params: Mapping[str, int] = field(default_factory=dict)  # ids and counts only
    resident_id: int | None = None
    subject_type: str | None = None  # what it is about, e.g. CareTask
    subject_id: int | None = None
    not_before: datetime | None = None  # deliver no earlier (a reminder); default: at once

    def __post_init__(self) -> None:
        # Programming errors, not user input: a notification that could carry a value is refused here.
        if self.message not in MESSAGES:
            raise ValueError(f"unknown notification message {self.message!r}: add it to MESSAGES")
        for name, value in self.params.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise ValueError(f"notification parameter {name!r} must be an id or a count")
        if not self.roles and not self.account_ids:
            raise ValueError("a notification needs recipients")
        if not self.channels:
            raise ValueError("a notification needs a channel")


async def notify(notification: Notification) -> int | None:
    """Write `notification` to the outbox in the current unit of work, and its webhook deliveries. Its id,
    or None when its cause was notified already."""
    current_tenant()
    rows = await default_connection().execute_query_dict(
        """INSERT INTO notification_outbox
               (kind, recipient_roles, recipient_account_ids, channels, message_key, message_params,
                resident_id, subject_type, subject_id, idempotency_key, next_attempt_at)
           VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, $10, coalesce($11, now()))
           ON CONFLICT (idempotency_key) DO NOTHING
           RETURNING id""",
        [
            notification.kind,
            sorted(role.value for role in notification.roles),
            sorted(notification.account_ids),
            sorted(channel.value for channel in notification.channels),
            notification.message,
            json.dumps(dict(notification.params), sort_keys=True),
            notification.resident_id,
            notification.subject_type,
            notification.subject_id,
            notification.idempotency_key,
            notification.not_before,
        ],
    )
    if not rows:
        return None
    # Signed webhooks to the integrator endpoints subscribed to the kind, in the same transaction
    # (care/webhooks.py imports this module: imported here).
    from care.webhooks import enqueue

    await enqueue(rows[0]["id"], notification.kind, notification.not_before)
    return rows[0]["id"]


# --- e-mail ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Email:
    to: str
    subject: str
    body: str
    # The same for every attempt at one (notification, address): a resend after a crash between the
    # server's acceptance and our commit is recognisably the same message (receivers de-duplicate).
    message_id: str | None = None


class MailError(Exception):
    """The mail server could not be reached or refused the message for now: retried later."""


class Mailer(Protocol):
    async def send(self, email: Email) -> str:
        """Send `email`; the server's answer. Raises MailError."""
        ...


class SmtpMailer:
    """SMTP with the standard library's smtplib, run in a thread (one connection per message: a few
    messages a minute per institution do not need a pool)."""

    def __init__(self, settings: "SmtpSettings", *, timeout: float = 10.0) -> None:
        self.settings = settings
        self.timeout = timeout

    async def send(self, email: Email) -> str:
        try:
            return await asyncio.to_thread(self._send, email)
        except (OSError, smtplib.SMTPException) as exc:  # OSError: refused, unreachable, timed out
            raise MailError(f"{type(exc).__name__}: {exc}"[:500]) from exc

    def _send(self, email: Email) -> str:
        message = EmailMessage()
        message["From"] = self.settings.mail_from
        message["To"] = email.to
        message["Subject"] = email.subject
        if email.message_id:
            message["Message-ID"] = email.message_id
        message.set_content(email.body)
        payload = message.as_bytes(policy=message.policy.clone(linesep="\r\n"))
        sender = self.settings.mail_from
        with smtplib.SMTP(self.settings.host, self.settings.port, timeout=self.timeout) as smtp:
            if self.settings.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if self.settings.username:
                smtp.login(self.settings.username, self.settings.password or "")
            # Step by step rather than send_message, to keep the server's answer to the message itself
            # for the delivery log.
            smtp.ehlo_or_helo_if_needed()
            code, answer = smtp.mail(sender)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, answer, sender)
            code, answer = smtp.rcpt(email.to)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({email.to: (code, answer)})
            code, answer = smtp.data(payload)  # raises SMTPDataError unless accepted
        return f"{code} {answer.decode(errors='replace')}"[:1000]


def email_of(message: str, params: Mapping[str, object]) -> tuple[str, str]:
    """Subject and body: Simplified Chinese first, English second (the recipient's language is not
    known to the outbox)."""
    subject = f"{translate(EMAIL_SUBJECT, 'zh_CN')} / {EMAIL_SUBJECT}"
    body = "\n".join(
        [
            translate(message, "zh_CN", dict(params)),
            translate(EMAIL_FOOTER, "zh_CN"),
            "",
            translate(message, "en", dict(params)),
            EMAIL_FOOTER,
        ]
    )
    return subject, body


# --- delivery -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    account_id: int
    email: str | None


@dataclass
class Delivery:
    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    inbox_rows: int = 0
    emails_sent: int = 0


def backoff(attempts: int) -> timedelta:
    """The wait after the `attempts`-th failed attempt: 1, 2, 4 … minutes, at most an hour."""
    return min(FIRST_RETRY * 2 ** (attempts - 1), LONGEST_RETRY)


async def deliver_pending(now: datetime, mailer: Mailer | None, *, limit: int = 100) -> Delivery:
    """Deliver up to `limit` due notifications of the current tenant. Without a mailer (no SMTP
    configured) the e-mail channel is skipped and the in-app one still delivered."""
    tenant = current_tenant()
    connection = default_connection()
    _, claimed = await connection.execute_query(
        """SELECT id, recipient_roles, recipient_account_ids, channels, message_key, message_params,
                  attempts
           FROM notification_outbox
           WHERE state = 'pending' AND next_attempt_at <= $1
           ORDER BY next_attempt_at, id
           LIMIT $2
           FOR UPDATE SKIP LOCKED""",
        [now, limit],
    )
    outcome = Delivery(claimed=len(claimed))
    for row in claimed:
        try:
            async with savepoint():
                error = await _deliver_one(row, tenant.institution_id, now, mailer, outcome)
        except Exception as exc:  # a poison row must not hold up the queue: retried, then dead
            log.exception("notification %s could not be delivered", row["id"])
            error = f"{type(exc).__name__}: could not be delivered"
        connection = default_connection()
        if error is None:
            await connection.execute_query(
                """UPDATE notification_outbox
                   SET state = 'delivered', delivered_at = $2, attempts = attempts + 1, last_error = NULL
                   WHERE id = $1""",
                [row["id"], now],
            )
            outcome.delivered += 1
            continue
        attempts = row["attempts"] + 1
        dead = attempts >= MAX_ATTEMPTS
        await connection.execute_query(
            """UPDATE notification_outbox
               SET attempts = $2, state = $3, next_attempt_at = $4, last_error = $5
               WHERE id = $1""",
            [
                row["id"],
                attempts,
                State.DEAD.value if dead else State.PENDING.value,
                now + backoff(attempts),
                error[:1000],
            ],
        )
        if dead:
            log.warning("notification %s is dead after %s attempts: %s", row["id"], attempts, error)
            outcome.dead += 1
        else:
            outcome.retried += 1
    return outcome


async def _deliver_one(
    row: Mapping[str, Any], institution_id: int, now: datetime, mailer: Mailer | None, outcome: Delivery
) -> str | None:
    """Inbox rows and e-mails of one claimed row; the first e-mail failure, if any."""
    connection = default_connection()
    recipients = await _recipients(
        connection, institution_id, row["recipient_roles"], row["recipient_account_ids"]
    )
    if not recipients:  # delivered to nobody: worth a look (a role nobody holds, accounts gone)
        log.warning("notification %s has no recipient in institution %s", row["id"], institution_id)
    channels = set(row["channels"])
    if Channel.IN_APP in channels:
        outcome.inbox_rows += await _to_inbox(connection, row["id"], recipients, now)
    if Channel.EMAIL not in channels:
        return None
    if mailer is None:
        log.info("notification %s: no SMTP configured, e-mail skipped", row["id"])
        return None
    params = _params(row["message_params"])
    sent, error = await _mail(connection, row["id"], recipients, row["message_key"], params, mailer)
    outcome.emails_sent += sent
    return error


def _params(stored: object) -> dict[str, object]:
    loaded = json.loads(stored) if isinstance(stored, str) else stored
    return dict(loaded) if isinstance(loaded, dict) else {}


async def _recipients(
    connection: BaseDBAsyncClient, institution_id: int, roles: Sequence[str], account_ids: Sequence[int]
) -> list[Recipient]:
    """Active accounts holding one of `roles` in the institution now, and the named accounts that are
    staff of the institution or follow one of its residents (nobody outside it is told anything)."""
    _, rows = await connection.execute_query(
        f"""SELECT a.id, a.login FROM {SHARED_SCHEMA}.user_account a
            WHERE a.status = 'active' AND (
                EXISTS (SELECT 1 FROM {SHARED_SCHEMA}.staff_membership m
                        WHERE m.account_id = a.id AND m.institution_id = $1 AND m.role = ANY($2::text[]))
                OR (a.id = ANY($3::bigint[]) AND (
                    EXISTS (SELECT 1 FROM {SHARED_SCHEMA}.staff_membership m
                            WHERE m.account_id = a.id AND m.institution_id = $1)
                    OR EXISTS (SELECT 1 FROM {SHARED_SCHEMA}.family_link f
                               WHERE f.account_id = a.id AND f.institution_id = $1))))
            ORDER BY a.id""",
        [institution_id, list(roles), list(account_ids)],
    )
    return [Recipient(row["id"], row["login"] if "@" in row["login"] else None) for row in rows]


async def _to_inbox(
    connection: BaseDBAsyncClient, outbox_id: int, recipients: Iterable[Recipient], now: datetime
) -> int:
    ids = [recipient.account_id for recipient in recipients]
    if not ids:
        return 0
    inserted = await connection.execute_query_dict(
        """INSERT INTO notification_inbox (outbox_id, account_id, created_at)
           SELECT $1, account_id, $3 FROM unnest($2::bigint[]) AS account_id
           ON CONFLICT (outbox_id, account_id) DO NOTHING
           RETURNING id""",
        [outbox_id, ids, now],
    )
    return len(inserted)


async def _mail(
    connection: BaseDBAsyncClient,
    outbox_id: int,
    recipients: Iterable[Recipient],
    message: str,
    params: Mapping[str, object],
    mailer: Mailer,
) -> tuple[int, str | None]:
    """(messages sent, the first failure). Each address's log row is written first; only rows not yet
    sent are mailed, so a retry mails only those a failure left out."""
    addressed = [recipient for recipient in recipients if recipient.email]
    for recipient in addressed:
        await connection.execute_query(
            """INSERT INTO notification_email (outbox_id, account_id, address) VALUES ($1, $2, $3)
               ON CONFLICT (outbox_id, address) DO NOTHING""",
            [outbox_id, recipient.account_id, recipient.email],
        )
    _, unsent = await connection.execute_query(
        "SELECT id, account_id, address FROM notification_email WHERE outbox_id = $1 AND sent_at IS NULL"
        " ORDER BY id",
        [outbox_id],
    )
    subject, body = email_of(message, params)
    sent = 0
    failure: str | None = None
    for row in unsent:
        try:
            institution_id, account_id = current_tenant().institution_id, row["account_id"]
            message_id = f"<notification.{institution_id}.{outbox_id}.{account_id}@yiyang>"
            answer = await mailer.send(Email(row["address"], subject, body, message_id))
        except MailError as exc:
            failure = failure or str(exc)
            await connection.execute_query(
                "UPDATE notification_email SET smtp_response = $2 WHERE id = $1", [row["id"], str(exc)[:1000]]
            )
            continue
        await connection.execute_query(
            "UPDATE notification_email SET sent_at = now(), smtp_response = $2 WHERE id = $1",
            [row["id"], answer],
        )
        sent += 1
    return sent, failure


# --- the inbox ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InboxEntry:
    id: int
    kind: str
    message: str
    params: dict[str, object]
    resident_id: int | None
    subject_type: str | None
    subject_id: int | None
    created_at: datetime
    read_at: datetime | None


MAX_MARKED = 100


async def inbox_page(
    account_id: int, *, unread_only: bool, after_id: int | None, limit: int
) -> list[InboxEntry]:
    """`account_id`'s notifications in the current tenant, newest first."""
    current_tenant()
    _, rows = await default_connection().execute_query(
        f"""{_INBOX_SELECT}
            WHERE i.account_id = $1 AND (NOT $2 OR i.read_at IS NULL) AND ($3::bigint IS NULL OR i.id < $3)
            ORDER BY i.id DESC LIMIT $4""",
        [account_id, unread_only, after_id, limit],
    )
    return [_entry(row) for row in rows]


async def count_inbox(account_id: int, *, unread_only: bool) -> int:
    current_tenant()
    _, rows = await default_connection().execute_query(
        "SELECT count(*) AS n FROM notification_inbox WHERE account_id = $1 AND (NOT $2 OR read_at IS NULL)",
        [account_id, unread_only],
    )
    return int(rows[0]["n"])


async def mark_read(account_id: int, ids: Sequence[int], now: datetime) -> list[InboxEntry] | None:
    """Mark `account_id`'s entries `ids` read (those read already keep their time). None, and nothing
    marked, when any of them is not the account's: someone else's notification is not found."""
    current_tenant()
    wanted = sorted(set(ids))
    connection = default_connection()
    _, owned = await connection.execute_query(
        "SELECT id FROM notification_inbox WHERE id = ANY($1::bigint[]) AND account_id = $2 FOR UPDATE",
        [wanted, account_id],
    )
    if len(owned) != len(wanted):
        return None
    await connection.execute_query(
        """UPDATE notification_inbox SET read_at = $3
           WHERE id = ANY($1::bigint[]) AND account_id = $2 AND read_at IS NULL""",
        [wanted, account_id, now],
    )
    _, rows = await connection.execute_query(
        f"{_INBOX_SELECT} WHERE i.id = ANY($1::bigint[]) AND i.account_id = $2 ORDER BY i.id DESC",
        [wanted, account_id],
    )
    return [_entry(row) for row in rows]


_INBOX_SELECT = """SELECT i.id, o.kind, o.message_key, o.message_params, o.resident_id, o.subject_type,
           o.subject_id, i.created_at, i.read_at
    FROM notification_inbox i JOIN notification_outbox o ON o.id = i.outbox_id"""


def _entry(row: Mapping[str, object]) -> InboxEntry:
    return InboxEntry(
        id=row["id"],  # type: ignore[arg-type]
        kind=row["kind"],  # type: ignore[arg-type]
        message=row["message_key"],  # type: ignore[arg-type]
        params=_params(row["message_params"]),
        resident_id=row["resident_id"],  # type: ignore[arg-type]
        subject_type=row["subject_type"],  # type: ignore[arg-type]
        subject_id=row["subject_id"],  # type: ignore[arg-type]
        created_at=row["created_at"],  # type: ignore[arg-type]
        read_at=row["read_at"],  # type: ignore[arg-type]
    )

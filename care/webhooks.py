"""Signed webhooks to integrator endpoints (migrations/tenant/0024_webhooks.sql; for integrators:
docs/webhooks.md).

An endpoint belongs to an integrator client bound to the institution or to its chain, and subscribes to
notification kinds (`KINDS`). `care.notifications.notify` calls `enqueue` in the caller's unit of work:
one `webhook_delivery` row per active endpoint subscribed to the kind (unique per event and endpoint),
so a change that rolls back sends nothing and one that commits cannot lose its webhook.

`deliver_webhooks` (the worker's sweep runs it in every institution's unit of work) claims due rows
`FOR UPDATE SKIP LOCKED`, POSTs them signed (`sign`; receivers check with `verify_signature`), records
every attempt, marks 2xx delivered and retries anything else with the notifications' backoff until
`MAX_ATTEMPTS`, then dead. A delivered row is never sent again; a job run twice (or two workers) finds
the rows locked or delivered. The HTTP requests run while the claim's transaction is open, as the
e-mail path does: the claim and its outcome commit together (no lease to expire and no row stranded by
a crash between two transactions; a worker killed mid-send leaves the rows pending, sent again later and
deduplicated by the receiver on the event id). To keep that transaction short the requests of a batch
go out concurrently (`CONCURRENCY`) with a short timeout (`TIMEOUT_SECONDS`): a batch holds it at most
about `limit / CONCURRENCY * TIMEOUT_SECONDS`.

What leaves the institution: ids and counts only (`payload`), never a name or a health value. An event
about a resident also says *that* something happened to that resident (a vital sign rule fired), so it
goes to the client only under an active consent of the resident naming the client for third-party
integration and the event's data category (compliance/consent.py, as for the client's API reads);
otherwise the delivery is `withheld`, never sent. Institution-level events (no resident) need none.

A delivery about a resident is a disclosure of (ids of) their data to a third party, so it is on their
audit trail (`DELIVER_ACTION`, recorded in the sweep's unit of work with the outcome): permitted when
delivered, denied with the reason when withheld, failed with the last error when dead (the receiver may
have got it). The principal is the integrator client it went to: the resident's access report names it.
The resident's data-subject export lists the delivered ones (`disclosures_about`).
"""

import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx

from care.notifications import MAX_ATTEMPTS, backoff
from compliance.audit import AuditEvent, Outcome, record_events
from compliance.audit.events import SYSTEM_KIND
from compliance.consent import Category, Purpose, decide_with, terms_of
from compliance.encryption import field_cipher
from compliance.policy import Action
from compliance.principals import Principal, PrincipalKind
from schema.ids import encode_id
from tenants.context import current_tenant
from tenants.db import default_connection
from tenants.errors import InvalidInput, NotFound, raise_if_any
from tenants.schema_names import SHARED_SCHEMA

log = logging.getLogger(__name__)

# The notification kinds an endpoint may subscribe to (care.notifications `Notification.kind`). A kind
# notified elsewhere reaches webhooks once it is listed here.
KINDS: tuple[str, ...] = (
    "task.overdue",
    "vital.rule_fired",
    "sop.step_due",
    "sop.step_missed",
    "work_order.created",
    "work_order.sla_breached",
    "work_order.resolved",
    "work_order.rerouted",
)
# The data category an event about a resident discloses, for the consent decision.
_CATEGORY_OF_PREFIX = {"vital": Category.VITALS}
DEFAULT_CATEGORY = Category.DAILY_CARE

TIMEOUT_SECONDS = 5.0
CONCURRENCY = 10
TOLERANCE_SECONDS = 300  # the replay window receivers should apply (docs/webhooks.md)
MAX_URL = 2000
MAX_ENDPOINTS = 20  # per client
SECRET_PREFIX = "whsec_"
_SECRET_BYTES = 32
# The institution's own data key (compliance/encryption): no resident has id 0.
INSTITUTION_SUBJECT = 0
_TABLE, _COLUMN = "webhook_endpoint", "secret"

# On the resident's audit trail: a delivery about them (compliance/audit/report.py reads it as a read).
DELIVER_ACTION = "webhook.deliver"
# Who the event names when the endpoint's client row is gone (a client is revoked, never deleted).
SYSTEM_SUBJECT = "system:webhooks"

SIGNATURE_HEADER = "Yiyang-Signature"
EVENT_ID_HEADER = "Yiyang-Event-Id"
EVENT_KIND_HEADER = "Yiyang-Event-Kind"

NOT_A_URL = "Enter an absolute http or https URL."
HTTPS_REQUIRED = "Webhook URLs must use https."
PUBLIC_HOST_REQUIRED = "Webhook URLs must point to a public address."
NO_KINDS = "Choose at least one event kind."
UNKNOWN_KIND = "Unknown event kind: {kind}."
TOO_MANY_ENDPOINTS = "An integrator client has at most {max} webhook endpoints."
NOT_FOUND = "Not found."


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"
    WITHHELD = "withheld"


def production_environment() -> bool:
    """Whether this process runs in production (YIYANG_ENV, as api/settings.py reads it)."""
    return os.environ.get("YIYANG_ENV", "development") == "production"


# --- signatures -----------------------------------------------------------------------------------


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """Hex HMAC-SHA256 of f"{timestamp}.{body}" under the secret (its UTF-8 bytes, prefix included)."""
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The Yiyang-Signature header: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, f"{t}.{body}")>."""
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify_signature(
    secret: str, header: str, body: bytes, now: float, tolerance: float = TOLERANCE_SECONDS
) -> bool:
    """Whether `header` (Yiyang-Signature) signs exactly `body` (the raw request body, bytes as
    received) with `secret`, at a time within `tolerance` seconds of `now` (unix seconds). Receivers
    may copy this function: it needs only the standard library. Reject the request when it is False;
    then deduplicate on the Yiyang-Event-Id header (a retry carries the same id)."""
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit():
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(now - timestamp) > tolerance:
        return False
    expected = signature(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in candidates)


# --- endpoints ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    id: int
    client_id: int  # shared.oauth_client.id
    url: str
    kinds: tuple[str, ...]
    active: bool
    created_by: str
    created_at: datetime
    updated_at: datetime
    secret_rotated_at: datetime | None


@dataclass(frozen=True)
class EndpointWithSecret:
    """An endpoint and its signing secret: the only moment the secret leaves the database."""

    endpoint: Endpoint
    secret: str


def check_url(url: str, *, production: bool) -> str:
    given = url.strip()
    try:
        parts = urlsplit(given)
        parts.port  # noqa: B018  (raises ValueError on a malformed port)
    except ValueError:
        raise InvalidInput(NOT_A_URL, field="url") from None
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or len(given) > MAX_URL
        or any(c.isspace() for c in given)
        or parts.username is not None
        or parts.password is not None
    ):
        raise InvalidInput(NOT_A_URL, field="url")
    if production and parts.scheme != "https":
        raise InvalidInput(HTTPS_REQUIRED, field="url")
    if production and not _public_host(parts.hostname):
        raise InvalidInput(PUBLIC_HOST_REQUIRED, field="url")
    return given


def _public_host(host: str) -> bool:
    """Not obviously internal: no loopback, private, link-local (cloud metadata) or reserved address
    literal, no `localhost`. A name that resolves to such an address is refused by the sender when it
    sends (`HttpxSender(public_only=True)`), since what a name resolves to can change after registration."""
    if host.lower().rstrip(".") == "localhost" or host.lower().endswith(".localhost"):
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return True
    return address.is_global


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    wanted = sorted({kind.strip() for kind in kinds})
    if not wanted:
        raise InvalidInput(NO_KINDS, field="kinds")
    unknown = [kind for kind in wanted if kind not in KINDS]
    if unknown:
        raise InvalidInput(UNKNOWN_KIND, field="kinds", kind=unknown[0])
    return tuple(wanted)


def _checked(url: str | None, kinds: Sequence[str] | None, production: bool) -> tuple[str | None, Any]:
    """The URL and kinds checked together: every problem at once."""
    problems: list[InvalidInput] = []
    checked_url: str | None = None
    checked_kinds: tuple[str, ...] | None = None
    if url is not None:
        try:
            checked_url = check_url(url, production=production)
        except InvalidInput as problem:
            problems.append(problem)
    if kinds is not None:
        try:
            checked_kinds = check_kinds(kinds)
        except InvalidInput as problem:
            problems.append(problem)
    raise_if_any(problems)
    return checked_url, checked_kinds


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(_SECRET_BYTES)


async def _seal(endpoint_id: int, secret: str) -> bytes:
    cipher = await field_cipher()
    return await cipher.encrypt(
        secret, table=_TABLE, column=_COLUMN, row_id=endpoint_id, subject_id=INSTITUTION_SUBJECT
    )


async def _open(endpoint_id: int, sealed: bytes) -> str:
    cipher = await field_cipher()
    return await cipher.decrypt_text(
        bytes(sealed), table=_TABLE, column=_COLUMN, row_id=endpoint_id, subject_id=INSTITUTION_SUBJECT
    )


async def integrator_client_of_institution(client_pk: int) -> int:
    """`client_pk` if it is an integrator client, not revoked, bound to the current institution or to
    its chain; else NotFound (another institution's client is not found, like any other object)."""
    tenant = current_tenant()
    rows = await default_connection().execute_query_dict(
        f"""SELECT c.id FROM {SHARED_SCHEMA}.oauth_client c
            JOIN {SHARED_SCHEMA}.institution i ON i.id = $2
            WHERE c.id = $1 AND c.kind = 'integrator' AND c.revoked_at IS NULL
              AND (c.institution_id = i.id OR (c.chain_id IS NOT NULL AND c.chain_id = i.chain_id))""",
        [client_pk, tenant.institution_id],
    )
    if not rows:
        raise NotFound(NOT_FOUND, field="clientId")
    return int(rows[0]["id"])


async def client_pk_of(client_id: str) -> int | None:
    """The primary key of the OAuth client `client_id` (a token's client), if it exists."""
    rows = await default_connection().execute_query_dict(
        f"SELECT id FROM {SHARED_SCHEMA}.oauth_client WHERE client_id = $1", [client_id]
    )
    return int(rows[0]["id"]) if rows else None


_ENDPOINT_COLUMNS = "id, client_id, url, kinds, active, created_by, created_at, updated_at, secret_rotated_at"


def _endpoint(row: Mapping[str, Any]) -> Endpoint:
    return Endpoint(
        id=row["id"],
        client_id=row["client_id"],
        url=row["url"],
        kinds=tuple(row["kinds"]),
        active=row["active"],
        created_by=row["created_by"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        secret_rotated_at=row["secret_rotated_at"],
    )


async def register_endpoint(
    client_pk: int, url: str, kinds: Sequence[str], *, created_by: str, production: bool
) -> EndpointWithSecret:
    """A new active endpoint of the integrator client `client_pk` (of this institution or its chain),
    with a fresh secret (returned here only)."""
    checked_url, checked_kinds = _checked(url, kinds, production)
    await integrator_client_of_institution(client_pk)
    connection = default_connection()
    counted = await connection.execute_query_dict(
        "SELECT count(*) AS n FROM webhook_endpoint WHERE client_id = $1", [client_pk]
    )
    if counted[0]["n"] >= MAX_ENDPOINTS:
        raise InvalidInput(TOO_MANY_ENDPOINTS, field="url", max=MAX_ENDPOINTS)
    (pk,) = [
        row["id"]
        for row in await connection.execute_query_dict(
            "SELECT nextval(pg_get_serial_sequence('webhook_endpoint', 'id')) AS id"
        )
    ]
    secret = new_secret()
    rows = await connection.execute_query_dict(
        f"""INSERT INTO webhook_endpoint (id, client_id, url, kinds, secret_sealed, created_by)
            VALUES ($1, $2, $3, $4, $5, $6) RETURNING {_ENDPOINT_COLUMNS}""",
        [pk, client_pk, checked_url, list(checked_kinds), await _seal(pk, secret), created_by[:200]],
    )
    return EndpointWithSecret(_endpoint(rows[0]), secret)


async def get_endpoint(endpoint_id: int, *, lock: bool = False) -> Endpoint | None:
    clause = " FOR UPDATE" if lock else ""
    rows = await default_connection().execute_query_dict(
        f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoint WHERE id = $1{clause}", [endpoint_id]
    )
    return _endpoint(rows[0]) if rows else None


async def update_endpoint(
    endpoint_id: int,
    *,
    url: str | None = None,
    kinds: Sequence[str] | None = None,
    active: bool | None = None,
    production: bool,
) -> Endpoint:
    """Change what is given; deliveries already enqueued keep their endpoint (a disabled endpoint's
    pending ones are withheld when they come due)."""
    checked_url, checked_kinds = _checked(url, kinds, production)
    rows = await default_connection().execute_query_dict(
        f"""UPDATE webhook_endpoint
            SET url = coalesce($2, url), kinds = coalesce($3, kinds), active = coalesce($4, active),
                updated_at = now()
            WHERE id = $1 RETURNING {_ENDPOINT_COLUMNS}""",
        [endpoint_id, checked_url, None if checked_kinds is None else list(checked_kinds), active],
    )
    if not rows:
        raise NotFound(NOT_FOUND, field="id")
    return _endpoint(rows[0])


async def rotate_secret(endpoint_id: int) -> EndpointWithSecret:
    """A new secret for the endpoint (returned here only); the old one signs nothing from now on."""
    secret = new_secret()
    rows = await default_connection().execute_query_dict(
        f"""UPDATE webhook_endpoint SET secret_sealed = $2, secret_rotated_at = now(), updated_at = now()
            WHERE id = $1 RETURNING {_ENDPOINT_COLUMNS}""",
        [endpoint_id, await _seal(endpoint_id, secret)],
    )
    if not rows:
        raise NotFound(NOT_FOUND, field="id")
    return EndpointWithSecret(_endpoint(rows[0]), secret)


async def endpoints_page(client_pk: int | None, *, after_id: int | None, limit: int) -> list[Endpoint]:
    """The institution's endpoints (only `client_pk`'s when given), in id order."""
    rows = await default_connection().execute_query_dict(
        f"""SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoint
            WHERE ($1::bigint IS NULL OR client_id = $1) AND ($2::bigint IS NULL OR id > $2)
            ORDER BY id LIMIT $3""",
        [client_pk, after_id, limit],
    )
    return [_endpoint(row) for row in rows]


async def count_endpoints(client_pk: int | None) -> int:
    rows = await default_connection().execute_query_dict(
        "SELECT count(*) AS n FROM webhook_endpoint WHERE ($1::bigint IS NULL OR client_id = $1)", [client_pk]
    )
    return int(rows[0]["n"])


# --- the delivery log -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    attempt: int
    attempted_at: datetime
    status_code: int | None
    error_class: str | None
    duration_ms: int


@dataclass(frozen=True)
class DeliveryRecord:
    id: int
    outbox_id: int
    kind: str
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_error: str | None
    created_at: datetime
    log: tuple[Attempt, ...]


async def deliveries_page(endpoint_id: int, *, after_id: int | None, limit: int) -> list[DeliveryRecord]:
    """The endpoint's deliveries, newest first, each with its attempts."""
    connection = default_connection()
    rows = await connection.execute_query_dict(
        """SELECT d.id, d.outbox_id, o.kind, d.state, d.attempts, d.next_attempt_at, d.delivered_at,
                  d.last_error, d.created_at
           FROM webhook_delivery d JOIN notification_outbox o ON o.id = d.outbox_id
           WHERE d.endpoint_id = $1 AND ($2::bigint IS NULL OR d.id < $2)
           ORDER BY d.id DESC LIMIT $3""",
        [endpoint_id, after_id, limit],
    )
    attempts = await connection.execute_query_dict(
        """SELECT delivery_id, attempt, attempted_at, status_code, error_class, duration_ms
           FROM webhook_attempt WHERE delivery_id = ANY($1::bigint[]) ORDER BY id""",
        [[row["id"] for row in rows]],
    )
    by_delivery: dict[int, list[Attempt]] = {}
    for found in attempts:
        by_delivery.setdefault(found["delivery_id"], []).append(
            Attempt(
                found["attempt"],
                found["attempted_at"],
                found["status_code"],
                found["error_class"],
                found["duration_ms"],
            )
        )
    return [
        DeliveryRecord(
            id=row["id"],
            outbox_id=row["outbox_id"],
            kind=row["kind"],
            state=DeliveryState(row["state"]),
            attempts=row["attempts"],
            next_attempt_at=row["next_attempt_at"] if row["state"] == DeliveryState.PENDING else None,
            delivered_at=row["delivered_at"],
            last_error=row["last_error"],
            created_at=row["created_at"],
            log=tuple(by_delivery.get(row["id"], ())),
        )
        for row in rows
    ]


async def count_deliveries(endpoint_id: int) -> int:
    rows = await default_connection().execute_query_dict(
        "SELECT count(*) AS n FROM webhook_delivery WHERE endpoint_id = $1", [endpoint_id]
    )
    return int(rows[0]["n"])


# --- disclosures (the resident's data-subject export) ---------------------------------------------


@dataclass(frozen=True)
class Disclosure:
    """A webhook event about a resident delivered to an integrator (what the event carried: ids only).
    The endpoint's host, not its URL (a path or query may hold the integrator's own tokens)."""

    event_id: str
    kind: str
    delivered_at: datetime
    client_id: str | None  # the OAuth client_id of the integrator
    client_name: str | None
    endpoint_host: str | None


async def disclosures_about(resident_id: int) -> list[Disclosure]:
    """The delivered webhook events about the resident, oldest first."""
    institution_id = current_tenant().institution_id
    rows = await default_connection().execute_query_dict(
        f"""SELECT d.outbox_id, o.kind, d.delivered_at, c.client_id, c.name, e.url
            FROM webhook_delivery d
            JOIN notification_outbox o ON o.id = d.outbox_id
            JOIN webhook_endpoint e ON e.id = d.endpoint_id
            LEFT JOIN {SHARED_SCHEMA}.oauth_client c ON c.id = e.client_id
            WHERE o.resident_id = $1 AND d.state = 'delivered'
            ORDER BY d.delivered_at, d.id""",
        [resident_id],
    )
    return [
        Disclosure(
            event_id=event_id(institution_id, row["outbox_id"]),
            kind=row["kind"],
            delivered_at=row["delivered_at"],
            client_id=row["client_id"],
            client_name=row["name"],
            endpoint_host=urlsplit(row["url"]).hostname,
        )
        for row in rows
    ]


# --- enqueue (from care.notifications.notify) -----------------------------------------------------


async def enqueue(outbox_id: int, kind: str, not_before: datetime | None) -> int:
    """Deliveries of the notification `outbox_id` to the active endpoints subscribed to `kind`, in the
    current unit of work; due with the notification. How many were enqueued."""
    rows = await default_connection().execute_query_dict(
        f"""INSERT INTO webhook_delivery (outbox_id, endpoint_id, next_attempt_at)
            SELECT $1, e.id, coalesce($3, now()) FROM webhook_endpoint e
            WHERE e.active AND e.kinds @> ARRAY[$2]::text[]
              AND EXISTS (SELECT 1 FROM {SHARED_SCHEMA}.oauth_client c
                          WHERE c.id = e.client_id AND c.revoked_at IS NULL)
            ON CONFLICT (outbox_id, endpoint_id) DO NOTHING
            RETURNING id""",
        [outbox_id, kind, not_before],
    )
    return len(rows)


# --- delivery -------------------------------------------------------------------------------------


def event_id(institution_id: int, outbox_id: int) -> str:
    """The event's id: the same for every endpoint and every retry (receivers deduplicate on it)."""
    return encode_id("WebhookEvent", institution_id, outbox_id)


def payload(institution_id: int, row: Mapping[str, Any]) -> bytes:
    """The JSON body of an event: ids, the kind and the time only."""
    subject = (
        {"type": row["subject_type"], "id": encode_id(row["subject_type"], institution_id, row["subject_id"])}
        if row["subject_type"] is not None and row["subject_id"] is not None
        else None
    )
    resident = row["resident_id"]
    body = {
        "id": event_id(institution_id, row["outbox_id"]),
        "kind": row["kind"],
        "institution_id": encode_id("Institution", institution_id),
        "resident_id": None if resident is None else encode_id("Resident", institution_id, resident),
        "subject": subject,
        "occurred_at": row["occurred_at"].astimezone(UTC).isoformat().replace("+00:00", "Z"),
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


class WebhookSendError(Exception):
    """The request did not get an HTTP answer: its class is logged (timeout, connect_error, …)."""

    def __init__(self, error_class: str) -> None:
        super().__init__(error_class)
        self.error_class = error_class[:64]


class Sender(Protocol):
    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """POST `body`; the answer's HTTP status. Raises WebhookSendError without one."""
        ...


class HttpxSender:
    """POSTs with httpx: a short timeout, redirects not followed (a 3xx is a failed attempt), one client
    (connection pool) for the sender's lifetime; close it with `aclose`.

    `public_only` (production): the endpoint's host is resolved before each POST and refused
    (`internal_address`, a failed attempt) when any of its addresses is not global — loopback, private,
    link-local (cloud metadata), reserved — so a registered name later pointed inside reaches nothing
    there. A resolver answering differently between this check and the connection (DNS rebinding) is
    not covered; an egress proxy is the place for that."""

    def __init__(self, *, timeout: float = TIMEOUT_SECONDS, public_only: bool = False) -> None:
        self.public_only = public_only
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout),
            follow_redirects=False,
            headers={"User-Agent": "Yiyang-Webhooks/1"},
        )

    async def post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        if self.public_only:
            await _require_public_addresses(url)
        try:
            response = await self._client.post(url, content=body, headers=dict(headers))
        except httpx.TimeoutException:
            raise WebhookSendError("timeout") from None
        except httpx.ConnectError:
            raise WebhookSendError("connect_error") from None
        except httpx.HTTPError as exc:
            raise WebhookSendError(type(exc).__name__) from None
        return response.status_code

    async def aclose(self) -> None:
        await self._client.aclose()

    async def __aenter__(self) -> "HttpxSender":
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def _require_public_addresses(url: str) -> None:
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise WebhookSendError("dns_error") from None
    addresses = {ipaddress.ip_address(info[4][0].split("%", 1)[0]) for info in found}
    if not addresses or not all(address.is_global for address in addresses):
        raise WebhookSendError("internal_address")


@dataclass(frozen=True)
class WebhookDelivery:
    claimed: int = 0
    delivered: int = 0
    retried: int = 0
    dead: int = 0
    withheld: int = 0


@dataclass
class _Outcome:
    status_code: int | None
    error_class: str | None
    duration_ms: int
    attempted_at: datetime

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def category_of_kind(kind: str) -> Category:
    return _CATEGORY_OF_PREFIX.get(kind.split(".", 1)[0], DEFAULT_CATEGORY)


async def deliver_webhooks(
    now: datetime, sender: Sender, limit: int = 100, *, clock: Callable[[], float] = time.time
) -> WebhookDelivery:
    """Send up to `limit` deliveries of the current tenant due at `now` (see the module's docstring).
    The signatures' timestamp is `clock()` (unix seconds) when the batch goes out, not `now`: receivers
    compare it with their own clock, and a sweep's `now` may be minutes old by the time a long drain
    reaches a batch."""
    tenant = current_tenant()
    institution_id = tenant.institution_id
    connection = default_connection()
    claimed = await connection.execute_query_dict(
        f"""SELECT d.id, d.attempts, d.outbox_id, d.endpoint_id, e.url, e.secret_sealed, e.active,
                   c.client_id AS oauth_client_id, c.revoked_at, o.kind, o.resident_id, o.subject_type,
                   o.subject_id, o.created_at AS occurred_at
            FROM webhook_delivery d
            JOIN webhook_endpoint e ON e.id = d.endpoint_id
            JOIN notification_outbox o ON o.id = d.outbox_id
            LEFT JOIN {SHARED_SCHEMA}.oauth_client c ON c.id = e.client_id
            WHERE d.state = 'pending' AND d.next_attempt_at <= $1
            ORDER BY d.next_attempt_at, d.id
            LIMIT $2
            FOR UPDATE OF d SKIP LOCKED""",
        [now, limit],
    )
    if not claimed:
        return WebhookDelivery()
    residents = sorted({row["resident_id"] for row in claimed if row["resident_id"] is not None})
    consents = await terms_of(residents) if residents else {}
    withheld: dict[int, str] = {}
    to_send: list[Mapping[str, Any]] = []
    for row in claimed:
        reason = _withheld_because(row, institution_id, consents, now)
        if reason is None:
            to_send.append(row)
        else:
            withheld[row["id"]] = reason
    secrets_of: dict[int, str] = {}
    for row in to_send:
        if row["endpoint_id"] not in secrets_of:
            secrets_of[row["endpoint_id"]] = await _open(row["endpoint_id"], row["secret_sealed"])
    timestamp = int(clock())
    gate = asyncio.Semaphore(CONCURRENCY)

    async def send(row: Mapping[str, Any]) -> _Outcome:
        body = payload(institution_id, row)
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secrets_of[row["endpoint_id"]], timestamp, body),
            EVENT_ID_HEADER: event_id(institution_id, row["outbox_id"]),
            EVENT_KIND_HEADER: row["kind"],
        }
        async with gate:
            started = time.monotonic()
            status: int | None = None
            error: str | None = None
            try:
                status = await sender.post(row["url"], body, headers)
            except WebhookSendError as exc:
                error = exc.error_class
            except Exception as exc:  # a sender's bug must not lose the batch's results
                log.exception("webhook delivery %s failed unexpectedly", row["id"])
                error = type(exc).__name__[:64]
            elapsed = int((time.monotonic() - started) * 1000)
        return _Outcome(status, error, elapsed, now)

    outcomes = await asyncio.gather(*(send(row) for row in to_send))
    counts = {"delivered": 0, "retried": 0, "dead": 0}
    audited: list[AuditEvent] = []
    for row, outcome in zip(to_send, outcomes, strict=True):
        result = await _record(row, outcome, now)
        counts[result] += 1
        if result == "delivered":
            audited.extend(_disclosure(row, Outcome.PERMITTED, None))
        elif result == "dead":
            audited.extend(
                _disclosure(row, Outcome.FAILED, outcome.error_class or f"http_{outcome.status_code}")
            )
    for row in claimed:
        reason = withheld.get(row["id"])
        if reason is None:
            continue
        await connection.execute_query(
            "UPDATE webhook_delivery SET state = 'withheld', last_error = $2 WHERE id = $1",
            [row["id"], reason],
        )
        audited.extend(_disclosure(row, Outcome.DENIED, reason))
    await record_events(audited)
    return WebhookDelivery(
        claimed=len(claimed),
        delivered=counts["delivered"],
        retried=counts["retried"],
        dead=counts["dead"],
        withheld=len(withheld),
    )


def _disclosure(row: Mapping[str, Any], outcome: Outcome, reason: str | None) -> list[AuditEvent]:
    """The audit event of a delivery about a resident (none for an institution-level event)."""
    resident = row["resident_id"]
    if resident is None:
        return []
    client_id = row["oauth_client_id"]
    return [
        AuditEvent(
            principal_subject=SYSTEM_SUBJECT if client_id is None else f"client:{client_id}",
            principal_kind=SYSTEM_KIND if client_id is None else PrincipalKind.INTEGRATOR.value,
            client_id=client_id,
            action=DELIVER_ACTION,
            outcome=outcome,
            reason_code=None if reason is None else reason[:64],
            resident_id=resident,
            data_categories=(category_of_kind(row["kind"]).value,),
            purpose=Purpose.THIRD_PARTY_INTEGRATION.value,
        )
    ]


def _withheld_because(
    row: Mapping[str, Any], institution_id: int, consents: Mapping[int, Sequence[Any]], now: datetime
) -> str | None:
    if not row["active"]:
        return "endpoint_disabled"
    if row["oauth_client_id"] is None or row["revoked_at"] is not None:
        return "client_revoked"
    resident = row["resident_id"]
    if resident is None:
        return None
    client = Principal(
        subject=f"client:{row['oauth_client_id']}",
        kind=PrincipalKind.INTEGRATOR,
        institution_id=institution_id,
        client_id=row["oauth_client_id"],
    )
    decision = decide_with(
        client,
        Action.RESIDENT_VIEW,
        resident,
        category_of_kind(row["kind"]),
        Purpose.THIRD_PARTY_INTEGRATION,
        institution_id=institution_id,
        consents=consents.get(resident, ()),
        now=now,
    )
    return None if decision.permit else decision.reason.value


async def _record(row: Mapping[str, Any], outcome: _Outcome, now: datetime) -> str:
    connection = default_connection()
    attempts = row["attempts"] + 1
    await connection.execute_query(
        """INSERT INTO webhook_attempt
               (delivery_id, attempt, attempted_at, status_code, error_class, duration_ms)
           VALUES ($1, $2, $3, $4, $5, $6)""",
        [
            row["id"],
            attempts,
            outcome.attempted_at,
            outcome.status_code,
            outcome.error_class,
            outcome.duration_ms,
        ],
    )
    if outcome.delivered:
        await connection.execute_query(
            """UPDATE webhook_delivery SET state = 'delivered', delivered_at = $2, attempts = $3,
                   last_error = NULL
               WHERE id = $1""",
            [row["id"], now, attempts],
        )
        return "delivered"
    error = outcome.error_class or f"http_{outcome.status_code}"
    dead = attempts >= MAX_ATTEMPTS
    await connection.execute_query(
        """UPDATE webhook_delivery SET state = $2, attempts = $3, next_attempt_at = $4, last_error = $5
           WHERE id = $1""",
        [
            row["id"],
            DeliveryState.DEAD.value if dead else DeliveryState.PENDING.value,
            attempts,
            now + backoff(attempts),
            error,
        ],
    )
    if dead:
        log.warning("webhook delivery %s is dead after %s attempts: %s", row["id"], attempts, error)
        return "dead"
    return "retried"

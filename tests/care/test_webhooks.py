"""Signed webhooks in the domain (care/webhooks.py): enqueued by notify() in the cause's transaction, POSTed
to a real HTTP receiver on 127.0.0.1 that checks the signature, retried with backoff, dead after
MAX_ATTEMPTS, every attempt logged, sent once in effect when the job runs twice, resident events only
under consent, and the secret sealed."""

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from api.exports import report_row
from api.settings import REPO_ROOT
from care import webhooks
from care.models import CareLevel, Gender
from care.notifications import MAX_ATTEMPTS, backoff, notify
from care.residents import Admission, admit_resident
from care.webhooks import (
    EVENT_ID_HEADER,
    EVENT_KIND_HEADER,
    SIGNATURE_HEADER,
    EndpointWithSecret,
    HttpxSender,
    WebhookDelivery,
    deliver_webhooks,
    register_endpoint,
    sign,
    verify_signature,
)
from compliance.audit import Outcome
from compliance.audit.report import Access, AuditPrincipalKind, access_report
from compliance.consent import Category, ConsentVersion, record_consent, withdraw_consent
from compliance.identity.clients import CreatedClient, revoke_client
from tenants.context import TenantRef
from tenants.db import default_connection
from tenants.errors import InvalidInput, NotFound, ValidationFailed
from tenants.unit_of_work import run_in_tenant
from tests.care.notification_support import (
    Receiver,
    free_port,
    integrator,
    integrator_consent,
    overdue_task,
    running_receiver,
)
from tests.compliance.audit_support import fresh_tenant
from tests.conftest import World

# --- a real receiver (tests/care/notification_support.py) ------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from running_receiver()


@pytest.fixture
async def sender() -> AsyncIterator[HttpxSender]:
    sending = HttpxSender(timeout=5.0)
    try:
        yield sending
    finally:
        await sending.aclose()


# --- helpers --------------------------------------------------------------------------------------


async def endpoint(
    tenant: TenantRef, client: CreatedClient, receiver: Receiver, kinds: tuple[str, ...] = ("task.overdue",)
) -> EndpointWithSecret:
    created = await run_in_tenant(
        tenant,
        lambda: register_endpoint(client.client.id, receiver.url, kinds, created_by="test", production=False),
    )
    receiver.secret = created.secret
    return created


async def deliver(tenant: TenantRef, now: datetime, sender: Any) -> WebhookDelivery:
    """One run of the job at `now` (signatures stamped with the real clock, as the receiver checks)."""
    return await run_in_tenant(tenant, lambda: deliver_webhooks(now, sender))


async def deliveries(tenant: TenantRef) -> list[dict[str, Any]]:
    return await default_connection().execute_query_dict(
        f'SELECT * FROM "{tenant.schema_name}".webhook_delivery ORDER BY id'
    )


async def attempts(tenant: TenantRef) -> list[dict[str, Any]]:
    return await default_connection().execute_query_dict(
        f'SELECT * FROM "{tenant.schema_name}".webhook_attempt ORDER BY id'
    )


def soon() -> datetime:
    return datetime.now(UTC) + timedelta(seconds=5)


async def notified(tenant: TenantRef, task_id: int, **changes: object) -> int:
    written = await run_in_tenant(tenant, lambda: notify(overdue_task(task_id, **changes)))
    assert written is not None
    return written


async def admitted(tenant: TenantRef, name: str, born: date) -> int:
    resident = await run_in_tenant(
        tenant,
        lambda: admit_resident(Admission(name, Gender.FEMALE, born, CareLevel.ASSISTED, date(2026, 1, 5))),
    )
    return resident.id


async def consented(
    tenant: TenantRef,
    resident_id: int,
    client: CreatedClient,
    categories: frozenset[Category] = frozenset({Category.DAILY_CARE}),
) -> ConsentVersion:
    """The resident's consent to the integrator's receiving `categories` (recorded on paper)."""
    consent = integrator_consent(resident_id, client.client_id, categories)
    return await run_in_tenant(tenant, lambda: record_consent(consent, recorded_by="t"))


# --- signatures -----------------------------------------------------------------------------------


def test_a_signature_verifies_only_the_exact_body_secret_and_time() -> None:
    secret = webhooks.new_secret()
    body = b'{"id":"x","kind":"task.overdue"}'
    header = sign(secret, 1_800_000_000, body)
    assert header.startswith("t=1800000000,v1=")
    assert verify_signature(secret, header, body, 1_800_000_000)
    assert verify_signature(secret, header, body, 1_800_000_000 + 300)  # the edge of the window
    assert not verify_signature(secret, header, body + b" ", 1_800_000_000)  # tampered body
    assert not verify_signature(secret, header, body.replace(b"x", b"y"), 1_800_000_000)
    assert not verify_signature(webhooks.new_secret(), header, body, 1_800_000_000)  # another secret
    assert not verify_signature(secret, header, body, 1_800_000_000 + 301)  # replayed too late
    assert not verify_signature(secret, header, body, 1_800_000_000 - 301)
    forged_time = header.replace("t=1800000000", "t=1800000100")
    assert not verify_signature(secret, forged_time, body, 1_800_000_100)  # the time is signed too
    for malformed in ("", "v1=abc", "t=1800000000", "t=x,v1=" + "0" * 64, "garbage"):
        assert not verify_signature(secret, malformed, body, 1_800_000_000)
    # Several v1 values (e.g. a future scheme signing with two secrets): one match suffices.
    both = f"{header},v1={'0' * 64}"
    assert verify_signature(secret, both, body, 1_800_000_000)


def test_urls_and_kinds_are_checked() -> None:
    assert webhooks.check_url(" https://hooks.example.com/yiyang ", production=True) == (
        "https://hooks.example.com/yiyang"
    )
    assert webhooks.check_url("http://127.0.0.1:8080/x", production=False) == "http://127.0.0.1:8080/x"
    with pytest.raises(InvalidInput) as refused:
        webhooks.check_url("http://hooks.example.com/yiyang", production=True)
    assert refused.value.message == webhooks.HTTPS_REQUIRED
    for internal in (
        "https://127.0.0.1/x",
        "https://169.254.169.254/latest",
        "https://10.0.0.8/x",
        "https://[::1]/x",
        "https://localhost:8443/x",
    ):
        with pytest.raises(InvalidInput) as refused:
            webhooks.check_url(internal, production=True)
        assert refused.value.message == webhooks.PUBLIC_HOST_REQUIRED, internal
        assert webhooks.check_url(internal, production=False) == internal  # tests and development
    for bad in (
        "hooks.example.com",
        "ftp://example.com/x",
        "https://",
        "https://user:pw@example.com/",
        "https://example.com/a b",
        "https://example.com:99999/",
        "x" * 10,
    ):
        with pytest.raises(InvalidInput) as refused:
            webhooks.check_url(bad, production=False)
        assert refused.value.message == webhooks.NOT_A_URL, bad
    assert webhooks.check_kinds(["work_order.created", "task.overdue", "task.overdue"]) == (
        "task.overdue",
        "work_order.created",
    )
    with pytest.raises(InvalidInput) as refused:
        webhooks.check_kinds([])
    assert refused.value.message == webhooks.NO_KINDS
    with pytest.raises(InvalidInput) as refused:
        webhooks.check_kinds(["task.overdue", "resident.name"])
    assert refused.value.params == {"kind": "resident.name"}


# --- delivery -------------------------------------------------------------------------------------


async def test_an_event_is_delivered_once_signed_with_ids_only(
    world: World, receiver: Receiver, sender: HttpxSender
) -> None:
    tenant = await fresh_tenant(f"钩子投递-{uuid.uuid4().hex[:6]}")
    client = await integrator(tenant)
    await endpoint(tenant, client, receiver, ("task.overdue", "work_order.created"))
    outbox_id = await notified(tenant, 41)
    rows = await deliveries(tenant)
    assert [(row["outbox_id"], row["state"]) for row in rows] == [(outbox_id, "pending")]

    now = soon()
    receiver.now = 1_800_000_000.0  # the receiver's clock, and the one the signature is stamped with
    outcome = await run_in_tenant(
        tenant, lambda: deliver_webhooks(now, sender, clock=lambda: 1_800_000_000.0)
    )
    assert outcome == WebhookDelivery(claimed=1, delivered=1)
    assert len(receiver.received) == 1 and receiver.received[0].verified
    request = receiver.received[0]
    event_id = webhooks.event_id(tenant.institution_id, outbox_id)
    assert request.headers[EVENT_ID_HEADER] == event_id
    assert request.headers[EVENT_KIND_HEADER] == "task.overdue"
    assert request.headers[SIGNATURE_HEADER].startswith("t=1800000000,v1=")
    event = request.event
    assert set(event) == {"id", "kind", "institution_id", "resident_id", "subject", "occurred_at"}
    assert event["id"] == event_id and event["kind"] == "task.overdue" and event["resident_id"] is None
    assert event["subject"]["type"] == "CareTask"
    assert event["occurred_at"].endswith("Z")

    again = await deliver(tenant, now + timedelta(hours=2), sender)
    assert again == WebhookDelivery() and len(receiver.received) == 1  # never resent once delivered
    (row,) = await deliveries(tenant)
    assert row["state"] == "delivered" and row["attempts"] == 1 and row["delivered_at"] == now
    (logged,) = await attempts(tenant)
    assert logged["status_code"] == 200 and logged["error_class"] is None and logged["attempt"] == 1
    assert logged["duration_ms"] >= 0


async def test_failures_are_retried_with_backoff_and_logged(
    world: World, receiver: Receiver, sender: HttpxSender
) -> None:
    tenant = await fresh_tenant(f"钩子重试-{uuid.uuid4().hex[:6]}")
    await endpoint(tenant, await integrator(tenant), receiver)
    await notified(tenant, 42)
    receiver.statuses = [500, 500]
    now = soon()

    first = await deliver(tenant, now, sender)
    assert first == WebhookDelivery(claimed=1, retried=1)
    (row,) = await deliveries(tenant)
    assert row["state"] == "pending" and row["attempts"] == 1 and row["last_error"] == "http_500"
    assert row["next_attempt_at"] == now + backoff(1)

    early = await deliver(tenant, now + backoff(1) - timedelta(seconds=1), sender)
    assert early == WebhookDelivery() and len(receiver.received) == 1  # not due yet

    second_at = now + backoff(1)
    assert await deliver(tenant, second_at, sender) == WebhookDelivery(claimed=1, retried=1)
    (row,) = await deliveries(tenant)
    assert row["next_attempt_at"] == second_at + backoff(2) and backoff(2) == 2 * backoff(1)

    third_at = second_at + backoff(2)
    assert await deliver(tenant, third_at, sender) == WebhookDelivery(claimed=1, delivered=1)
    assert len(receiver.received) == 3 and all(request.verified for request in receiver.received)
    # One event, one id: the receiver deduplicates retries on it.
    assert len({request.headers[EVENT_ID_HEADER] for request in receiver.received}) == 1
    (row,) = await deliveries(tenant)
    assert row["state"] == "delivered" and row["attempts"] == 3 and row["last_error"] is None
    logged = await attempts(tenant)
    assert [(entry["attempt"], entry["status_code"]) for entry in logged] == [(1, 500), (2, 500), (3, 200)]
    assert [entry["attempted_at"] for entry in logged] == [now, second_at, third_at]


async def test_a_delivery_is_dead_after_max_attempts(
    world: World, receiver: Receiver, sender: HttpxSender
) -> None:
    tenant = await fresh_tenant(f"钩子死信-{uuid.uuid4().hex[:6]}")
    client = await integrator(tenant)
    await endpoint(tenant, client, receiver)
    # A second endpoint where nothing listens: the error's class is logged, not a status.
    nowhere = Receiver(url=f"http://127.0.0.1:{free_port()}/hooks")
    await endpoint(tenant, client, nowhere)
    await notified(tenant, 43)
    receiver.statuses = [503] * (MAX_ATTEMPTS + 2)
    at = soon()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        outcome = await deliver(tenant, at, sender)
        last = attempt == MAX_ATTEMPTS
        assert outcome == WebhookDelivery(claimed=2, retried=0 if last else 2, dead=2 if last else 0), attempt
        at += backoff(attempt)
    assert [row["state"] for row in await deliveries(tenant)] == ["dead", "dead"]
    assert await deliver(tenant, at + timedelta(days=1), sender) == WebhookDelivery()
    assert len(receiver.received) == MAX_ATTEMPTS
    logged = await attempts(tenant)
    assert len(logged) == 2 * MAX_ATTEMPTS
    assert {entry["status_code"] for entry in logged} == {503, None}
    assert {entry["error_class"] for entry in logged} == {None, "connect_error"}


async def test_a_production_sender_refuses_hosts_that_resolve_inside(
    world: World, receiver: Receiver
) -> None:
    """Registration refuses internal address literals in production; a name is only known to point inside
    when it is resolved, so the production sender resolves before every POST and refuses."""
    tenant = await fresh_tenant(f"钩子内网-{uuid.uuid4().hex[:6]}")
    client = await integrator(tenant)
    await endpoint(tenant, client, receiver)  # http://127.0.0.1:<port>/hooks
    by_name = Receiver(url=receiver.url.replace("127.0.0.1", "localhost"))
    await endpoint(tenant, client, by_name)
    await notified(tenant, 44)
    async with HttpxSender(timeout=5.0, public_only=True) as production_sender:
        outcome = await deliver(tenant, soon(), production_sender)
    assert outcome == WebhookDelivery(claimed=2, retried=2)
    assert receiver.received == []
    assert {entry["error_class"] for entry in await attempts(tenant)} == {"internal_address"}
    # A sender that allows it (tests, development) reaches the receiver: the endpoint it checks signatures
    # for answers 2xx (the one by name is signed with that endpoint's own secret, which it refuses).
    async with HttpxSender(timeout=5.0) as development_sender:
        later = await deliver(tenant, soon() + backoff(1), development_sender)
    assert later.delivered >= 1 and any(request.verified for request in receiver.received)


async def test_the_job_run_twice_at_once_posts_once(
    world: World, receiver: Receiver, sender: HttpxSender
) -> None:
    tenant = await fresh_tenant(f"钩子并发-{uuid.uuid4().hex[:6]}")
    await endpoint(tenant, await integrator(tenant), receiver)
    for task in range(50, 55):
        await notified(tenant, task)
    now = soon()
    both = await asyncio.gather(
        run_in_tenant(tenant, lambda: deliver_webhooks(now, sender)),
        run_in_tenant(tenant, lambda: deliver_webhooks(now, sender)),
    )
    assert sum(outcome.delivered for outcome in both) == 5
    assert await deliver(tenant, now, sender) == WebhookDelivery()
    ids = [request.headers[EVENT_ID_HEADER] for request in receiver.received]
    assert len(ids) == 5 and len(set(ids)) == 5


async def test_only_subscribed_active_endpoints_of_live_clients_get_deliveries(
    world: World, receiver: Receiver, sender: HttpxSender
) -> None:
    tenant = await fresh_tenant(f"钩子订阅-{uuid.uuid4().hex[:6]}")
    client = await integrator(tenant)
    await endpoint(tenant, client, receiver, ("work_order.created",))
    await notified(tenant, 60)  # task.overdue: nobody subscribes
    assert await deliveries(tenant) == []

    subscribed = await endpoint(tenant, client, receiver, ("task.overdue",))
    await run_in_tenant(
        tenant, lambda: webhooks.update_endpoint(subscribed.endpoint.id, active=False, production=False)
    )
    await notified(tenant, 61)  # the only subscriber is disabled
    assert await deliveries(tenant) == []

    await run_in_tenant(
        tenant, lambda: webhooks.update_endpoint(subscribed.endpoint.id, active=True, production=False)
    )
    await notified(tenant, 62)
    assert len(await deliveries(tenant)) == 1
    # Disabled after it was enqueued: withheld when it comes due, never sent.
    await run_in_tenant(
        tenant, lambda: webhooks.update_endpoint(subscribed.endpoint.id, active=False, production=False)
    )
    assert await deliver(tenant, soon(), sender) == WebhookDelivery(claimed=1, withheld=1)
    assert receiver.received == []
    assert [row["last_error"] for row in await deliveries(tenant)] == ["endpoint_disabled"]

    # A revoked client's endpoints get nothing more.
    await run_in_tenant(
        tenant, lambda: webhooks.update_endpoint(subscribed.endpoint.id, active=True, production=False)
    )
    await revoke_client(client.client_id)
    await notified(tenant, 63)
    assert len(await deliveries(tenant)) == 1


async def test_the_secret_is_sealed_and_rotation_replaces_it(
    world: World, receiver: Receiver, sender: HttpxSender
) -> None:
    tenant = await fresh_tenant(f"钩子密钥-{uuid.uuid4().hex[:6]}")
    created = await endpoint(tenant, await integrator(tenant), receiver)
    assert created.secret.startswith("whsec_") and len(created.secret) > 40
    (stored,) = await default_connection().execute_query_dict(
        f'SELECT * FROM "{tenant.schema_name}".webhook_endpoint'
    )
    sealed = bytes(stored["secret_sealed"])
    assert created.secret.encode() not in sealed
    assert not any(created.secret in str(value) for value in stored.values() if not isinstance(value, bytes))
    assert await run_in_tenant(tenant, lambda: webhooks.get_endpoint(created.endpoint.id)) is not None

    old_secret = created.secret
    rotated = await run_in_tenant(tenant, lambda: webhooks.rotate_secret(created.endpoint.id))
    assert rotated.secret != old_secret and rotated.endpoint.secret_rotated_at is not None
    await notified(tenant, 70)
    receiver.secret = old_secret  # a receiver still on the old secret refuses what is signed now
    assert await deliver(tenant, soon(), sender) == WebhookDelivery(claimed=1, retried=1)
    assert receiver.received[-1].verified is False
    receiver.secret = rotated.secret
    later = soon() + backoff(1)
    assert await deliver(tenant, later, sender) == WebhookDelivery(claimed=1, delivered=1)
    assert receiver.received[-1].verified is True


async def test_resident_events_go_out_only_under_the_residents_consent(
    world: World, receiver: Receiver, sender: HttpxSender
) -> None:
    tenant = await fresh_tenant(f"钩子同意-{uuid.uuid4().hex[:6]}")
    client = await integrator(tenant)
    await endpoint(tenant, client, receiver)

    resident_id = await admitted(tenant, "孙秀英", date(1938, 4, 4))
    await notified(tenant, 80, resident_id=resident_id)
    assert await deliver(tenant, soon(), sender) == WebhookDelivery(claimed=1, withheld=1)
    assert receiver.received == []
    assert [row["last_error"] for row in await deliveries(tenant)] == ["no_consent"]

    # A consent for vitals only does not cover a care task's event (daily care).
    await consented(tenant, resident_id, client, frozenset({Category.VITALS}))
    await notified(tenant, 81, resident_id=resident_id)
    assert await deliver(tenant, soon(), sender) == WebhookDelivery(claimed=1, withheld=1)

    given = await consented(tenant, resident_id, client)
    await notified(tenant, 82, resident_id=resident_id)
    assert await deliver(tenant, soon(), sender) == WebhookDelivery(claimed=1, delivered=1)
    event = receiver.verified[0].event
    assert event["resident_id"] is not None and "孙秀英" not in receiver.verified[0].body.decode()

    await run_in_tenant(tenant, lambda: withdraw_consent(given.terms.consent_id, "家属撤回", recorded_by="t"))
    await notified(tenant, 83, resident_id=resident_id)
    assert await deliver(tenant, soon(), sender) == WebhookDelivery(claimed=1, withheld=1)
    assert len(receiver.received) == 1


async def test_deliveries_about_a_resident_are_on_their_audit_trail_and_in_their_export(
    world: World, receiver: Receiver, sender: HttpxSender
) -> None:
    from care.data_requests import export_resident  # the whole record: imports every part of it

    tenant = await fresh_tenant(f"钩子披露-{uuid.uuid4().hex[:6]}")
    client = await integrator(tenant, "床垫厂商")
    await endpoint(tenant, client, receiver)

    resident_id = await admitted(tenant, "钱桂芳", date(1937, 2, 2))
    other_id = await admitted(tenant, "钱桂芳", date(1937, 2, 2))
    # No consent yet: withheld, and denied on the resident's trail with the reason.
    await notified(tenant, 90, resident_id=resident_id)
    assert await deliver(tenant, soon(), sender) == WebhookDelivery(claimed=1, withheld=1)
    await consented(tenant, resident_id, client)
    await notified(tenant, 91, resident_id=resident_id)
    await notified(tenant, 92)  # institution-level: on nobody's trail
    await notified(tenant, 93, resident_id=other_id)  # another resident's (withheld: no consent)
    assert await deliver(tenant, soon(), sender) == WebhookDelivery(claimed=3, delivered=2, withheld=1)
    delivered_event = next(
        request.event for request in receiver.verified if request.event["resident_id"] is not None
    )

    trail = await run_in_tenant(tenant, lambda: access_report(resident_id, limit=50))
    disclosures = [event for event in trail if event.action == webhooks.DELIVER_ACTION]
    assert [
        (
            event.principal_subject,
            event.principal_kind,
            event.client_id,
            event.display_name,
            event.outcome,
            event.reason_code,
            event.data_categories,
            event.purpose,
            event.access,
        )
        for event in disclosures
    ] == [
        (
            f"client:{client.client_id}",
            AuditPrincipalKind.INTEGRATOR,
            client.client_id,
            "床垫厂商",
            outcome,
            reason,
            ("daily_care",),
            "third_party_integration",
            Access.READ,
        )
        for outcome, reason in ((Outcome.PERMITTED, None), (Outcome.DENIED, "no_consent"))  # newest first
    ]
    # The CSV export of the access report (api/exports.py) writes the same rows.
    assert [report_row(event, ZoneInfo("Asia/Shanghai"))[1:] for event in disclosures] == [
        [
            "床垫厂商",
            f"client:{client.client_id}",
            "integrator",
            "",
            client.client_id,
            "webhook.deliver",
            "read",
            "daily_care",
            "third_party_integration",
            outcome,
            reason,
        ]
        for outcome, reason in (("permitted", ""), ("denied", "no_consent"))
    ]
    other_trail = await run_in_tenant(tenant, lambda: access_report(other_id, limit=50))
    assert [(e.outcome, e.reason_code) for e in other_trail if e.action == webhooks.DELIVER_ACTION] == [
        (Outcome.DENIED, "no_consent")
    ]

    document = await run_in_tenant(tenant, lambda: export_resident(resident_id))
    (disclosed,) = document["webhook_disclosures"]
    assert disclosed["event_id"] == delivered_event["id"] and disclosed["kind"] == "task.overdue"
    assert disclosed["client_id"] == client.client_id and disclosed["client_name"] == "床垫厂商"
    assert disclosed["endpoint_host"] == "127.0.0.1" and disclosed["delivered_at"]
    assert "whsec_" not in json.dumps(document) and receiver.url not in json.dumps(document)
    assert (await run_in_tenant(tenant, lambda: export_resident(other_id)))["webhook_disclosures"] == []


async def test_a_dead_delivery_about_a_resident_is_a_failed_disclosure(
    world: World, receiver: Receiver, sender: HttpxSender
) -> None:
    tenant = await fresh_tenant(f"钩子失败-{uuid.uuid4().hex[:6]}")
    client = await integrator(tenant)
    await endpoint(tenant, client, receiver)

    resident_id = await admitted(tenant, "李淑珍", date(1939, 3, 3))
    await consented(tenant, resident_id, client)
    await notified(tenant, 95, resident_id=resident_id)
    receiver.statuses = [503] * MAX_ATTEMPTS
    at = soon()
    for attempt in range(1, MAX_ATTEMPTS + 1):
        await deliver(tenant, at, sender)
        at += backoff(attempt)
    trail = await run_in_tenant(tenant, lambda: access_report(resident_id, limit=50))
    # Retries are not disclosures of their own; the end of the delivery is (the receiver got it).
    assert [(e.outcome, e.reason_code) for e in trail if e.action == webhooks.DELIVER_ACTION] == [
        (Outcome.FAILED, "http_503")
    ]


async def test_registration_refuses_bad_input_and_other_institutions_clients(
    world: World, receiver: Receiver
) -> None:
    tenant = await fresh_tenant(f"钩子校验-{uuid.uuid4().hex[:6]}")
    other = await fresh_tenant(f"钩子他院-{uuid.uuid4().hex[:6]}")
    theirs = await integrator(other)
    with pytest.raises(NotFound):
        await run_in_tenant(
            tenant,
            lambda: register_endpoint(
                theirs.client.id, receiver.url, ["task.overdue"], created_by="t", production=False
            ),
        )
    mine = await integrator(tenant)
    with pytest.raises(ValidationFailed) as refused:
        await run_in_tenant(
            tenant,
            lambda: register_endpoint(mine.client.id, "not a url", [], created_by="t", production=False),
        )
    assert [(problem.field, problem.message) for problem in refused.value.problems] == [
        ("url", webhooks.NOT_A_URL),
        ("kinds", webhooks.NO_KINDS),
    ]
    with pytest.raises(InvalidInput) as https:
        await run_in_tenant(
            tenant,
            lambda: register_endpoint(
                mine.client.id, receiver.url, ["task.overdue"], created_by="t", production=True
            ),
        )
    assert https.value.message == webhooks.HTTPS_REQUIRED
    await revoke_client(mine.client_id)
    with pytest.raises(NotFound):
        await run_in_tenant(
            tenant,
            lambda: register_endpoint(
                mine.client.id, receiver.url, ["task.overdue"], created_by="t", production=False
            ),
        )


def test_the_verifier_in_the_integrator_docs_agrees() -> None:
    """docs/webhooks.md shows receivers a copy of verify_signature: it must accept and refuse the same."""
    text = (REPO_ROOT / "docs" / "webhooks.md").read_text(encoding="utf-8")
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(code, "docs/webhooks.md", "exec"), namespace)
    documented = namespace["verify_signature"]
    secret, body = webhooks.new_secret(), b'{"kind":"task.overdue"}'
    header = sign(secret, 1_800_000_000, body)
    cases = [
        (secret, header, body, 1_800_000_000),
        (secret, header, body + b"x", 1_800_000_000),
        (secret, header, body, 1_800_000_301),
        (webhooks.new_secret(), header, body, 1_800_000_000),
        (secret, "v1=" + header.split("v1=")[1], body, 1_800_000_000),
    ]
    assert [documented(*case) for case in cases] == [verify_signature(*case) for case in cases]
    assert [documented(*case) for case in cases] == [True, False, False, False, False]

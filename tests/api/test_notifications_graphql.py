"""The caller's notifications through GraphQL (schema/notifications.py): the inbox newest first in the
caller's language, read and unread, the count, the resident through the decision point, and nobody
else's notifications."""

import uuid
from datetime import UTC, date, datetime, timedelta

import httpx

from care.models import CareLevel, Gender
from care.notifications import deliver_pending, notify
from care.residents import Admission, admit_resident
from compliance.identity.account_models import UserAccount
from compliance.principals import Principal, PrincipalKind, StaffRole
from schema.ids import encode_id
from tenants.context import TenantRef
from tenants.db import default_connection
from tenants.unit_of_work import run_in_tenant
from tests.care.notification_support import overdue_task, staff_account
from tests.compliance.audit_support import fresh_tenant
from tests.conftest import World, gql, staff_token, token_for

INBOX = """query($unread: Boolean, $first: Int, $after: String) {
  myNotifications(unreadOnly: $unread, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { node { id kind message subjectType subjectId readAt createdAt } }
  }
  unreadNotificationCount
}"""
MARK = """mutation($ids: [ID!]!) {
  markNotificationsRead(input: {ids: $ids}) {
    notifications { id readAt }
    userErrors { field message code }
  }
}"""
WITH_RESIDENT = """{ myNotifications { edges { node { resident { id name } } } } }"""


def token_of(account: UserAccount, institution_id: int, role: StaffRole) -> str:
    return token_for(
        Principal(
            subject=f"account:{account.id}",
            kind=PrincipalKind.STAFF,
            institution_id=institution_id,
            roles=frozenset({role}),
        )
    )


async def delivered(tenant: TenantRef, *tasks: int, resident_id: int | None = None) -> None:
    async def cause() -> None:
        for task in tasks:
            await notify(overdue_task(task, resident_id=resident_id))

    await run_in_tenant(tenant, cause)
    later = datetime.now(UTC) + timedelta(seconds=5)
    await run_in_tenant(tenant, lambda: deliver_pending(later, None))


def nodes(body: dict) -> list[dict]:
    assert "errors" not in body, body
    return [edge["node"] for edge in body["data"]["myNotifications"]["edges"]]


async def test_the_inbox_newest_first_read_and_unread(client: httpx.AsyncClient, world: World) -> None:
    tenant = await fresh_tenant(f"收件箱-{uuid.uuid4().hex[:6]}")
    lead = await staff_account(tenant.institution_id, StaffRole.HEAD_NURSE)
    token = token_of(lead, tenant.institution_id, StaffRole.HEAD_NURSE)
    await delivered(tenant, 101, 102, 103)

    first = await gql(client, INBOX, {"first": 2}, token=token)
    page = nodes(first)
    assert [node["subjectId"] for node in page] == [
        encode_id("CareTask", tenant.institution_id, task) for task in (103, 102)
    ]
    assert page[0]["message"] == "一位长者的护理任务已逾期。"  # Chinese unless English is asked for
    assert page[0]["kind"] == "task.overdue" and page[0]["subjectType"] == "CareTask"
    assert first["data"]["myNotifications"]["totalCount"] == 3
    assert first["data"]["unreadNotificationCount"] == 3
    cursor = first["data"]["myNotifications"]["pageInfo"]["endCursor"]
    rest = nodes(await gql(client, INBOX, {"first": 2, "after": cursor}, token=token))
    assert [node["subjectId"] for node in rest] == [encode_id("CareTask", tenant.institution_id, 101)]

    english = await client.post(
        "/graphql",
        json={"query": INBOX, "variables": {"first": 1}},
        headers={"Authorization": f"Bearer {token}", "Accept-Language": "en"},
    )
    assert nodes(english.json())[0]["message"] == "A care task for a resident is overdue."

    marked = await gql(client, MARK, {"ids": [page[0]["id"], page[1]["id"]]}, token=token)
    payload = marked["data"]["markNotificationsRead"]
    assert payload["userErrors"] == []
    assert {node["id"] for node in payload["notifications"]} == {page[0]["id"], page[1]["id"]}
    assert all(node["readAt"] for node in payload["notifications"])
    read_at = {node["id"]: node["readAt"] for node in payload["notifications"]}
    again = await gql(client, MARK, {"ids": [page[0]["id"]]}, token=token)
    assert again["data"]["markNotificationsRead"]["notifications"] == [
        {"id": page[0]["id"], "readAt": read_at[page[0]["id"]]}
    ]

    unread = await gql(client, INBOX, {"unread": True}, token=token)
    assert [node["subjectId"] for node in nodes(unread)] == [
        encode_id("CareTask", tenant.institution_id, 101)
    ]
    assert unread["data"]["myNotifications"]["totalCount"] == 1
    assert unread["data"]["unreadNotificationCount"] == 1

    many = [encode_id("Notification", tenant.institution_id, n) for n in range(1, 102)]
    too_many = await gql(client, MARK, {"ids": many}, token=token)
    errors = too_many["data"]["markNotificationsRead"]["userErrors"]
    assert [error["code"] for error in errors] == ["BAD_USER_INPUT"] and errors[0]["field"] == "ids"


async def test_another_accounts_notifications_are_neither_seen_nor_marked(
    client: httpx.AsyncClient, world: World
) -> None:
    tenant = await fresh_tenant(f"他人通知-{uuid.uuid4().hex[:6]}")
    lead = await staff_account(tenant.institution_id, StaffRole.HEAD_NURSE)
    nurse = await staff_account(tenant.institution_id, StaffRole.NURSE)
    await delivered(tenant, 201)
    theirs = nodes(
        await gql(client, INBOX, {}, token=token_of(lead, tenant.institution_id, StaffRole.HEAD_NURSE))
    )
    assert len(theirs) == 1

    mine = token_of(nurse, tenant.institution_id, StaffRole.NURSE)
    body = await gql(client, INBOX, {}, token=mine)
    assert nodes(body) == [] and body["data"]["unreadNotificationCount"] == 0
    refused = await gql(client, MARK, {"ids": [theirs[0]["id"]]}, token=mine)
    assert [error["extensions"]["code"] for error in refused["errors"]] == ["NOT_FOUND"]
    assert refused["data"] is None
    still = await default_connection().execute_query_dict(
        f'SELECT read_at FROM "{tenant.schema_name}".notification_inbox'
    )
    assert still == [{"read_at": None}]

    # Another institution's staff, a malformed id, an integrator client (no inbox), nobody.
    outsider = staff_token(world.institution_ids[0], StaffRole.HEAD_NURSE)
    foreign = await gql(client, MARK, {"ids": [theirs[0]["id"]]}, token=outsider)
    assert [error["extensions"]["code"] for error in foreign["errors"]] == ["NOT_FOUND"]
    malformed = await gql(client, MARK, {"ids": ["not-an-id"]}, token=mine)
    assert [error["extensions"]["code"] for error in malformed["errors"]] == ["BAD_USER_INPUT"]
    integrator = token_for(
        Principal(
            subject="client:notification-probe",
            kind=PrincipalKind.INTEGRATOR,
            institution_id=tenant.institution_id,
            scopes=frozenset({"residents:read"}),
            client_id="notification-probe",
        )
    )
    forbidden = await gql(client, INBOX, {}, token=integrator)
    assert {error["extensions"]["code"] for error in forbidden["errors"]} == {"FORBIDDEN"}
    anonymous = await gql(client, INBOX, {})
    assert {error["extensions"]["code"] for error in anonymous["errors"]} == {"UNAUTHENTICATED"}


async def test_the_resident_is_read_through_the_decision_point(
    client: httpx.AsyncClient, world: World
) -> None:
    tenant = await fresh_tenant(f"通知长者-{uuid.uuid4().hex[:6]}")
    lead = await staff_account(tenant.institution_id, StaffRole.HEAD_NURSE)

    async def admit() -> int:
        resident = await admit_resident(
            Admission("孙玉梅", Gender.FEMALE, date(1940, 4, 4), CareLevel.ASSISTED, date(2026, 2, 2))
        )
        return resident.id

    resident_id = await run_in_tenant(tenant, admit)
    await delivered(tenant, 301, resident_id=resident_id)
    body = await gql(client, WITH_RESIDENT, token=token_of(lead, tenant.institution_id, StaffRole.HEAD_NURSE))
    assert nodes(body) == [
        {"resident": {"id": encode_id("Resident", tenant.institution_id, resident_id), "name": "孙玉梅"}}
    ]
    events = await default_connection().execute_query_dict(
        f'SELECT action, resident_id, data_categories FROM "{tenant.schema_name}".audit_event'
        " WHERE resident_id = $1 AND action LIKE '%resident.view%'",
        [resident_id],
    )
    assert events, "reading the notification's resident leaves an audit event"

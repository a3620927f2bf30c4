"""Webhooks through GraphQL (schema/webhooks.py): the admin registers an endpoint of an integrator client
and sees its secret once, bad input is userErrors, an integrator client manages its own endpoints only,
the delivery log with its attempts after real deliveries to a receiver on 127.0.0.1, and nobody else's
endpoints."""

import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from care.notifications import backoff, notify
from care.webhooks import HttpxSender, deliver_webhooks
from compliance.identity.clients import CreatedClient, create_integrator_client
from compliance.principals import Principal, PrincipalKind, StaffRole
from schema.ids import encode_id
from tenants.unit_of_work import run_in_tenant
from tests.care.notification_support import Receiver, integrator, overdue_task, running_receiver
from tests.compliance.audit_support import fresh_tenant
from tests.conftest import World, gql, staff_member_token, token_for

ENDPOINT_FIELDS = "id clientId url kinds active createdBy createdAt updatedAt secretRotatedAt"
REGISTER = f"""mutation($url: String!, $kinds: [String!]!, $clientId: ID) {{
  registerWebhookEndpoint(input: {{url: $url, kinds: $kinds, clientId: $clientId}}) {{
    endpoint {{ {ENDPOINT_FIELDS} }}
    secret
    userErrors {{ field message code }}
  }}
}}"""
UPDATE = f"""mutation($id: ID!, $url: String, $kinds: [String!], $active: Boolean) {{
  updateWebhookEndpoint(input: {{id: $id, url: $url, kinds: $kinds, active: $active}}) {{
    endpoint {{ {ENDPOINT_FIELDS} }}
    userErrors {{ field message code }}
  }}
}}"""
DISABLE = """mutation($id: ID!) {
  disableWebhookEndpoint(input: {id: $id}) { endpoint { id active } userErrors { field message } }
}"""
ROTATE = """mutation($id: ID!) {
  rotateWebhookSecret(input: {id: $id}) { endpoint { id secretRotatedAt } secret userErrors { field } }
}"""
ENDPOINTS = f"""query($first: Int, $after: String) {{
  webhookEndpoints(first: $first, after: $after) {{
    totalCount pageInfo {{ hasNextPage endCursor }} edges {{ node {{ {ENDPOINT_FIELDS} }} }}
  }}
}}"""
DELIVERIES = """query($id: ID!) {
  webhookDeliveries(endpointId: $id) {
    totalCount
    edges { node {
      id eventId kind state attemptCount nextAttemptAt deliveredAt lastError createdAt
      attempts { attempt attemptedAt statusCode errorClass durationMs }
    } }
  }
}"""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    yield from running_receiver()


@pytest.fixture
async def sender() -> AsyncIterator[HttpxSender]:
    sending = HttpxSender()
    try:
        yield sending
    finally:
        await sending.aclose()


def client_token(client: CreatedClient, institution_id: int, scopes: frozenset[str]) -> str:
    return token_for(
        Principal(
            subject=f"client:{client.client_id}",
            kind=PrincipalKind.INTEGRATOR,
            institution_id=institution_id,
            scopes=scopes,
            client_id=client.client_id,
        )
    )


def payload(body: dict, name: str) -> dict:
    assert "errors" not in body, body
    return body["data"][name]


async def register(
    client: httpx.AsyncClient, token: str, url: str, kinds: list[str], client_id: str | None = None
) -> dict:
    """registerWebhookEndpoint's payload (the caller's own client when no `client_id`)."""
    variables: dict[str, object] = {"url": url, "kinds": kinds}
    if client_id is not None:
        variables["clientId"] = client_id
    return payload(await gql(client, REGISTER, variables, token=token), "registerWebhookEndpoint")


def codes(body: dict) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


async def test_the_admin_registers_an_endpoint_and_sees_its_secret_once(
    client: httpx.AsyncClient, world: World, receiver: Receiver
) -> None:
    tenant = await fresh_tenant(f"钩子接口-{uuid.uuid4().hex[:6]}")
    integration = await integrator(tenant)
    token = staff_member_token(tenant.institution_id, StaffRole.INSTITUTION_ADMIN)
    client_id = encode_id("IntegratorClient", integration.client.id)
    registered = await register(
        client, token, receiver.url, ["work_order.created", "task.overdue"], client_id
    )
    assert registered["userErrors"] == []
    secret = registered["secret"]
    assert secret.startswith("whsec_")
    endpoint = registered["endpoint"]
    assert endpoint["clientId"] == client_id and endpoint["active"] is True
    assert endpoint["kinds"] == ["task.overdue", "work_order.created"] and endpoint["url"] == receiver.url

    listed = payload(await gql(client, ENDPOINTS, {}, token=token), "webhookEndpoints")
    assert listed["totalCount"] == 1 and [edge["node"] for edge in listed["edges"]] == [endpoint]
    # The secret is readable nowhere after creation: no field of the endpoint carries it.
    introspected = await gql(client, '{ __type(name: "WebhookEndpoint") { fields { name } } }', token=token)
    names = {field["name"] for field in introspected["data"]["__type"]["fields"]}
    assert not {name for name in names if "secret" in name.lower()} - {"secretRotatedAt"}
    assert secret not in str(listed)

    updated = payload(
        await gql(client, UPDATE, {"id": endpoint["id"], "kinds": ["sop.step_missed"]}, token=token),
        "updateWebhookEndpoint",
    )
    assert updated["userErrors"] == [] and updated["endpoint"]["kinds"] == ["sop.step_missed"]
    assert updated["endpoint"]["url"] == receiver.url

    rotated = payload(await gql(client, ROTATE, {"id": endpoint["id"]}, token=token), "rotateWebhookSecret")
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != secret
    assert rotated["endpoint"]["secretRotatedAt"] is not None

    disabled = payload(
        await gql(client, DISABLE, {"id": endpoint["id"]}, token=token), "disableWebhookEndpoint"
    )
    assert disabled["endpoint"] == {"id": endpoint["id"], "active": False}

    # Roles other than the admin's: FORBIDDEN, the same for every id.
    nurse = staff_member_token(tenant.institution_id, StaffRole.HEAD_NURSE)
    assert codes(await gql(client, ENDPOINTS, {}, token=nurse)) == ["FORBIDDEN"]
    assert codes(await gql(client, ROTATE, {"id": endpoint["id"]}, token=nurse)) == ["FORBIDDEN"]


async def test_bad_input_is_user_errors(client: httpx.AsyncClient, world: World) -> None:
    tenant = await fresh_tenant(f"钩子输入-{uuid.uuid4().hex[:6]}")
    integration = await integrator(tenant)
    token = staff_member_token(tenant.institution_id, StaffRole.INSTITUTION_ADMIN)
    client_id = encode_id("IntegratorClient", integration.client.id)

    async def errors(url: str, kinds: list[str], given: str | None = client_id) -> list[tuple[str, str]]:
        body = await client.post(
            "/graphql",
            json={"query": REGISTER, "variables": {"url": url, "kinds": kinds, "clientId": given}},
            headers={"Authorization": f"Bearer {token}", "Accept-Language": "en"},
        )
        found = payload(body.json(), "registerWebhookEndpoint")
        assert found["endpoint"] is None and found["secret"] is None
        return [(error["field"], error["message"]) for error in found["userErrors"]]

    assert await errors("not a url", []) == [
        ("url", "Enter an absolute http or https URL."),
        ("kinds", "Choose at least one event kind."),
    ]
    assert await errors("https://hooks.example.com/y", ["task.overdue", "resident.name"]) == [
        ("kinds", "Unknown event kind: resident.name.")
    ]
    assert await errors("https://hooks.example.com/y", ["task.overdue"], None) == [
        ("clientId", "Choose the integrator client the endpoint belongs to.")
    ]
    chinese = await register(client, token, "ftp://x", ["task.overdue"], client_id)
    assert chinese["userErrors"] == [
        {"field": "url", "message": "请输入完整的 http 或 https 网址。", "code": "BAD_USER_INPUT"}
    ]
    listed = payload(await gql(client, ENDPOINTS, {}, token=token), "webhookEndpoints")
    assert listed["totalCount"] == 0
    registered = await register(client, token, "https://hooks.example.com/y", ["task.overdue"], client_id)
    bad_update = payload(
        await gql(client, UPDATE, {"id": registered["endpoint"]["id"], "kinds": []}, token=token),
        "updateWebhookEndpoint",
    )
    assert [error["field"] for error in bad_update["userErrors"]] == ["kinds"]


async def test_an_integrator_manages_its_own_endpoints_only(
    client: httpx.AsyncClient, world: World, receiver: Receiver
) -> None:
    tenant = await fresh_tenant(f"钩子客户端-{uuid.uuid4().hex[:6]}")
    mine, theirs = await integrator(tenant, "我方"), await integrator(tenant, "他方")
    admin = staff_member_token(tenant.institution_id, StaffRole.INSTITUTION_ADMIN)
    their_endpoint = (
        await register(
            client, admin, receiver.url, ["task.overdue"], encode_id("IntegratorClient", theirs.client.id)
        )
    )["endpoint"]

    token = client_token(mine, tenant.institution_id, frozenset({"webhooks:manage"}))
    own = await register(client, token, receiver.url, ["work_order.resolved"])
    assert own["userErrors"] == [] and own["secret"]
    assert own["endpoint"]["clientId"] == encode_id("IntegratorClient", mine.client.id)
    assert own["endpoint"]["createdBy"] == f"client:{mine.client_id}"
    listed = payload(await gql(client, ENDPOINTS, {}, token=token), "webhookEndpoints")
    assert [edge["node"]["id"] for edge in listed["edges"]] == [own["endpoint"]["id"]]
    admin_view = payload(await gql(client, ENDPOINTS, {}, token=admin), "webhookEndpoints")
    assert admin_view["totalCount"] == 2

    # Another client's endpoint, or registering for another client: NOT_FOUND.
    for query, variables in (
        (ROTATE, {"id": their_endpoint["id"]}),
        (DISABLE, {"id": their_endpoint["id"]}),
        (DELIVERIES, {"id": their_endpoint["id"]}),
        (
            REGISTER,
            {
                "url": receiver.url,
                "kinds": ["task.overdue"],
                "clientId": encode_id("IntegratorClient", theirs.client.id),
            },
        ),
    ):
        body = await gql(client, query, variables, token=token)
        assert codes(body) == ["NOT_FOUND"] and body["data"] is None, body

    # Without the webhooks:manage scope: FORBIDDEN, even for its own endpoints. residents:read (which
    # once reached them) no longer does.
    own_id = own["endpoint"]["id"]
    for scopes in (
        {"vitals:write"},
        {"residents:read"},
        {"residents:read", "residents:write", "vitals:write"},
    ):
        other_token = client_token(mine, tenant.institution_id, frozenset(scopes))
        for query, variables in (
            (ENDPOINTS, {}),
            (DELIVERIES, {"id": own_id}),
            (REGISTER, {"url": receiver.url, "kinds": ["task.overdue"]}),
            (UPDATE, {"id": own_id, "kinds": ["task.overdue"]}),
            (DISABLE, {"id": own_id}),
            (ROTATE, {"id": own_id}),
        ):
            body = await gql(client, query, variables, token=other_token)
            assert codes(body) == ["FORBIDDEN"] and body["data"] is None, (scopes, body)
    still = payload(await gql(client, ENDPOINTS, {}, token=token), "webhookEndpoints")
    assert [(edge["node"]["active"], edge["node"]["kinds"]) for edge in still["edges"]] == [
        (True, ["work_order.resolved"])
    ]


async def client_credentials_token(
    client: httpx.AsyncClient, created: CreatedClient, scope: str
) -> httpx.Response:
    return await client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": scope},
        auth=(created.client_id, created.client_secret),
    )


async def test_the_token_endpoint_grants_webhooks_manage_only_to_clients_created_with_it(
    client: httpx.AsyncClient, world: World, receiver: Receiver
) -> None:
    tenant = await fresh_tenant(f"钩子授权-{uuid.uuid4().hex[:6]}")
    manager = await create_integrator_client(
        "事件接收", scopes=["webhooks:manage"], created_by="test", institution_id=tenant.institution_id
    )
    reader = await create_integrator_client(
        "只读对接", scopes=["residents:read"], created_by="test", institution_id=tenant.institution_id
    )
    issued = await client_credentials_token(client, manager, "webhooks:manage")
    assert issued.status_code == 200 and issued.json()["scope"] == "webhooks:manage", issued.text
    token = issued.json()["access_token"]
    own = await register(client, token, receiver.url, ["task.overdue"])
    assert own["userErrors"] == [] and own["endpoint"]["clientId"] == encode_id(
        "IntegratorClient", manager.client.id
    )

    refused = await client_credentials_token(client, reader, "webhooks:manage")
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_scope"
    read_only = await client_credentials_token(client, reader, "residents:read")
    assert read_only.status_code == 200, read_only.text
    body = await gql(
        client,
        REGISTER,
        {"url": receiver.url, "kinds": ["task.overdue"]},
        token=read_only.json()["access_token"],
    )
    assert codes(body) == ["FORBIDDEN"] and body["data"] is None


async def test_the_delivery_log_shows_every_attempt(
    client: httpx.AsyncClient, world: World, receiver: Receiver, sender: HttpxSender
) -> None:
    tenant = await fresh_tenant(f"钩子日志-{uuid.uuid4().hex[:6]}")
    integration = await integrator(tenant)
    token = staff_member_token(tenant.institution_id, StaffRole.INSTITUTION_ADMIN)
    registered = await register(
        client, token, receiver.url, ["task.overdue"], encode_id("IntegratorClient", integration.client.id)
    )
    receiver.secret = registered["secret"]
    await run_in_tenant(tenant, lambda: notify(overdue_task(301)))
    receiver.statuses = [502]
    now = datetime.now(UTC) + timedelta(seconds=5)
    for at in (now, now + backoff(1)):
        await run_in_tenant(tenant, lambda at=at: deliver_webhooks(at, sender))
    assert [request.verified for request in receiver.received] == [True, True]

    log = payload(
        await gql(client, DELIVERIES, {"id": registered["endpoint"]["id"]}, token=token), "webhookDeliveries"
    )
    assert log["totalCount"] == 1
    (node,) = [edge["node"] for edge in log["edges"]]
    assert node["state"] == "DELIVERED" and node["attemptCount"] == 2 and node["kind"] == "task.overdue"
    assert node["eventId"] == receiver.received[0].headers["Yiyang-Event-Id"]
    assert node["nextAttemptAt"] is None and node["lastError"] is None and node["deliveredAt"]
    assert [(entry["attempt"], entry["statusCode"], entry["errorClass"]) for entry in node["attempts"]] == [
        (1, 502, None),
        (2, 200, None),
    ]


async def test_another_institutions_endpoint_is_not_found(
    client: httpx.AsyncClient, world: World, receiver: Receiver
) -> None:
    tenant = await fresh_tenant(f"钩子隔离-{uuid.uuid4().hex[:6]}")
    other = await fresh_tenant(f"钩子他院-{uuid.uuid4().hex[:6]}")
    theirs = await integrator(other)
    registered = await register(
        client,
        staff_member_token(other.institution_id, StaffRole.INSTITUTION_ADMIN),
        receiver.url,
        ["task.overdue"],
        encode_id("IntegratorClient", theirs.client.id),
    )
    their_id = registered["endpoint"]["id"]
    mine = staff_member_token(tenant.institution_id, StaffRole.INSTITUTION_ADMIN)
    for query in (ROTATE, DISABLE, DELIVERIES):
        body = await gql(client, query, {"id": their_id}, token=mine)
        assert codes(body) == ["NOT_FOUND"] and body["data"] is None, body
    body = await gql(
        client,
        REGISTER,
        {
            "url": receiver.url,
            "kinds": ["task.overdue"],
            "clientId": encode_id("IntegratorClient", theirs.client.id),
        },
        token=mine,
    )
    assert codes(body) == ["NOT_FOUND"] and body["data"] is None
    listed = payload(await gql(client, ENDPOINTS, {}, token=mine), "webhookEndpoints")
    assert listed["totalCount"] == 0

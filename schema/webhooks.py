"""Integrator webhooks through GraphQL (care/webhooks.py; for integrators: docs/webhooks.md):
`webhookEndpoints`, `webhookDeliveries(endpointId)` and the mutations `registerWebhookEndpoint`,
`updateWebhookEndpoint`, `disableWebhookEndpoint`, `rotateWebhookSecret`.

The policy decides (`webhook.view`, `webhook.manage`): the institution's admin (and its chain's admin)
manages the endpoints of the integrator clients bound to the institution or its chain; an integrator
client with the `webhooks:manage` scope manages its own endpoints only (another client's endpoint is
NOT_FOUND to it, like another institution's). A signing secret is in the answer of the mutation that
made it (registration, rotation) and nowhere else, ever.
"""

from datetime import datetime

import strawberry

from care import webhooks as care
from compliance.policy import Action, require
from compliance.principals import Principal, PrincipalKind
from schema.context import YiyangInfo
from schema.ids import decode_id, encode_id
from schema.pagination import Connection, connection, page_request
from schema.user_errors import USER_ERROR_TYPES, UserError, user_errors
from tenants.errors import InvalidInput, NotFound

CHOOSE_CLIENT = "Choose the integrator client the endpoint belongs to."

DeliveryStateEnum = strawberry.enum(care.DeliveryState, name="WebhookDeliveryState")


@strawberry.type(
    name="WebhookEndpoint",
    description="Where an integrator client receives signed event notifications. Its secret is shown "
    "once, when it is registered or rotated.",
)
class WebhookEndpointType:
    id: strawberry.ID
    client_id: strawberry.ID = strawberry.field(description="The IntegratorClient it belongs to.")
    url: str
    kinds: list[str] = strawberry.field(description="The event kinds it receives, e.g. task.overdue.")
    active: bool
    created_by: str
    created_at: datetime
    updated_at: datetime
    secret_rotated_at: datetime | None

    @classmethod
    def of(cls, found: care.Endpoint, institution_id: int) -> "WebhookEndpointType":
        return cls(
            id=strawberry.ID(encode_id("WebhookEndpoint", institution_id, found.id)),
            client_id=strawberry.ID(encode_id("IntegratorClient", found.client_id)),
            url=found.url,
            kinds=list(found.kinds),
            active=found.active,
            created_by=found.created_by,
            created_at=found.created_at,
            updated_at=found.updated_at,
            secret_rotated_at=found.secret_rotated_at,
        )


@strawberry.type(name="WebhookAttempt", description="One HTTP attempt of a delivery.")
class WebhookAttemptType:
    attempt: int
    attempted_at: datetime
    status_code: int | None = strawberry.field(description="The receiver's HTTP status, if it answered.")
    error_class: str | None = strawberry.field(description="Why there was no answer: timeout, connect_error…")
    duration_ms: int


@strawberry.type(name="WebhookDelivery", description="One event sent (or to be sent) to one endpoint.")
class WebhookDeliveryType:
    id: strawberry.ID
    event_id: str = strawberry.field(description="The Yiyang-Event-Id header: the same on every retry.")
    kind: str
    state: DeliveryStateEnum
    attempt_count: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_error: str | None = strawberry.field(
        description="The last failure (http_500, timeout…) or why it was withheld (no_consent…)."
    )
    created_at: datetime
    attempts: list[WebhookAttemptType] = strawberry.field(description="The delivery log, oldest first.")

    @classmethod
    def of(cls, found: care.DeliveryRecord, institution_id: int) -> "WebhookDeliveryType":
        return cls(
            id=strawberry.ID(encode_id("WebhookDelivery", institution_id, found.id)),
            event_id=care.event_id(institution_id, found.outbox_id),
            kind=found.kind,
            state=found.state,
            attempt_count=found.attempts,
            next_attempt_at=found.next_attempt_at,
            delivered_at=found.delivered_at,
            last_error=found.last_error,
            created_at=found.created_at,
            attempts=[
                WebhookAttemptType(
                    attempt=entry.attempt,
                    attempted_at=entry.attempted_at,
                    status_code=entry.status_code,
                    error_class=entry.error_class,
                    duration_ms=entry.duration_ms,
                )
                for entry in found.log
            ],
        )


async def _own_client(principal: Principal) -> int | None:
    """The client whose endpoints an integrator sees (its own); None for staff (all of them)."""
    if principal.kind is not PrincipalKind.INTEGRATOR:
        return None
    pk = await care.client_pk_of(principal.client_id or principal.subject.removeprefix("client:"))
    if pk is None:  # a token of a client that no longer exists
        raise NotFound("Not found.")
    return pk


async def _endpoint(info: YiyangInfo, given: str, action: Action, *, field: str = "id") -> care.Endpoint:
    """The endpoint `given` if the caller may do `action` on it; NOT_FOUND for another institution's or,
    for an integrator, another client's (the policy answers for the institution the id names)."""
    institution_id, pk = decode_id("WebhookEndpoint", given, 2, field=field)
    principal = require(info.context.principal, action, institution=institution_id)
    if info.context.require_tenant().institution_id != institution_id:
        raise NotFound("Not found.", field=field)
    found = await care.get_endpoint(pk)
    own = await _own_client(principal)
    if found is None or (own is not None and found.client_id != own):
        raise NotFound("Not found.", field=field)
    return found


@strawberry.type
class WebhookQueries:
    @strawberry.field(
        description="Webhook endpoints of the acting institution (an integrator client: its own), in "
        "registration order."
    )
    async def webhook_endpoints(
        self, info: YiyangInfo, first: int | None = None, after: str | None = None
    ) -> Connection[WebhookEndpointType]:
        principal = require(info.context.principal, Action.WEBHOOK_VIEW)
        institution_id = info.context.require_tenant().institution_id
        page = page_request(first, after)
        own = await _own_client(principal)
        rows = await care.endpoints_page(own, after_id=page.after_key, limit=page.size + 1)
        return connection(
            rows,
            page,
            key=lambda row: row.id,
            node=lambda row: WebhookEndpointType.of(row, institution_id),
            count_total=lambda: care.count_endpoints(own),
        )

    @strawberry.field(description="The deliveries of an endpoint, newest first, with their attempts.")
    async def webhook_deliveries(
        self, info: YiyangInfo, endpoint_id: strawberry.ID, first: int | None = None, after: str | None = None
    ) -> Connection[WebhookDeliveryType]:
        found = await _endpoint(info, endpoint_id, Action.WEBHOOK_VIEW, field="endpointId")
        institution_id = info.context.require_tenant().institution_id
        page = page_request(first, after)
        rows = await care.deliveries_page(found.id, after_id=page.after_key, limit=page.size + 1)
        return connection(
            rows,
            page,
            key=lambda row: row.id,
            node=lambda row: WebhookDeliveryType.of(row, institution_id),
            count_total=lambda: care.count_deliveries(found.id),
        )


@strawberry.input
class RegisterWebhookEndpointInput:
    url: str = strawberry.field(description="https (http only outside production).")
    kinds: list[str] = strawberry.field(description="Event kinds, e.g. task.overdue, work_order.created.")
    client_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="The IntegratorClient it belongs to (of the institution or its chain); an integrator "
        "client registers its own and leaves it out.",
    )


@strawberry.input
class UpdateWebhookEndpointInput:
    id: strawberry.ID
    url: str | None = None
    kinds: list[str] | None = None
    active: bool | None = None


@strawberry.input
class WebhookEndpointInput:
    id: strawberry.ID


@strawberry.type
class WebhookEndpointPayload:
    endpoint: WebhookEndpointType | None
    user_errors: list[UserError]


@strawberry.type
class WebhookSecretPayload:
    endpoint: WebhookEndpointType | None
    secret: str | None = strawberry.field(
        description="The signing secret, shown this once: store it in the receiver's secret store."
    )
    user_errors: list[UserError]


async def _client_of_registration(principal: Principal, pk: int | None) -> int:
    own = await _own_client(principal)
    if pk is None:
        if own is None:
            raise InvalidInput(CHOOSE_CLIENT, field="clientId")
        return own
    if own is not None and pk != own:
        raise NotFound("Not found.", field="clientId")
    return await care.integrator_client_of_institution(pk)  # NOT_FOUND unless bound here or to the chain


@strawberry.type
class WebhookMutations:
    @strawberry.mutation(
        description="Register a webhook endpoint of an integrator client; the secret is in this answer only."
    )
    async def register_webhook_endpoint(
        self, info: YiyangInfo, input: RegisterWebhookEndpointInput
    ) -> WebhookSecretPayload:
        principal = require(info.context.principal, Action.WEBHOOK_MANAGE)
        given: int | None = None
        if input.client_id is not None:  # an id of another kind or tenant: NOT_FOUND before anything else
            try:
                (given,) = decode_id("IntegratorClient", input.client_id, 1, field="clientId")
            except InvalidInput as error:
                return WebhookSecretPayload(endpoint=None, secret=None, user_errors=user_errors(info, error))
        institution_id = info.context.require_tenant().institution_id
        try:
            client_pk = await _client_of_registration(principal, given)
            created = await care.register_endpoint(
                client_pk,
                input.url,
                input.kinds,
                created_by=principal.subject,
                production=care.production_environment(),
            )
        except USER_ERROR_TYPES as error:
            return WebhookSecretPayload(endpoint=None, secret=None, user_errors=user_errors(info, error))
        return WebhookSecretPayload(
            endpoint=WebhookEndpointType.of(created.endpoint, institution_id),
            secret=created.secret,
            user_errors=[],
        )

    @strawberry.mutation(description="Change an endpoint's URL, event kinds or whether it is active.")
    async def update_webhook_endpoint(
        self, info: YiyangInfo, input: UpdateWebhookEndpointInput
    ) -> WebhookEndpointPayload:
        found = await _endpoint(info, input.id, Action.WEBHOOK_MANAGE)
        institution_id = info.context.require_tenant().institution_id
        try:
            changed = await care.update_endpoint(
                found.id,
                url=input.url,
                kinds=input.kinds,
                active=input.active,
                production=care.production_environment(),
            )
        except USER_ERROR_TYPES as error:
            return WebhookEndpointPayload(endpoint=None, user_errors=user_errors(info, error))
        return WebhookEndpointPayload(
            endpoint=WebhookEndpointType.of(changed, institution_id), user_errors=[]
        )

    @strawberry.mutation(
        description="Stop sending to an endpoint; its pending deliveries are withheld when they come due."
    )
    async def disable_webhook_endpoint(
        self, info: YiyangInfo, input: WebhookEndpointInput
    ) -> WebhookEndpointPayload:
        found = await _endpoint(info, input.id, Action.WEBHOOK_MANAGE)
        changed = await care.update_endpoint(found.id, active=False, production=False)
        institution_id = info.context.require_tenant().institution_id
        return WebhookEndpointPayload(
            endpoint=WebhookEndpointType.of(changed, institution_id), user_errors=[]
        )

    @strawberry.mutation(
        description="A new signing secret for an endpoint, in this answer only; the old one signs nothing "
        "from now on."
    )
    async def rotate_webhook_secret(
        self, info: YiyangInfo, input: WebhookEndpointInput
    ) -> WebhookSecretPayload:
        found = await _endpoint(info, input.id, Action.WEBHOOK_MANAGE)
        rotated = await care.rotate_secret(found.id)
        institution_id = info.context.require_tenant().institution_id
        return WebhookSecretPayload(
            endpoint=WebhookEndpointType.of(rotated.endpoint, institution_id),
            secret=rotated.secret,
            user_errors=[],
        )

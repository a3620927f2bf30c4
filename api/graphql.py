"""/graphql: authentication in front, then strawberry with the tenant unit of work around execution."""

import logging
import time
from collections import OrderedDict
from typing import Any

import orjson
from cross_web import AsyncHTTPRequestAdapter
from graphql import GraphQLError
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.types import ExecutionResult

from api.errors import graphql_error_response
from api.metrics import Metrics
from api.middleware import request_id_of
from care.uploads import DEFAULT_MAX_FILE_BYTES
from compliance.acting import act_in
from compliance.audit import AuditTrail
from compliance.identity.access_tokens import verify_access_token
from compliance.identity.keys import MAX_ACCESS_TOKEN_LIFETIME_SECONDS
from compliance.identity.login_throttle import LoginThrottle
from compliance.principals import Principal
from schema.context import RequestContext
from schema.i18n import negotiate_locale, translate
from schema.ids import decode_id
from schema.rate_limits import RateLimiter, rate_limited_retry_after
from schema.root import is_expected
from tenants.context import TenantRef
from tenants.errors import DomainError, Forbidden, InvalidInput, NotFound, RateLimited, Unauthenticated
from tenants.registry import TenantDirectory
from tenants.unit_of_work import run_in_tenant

try:  # the HTTP-protocol fixes for the GraphQL-over-HTTP audit
    from api.graphql_view import YiyangGraphQLView as ProtocolView
except ImportError:  # pragma: no cover
    from strawberry.asgi import GraphQL as ProtocolView

log = logging.getLogger("yiyang.graphql")
GRAPHQL_RESPONSE_MEDIA_TYPE = "application/graphql-response+json"
INTERNAL_MESSAGE = "Internal error. Quote the request id when contacting support."
INTERNAL_REASON = "internal_error"  # an audit event's reason when the request rolled back on our fault


class _RolledBack(Exception):
    """Carries a result whose unexpected error made the unit of work roll back."""

    def __init__(self, result: ExecutionResult) -> None:
        super().__init__("rolled back")
        self.result = result


def _before_execution(result: Any) -> bool:
    """Parse, validation and variable-coercion failures: errors, no data, and no error with a path."""
    return (
        isinstance(result, ExecutionResult)
        and result.data is None
        and bool(result.errors)
        and all(error.path is None for error in result.errors)
    )


def _fail_refused_fields(trail: AuditTrail, result: Any) -> None:
    """A root field that ended in an error (NOT_FOUND, CONFLICT… raised after its decisions were
    recorded) did not do its work: its permitted events are recorded as failed, with the error's code."""
    if not isinstance(result, ExecutionResult):
        return
    for error in result.errors or []:
        if error.path is not None and len(error.path) == 1:
            original = error.original_error
            code = original.code if isinstance(original, DomainError) else "BAD_USER_INPUT"
            trail.fail(str(error.path[0]), code.lower())


def _unexpected(result: Any) -> GraphQLError | None:
    if not isinstance(result, ExecutionResult):
        return None
    return next((error for error in result.errors or [] if not is_expected(error)), None)


class GraphQLView(ProtocolView):
    def __init__(self, *args: Any, tenants: TenantDirectory, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.tenants = tenants
        self.metrics = metrics
        self.rate_limiter: RateLimiter | None = None  # set when the app starts (it needs Redis)
        self.login_throttle: LoginThrottle | None = None  # likewise
        self.max_upload_bytes = DEFAULT_MAX_FILE_BYTES  # the settings' YIYANG_MAX_UPLOAD_BYTES (api/app.py)

    # orjson (docs/dependencies.md says why). Its decode error is a json.JSONDecodeError, which strawberry
    # answers with a 400.
    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    def decode_json(self, data: str | bytes) -> object:
        return orjson.loads(data)

    async def get_context(self, request: Request, response: Response) -> RequestContext:
        state = request.scope.get("state", {})
        return RequestContext(
            principal=state.get("principal"),
            request_id=request_id_of(request.scope),
            locale=negotiate_locale(request.headers.get("accept-language")),
            tenant=state.get("tenant"),
            tenant_problem=state.get("tenant_problem"),
            rate_limiter=self.rate_limiter,
            login_throttle=self.login_throttle,
            client_address=request.client.host if request.client else "",
            max_upload_bytes=self.max_upload_bytes,
        )

    async def execute_operation(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        request_data: GraphQLRequestData | list[GraphQLRequestData],
        context: RequestContext,
        root_value: Any,
        sub_response: Response,
    ) -> Any:
        result = await self._execute_in_unit_of_work(
            request, request_adapter, request_data, context, root_value, sub_response
        )
        if GRAPHQL_RESPONSE_MEDIA_TYPE in request.headers.get("accept", ""):
            # GraphQL over HTTP: with the new media type, a request that never reached execution
            # (unparsable, invalid, or with variables that do not coerce) is a 400.
            sub_response.media_type = GRAPHQL_RESPONSE_MEDIA_TYPE
            if _before_execution(result):
                sub_response.status_code = 400
        retry_after = rate_limited_retry_after(result)
        if retry_after is not None:  # after the 400 above: a 429 wins
            sub_response.status_code = 429
            sub_response.headers["Retry-After"] = str(retry_after)
        return result

    async def _execute_in_unit_of_work(
        self,
        request: Request,
        request_adapter: AsyncHTTPRequestAdapter,
        request_data: GraphQLRequestData | list[GraphQLRequestData],
        context: RequestContext,
        root_value: Any,
        sub_response: Response,
    ) -> Any:
        execute = super().execute_operation
        arguments = (request, request_adapter, request_data, context, root_value, sub_response)
        if context.tenant is None:
            return await execute(*arguments)

        async def in_unit_of_work() -> Any:
            result = await execute(*arguments)
            unexpected = _unexpected(result)
            if unexpected is not None:
                # Our own fault mid-operation: keep none of its writes.
                raise _RolledBack(result) from unexpected.original_error
            _fail_refused_fields(context.audit, result)
            # The request's audit events, in its transaction: if they cannot be written, nothing is.
            await context.audit.flush()
            return result

        tenant = context.tenant
        try:
            return await run_in_tenant(tenant, in_unit_of_work)
        except _RolledBack as rolled_back:
            # What was decided is still on the record, as failed, in a unit of work of its own.
            context.audit.fail_all(INTERNAL_REASON)
            await run_in_tenant(tenant, context.audit.flush)
            return rolled_back.result

    def create_response(self, response_data: Any, sub_response: Response) -> Response:
        response = super().create_response(response_data, sub_response)
        if sub_response.media_type == GRAPHQL_RESPONSE_MEDIA_TYPE:
            response.headers["content-type"] = f"{GRAPHQL_RESPONSE_MEDIA_TYPE}; charset=utf-8"
        return response

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        response = await super().process_result(request, result)
        if not result.errors:
            self.metrics.observe_graphql([])
            return response
        if _before_execution(result):
            response.pop("data", None)  # nothing was executed, so there is no data entry at all
        locale = negotiate_locale(request.headers.get("accept-language"))
        request_id = request_id_of(request.scope)
        response["errors"] = [self._format(error, locale, request_id) for error in result.errors]
        if _unexpected(result) is not None:
            # The unit of work rolled back, so no partial data may be reported as done.
            response["data"] = None
        self.metrics.observe_graphql([e["extensions"]["code"] for e in response["errors"]])
        return response

    @staticmethod
    def _format(error: GraphQLError, locale: str, request_id: str) -> dict[str, Any]:
        formatted: dict[str, Any] = {"message": error.message}
        if error.locations:
            formatted["locations"] = [{"line": loc.line, "column": loc.column} for loc in error.locations]
        if error.path:
            formatted["path"] = error.path
        original = error.original_error
        if isinstance(original, DomainError):
            formatted["message"] = translate(original.message, locale, original.params)
            code = original.code
            if original.field:
                formatted.setdefault("extensions", {})["field"] = original.field
            if original.reason is not None:
                formatted.setdefault("extensions", {})["reason"] = original.reason
        elif is_expected(error):
            code = "BAD_USER_INPUT"
        else:
            formatted["message"] = translate(INTERNAL_MESSAGE, locale)
            code = "INTERNAL"
        if isinstance(original, RateLimited):
            formatted.setdefault("extensions", {})["retryAfter"] = original.retry_after_seconds
        for key in ("retryAfter", "cost", "budget"):  # the rate limiter's hints (schema/rate_limits.py)
            if error.extensions and key in error.extensions:
                formatted.setdefault("extensions", {})[key] = error.extensions[key]
        formatted["extensions"] = {**formatted.get("extensions", {}), "code": code, "requestId": request_id}
        return formatted


INSTITUTION_HEADER = "Yiyang-Institution"
# A multipart request (file upload) must carry one of these, non-empty: no HTML form can set a header, so
# the browser sends a CORS preflight first and a cross-site page cannot post a "simple" request (CSRF; the
# GraphQL multipart request spec, "Security"). Apollo's upload client sends the first.
PREFLIGHT_HEADERS = ("Apollo-Require-Preflight", "GraphQL-Require-Preflight")
_STATUS_OF = {Unauthenticated: 401, Forbidden: 403, NotFound: 404}


class GraphQLEndpoint:
    """Authenticates the bearer token and settles the institution the request acts in, then hands the
    request to the GraphQL view.

    The token is an RFC 9068 access token of our issuer (compliance/identity/access_tokens.py). The
    institution comes from its claims; a chain principal or a family account may name another one in
    the `Yiyang-Institution` header (an Institution id), which compliance/acting.py checks against the
    token and the registry. Nothing else about the tenant is taken from the request.
    """

    def __init__(self, view: GraphQLView, issuer: str, graphiql: bool) -> None:
        self.view = view
        self.issuer = issuer
        self.graphiql = graphiql
        self.verified = VerifiedTokenCache()

    def _is_ide_page(self, scope: Scope, headers: Headers) -> bool:
        return (
            self.graphiql
            and scope["method"] == "GET"
            and b"query=" not in scope.get("query_string", b"")
            and "text/html" in headers.get("accept", "")
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        if _is_multipart(headers) and not any(headers.get(name, "").strip() for name in PREFLIGHT_HEADERS):
            refusal = InvalidInput(
                "A multipart request must send the header GraphQL-Require-Preflight.", field="headers"
            )
            await self._refuse(refusal, scope, receive, send, headers)
            return
        if not self._is_ide_page(scope, headers):
            state = scope.setdefault("state", {})
            try:
                principal = await self._authenticate(headers)
                requested = self._requested_institution(headers)
            except DomainError as refusal:
                await self._refuse(refusal, scope, receive, send, headers)
                return
            state["principal"] = principal
            try:
                state["principal"], state["tenant"] = await act_in(principal, requested, self.view.tenants)
            except (Forbidden, NotFound) as refusal:
                if requested is not None:  # the caller named it: say so before running anything
                    await self._refuse(refusal, scope, receive, send, headers)
                    return
                state["tenant_problem"] = refusal  # e.g. the home institution is suspended
        await self.view(scope, receive, send)

    @staticmethod
    async def _refuse(
        refusal: DomainError, scope: Scope, receive: Receive, send: Send, headers: Headers
    ) -> None:
        status = next((code for kind, code in _STATUS_OF.items() if isinstance(refusal, kind)), 400)
        extra = {"WWW-Authenticate": 'Bearer realm="yiyang"'} if status == 401 else {}
        response = graphql_error_response(
            refusal.message,
            refusal.code,
            status,
            request_id_of(scope),
            headers.get("accept-language"),
            **extra,
        )
        await response(scope, receive, send)

    @staticmethod
    def _requested_institution(headers: Headers) -> int | None:
        named = headers.get(INSTITUTION_HEADER)
        if named is None or not named.strip():
            return None
        (institution_id,) = decode_id("Institution", named.strip(), 1, field=INSTITUTION_HEADER)
        return institution_id

    async def acting(self, headers: Headers) -> tuple[Principal, TenantRef | None]:
        """The bearer token's principal, narrowed to the institution it acts in, and that institution's
        tenant, as for a GraphQL request: for the other edges that take the same token (api/files.py).
        Unauthenticated, Forbidden or NotFound (a DomainError) when refused."""
        principal = await self._authenticate(headers)
        return await act_in(principal, self._requested_institution(headers), self.view.tenants)

    async def _authenticate(self, headers: Headers) -> Principal:
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("Authentication required.")
        token = token.strip()
        principal = self.verified.get(token)
        if principal is None:
            claims = await verify_access_token(token, issuer=self.issuer)
            principal = claims.principal()
            self.verified.put(token, principal, claims.expires_at)
        return principal


def _is_multipart(headers: Headers) -> bool:
    return headers.get("content-type", "").lower().startswith("multipart/")


class VerifiedTokenCache:
    """Tokens already verified, kept until their `exp` (at most the 10 minutes a token may live): a
    client sends the same token with every request, and an ES256 verification costs about 0.11 ms of CPU
    (measured on the benchmark machine), a good part of a small query. Keeping them only a minute made
    the 1,500-institution benchmark, whose clients each reuse one token, verify on most requests. Access
    tokens cannot be revoked anyway (docs/security.md); what must take effect at once (family links,
    consent) is read per request, not from the token."""

    def __init__(
        self, capacity: int = 10_000, max_age_seconds: float = MAX_ACCESS_TOKEN_LIFETIME_SECONDS
    ) -> None:
        self.capacity = capacity
        self.max_age = max_age_seconds
        self._entries: OrderedDict[str, tuple[float, Principal]] = OrderedDict()

    def get(self, token: str) -> Principal | None:
        entry = self._entries.get(token)
        if entry is None:
            return None
        if entry[0] <= time.time():
            del self._entries[token]
            return None
        return entry[1]

    def put(self, token: str, principal: Principal, expires_at: float) -> None:
        self._entries[token] = (min(time.time() + self.max_age, expires_at), principal)
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)

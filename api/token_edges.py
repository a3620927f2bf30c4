"""What the REST edges that take the GraphQL bearer token share (file downloads: api/files.py; the access
report's CSV: api/exports.py): one ASGI endpoint shape, and refusals as JSON with the HTTP status of the
error, in the caller's language, never cached."""

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from api.graphql import GraphQLEndpoint
from schema.i18n import negotiate_locale, translate
from tenants.errors import DomainError, Erased, Forbidden, InvalidInput, NotFound, Unauthenticated

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_STATUS_OF: tuple[tuple[type[DomainError], int], ...] = (
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Erased, 410),
    (InvalidInput, 400),
)


class TokenEdge:
    """An ASGI endpoint that authenticates like /graphql (`self.graphql.acting(headers)`) and answers
    `respond`; a DomainError it raises becomes a JSON refusal."""

    def __init__(self, graphql: GraphQLEndpoint) -> None:
        self.graphql = graphql

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        try:
            response = await self.respond(scope, headers)
        except DomainError as refusal:
            response = refusal_response(refusal, headers)
        await response(scope, receive, send)

    async def respond(self, scope: Scope, headers: Headers) -> Response:
        raise NotImplementedError


def refusal_response(refusal: DomainError, headers: Headers) -> JSONResponse:
    status = next((code for kind, code in _STATUS_OF if isinstance(refusal, kind)), 400)
    extra = {"WWW-Authenticate": 'Bearer realm="yiyang"'} if status == 401 else {}
    message = translate(refusal.message, negotiate_locale(headers.get("accept-language")), refusal.params)
    return JSONResponse(
        {"error": refusal.code.lower(), "error_description": message},
        status_code=status,
        headers={**NO_STORE, **extra},
    )

"""The OAuth2 token endpoint, `POST /oauth/token`, on authlib's AuthorizationServer: for now the
client-credentials grant for integrator clients (compliance/identity/clients.py).

authlib ships no Starlette server, so this module adapts `authlib.oauth2.rfc6749.AuthorizationServer`
itself (`create_oauth2_request`, `handle_response`, `query_client`, `save_token`, `send_signal`, a token
generator, a client model).

The sync/async bridge: authlib's server is synchronous, our database and key cache are async. We do not
run authlib in a thread; we **load first, then decide**. Before calling authlib the endpoint awaits
everything the grant can need: the client rows named by the request (the Basic-auth user and the form's
`client_id`, at most two, in one query, revoked clients left out) and the active signing key. It then
builds a `_TokenServer` for this one request whose `query_client` only reads those rows and whose token
generator signs with that key (`encode_access_token`, no I/O). The authlib call is thus pure computation
(a SHA-256, a constant-time comparison, one ECDSA signature: about 60 µs for hash, comparison and
signing together, measured on the development machine) and runs on the event loop without blocking
it. If authlib ever asks for a client id we did not load, `query_client` answers None and the request
fails closed with `invalid_client`.

Later grants that must write (authorization codes consumed, refresh tokens rotated) follow the same
rule: read what the form names beforehand, let the sync hooks record what is to be written
(`save_token` collects on the per-request server), and await the writes after authlib returns, before the
response is sent. A worker thread calling back into the loop (`asyncio.run_coroutine_threadsafe`)
would also work, but costs a thread per request and hides I/O inside hooks that look synchronous.

authlib sees the request at the issuer's token URL (`<YIYANG_ISSUER>/oauth/token`), not at the URL
the request arrived on (TLS ends at the proxy). authlib refuses plain http unless the host is a loopback
address, so a development issuer must be https or loopback http (production requires https anyway);
any other gets `server_error` here.

Every response is RFC 6749 JSON with `Cache-Control: no-store`; anything unexpected is logged and
answered `server_error` without detail.
"""

import base64
import binascii
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote

from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientMixin,
    OAuth2Payload,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
)
from authlib.oauth2.rfc6749.grants import ClientCredentialsGrant
from authlib.oauth2.rfc6749.util import scope_to_list
from starlette.requests import Request
from starlette.responses import JSONResponse
from tortoise.expressions import Q

from api.settings import Settings
from compliance.identity.access_tokens import AccessTokenClaims, encode_access_token
from compliance.identity.client_models import ClientKind, OAuthClient
from compliance.identity.clients import client_secret_matches
from compliance.identity.keys import ActiveKey, process_signing_keys
from compliance.principals import Principal, PrincipalKind
from tenants.models import InstitutionStatus

log = logging.getLogger(__name__)

TOKEN_PATH = "/oauth/token"
CLIENT_CREDENTIALS_LIFETIME_SECONDS = 300
_FORM_TYPE = "application/x-www-form-urlencoded"
_CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
_CLIENT_ID_MAX = 64  # the column's width: a longer id names no client
# One description for every failed client authentication: unknown, revoked and wrong secret look alike.
_CLIENT_REFUSED = "Client authentication failed."
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


class _Client(ClientMixin):
    """authlib's view of one `oauth_client` row, loaded before authlib runs."""

    def __init__(self, row: OAuthClient) -> None:
        self.row = row

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> None:
        return None

    def get_allowed_scope(self, scope: str | None) -> str:
        allowed = set(self.row.allowed_scopes)
        return " ".join(sorted(s for s in scope_to_list(scope) or [] if s in allowed))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return False

    def check_client_secret(self, client_secret: str) -> bool:
        return client_secret_matches(self.row, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return (
            self.row.kind is ClientKind.INTEGRATOR and endpoint == "token" and method in _CLIENT_AUTH_METHODS
        )

    def check_response_type(self, response_type: str) -> bool:
        return False

    def check_grant_type(self, grant_type: str) -> bool:
        return self.row.kind is ClientKind.INTEGRATOR and grant_type == ClientCredentialsGrant.GRANT_TYPE


class _Payload(OAuth2Payload):
    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._datalist: defaultdict[str, list[str]] = defaultdict(list)
        for name, value in pairs:
            self._datalist[name].append(value)
        self._data = {name: values[0] for name, values in self._datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list[str]]:
        return self._datalist


class _Request(OAuth2Request):
    def __init__(self, uri: str, headers: Mapping[str, str], payload: _Payload) -> None:
        super().__init__("POST", uri, headers=headers)
        self.payload = payload

    @property
    def args(self) -> dict[str, str]:
        return {}

    @property
    def form(self) -> dict[str, str]:
        return self.payload.data


class _ClientCredentialsGrant(ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = _CLIENT_AUTH_METHODS

    def validate_requested_scope(self) -> None:
        """Refuse any scope beyond the client's grant (authlib's default only checks a global list)."""
        requested = scope_to_list(self.request.payload.scope) or []
        if set(requested) - set(self.client.row.allowed_scopes):
            raise InvalidScopeError()


class _TokenServer(AuthorizationServer):
    """authlib's server for one request: everything it reads was loaded before it runs."""

    def __init__(self, issuer: str, clients: Mapping[str, OAuthClient], key: ActiveKey | None) -> None:
        super().__init__()
        self._issuer = issuer
        self._clients = clients
        self._key = key
        self.issued: list[dict[str, Any]] = []
        self.register_grant(_ClientCredentialsGrant)
        self.register_token_generator(ClientCredentialsGrant.GRANT_TYPE, self._client_credentials_token)

    def query_client(self, client_id: str) -> _Client | None:
        row = self._clients.get(client_id)
        return _Client(row) if row is not None else None

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        # A JWT access token is self-contained: nothing to store. Later grants collect writes here and
        # the endpoint awaits them after authlib returns.
        self.issued.append(token)

    def send_signal(self, name: str, *args: object, **kwargs: object) -> None:
        pass

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request

    def handle_response(
        self, status: int, body: Mapping[str, Any], headers: Iterable[tuple[str, str]]
    ) -> JSONResponse:
        kept = {name: value for name, value in headers if name.lower() != "content-type"}
        return JSONResponse(dict(body), status_code=status, headers={**kept, **_NO_STORE})

    def handle_error_response(self, request: OAuth2Request, error: OAuth2Error) -> JSONResponse:
        if isinstance(error, InvalidClientError):
            error.description = _CLIENT_REFUSED
        log.info("token request refused: %s", error.error)
        return super().handle_error_response(request, error)

    def _client_credentials_token(
        self,
        grant_type: str,
        client: _Client,
        user: object = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = False,
    ) -> dict[str, Any]:
        if self._key is None:  # loaded whenever a client was: cannot happen
            raise RuntimeError("no signing key loaded")
        row = client.row
        requested = scope_to_list(scope)
        allowed = frozenset(row.allowed_scopes)
        # Requested ∩ allowed (the grant already refused anything beyond); nothing requested: all allowed.
        granted = allowed & frozenset(requested) if requested else allowed
        principal = Principal(
            subject=f"client:{row.client_id}",
            kind=PrincipalKind.INTEGRATOR,
            institution_id=row.institution_id,
            chain_id=row.chain_id,
        )
        claims = AccessTokenClaims.for_principal(
            principal,
            issuer=self._issuer,
            client_id=row.client_id,
            scope=granted,
            lifetime_seconds=CLIENT_CREDENTIALS_LIFETIME_SECONDS,
            now=time.time(),
        )
        log.info("access token issued: client %s, jti %s", row.client_id, claims.token_id)
        return {
            "access_token": encode_access_token(claims, self._key),
            "token_type": "Bearer",
            "expires_in": CLIENT_CREDENTIALS_LIFETIME_SECONDS,
            "scope": " ".join(sorted(granted)),
        }


def _error(status: int, error: str, description: str, **headers: str) -> JSONResponse:
    return JSONResponse(
        {"error": error, "error_description": description},
        status_code=status,
        headers={**_NO_STORE, **headers},
    )


def _basic_client_id(authorization: str | None) -> tuple[bool, str | None]:
    """(well-formed, client id) of a Basic Authorization header; (True, None) when there is none."""
    if not authorization:
        return True, None
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "basic":
        return True, None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return False, None
    client_id, colon, secret = decoded.partition(":")
    if not colon or not client_id or not secret:
        return False, None
    return True, unquote(client_id)


async def _load_clients(client_ids: set[str]) -> dict[str, OAuthClient]:
    wanted = [cid for cid in client_ids if 0 < len(cid) <= _CLIENT_ID_MAX]
    if not wanted:
        return {}
    # A client of a suspended institution is refused like a revoked one: it must not act there.
    rows = await OAuthClient.filter(
        Q(institution_id__isnull=True) | Q(institution__status=InstitutionStatus.ACTIVE),
        client_id__in=wanted,
        revoked_at__isnull=True,
    )
    return {row.client_id: row for row in rows}


async def token_endpoint(request: Request) -> JSONResponse:
    try:
        return await _token(request)
    except Exception:
        log.exception("token endpoint failed")
        return _error(500, "server_error", "The server could not answer this request.")


async def _token(request: Request) -> JSONResponse:
    if request.method != "POST":
        return _error(405, "invalid_request", "Use POST.", Allow="POST")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != _FORM_TYPE:
        return _error(400, "invalid_request", f"The body must be {_FORM_TYPE}.")
    try:
        pairs = parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        return _error(400, "invalid_request", "The body is not a valid form.")
    payload = _Payload(pairs)
    if any(len(values) > 1 for values in payload.datalist.values()):  # RFC 6749 §3.2
        return _error(400, "invalid_request", "A parameter is repeated.")
    if not payload.grant_type:
        return _error(400, "invalid_request", "Missing grant_type.")

    well_formed, basic_id = _basic_client_id(request.headers.get("authorization"))
    if not well_formed:
        return _error(401, "invalid_client", _CLIENT_REFUSED, **{"WWW-Authenticate": "Basic"})
    if basic_id is not None and "client_secret" in payload.data:  # RFC 6749 §2.3: one method only
        return _error(400, "invalid_request", "Use one client authentication method.")

    # Load first, then decide: everything authlib's synchronous hooks will read (module docstring).
    clients = await _load_clients({cid for cid in (basic_id, payload.client_id) if cid})
    key = await process_signing_keys().signing_key() if clients else None

    settings: Settings = request.app.state.settings
    server = _TokenServer(settings.issuer, clients, key)
    oauth_request = _Request(f"{settings.issuer}{TOKEN_PATH}", request.headers, payload)
    try:
        response: JSONResponse = server.create_token_response(oauth_request)
    except InvalidRequestError as error:  # raised outside authlib's own handling
        return server.handle_error_response(oauth_request, error)
    return response

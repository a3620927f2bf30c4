"""The OAuth2 endpoints on authlib's AuthorizationServer: `POST /oauth/token` (client credentials for
integrator clients; authorization code with PKCE and refresh tokens for public first-party clients),
`POST /oauth/revoke` (RFC 7009), and the authorization decisions of the sign-in page (api/authorize.py).

authlib ships no Starlette server, so this module adapts `authlib.oauth2.rfc6749.AuthorizationServer`
itself (`create_oauth2_request`, `handle_response`, `query_client`, `save_token`, `send_signal`, token
generators, a client model).

The sync/async bridge: authlib's server is synchronous, our database and key cache are async. We do not
run authlib in a thread; we **load first, then decide**. Before calling authlib the endpoint awaits
everything the grant can need: the client rows named by the request (the Basic-auth user and the form's
`client_id`, at most two, in one query, revoked clients left out), the active signing key, and for the
code and refresh grants the code or refresh-token row the form names together with the principal its
account acts as now (`principal_for`, so a disabled account or a removed membership gets no token). It
then builds a `_TokenServer` for this one request whose hooks only read those rows and whose token
generator signs with that key (`encode_access_token`, no I/O). The authlib call is thus pure computation
(a SHA-256, a constant-time comparison, one ECDSA signature: about 60 µs for hash, comparison and
signing together, measured on the development machine) and runs on the event loop without blocking
it. If authlib ever asks for a client id we did not load, `query_client` answers None and the request
fails closed with `invalid_client`.

Writes follow the same rule: the sync hooks only record what is to be written (`save_token` and
`save_authorization_code` collect on the per-request server), and the endpoint awaits the writes after
authlib returns, before the response is sent. The writes that decide a race (a code claimed, a refresh
token spent) are conditional UPDATEs (compliance/identity/authorization.py): when one finds the row
already used, the answer authlib prepared is replaced by `invalid_grant` and the family is revoked. A
worker thread calling back into the loop (`asyncio.run_coroutine_threadsafe`) would also work, but
costs a thread per request and hides I/O inside hooks that look synchronous.

authlib sees the request at the issuer's URLs (`<YIYANG_ISSUER>/oauth/token`), not at the URL the
request arrived on (TLS ends at the proxy). authlib refuses plain http unless the host is a loopback
address, so a development issuer must be https or loopback http (production requires https anyway);
any other gets `server_error` here.

Every response is RFC 6749 JSON with `Cache-Control: no-store`; anything unexpected is logged and
answered `server_error` without detail. Sign-ins and token issuance leave rows in the audit
(compliance/identity/auth_events.py).
"""

import base64
import binascii
import json
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import parse_qsl, unquote

from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    ClientMixin,
    OAuth2Payload,
    OAuth2Request,
)
from authlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    OAuth2Error,
)
from authlib.oauth2.rfc6749.grants import (
    AuthorizationCodeGrant,
    ClientCredentialsGrant,
    RefreshTokenGrant,
)
from authlib.oauth2.rfc6749.util import scope_to_list
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from tortoise.expressions import Q

from api.settings import Settings
from compliance.identity import auth_events
from compliance.identity.access_tokens import AccessTokenClaims, encode_access_token
from compliance.identity.account_models import UserAccount
from compliance.identity.accounts import principal_for
from compliance.identity.authorization import (
    ACCESS_TOKEN_LIFETIME_SECONDS,
    CodeRequest,
    Outcome,
    PresentedRefreshToken,
    find_code,
    find_refresh_token,
    new_secret,
    redeem_code,
    revoke_families_of_code,
    revoke_family,
    rotate_refresh_token,
    secret_hash,
)
from compliance.identity.authorization_models import (
    AuthEventKind,
    AuthorizationCode,
    FamilyRevocation,
    TokenFamily,
)
from compliance.identity.client_models import ClientKind, OAuthClient
from compliance.identity.clients import client_secret_matches
from compliance.identity.keys import ActiveKey, process_signing_keys
from compliance.principals import Principal, PrincipalKind
from tenants.errors import DomainError
from tenants.models import InstitutionStatus

log = logging.getLogger(__name__)

TOKEN_PATH = "/oauth/token"
REVOKE_PATH = "/oauth/revoke"
AUTHORIZE_PATH = "/oauth/authorize"
CLIENT_CREDENTIALS_LIFETIME_SECONDS = 300
_FORM_TYPE = "application/x-www-form-urlencoded"
_CLIENT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
# Public clients authenticate with their client_id alone ("none"); confidential ones as above. The code
# and refresh grants accept all three so that an integrator trying them is told `unauthorized_client`.
_ALL_AUTH_METHODS = ["none", *_CLIENT_AUTH_METHODS]
_CLIENT_ID_MAX = 64  # the column's width: a longer id names no client
# One description for every failed client authentication: unknown, revoked and wrong secret look alike.
_CLIENT_REFUSED = "Client authentication failed."
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}

# The time source of the code and refresh grants; tests replace it to move time without waiting.
clock: Callable[[], float] = time.time


class _Client(ClientMixin):
    """authlib's view of one `oauth_client` row, loaded before authlib runs."""

    def __init__(self, row: OAuthClient) -> None:
        self.row = row

    @property
    def public(self) -> bool:
        return self.row.kind is ClientKind.PUBLIC

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> None:
        return None  # the redirect URI is always named in the request and compared exactly

    def get_allowed_scope(self, scope: str | None) -> str:
        allowed = set(self.row.allowed_scopes)
        return " ".join(sorted(s for s in scope_to_list(scope) or [] if s in allowed))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return self.public and redirect_uri in self.row.redirect_uris  # exact string comparison

    def check_client_secret(self, client_secret: str) -> bool:
        return client_secret_matches(self.row, client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if endpoint not in ("token", "revocation"):
            return False
        if self.public:
            return method == "none"
        return method in _CLIENT_AUTH_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return self.public and response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        if self.public:
            return grant_type in (AuthorizationCodeGrant.GRANT_TYPE, RefreshTokenGrant.GRANT_TYPE)
        return grant_type == ClientCredentialsGrant.GRANT_TYPE


class _Payload(OAuth2Payload):
    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
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
    def __init__(self, uri: str, headers: Mapping[str, str], payload: _Payload, method: str = "POST") -> None:
        super().__init__(method, uri, headers=headers)
        self.payload = payload

    @property
    def args(self) -> dict[str, str]:
        return self.payload.data if self.method == "GET" else {}

    @property
    def form(self) -> dict[str, str]:
        return self.payload.data if self.method == "POST" else {}


@dataclass(frozen=True, slots=True)
class SignedIn:
    """The resource owner of an authorization request: who signed in and where they act."""

    account_id: int
    institution_id: int | None


class _Code:
    """authlib's view of an authorization code row."""

    def __init__(self, row: AuthorizationCode) -> None:
        self.row = row
        self.code_challenge = row.code_challenge
        self.code_challenge_method = row.code_challenge_method

    def get_redirect_uri(self) -> str:
        return self.row.redirect_uri

    def get_scope(self) -> str:
        return self.row.scope


class _RefreshToken:
    """authlib's view of a refresh token row and its family."""

    def __init__(self, presented: PresentedRefreshToken) -> None:
        self.presented = presented

    def check_client(self, client: _Client) -> bool:
        return self.presented.family.client_id == client.get_client_id()

    def get_scope(self) -> str:
        return self.presented.family.scope


@dataclass
class _Loaded:
    """What the code, refresh and revocation requests need, awaited before authlib runs."""

    code: AuthorizationCode | None = None
    refresh: PresentedRefreshToken | None = None
    principal: Principal | None = None
    now: float = 0.0
    pending_codes: list[tuple[str, CodeRequest]] = field(default_factory=list)


class _S256Challenge(CodeChallenge):
    """PKCE as RFC 7636 with two restrictions (OAuth 2.1, RFC 9700 §2.1.1): a challenge is required in
    every authorization request, and its method must be named and be S256 (`plain` would give nothing
    against a stolen code, since the challenge travels through the browser)."""

    SUPPORTED_CODE_CHALLENGE_METHOD: ClassVar[list[str]] = ["S256"]
    CODE_CHALLENGE_METHODS: ClassVar[dict[str, Any]] = {"S256": CodeChallenge.CODE_CHALLENGE_METHODS["S256"]}

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("Missing 'code_challenge': PKCE is required.")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("Unsupported 'code_challenge_method': use S256.")
        super().validate_code_challenge(grant, redirect_uri)


class _AuthorizationCodeGrant(AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = _ALL_AUTH_METHODS
    AUTHORIZATION_CODE_LENGTH = 43  # generate_token draws from 62 characters: 43 carry ≥ 256 bits

    def validate_requested_scope(self) -> None:
        requested = scope_to_list(self.request.payload.scope) or []
        if set(requested) - set(self.client.row.allowed_scopes):
            raise InvalidScopeError()

    def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
        user: SignedIn = request.user
        data = request.payload.data
        self.server.loaded.pending_codes.append(
            (
                code,
                CodeRequest(
                    client_id=request.client.get_client_id(),
                    account_id=user.account_id,
                    institution_id=user.institution_id,
                    redirect_uri=request.payload.redirect_uri,
                    scope=request.scope or "",
                    code_challenge=data["code_challenge"],
                    code_challenge_method=data["code_challenge_method"],
                ),
            )
        )

    def query_authorization_code(self, code: str, client: _Client) -> _Code | None:
        loaded: _Loaded = self.server.loaded
        row = loaded.code
        if (
            row is None
            or bytes(row.code_hash) != secret_hash(code)
            or row.client_id != client.get_client_id()
            or row.used_at is not None
            or row.expires_at.timestamp() <= loaded.now
        ):
            return None
        return _Code(row)

    def delete_authorization_code(self, authorization_code: _Code) -> None:
        pass  # the endpoint claims the code (marks it used) after authlib returns

    def authenticate_user(self, authorization_code: _Code) -> Principal | None:
        return self.server.loaded.principal


class _RefreshTokenGrant(RefreshTokenGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = _ALL_AUTH_METHODS
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> _RefreshToken | None:
        loaded: _Loaded = self.server.loaded
        presented = loaded.refresh
        if (
            presented is None
            or bytes(presented.token.token_hash) != secret_hash(refresh_token)
            or not presented.usable(loaded.now)
            or loaded.principal is None  # the account may no longer act as it did
        ):
            return None
        return _RefreshToken(presented)

    def authenticate_user(self, refresh_token: _RefreshToken) -> Principal | None:
        return self.server.loaded.principal

    def revoke_old_credential(self, refresh_token: _RefreshToken) -> None:
        pass  # the endpoint spends the token (a conditional UPDATE) after authlib returns


class _Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = _ALL_AUTH_METHODS

    def query_token(self, token_string: str, token_type_hint: str | None) -> _RefreshToken | None:
        presented = self.server.loaded.refresh
        if presented is None or bytes(presented.token.token_hash) != secret_hash(token_string):
            return None  # an access token (a JWT: nothing to revoke) or a token we never issued
        return _RefreshToken(presented)

    def revoke_token(self, token: _RefreshToken, request: OAuth2Request) -> None:
        self.server.revoked.append(token.presented)


class _ClientCredentialsGrant(ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = _CLIENT_AUTH_METHODS

    def validate_requested_scope(self) -> None:
        """Refuse any scope beyond the client's grant (authlib's default only checks a global list)."""
        requested = scope_to_list(self.request.payload.scope) or []
        if set(requested) - set(self.client.row.allowed_scopes):
            raise InvalidScopeError()


class _TokenServer(AuthorizationServer):
    """authlib's server for one request: everything it reads was loaded before it runs."""

    def __init__(
        self,
        issuer: str,
        clients: Mapping[str, OAuthClient],
        key: ActiveKey | None,
        loaded: _Loaded | None = None,
    ) -> None:
        super().__init__()
        self._issuer = issuer
        self._clients = clients
        self._key = key
        self.loaded = loaded or _Loaded(now=clock())
        self.issued: list[dict[str, Any]] = []
        self.issued_jti: list[str] = []
        self.revoked: list[PresentedRefreshToken] = []
        self.register_grant(_ClientCredentialsGrant)
        self.register_grant(_AuthorizationCodeGrant, [_S256Challenge(required=True)])
        self.register_grant(_RefreshTokenGrant)
        self.register_endpoint(_Revocation)
        self.register_token_generator(ClientCredentialsGrant.GRANT_TYPE, self._client_credentials_token)
        self.register_token_generator(AuthorizationCodeGrant.GRANT_TYPE, self._account_token)
        self.register_token_generator(RefreshTokenGrant.GRANT_TYPE, self._account_token)

    def query_client(self, client_id: str) -> _Client | None:
        row = self._clients.get(client_id)
        return _Client(row) if row is not None else None

    def save_token(self, token: dict[str, Any], request: OAuth2Request) -> None:
        # A JWT access token is self-contained; a refresh token is stored by the endpoint afterwards.
        self.issued.append(token)

    def send_signal(self, name: str, *args: object, **kwargs: object) -> None:
        pass

    def create_oauth2_request(self, request: OAuth2Request) -> OAuth2Request:
        return request

    def handle_response(self, status: int, body: Any, headers: Iterable[tuple[str, str]]) -> Response:
        kept = {name: value for name, value in headers if name.lower() != "content-type"}
        if status == 302:  # an authorization response (or error) sent back to the client's redirect URI
            return Response(status_code=302, headers={**kept, **_NO_STORE})
        return JSONResponse(dict(body), status_code=status, headers={**kept, **_NO_STORE})

    def handle_error_response(self, request: OAuth2Request, error: OAuth2Error) -> Response:
        if isinstance(error, InvalidClientError):
            error.description = _CLIENT_REFUSED
        log.info("oauth request refused: %s", error.error)
        return super().handle_error_response(request, error)

    def _sign(self, claims: AccessTokenClaims) -> str:
        if self._key is None:  # loaded whenever a client was: cannot happen
            raise RuntimeError("no signing key loaded")
        self.issued_jti.append(claims.token_id)
        return encode_access_token(claims, self._key)

    def _client_credentials_token(
        self,
        grant_type: str,
        client: _Client,
        user: object = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = False,
    ) -> dict[str, Any]:
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
            "access_token": self._sign(claims),
            "token_type": "Bearer",
            "expires_in": CLIENT_CREDENTIALS_LIFETIME_SECONDS,
            "scope": " ".join(sorted(granted)),
        }

    def _account_token(
        self,
        grant_type: str,
        client: _Client,
        user: Principal | None = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        if user is None:  # authlib refuses a grant without a user before asking for a token
            raise RuntimeError("no principal loaded")
        granted = frozenset(scope_to_list(scope) or [])
        claims = AccessTokenClaims.for_principal(
            user,
            issuer=self._issuer,
            client_id=client.get_client_id(),
            scope=granted,
            lifetime_seconds=ACCESS_TOKEN_LIFETIME_SECONDS,
            now=self.loaded.now,
        )
        token: dict[str, Any] = {
            "access_token": self._sign(claims),
            "token_type": "Bearer",
            "expires_in": ACCESS_TOKEN_LIFETIME_SECONDS,
            "scope": " ".join(sorted(granted)),
        }
        if include_refresh_token:
            token["refresh_token"] = new_secret()
        return token


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


async def load_clients(client_ids: set[str]) -> dict[str, OAuthClient]:
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


async def current_principal(account_id: int, institution_id: int | None) -> Principal | None:
    """What the account may act as now in `institution_id`, or None (disabled, membership gone)."""
    account = await UserAccount.get_or_none(id=account_id)
    if account is None:
        return None
    try:
        return await principal_for(account, institution_id)
    except DomainError:
        return None


def client_address(request: Request) -> str | None:
    return request.client.host if request.client else None


async def _read_form(request: Request) -> _Payload | JSONResponse:
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
    return payload


async def _authenticated_clients(
    request: Request, payload: _Payload
) -> dict[str, OAuthClient] | JSONResponse:
    well_formed, basic_id = _basic_client_id(request.headers.get("authorization"))
    if not well_formed:
        return _error(401, "invalid_client", _CLIENT_REFUSED, **{"WWW-Authenticate": "Basic"})
    if basic_id is not None and "client_secret" in payload.data:  # RFC 6749 §2.3: one method only
        return _error(400, "invalid_request", "Use one client authentication method.")
    return await load_clients({cid for cid in (basic_id, payload.client_id) if cid})


def _answering_server_error(
    name: str, handle: Callable[[Request], Awaitable[Response]]
) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint: anything unexpected is logged and answered `server_error` without detail."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handle(request)
        except Exception:
            log.exception("%s endpoint failed", name)
            return _error(500, "server_error", "The server could not answer this request.")

    return endpoint


async def _token(request: Request) -> Response:
    payload = await _read_form(request)
    if isinstance(payload, JSONResponse):
        return payload
    if not payload.grant_type:
        return _error(400, "invalid_request", "Missing grant_type.")
    clients = await _authenticated_clients(request, payload)
    if isinstance(clients, JSONResponse):
        return clients

    # Load first, then decide: everything authlib's synchronous hooks will read (module docstring).
    key = await process_signing_keys().signing_key() if clients else None
    loaded = _Loaded(now=clock())
    grant_type = payload.grant_type
    if grant_type == AuthorizationCodeGrant.GRANT_TYPE:
        loaded.code = await find_code(payload.data.get("code", ""))
        if loaded.code is not None and loaded.code.used_at is None:
            loaded.principal = await current_principal(loaded.code.account_id, loaded.code.institution_id)
    elif grant_type == RefreshTokenGrant.GRANT_TYPE:
        loaded.refresh = await find_refresh_token(payload.data.get("refresh_token", ""))
        if loaded.refresh is not None and loaded.refresh.usable(loaded.now):
            family = loaded.refresh.family
            loaded.principal = await current_principal(family.account_id, family.institution_id)

    settings: Settings = request.app.state.settings
    server = _TokenServer(settings.issuer, clients, key, loaded)
    oauth_request = _Request(f"{settings.issuer}{TOKEN_PATH}", request.headers, payload)
    try:
        response = server.create_token_response(oauth_request)
    except InvalidRequestError as error:  # raised outside authlib's own handling
        response = server.handle_error_response(oauth_request, error)
    # Then write what authlib decided, and audit it.
    ip = client_address(request)
    if response.status_code != 200:
        await _after_refusal(loaded, grant_type, payload, clients, response, ip)
        return response
    return await _after_issue(server, oauth_request, loaded, grant_type, response, ip)


async def _after_refusal(
    loaded: _Loaded,
    grant_type: str,
    payload: _Payload,
    clients: Mapping[str, OAuthClient],
    response: Response,
    ip: str | None,
) -> None:
    now = loaded.now
    code, refresh = loaded.code, loaded.refresh
    if code is not None and code.used_at is not None:
        # RFC 6749 §4.1.2: a code used twice is refused, and what its first use issued is revoked.
        for family_id in await revoke_families_of_code(code.id, now=now):
            await auth_events.record(
                AuthEventKind.FAMILY_REVOKED,
                account_id=code.account_id,
                client_id=code.client_id,
                institution_id=code.institution_id,
                family_id=family_id,
                ip=ip,
                reason=FamilyRevocation.CODE_REUSE.value,
            )
        await auth_events.record(
            AuthEventKind.CODE_REUSE_DETECTED,
            account_id=code.account_id,
            client_id=code.client_id,
            institution_id=code.institution_id,
            grant_type=grant_type,
            ip=ip,
        )
        return
    if refresh is not None and refresh.token.spent_at is not None:
        await _refresh_reused(refresh, ip, now)
        return
    if refresh is not None and refresh.usable(now) and loaded.principal is None:
        # The account may no longer act as it did (disabled, membership removed): end the family.
        await _revoke_family_audited(refresh.family, FamilyRevocation.ACCOUNT, ip, now)
    named = payload.client_id or next(iter(clients), None)
    if named in clients:  # refusals of unknown clients are not audited: anyone can make them
        error = _error_code(response)
        owner = code or (refresh.family if refresh is not None else None)
        await auth_events.record(
            AuthEventKind.TOKEN_REFUSED,
            account_id=owner.account_id if owner is not None else None,
            client_id=named,
            grant_type=grant_type[:32],
            ip=ip,
            reason=error,
        )


def _error_code(response: Response) -> str | None:
    try:
        return str(json.loads(bytes(response.body))["error"])[:64]
    except (ValueError, KeyError, TypeError):
        return None


async def _refresh_reused(refresh: PresentedRefreshToken, ip: str | None, now: float) -> None:
    family = refresh.family
    await auth_events.record(
        AuthEventKind.REFRESH_REUSE_DETECTED,
        account_id=family.account_id,
        client_id=family.client_id,
        institution_id=family.institution_id,
        family_id=family.id,
        grant_type=RefreshTokenGrant.GRANT_TYPE,
        ip=ip,
    )
    await _revoke_family_audited(family, FamilyRevocation.REUSE, ip, now)


async def _revoke_family_audited(
    family: TokenFamily, reason: FamilyRevocation, ip: str | None, now: float
) -> None:
    if await revoke_family(family.id, reason, now=now):
        await auth_events.record(
            AuthEventKind.FAMILY_REVOKED,
            account_id=family.account_id,
            client_id=family.client_id,
            institution_id=family.institution_id,
            family_id=family.id,
            ip=ip,
            reason=reason.value,
        )


async def _after_issue(
    server: _TokenServer,
    oauth_request: _Request,
    loaded: _Loaded,
    grant_type: str,
    response: Response,
    ip: str | None,
) -> Response:
    token = server.issued[0]
    client_id = oauth_request.client.get_client_id()
    jti = server.issued_jti[0] if server.issued_jti else None
    principal = loaded.principal
    family_id: int | None = None
    if grant_type == AuthorizationCodeGrant.GRANT_TYPE and loaded.code is not None:
        outcome = await redeem_code(loaded.code, token.get("refresh_token"), now=loaded.now)
        if outcome.outcome is not Outcome.ISSUED:  # a concurrent use claimed the code first
            if outcome.outcome is Outcome.REUSED:
                await auth_events.record(
                    AuthEventKind.CODE_REUSE_DETECTED,
                    account_id=loaded.code.account_id,
                    client_id=client_id,
                    family_id=outcome.family_id,
                    grant_type=grant_type,
                    ip=ip,
                )
            return server.handle_error_response(
                oauth_request, InvalidGrantError("Invalid 'code' in request.")
            )
        family_id = outcome.family_id
    elif grant_type == RefreshTokenGrant.GRANT_TYPE and loaded.refresh is not None:
        outcome = await rotate_refresh_token(loaded.refresh, token["refresh_token"], now=loaded.now)
        if outcome.outcome is not Outcome.ISSUED:
            if outcome.outcome is Outcome.REUSED:  # a concurrent use spent it first
                await _refresh_reused(loaded.refresh, ip, loaded.now)
            return server.handle_error_response(oauth_request, InvalidGrantError())
        family_id = outcome.family_id
    await auth_events.record(
        AuthEventKind.TOKEN_ISSUED,
        account_id=principal.account_id if principal is not None else None,
        client_id=client_id,
        institution_id=(
            principal.institution_id if principal is not None else oauth_request.client.row.institution_id
        ),
        family_id=family_id,
        grant_type=grant_type,
        ip=ip,
        jti=jti,
    )
    return response


async def store_pending_codes(server: _TokenServer) -> None:
    """Write the codes authlib issued during an authorization response (before it is sent)."""
    from compliance.identity.authorization import store_code

    for code, code_request in server.loaded.pending_codes:
        await store_code(code, code_request, now=server.loaded.now)


def authorization_server(issuer: str, clients: Mapping[str, OAuthClient]) -> _TokenServer:
    """A server for one authorization request of the sign-in page (api/authorize.py)."""
    return _TokenServer(issuer, clients, None, _Loaded(now=clock()))


def authorization_request(
    issuer: str, headers: Mapping[str, str], params: Iterable[tuple[str, str]]
) -> _Request:
    return _Request(f"{issuer}{AUTHORIZE_PATH}", headers, _Payload(params), method="GET")


async def _revoke(request: Request) -> Response:
    payload = await _read_form(request)
    if isinstance(payload, JSONResponse):
        return payload
    clients = await _authenticated_clients(request, payload)
    if isinstance(clients, JSONResponse):
        return clients
    loaded = _Loaded(now=clock(), refresh=await find_refresh_token(payload.data.get("token", "")))
    settings: Settings = request.app.state.settings
    server = _TokenServer(settings.issuer, clients, None, loaded)
    oauth_request = _Request(f"{settings.issuer}{REVOKE_PATH}", request.headers, payload)
    response = server.create_endpoint_response(_Revocation.ENDPOINT_NAME, oauth_request)
    ip = client_address(request)
    for presented in server.revoked:
        family = presented.family
        await auth_events.record(
            AuthEventKind.TOKEN_REVOKED,
            account_id=family.account_id,
            client_id=family.client_id,
            institution_id=family.institution_id,
            family_id=family.id,
            ip=ip,
        )
        if await revoke_family(family.id, FamilyRevocation.REVOCATION, now=loaded.now):
            await auth_events.record(
                AuthEventKind.FAMILY_REVOKED,
                account_id=family.account_id,
                client_id=family.client_id,
                institution_id=family.institution_id,
                family_id=family.id,
                ip=ip,
                reason=FamilyRevocation.REVOCATION.value,
            )
    return response


token_endpoint = _answering_server_error("token", _token)
revocation_endpoint = _answering_server_error("revocation", _revoke)

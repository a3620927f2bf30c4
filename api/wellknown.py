"""The OAuth2 documents clients read before anything else: the JWKS and the discovery metadata."""

from starlette.requests import Request
from starlette.responses import JSONResponse

from api.settings import Settings
from compliance.identity.keys import JWKS_MAX_AGE_SECONDS, process_signing_keys

# Metadata changes only with a release: an hour's caching spares clients a request per start.
_DISCOVERY_MAX_AGE_SECONDS = 3600


async def jwks(request: Request) -> JSONResponse:
    """The keys that verify our access tokens: the active one, retiring ones, and one announced ahead.

    A new key is published PUBLISH_AHEAD_SECONDS (> this max-age) before it signs, so a client honouring
    the max-age has it before it meets a token signed with it.
    """
    keys = await process_signing_keys().published_keys()
    return JSONResponse({"keys": keys}, headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE_SECONDS}"})


def discovery_document(issuer: str) -> dict[str, object]:
    """RFC 8414 authorization-server metadata naming only what exists (no ID tokens, so no OpenID
    fields): the authorization endpoint (code with PKCE S256, for public clients), the token endpoint
    (client credentials for integrators, authorization code and refresh token for public clients) and
    revocation (RFC 7009)."""
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "authorization_endpoint": f"{issuer}/oauth/authorize",
        "token_endpoint": f"{issuer}/oauth/token",
        "revocation_endpoint": f"{issuer}/oauth/revoke",
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "code_challenge_methods_supported": ["S256"],
        # Confidential clients (integrators) authenticate with HTTP Basic, or with the form fields;
        # public clients (first-party apps) name their client_id only ("none") and prove PKCE instead.
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "ui_locales_supported": ["zh-CN", "en"],
    }


async def openid_configuration(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    return JSONResponse(
        discovery_document(settings.issuer),
        headers={"Cache-Control": f"public, max-age={_DISCOVERY_MAX_AGE_SECONDS}"},
    )

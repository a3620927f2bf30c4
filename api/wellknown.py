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
    """RFC 8414 authorization-server metadata naming only what exists: the authorization endpoint, the
    code and refresh grants and revocation join it when they are built (no ID tokens, so no OpenID
    fields). `response_types_supported` is required by RFC 8414; empty until there is an authorization
    endpoint."""
    return {
        "issuer": issuer,
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "token_endpoint": f"{issuer}/oauth/token",
        "grant_types_supported": ["client_credentials"],
        "response_types_supported": [],
        # Confidential clients (integrators) authenticate with HTTP Basic, or with the form fields.
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    }


async def openid_configuration(request: Request) -> JSONResponse:
    settings: Settings = request.app.state.settings
    return JSONResponse(
        discovery_document(settings.issuer),
        headers={"Cache-Control": f"public, max-age={_DISCOVERY_MAX_AGE_SECONDS}"},
    )

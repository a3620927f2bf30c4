"""GraphQL-shaped error bodies for refusals that happen before GraphQL runs (auth, body size)."""

from starlette.responses import JSONResponse

from schema.i18n import negotiate_locale, translate


def graphql_error_response(
    message: str, code: str, status: int, request_id: str, accept_language: str | None, **headers: str
) -> JSONResponse:
    body = {
        "errors": [
            {
                "message": translate(message, negotiate_locale(accept_language)),
                "extensions": {"code": code, "requestId": request_id},
            }
        ]
    }
    return JSONResponse(body, status_code=status, headers=headers, media_type="application/json")

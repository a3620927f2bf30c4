"""Signed development tokens (HS256 JWT) carrying the principal and its institution.

A stand-in until the OAuth2 authorization server of the identity issue: the API already refuses every
request without a valid one.
"""

import time

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import OctKey

from compliance.principals import Principal, PrincipalKind, StaffRole
from tenants.errors import Unauthenticated

ISSUER = "yiyang-dev"
AUDIENCE = "yiyang-api"
ALGORITHMS = ["HS256"]


def issue_dev_token(
    secret: str, principal: Principal, *, ttl_seconds: int = 3600, now: float | None = None
) -> str:
    issued = int(now if now is not None else time.time())
    claims: dict[str, object] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": principal.subject,
        "kind": principal.kind.value,
        "roles": sorted(role.value for role in principal.roles),
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_seconds,
    }
    if principal.institution_id is not None:
        claims["inst"] = principal.institution_id
    return jwt.encode(
        {"alg": "HS256", "typ": "JWT"}, claims, OctKey.import_key(secret), algorithms=ALGORITHMS
    )


_CLAIMS = jwt.JWTClaimsRegistry(
    leeway=30,
    iss={"essential": True, "value": ISSUER},
    aud={"essential": True, "value": AUDIENCE},
    sub={"essential": True},
    exp={"essential": True},
)


def verify_dev_token(secret: str, token: str) -> Principal:
    return verify_dev_token_expiry(secret, token)[0]


def verify_dev_token_expiry(secret: str, token: str) -> tuple[Principal, int]:
    """The token's principal and its `exp` (seconds since the epoch), or Unauthenticated."""
    invalid = Unauthenticated("The access token is invalid or has expired.")
    try:
        decoded = jwt.decode(token, OctKey.import_key(secret), algorithms=ALGORITHMS)
        _CLAIMS.validate(decoded.claims)
        claims = decoded.claims
        kind = PrincipalKind(claims["kind"])
        institution = claims.get("inst")
        if institution is not None and (not isinstance(institution, int) or isinstance(institution, bool)):
            raise ValueError("inst")
        if kind is PrincipalKind.STAFF and institution is None:
            raise ValueError("staff without institution")
        principal = Principal(
            subject=str(claims["sub"]),
            kind=kind,
            institution_id=institution,
            roles=frozenset(StaffRole(role) for role in claims.get("roles", [])),
        )
        return principal, int(claims["exp"])
    except (JoseError, ValueError, KeyError, TypeError):
        raise invalid from None

"""JWT access tokens (RFC 9068): issued for a principal, signed ES256 with the active key, verified.

Verification trusts nothing the token says about how to check it: the algorithm must be exactly ES256
(no `none`, no HMAC keyed with a public key), the key is looked up by `kid` among our published keys
only (never from `jwk`/`jku` headers), and the type must be `at+jwt`, so an ID token or any other JWT
signed by the same key is not an access token. Each refusal has its own reason for logs and tests; the
client sees one error, Unauthenticated, whatever the reason.
"""

import base64
import binascii
import json
import logging
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from joserfc import jwt
from joserfc.errors import BadSignatureError, JoseError

from compliance.identity.keys import (
    ALGORITHM,
    CLOCK_SKEW_SECONDS,
    MAX_ACCESS_TOKEN_LIFETIME_SECONDS,
    ActiveKey,
    SigningKeys,
    process_signing_keys,
)
from compliance.principals import ChainRole, Principal, PrincipalKind, StaffRole
from tenants.errors import Unauthenticated

log = logging.getLogger(__name__)

TOKEN_TYPE = "at+jwt"
# RFC 9068 §4: "at+jwt", or the full media type; media types compare case-insensitively.
_ACCEPTED_TYPES = frozenset({"at+jwt", "application/at+jwt"})
DEFAULT_LIFETIME_SECONDS = 300
_REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "jti", "client_id", "kind")
REFUSED_MESSAGE = "The access token is invalid or has expired."


def api_audience(issuer: str) -> str:
    """The resource the access tokens are for: the GraphQL API of this issuer."""
    return f"{issuer}/graphql"


class RefusalReason(StrEnum):
    MALFORMED = "malformed"
    WRONG_TYPE = "wrong_type"
    ALGORITHM_NOT_ALLOWED = "algorithm_not_allowed"
    UNKNOWN_KEY = "unknown_key"
    BAD_SIGNATURE = "bad_signature"
    MISSING_CLAIM = "missing_claim"
    INVALID_CLAIM = "invalid_claim"
    WRONG_ISSUER = "wrong_issuer"
    WRONG_AUDIENCE = "wrong_audience"
    EXPIRED = "expired"
    NOT_YET_VALID = "not_yet_valid"
    LIFETIME_TOO_LONG = "lifetime_too_long"


class InvalidAccessToken(Unauthenticated):
    """A refused access token: one message for the client, the reason for logs and tests."""

    def __init__(self, reason: RefusalReason) -> None:
        super().__init__(REFUSED_MESSAGE)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class AccessTokenClaims:
    """The claims of one access token, typed; `to_jwt` / `from_jwt` are the wire form."""

    issuer: str
    subject: str
    audience: str
    client_id: str
    kind: PrincipalKind
    issued_at: int
    not_before: int
    expires_at: int
    token_id: str
    scope: frozenset[str] = frozenset()
    institution_id: int | None = None
    chain_id: int | None = None
    roles: frozenset[StaffRole] = frozenset()
    chain_roles: frozenset[ChainRole] = frozenset()
    region_ids: frozenset[int] = frozenset()

    @classmethod
    def for_principal(
        cls,
        principal: Principal,
        *,
        issuer: str,
        client_id: str,
        scope: Iterable[str] = (),
        audience: str | None = None,
        lifetime_seconds: int = DEFAULT_LIFETIME_SECONDS,
        now: float | None = None,
    ) -> "AccessTokenClaims":
        if not 0 < lifetime_seconds <= MAX_ACCESS_TOKEN_LIFETIME_SECONDS:
            raise ValueError(f"access-token lifetime must be 1–{MAX_ACCESS_TOKEN_LIFETIME_SECONDS} s")
        issued = int(now if now is not None else time.time())
        return cls(
            issuer=issuer,
            subject=principal.subject,
            audience=audience or api_audience(issuer),
            client_id=client_id,
            kind=principal.kind,
            issued_at=issued,
            not_before=issued,
            expires_at=issued + lifetime_seconds,
            token_id=secrets.token_urlsafe(16),
            scope=frozenset(scope),
            institution_id=principal.institution_id,
            chain_id=principal.chain_id,
            roles=principal.roles,
            chain_roles=principal.chain_roles,
            region_ids=principal.region_ids,
        )

    def principal(self) -> Principal:
        """What the token says; compliance/acting.py narrows it to the institution a request acts in."""
        return Principal(
            subject=self.subject,
            kind=self.kind,
            institution_id=self.institution_id,
            roles=self.roles,
            chain_id=self.chain_id,
            chain_roles=self.chain_roles,
            scopes=self.scope,
            region_ids=self.region_ids,
            client_id=self.client_id,
        )

    def to_jwt(self) -> dict[str, object]:
        claims: dict[str, object] = {
            "iss": self.issuer,
            "sub": self.subject,
            "aud": self.audience,
            "exp": self.expires_at,
            "iat": self.issued_at,
            "nbf": self.not_before,
            "jti": self.token_id,
            "client_id": self.client_id,
            "scope": " ".join(sorted(self.scope)),
            "kind": self.kind.value,
            "roles": sorted(role.value for role in self.roles),
        }
        if self.institution_id is not None:
            claims["institution_id"] = self.institution_id
        if self.chain_id is not None:
            claims["chain_id"] = self.chain_id
        if self.chain_roles:
            claims["chain_roles"] = sorted(role.value for role in self.chain_roles)
        if self.region_ids:
            claims["region_ids"] = sorted(self.region_ids)
        return claims

    @classmethod
    def from_jwt(cls, claims: Mapping[str, Any], *, audience: str) -> "AccessTokenClaims":
        """Typed claims of a verified token; InvalidAccessToken(INVALID_CLAIM) for any ill-typed one."""
        try:
            kind = PrincipalKind(claims["kind"])
            roles = claims.get("roles", [])
            chain_roles = claims.get("chain_roles", [])
            region_ids = claims.get("region_ids", [])
            scope = claims.get("scope", "")
            if not all(isinstance(v, list) for v in (roles, chain_roles, region_ids)) or not isinstance(
                scope, str
            ):
                raise ValueError("roles/scope")
            parsed = cls(
                issuer=_text(claims["iss"]),
                subject=_text(claims["sub"]),
                audience=audience,
                client_id=_text(claims["client_id"]),
                kind=kind,
                issued_at=_whole(claims["iat"]),
                not_before=_whole(claims.get("nbf", claims["iat"])),
                expires_at=_whole(claims["exp"]),
                token_id=_text(claims["jti"]),
                scope=frozenset(scope.split()),
                institution_id=_optional_id(claims.get("institution_id")),
                chain_id=_optional_id(claims.get("chain_id")),
                roles=frozenset(StaffRole(role) for role in roles),
                chain_roles=frozenset(ChainRole(role) for role in chain_roles),
                region_ids=frozenset(_optional_id(region) or 0 for region in region_ids),
            )
        except (ValueError, TypeError, KeyError):
            raise InvalidAccessToken(RefusalReason.INVALID_CLAIM) from None
        if not parsed._consistent():
            raise InvalidAccessToken(RefusalReason.INVALID_CLAIM)
        return parsed

    def _consistent(self) -> bool:
        """Claims only the kind of principal can hold: a token that mixes them is not ours."""
        bound = self.institution_id is not None or self.chain_id is not None
        if 0 in self.region_ids:  # a null in the list
            return False
        if self.kind in (PrincipalKind.STAFF, PrincipalKind.INTEGRATOR) and not bound:
            return False
        if self.roles and (self.kind is not PrincipalKind.STAFF or self.institution_id is None):
            return False
        if self.chain_roles and (self.kind is not PrincipalKind.STAFF or self.chain_id is None):
            return False
        if self.region_ids and self.kind is not PrincipalKind.SUPERVISOR:
            return False
        if self.kind in (PrincipalKind.FAMILY, PrincipalKind.SUPERVISOR, PrincipalKind.OPERATOR):
            return not bound
        return True


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("not a non-empty string")
    return value


def _whole(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError("not a whole number")
    return value


def _optional_id(value: object) -> int | None:
    if value is None:
        return None
    if _whole(value) < 1:
        raise ValueError("not an id")
    return value  # type: ignore[return-value]


def encode_access_token(claims: AccessTokenClaims, key: ActiveKey) -> str:
    """Sign `claims` with `key` (no I/O: for callers that fetched the active key beforehand)."""
    header = {"alg": ALGORITHM, "typ": TOKEN_TYPE, "kid": key.kid}
    return jwt.encode(header, claims.to_jwt(), key.private_key, algorithms=[ALGORITHM])


async def sign_access_token(claims: AccessTokenClaims, *, keys: SigningKeys | None = None) -> str:
    return encode_access_token(claims, await (keys or process_signing_keys()).signing_key())


async def issue_access_token(
    principal: Principal,
    *,
    issuer: str,
    client_id: str,
    scope: Iterable[str] = (),
    audience: str | None = None,
    lifetime_seconds: int = DEFAULT_LIFETIME_SECONDS,
    keys: SigningKeys | None = None,
    now: float | None = None,
) -> str:
    claims = AccessTokenClaims.for_principal(
        principal,
        issuer=issuer,
        client_id=client_id,
        scope=scope,
        audience=audience,
        lifetime_seconds=lifetime_seconds,
        now=now,
    )
    return await sign_access_token(claims, keys=keys)


def _header(token: str) -> dict[str, Any]:
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise InvalidAccessToken(RefusalReason.MALFORMED)
    try:
        encoded = parts[0] + "=" * (-len(parts[0]) % 4)
        header = json.loads(base64.urlsafe_b64decode(encoded.encode("ascii")))
    except (ValueError, binascii.Error, UnicodeError):
        raise InvalidAccessToken(RefusalReason.MALFORMED) from None
    if not isinstance(header, dict):
        raise InvalidAccessToken(RefusalReason.MALFORMED)
    return header


async def verify_access_token(
    token: str,
    *,
    issuer: str,
    audience: str | None = None,
    keys: SigningKeys | None = None,
    now: float | None = None,
) -> AccessTokenClaims:
    """The claims of a valid access token of `issuer` for `audience`, or InvalidAccessToken."""
    try:
        return await _verify(
            token, issuer, audience or api_audience(issuer), keys or process_signing_keys(), now
        )
    except InvalidAccessToken as refused:
        log.info("access token refused: %s", refused.reason.value)
        raise


async def _verify(
    token: str, issuer: str, audience: str, keys: SigningKeys, now: float | None
) -> AccessTokenClaims:
    header = _header(token)
    if header.get("alg") != ALGORITHM:
        raise InvalidAccessToken(RefusalReason.ALGORITHM_NOT_ALLOWED)
    typ = header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in _ACCEPTED_TYPES:
        raise InvalidAccessToken(RefusalReason.WRONG_TYPE)
    if "crit" in header:  # no extension of ours is critical; one we do not know must refuse the token
        raise InvalidAccessToken(RefusalReason.MALFORMED)
    kid = header.get("kid")
    key = await keys.verification_key(kid) if isinstance(kid, str) else None
    if key is None:
        raise InvalidAccessToken(RefusalReason.UNKNOWN_KEY)
    try:
        claims = jwt.decode(token, key, algorithms=[ALGORITHM]).claims
    except BadSignatureError:
        raise InvalidAccessToken(RefusalReason.BAD_SIGNATURE) from None
    except JoseError:
        raise InvalidAccessToken(RefusalReason.MALFORMED) from None
    _check_registered_claims(claims, issuer, audience, int(now if now is not None else time.time()))
    return AccessTokenClaims.from_jwt(claims, audience=audience)


def _check_registered_claims(claims: Mapping[str, Any], issuer: str, audience: str, now: int) -> None:
    if any(claims.get(name) is None for name in _REQUIRED_CLAIMS):
        raise InvalidAccessToken(RefusalReason.MISSING_CLAIM)
    if claims["iss"] != issuer:
        raise InvalidAccessToken(RefusalReason.WRONG_ISSUER)
    aud = claims["aud"]
    if not (aud == audience or (isinstance(aud, list) and audience in aud)):
        raise InvalidAccessToken(RefusalReason.WRONG_AUDIENCE)
    try:
        expires, issued = _whole(claims["exp"]), _whole(claims["iat"])
        not_before = _whole(claims.get("nbf", issued))
    except ValueError:
        raise InvalidAccessToken(RefusalReason.INVALID_CLAIM) from None
    if expires <= now - CLOCK_SKEW_SECONDS:
        raise InvalidAccessToken(RefusalReason.EXPIRED)
    if not_before > now + CLOCK_SKEW_SECONDS or issued > now + CLOCK_SKEW_SECONDS:
        raise InvalidAccessToken(RefusalReason.NOT_YET_VALID)
    if expires - issued > MAX_ACCESS_TOKEN_LIFETIME_SECONDS:
        raise InvalidAccessToken(RefusalReason.LIFETIME_TOO_LONG)

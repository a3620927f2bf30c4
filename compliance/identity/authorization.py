"""Authorization codes, refresh-token families and public (first-party) clients.

Codes and refresh tokens are 256 random bits handed to the client once and stored as their SHA-256
only (as client secrets are, compliance/identity/clients.py: no guess reaches 256 random bits, so a
slow hash would buy nothing). A code lives CODE_LIFETIME_SECONDS and is used once; its row stays,
marked used, so that a second use is recognised and revokes what the first issued.

A *family* is everything issued from one code exchange. Every use of a refresh token spends it and
issues its successor in the same family; presenting a spent token again (reuse: a stolen copy, or a
client that lost the race with a thief) revokes the whole family, including the newest token. A
family ends FAMILY_LIFETIME_SECONDS after the sign-in whatever happens; each token also dies after
REFRESH_IDLE_SECONDS unused.

Every function takes `now` so that tests move time instead of waiting. The writes that decide a race
(a code claimed, a refresh token spent) are conditional UPDATEs inside a transaction that holds the
family's row lock: of two concurrent uses exactly one changes the row.
"""

import hashlib
import logging
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from tortoise.transactions import in_transaction

from compliance.identity.authorization_models import (
    AuthorizationCode,
    FamilyRevocation,
    RefreshToken,
    TokenFamily,
)
from compliance.identity.client_models import ClientKind, OAuthClient
from tenants.errors import Conflict, InvalidInput

log = logging.getLogger(__name__)

CODE_LIFETIME_SECONDS = 60
ACCESS_TOKEN_LIFETIME_SECONDS = 300
REFRESH_IDLE_SECONDS = 7 * 24 * 3600
FAMILY_LIFETIME_SECONDS = 30 * 24 * 3600
_TOKEN_BYTES = 32  # 256 random bits

# The web app (family app and staff console, web/): a public client present in every installation.
FIRST_PARTY_CLIENT_ID = "yiyang-web-client"
FIRST_PARTY_CLIENT_NAME = "颐养 Web"
FIRST_PARTY_CALLBACK_PATH = "/app/callback"
_CLIENT_ID = re.compile(r"^[A-Za-z0-9_-]{16,64}$")
_LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


def secret_hash(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8")).digest()


def new_secret() -> str:
    return secrets.token_urlsafe(_TOKEN_BYTES)


def utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


# --- public clients ------------------------------------------------------------------------------


def check_redirect_uri(uri: str) -> str:
    """A redirect URI a public client may register: absolute https (http for loopback hosts only, as
    RFC 8252 §7.3 allows native apps), no fragment (RFC 6749 §3.1.2), no user info, at most 2,000 chars."""
    parts = urlsplit(uri)
    secure = parts.scheme == "https" or (parts.scheme == "http" and (parts.hostname or "") in _LOOPBACK)
    if (
        not secure
        or not parts.netloc
        or parts.fragment
        or "#" in uri
        or "@" in parts.netloc
        or len(uri) > 2000
        or not uri.isascii()
        or any(c.isspace() for c in uri)
    ):
        raise InvalidInput(
            "A redirect URI must be an absolute https URL (http only for 127.0.0.1 or localhost) without a"
            " fragment.",
            field="redirectUris",
        )
    return uri


async def create_public_client(
    name: str, *, redirect_uris: list[str], created_by: str, client_id: str | None = None
) -> OAuthClient:
    """A first-party public client (no secret) that may use the authorization code with PKCE."""
    name = name.strip()
    if not name:
        raise InvalidInput("Enter a name.", field="name")
    if not redirect_uris:
        raise InvalidInput("Give at least one redirect URI.", field="redirectUris")
    uris = sorted({check_redirect_uri(uri) for uri in redirect_uris})
    if client_id is not None and not _CLIENT_ID.match(client_id):
        raise InvalidInput("A client id is 16 to 64 letters, digits, '-' or '_'.", field="clientId")
    if client_id is not None and await OAuthClient.exists(client_id=client_id):
        raise Conflict("A client with this id already exists.", field="clientId")
    return await OAuthClient.create(
        client_id=client_id or secrets.token_urlsafe(18),
        name=name[:100],
        kind=ClientKind.PUBLIC,
        secret_hash=None,
        redirect_uris=uris,
        allowed_scopes=[],
        created_by=created_by,
    )


async def ensure_first_party_client(issuer: str) -> None:
    """Make sure the web app's client exists and accepts `<issuer>/app/callback` (idempotent; every API
    process runs it at start, so concurrent runs are one INSERT … ON CONFLICT)."""
    from tortoise import connections

    callback = f"{issuer}{FIRST_PARTY_CALLBACK_PATH}"
    try:
        await _upsert_first_party(connections.get("default"), callback)
    except Exception:  # an unmigrated database must not stop the API from starting (healthz says more)
        log.exception("the first-party OAuth2 client could not be ensured")


async def _upsert_first_party(connection: Any, callback: str) -> None:
    await connection.execute_query(
        "INSERT INTO shared.oauth_client (client_id, name, kind, redirect_uris, created_by)"
        " VALUES ($1, $2, 'public', ARRAY[$3::text], 'system:first-party')"
        " ON CONFLICT (client_id) DO UPDATE SET redirect_uris = array_append("
        "   shared.oauth_client.redirect_uris, $3::text)"
        " WHERE shared.oauth_client.kind = 'public'"
        "   AND NOT ($3::text = ANY (shared.oauth_client.redirect_uris))",
        [FIRST_PARTY_CLIENT_ID, FIRST_PARTY_CLIENT_NAME, callback],
    )


# --- authorization codes -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CodeRequest:
    """What a code is bound to: decided at sign-in, written after authlib has issued the code."""

    client_id: str
    account_id: int
    institution_id: int | None
    redirect_uri: str
    scope: str
    code_challenge: str
    code_challenge_method: str


async def store_code(code: str, request: CodeRequest, *, now: float) -> AuthorizationCode:
    return await AuthorizationCode.create(
        code_hash=secret_hash(code),
        client_id=request.client_id,
        account_id=request.account_id,
        institution_id=request.institution_id,
        redirect_uri=request.redirect_uri,
        scope=request.scope,
        code_challenge=request.code_challenge,
        code_challenge_method=request.code_challenge_method,
        created_at=utc(now),
        expires_at=utc(now + CODE_LIFETIME_SECONDS),
    )


async def find_code(code: str) -> AuthorizationCode | None:
    """The row of `code`, used or not, expired or not (the caller decides), or None."""
    if not code or len(code) > 512:
        return None
    return await AuthorizationCode.get_or_none(code_hash=secret_hash(code))


class Outcome(StrEnum):
    ISSUED = "issued"
    REUSED = "reused"  # the code or refresh token had been used already: the family is revoked
    REFUSED = "refused"  # expired or revoked meanwhile


@dataclass(frozen=True, slots=True)
class Issued:
    outcome: Outcome
    family_id: int | None = None


async def redeem_code(code: AuthorizationCode, refresh_token: str | None, *, now: float) -> Issued:
    """Claim the code (once) and open its family with its first refresh token, in one transaction."""
    moment = utc(now)
    async with in_transaction() as conn:
        claimed = (
            await AuthorizationCode.filter(id=code.id, used_at__isnull=True, expires_at__gt=moment)
            .using_db(conn)
            .update(used_at=moment)
        )
        if claimed:
            family = await TokenFamily.create(
                client_id=code.client_id,
                account_id=code.account_id,
                institution_id=code.institution_id,
                authorization_code_id=code.id,
                scope=code.scope,
                created_at=moment,
                expires_at=utc(now + FAMILY_LIFETIME_SECONDS),
                using_db=conn,
            )
            if refresh_token is not None:
                await _add_token(family, refresh_token, now, conn)
            return Issued(Outcome.ISSUED, family.id)
    if not await AuthorizationCode.filter(id=code.id, used_at__isnull=False).exists():
        return Issued(Outcome.REFUSED)  # expired meanwhile
    # Lost the race with another use of the same code: that is a second use.
    revoked = await revoke_families_of_code(code.id, now=now)
    return Issued(Outcome.REUSED, revoked[0] if revoked else None)


async def revoke_families_of_code(code_id: int, *, now: float) -> list[int]:
    """Revoke what a code issued (RFC 6749 §4.1.2: a code used twice); the ids of families revoked."""
    ids = await TokenFamily.filter(authorization_code_id=code_id, revoked_at__isnull=True).values_list(
        "id", flat=True
    )
    for family_id in ids:
        await revoke_family(family_id, FamilyRevocation.CODE_REUSE, now=now)
    return list(ids)


# --- refresh tokens ------------------------------------------------------------------------------


async def _add_token(family: TokenFamily, token: str, now: float, conn: object) -> RefreshToken:
    idle_end = min(now + REFRESH_IDLE_SECONDS, family.expires_at.timestamp())
    return await RefreshToken.create(
        family_id=family.id,
        token_hash=secret_hash(token),
        created_at=utc(now),
        expires_at=utc(max(idle_end, now + 1)),
        using_db=conn,
    )


@dataclass(frozen=True, slots=True)
class PresentedRefreshToken:
    token: RefreshToken
    family: TokenFamily

    def usable(self, now: float) -> bool:
        return (
            self.token.spent_at is None
            and self.family.revoked_at is None
            and self.token.expires_at.timestamp() > now
            and self.family.expires_at.timestamp() > now
        )


async def find_refresh_token(token: str) -> PresentedRefreshToken | None:
    """The row of `token` and its family, in whatever state, or None for a token we never issued."""
    if not token or len(token) > 512:
        return None
    row = await RefreshToken.get_or_none(token_hash=secret_hash(token))
    if row is None:
        return None
    family = await TokenFamily.get(id=row.family_id)
    return PresentedRefreshToken(row, family)


async def rotate_refresh_token(presented: PresentedRefreshToken, successor: str, *, now: float) -> Issued:
    """Spend the presented token and issue `successor` in its family, or refuse.

    Under the family's row lock: a revoked or expired family refuses; a token already spent (by a
    concurrent use that got the lock first) is reuse and revokes the family.
    """
    moment = utc(now)
    async with in_transaction() as conn:
        family = await TokenFamily.filter(id=presented.family.id).select_for_update().using_db(conn).first()
        if family is None or family.revoked_at is not None or family.expires_at <= moment:
            return Issued(Outcome.REFUSED, presented.family.id)
        spent = (
            await RefreshToken.filter(id=presented.token.id, spent_at__isnull=True, expires_at__gt=moment)
            .using_db(conn)
            .update(spent_at=moment)
        )
        if spent:
            await _add_token(family, successor, now, conn)
            return Issued(Outcome.ISSUED, family.id)
        reused = (
            await RefreshToken.filter(id=presented.token.id, spent_at__isnull=False).using_db(conn).exists()
        )
        if not reused:  # expired meanwhile
            return Issued(Outcome.REFUSED, family.id)
        await _revoke(family.id, FamilyRevocation.REUSE, moment, conn)
        return Issued(Outcome.REUSED, family.id)


async def _revoke(family_id: int, reason: FamilyRevocation, moment: datetime, conn: object) -> bool:
    return bool(
        await TokenFamily.filter(id=family_id, revoked_at__isnull=True)
        .using_db(conn)  # type: ignore[arg-type]
        .update(revoked_at=moment, revoked_reason=reason)
    )


async def revoke_family(family_id: int, reason: FamilyRevocation, *, now: float) -> bool:
    """Stop every refresh token of the family; whether it was live until now."""
    async with in_transaction() as conn:
        return await _revoke(family_id, reason, utc(now), conn)


# --- clean-up ------------------------------------------------------------------------------------

# What is kept past its end, and why: a used code for a day, so that a late second use still finds it
# (and is refused as expired rather than unknown); a revoked or ended family for a day, so that a reused
# refresh token of it is logged as reuse. The sign-in audit (shared.auth_event) keeps what happened.
SWEEP_GRACE_SECONDS = 24 * 3600


@dataclass(frozen=True, slots=True)
class Swept:
    codes: int
    families: int  # their refresh tokens go with them


async def sweep_expired(*, now: float) -> Swept:
    """Delete codes and token families that can no longer be used, a grace period after their end."""
    before = utc(now - SWEEP_GRACE_SECONDS)
    families = await TokenFamily.filter(expires_at__lt=before).delete()
    families += await TokenFamily.filter(revoked_at__lt=before).delete()
    codes = await AuthorizationCode.filter(expires_at__lt=before).delete()
    return Swept(codes=codes, families=families)

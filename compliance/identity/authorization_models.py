"""Shared-schema tables of the authorization-code and refresh grants and of the sign-in audit
(migrations/shared/0005_authorization.sql)."""

from datetime import datetime
from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

from tenants.schema_names import SHARED_SCHEMA


class AuthorizationCode(Model):
    id = fields.BigIntField(primary_key=True)
    code_hash = fields.BinaryField()
    client_id = fields.CharField(max_length=64)
    account_id = fields.BigIntField()
    institution_id: int | None = fields.BigIntField(null=True)  # type: ignore[assignment]
    redirect_uri = fields.TextField()
    scope = fields.TextField(default="")
    code_challenge = fields.CharField(max_length=128)
    code_challenge_method = fields.CharField(max_length=8)
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()
    used_at: datetime | None = fields.DatetimeField(null=True)  # type: ignore[assignment]

    class Meta:
        schema = SHARED_SCHEMA
        table = "authorization_code"


class FamilyRevocation(StrEnum):
    REUSE = "reuse"  # a spent refresh token was presented again
    CODE_REUSE = "code_reuse"  # the code the family came from was presented again
    REVOCATION = "revocation"  # the client revoked it (RFC 7009)
    ACCOUNT = "account"  # the account may no longer act (disabled, membership removed)


class TokenFamily(Model):
    id = fields.BigIntField(primary_key=True)
    client_id = fields.CharField(max_length=64)
    account_id = fields.BigIntField()
    institution_id: int | None = fields.BigIntField(null=True)  # type: ignore[assignment]
    authorization_code_id: int | None = fields.BigIntField(null=True)  # type: ignore[assignment]
    scope = fields.TextField(default="")
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()
    revoked_at: datetime | None = fields.DatetimeField(null=True)  # type: ignore[assignment]
    revoked_reason: FamilyRevocation | None = fields.CharEnumField(  # type: ignore[assignment]
        FamilyRevocation, max_length=32, null=True
    )

    class Meta:
        schema = SHARED_SCHEMA
        table = "token_family"


class RefreshToken(Model):
    id = fields.BigIntField(primary_key=True)
    family_id = fields.BigIntField()
    token_hash = fields.BinaryField()
    created_at = fields.DatetimeField()
    expires_at = fields.DatetimeField()
    spent_at: datetime | None = fields.DatetimeField(null=True)  # type: ignore[assignment]

    class Meta:
        schema = SHARED_SCHEMA
        table = "refresh_token"


class AuthEventKind(StrEnum):
    LOGIN_SUCCEEDED = "login_succeeded"
    LOGIN_FAILED = "login_failed"
    LOGIN_LOCKED_OUT = "login_locked_out"
    SECOND_FACTOR_FAILED = "second_factor_failed"
    SECOND_FACTOR_ENROLLED = "second_factor_enrolled"
    TOKEN_ISSUED = "token_issued"
    CODE_REUSE_DETECTED = "code_reuse_detected"
    REFRESH_REUSE_DETECTED = "refresh_reuse_detected"
    FAMILY_REVOKED = "family_revoked"
    TOKEN_REVOKED = "token_revoked"
    TOKEN_REFUSED = "token_refused"


class AuthEvent(Model):
    """One row of the append-only sign-in audit: never a password, a code or a token."""

    id = fields.BigIntField(primary_key=True)
    occurred_at = fields.DatetimeField(auto_now_add=True)
    kind = fields.CharEnumField(AuthEventKind, max_length=32)
    grant_type: str | None = fields.CharField(max_length=32, null=True)  # type: ignore[assignment]
    account_id: int | None = fields.BigIntField(null=True)  # type: ignore[assignment]
    client_id: str | None = fields.CharField(max_length=64, null=True)  # type: ignore[assignment]
    institution_id: int | None = fields.BigIntField(null=True)  # type: ignore[assignment]
    family_id: int | None = fields.BigIntField(null=True)  # type: ignore[assignment]
    ip: str | None = fields.CharField(max_length=64, null=True)  # type: ignore[assignment]
    jti: str | None = fields.CharField(max_length=64, null=True)  # type: ignore[assignment]
    reason: str | None = fields.CharField(max_length=64, null=True)  # type: ignore[assignment]

    class Meta:
        schema = SHARED_SCHEMA
        table = "auth_event"

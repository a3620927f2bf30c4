"""The shared table of OAuth2 clients (migrations/shared/0004_oauth_clients.sql)."""

from datetime import datetime
from enum import StrEnum

from tortoise import fields
from tortoise.contrib.postgres.fields import ArrayField
from tortoise.models import Model

from tenants.models import Chain, Institution
from tenants.schema_names import SHARED_SCHEMA


class ClientKind(StrEnum):
    INTEGRATOR = "integrator"  # confidential: a secret, the client-credentials grant, one institution/chain
    PUBLIC = "public"  # first-party apps: no secret, authorization code with PKCE, refresh tokens


class OAuthClient(Model):
    id = fields.BigIntField(primary_key=True)
    client_id = fields.CharField(max_length=64, unique=True)
    name = fields.CharField(max_length=100)
    kind = fields.CharEnumField(ClientKind, max_length=16)
    secret_hash: bytes | None = fields.BinaryField(null=True)  # type: ignore[assignment]
    institution: fields.ForeignKeyNullableRelation[Institution] = fields.ForeignKeyField(
        "shared.Institution", related_name="oauth_clients", null=True, on_delete=fields.CASCADE
    )
    chain: fields.ForeignKeyNullableRelation[Chain] = fields.ForeignKeyField(
        "shared.Chain", related_name="oauth_clients", null=True, on_delete=fields.CASCADE
    )
    allowed_scopes: list[str] = ArrayField(element_type="text", default=list)  # type: ignore[assignment]
    # Public clients only: where codes may be sent, compared exactly (0005_authorization.sql).
    redirect_uris: list[str] = ArrayField(element_type="text", default=list)  # type: ignore[assignment]
    created_by = fields.CharField(max_length=200)
    created_at = fields.DatetimeField(auto_now_add=True)
    revoked_at: datetime | None = fields.DatetimeField(null=True)  # type: ignore[assignment]

    institution_id: int | None
    chain_id: int | None

    class Meta:
        schema = SHARED_SCHEMA
        table = "oauth_client"

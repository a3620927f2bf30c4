"""The shared table of access-token signing keys (migrations/shared/0002_signing_keys.sql)."""

from datetime import datetime

from tortoise import fields
from tortoise.models import Model

from tenants.schema_names import SHARED_SCHEMA


class SigningKey(Model):
    kid = fields.CharField(max_length=64, primary_key=True)
    algorithm = fields.CharField(max_length=16)
    public_jwk: dict[str, str] = fields.JSONField()  # type: ignore[assignment]
    private_key_sealed = fields.BinaryField()
    created_at = fields.DatetimeField()
    activated_at = fields.DatetimeField()
    retired_at: datetime | None = fields.DatetimeField(null=True)  # type: ignore[assignment]

    class Meta:
        schema = SHARED_SCHEMA
        table = "signing_key"

"""The tenant registry, in the shared schema: regions, chains and institutions."""

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

from tenants.schema_names import SHARED_SCHEMA


class InstitutionStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class Region(Model):
    id = fields.BigIntField(primary_key=True)
    code = fields.CharField(max_length=32, unique=True)
    name = fields.CharField(max_length=100)

    class Meta:
        schema = SHARED_SCHEMA
        table = "region"


class Chain(Model):
    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=200, unique=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        schema = SHARED_SCHEMA
        table = "chain"


class Institution(Model):
    id = fields.BigIntField(primary_key=True)
    name = fields.CharField(max_length=200)
    region: fields.ForeignKeyRelation[Region] = fields.ForeignKeyField(
        "shared.Region", related_name="institutions", on_delete=fields.RESTRICT
    )
    chain: fields.ForeignKeyNullableRelation[Chain] = fields.ForeignKeyField(
        "shared.Chain", related_name="institutions", null=True, on_delete=fields.RESTRICT
    )
    schema_name = fields.CharField(max_length=64, unique=True)
    status = fields.CharEnumField(InstitutionStatus, max_length=16, default=InstitutionStatus.ACTIVE)
    time_zone = fields.CharField(max_length=64, default="Asia/Shanghai")
    currency = fields.CharField(max_length=3, default="CNY")
    bed_capacity = fields.IntField(default=0)
    # Admin and clinical staff must sign in with a TOTP second factor (compliance/identity/totp.py).
    requires_totp = fields.BooleanField(default=False)
    created_at = fields.DatetimeField(auto_now_add=True)

    region_id: int
    chain_id: int | None

    class Meta:
        schema = SHARED_SCHEMA
        table = "institution"

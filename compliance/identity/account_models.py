"""Shared-schema tables of identity (migrations/shared/0003_accounts.sql): accounts and memberships."""

from enum import StrEnum

from tortoise import fields
from tortoise.models import Model

from compliance.principals import ChainRole, StaffRole
from tenants.models import Chain, Institution, Region
from tenants.schema_names import SHARED_SCHEMA


class AccountKind(StrEnum):
    STAFF = "staff"
    FAMILY = "family"
    OPERATOR = "operator"
    SUPERVISOR = "supervisor"


class AccountStatus(StrEnum):
    ACTIVE = "active"
    LOCKED = "locked"  # stopped by an administrator; the lockout after failed attempts is in Redis
    DISABLED = "disabled"


class UserAccount(Model):
    id = fields.BigIntField(primary_key=True)
    kind = fields.CharEnumField(AccountKind, max_length=16)
    login = fields.CharField(max_length=254, unique=True)
    display_name = fields.CharField(max_length=100)
    password_hash = fields.TextField()
    status = fields.CharEnumField(AccountStatus, max_length=16, default=AccountStatus.ACTIVE)
    password_changed_at = fields.DatetimeField(auto_now_add=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        schema = SHARED_SCHEMA
        table = "user_account"


class StaffMembership(Model):
    id = fields.BigIntField(primary_key=True)
    account: fields.ForeignKeyRelation[UserAccount] = fields.ForeignKeyField(
        "shared.UserAccount", related_name="staff_memberships", on_delete=fields.CASCADE
    )
    institution: fields.ForeignKeyRelation[Institution] = fields.ForeignKeyField(
        "shared.Institution", related_name="staff_memberships", on_delete=fields.CASCADE
    )
    role = fields.CharEnumField(StaffRole, max_length=32)
    created_at = fields.DatetimeField(auto_now_add=True)

    account_id: int
    institution_id: int

    class Meta:
        schema = SHARED_SCHEMA
        table = "staff_membership"
        unique_together = (("account", "institution", "role"),)


class ChainMembership(Model):
    id = fields.BigIntField(primary_key=True)
    account: fields.ForeignKeyRelation[UserAccount] = fields.ForeignKeyField(
        "shared.UserAccount", related_name="chain_memberships", on_delete=fields.CASCADE
    )
    chain: fields.ForeignKeyRelation[Chain] = fields.ForeignKeyField(
        "shared.Chain", related_name="memberships", on_delete=fields.CASCADE
    )
    role = fields.CharEnumField(ChainRole, max_length=32)
    created_at = fields.DatetimeField(auto_now_add=True)

    account_id: int
    chain_id: int

    class Meta:
        schema = SHARED_SCHEMA
        table = "chain_membership"
        unique_together = (("account", "chain", "role"),)


class SupervisorRegion(Model):
    id = fields.BigIntField(primary_key=True)
    account: fields.ForeignKeyRelation[UserAccount] = fields.ForeignKeyField(
        "shared.UserAccount", related_name="supervised_regions", on_delete=fields.CASCADE
    )
    region: fields.ForeignKeyRelation[Region] = fields.ForeignKeyField(
        "shared.Region", related_name="supervisors", on_delete=fields.CASCADE
    )
    created_at = fields.DatetimeField(auto_now_add=True)

    account_id: int
    region_id: int

    class Meta:
        schema = SHARED_SCHEMA
        table = "supervisor_region"
        unique_together = (("account", "region"),)


class FamilyLink(Model):
    """A family account following one resident; the ids are primary keys in the institution's schema."""

    id = fields.BigIntField(primary_key=True)
    account: fields.ForeignKeyRelation[UserAccount] = fields.ForeignKeyField(
        "shared.UserAccount", related_name="family_links", on_delete=fields.CASCADE
    )
    institution: fields.ForeignKeyRelation[Institution] = fields.ForeignKeyField(
        "shared.Institution", related_name="family_links", on_delete=fields.CASCADE
    )
    family_member_id = fields.BigIntField()
    resident_id = fields.BigIntField()
    created_at = fields.DatetimeField(auto_now_add=True)

    account_id: int
    institution_id: int

    class Meta:
        schema = SHARED_SCHEMA
        table = "family_link"
        unique_together = (("account", "institution", "resident_id"),)

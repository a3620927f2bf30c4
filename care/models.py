"""Tenant-schema tables of the resident domain (created by migrations/tenant)."""

from enum import StrEnum

from tortoise import fields

from tenants.unit_of_work import TenantModel


class Gender(StrEnum):
    FEMALE = "female"
    MALE = "male"


class CareLevel(StrEnum):
    """护理等级: 自理 / 介护 / 全护 / 特护."""

    SELF_CARE = "self_care"
    ASSISTED = "assisted"
    FULL_CARE = "full_care"
    SPECIAL_CARE = "special_care"


class ResidentStatus(StrEnum):
    IN_RESIDENCE = "in_residence"
    DISCHARGED = "discharged"


class DischargeReason(StrEnum):
    """退住原因, kept coded because the retention KPI groups by it."""

    RETURNED_HOME = "returned_home"
    TRANSFERRED_TO_HOSPITAL = "transferred_to_hospital"
    MOVED_TO_OTHER_INSTITUTION = "other_institution"
    DECEASED = "deceased"
    DISSATISFIED = "dissatisfied"
    COST = "cost"
    OTHER = "other"


class Relationship(StrEnum):
    SON = "son"
    DAUGHTER = "daughter"
    SPOUSE = "spouse"
    SON_IN_LAW = "son_in_law"
    DAUGHTER_IN_LAW = "daughter_in_law"
    GRANDCHILD = "grandchild"
    SIBLING = "sibling"
    OTHER_RELATIVE = "other_relative"
    GUARDIAN = "guardian"
    FRIEND = "friend"


class Resident(TenantModel):
    """A stay of a resident. Identity fields are ciphertexts (`*_enc`, bytea) sealed under the resident's
    data key and read through `care.residents` only; `*_bidx` are blind indexes for exact lookup.
    Placement, care level, status and dates stay plaintext (filtered in SQL; docs/security.md)."""

    id = fields.BigIntField(primary_key=True)
    name_enc = fields.BinaryField()
    gender_enc = fields.BinaryField()
    birth_date_enc = fields.BinaryField()
    id_card_number_enc = fields.BinaryField(null=True)
    id_card_number_bidx = fields.BinaryField(null=True)
    phone_enc = fields.BinaryField(null=True)
    phone_bidx = fields.BinaryField(null=True)
    building = fields.CharField(max_length=50, null=True)
    floor = fields.CharField(max_length=20, null=True)
    room = fields.CharField(max_length=20, null=True)
    bed = fields.CharField(max_length=20, null=True)
    care_level = fields.CharEnumField(CareLevel, max_length=16)
    admission_date = fields.DateField()
    status = fields.CharEnumField(ResidentStatus, max_length=16, default=ResidentStatus.IN_RESIDENCE)
    discharged_on = fields.DateField(null=True)
    discharge_reason = fields.CharEnumField(DischargeReason, max_length=24, null=True)
    discharge_note_enc = fields.BinaryField(null=True)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    family_members: fields.ReverseRelation["FamilyMember"]

    class Meta:
        table = "resident"


class FamilyMember(TenantModel):
    id = fields.BigIntField(primary_key=True)
    resident: fields.ForeignKeyRelation[Resident] = fields.ForeignKeyField(
        "tenant.Resident", related_name="family_members", on_delete=fields.CASCADE
    )
    name_enc = fields.BinaryField()
    relationship = fields.CharEnumField(Relationship, max_length=24)
    phone_enc = fields.BinaryField()
    phone_bidx = fields.BinaryField()
    is_emergency_contact = fields.BooleanField(default=False)
    created_at = fields.DatetimeField(auto_now_add=True)

    resident_id: int

    class Meta:
        table = "family_member"

"""Residents and family members: types, queries and mutations."""

from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

import strawberry

from care import residents as care
from care.models import (
    CareLevel,
    DischargeReason,
    Gender,
    Relationship,
    ResidentStatus,
)
from compliance.consent import Category
from compliance.policy import Action, require, resident_scope
from compliance.principals import PrincipalKind
from schema import assessments as assessment_fields
from schema import audit as audit_fields
from schema import care_plans as care_plan_fields
from schema import consents as consent_fields
from schema import emergency_contacts as contact_fields
from schema import family_log as family_log_fields
from schema import photos as photo_fields
from schema import preferences as preference_fields
from schema import reports as report_fields
from schema import sops as sop_fields
from schema import timeline as timeline_fields
from schema import vital_rules as vital_rule_fields
from schema import vitals as vital_fields
from schema.context import YiyangInfo
from schema.health_record import HealthRecordType, health_record_of
from schema.ids import decode_id, encode_id
from schema.institutions import InstitutionType
from schema.pagination import Connection, connection, page_request, paginate_loaded
from schema.resident_access import (
    BY_POLICY,
    audit_decision,
    consent_refusals,
    part_to_change,
    require_resident_access,
    resident_to_change,
)
from schema.user_errors import USER_ERROR_TYPES, UserError, user_errors
from tenants.errors import Erased, Forbidden, NotFound

GenderEnum = strawberry.enum(Gender, name="Gender")
CareLevelEnum = strawberry.enum(CareLevel, name="CareLevel")
ResidentStatusEnum = strawberry.enum(ResidentStatus, name="ResidentStatus")
DischargeReasonEnum = strawberry.enum(DischargeReason, name="DischargeReason")
RelationshipEnum = strawberry.enum(Relationship, name="Relationship")


ERASED = "The personal data of this resident was erased."
# Whose reads of a resident's identity the consent decision point governs: family accounts (consent
# issue). Staff act under care delivery; integrators with residents:read are not asked yet (see the
# consent notes: their identity reads would need consents recorded first).
IDENTITY_BY_CONSENT = frozenset({PrincipalKind.FAMILY, PrincipalKind.INTEGRATOR})
IDENTITY = "Null, with an error of code GONE, when the resident's personal data was erased."


@strawberry.type(name="FamilyMember")
class FamilyMemberType:
    id: strawberry.ID
    # Plain fields like the resident's identity (below): an erased resident's hold the GONE error.
    name: str | None = strawberry.field(description=IDENTITY)
    relationship: RelationshipEnum
    phone: str | None = strawberry.field(description=IDENTITY)
    is_emergency_contact: bool
    pk: strawberry.Private[int]

    @classmethod
    def from_model(cls, row: care.FamilyMemberRecord, institution_id: int) -> "FamilyMemberType":
        erased = Erased(ERASED) if row.erased else None
        return cls(
            id=strawberry.ID(encode_id("FamilyMember", institution_id, row.id)),
            name=erased or row.name,
            relationship=row.relationship,
            phone=erased or row.phone,
            is_emergency_contact=row.is_emergency_contact,
            pk=row.id,
        )


# Identity fields are plain fields (the execution short path completes them without resolvers): for an
# erased resident each holds an `Erased` error instead of a value, which graphql-core raises where the
# field is completed (schema/execution.py leaves anything that is not a value to graphql-core): the field
# is null with an error of code GONE, and the rest of the resident still reads.
_IdentityValue = Any


@strawberry.type(name="Resident")
class ResidentType:
    """Identity fields (name, gender, birthDate, age, idCardNumber, phone) are sealed by field-level
    encryption; for an erased resident they are null, each with an error of code GONE, and the rest of
    the resident (placement, care level, dates) still reads."""

    id: strawberry.ID
    name: str | None = strawberry.field(description=IDENTITY)
    gender: GenderEnum | None = strawberry.field(description=IDENTITY)
    birth_date: date | None = strawberry.field(description=IDENTITY)
    age: int | None = strawberry.field(
        description="Age in whole years today, in the institution's time zone. " + IDENTITY
    )
    id_card_number: str | None = strawberry.field(
        description="身份证号 (18 characters), null when not recorded. " + IDENTITY
    )
    phone: str | None = strawberry.field(
        description="The resident's own phone, null when not recorded. " + IDENTITY
    )
    building: str | None
    floor: str | None
    room: str | None
    bed: str | None
    care_level: CareLevelEnum
    admission_date: date
    status: ResidentStatusEnum
    discharged_on: date | None
    discharge_reason: DischargeReasonEnum | None
    pk: strawberry.Private[int]
    institution_id: strawberry.Private[int]

    @classmethod
    def from_model(
        cls,
        row: care.ResidentRecord,
        institution_id: int,
        today: date | None = None,
        refused: Forbidden | None = None,
    ) -> "ResidentType":
        """`refused`: the decision point's refusal of the identity category (schema/consents.py), held by
        each identity field as an erased resident's fields hold GONE."""
        identity = row.identity
        if identity is None or refused is not None:
            withheld: _IdentityValue = refused or Erased(ERASED)
            name = gender = birth_date = age = id_card_number = phone = withheld
        else:
            birth = identity.birth_date
            day = today or care.institution_today()
            name, gender, birth_date = identity.name, identity.gender, birth
            age = day.year - birth.year - ((day.month, day.day) < (birth.month, birth.day))
            id_card_number, phone = identity.id_card_number, identity.phone
        return cls(
            id=strawberry.ID(encode_id("Resident", institution_id, row.id)),
            name=name,
            gender=gender,
            birth_date=birth_date,
            age=age,
            id_card_number=id_card_number,
            phone=phone,
            building=row.building,
            floor=row.floor,
            room=row.room,
            bed=row.bed,
            care_level=row.care_level,
            admission_date=row.admission_date,
            status=row.status,
            discharged_on=row.discharged_on,
            discharge_reason=row.discharge_reason,
            pk=row.id,
            institution_id=institution_id,
        )

    @strawberry.field
    async def family_members(
        self, info: YiyangInfo, first: int | None = None, after: str | None = None
    ) -> Connection[FamilyMemberType]:
        page = page_request(first, after)
        # Relatives' names and phones: identity data (under a consent for family accounts and integrators).
        await require_resident_access(
            info, Action.FAMILY_MEMBER_VIEW, self.institution_id, self.pk, (Category.IDENTITY,)
        )
        members = await info.context.loaders.family_members.load(self.pk)
        nodes = [FamilyMemberType.from_model(m, self.institution_id) for m in members]
        return paginate_loaded(nodes, page, key=lambda node: node.pk)

    @strawberry.field(
        description="Diagnoses, medications and allergies (health data); null with an error of code GONE "
        "for an erased resident."
    )
    async def health_record(self, info: YiyangInfo) -> HealthRecordType | None:
        return await health_record_of(info, self.institution_id, self.pk)

    @strawberry.field
    async def institution(self, info: YiyangInfo) -> InstitutionType:
        row = await info.context.loaders.institution.load(self.institution_id)
        if row is None:
            raise NotFound("Not found.")
        return InstitutionType.from_model(row)

    # Vital signs: resolvers in schema/vitals.py.
    vitals = strawberry.field(resolver=vital_fields.resident_vitals)
    vital_series = strawberry.field(resolver=vital_fields.resident_vital_series)
    # Ability assessments and the care-level suggestion: resolvers in schema/assessments.py.
    assessments = strawberry.field(resolver=assessment_fields.resident_assessments)
    latest_assessments = strawberry.field(resolver=assessment_fields.resident_latest_assessments)
    care_level_suggestion = strawberry.field(resolver=assessment_fields.resident_care_level_suggestion)
    latest_vitals = strawberry.field(resolver=vital_fields.resident_latest_vitals)
    # Check-up reports (uploaded files): resolver in schema/reports.py.
    checkup_reports = strawberry.field(resolver=report_fields.resident_checkup_reports)
    # The resident's photo (identity, on the card): resolver in schema/photos.py.
    photo = strawberry.field(resolver=photo_fields.resident_photo)
    # Preferences, the emergency call list, the family communication log: schema/preferences.py,
    # schema/emergency_contacts.py, schema/family_log.py.
    preferences = strawberry.field(resolver=preference_fields.resident_preferences)
    emergency_contacts = strawberry.field(resolver=contact_fields.resident_emergency_contacts)
    family_communications = strawberry.field(resolver=family_log_fields.resident_family_communications)
    # The service timeline (care, meals, activities, visitors, outings, observations): schema/timeline.py.
    timeline = strawberry.field(resolver=timeline_fields.resident_timeline)
    latest_services = strawberry.field(resolver=timeline_fields.resident_latest_services)
    # Consent records (current versions): schema/consents.py.
    consents = strawberry.field(resolver=consent_fields.resident_consents)
    # Who accessed the resident's data (the audit log): schema/audit.py.
    access_report = strawberry.field(resolver=audit_fields.resident_access_report)
    # Care plans and their tasks: schema/care_plans.py.
    care_plan = strawberry.field(resolver=care_plan_fields.resident_care_plan)
    tasks = strawberry.field(resolver=care_plan_fields.resident_tasks)
    # SOP instances and the resident's butler: schema/sops.py.
    sop_instances = strawberry.field(resolver=sop_fields.resident_sop_instances)
    butler_id = strawberry.field(resolver=sop_fields.resident_butler_id)
    # Rule firings (rules over vitals): schema/vital_rules.py.
    vital_rule_firings = strawberry.field(resolver=vital_rule_fields.resident_vital_rule_firings)


@strawberry.input
class ResidentFilterInput:
    status: ResidentStatusEnum | None = None
    care_level: CareLevelEnum | None = None
    building: str | None = None
    floor: str | None = None
    room: str | None = None
    bed: str | None = None
    name_contains: str | None = strawberry.field(
        default=None, description="Part of the name (decrypted and compared in memory)."
    )
    id_card_number: str | None = strawberry.field(
        default=None, description="Exact 18-character ID-card number (BAD_USER_INPUT if not valid)."
    )
    phone: str | None = strawberry.field(
        default=None, description="Exact phone of the resident or of one of its family members."
    )


@strawberry.input
class PlacementInput:
    building: str | None = None
    floor: str | None = None
    room: str | None = None
    bed: str | None = None

    def to_domain(self) -> care.Placement:
        return care.Placement(building=self.building, floor=self.floor, room=self.room, bed=self.bed)


@strawberry.input
class AdmitResidentInput:
    name: str
    gender: GenderEnum
    birth_date: date
    care_level: CareLevelEnum
    admission_date: date
    placement: PlacementInput | None = None
    id_card_number: str | None = None
    phone: str | None = None


@strawberry.input(
    description="Fields left out (or null) keep their value; placement replaces the whole placement."
)
class UpdateResidentInput:
    id: strawberry.ID
    name: str | None = None
    gender: GenderEnum | None = None
    birth_date: date | None = None
    care_level: CareLevelEnum | None = None
    admission_date: date | None = None
    placement: PlacementInput | None = None
    id_card_number: str | None = strawberry.field(default=None, description="An empty string removes it.")
    phone: str | None = strawberry.field(default=None, description="An empty string removes it.")


@strawberry.input
class DischargeResidentInput:
    id: strawberry.ID
    discharged_on: date
    reason: DischargeReasonEnum
    note: str | None = None


@strawberry.input
class AddFamilyMemberInput:
    resident_id: strawberry.ID
    name: str
    relationship: RelationshipEnum
    phone: str
    is_emergency_contact: bool = False


@strawberry.type
class ResidentPayload:
    resident: ResidentType | None
    user_errors: list[UserError]


@strawberry.type
class AddFamilyMemberPayload:
    family_member: FamilyMemberType | None
    resident: ResidentType | None
    user_errors: list[UserError]


@strawberry.input(description="Fields left out (or null) keep their value.")
class UpdateFamilyMemberInput:
    id: strawberry.ID
    name: str | None = None
    relationship: RelationshipEnum | None = None
    phone: str | None = None
    is_emergency_contact: bool | None = None


@strawberry.input
class RemoveFamilyMemberInput:
    id: strawberry.ID


@strawberry.type
class FamilyMemberPayload:
    family_member: FamilyMemberType | None
    user_errors: list[UserError]


@strawberry.type
class RemoveFamilyMemberPayload:
    removed_family_member_id: strawberry.ID | None
    user_errors: list[UserError]


async def _family_member_to_change(info: YiyangInfo, member_id: str) -> tuple[int, int, int]:
    """(institution id, resident pk, member pk) of a family member of the acting institution the caller
    may edit; NOT_FOUND for another institution's, FORBIDDEN for a role that may not edit."""
    return await part_to_change(
        info, "FamilyMember", member_id, Action.FAMILY_MEMBER_EDIT, care.resident_of_family_member
    )


async def _resident_change(
    info: YiyangInfo, institution_id: int, change: Callable[[], Awaitable[care.ResidentRecord]]
) -> ResidentPayload:
    try:
        row = await change()
    except USER_ERROR_TYPES as error:
        return ResidentPayload(resident=None, user_errors=user_errors(info, error))
    return ResidentPayload(resident=ResidentType.from_model(row, institution_id), user_errors=[])


@strawberry.type
class ResidentQueries:
    @strawberry.field(
        description="Residents of the institution the caller acts in, in admission-record order."
    )
    async def residents(
        self,
        info: YiyangInfo,
        first: int | None = None,
        after: str | None = None,
        filter: ResidentFilterInput | None = None,
    ) -> Connection[ResidentType]:
        require(info.context.principal, Action.RESIDENT_VIEW)
        tenant = info.context.require_tenant()
        page = page_request(first, after)
        given = filter or ResidentFilterInput()
        criteria = care.ResidentFilter(
            status=given.status,
            care_level=given.care_level,
            building=given.building,
            floor=given.floor,
            room=given.room,
            bed=given.bed,
            name_contains=given.name_contains,
            id_card_number=given.id_card_number,
            phone=given.phone,
            only_ids=resident_scope(info.context.principal),
        )
        if criteria.name_contains is not None:  # once, for the page and its count
            criteria = await care.narrow_by_name(criteria)
        rows = await care.list_residents(criteria, after_id=page.after_key, limit=page.size + 1)
        today = care.institution_today()
        # The page's residents only (one more row was read to tell whether a next page exists).
        refusals = await consent_refusals(
            info,
            Action.RESIDENT_VIEW,
            (row.id for row in rows[: page.size]),
            Category.IDENTITY,
            kinds=IDENTITY_BY_CONSENT,
        )
        return connection(
            rows,
            page,
            key=lambda row: row.id,
            node=lambda row: ResidentType.from_model(row, tenant.institution_id, today, refusals.get(row.id)),
            count_total=lambda: care.count_residents(criteria),
        )

    @strawberry.field
    async def resident(self, info: YiyangInfo, id: strawberry.ID) -> ResidentType:
        institution_id, pk = decode_id("Resident", id, 2)
        require(info.context.principal, Action.RESIDENT_VIEW, institution=institution_id, resident_id=pk)
        if info.context.require_tenant().institution_id != institution_id:
            raise NotFound("Not found.")
        row = await care.get_resident(pk)
        refusals = await consent_refusals(
            info, Action.RESIDENT_VIEW, [pk], Category.IDENTITY, kinds=IDENTITY_BY_CONSENT
        )
        return ResidentType.from_model(row, institution_id, refused=refusals.get(pk))


@strawberry.type
class ResidentMutations:
    @strawberry.mutation
    async def admit_resident(self, info: YiyangInfo, input: AdmitResidentInput) -> ResidentPayload:
        require(info.context.principal, Action.RESIDENT_ADMIT)
        tenant = info.context.require_tenant()
        admission = care.Admission(
            name=input.name,
            gender=input.gender,
            birth_date=input.birth_date,
            care_level=input.care_level,
            admission_date=input.admission_date,
            placement=input.placement.to_domain() if input.placement else care.Placement(),
            id_card_number=input.id_card_number,
            phone=input.phone,
        )

        async def admit() -> care.ResidentRecord:
            row = await care.admit_resident(admission)
            # No consent can exist before the resident does: the policy alone decides, still recorded.
            audit_decision(info, Action.RESIDENT_ADMIT, row.id, (Category.IDENTITY,), None, BY_POLICY)
            return row

        return await _resident_change(info, tenant.institution_id, admit)

    @strawberry.mutation
    async def update_resident(self, info: YiyangInfo, input: UpdateResidentInput) -> ResidentPayload:
        institution_id, pk = await resident_to_change(info, input.id, Action.RESIDENT_UPDATE, field="id")
        changes = care.ResidentChanges(
            name=input.name,
            gender=input.gender,
            birth_date=input.birth_date,
            care_level=input.care_level,
            admission_date=input.admission_date,
            placement=input.placement.to_domain() if input.placement else None,
            id_card_number=input.id_card_number,
            phone=input.phone,
        )
        return await _resident_change(info, institution_id, lambda: care.update_resident(pk, changes))

    @strawberry.mutation
    async def discharge_resident(self, info: YiyangInfo, input: DischargeResidentInput) -> ResidentPayload:
        institution_id, pk = await resident_to_change(info, input.id, Action.RESIDENT_DISCHARGE, field="id")
        discharge = care.Discharge(discharged_on=input.discharged_on, reason=input.reason, note=input.note)
        return await _resident_change(info, institution_id, lambda: care.discharge_resident(pk, discharge))

    @strawberry.mutation
    async def add_family_member(
        self, info: YiyangInfo, input: AddFamilyMemberInput
    ) -> AddFamilyMemberPayload:
        institution_id, pk = await resident_to_change(info, input.resident_id, Action.FAMILY_MEMBER_ADD)
        member = care.NewFamilyMember(
            name=input.name,
            relationship=input.relationship,
            phone=input.phone,
            is_emergency_contact=input.is_emergency_contact,
        )
        try:
            row = await care.add_family_member(pk, member)
        except USER_ERROR_TYPES as error:
            return AddFamilyMemberPayload(
                family_member=None, resident=None, user_errors=user_errors(info, error)
            )
        resident = await care.get_resident(pk)
        return AddFamilyMemberPayload(
            family_member=FamilyMemberType.from_model(row, institution_id),
            resident=ResidentType.from_model(resident, institution_id),
            user_errors=[],
        )

    @strawberry.mutation(
        description="Correct a family member (name, relationship, phone, emergency contact flag), checked as "
        "when added; on any problem nothing is changed."
    )
    async def update_family_member(
        self, info: YiyangInfo, input: UpdateFamilyMemberInput
    ) -> FamilyMemberPayload:
        institution_id, resident_id, member_id = await _family_member_to_change(info, input.id)
        changes = care.FamilyMemberChanges(
            name=input.name,
            relationship=input.relationship,
            phone=input.phone,
            is_emergency_contact=input.is_emergency_contact,
        )
        try:
            row = await care.update_family_member(resident_id, member_id, changes)
        except USER_ERROR_TYPES as error:
            return FamilyMemberPayload(family_member=None, user_errors=user_errors(info, error))
        return FamilyMemberPayload(
            family_member=FamilyMemberType.from_model(row, institution_id), user_errors=[]
        )

    @strawberry.mutation(
        description="Remove a family member (deleted). The family communication log keeps its entries, "
        "without the relative; family accounts that followed the resident as this relative stop following."
    )
    async def remove_family_member(
        self, info: YiyangInfo, input: RemoveFamilyMemberInput
    ) -> RemoveFamilyMemberPayload:
        _, resident_id, member_id = await _family_member_to_change(info, input.id)
        await care.remove_family_member(resident_id, member_id)
        return RemoveFamilyMemberPayload(removed_family_member_id=input.id, user_errors=[])

"""The health part of the resident record: diagnoses, medications, allergies (care/health_record.py).

Reads go through a per-request DataLoader (`Loaders.health_record`), so a page of residents asking for
their records costs the same few queries as one resident. Every read and write asks the policy
(`health_record.view`, `health_record.edit`).
"""

from datetime import date
from decimal import Decimal

import strawberry

from care import health_record as care
from care.residents import institution_today
from compliance.policy import Action, require
from schema.context import YiyangInfo
from schema.ids import decode_id, encode_id
from schema.user_errors import USER_ERROR_TYPES, UserError, user_errors
from tenants.errors import Erased

RouteEnum = strawberry.enum(care.Route, name="MedicationRoute")
DoseUnitEnum = strawberry.enum(care.DoseUnit, name="DoseUnit")
FrequencyEnum = strawberry.enum(care.Frequency, name="MedicationFrequency")
AllergySeverityEnum = strawberry.enum(care.AllergySeverity, name="AllergySeverity")


@strawberry.type(name="Diagnosis")
class DiagnosisType:
    id: strawberry.ID
    condition: str
    icd10: str | None
    note: str | None
    diagnosed_on: date | None
    resolved_on: date | None

    @classmethod
    def of(cls, row: care.Diagnosis, institution_id: int) -> "DiagnosisType":
        return cls(
            id=strawberry.ID(encode_id("Diagnosis", institution_id, row.id)),
            condition=row.condition,
            icd10=row.icd10,
            note=row.note,
            diagnosed_on=row.diagnosed_on,
            resolved_on=row.resolved_on,
        )


@strawberry.type(name="Medication")
class MedicationType:
    id: strawberry.ID
    drug: str
    dose_amount: Decimal
    dose_unit: DoseUnitEnum
    route: RouteEnum
    frequency: FrequencyEnum
    prescriber: str | None
    started_on: date
    ended_on: date | None
    current: bool = strawberry.field(description="Taken today (started, not ended).")

    @classmethod
    def of(cls, row: care.Medication, institution_id: int, today: date) -> "MedicationType":
        return cls(
            id=strawberry.ID(encode_id("Medication", institution_id, row.id)),
            drug=row.drug,
            dose_amount=row.dose_amount,
            dose_unit=row.dose_unit,
            route=row.route,
            frequency=row.frequency,
            prescriber=row.prescriber,
            started_on=row.started_on,
            ended_on=row.ended_on,
            current=row.current_on(today),
        )


@strawberry.type(name="Allergy")
class AllergyType:
    id: strawberry.ID
    substance: str
    reaction: str | None
    severity: AllergySeverityEnum

    @classmethod
    def of(cls, row: care.Allergy, institution_id: int) -> "AllergyType":
        return cls(
            id=strawberry.ID(encode_id("Allergy", institution_id, row.id)),
            substance=row.substance,
            reaction=row.reaction,
            severity=row.severity,
        )


@strawberry.type(name="HealthRecord")
class HealthRecordType:
    diagnoses: list[DiagnosisType]
    medications: list[MedicationType]
    allergies: list[AllergyType]


async def health_record_of(info: YiyangInfo, institution_id: int, resident_id: int) -> HealthRecordType:
    """A resident's health record, for `Resident.healthRecord` (the policy asked per resident)."""
    require(
        info.context.principal, Action.HEALTH_RECORD_VIEW, institution=institution_id, resident_id=resident_id
    )
    record = await info.context.loaders.health_record.load(resident_id)
    if record.erased:
        raise Erased("The personal data of this resident was erased.")
    today = institution_today()
    return HealthRecordType(
        diagnoses=[DiagnosisType.of(row, institution_id) for row in record.diagnoses],
        medications=[MedicationType.of(row, institution_id, today) for row in record.medications],
        allergies=[AllergyType.of(row, institution_id) for row in record.allergies],
    )


def _resident_to_edit(info: YiyangInfo, resident_id: str) -> tuple[int, int]:
    institution_id, pk = decode_id("Resident", resident_id, 2, field="residentId")
    require(info.context.principal, Action.HEALTH_RECORD_EDIT, institution=institution_id, resident_id=pk)
    info.context.require_tenant()
    return institution_id, pk


def _recorder(info: YiyangInfo) -> str:
    principal = info.context.principal
    return principal.subject if principal is not None else "-"


@strawberry.input
class AddDiagnosisInput:
    resident_id: strawberry.ID
    condition: str
    icd10: str | None = None
    note: str | None = None
    diagnosed_on: date | None = None
    resolved_on: date | None = None


@strawberry.input
class AddMedicationInput:
    resident_id: strawberry.ID
    drug: str
    dose_amount: Decimal
    dose_unit: DoseUnitEnum
    route: RouteEnum
    frequency: FrequencyEnum
    started_on: date
    ended_on: date | None = None
    prescriber: str | None = None


@strawberry.input
class EndMedicationInput:
    id: strawberry.ID
    ended_on: date


@strawberry.input
class AddAllergyInput:
    resident_id: strawberry.ID
    substance: str
    severity: AllergySeverityEnum
    reaction: str | None = None


@strawberry.type
class DiagnosisPayload:
    diagnosis: DiagnosisType | None
    user_errors: list[UserError]


@strawberry.type
class MedicationPayload:
    medication: MedicationType | None
    user_errors: list[UserError]


@strawberry.type
class AllergyPayload:
    allergy: AllergyType | None
    user_errors: list[UserError]


@strawberry.type
class HealthRecordMutations:
    @strawberry.mutation(description="Record a diagnosis of a resident (medical history).")
    async def add_diagnosis(self, info: YiyangInfo, input: AddDiagnosisInput) -> DiagnosisPayload:
        institution_id, pk = _resident_to_edit(info, input.resident_id)
        new = care.NewDiagnosis(
            input.condition, input.icd10, input.note, input.diagnosed_on, input.resolved_on
        )
        try:
            row = await care.add_diagnosis(pk, new, recorded_by=_recorder(info), today=institution_today())
        except USER_ERROR_TYPES as error:
            return DiagnosisPayload(diagnosis=None, user_errors=user_errors(error, info.context.locale))
        return DiagnosisPayload(diagnosis=DiagnosisType.of(row, institution_id), user_errors=[])

    @strawberry.mutation(description="Record a medication a resident takes or took.")
    async def add_medication(self, info: YiyangInfo, input: AddMedicationInput) -> MedicationPayload:
        institution_id, pk = _resident_to_edit(info, input.resident_id)
        new = care.NewMedication(
            drug=input.drug,
            dose_amount=input.dose_amount,
            dose_unit=input.dose_unit,
            route=input.route,
            frequency=input.frequency,
            started_on=input.started_on,
            ended_on=input.ended_on,
            prescriber=input.prescriber,
        )
        try:
            row = await care.add_medication(pk, new, recorded_by=_recorder(info))
        except USER_ERROR_TYPES as error:
            return MedicationPayload(medication=None, user_errors=user_errors(error, info.context.locale))
        today = institution_today()
        return MedicationPayload(medication=MedicationType.of(row, institution_id, today), user_errors=[])

    @strawberry.mutation(description="Stop a medication (it stays in the record as past).")
    async def end_medication(self, info: YiyangInfo, input: EndMedicationInput) -> MedicationPayload:
        institution_id, medication_id = decode_id("Medication", input.id, 2)
        require(info.context.principal, Action.HEALTH_RECORD_EDIT, institution=institution_id)
        info.context.require_tenant()
        resident_id = await care.resident_of_medication(medication_id)
        require(
            info.context.principal,
            Action.HEALTH_RECORD_EDIT,
            institution=institution_id,
            resident_id=resident_id,
        )
        try:
            row = await care.end_medication(resident_id, medication_id, input.ended_on)
        except USER_ERROR_TYPES as error:
            return MedicationPayload(medication=None, user_errors=user_errors(error, info.context.locale))
        today = institution_today()
        return MedicationPayload(medication=MedicationType.of(row, institution_id, today), user_errors=[])

    @strawberry.mutation(description="Record an allergy of a resident.")
    async def add_allergy(self, info: YiyangInfo, input: AddAllergyInput) -> AllergyPayload:
        institution_id, pk = _resident_to_edit(info, input.resident_id)
        new = care.NewAllergy(input.substance, input.severity, input.reaction)
        try:
            row = await care.add_allergy(pk, new, recorded_by=_recorder(info))
        except USER_ERROR_TYPES as error:
            return AllergyPayload(allergy=None, user_errors=user_errors(error, info.context.locale))
        return AllergyPayload(allergy=AllergyType.of(row, institution_id), user_errors=[])

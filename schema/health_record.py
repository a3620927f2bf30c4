"""The health part of the resident record: diagnoses, medications, allergies (care/health_record.py).

Reads go through a per-request DataLoader (`Loaders.health_record`), so a page of residents asking for
their records costs the same few queries as one resident. Every read and write asks the policy
(`health_record.view`, `health_record.edit`).

Corrections: `updateDiagnosis`, `updateAllergy` change an entry in place; `removeDiagnosis`,
`removeMedication`, `removeAllergy` take an entry recorded in error out of the record (it is kept, marked
with when and by whom, and no longer read). Ids of another institution, or of an entry already removed,
are NOT_FOUND; an erased resident's entries are GONE.
"""

from datetime import date
from decimal import Decimal

import strawberry

from care import health_record as care
from care.residents import institution_today
from compliance.consent import Category
from compliance.policy import Action
from schema.context import YiyangInfo
from schema.ids import encode_id
from schema.resident_access import part_to_change, recorder, require_resident_access, resident_to_change
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
    await require_resident_access(
        info,
        Action.HEALTH_RECORD_VIEW,
        institution_id,
        resident_id,
        (Category.MEDICAL_HISTORY, Category.MEDICATIONS),
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


# What an entry is, as a category of data (health_record.edit alone names medical history).
_CATEGORY_OF_ENTRY = {
    care.Entry.DIAGNOSIS: Category.MEDICAL_HISTORY,
    care.Entry.ALLERGY: Category.MEDICAL_HISTORY,
    care.Entry.MEDICATION: Category.MEDICATIONS,
}


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


@strawberry.input(
    description="Fields left out keep their value. An empty icd10 or note removes it; a null date removes "
    "it (e.g. resolvedOn set by mistake)."
)
class UpdateDiagnosisInput:
    id: strawberry.ID
    condition: str | None = None
    icd10: str | None = None
    note: str | None = None
    diagnosed_on: date | None = strawberry.UNSET
    resolved_on: date | None = strawberry.UNSET


@strawberry.input(description="Fields left out (or null) keep their value; an empty reaction removes it.")
class UpdateAllergyInput:
    id: strawberry.ID
    substance: str | None = None
    reaction: str | None = None
    severity: AllergySeverityEnum | None = None


@strawberry.input
class RemoveDiagnosisInput:
    id: strawberry.ID


@strawberry.input
class RemoveMedicationInput:
    id: strawberry.ID


@strawberry.input
class RemoveAllergyInput:
    id: strawberry.ID


@strawberry.type
class RemoveHealthRecordEntryPayload:
    removed_id: strawberry.ID | None
    user_errors: list[UserError]


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


async def _entry_to_edit(
    info: YiyangInfo, entry: care.Entry, type_name: str, entry_id: str
) -> tuple[int, int, int]:
    """(institution id, resident pk, entry pk) of an entry of the acting institution the caller may edit;
    NOT_FOUND for another institution's (or a removed) entry, FORBIDDEN for a role that may not edit."""
    return await part_to_change(
        info,
        type_name,
        entry_id,
        Action.HEALTH_RECORD_EDIT,
        lambda pk: care.resident_of_entry(entry, pk),
        categories=(_CATEGORY_OF_ENTRY[entry],),
    )


@strawberry.type
class HealthRecordMutations:
    @strawberry.mutation(description="Record a diagnosis of a resident (medical history).")
    async def add_diagnosis(self, info: YiyangInfo, input: AddDiagnosisInput) -> DiagnosisPayload:
        institution_id, pk = await resident_to_change(info, input.resident_id, Action.HEALTH_RECORD_EDIT)
        new = care.NewDiagnosis(
            input.condition, input.icd10, input.note, input.diagnosed_on, input.resolved_on
        )
        try:
            row = await care.add_diagnosis(pk, new, recorded_by=recorder(info), today=institution_today())
        except USER_ERROR_TYPES as error:
            return DiagnosisPayload(diagnosis=None, user_errors=user_errors(info, error))
        return DiagnosisPayload(diagnosis=DiagnosisType.of(row, institution_id), user_errors=[])

    @strawberry.mutation(description="Record a medication a resident takes or took.")
    async def add_medication(self, info: YiyangInfo, input: AddMedicationInput) -> MedicationPayload:
        institution_id, pk = await resident_to_change(
            info, input.resident_id, Action.HEALTH_RECORD_EDIT, categories=(Category.MEDICATIONS,)
        )
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
            row = await care.add_medication(pk, new, recorded_by=recorder(info))
        except USER_ERROR_TYPES as error:
            return MedicationPayload(medication=None, user_errors=user_errors(info, error))
        today = institution_today()
        return MedicationPayload(medication=MedicationType.of(row, institution_id, today), user_errors=[])

    @strawberry.mutation(description="Stop a medication (it stays in the record as past).")
    async def end_medication(self, info: YiyangInfo, input: EndMedicationInput) -> MedicationPayload:
        institution_id, resident_id, medication_id = await _entry_to_edit(
            info, care.Entry.MEDICATION, "Medication", input.id
        )
        try:
            row = await care.end_medication(
                resident_id, medication_id, input.ended_on, changed_by=recorder(info)
            )
        except USER_ERROR_TYPES as error:
            return MedicationPayload(medication=None, user_errors=user_errors(info, error))
        today = institution_today()
        return MedicationPayload(medication=MedicationType.of(row, institution_id, today), user_errors=[])

    @strawberry.mutation(description="Record an allergy of a resident.")
    async def add_allergy(self, info: YiyangInfo, input: AddAllergyInput) -> AllergyPayload:
        institution_id, pk = await resident_to_change(info, input.resident_id, Action.HEALTH_RECORD_EDIT)
        new = care.NewAllergy(input.substance, input.severity, input.reaction)
        try:
            row = await care.add_allergy(pk, new, recorded_by=recorder(info))
        except USER_ERROR_TYPES as error:
            return AllergyPayload(allergy=None, user_errors=user_errors(info, error))
        return AllergyPayload(allergy=AllergyType.of(row, institution_id), user_errors=[])

    @strawberry.mutation(
        description="Correct a diagnosis (e.g. mark it resolved). Checked as a whole like a new one; on "
        "any problem nothing is changed and every problem is a user error."
    )
    async def update_diagnosis(self, info: YiyangInfo, input: UpdateDiagnosisInput) -> DiagnosisPayload:
        institution_id, resident_id, diagnosis_id = await _entry_to_edit(
            info, care.Entry.DIAGNOSIS, "Diagnosis", input.id
        )
        changes = care.DiagnosisChanges(
            condition=input.condition,
            icd10=input.icd10,
            note=input.note,
            diagnosed_on=care.KEEP if input.diagnosed_on is strawberry.UNSET else input.diagnosed_on,
            resolved_on=care.KEEP if input.resolved_on is strawberry.UNSET else input.resolved_on,
        )
        try:
            row = await care.update_diagnosis(
                resident_id,
                diagnosis_id,
                changes,
                changed_by=recorder(info),
                today=institution_today(),
            )
        except USER_ERROR_TYPES as error:
            return DiagnosisPayload(diagnosis=None, user_errors=user_errors(info, error))
        return DiagnosisPayload(diagnosis=DiagnosisType.of(row, institution_id), user_errors=[])

    @strawberry.mutation(description="Correct an allergy (substance, reaction, severity).")
    async def update_allergy(self, info: YiyangInfo, input: UpdateAllergyInput) -> AllergyPayload:
        institution_id, resident_id, allergy_id = await _entry_to_edit(
            info, care.Entry.ALLERGY, "Allergy", input.id
        )
        changes = care.AllergyChanges(input.substance, input.reaction, input.severity)
        try:
            row = await care.update_allergy(resident_id, allergy_id, changes, changed_by=recorder(info))
        except USER_ERROR_TYPES as error:
            return AllergyPayload(allergy=None, user_errors=user_errors(info, error))
        return AllergyPayload(allergy=AllergyType.of(row, institution_id), user_errors=[])

    @strawberry.mutation(
        description="Take a diagnosis recorded in error out of the record (kept, marked with when and by "
        "whom, no longer read). A diagnosis that was right but is over is resolved instead (updateDiagnosis)."
    )
    async def remove_diagnosis(
        self, info: YiyangInfo, input: RemoveDiagnosisInput
    ) -> RemoveHealthRecordEntryPayload:
        return await _remove(info, care.Entry.DIAGNOSIS, "Diagnosis", input.id)

    @strawberry.mutation(
        description="Take a medication recorded in error out of the record (kept, marked, no longer read). "
        "A medication that was taken and stopped is ended instead (endMedication)."
    )
    async def remove_medication(
        self, info: YiyangInfo, input: RemoveMedicationInput
    ) -> RemoveHealthRecordEntryPayload:
        return await _remove(info, care.Entry.MEDICATION, "Medication", input.id)

    @strawberry.mutation(
        description="Take an allergy recorded in error out of the record (kept, marked, no longer read)."
    )
    async def remove_allergy(
        self, info: YiyangInfo, input: RemoveAllergyInput
    ) -> RemoveHealthRecordEntryPayload:
        return await _remove(info, care.Entry.ALLERGY, "Allergy", input.id)


async def _remove(
    info: YiyangInfo, entry: care.Entry, type_name: str, entry_id: strawberry.ID
) -> RemoveHealthRecordEntryPayload:
    _, resident_id, pk = await _entry_to_edit(info, entry, type_name, entry_id)
    await care.mark_entered_in_error(entry, resident_id, pk, marked_by=recorder(info))
    return RemoveHealthRecordEntryPayload(removed_id=entry_id, user_errors=[])

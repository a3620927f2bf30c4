"""Data-subject requests in GraphQL: `exportResidentData` (everything held about a resident, one JSON
document) and `eraseResident` (crypto-shredding; care/data_requests.py). Institution admins only: both
act on the whole record and on its existence."""

from datetime import datetime

import strawberry
from strawberry.scalars import JSON

from care import data_requests as care
from compliance.consent import Category
from compliance.policy import Action
from schema.context import YiyangInfo
from schema.ids import encode_id
from schema.resident_access import recorder, resident_to_change
from schema.user_errors import USER_ERROR_TYPES, UserError, user_errors

ErasureReasonEnum = strawberry.enum(care.ErasureReason, name="ErasureReason")


@strawberry.input
class ExportResidentDataInput:
    resident_id: strawberry.ID


@strawberry.type
class ExportResidentDataPayload:
    export: JSON | None = strawberry.field(
        description="Every part of the record, files base64-encoded (format yiyang.resident-export/1)."
    )
    user_errors: list[UserError]


@strawberry.input
class EraseResidentInput:
    resident_id: strawberry.ID
    reason: ErasureReasonEnum
    reference: str | None = strawberry.field(
        default=None, description="The request's number in the institution's register; nothing personal."
    )


@strawberry.type(name="ResidentErasure")
class ResidentErasureType:
    resident_id: strawberry.ID
    erased_at: datetime
    reason: ErasureReasonEnum
    reference: str | None


@strawberry.type
class EraseResidentPayload:
    erasure: ResidentErasureType | None
    user_errors: list[UserError]


# Every category the record holds: an export reads them all, an erasure makes them all unreadable.
_ALL_CATEGORIES = tuple(category for category in Category if category is not Category.BILLING)


@strawberry.type
class DataRequestMutations:
    @strawberry.mutation(description="Everything held about a resident, machine-readable (PIPL art. 45).")
    async def export_resident_data(
        self, info: YiyangInfo, input: ExportResidentDataInput
    ) -> ExportResidentDataPayload:
        _, pk = await resident_to_change(
            info, input.resident_id, Action.DATA_SUBJECT_EXPORT, categories=_ALL_CATEGORIES
        )
        document = await care.export_resident(pk)
        return ExportResidentDataPayload(export=document, user_errors=[])

    @strawberry.mutation(
        description="Erase a resident (PIPL art. 47): their data key is destroyed, every sealed field of the "
        "record becomes unreadable at once, and a tombstone records who, when and why."
    )
    async def erase_resident(self, info: YiyangInfo, input: EraseResidentInput) -> EraseResidentPayload:
        institution_id, pk = await resident_to_change(
            info, input.resident_id, Action.DATA_SUBJECT_ERASE, categories=_ALL_CATEGORIES
        )
        try:
            done = await care.erase_resident(
                pk, reason=input.reason, reference=input.reference, erased_by=recorder(info)
            )
        except USER_ERROR_TYPES as error:
            return EraseResidentPayload(erasure=None, user_errors=user_errors(info, error))
        erasure = ResidentErasureType(
            resident_id=strawberry.ID(encode_id("Resident", institution_id, done.resident_id)),
            erased_at=done.erased_at,
            reason=done.reason,
            reference=done.reference,
        )
        return EraseResidentPayload(erasure=erasure, user_errors=[])

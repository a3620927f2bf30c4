"""Emergency contacts through GraphQL (care/emergency_contacts.py): `Resident.emergencyContacts`, the call
list in order (flagged family members, then the other contacts by priority), and the mutations that keep
the contacts who are not family.

Reads go through the per-request DataLoaders `Loaders.family_members` and `Loaders.emergency_contacts`;
every read and write asks the policy (`emergency_contacts.view`, `emergency_contacts.edit`).
"""

from typing import TYPE_CHECKING, Annotated

import strawberry

from care import emergency_contacts as care
from care.residents import FamilyMemberRecord
from compliance.consent import Category
from compliance.policy import Action
from schema.context import YiyangInfo
from schema.ids import encode_id
from schema.resident_access import (
    ResidentNode,
    part_to_change,
    recorder,
    require_resident_access,
    resident_to_change,
)
from schema.user_errors import USER_ERROR_TYPES, UserError, user_errors

if TYPE_CHECKING:
    from schema.residents import FamilyMemberType


@strawberry.type(name="EmergencyContact")
class EmergencyContactType:
    """A contact who is not a family member: a neighbour, a friend, a guardian from a public office, the
    family doctor."""

    id: strawberry.ID
    name: str
    role: str = strawberry.field(description="Relationship or role in words, e.g. 邻居, 家庭医生.")
    phone: str
    priority: int = strawberry.field(description="1 is called first (after the flagged family members).")
    note: str | None

    @classmethod
    def of(cls, row: care.EmergencyContact, institution_id: int) -> "EmergencyContactType":
        return cls(
            id=strawberry.ID(encode_id("EmergencyContact", institution_id, row.id)),
            name=row.name,
            role=row.role,
            phone=row.phone,
            priority=row.priority,
            note=row.note,
        )


@strawberry.type(name="EmergencyContactEntry")
class EmergencyContactEntryType:
    """One line of the call list: who and which number; `familyMember` or `contact` says more."""

    position: int = strawberry.field(description="1 is called first.")
    name: str
    phone: str
    family_member: Annotated["FamilyMemberType", strawberry.lazy("schema.residents")] | None
    contact: EmergencyContactType | None


def _entry(position: int, row: care.EmergencyContactEntry, institution_id: int) -> EmergencyContactEntryType:
    if isinstance(row, FamilyMemberRecord):
        from schema.residents import FamilyMemberType

        return EmergencyContactEntryType(
            position=position,
            name=row.name or "",
            phone=row.phone or "",
            family_member=FamilyMemberType.from_model(row, institution_id),
            contact=None,
        )
    return EmergencyContactEntryType(
        position=position,
        name=row.name,
        phone=row.phone,
        family_member=None,
        contact=EmergencyContactType.of(row, institution_id),
    )


async def resident_emergency_contacts(
    root: ResidentNode, info: YiyangInfo
) -> list[EmergencyContactEntryType] | None:
    """Who to call, in order: the family members flagged as emergency contacts (in the order they were
    registered), then the other contacts by priority. Null with an error of code GONE when the
    resident's personal data was erased."""
    await require_resident_access(
        info, Action.EMERGENCY_CONTACTS_VIEW, root.institution_id, root.pk, (Category.DAILY_CARE,)
    )
    loaders = info.context.loaders
    members = await loaders.family_members.load(root.pk)
    contacts = await loaders.emergency_contacts.load(root.pk)
    return [
        _entry(position, row, root.institution_id)
        for position, row in enumerate(care.call_list(members, contacts), start=1)
    ]


@strawberry.input
class AddEmergencyContactInput:
    resident_id: strawberry.ID
    name: str
    role: str
    phone: str
    priority: int | None = strawberry.field(
        default=None, description="1 to 99; left out: after the resident's other contacts."
    )
    note: str | None = None


@strawberry.input(description="Fields left out (or null) keep their value; an empty note removes it.")
class UpdateEmergencyContactInput:
    id: strawberry.ID
    name: str | None = None
    role: str | None = None
    phone: str | None = None
    priority: int | None = None
    note: str | None = None


@strawberry.input
class RemoveEmergencyContactInput:
    id: strawberry.ID


@strawberry.type
class EmergencyContactPayload:
    emergency_contact: EmergencyContactType | None
    user_errors: list[UserError]


@strawberry.type
class RemoveEmergencyContactPayload:
    removed_emergency_contact_id: strawberry.ID | None
    user_errors: list[UserError]


async def _contact_to_change(info: YiyangInfo, contact_id: str) -> tuple[int, int, int]:
    """(institution id, contact primary key, its resident) of a contact id of the acting institution that
    the principal may change (FORBIDDEN), else NOT_FOUND."""
    institution_id, resident_id, pk = await part_to_change(
        info, "EmergencyContact", contact_id, Action.EMERGENCY_CONTACTS_EDIT, care.resident_of_contact
    )
    return institution_id, pk, resident_id


@strawberry.type
class EmergencyContactMutations:
    @strawberry.mutation(description="Add an emergency contact who is not a family member.")
    async def add_emergency_contact(
        self, info: YiyangInfo, input: AddEmergencyContactInput
    ) -> EmergencyContactPayload:
        institution_id, pk = await resident_to_change(info, input.resident_id, Action.EMERGENCY_CONTACTS_EDIT)
        new = care.NewEmergencyContact(input.name, input.role, input.phone, input.priority, input.note)
        try:
            row = await care.add_contact(pk, new, recorded_by=recorder(info))
        except USER_ERROR_TYPES as error:
            return EmergencyContactPayload(emergency_contact=None, user_errors=user_errors(info, error))
        return EmergencyContactPayload(
            emergency_contact=EmergencyContactType.of(row, institution_id), user_errors=[]
        )

    @strawberry.mutation(description="Change an emergency contact who is not a family member.")
    async def update_emergency_contact(
        self, info: YiyangInfo, input: UpdateEmergencyContactInput
    ) -> EmergencyContactPayload:
        institution_id, contact_id, resident_id = await _contact_to_change(info, input.id)
        changes = care.EmergencyContactChanges(
            input.name, input.role, input.phone, input.priority, input.note
        )
        try:
            row = await care.update_contact(resident_id, contact_id, changes)
        except USER_ERROR_TYPES as error:
            return EmergencyContactPayload(emergency_contact=None, user_errors=user_errors(info, error))
        return EmergencyContactPayload(
            emergency_contact=EmergencyContactType.of(row, institution_id), user_errors=[]
        )

    @strawberry.mutation(
        description="Remove an emergency contact who is not a family member (deleted: not kept as history)."
    )
    async def remove_emergency_contact(
        self, info: YiyangInfo, input: RemoveEmergencyContactInput
    ) -> RemoveEmergencyContactPayload:
        _, contact_id, resident_id = await _contact_to_change(info, input.id)
        await care.remove_contact(resident_id, contact_id)
        return RemoveEmergencyContactPayload(removed_emergency_contact_id=input.id, user_errors=[])

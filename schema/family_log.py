"""The family communication log through GraphQL (care/family_log.py): `Resident.familyCommunications`, a
connection newest first, and the mutation `logFamilyCommunication`.

The first page of many residents goes through the per-request DataLoader `Loaders.family_communications`
(one query, whatever the number of residents); later pages (`after`) read one resident. Every read and
write asks the policy (`family_log.view`, `family_log.record`).
"""

from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from care import family_log as care
from compliance.consent import Category
from compliance.policy import Action, require
from schema.context import YiyangInfo
from schema.ids import decode_id, encode_id
from schema.pagination import Connection, connection, page_request
from schema.resident_access import (
    ResidentNode,
    recorder,
    require_resident_access,
    resident_to_change,
)
from schema.user_errors import USER_ERROR_TYPES, UserError, user_errors
from tenants.errors import NotFound

if TYPE_CHECKING:
    from schema.residents import FamilyMemberType

ChannelEnum = strawberry.enum(care.Channel, name="FamilyCommunicationChannel")
DirectionEnum = strawberry.enum(care.Direction, name="FamilyCommunicationDirection")


@strawberry.type(name="FamilyCommunication")
class FamilyCommunicationType:
    id: strawberry.ID
    occurred_at: datetime
    channel: ChannelEnum
    direction: DirectionEnum
    summary: str
    follow_up_needed: bool
    follow_up_due: date | None
    recorded_by: str = strawberry.field(description="The staff account (subject) who recorded it.")
    recorded_at: datetime
    resident_pk: strawberry.Private[int]
    family_member_pk: strawberry.Private[int | None]
    institution_id: strawberry.Private[int]

    @classmethod
    def of(cls, row: care.FamilyCommunication, institution_id: int) -> "FamilyCommunicationType":
        return cls(
            id=strawberry.ID(encode_id("FamilyCommunication", institution_id, row.id)),
            occurred_at=row.occurred_at,
            channel=row.channel,
            direction=row.direction,
            summary=row.summary,
            follow_up_needed=row.follow_up_needed,
            follow_up_due=row.follow_up_due,
            recorded_by=row.recorded_by,
            recorded_at=row.recorded_at,
            resident_pk=row.resident_id,
            family_member_pk=row.family_member_id,
            institution_id=institution_id,
        )

    @strawberry.field(description="The family member spoken with, when one was named.")
    async def family_member(
        self, info: YiyangInfo
    ) -> Annotated["FamilyMemberType", strawberry.lazy("schema.residents")] | None:
        if self.family_member_pk is None:
            return None
        from schema.residents import FamilyMemberType

        # A relative's name and phone: identity data, decided and recorded as the resident's family list.
        await require_resident_access(
            info, Action.FAMILY_MEMBER_VIEW, self.institution_id, self.resident_pk, (Category.IDENTITY,)
        )
        members = await info.context.loaders.family_members.load(self.resident_pk)
        for member in members:
            if member.id == self.family_member_pk:
                return FamilyMemberType.from_model(member, self.institution_id)
        return None


async def resident_family_communications(
    root: ResidentNode, info: YiyangInfo, first: int | None = None, after: str | None = None
) -> Connection[FamilyCommunicationType] | None:
    """The family communication log, newest first. Null with an error of code GONE when the resident's
    personal data was erased."""
    await require_resident_access(
        info, Action.FAMILY_LOG_VIEW, root.institution_id, root.pk, (Category.DAILY_CARE,)
    )
    page = page_request(first, after)
    if page.after_key is None:
        loaded = await info.context.loaders.family_communications.load((root.pk, page.size + 1))
        rows, total = loaded.entries, loaded.total

        async def count_total() -> int:
            return total

    else:
        rows = await care.communications_page(root.pk, after_id=page.after_key, limit=page.size + 1)
        pk = root.pk

        async def count_total() -> int:
            return await care.count_communications(pk)

    return connection(
        rows,
        page,
        key=lambda row: row.id,
        node=lambda row: FamilyCommunicationType.of(row, root.institution_id),
        count_total=count_total,
    )


@strawberry.input
class LogFamilyCommunicationInput:
    resident_id: strawberry.ID
    occurred_at: datetime = strawberry.field(
        description="When it happened; without a time zone, the institution's local time."
    )
    channel: ChannelEnum
    direction: DirectionEnum
    summary: str = strawberry.field(description="What was said or agreed, at most 2000 characters.")
    family_member_id: strawberry.ID | None = strawberry.field(
        default=None, description="The family member of this resident spoken with."
    )
    follow_up_needed: bool = False
    follow_up_due: date | None = strawberry.field(default=None, description="Needs followUpNeeded.")


@strawberry.type
class FamilyCommunicationPayload:
    family_communication: FamilyCommunicationType | None
    user_errors: list[UserError]


@strawberry.type
class FamilyLogMutations:
    @strawberry.mutation(description="Record a communication with a resident's family in its log.")
    async def log_family_communication(
        self, info: YiyangInfo, input: LogFamilyCommunicationInput
    ) -> FamilyCommunicationPayload:
        member_pk: int | None = None
        if input.family_member_id is not None:  # another institution's family member: NOT_FOUND first
            member_institution, member_pk = decode_id(
                "FamilyMember", input.family_member_id, 2, field="familyMemberId"
            )
            require(info.context.principal, Action.FAMILY_LOG_RECORD, institution=member_institution)
            if info.context.require_tenant().institution_id != member_institution:
                raise NotFound("Not found.", field="familyMemberId")
        institution_id, pk = await resident_to_change(info, input.resident_id, Action.FAMILY_LOG_RECORD)
        entry = care.NewFamilyCommunication(
            occurred_at=input.occurred_at,
            channel=care.Channel(input.channel),
            direction=care.Direction(input.direction),
            summary=input.summary,
            family_member_id=member_pk,
            follow_up_needed=input.follow_up_needed,
            follow_up_due=input.follow_up_due,
        )
        try:
            row = await care.record_family_communication(pk, entry, recorded_by=recorder(info))
        except USER_ERROR_TYPES as error:
            return FamilyCommunicationPayload(family_communication=None, user_errors=user_errors(info, error))
        return FamilyCommunicationPayload(
            family_communication=FamilyCommunicationType.of(row, institution_id), user_errors=[]
        )

"""The caller's notifications through GraphQL (care/notifications.py): `myNotifications`, a connection
newest first, `unreadNotificationCount`, and the mutation `markNotificationsRead`.

Every field asks the policy (`notification.inbox`) and reads only the caller's own rows: someone else's
notification is NOT_FOUND, like an object of another institution. A notification names whom it concerns
by id; its `resident` is read through the decision point, as any other read of a resident.
"""

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from care import notifications as care
from care import residents as resident_records
from compliance.consent import Category
from compliance.policy import Action, require
from compliance.principals import Principal
from schema.context import YiyangInfo
from schema.i18n import translate
from schema.ids import decode_id, encode_id
from schema.pagination import Connection, connection, page_request
from schema.resident_access import require_resident_access
from schema.user_errors import UserError, user_errors
from tenants.errors import InvalidInput, NotFound

if TYPE_CHECKING:
    from schema.residents import ResidentType

TOO_MANY = "Mark at most {max} notifications at a time."


@strawberry.type(name="Notification")
class NotificationType:
    id: strawberry.ID
    kind: str = strawberry.field(description="What happened, e.g. task.overdue, vital.out_of_range.")
    message: str = strawberry.field(description="What happened, in the caller's language; never a value.")
    subject_type: str | None = strawberry.field(description="The kind of object it is about, e.g. CareTask.")
    subject_id: strawberry.ID | None = strawberry.field(description="The global id of that object.")
    created_at: datetime = strawberry.field(description="When it was delivered to the inbox.")
    read_at: datetime | None
    resident_pk: strawberry.Private[int | None]
    institution_id: strawberry.Private[int]

    @classmethod
    def of(cls, entry: care.InboxEntry, institution_id: int, locale: str) -> "NotificationType":
        subject_id = (
            strawberry.ID(encode_id(entry.subject_type, institution_id, entry.subject_id))
            if entry.subject_type is not None and entry.subject_id is not None
            else None
        )
        return cls(
            id=strawberry.ID(encode_id("Notification", institution_id, entry.id)),
            kind=entry.kind,
            message=translate(entry.message, locale, entry.params),
            subject_type=entry.subject_type,
            subject_id=subject_id,
            created_at=entry.created_at,
            read_at=entry.read_at,
            resident_pk=entry.resident_id,
            institution_id=institution_id,
        )

    @strawberry.field(description="The resident it concerns, if any, as the caller may see them.")
    async def resident(
        self, info: YiyangInfo
    ) -> Annotated["ResidentType", strawberry.lazy("schema.residents")] | None:
        if self.resident_pk is None:
            return None
        from schema.residents import ResidentType

        await require_resident_access(
            info, Action.RESIDENT_VIEW, self.institution_id, self.resident_pk, (Category.IDENTITY,)
        )
        row = await resident_records.get_resident(self.resident_pk)
        return ResidentType.from_model(row, self.institution_id)


def _inbox_owner(info: YiyangInfo) -> tuple[int, int]:
    """(institution id, account id) of the caller's inbox in the acting institution."""
    principal: Principal = require(info.context.principal, Action.NOTIFICATION_INBOX)
    tenant = info.context.require_tenant()
    account_id = principal.account_id
    if account_id is None:  # the policy lets only accounts through; kept explicit for the type
        raise NotFound("Not found.")
    return tenant.institution_id, account_id


@strawberry.type
class NotificationQueries:
    @strawberry.field(description="The caller's notifications in the acting institution, newest first.")
    async def my_notifications(
        self,
        info: YiyangInfo,
        unread_only: bool = False,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[NotificationType]:
        institution_id, account_id = _inbox_owner(info)
        page = page_request(first, after)
        rows = await care.inbox_page(
            account_id, unread_only=unread_only, after_id=page.after_key, limit=page.size + 1
        )
        locale = info.context.locale

        async def count_total() -> int:
            return await care.count_inbox(account_id, unread_only=unread_only)

        return connection(
            rows,
            page,
            key=lambda row: row.id,
            node=lambda row: NotificationType.of(row, institution_id, locale),
            count_total=count_total,
        )

    @strawberry.field(description="How many of the caller's notifications are unread.")
    async def unread_notification_count(self, info: YiyangInfo) -> int:
        _, account_id = _inbox_owner(info)
        return await care.count_inbox(account_id, unread_only=True)


@strawberry.input
class MarkNotificationsReadInput:
    ids: list[strawberry.ID] = strawberry.field(description="At most 100 of the caller's notifications.")


@strawberry.type
class MarkNotificationsReadPayload:
    notifications: list[NotificationType]
    user_errors: list[UserError]


@strawberry.type
class NotificationMutations:
    @strawberry.mutation(description="Mark the caller's notifications read (read ones keep their time).")
    async def mark_notifications_read(
        self, info: YiyangInfo, input: MarkNotificationsReadInput
    ) -> MarkNotificationsReadPayload:
        pks: list[int] = []
        for given in input.ids:  # another institution's notification: NOT_FOUND before anything else
            institution_id, pk = decode_id("Notification", given, 2, field="ids")
            require(info.context.principal, Action.NOTIFICATION_INBOX, institution=institution_id)
            if info.context.require_tenant().institution_id != institution_id:
                raise NotFound("Not found.", field="ids")
            pks.append(pk)
        institution_id, account_id = _inbox_owner(info)
        if len(set(pks)) > care.MAX_MARKED:
            problem = InvalidInput(TOO_MANY, field="ids", max=care.MAX_MARKED)
            return MarkNotificationsReadPayload(notifications=[], user_errors=user_errors(info, problem))
        marked = await care.mark_read(account_id, pks, datetime.now(UTC))
        if marked is None:  # someone else's: as if it did not exist
            raise NotFound("Not found.", field="ids")
        locale = info.context.locale
        return MarkNotificationsReadPayload(
            notifications=[NotificationType.of(entry, institution_id, locale) for entry in marked],
            user_errors=[],
        )

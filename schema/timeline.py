"""The service timeline: `Resident.timeline` (a connection), `Resident.latestServices` (through a
DataLoader, for a dashboard of many residents) and the mutation `recordService`.

`ServiceRecord` is an interface with one object type per kind (CareRecord, MealRecord, ActivityRecord,
VisitorRecord, OutingRecord, ObservationRecord). `recordService` takes the common fields once and the
details as a oneOf input (`ServiceDetailsInput`: exactly one of care, meal, activity, visitor, outing,
observation), so one mutation, one payload and one policy question serve every kind, and a client cannot
send the details of two kinds at once (GraphQL validation refuses it before anything runs).

Rules and storage: care/timeline.py. Policy: service_record.view; service_record.create (care, meals,
observations) or service_record.create_social (activities, visitors, outings).
"""

import base64
import binascii
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Annotated

import strawberry

from care import timeline as domain
from compliance.consent import Category
from compliance.policy import Action, require
from schema.context import YiyangInfo
from schema.ids import decode_id, encode_id
from schema.pagination import Connection, Edge, PageInfo, page_request
from schema.resident_access import ResidentNode, require_resident_access, resident_to_change
from schema.user_errors import USER_ERROR_TYPES, UserError, user_errors
from tenants.errors import InvalidInput, NotFound

ServiceRecordKind = strawberry.enum(domain.ServiceKind, name="ServiceRecordKind")
CareItemEnum = strawberry.enum(domain.CareItem, name="CareItem")
MealTypeEnum = strawberry.enum(domain.MealType, name="MealType")
PortionEnum = strawberry.enum(domain.Portion, name="PortionEaten")
ParticipationEnum = strawberry.enum(domain.Participation, name="Participation")
RatingEnum = strawberry.enum(domain.Rating, name="ObservationRating")
UrinationEnum = strawberry.enum(domain.Urination, name="Urination")
MoodEnum = strawberry.enum(domain.Mood, name="Mood")

# Which action records which kind: the butler records visitors, activities and outings only.
ACTION_OF_KIND: dict[domain.ServiceKind, Action] = {
    domain.ServiceKind.CARE: Action.SERVICE_RECORD_CREATE,
    domain.ServiceKind.MEAL: Action.SERVICE_RECORD_CREATE,
    domain.ServiceKind.OBSERVATION: Action.SERVICE_RECORD_CREATE,
    domain.ServiceKind.ACTIVITY: Action.SERVICE_RECORD_CREATE_SOCIAL,
    domain.ServiceKind.VISITOR: Action.SERVICE_RECORD_CREATE_SOCIAL,
    domain.ServiceKind.OUTING: Action.SERVICE_RECORD_CREATE_SOCIAL,
}


# Output types ------------------------------------------------------------------------------------


@strawberry.interface(
    name="ServiceRecord", description="One entry of a resident's service timeline; one type per kind."
)
class ServiceRecordType:
    id: strawberry.ID
    kind: ServiceRecordKind
    occurred_at: datetime
    recorded_by: str = strawberry.field(description="The recording principal: account:<id>.")
    recorded_at: datetime


@strawberry.type(name="CareRecord")
class CareRecordType(ServiceRecordType):
    item: CareItemEnum
    duration_minutes: int | None
    note: str | None


@strawberry.type(name="MealRecord")
class MealRecordType(ServiceRecordType):
    meal: MealTypeEnum
    portion: PortionEnum
    fluid_intake_ml: int | None
    note: str | None


@strawberry.type(name="ActivityRecord")
class ActivityRecordType(ServiceRecordType):
    name: str
    participation: ParticipationEnum
    ended_at: datetime | None
    note: str | None


@strawberry.type(name="VisitorRecord")
class VisitorRecordType(ServiceRecordType):
    visitor_name: str
    relationship: str | None
    left_at: datetime | None
    note: str | None


@strawberry.type(name="OutingRecord")
class OutingRecordType(ServiceRecordType):
    destination: str
    companion: str | None
    expected_back: datetime | None
    returned_at: datetime | None
    note: str | None


@strawberry.type(name="DietObservation")
class DietType:
    appetite: RatingEnum


@strawberry.type(name="SleepObservation")
class SleepType:
    hours: float
    quality: RatingEnum | None
    night_wakings: int | None


@strawberry.type(name="ExcretionObservation")
class ExcretionType:
    bowel_movements: int
    urination: UrinationEnum
    stool_note: str | None


@strawberry.type(name="ObservationRecord", description="The daily observation sheet.")
class ObservationRecordType(ServiceRecordType):
    diet: DietType | None
    sleep: SleepType | None
    excretion: ExcretionType | None
    mood: MoodEnum | None
    note: str | None


SERVICE_RECORD_TYPES = (
    CareRecordType,
    MealRecordType,
    ActivityRecordType,
    VisitorRecordType,
    OutingRecordType,
    ObservationRecordType,
)


def record_node(record: domain.ServiceRecord, institution_id: int) -> ServiceRecordType:
    common = {
        "id": strawberry.ID(encode_id("ServiceRecord", institution_id, record.id)),
        "kind": record.kind,
        "occurred_at": record.occurred_at,
        "recorded_by": record.recorded_by,
        "recorded_at": record.recorded_at,
    }
    details = record.details
    match details:
        case domain.CareDetails():
            return CareRecordType(
                **common, item=details.item, duration_minutes=details.duration_minutes, note=details.note
            )
        case domain.MealDetails():
            return MealRecordType(
                **common,
                meal=details.meal,
                portion=details.portion,
                fluid_intake_ml=details.fluid_intake_ml,
                note=details.note,
            )
        case domain.ActivityDetails():
            return ActivityRecordType(
                **common,
                name=details.name,
                participation=details.participation,
                ended_at=details.ended_at,
                note=details.note,
            )
        case domain.VisitorDetails():
            return VisitorRecordType(
                **common,
                visitor_name=details.visitor_name,
                relationship=details.relationship,
                left_at=details.left_at,
                note=details.note,
            )
        case domain.OutingDetails():
            return OutingRecordType(
                **common,
                destination=details.destination,
                companion=details.companion,
                expected_back=details.expected_back,
                returned_at=details.returned_at,
                note=details.note,
            )
        case domain.ObservationDetails():
            sleep, excretion = details.sleep, details.excretion
            return ObservationRecordType(
                **common,
                diet=None if details.diet is None else DietType(appetite=details.diet.appetite),
                sleep=None
                if sleep is None
                else SleepType(
                    hours=float(sleep.hours), quality=sleep.quality, night_wakings=sleep.night_wakings
                ),
                excretion=None
                if excretion is None
                else ExcretionType(
                    bowel_movements=excretion.bowel_movements,
                    urination=excretion.urination,
                    stool_note=excretion.stool_note,
                ),
                mood=details.mood,
                note=details.note,
            )
    raise TypeError(f"not service details: {details!r}")


# Cursors: the position (occurred_at, id) of a record, so that pages follow the timeline's order -------

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def encode_position(record: domain.ServiceRecord) -> str:
    micros = (record.occurred_at - _EPOCH) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(f"t:{micros}:{record.id}".encode()).decode().rstrip("=")


def decode_position(cursor: str) -> tuple[datetime, int]:
    try:
        kind, micros, key = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split(":")
        if kind != "t":
            raise ValueError(kind)
        return _EPOCH + timedelta(microseconds=int(micros)), int(key)
    except (ValueError, OverflowError, binascii.Error, UnicodeError):
        raise InvalidInput("Malformed cursor.", field="after") from None


def _kinds(kinds: list[domain.ServiceKind] | None) -> frozenset[domain.ServiceKind] | None:
    return None if kinds is None else frozenset(kinds)


# Resident fields (bound in schema/residents.py) ------------------------------------------------------


async def resident_timeline(
    root: ResidentNode,
    info: YiyangInfo,
    first: int | None = None,
    after: str | None = None,
    kinds: list[ServiceRecordKind] | None = None,
    from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
    to: datetime | None = None,
) -> Connection[ServiceRecordType] | None:
    """What happened to the resident, newest first: care, meals, activities, visitors, outings and daily
    observations; `from` inclusive, `to` exclusive, `kinds` all when left out. Null, with an error of code
    GONE, when the resident's personal data was erased."""
    await require_resident_access(
        info, Action.SERVICE_RECORD_VIEW, root.institution_id, root.pk, (Category.DAILY_CARE,)
    )
    size = page_request(first, None).size
    position = None if after is None else decode_position(after)
    criteria = domain.TimelineFilter(kinds=_kinds(kinds), start=from_, end=to)
    rows = await domain.timeline(root.pk, criteria, after=position, limit=size + 1)
    page = rows[:size]
    edges = [Edge(cursor=encode_position(row), node=record_node(row, root.institution_id)) for row in page]
    return Connection(
        edges=edges,
        page_info=PageInfo(
            has_next_page=len(rows) > size,
            has_previous_page=after is not None,
            start_cursor=edges[0].cursor if edges else None,
            end_cursor=edges[-1].cursor if edges else None,
        ),
        count_total=lambda: domain.count_timeline(root.pk, criteria),
    )


async def resident_latest_services(
    root: ResidentNode,
    info: YiyangInfo,
    first: int = 5,
    kinds: list[ServiceRecordKind] | None = None,
) -> list[ServiceRecordType] | None:
    """The latest `first` records (at most 50), newest first: for a dashboard of many residents, loaded
    for all of them in one query. Null, with an error of code GONE, for an erased resident (the rest of the
    page still reads). (`first`, as on connections, so that the rate limit charges the list its size.)"""
    await require_resident_access(
        info, Action.SERVICE_RECORD_VIEW, root.institution_id, root.pk, (Category.DAILY_CARE,)
    )
    if not 0 <= first <= domain.MAX_LATEST:
        raise InvalidInput("first must be between 0 and {max}.", field="first", max=domain.MAX_LATEST)
    if first == 0:
        return []
    records = await info.context.loaders.latest_services.load((root.pk, first, _kinds(kinds)))
    return [record_node(record, root.institution_id) for record in records]


# Mutations -------------------------------------------------------------------------------------------


@strawberry.input(name="CareRecordInput")
class CareInput:
    item: CareItemEnum
    duration_minutes: int | None = strawberry.field(default=None, description="1 to 600.")
    note: str | None = None

    def to_domain(self) -> domain.CareDetails:
        return domain.CareDetails(self.item, self.duration_minutes, self.note)


@strawberry.input(name="MealRecordInput")
class MealInput:
    meal: MealTypeEnum
    portion: PortionEnum
    fluid_intake_ml: int | None = strawberry.field(default=None, description="0 to 5000.")
    note: str | None = None

    def to_domain(self) -> domain.MealDetails:
        return domain.MealDetails(self.meal, self.portion, self.fluid_intake_ml, self.note)


@strawberry.input(name="ActivityRecordInput")
class ActivityInput:
    name: str
    participation: ParticipationEnum
    ended_at: datetime | None = None
    note: str | None = None

    def to_domain(self) -> domain.ActivityDetails:
        return domain.ActivityDetails(self.name, self.participation, self.ended_at, self.note)


@strawberry.input(name="VisitorRecordInput")
class VisitorInput:
    visitor_name: str
    relationship: str | None = None
    left_at: datetime | None = None
    note: str | None = None

    def to_domain(self) -> domain.VisitorDetails:
        return domain.VisitorDetails(self.visitor_name, self.relationship, self.left_at, self.note)


@strawberry.input(name="OutingRecordInput")
class OutingInput:
    destination: str
    companion: str | None = None
    expected_back: datetime | None = None
    returned_at: datetime | None = None
    note: str | None = None

    def to_domain(self) -> domain.OutingDetails:
        return domain.OutingDetails(
            self.destination, self.companion, self.expected_back, self.returned_at, self.note
        )


@strawberry.input(name="DietObservationInput")
class DietInput:
    appetite: RatingEnum


@strawberry.input(name="SleepObservationInput")
class SleepInput:
    hours: float = strawberry.field(description="0 to 24, rounded to 0.1.")
    quality: RatingEnum | None = None
    night_wakings: int | None = None


@strawberry.input(name="ExcretionObservationInput")
class ExcretionInput:
    bowel_movements: int
    urination: UrinationEnum
    stool_note: str | None = None


@strawberry.input(name="ObservationRecordInput", description="At least one part is given.")
class ObservationInput:
    diet: DietInput | None = None
    sleep: SleepInput | None = None
    excretion: ExcretionInput | None = None
    mood: MoodEnum | None = None
    note: str | None = None

    def to_domain(self) -> domain.ObservationDetails:
        sleep, excretion = self.sleep, self.excretion
        return domain.ObservationDetails(
            diet=None if self.diet is None else domain.Diet(self.diet.appetite),
            sleep=None
            if sleep is None
            else domain.Sleep(Decimal(str(sleep.hours)), sleep.quality, sleep.night_wakings),
            excretion=None
            if excretion is None
            else domain.Excretion(excretion.bowel_movements, excretion.urination, excretion.stool_note),
            mood=self.mood,
            note=self.note,
        )


@strawberry.input(one_of=True, description="Exactly one: the kind of the record and its details.")
class ServiceDetailsInput:
    care: CareInput | None = strawberry.UNSET
    meal: MealInput | None = strawberry.UNSET
    activity: ActivityInput | None = strawberry.UNSET
    visitor: VisitorInput | None = strawberry.UNSET
    outing: OutingInput | None = strawberry.UNSET
    observation: ObservationInput | None = strawberry.UNSET

    def to_domain(self) -> domain.ServiceDetails:
        for member in (self.care, self.meal, self.activity, self.visitor, self.outing, self.observation):
            if member is not None and member is not strawberry.UNSET:  # oneOf: GraphQL let one through
                return member.to_domain()
        raise InvalidInput("This field is required.", field="details")


@strawberry.input
class RecordServiceInput:
    resident_id: strawberry.ID
    details: ServiceDetailsInput
    occurred_at: datetime | None = strawberry.field(
        default=None,
        description="With its UTC offset; default now; at most 5 minutes ahead, not before admission.",
    )


@strawberry.type
class RecordServicePayload:
    service_record: ServiceRecordType | None
    user_errors: list[UserError]


@strawberry.input
class EndServiceRecordInput:
    id: strawberry.ID
    ended_at: datetime | None = strawberry.field(
        default=None, description="With its UTC offset; default now; not before the record's start."
    )


@strawberry.input
class RemoveServiceRecordInput:
    id: strawberry.ID


@strawberry.type
class RemoveServiceRecordPayload:
    removed_id: strawberry.ID | None
    user_errors: list[UserError]


async def _record_to_change(info: YiyangInfo, record_id: str) -> tuple[int, int]:
    """(institution id, primary key) of a record the caller may change: NOT_FOUND for another
    institution's or an unknown record, FORBIDDEN unless the caller may record its kind."""
    institution_id, pk = decode_id("ServiceRecord", record_id, 2)
    principal = info.context.principal
    require(principal, Action.SERVICE_RECORD_VIEW, institution=institution_id)
    if info.context.require_tenant().institution_id != institution_id:
        raise NotFound("Not found.")
    stored = await domain.stored_record(pk)
    await require_resident_access(info, ACTION_OF_KIND[stored.kind], institution_id, stored.resident_id)
    return institution_id, pk


@strawberry.type
class TimelineMutations:
    @strawberry.mutation(
        description="Record what was done for or happened to a resident: care, a meal, an activity, a "
        "visitor, an outing or the daily observation."
    )
    async def record_service(self, info: YiyangInfo, input: RecordServiceInput) -> RecordServicePayload:
        details = input.details.to_domain()
        action = ACTION_OF_KIND[domain.kind_of(details)]
        institution_id, pk = await resident_to_change(info, input.resident_id, action)
        principal = info.context.principal
        assert principal is not None  # require() passed
        new = domain.NewServiceRecord(details, input.occurred_at)
        try:
            record = await domain.record_service(pk, new, recorded_by=principal.subject)
        except USER_ERROR_TYPES as error:
            return RecordServicePayload(service_record=None, user_errors=user_errors(info, error))
        return RecordServicePayload(service_record=record_node(record, institution_id), user_errors=[])

    @strawberry.mutation(
        description="Remove a record entered by mistake: only its author, within 24 hours of recording it "
        "(CONFLICT otherwise)."
    )
    async def remove_service_record(
        self, info: YiyangInfo, input: RemoveServiceRecordInput
    ) -> RemoveServiceRecordPayload:
        _, record_id = await _record_to_change(info, input.id)
        principal = info.context.principal
        assert principal is not None  # require() passed
        try:
            await domain.remove_service_record(record_id, by=principal.subject)
        except USER_ERROR_TYPES as error:
            return RemoveServiceRecordPayload(removed_id=None, user_errors=user_errors(info, error))
        return RemoveServiceRecordPayload(removed_id=input.id, user_errors=[])

    @strawberry.mutation(
        description="Set the end of an activity, the time a visitor left or the resident came back from an "
        "outing, on a record entered without it."
    )
    async def end_service_record(
        self, info: YiyangInfo, input: EndServiceRecordInput
    ) -> RecordServicePayload:
        institution_id, record_id = await _record_to_change(info, input.id)
        try:
            record = await domain.end_service_record(record_id, input.ended_at)
        except USER_ERROR_TYPES as error:
            return RecordServicePayload(service_record=None, user_errors=user_errors(info, error))
        return RecordServicePayload(service_record=record_node(record, institution_id), user_errors=[])

"""Care plans and tasks through GraphQL (care/care_plans.py, care/tasks.py): `Resident.carePlan`,
`Resident.tasks` (bound in schema/residents.py), `myTasks`, and the mutations `setCarePlanItem`,
`removeCarePlanItem`, `completeTask`, `markTaskNotDone`.

Every read and write asks schema/resident_access.py (care_plan.view/edit, task.view/complete; a measured
result also vitals.record, whose reading lands in the vitals record). The client's view: docs/api.md,
"Care plans and tasks".
"""

from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Protocol, TypeVar

import strawberry

from care import care_plans as plans
from care import tasks as care
from care import vitals
from care.residents import institution_today
from compliance.consent import Category
from compliance.policy import Action, require
from compliance.principals import PrincipalKind, StaffRole
from schema.context import YiyangInfo
from schema.ids import decode_id, encode_id
from schema.pagination import Connection, PageRequest, connection, page_request
from schema.resident_access import (
    ResidentNode,
    consent_refusals,
    part_to_change,
    recorder,
    require_resident_access,
    resident_to_change,
)
from schema.user_errors import USER_ERROR_TYPES, UserError, user_errors
from schema.vitals import GlucoseContextEnum, VitalMeasure, measured_value, reading_recorder
from tenants.errors import InvalidInput, NotFound

TaskKindEnum = strawberry.enum(plans.TaskKind, name="CareTaskKind")
TaskStatusEnum = strawberry.enum(care.TaskStatus, name="CareTaskStatus")
DEFAULT_TASK_DAYS = 7


@strawberry.type(name="CarePlanItem", description="One item of a resident's care plan (its current version).")
class CarePlanItemType:
    id: strawberry.ID
    version: int = strawberry.field(
        description="1 when added; each edit adds one (earlier versions are kept)."
    )
    kind: TaskKindEnum
    label: str | None
    recurrence: str = strawberry.field(
        description="RFC 5545 RRULE, e.g. FREQ=WEEKLY;BYDAY=TU;BYHOUR=10;BYMINUTE=0."
    )
    starts_at: datetime = strawberry.field(
        description="DTSTART, a wall-clock time of the institution (no offset)."
    )
    assignee_role: str | None
    caregiver_id: strawberry.ID | None = strawberry.field(description="A StaffMember id, when named.")
    duration_minutes: int
    measure: VitalMeasure | None = strawberry.field(description="The vital sign the task records, if any.")
    recorded_by: str
    recorded_at: datetime

    @classmethod
    def of(cls, found: plans.PlanItem, institution_id: int) -> "CarePlanItemType":
        return cls(
            id=strawberry.ID(encode_id("CarePlanItem", institution_id, found.id)),
            version=found.version,
            kind=found.kind,
            label=found.label,
            recurrence=found.recurrence,
            starts_at=found.starts_at,
            assignee_role=found.role.value if found.role else None,
            caregiver_id=_staff_member_id(institution_id, found.caregiver_id),
            duration_minutes=found.duration_minutes,
            measure=found.measure,
            recorded_by=found.recorded_by,
            recorded_at=found.recorded_at,
        )


def _staff_member_id(institution_id: int, account_id: int | None) -> strawberry.ID | None:
    return None if account_id is None else strawberry.ID(encode_id("StaffMember", institution_id, account_id))


@strawberry.type(name="CarePlan")
class CarePlanType:
    items: list[CarePlanItemType]


@strawberry.type(name="CareTask", description="A task materialized from a care plan item, or made by a rule.")
class CareTaskType:
    id: strawberry.ID
    resident_id: strawberry.ID
    item_id: strawberry.ID | None = strawberry.field(description="The CarePlanItem (none for a rule's task).")
    item_version: int | None
    rule_firing_id: strawberry.ID | None = strawberry.field(
        description="The VitalRuleFiring that created the task (none for a care plan's task)."
    )
    kind: TaskKindEnum
    due_at: datetime
    duration_minutes: int
    assignee_role: str | None
    caregiver_id: strawberry.ID | None
    measure: VitalMeasure | None
    status: TaskStatusEnum
    done_at: datetime | None = strawberry.field(description="When it was checked off or marked not done.")
    done_by: str | None
    reading_id: strawberry.ID | None = strawberry.field(description="The VitalReading it recorded.")
    result: str | None = strawberry.field(description="The result noted when done.")
    not_done_reason: str | None
    escalated_at: datetime | None = strawberry.field(description="When it was escalated as overdue.")
    pk: strawberry.Private[int]

    @classmethod
    def of(cls, found: care.Task, institution_id: int) -> "CareTaskType":
        done = found.status is care.TaskStatus.DONE
        return cls(
            id=strawberry.ID(encode_id("CareTask", institution_id, found.id)),
            resident_id=strawberry.ID(encode_id("Resident", institution_id, found.resident_id)),
            item_id=None
            if found.item_id is None
            else strawberry.ID(encode_id("CarePlanItem", institution_id, found.item_id)),
            item_version=found.item_version,
            rule_firing_id=None
            if found.rule_firing_id is None
            else strawberry.ID(encode_id("VitalRuleFiring", institution_id, found.rule_firing_id)),
            kind=found.kind,
            due_at=found.due_at,
            duration_minutes=found.duration_minutes,
            assignee_role=found.role.value if found.role else None,
            caregiver_id=_staff_member_id(institution_id, found.caregiver_id),
            measure=found.measure,
            status=found.status,
            done_at=found.done_at,
            done_by=found.done_by,
            reading_id=None
            if found.reading_id is None
            else strawberry.ID(encode_id("VitalReading", institution_id, found.reading_id)),
            result=found.note if done else None,
            not_done_reason=found.note if found.status is care.TaskStatus.NOT_DONE else None,
            escalated_at=found.escalated_at,
            pk=found.id,
        )


# Resident fields (bound in schema/residents.py) ------------------------------------------------------


async def resident_care_plan(root: ResidentNode, info: YiyangInfo) -> CarePlanType:
    """The items of the resident's care plan, oldest first."""
    await require_resident_access(info, Action.CARE_PLAN_VIEW, root.institution_id, root.pk)
    items = await plans.plan_of(root.pk)
    return CarePlanType(items=[CarePlanItemType.of(found, root.institution_id) for found in items])


async def resident_tasks(
    root: ResidentNode,
    info: YiyangInfo,
    from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
    to: datetime | None = None,
    first: int | None = None,
    after: str | None = None,
) -> Connection[CareTaskType]:
    """The resident's tasks due in [from, to), by due time (default: from now, the next 7 days)."""
    await require_resident_access(info, Action.TASK_VIEW, root.institution_id, root.pk)
    page = page_request(first, after)
    start = from_ or datetime.now(UTC)
    end = to or start + timedelta(days=DEFAULT_TASK_DAYS)
    if start.tzinfo is None or end.tzinfo is None:
        raise InvalidInput(
            "Give the time with its UTC offset.", field="from" if start.tzinfo is None else "to"
        )
    rows = await care.resident_tasks(root.pk, start, end, after_key=page.after_key, limit=page.size + 1)
    return connection(
        rows,
        page,
        key=lambda row: care.page_key(row),
        node=lambda row: CareTaskType.of(row, root.institution_id),
        count_total=lambda: care.count_resident_tasks(root.pk, start, end),
    )


class _DueOfResident(care.Due, Protocol):
    @property
    def resident_id(self) -> int: ...


DueT = TypeVar("DueT", bound=_DueOfResident)
NodeT = TypeVar("NodeT")


async def my_day(
    info: YiyangInfo,
    action: Action,
    day: date | None,
    page: PageRequest,
    *,
    rows: Callable[..., Awaitable[Sequence[DueT]]],
    count: Callable[[int, Iterable[StaffRole], date], Awaitable[int]],
    node: Callable[[DueT, int], NodeT],
) -> Connection[NodeT]:
    """A member of staff's own rows due on a local day of the acting institution (default today), by due
    time: `rows(account_id, roles, day, after_key=, limit=)` and `count(account_id, roles, day)` (myTasks,
    mySopSteps). Staff read under care delivery: every resident's read goes on the audit trail all the
    same."""
    principal = require(info.context.principal, action)
    tenant = info.context.require_tenant()
    account_id = principal.account_id
    if principal.kind is not PrincipalKind.STAFF or account_id is None:
        raise NotFound("Not found.")
    wanted = day or institution_today()
    found = await rows(account_id, principal.roles, wanted, after_key=page.after_key, limit=page.size + 1)
    await consent_refusals(
        info,
        action,
        (row.resident_id for row in found[: page.size]),
        Category.DAILY_CARE,
        kinds=frozenset({PrincipalKind.FAMILY, PrincipalKind.INTEGRATOR}),
    )
    return connection(
        found,
        page,
        key=care.page_key,
        node=lambda row: node(row, tenant.institution_id),
        count_total=lambda: count(account_id, principal.roles, wanted),
    )


# Queries ---------------------------------------------------------------------------------------------


@strawberry.type
class CarePlanQueries:
    @strawberry.field(
        description="The caller's tasks of a local day of the acting institution (default today): named "
        "to them or to one of their roles, by due time."
    )
    async def my_tasks(
        self, info: YiyangInfo, day: date | None = None, first: int | None = None, after: str | None = None
    ) -> Connection[CareTaskType]:
        return await my_day(
            info,
            Action.TASK_VIEW,
            day,
            page_request(first, after),
            rows=care.tasks_of_caregiver,
            count=care.count_tasks_of_caregiver,
            node=CareTaskType.of,
        )


# Mutations -------------------------------------------------------------------------------------------


@strawberry.input(description="Add an item (residentId) or edit one (itemId): give exactly one of them.")
class SetCarePlanItemInput:
    resident_id: strawberry.ID | None = None
    item_id: strawberry.ID | None = None
    kind: TaskKindEnum
    label: str | None = None
    recurrence: str = strawberry.field(
        description="RFC 5545 RRULE in the institution's time zone, e.g. FREQ=DAILY;BYHOUR=8,20;BYMINUTE=0; "
        "at least once in the coming year, at most every 15 minutes."
    )
    starts_at: datetime | None = strawberry.field(
        default=None,
        description="DTSTART: without offset a wall-clock time of the institution; default now.",
    )
    assignee_role: str | None = strawberry.field(
        default=None, description="caregiver, nurse, head_nurse or doctor (or give caregiverId)."
    )
    caregiver_id: strawberry.ID | None = strawberry.field(default=None, description="A StaffMember id.")
    duration_minutes: int = strawberry.field(description="Expected duration, 1 to 480 minutes.")
    measure: VitalMeasure | None = strawberry.field(default=None, description="The vital sign it records.")


@strawberry.type
class SetCarePlanItemPayload:
    item: CarePlanItemType | None
    tasks: list[CareTaskType] = strawberry.field(description="The item's tasks of the next 7 days.")
    user_errors: list[UserError]


@strawberry.input
class RemoveCarePlanItemInput:
    item_id: strawberry.ID


@strawberry.type
class RemoveCarePlanItemPayload:
    removed_id: strawberry.ID | None
    user_errors: list[UserError]


@strawberry.input(description="The value of a measured task (its measure is the item's).")
class TaskMeasurementInput:
    value: float | None = None
    systolic: float | None = None
    diastolic: float | None = None
    context: GlucoseContextEnum | None = None


@strawberry.input
class CompleteTaskInput:
    task_id: strawberry.ID
    result: str | None = None
    measurement: TaskMeasurementInput | None = None


@strawberry.input
class MarkTaskNotDoneInput:
    task_id: strawberry.ID
    reason: str


@strawberry.type
class TaskPayload:
    task: CareTaskType | None
    user_errors: list[UserError]


def _caregiver(info: YiyangInfo, given: strawberry.ID | None) -> int | None:
    """The account id of a StaffMember id of the acting institution (NOT_FOUND for another's)."""
    if given is None:
        return None
    institution_id, account_id = decode_id("StaffMember", given, 2, field="caregiverId")
    tenant = info.context.tenant
    if tenant is None or institution_id != tenant.institution_id:
        raise NotFound("Not found.", field="caregiverId")
    return account_id


@strawberry.type
class CarePlanMutations:
    @strawberry.mutation(
        description="Add an item to a resident's care plan or edit one; its future tasks follow."
    )
    async def set_care_plan_item(
        self, info: YiyangInfo, input: SetCarePlanItemInput
    ) -> SetCarePlanItemPayload:
        caregiver_id = _caregiver(info, input.caregiver_id)
        if input.item_id is not None:
            _, _, item_id = await part_to_change(
                info, "CarePlanItem", input.item_id, Action.CARE_PLAN_EDIT, plans.resident_of_item
            )
            resident_pk = None
        elif input.resident_id is not None:
            _, resident_pk = await resident_to_change(info, input.resident_id, Action.CARE_PLAN_EDIT)
            item_id = None
        else:
            require(info.context.principal, Action.CARE_PLAN_EDIT)  # the role first, then the input
            missing = InvalidInput(
                "Give the resident to add an item for, or the item to edit.", field="residentId"
            )
            return SetCarePlanItemPayload(item=None, tasks=[], user_errors=user_errors(info, missing))
        new = plans.NewItem(
            kind=input.kind,
            recurrence=input.recurrence,
            duration_minutes=input.duration_minutes,
            starts_at=input.starts_at,
            label=input.label,
            role=input.assignee_role,
            caregiver_id=caregiver_id,
            measure=input.measure,
        )
        tenant = info.context.require_tenant()
        now = datetime.now(UTC)
        try:
            if item_id is not None:
                found = await plans.edit_item(item_id, new, recorded_by=recorder(info), now=now)
            else:
                assert resident_pk is not None
                found = await plans.add_item(resident_pk, new, recorded_by=recorder(info), now=now)
        except USER_ERROR_TYPES as error:
            return SetCarePlanItemPayload(item=None, tasks=[], user_errors=user_errors(info, error))
        upcoming = await care.rematerialize_item(found.id, now)
        return SetCarePlanItemPayload(
            item=CarePlanItemType.of(found, tenant.institution_id),
            tasks=[CareTaskType.of(row, tenant.institution_id) for row in upcoming],
            user_errors=[],
        )

    @strawberry.mutation(description="Take an item out of a care plan; its open future tasks go with it.")
    async def remove_care_plan_item(
        self, info: YiyangInfo, input: RemoveCarePlanItemInput
    ) -> RemoveCarePlanItemPayload:
        _, _, item_id = await part_to_change(
            info, "CarePlanItem", input.item_id, Action.CARE_PLAN_EDIT, plans.resident_of_item
        )
        now = datetime.now(UTC)
        await plans.remove_item(item_id, removed_by=recorder(info), now=now)
        await care.rematerialize_item(item_id, now)
        return RemoveCarePlanItemPayload(removed_id=input.item_id, user_errors=[])

    @strawberry.mutation(
        description="Check a task off with its result; a measured task records its value in the vitals."
    )
    async def complete_task(self, info: YiyangInfo, input: CompleteTaskInput) -> TaskPayload:
        institution_id, resident_pk, task_id = await part_to_change(
            info, "CareTask", input.task_id, Action.TASK_COMPLETE, care.resident_of_task
        )
        measurement = None
        if input.measurement is not None:
            # The value lands in the vitals record: the caller must be one who may record it.
            await require_resident_access(
                info, Action.VITALS_RECORD, institution_id, resident_pk, (Category.VITALS,)
            )
            given = input.measurement
            measurement = vitals.NewReading(
                measure=vitals.Measure.HEART_RATE,  # replaced by the task's own measure
                value=measured_value(given.value),
                systolic=measured_value(given.systolic),
                diastolic=measured_value(given.diastolic),
                context=given.context,
            )
        try:
            found = await care.complete_task(
                task_id,
                result=input.result,
                measurement=measurement,
                recorder=reading_recorder(info.context.principal),
                now=datetime.now(UTC),
            )
        except USER_ERROR_TYPES as error:
            return TaskPayload(task=None, user_errors=user_errors(info, error))
        return TaskPayload(task=CareTaskType.of(found, institution_id), user_errors=[])

    @strawberry.mutation(description="Close a task as not done, with the reason.")
    async def mark_task_not_done(self, info: YiyangInfo, input: MarkTaskNotDoneInput) -> TaskPayload:
        institution_id, _, task_id = await part_to_change(
            info, "CareTask", input.task_id, Action.TASK_COMPLETE, care.resident_of_task
        )
        try:
            found = await care.mark_not_done(task_id, input.reason, by=recorder(info), now=datetime.now(UTC))
        except USER_ERROR_TYPES as error:
            return TaskPayload(task=None, user_errors=user_errors(info, error))
        return TaskPayload(task=CareTaskType.of(found, institution_id), user_errors=[])

"""Work orders through GraphQL (care/work_orders.py): the queries `workOrders`, `workOrder`, `myWorkOrders`,
`workOrderKpis`, `workOrderDepartments`, `workOrderRoutingRules`, `workOrderSlaPolicies`, and the mutations
`raiseWorkOrder`, `changeWorkOrderStatus`, `assignWorkOrder`, `commentOnWorkOrder`, `rateWorkOrder`,
`setWorkOrderRoutingRule`, `setWorkOrderSlaPolicy`.

Access: the policy (work_order.* in compliance/policy.py) for every field; a work order about a resident
also through schema/resident_access.py, decided and on the audit trail (staff under care delivery, daily
care; a family account by the policy alone: it reads and writes its own requests, no part of the record).
A family account raises work orders only about residents it follows and sees only those it raised; a work
order it did not raise is NOT_FOUND, like one of another institution.

Routing means something: handling a work order (a status change other than the requester's own close,
reopen or cancel; assigning or re-routing; a comment by anyone but the requester) needs the policy's
`work_order.handle` and then the domain's object-level decision (care.require_handler: a member of the
department it is routed to, its assignee or a supervisor); a refusal is FORBIDDEN (extensions.reason
NOT_HANDLER) and on the audit trail. Viewing stays a matter of the role.
"""

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated

import strawberry

from care import work_orders as care
from compliance.audit import Outcome
from compliance.consent import Category
from compliance.policy import Action, require
from compliance.principals import Principal, PrincipalKind
from schema.context import YiyangInfo
from schema.ids import decode_id, encode_id
from schema.pagination import Connection, connection, page_request
from schema.resident_access import audit_request, recorder, require_resident_access, resident_to_change
from schema.user_errors import USER_ERROR_TYPES, UserError, user_errors
from tenants.errors import Forbidden, InvalidInput, NotFound

WorkOrderKindEnum = strawberry.enum(care.Kind, name="WorkOrderKind")
WorkOrderCategoryEnum = strawberry.enum(care.Category, name="WorkOrderCategory")
WorkOrderPriorityEnum = strawberry.enum(care.Priority, name="WorkOrderPriority")
WorkOrderStatusEnum = strawberry.enum(care.Status, name="WorkOrderStatus")
WorkOrderChangeEnum = strawberry.enum(care.Transition, name="WorkOrderChange")
RequesterKindEnum = strawberry.enum(care.RequesterKind, name="WorkOrderRequesterKind")
NOT_FOUND = "Not found."


def _staff_member(institution_id: int, account_id: int | None) -> strawberry.ID | None:
    return None if account_id is None else strawberry.ID(encode_id("StaffMember", institution_id, account_id))


@strawberry.type(name="WorkOrderDepartment")
class DepartmentType:
    code: str
    name: str = strawberry.field(description="In the caller's language.")
    member_roles: list[str] = strawberry.field(description="Staff roles whose holders belong to it.")
    lead_roles: list[str] = strawberry.field(description="Staff roles told when a deadline is missed.")

    @classmethod
    def of(cls, found: care.Department, locale: str) -> "DepartmentType":
        return cls(
            code=found.code,
            name=found.name_zh if locale.startswith("zh") else found.name_en,
            member_roles=sorted(role.value for role in found.member_roles),
            lead_roles=sorted(role.value for role in found.lead_roles),
        )


@strawberry.type(name="WorkOrderComment")
class CommentType:
    id: strawberry.ID
    author_kind: RequesterKindEnum
    author_id: strawberry.ID | None = strawberry.field(description="A StaffMember id (staff authors).")
    by_me: bool
    body: str | None = strawberry.field(description="None only when the resident's data was erased.")
    created_at: datetime

    @classmethod
    def of(cls, found: care.Comment, institution_id: int, me: int | None) -> "CommentType":
        return cls(
            id=strawberry.ID(encode_id("WorkOrderComment", institution_id, found.id)),
            author_kind=found.author_kind,
            author_id=_staff_member(institution_id, found.author_account_id)
            if found.author_kind is care.RequesterKind.STAFF
            else None,
            by_me=found.author_account_id == me,
            body=found.body,
            created_at=found.created_at,
        )


@strawberry.type(name="WorkOrderEvent", description="One step of a work order's history.")
class EventType:
    occurred_at: datetime
    actor: str = strawberry.field(description="account:<id>, or system:work-orders for the SLA sweep.")
    action: str = strawberry.field(description="raised, acknowledged, assigned, started, resolved, …")
    from_status: WorkOrderStatusEnum | None
    to_status: WorkOrderStatusEnum | None
    department: str | None
    assignee_id: strawberry.ID | None


@strawberry.type(name="WorkOrder")
class WorkOrderType:
    id: strawberry.ID
    kind: WorkOrderKindEnum
    category: WorkOrderCategoryEnum
    priority: WorkOrderPriorityEnum
    resident_id: strawberry.ID | None = strawberry.field(description="The Resident it is about, if any.")
    location: str | None
    title: str | None = strawberry.field(description="None only when the resident's data was erased.")
    description: str | None
    requester_kind: RequesterKindEnum
    requester_id: strawberry.ID | None = strawberry.field(description="A StaffMember id (staff requesters).")
    requested_by_me: bool
    department: str = strawberry.field(description="The code of its WorkOrderDepartment.")
    assignee_id: strawberry.ID | None = strawberry.field(description="A StaffMember id.")
    status: WorkOrderStatusEnum
    created_at: datetime
    response_due_at: datetime
    resolution_due_at: datetime
    responded_at: datetime | None = strawberry.field(
        description="The first acknowledgement, assignment, start or resolution."
    )
    resolved_at: datetime | None
    closed_at: datetime | None
    cancelled_at: datetime | None
    reopened_count: int
    response_breached: bool = strawberry.field(description="Responded late, or not yet and past due.")
    resolution_breached: bool
    response_escalated_at: datetime | None
    resolution_escalated_at: datetime | None
    response_minutes: float | None = strawberry.field(description="From raised to the response.")
    resolution_minutes: float | None = strawberry.field(description="From raised to the resolution.")
    rating: int | None
    rating_comment: str | None
    rated_at: datetime | None
    pk: strawberry.Private[int]
    institution_id: strawberry.Private[int]
    me: strawberry.Private[int | None]

    @classmethod
    def of(cls, found: care.WorkOrder, institution_id: int, me: int | None, now: datetime) -> "WorkOrderType":
        return cls(
            id=strawberry.ID(encode_id("WorkOrder", institution_id, found.id)),
            kind=found.kind,
            category=found.category,
            priority=found.priority,
            resident_id=None
            if found.resident_id is None
            else strawberry.ID(encode_id("Resident", institution_id, found.resident_id)),
            location=found.location,
            title=found.title,
            description=found.description,
            requester_kind=found.requester_kind,
            requester_id=_staff_member(institution_id, found.requester_account_id)
            if found.requester_kind is care.RequesterKind.STAFF
            else None,
            requested_by_me=found.requester_account_id == me,
            department=found.department_code,
            assignee_id=_staff_member(institution_id, found.assignee_account_id),
            status=found.status,
            created_at=found.created_at,
            response_due_at=found.response_due_at,
            resolution_due_at=found.resolution_due_at,
            responded_at=found.responded_at,
            resolved_at=found.resolved_at,
            closed_at=found.closed_at,
            cancelled_at=found.cancelled_at,
            reopened_count=found.reopened_count,
            response_breached=found.response_breached(now),
            resolution_breached=found.resolution_breached(now),
            response_escalated_at=found.response_escalated_at,
            resolution_escalated_at=found.resolution_escalated_at,
            response_minutes=None if found.response_minutes is None else round(found.response_minutes, 1),
            resolution_minutes=None
            if found.resolution_minutes is None
            else round(found.resolution_minutes, 1),
            rating=found.rating,
            rating_comment=found.rating_comment,
            rated_at=found.rated_at,
            pk=found.id,
            institution_id=institution_id,
            me=me,
        )

    @strawberry.field(description="Comments, oldest first (read with the work order: the same decision).")
    async def comments(self) -> list[CommentType]:
        found = (await care.comments_of([self.pk]))[self.pk]
        return [CommentType.of(comment, self.institution_id, self.me) for comment in found]

    @strawberry.field(description="Who changed what when, oldest first.")
    async def history(self) -> list[EventType]:
        found = (await care.events_of([self.pk]))[self.pk]
        return [
            EventType(
                occurred_at=event.occurred_at,
                actor=event.actor,
                action=event.action,
                from_status=event.from_status,
                to_status=event.to_status,
                department=event.department_code,
                assignee_id=_staff_member(self.institution_id, event.assignee_account_id),
            )
            for event in found
        ]


@strawberry.type(name="WorkOrderRoutingRule")
class RoutingRuleType:
    category: WorkOrderCategoryEnum
    priority: WorkOrderPriorityEnum | None = strawberry.field(description="None: any priority.")
    department: str
    updated_by: str
    updated_at: datetime


@strawberry.type(name="WorkOrderSlaPolicy")
class SlaPolicyType:
    category: WorkOrderCategoryEnum
    priority: WorkOrderPriorityEnum
    response_minutes: int
    resolution_minutes: int
    updated_by: str
    updated_at: datetime


@strawberry.type(name="WorkOrderCategoryKpi", description="Institution-level figures: no resident.")
class CategoryKpiType:
    category: WorkOrderCategoryEnum
    raised: int
    complaints: int
    responded: int
    median_response_minutes: float | None
    response_within_sla_percent: float | None
    resolved: int
    median_resolution_minutes: float | None
    resolution_within_sla_percent: float | None
    average_rating: float | None
    ratings: int


# Access ----------------------------------------------------------------------------------------------


def _categories(principal: Principal | None) -> tuple[Category, ...]:
    """What a work order about a resident is decided on: daily care for staff (care delivery); nothing of
    the record for a family account, whose own requests they are (the policy decides, the trail records)."""
    if principal is not None and principal.kind is PrincipalKind.FAMILY:
        return ()
    return (Category.DAILY_CARE,)


def _is_family(principal: Principal | None) -> bool:
    return principal is not None and principal.kind is PrincipalKind.FAMILY


async def _decide(info: YiyangInfo, action: Action, resident_id: int | None) -> None:
    tenant = info.context.require_tenant()
    if resident_id is None:
        require(info.context.principal, action)
        return
    await require_resident_access(
        info, action, tenant.institution_id, resident_id, _categories(info.context.principal)
    )


async def _require_handler(info: YiyangInfo, pk: int, resident_id: int | None) -> None:
    """The policy's role-level grant to handle work orders (FORBIDDEN), then the domain's decision on this
    one: the caller handles the department it is routed to (care.require_handler, FORBIDDEN with reason
    NOT_HANDLER), the refusal on the audit trail."""
    principal = require(info.context.principal, Action.WORK_ORDER_HANDLE)
    try:
        await care.require_handler(pk, account_id=principal.account_id, roles=principal.roles)
    except care.NotHandler as refused:
        audit_request(
            info,
            Action.WORK_ORDER_HANDLE,
            resident_id=resident_id,
            categories=() if resident_id is None else _categories(principal),
            outcome=Outcome.DENIED,
            reason_code=(refused.reason or refused.code).lower(),
        )
        raise


async def _target(info: YiyangInfo, given: str, field: str = "workOrderId") -> tuple[int, int | None, int]:
    """(pk, resident id, requester account id) of a work order of the acting institution the caller may
    see: NOT_FOUND for another institution's, an unknown one, or (family accounts) one it did not raise."""
    institution_id, pk = decode_id("WorkOrder", given, 2, field=field)
    principal = require(info.context.principal, Action.WORK_ORDER_VIEW, institution=institution_id)
    if info.context.require_tenant().institution_id != institution_id:
        raise NotFound(NOT_FOUND, field=field)
    resident_id, requester = await care.about(pk)
    if _is_family(principal) and requester != principal.account_id:
        raise NotFound(NOT_FOUND, field=field)
    return pk, resident_id, requester


def _requester(info: YiyangInfo) -> care.Requester:
    principal = info.context.principal
    if principal is None or principal.account_id is None:
        raise Forbidden("Your role does not allow this action.")  # integrator clients have no account
    kind = care.RequesterKind.FAMILY if _is_family(principal) else care.RequesterKind.STAFF
    return care.Requester(kind, principal.account_id)


def _me(info: YiyangInfo) -> int | None:
    principal = info.context.principal
    return None if principal is None else principal.account_id


def _node(info: YiyangInfo, found: care.WorkOrder, now: datetime) -> WorkOrderType:
    return WorkOrderType.of(found, info.context.require_tenant().institution_id, _me(info), now)


def _staff_member_pk(info: YiyangInfo, given: strawberry.ID | None, field: str) -> int | None:
    """The account of a StaffMember id of the acting institution: NOT_FOUND for another institution's, and
    for family accounts (the institution's staff are not theirs to look up)."""
    if given is None:
        return None
    institution_id, account_id = decode_id("StaffMember", given, 2, field=field)
    tenant = info.context.tenant
    if tenant is None or tenant.institution_id != institution_id or _is_family(info.context.principal):
        raise NotFound(NOT_FOUND, field=field)
    return account_id


# Queries ---------------------------------------------------------------------------------------------


@strawberry.input
class WorkOrderFilterInput:
    statuses: list[WorkOrderStatusEnum] | None = None
    category: WorkOrderCategoryEnum | None = None
    department: str | None = None
    assignee_id: strawberry.ID | None = strawberry.field(default=None, description="A StaffMember id.")
    breached: bool | None = strawberry.field(
        default=None, description="true: a deadline passed unmet; false: none did."
    )
    mine: bool | None = strawberry.field(
        default=None, description="true: only those the caller raised or is assigned to."
    )
    my_departments: bool | None = strawberry.field(
        default=None,
        description="true: only the caller's queue: routed to a department the caller handles (a member, "
        "a lead role; every department for the institution admin) or assigned to the caller.",
    )


async def _changed(
    info: YiyangInfo, change: Callable[[datetime], Awaitable[care.WorkOrder]]
) -> "WorkOrderPayload":
    """A mutation's payload: the work order as `change` (at now) left it, or the user errors it raised."""
    now = datetime.now(UTC)
    try:
        found = await change(now)
    except USER_ERROR_TYPES as error:
        return WorkOrderPayload(work_order=None, user_errors=user_errors(info, error))
    return WorkOrderPayload(work_order=_node(info, found, now), user_errors=[])


async def _page(
    info: YiyangInfo, given: care.WorkOrderFilter, first: int | None, after: str | None
) -> Connection[WorkOrderType]:
    page = page_request(first, after)
    now = datetime.now(UTC)
    rows = await care.work_orders_page(given, now=now, after_id=page.after_key, limit=page.size + 1)
    # Every resident a shown work order is about: decided and on the audit trail.
    for resident_id in sorted({row.resident_id for row in rows[: page.size] if row.resident_id is not None}):
        await _decide(info, Action.WORK_ORDER_VIEW, resident_id)
    return connection(
        rows,
        page,
        key=lambda row: row.id,
        node=lambda row: _node(info, row, now),
        count_total=lambda: care.count_work_orders(given, now=now),
    )


def _own_scope(principal: Principal, given: care.WorkOrderFilter) -> care.WorkOrderFilter:
    """A family account's view: what it raised, about residents it still follows."""
    if principal.kind is not PrincipalKind.FAMILY:
        return given
    return care.WorkOrderFilter(
        statuses=given.statuses,
        category=given.category,
        department_code=given.department_code,
        assignee_account_id=given.assignee_account_id,
        requester_account_id=principal.account_id,
        resident_id=given.resident_id,
        breached=given.breached,
        resident_ids=principal.followed_resident_ids,
        mine_account_id=given.mine_account_id,
        queue=given.queue,
    )


@strawberry.type
class WorkOrderQueries:
    @strawberry.field(description="The institution's work orders, newest first (a family account: its own).")
    async def work_orders(
        self,
        info: YiyangInfo,
        filter: WorkOrderFilterInput | None = None,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[WorkOrderType]:
        principal = require(info.context.principal, Action.WORK_ORDER_VIEW)
        wanted = filter or WorkOrderFilterInput()
        given = care.WorkOrderFilter(
            statuses=frozenset(wanted.statuses or ()),
            category=wanted.category,
            department_code=wanted.department,
            assignee_account_id=_staff_member_pk(info, wanted.assignee_id, "assigneeId"),
            breached=wanted.breached,
            mine_account_id=(principal.account_id or 0) if wanted.mine else None,  # 0: no one
            queue=await care.queue_of(principal.account_id, principal.roles)
            if wanted.my_departments
            else None,
        )
        return await _page(info, _own_scope(principal, given), first, after)

    @strawberry.field(description="Work orders the caller raised or is assigned to, newest first.")
    async def my_work_orders(
        self, info: YiyangInfo, first: int | None = None, after: str | None = None
    ) -> Connection[WorkOrderType]:
        principal = require(info.context.principal, Action.WORK_ORDER_VIEW)
        if principal.account_id is None:
            raise NotFound(NOT_FOUND)
        given = care.WorkOrderFilter(mine_account_id=principal.account_id)
        return await _page(info, _own_scope(principal, given), first, after)

    @strawberry.field
    async def work_order(self, info: YiyangInfo, id: strawberry.ID) -> WorkOrderType:
        pk, resident_id, _ = await _target(info, id, "id")
        await _decide(info, Action.WORK_ORDER_VIEW, resident_id)
        return _node(info, await care.work_order(pk), datetime.now(UTC))

    @strawberry.field(
        description="Per category, the work orders raised in [from, to): response and resolution times, "
        "the share within their deadlines, ratings. Institution level: no resident."
    )
    async def work_order_kpis(
        self, info: YiyangInfo, from_: Annotated[datetime, strawberry.argument(name="from")], to: datetime
    ) -> list[CategoryKpiType]:
        require(info.context.principal, Action.WORK_ORDER_KPI_VIEW)
        if from_.tzinfo is None or to.tzinfo is None:
            raise InvalidInput(
                "Give the time with its UTC offset.", field="from" if from_.tzinfo is None else "to"
            )
        figures = await care.kpis(from_, to, now=datetime.now(UTC))
        return [CategoryKpiType(**{name: getattr(kpi, name) for name in kpi.__slots__}) for kpi in figures]

    @strawberry.field(description="The departments work orders are routed to.")
    async def work_order_departments(self, info: YiyangInfo) -> list[DepartmentType]:
        require(info.context.principal, Action.WORK_ORDER_VIEW)
        return [DepartmentType.of(found, info.context.locale) for found in await care.departments()]

    @strawberry.field(description="category [+ priority] → department; a rule with a priority wins.")
    async def work_order_routing_rules(self, info: YiyangInfo) -> list[RoutingRuleType]:
        require(info.context.principal, Action.WORK_ORDER_VIEW)
        return [_rule(rule) for rule in await care.routing_rules()]

    @strawberry.field(description="Response and resolution deadlines per category and priority.")
    async def work_order_sla_policies(self, info: YiyangInfo) -> list[SlaPolicyType]:
        require(info.context.principal, Action.WORK_ORDER_VIEW)
        return [_policy(policy) for policy in await care.sla_policies()]


def _rule(rule: care.RoutingRule) -> RoutingRuleType:
    return RoutingRuleType(
        category=rule.category,
        priority=rule.priority,
        department=rule.department_code,
        updated_by=rule.updated_by,
        updated_at=rule.updated_at,
    )


def _policy(policy: care.SlaPolicy) -> SlaPolicyType:
    return SlaPolicyType(
        category=policy.category,
        priority=policy.priority,
        response_minutes=policy.response_minutes,
        resolution_minutes=policy.resolution_minutes,
        updated_by=policy.updated_by,
        updated_at=policy.updated_at,
    )


# Mutations -------------------------------------------------------------------------------------------


@strawberry.input(description="A service request or complaint. Family accounts name a resident they follow.")
class RaiseWorkOrderInput:
    resident_id: strawberry.ID | None = None
    kind: str = strawberry.field(default="request", description="request or complaint.")
    category: str = strawberry.field(description="maintenance, cleaning, meals, care, billing or other.")
    priority: str = strawberry.field(default="normal", description="low, normal, high or urgent.")
    title: str
    description: str | None = None
    location: str | None = strawberry.field(default=None, description="Where, e.g. 3号楼 302.")


@strawberry.type
class WorkOrderPayload:
    work_order: WorkOrderType | None
    user_errors: list[UserError]


@strawberry.input
class ChangeWorkOrderStatusInput:
    work_order_id: strawberry.ID
    change: WorkOrderChangeEnum = strawberry.field(
        description="ACKNOWLEDGE, START, RESOLVE (handlers); CLOSE, REOPEN (a resolved one), CANCEL (also "
        "the requester)."
    )


@strawberry.input
class AssignWorkOrderInput:
    work_order_id: strawberry.ID
    assignee_id: strawberry.ID | None = strawberry.field(default=None, description="A StaffMember id.")
    department: str | None = strawberry.field(default=None, description="A department code.")


@strawberry.input
class CommentOnWorkOrderInput:
    work_order_id: strawberry.ID
    body: str


@strawberry.type
class CommentOnWorkOrderPayload:
    comment: CommentType | None
    user_errors: list[UserError]


@strawberry.input
class RateWorkOrderInput:
    work_order_id: strawberry.ID
    rating: int = strawberry.field(description="1 (poor) to 5 (excellent).")
    comment: str | None = None


@strawberry.input
class SetWorkOrderRoutingRuleInput:
    category: str
    priority: str | None = strawberry.field(default=None, description="None: any priority.")
    department: str


@strawberry.type
class SetWorkOrderRoutingRulePayload:
    rule: RoutingRuleType | None
    user_errors: list[UserError]


@strawberry.input
class SetWorkOrderSlaPolicyInput:
    category: str
    priority: str
    response_minutes: int
    resolution_minutes: int


@strawberry.type
class SetWorkOrderSlaPolicyPayload:
    policy: SlaPolicyType | None
    user_errors: list[UserError]


FAMILY_NEEDS_RESIDENT = "Name the resident the request is about."


@strawberry.type
class WorkOrderMutations:
    @strawberry.mutation(description="Raise a work order; it is routed, given its deadlines and announced.")
    async def raise_work_order(self, info: YiyangInfo, input: RaiseWorkOrderInput) -> WorkOrderPayload:
        principal = info.context.principal
        resident_pk = None
        if input.resident_id is not None:
            _, resident_pk = await resident_to_change(
                info, input.resident_id, Action.WORK_ORDER_RAISE, categories=_categories(principal)
            )
        else:
            require(principal, Action.WORK_ORDER_RAISE)
            if _is_family(principal):
                missing = InvalidInput(FAMILY_NEEDS_RESIDENT, field="residentId")
                return WorkOrderPayload(work_order=None, user_errors=user_errors(info, missing))
        requester = _requester(info)
        new = care.NewWorkOrder(
            kind=input.kind,
            category=input.category,
            priority=input.priority,
            title=input.title,
            description=input.description,
            location=input.location,
            resident_id=resident_pk,
        )
        return await _changed(info, lambda now: care.raise_work_order(new, requester, now=now))

    @strawberry.mutation(
        description="Move a work order along open → acknowledged → in progress → resolved → closed (or "
        "cancel, reopen a resolved one); other changes are refused."
    )
    async def change_work_order_status(
        self, info: YiyangInfo, input: ChangeWorkOrderStatusInput
    ) -> WorkOrderPayload:
        pk, resident_id, requester = await _target(info, input.work_order_id)
        own = requester == _me(info) and input.change in care.REQUESTER_TRANSITIONS
        if not own:
            await _require_handler(info, pk, resident_id)
        await _decide(info, Action.WORK_ORDER_RAISE if own else Action.WORK_ORDER_HANDLE, resident_id)
        return await _changed(
            info, lambda now: care.change_status(pk, input.change, actor=recorder(info), now=now)
        )

    @strawberry.mutation(
        description="Hand a work order to a member of its department, or re-route it to another department "
        "(and optionally a member of it): its handlers and supervisors only; the deadlines stay."
    )
    async def assign_work_order(self, info: YiyangInfo, input: AssignWorkOrderInput) -> WorkOrderPayload:
        require(info.context.principal, Action.WORK_ORDER_HANDLE)  # the role first, then the ids
        assignee = _staff_member_pk(info, input.assignee_id, "assigneeId")  # another's staff: NOT_FOUND
        pk, resident_id, _ = await _target(info, input.work_order_id)
        await _require_handler(info, pk, resident_id)
        await _decide(info, Action.WORK_ORDER_HANDLE, resident_id)
        return await _changed(
            info,
            lambda now: care.assign(
                pk,
                assignee_account_id=assignee,
                department_code=input.department,
                actor=recorder(info),
                now=now,
            ),
        )

    @strawberry.mutation(description="Comment on a work order (its requester, or those who handle it).")
    async def comment_on_work_order(
        self, info: YiyangInfo, input: CommentOnWorkOrderInput
    ) -> CommentOnWorkOrderPayload:
        pk, resident_id, requester = await _target(info, input.work_order_id)
        own = requester == _me(info)
        if not own:
            await _require_handler(info, pk, resident_id)
        await _decide(info, Action.WORK_ORDER_RAISE if own else Action.WORK_ORDER_HANDLE, resident_id)
        try:
            found = await care.add_comment(pk, input.body, author=_requester(info), now=datetime.now(UTC))
        except USER_ERROR_TYPES as error:
            return CommentOnWorkOrderPayload(comment=None, user_errors=user_errors(info, error))
        institution_id = info.context.require_tenant().institution_id
        return CommentOnWorkOrderPayload(
            comment=CommentType.of(found, institution_id, _me(info)), user_errors=[]
        )

    @strawberry.mutation(
        description="The requester's rating, 1 to 5, once the work order is resolved; rating a resolved "
        "work order closes it. Once only."
    )
    async def rate_work_order(self, info: YiyangInfo, input: RateWorkOrderInput) -> WorkOrderPayload:
        pk, resident_id, _ = await _target(info, input.work_order_id)
        await _decide(info, Action.WORK_ORDER_RAISE, resident_id)
        return await _changed(
            info, lambda now: care.rate(pk, input.rating, input.comment, requester=_requester(info), now=now)
        )

    @strawberry.mutation(description="Route a category (of a priority, or of any) to a department.")
    async def set_work_order_routing_rule(
        self, info: YiyangInfo, input: SetWorkOrderRoutingRuleInput
    ) -> SetWorkOrderRoutingRulePayload:
        require(info.context.principal, Action.WORK_ORDER_CONFIGURE)
        try:
            rule = await care.set_routing_rule(
                input.category, input.priority, input.department, by=recorder(info), now=datetime.now(UTC)
            )
        except USER_ERROR_TYPES as error:
            return SetWorkOrderRoutingRulePayload(rule=None, user_errors=user_errors(info, error))
        return SetWorkOrderRoutingRulePayload(rule=_rule(rule), user_errors=[])

    @strawberry.mutation(
        description="The response and resolution deadlines (minutes) of a category and priority, for work "
        "orders raised from now on."
    )
    async def set_work_order_sla_policy(
        self, info: YiyangInfo, input: SetWorkOrderSlaPolicyInput
    ) -> SetWorkOrderSlaPolicyPayload:
        require(info.context.principal, Action.WORK_ORDER_CONFIGURE)
        try:
            policy = await care.set_sla_policy(
                input.category,
                input.priority,
                input.response_minutes,
                input.resolution_minutes,
                by=recorder(info),
                now=datetime.now(UTC),
            )
        except USER_ERROR_TYPES as error:
            return SetWorkOrderSlaPolicyPayload(policy=None, user_errors=user_errors(info, error))
        return SetWorkOrderSlaPolicyPayload(policy=_policy(policy), user_errors=[])

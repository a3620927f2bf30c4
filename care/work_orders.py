"""Work orders (工单): service requests and complaints raised by staff or by family accounts, routed to a
department by rules kept as data, with deadlines for response and resolution from SLA policies kept as
data, a status flow, assignment, comments, escalation on breach and a rating by the requester
(migrations/tenant/0022_work_orders.sql, docs/work_orders.md).

Status flow: open → acknowledged → in_progress → resolved → closed; `cancel` from open, acknowledged or
in progress; `reopen` from resolved (back to in progress; the resolution deadline stays). Anything else
is refused (Conflict). The first acknowledgement, assignment, start or resolution is the response
(`responded_at`); `resolved_at` and `closed_at` are kept, so response and resolution times are stored
for the KPIs (`kpis`). Deadlines are fixed when the work order is raised: a later change of a policy
does not move them.

Routing means something: a work order is handled (acknowledged, started, resolved, cancelled,
assigned, re-routed, commented on by staff) only by its department's members, its assignee and the
supervisors (`handles`, `require_handler`); others in the institution may still see it if their role
lets them view work orders. Re-routing to another department (`assign` with a department) keeps the
deadlines and is recorded in the history as `rerouted`.

`sweep_sla_breaches(now)` (run every minute by the worker sweep) marks each unmet deadline escalated once
per work order and deadline, and tells the department's lead roles in the same unit of work.

Free text (title, description, comments, the rating's comment) is sealed under the resident's data key
when the work order is about a resident, else under the institution's own data key (`INSTITUTION_SUBJECT`,
data_key subject 0, never destroyed). Every function takes `now` from the caller and runs in the tenant's
unit of work.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, TypeVar

from care.notifications import (
    WORK_ORDER_CREATED,
    WORK_ORDER_REROUTED,
    WORK_ORDER_RESOLVED,
    WORK_ORDER_SLA_BREACHED,
    Notification,
    notify,
)
from care.sealed_rows import ERASED, execute, padded, text, unpadded
from care.tasks import audit_sweep
from compliance.encryption import DataKeyDestroyed, FieldCipher, field_cipher
from compliance.principals import StaffRole
from tenants.context import current_tenant
from tenants.errors import Conflict, Erased, Forbidden, InvalidInput, NotFound, raise_if_any
from tenants.schema_names import SHARED_SCHEMA

TABLE, COMMENT_TABLE = "work_order", "work_order_comment"
INSTITUTION_SUBJECT = 0  # the data key of what is about no resident: the institution's own
SWEEP_SUBJECT = "system:work-orders"
ESCALATE_ACTION = "work_order.escalate"
MAX_TITLE, MAX_DESCRIPTION, MAX_COMMENT, MAX_LOCATION = 120, 2000, 2000, 100
MAX_RESPONSE_MINUTES, MAX_RESOLUTION_MINUTES = 43_200, 525_600  # 30 days, a year
_BLOCK = 64
E = TypeVar("E", bound=StrEnum)


class Category(StrEnum):
    MAINTENANCE = "maintenance"
    CLEANING = "cleaning"
    MEALS = "meals"
    CARE = "care"
    BILLING = "billing"
    OTHER = "other"


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    URGENT = "urgent"


class Kind(StrEnum):
    REQUEST = "request"
    COMPLAINT = "complaint"


class Status(StrEnum):
    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    IN_PROGRESS = "in_progress"
    RESOLVED = "resolved"
    CLOSED = "closed"
    CANCELLED = "cancelled"


class Transition(StrEnum):
    ACKNOWLEDGE = "acknowledge"
    START = "start"
    RESOLVE = "resolve"
    CLOSE = "close"
    REOPEN = "reopen"
    CANCEL = "cancel"


class RequesterKind(StrEnum):
    STAFF = "staff"
    FAMILY = "family"


# (from which statuses, to which status, the event's action)
_FLOW: dict[Transition, tuple[frozenset[Status], Status, str]] = {
    Transition.ACKNOWLEDGE: (frozenset({Status.OPEN}), Status.ACKNOWLEDGED, "acknowledged"),
    Transition.START: (frozenset({Status.OPEN, Status.ACKNOWLEDGED}), Status.IN_PROGRESS, "started"),
    Transition.RESOLVE: (
        frozenset({Status.ACKNOWLEDGED, Status.IN_PROGRESS}),
        Status.RESOLVED,
        "resolved",
    ),
    Transition.CLOSE: (frozenset({Status.RESOLVED}), Status.CLOSED, "closed"),
    Transition.REOPEN: (frozenset({Status.RESOLVED}), Status.IN_PROGRESS, "reopened"),
    Transition.CANCEL: (
        frozenset({Status.OPEN, Status.ACKNOWLEDGED, Status.IN_PROGRESS}),
        Status.CANCELLED,
        "cancelled",
    ),
}
# What the requester may do to their own work order (the handlers may do every transition).
REQUESTER_TRANSITIONS = frozenset({Transition.CLOSE, Transition.REOPEN, Transition.CANCEL})
FINISHED = frozenset({Status.CLOSED, Status.CANCELLED})


@dataclass(frozen=True, slots=True)
class Department:
    code: str
    name_zh: str
    name_en: str
    member_roles: frozenset[StaffRole]
    lead_roles: frozenset[StaffRole]


@dataclass(frozen=True, slots=True)
class RoutingRule:
    category: Category
    priority: Priority | None  # None: any priority
    department_code: str
    updated_by: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class SlaPolicy:
    category: Category
    priority: Priority
    response_minutes: int
    resolution_minutes: int
    updated_by: str
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class Requester:
    kind: RequesterKind
    account_id: int

    @property
    def subject(self) -> str:
        return f"account:{self.account_id}"


@dataclass(frozen=True, slots=True)
class NewWorkOrder:
    """What a requester gives; the choices as strings (checked here, bad ones are user errors)."""

    kind: str
    category: str
    priority: str
    title: str
    description: str | None = None
    location: str | None = None
    resident_id: int | None = None


@dataclass(frozen=True, slots=True)
class WorkOrder:
    id: int
    kind: Kind
    category: Category
    priority: Priority
    resident_id: int | None
    location: str | None
    title: str | None  # None only when the resident was erased
    description: str | None
    requester_kind: RequesterKind
    requester_account_id: int
    department_code: str
    assignee_account_id: int | None
    status: Status
    created_at: datetime
    response_due_at: datetime
    resolution_due_at: datetime
    responded_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    cancelled_at: datetime | None
    reopened_count: int
    response_escalated_at: datetime | None
    resolution_escalated_at: datetime | None
    rating: int | None
    rating_comment: str | None
    rated_at: datetime | None
    erased: bool = False

    def response_breached(self, now: datetime) -> bool:
        """The response deadline passed without a response (or the response came late)."""
        if self.responded_at is not None:
            return self.responded_at > self.response_due_at
        return self.status is not Status.CANCELLED and now > self.response_due_at

    def resolution_breached(self, now: datetime) -> bool:
        if self.resolved_at is not None:
            return self.resolved_at > self.resolution_due_at
        return self.status not in FINISHED and now > self.resolution_due_at

    @property
    def response_minutes(self) -> float | None:
        if self.responded_at is None:
            return None
        return (self.responded_at - self.created_at).total_seconds() / 60

    @property
    def resolution_minutes(self) -> float | None:
        if self.resolved_at is None:
            return None
        return (self.resolved_at - self.created_at).total_seconds() / 60


@dataclass(frozen=True, slots=True)
class Comment:
    id: int
    work_order_id: int
    author_kind: RequesterKind
    author_account_id: int
    body: str | None  # None only when the resident was erased
    created_at: datetime


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    work_order_id: int
    occurred_at: datetime
    actor: str
    action: str
    from_status: Status | None
    to_status: Status | None
    department_code: str | None
    assignee_account_id: int | None


@dataclass(frozen=True, slots=True)
class Queue:
    """What a staff member handles: the work orders routed to `department_codes` or assigned to
    `account_id` (`queue_of`)."""

    department_codes: frozenset[str]
    account_id: int | None


@dataclass(frozen=True, slots=True)
class WorkOrderFilter:
    statuses: frozenset[Status] = frozenset()
    category: Category | None = None
    department_code: str | None = None
    assignee_account_id: int | None = None
    requester_account_id: int | None = None
    resident_id: int | None = None
    breached: bool | None = None  # a deadline passed unmet (response or resolution), as of `now`
    resident_ids: frozenset[int] | None = None  # only about these residents (a family account's)
    mine_account_id: int | None = None  # raised by or assigned to this account
    queue: Queue | None = None  # routed to one of these departments or assigned to this account


@dataclass(frozen=True, slots=True)
class CategoryKpi:
    """Figures of the work orders raised in a period, per category: institution level, no resident."""

    category: Category
    raised: int
    complaints: int
    responded: int
    median_response_minutes: float | None
    response_within_sla_percent: float | None  # of those responded or past their response deadline
    resolved: int
    median_resolution_minutes: float | None
    resolution_within_sla_percent: float | None
    average_rating: float | None
    ratings: int


# Departments, routing, SLA policies ------------------------------------------------------------------


def _roles(values: Iterable[str]) -> frozenset[StaffRole]:
    return frozenset(StaffRole(value) for value in values if value in StaffRole._value2member_map_)


async def departments() -> list[Department]:
    rows = await execute(
        "SELECT code, name_zh, name_en, member_roles, lead_roles FROM work_order_department ORDER BY code", []
    )
    return [
        Department(
            row["code"],
            row["name_zh"],
            row["name_en"],
            _roles(row["member_roles"]),
            _roles(row["lead_roles"]),
        )
        for row in rows
    ]


async def department(code: str) -> Department:
    for found in await departments():
        if found.code == code:
            return found
    raise InvalidInput("Unknown department.", field="department")


# Who handles a work order ----------------------------------------------------------------------------

# Supervise every department: may handle any work order of the institution, whatever it is routed to.
SUPERVISOR_ROLES = frozenset({StaffRole.INSTITUTION_ADMIN})
NOT_HANDLER = "Only the department's staff, the assignee or a supervisor handle this work order."


class NotHandler(Forbidden):
    """Refused because the work order is routed to a department the caller does not handle."""

    reason = "NOT_HANDLER"


def handles(
    routed_to: Department,
    assignee_account_id: int | None,
    *,
    account_id: int | None,
    roles: frozenset[StaffRole],
) -> bool:
    """Whether a staff member holding `roles` in the institution (and signed in as `account_id`) handles a
    work order routed to `routed_to` and assigned to `assignee_account_id`: a member of the department (one
    of its member roles), its assignee, or a supervisor (the institution admin, `SUPERVISOR_ROLES`, for
    every department, and the department's own lead roles: the head nurse for nursing).

    This is object-level data, like "this family account follows this resident": the policy
    (compliance/policy.py, `work_order.handle`) grants the role-level right to handle work orders at all;
    this decides which ones, from the department's role mapping (`work_order_department`)."""
    if account_id is not None and account_id == assignee_account_id:
        return True
    return bool(roles & (routed_to.member_roles | routed_to.lead_roles | SUPERVISOR_ROLES))


async def require_handler(work_order_id: int, *, account_id: int | None, roles: frozenset[StaffRole]) -> None:
    """NotHandler (FORBIDDEN) unless the caller `handles` the work order as it is routed now; the row is
    locked, so a concurrent re-routing cannot slip in between this decision and the change (same unit of
    work). NotFound for an unknown work order."""
    rows = await execute(
        f"SELECT department_code, assignee_account_id FROM {TABLE} WHERE id = $1 FOR UPDATE", [work_order_id]
    )
    if not rows:
        raise NotFound(NOT_FOUND, field="workOrderId")
    known = {found.code: found for found in await departments()}
    routed_to = known.get(rows[0]["department_code"])
    if routed_to is None or not handles(
        routed_to, rows[0]["assignee_account_id"], account_id=account_id, roles=roles
    ):
        raise NotHandler(NOT_HANDLER)


async def queue_of(account_id: int | None, roles: frozenset[StaffRole]) -> Queue:
    """The departments a staff member handles (as `handles` decides) and their account: their queue."""
    codes = frozenset(
        found.code for found in await departments() if handles(found, None, account_id=None, roles=roles)
    )
    return Queue(codes, account_id)


async def routing_rules() -> list[RoutingRule]:
    rows = await execute(
        """SELECT category, priority, department_code, updated_by, updated_at FROM work_order_routing_rule
           ORDER BY category, priority NULLS FIRST""",
        [],
    )
    return [
        RoutingRule(
            Category(row["category"]),
            Priority(row["priority"]) if row["priority"] else None,
            row["department_code"],
            row["updated_by"],
            row["updated_at"],
        )
        for row in rows
    ]


async def sla_policies() -> list[SlaPolicy]:
    rows = await execute(
        """SELECT category, priority, response_minutes, resolution_minutes, updated_by, updated_at
           FROM work_order_sla_policy ORDER BY category, priority""",
        [],
    )
    return [_policy(row) for row in rows]


def _policy(row: Mapping[str, Any]) -> SlaPolicy:
    return SlaPolicy(
        Category(row["category"]),
        Priority(row["priority"]),
        row["response_minutes"],
        row["resolution_minutes"],
        row["updated_by"],
        row["updated_at"],
    )


async def route(category: Category, priority: Priority) -> str:
    """The department of a work order: the rule naming its category and priority, else its category's."""
    rows = await execute(
        """SELECT department_code FROM work_order_routing_rule
           WHERE category = $1 AND (priority = $2 OR priority IS NULL)
           ORDER BY priority NULLS LAST LIMIT 1""",
        [category.value, priority.value],
    )
    if rows:
        return rows[0]["department_code"]
    return "front_desk"  # no rule (an admin removed it by hand): the front desk sorts it out


async def sla_for(category: Category, priority: Priority) -> SlaPolicy:
    rows = await execute(
        """SELECT category, priority, response_minutes, resolution_minutes, updated_by, updated_at
           FROM work_order_sla_policy WHERE category = $1 AND priority = $2""",
        [category.value, priority.value],
    )
    if not rows:  # a policy is seeded for every pair; a missing one would be a bug
        raise NotFound("No SLA policy for this category and priority.", field="priority")
    return _policy(rows[0])


def _choice(
    enum: type[E], value: str | None, name: str, problems: list[InvalidInput], message: str
) -> E | None:
    cleaned = (value or "").strip().lower()
    if cleaned in enum._value2member_map_:
        return enum(cleaned)
    problems.append(InvalidInput(message, field=name))
    return None


UNKNOWN_CATEGORY = "Unknown category: maintenance, cleaning, meals, care, billing or other."
UNKNOWN_PRIORITY = "Unknown priority: low, normal, high or urgent."
UNKNOWN_KIND = "Unknown kind: request or complaint."
UNKNOWN_DEPARTMENT = "Unknown department."


async def set_routing_rule(
    category: str, priority: str | None, department_code: str, *, by: str, now: datetime
) -> RoutingRule:
    """Route `category` (of `priority`, or of any priority) to a department from now on."""
    problems: list[InvalidInput] = []
    chosen = _choice(Category, category, "category", problems, UNKNOWN_CATEGORY)
    level = None
    if priority is not None and priority.strip():
        level = _choice(Priority, priority, "priority", problems, UNKNOWN_PRIORITY)
    known = {found.code for found in await departments()}
    code = (department_code or "").strip()
    if code not in known:
        problems.append(InvalidInput(UNKNOWN_DEPARTMENT, field="department"))
    raise_if_any(problems)
    assert chosen is not None
    await execute(
        """INSERT INTO work_order_routing_rule (category, priority, department_code, updated_by, updated_at)
           VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (category, (coalesce(priority, ''))) DO UPDATE
           SET department_code = EXCLUDED.department_code, updated_by = EXCLUDED.updated_by,
               updated_at = EXCLUDED.updated_at""",
        [chosen.value, level.value if level else None, code, by, now],
    )
    return RoutingRule(chosen, level, code, by, now)


async def set_sla_policy(
    category: str, priority: str, response_minutes: int, resolution_minutes: int, *, by: str, now: datetime
) -> SlaPolicy:
    """The deadlines of work orders of `category` and `priority` raised from now on."""
    problems: list[InvalidInput] = []
    chosen = _choice(Category, category, "category", problems, UNKNOWN_CATEGORY)
    level = _choice(Priority, priority, "priority", problems, UNKNOWN_PRIORITY)
    if not 0 < response_minutes <= MAX_RESPONSE_MINUTES:
        problems.append(
            InvalidInput("Between 1 and {max} minutes.", field="responseMinutes", max=MAX_RESPONSE_MINUTES)
        )
    if not 0 < resolution_minutes <= MAX_RESOLUTION_MINUTES:
        problems.append(
            InvalidInput(
                "Between 1 and {max} minutes.", field="resolutionMinutes", max=MAX_RESOLUTION_MINUTES
            )
        )
    elif resolution_minutes < response_minutes:
        problems.append(
            InvalidInput(
                "The resolution deadline cannot come before the response deadline.", field="resolutionMinutes"
            )
        )
    raise_if_any(problems)
    assert chosen is not None and level is not None
    rows = await execute(
        """INSERT INTO work_order_sla_policy
               (category, priority, response_minutes, resolution_minutes, updated_by, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (category, priority) DO UPDATE
           SET response_minutes = EXCLUDED.response_minutes, resolution_minutes = EXCLUDED.resolution_minutes,
               updated_by = EXCLUDED.updated_by, updated_at = EXCLUDED.updated_at
           RETURNING category, priority, response_minutes, resolution_minutes, updated_by, updated_at""",
        [chosen.value, level.value, response_minutes, resolution_minutes, by, now],
    )
    return _policy(rows[0])


# Sealing ---------------------------------------------------------------------------------------------


def _subject(resident_id: int | None) -> int:
    return INSTITUTION_SUBJECT if resident_id is None else resident_id


async def _writable(cipher: FieldCipher, subject: int) -> None:
    try:
        await cipher.ensure_data_keys([subject])
    except DataKeyDestroyed as exc:
        raise Erased(ERASED) from exc


async def _seal(cipher: FieldCipher, table: str, column: str, row_id: int, subject: int, value: str) -> bytes:
    try:
        return await cipher.encrypt(
            padded(value, _BLOCK), table=table, column=column, row_id=row_id, subject_id=subject
        )
    except DataKeyDestroyed as exc:
        raise Erased(ERASED) from exc


async def _next_id(table: str) -> int:
    rows = await execute(f"SELECT nextval(pg_get_serial_sequence('{table}', 'id')) AS id", [])
    return int(rows[0]["id"])


_COLUMNS = """id, kind, category, priority, resident_id, location, title, description, requester_kind,
    requester_account_id, department_code, assignee_account_id, status, created_at, response_due_at,
    resolution_due_at, responded_at, resolved_at, closed_at, cancelled_at, reopened_count,
    response_escalated_at, resolution_escalated_at, rating, rating_comment, rated_at"""
_SEALED = ("title", "description", "rating_comment")


async def _opened(rows: Iterable[Mapping[str, Any]]) -> list[WorkOrder]:
    rows = list(rows)
    if not rows:
        return []
    cipher = await field_cipher()
    await cipher.load_data_keys({_subject(row["resident_id"]) for row in rows})
    found: list[WorkOrder] = []
    for row in rows:
        subject = _subject(row["resident_id"])
        erased = cipher.erased(subject)
        opened: dict[str, str | None] = dict.fromkeys(_SEALED)
        if not erased:
            values = await cipher.open_row(
                [row[column] for column in _SEALED],
                table=TABLE,
                columns=_SEALED,
                row_id=row["id"],
                subject_id=subject,
            )
            opened = {
                column: None if value is None else unpadded(value)
                for column, value in zip(_SEALED, values, strict=True)
            }
        found.append(
            WorkOrder(
                id=row["id"],
                kind=Kind(row["kind"]),
                category=Category(row["category"]),
                priority=Priority(row["priority"]),
                resident_id=row["resident_id"],
                location=row["location"],
                title=opened["title"],
                description=opened["description"],
                requester_kind=RequesterKind(row["requester_kind"]),
                requester_account_id=row["requester_account_id"],
                department_code=row["department_code"],
                assignee_account_id=row["assignee_account_id"],
                status=Status(row["status"]),
                created_at=row["created_at"],
                response_due_at=row["response_due_at"],
                resolution_due_at=row["resolution_due_at"],
                responded_at=row["responded_at"],
                resolved_at=row["resolved_at"],
                closed_at=row["closed_at"],
                cancelled_at=row["cancelled_at"],
                reopened_count=row["reopened_count"],
                response_escalated_at=row["response_escalated_at"],
                resolution_escalated_at=row["resolution_escalated_at"],
                rating=row["rating"],
                rating_comment=opened["rating_comment"],
                rated_at=row["rated_at"],
                erased=erased,
            )
        )
    return found


# Raising ---------------------------------------------------------------------------------------------


async def _event(
    work_order_id: int,
    actor: str,
    action: str,
    now: datetime,
    *,
    from_status: Status | None = None,
    to_status: Status | None = None,
    department_code: str | None = None,
    assignee_account_id: int | None = None,
) -> int:
    rows = await execute(
        """INSERT INTO work_order_event (work_order_id, occurred_at, actor, action, from_status, to_status,
               department_code, assignee_account_id)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id""",
        [
            work_order_id,
            now,
            actor,
            action,
            from_status.value if from_status else None,
            to_status.value if to_status else None,
            department_code,
            assignee_account_id,
        ],
    )
    return int(rows[0]["id"])


def _to_department(
    to: Department, kind: str, message: str, key: str, work_order_id: int, resident_id: int | None
) -> Notification:
    """A notification about a work order to a department: its members, or its leads when none is named."""
    return Notification(
        kind=kind,
        message=message,
        idempotency_key=key,
        roles=to.member_roles or to.lead_roles,
        params={"work_order_id": work_order_id},
        resident_id=resident_id,
        subject_type="WorkOrder",
        subject_id=work_order_id,
    )


async def raise_work_order(new: NewWorkOrder, requester: Requester, *, now: datetime) -> WorkOrder:
    """A new work order, routed and given its deadlines; the department told. ValidationFailed with every
    problem of the input; NotFound for an unknown resident; Erased for an erased one."""
    problems: list[InvalidInput] = []
    kind = _choice(Kind, new.kind, "kind", problems, UNKNOWN_KIND)
    category = _choice(Category, new.category, "category", problems, UNKNOWN_CATEGORY)
    priority = _choice(Priority, new.priority, "priority", problems, UNKNOWN_PRIORITY)
    title = text(new.title, "title", problems, limit=MAX_TITLE, required=True)
    description = text(new.description, "description", problems, limit=MAX_DESCRIPTION)
    location = text(new.location, "location", problems, limit=MAX_LOCATION)
    raise_if_any(problems)
    assert kind is not None and category is not None and priority is not None and title is not None
    if new.resident_id is not None and not await execute(
        "SELECT 1 FROM resident WHERE id = $1", [new.resident_id]
    ):
        raise NotFound("Resident not found.", field="residentId")
    subject = _subject(new.resident_id)
    cipher = await field_cipher()
    await _writable(cipher, subject)
    department_code = await route(category, priority)
    policy = await sla_for(category, priority)
    work_order_id = await _next_id(TABLE)
    sealed_title = await _seal(cipher, TABLE, "title", work_order_id, subject, title)
    sealed_description = (
        None
        if description is None
        else await _seal(cipher, TABLE, "description", work_order_id, subject, description)
    )
    await execute(
        f"""INSERT INTO {TABLE} (id, kind, category, priority, resident_id, location, title, description,
                requester_kind, requester_account_id, department_code, created_at, response_due_at,
                resolution_due_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)""",
        [
            work_order_id,
            kind.value,
            category.value,
            priority.value,
            new.resident_id,
            location,
            sealed_title,
            sealed_description,
            requester.kind.value,
            requester.account_id,
            department_code,
            now,
            now + timedelta(minutes=policy.response_minutes),
            now + timedelta(minutes=policy.resolution_minutes),
        ],
    )
    await _event(
        work_order_id,
        requester.subject,
        "raised",
        now,
        to_status=Status.OPEN,
        department_code=department_code,
    )
    await notify(
        _to_department(
            await department(department_code),
            "work_order.created",
            WORK_ORDER_CREATED,
            f"work_order.created:{work_order_id}",
            work_order_id,
            new.resident_id,
        )
    )
    return await work_order(work_order_id)


# Reading ---------------------------------------------------------------------------------------------

NOT_FOUND = "Work order not found."


async def work_order(work_order_id: int, *, lock: bool = False) -> WorkOrder:
    clause = " FOR UPDATE" if lock else ""
    rows = await execute(f"SELECT {_COLUMNS} FROM {TABLE} WHERE id = $1{clause}", [work_order_id])
    if not rows:
        raise NotFound(NOT_FOUND, field="workOrderId")
    (found,) = await _opened(rows)
    return found


async def about(work_order_id: int) -> tuple[int | None, int]:
    """(resident id or None, requester account id) of a work order: what access is decided on."""
    rows = await execute(
        f"SELECT resident_id, requester_account_id FROM {TABLE} WHERE id = $1", [work_order_id]
    )
    if not rows:
        raise NotFound(NOT_FOUND, field="workOrderId")
    return rows[0]["resident_id"], rows[0]["requester_account_id"]


def _where(given: WorkOrderFilter, now: datetime, parameters: list[object]) -> str:
    conditions = ["TRUE"]

    def add(condition: str, value: object) -> None:
        parameters.append(value)
        conditions.append(condition.format(f"${len(parameters)}"))

    if given.statuses:
        add("status = ANY({}::varchar[])", sorted(status.value for status in given.statuses))
    if given.category is not None:
        add("category = {}", given.category.value)
    if given.department_code is not None:
        add("department_code = {}", given.department_code)
    if given.assignee_account_id is not None:
        add("assignee_account_id = {}", given.assignee_account_id)
    if given.requester_account_id is not None:
        add("requester_account_id = {}", given.requester_account_id)
    if given.resident_id is not None:
        add("resident_id = {}", given.resident_id)
    if given.resident_ids is not None:
        add("resident_id = ANY({}::bigint[])", sorted(given.resident_ids))
    if given.mine_account_id is not None:
        parameters.append(given.mine_account_id)
        mine = f"${len(parameters)}"
        conditions.append(f"(requester_account_id = {mine} OR assignee_account_id = {mine})")
    if given.queue is not None:
        parameters.append(sorted(given.queue.department_codes))
        codes = f"${len(parameters)}::varchar[]"
        parameters.append(given.queue.account_id)
        me = f"${len(parameters)}::bigint"
        conditions.append(f"(department_code = ANY({codes}) OR assignee_account_id = {me})")
    if given.breached is not None:
        parameters.append(now)
        at = f"${len(parameters)}::timestamptz"
        breached = f"""(
            coalesce(responded_at, CASE WHEN status <> 'cancelled' THEN {at} END) > response_due_at
            OR coalesce(resolved_at, CASE WHEN status NOT IN ('closed', 'cancelled') THEN {at} END)
                > resolution_due_at)"""
        conditions.append(breached if given.breached else f"NOT coalesce({breached}, FALSE)")
    return " AND ".join(conditions)


async def work_orders_page(
    given: WorkOrderFilter, *, now: datetime, after_id: int | None, limit: int
) -> list[WorkOrder]:
    """Work orders matching `given`, newest first."""
    parameters: list[object] = []
    where = _where(given, now, parameters)
    parameters.extend([after_id, limit])
    n = len(parameters)
    rows = await execute(
        f"""SELECT {_COLUMNS} FROM {TABLE} WHERE {where} AND (${n - 1}::bigint IS NULL OR id < ${n - 1})
            ORDER BY id DESC LIMIT ${n}""",
        parameters,
    )
    return await _opened(rows)


async def count_work_orders(given: WorkOrderFilter, *, now: datetime) -> int:
    parameters: list[object] = []
    where = _where(given, now, parameters)
    rows = await execute(f"SELECT count(*) AS n FROM {TABLE} WHERE {where}", parameters)
    return int(rows[0]["n"])


async def resident_work_orders(resident_id: int) -> list[WorkOrder]:
    """Every work order about the resident, oldest first (the data-subject export)."""
    rows = await execute(f"SELECT {_COLUMNS} FROM {TABLE} WHERE resident_id = $1 ORDER BY id", [resident_id])
    return await _opened(rows)


async def comments_of(work_order_ids: Sequence[int]) -> dict[int, list[Comment]]:
    wanted = sorted(set(work_order_ids))
    found: dict[int, list[Comment]] = {work_order_id: [] for work_order_id in wanted}
    rows = await execute(
        f"""SELECT id, work_order_id, resident_id, author_kind, author_account_id, body, created_at
            FROM {COMMENT_TABLE} WHERE work_order_id = ANY($1::bigint[]) ORDER BY id""",
        [wanted],
    )
    if not rows:
        return found
    cipher = await field_cipher()
    await cipher.load_data_keys({_subject(row["resident_id"]) for row in rows})
    for row in rows:
        subject = _subject(row["resident_id"])
        body = None
        if not cipher.erased(subject):
            raw = await cipher.decrypt(
                row["body"], table=COMMENT_TABLE, column="body", row_id=row["id"], subject_id=subject
            )
            body = unpadded(raw)
        found[row["work_order_id"]].append(
            Comment(
                row["id"],
                row["work_order_id"],
                RequesterKind(row["author_kind"]),
                row["author_account_id"],
                body,
                row["created_at"],
            )
        )
    return found


async def events_of(work_order_ids: Sequence[int]) -> dict[int, list[Event]]:
    wanted = sorted(set(work_order_ids))
    found: dict[int, list[Event]] = {work_order_id: [] for work_order_id in wanted}
    rows = await execute(
        """SELECT id, work_order_id, occurred_at, actor, action, from_status, to_status, department_code,
                  assignee_account_id
           FROM work_order_event WHERE work_order_id = ANY($1::bigint[]) ORDER BY id""",
        [wanted],
    )
    for row in rows:
        found[row["work_order_id"]].append(
            Event(
                row["id"],
                row["work_order_id"],
                row["occurred_at"],
                row["actor"],
                row["action"],
                Status(row["from_status"]) if row["from_status"] else None,
                Status(row["to_status"]) if row["to_status"] else None,
                row["department_code"],
                row["assignee_account_id"],
            )
        )
    return found


# Changing --------------------------------------------------------------------------------------------

NOT_ALLOWED = "This change is not allowed in the work order's current status."


async def change_status(work_order_id: int, change: Transition, *, actor: str, now: datetime) -> WorkOrder:
    """Move a work order along its flow; Conflict for a change its status does not allow."""
    found = await work_order(work_order_id, lock=True)
    allowed_from, to, action = _FLOW[change]
    if found.status not in allowed_from:
        raise Conflict(NOT_ALLOWED, field="change")
    sets = ["status = $2"]
    parameters: list[object] = [work_order_id, to.value, now]
    if found.responded_at is None and change in (
        Transition.ACKNOWLEDGE,
        Transition.START,
        Transition.RESOLVE,
    ):
        sets.append("responded_at = $3")
    match change:
        case Transition.RESOLVE:
            sets.append("resolved_at = $3")
        case Transition.CLOSE:
            sets.append("closed_at = $3")
        case Transition.CANCEL:
            sets.append("cancelled_at = $3")
        case Transition.REOPEN:
            sets.extend(["resolved_at = NULL", "reopened_count = reopened_count + 1"])
        case _:
            pass
    # $3 (now) is typed even where no column takes it.
    await execute(
        f"UPDATE {TABLE} SET {', '.join(sets)} WHERE id = $1 AND $3::timestamptz IS NOT NULL", parameters
    )
    await _event(work_order_id, actor, action, now, from_status=found.status, to_status=to)
    if change is Transition.RESOLVE:
        await notify(
            Notification(
                kind="work_order.resolved",
                message=WORK_ORDER_RESOLVED,
                # Once per resolution: a reopened work order resolved again tells the requester again.
                idempotency_key=f"work_order.resolved:{work_order_id}:{found.reopened_count}",
                account_ids=frozenset({found.requester_account_id}),
                params={"work_order_id": work_order_id},
                resident_id=found.resident_id,
                subject_type="WorkOrder",
                subject_id=work_order_id,
            )
        )
    return await work_order(work_order_id)


async def assign(
    work_order_id: int,
    *,
    assignee_account_id: int | None,
    department_code: str | None,
    actor: str,
    now: datetime,
) -> WorkOrder:
    """Hand a work order to a department (optional) and a member of it (optional, a staff account holding
    one of its roles).

    Naming the department it is routed to already, or only an assignee, assigns it: an open work order is
    acknowledged by it (the response). Naming another department re-routes it (`rerouted` in the
    history): its deadlines stay, the assignee is the one given (else none: the old department's is no
    member of the new one), the new department's member roles are told; without an assignee the status
    stays and it is no response (passing a request on is not answering it). Who may do this is decided
    by the caller (`require_handler`: the current department's handlers)."""
    found = await work_order(work_order_id, lock=True)
    if found.status in FINISHED or found.status is Status.RESOLVED:
        raise Conflict(NOT_ALLOWED, field="workOrderId")
    problems: list[InvalidInput] = []
    known = {item.code: item for item in await departments()}
    code = found.department_code
    if department_code is not None:
        code = department_code.strip()
        if code not in known:
            problems.append(InvalidInput(UNKNOWN_DEPARTMENT, field="department"))
    if assignee_account_id is None and department_code is None:
        problems.append(InvalidInput("Give a department, an assignee or both.", field="assigneeId"))
    if assignee_account_id is not None and code in known:
        roles = sorted(role.value for role in known[code].member_roles)
        rows = await execute(
            f"""SELECT 1 FROM {SHARED_SCHEMA}.staff_membership m
                JOIN {SHARED_SCHEMA}.user_account a ON a.id = m.account_id AND a.status = 'active'
                WHERE m.account_id = $1 AND m.institution_id = $2 AND m.role = ANY($3::text[])""",
            [assignee_account_id, current_tenant().institution_id, roles],
        )
        if not rows:
            problems.append(
                InvalidInput("The assignee is not a member of the department.", field="assigneeId")
            )
    raise_if_any(problems)
    rerouted = code != found.department_code
    responds = assignee_account_id is not None or not rerouted
    status = Status.ACKNOWLEDGED if found.status is Status.OPEN and responds else found.status
    await execute(
        f"""UPDATE {TABLE} SET department_code = $2, assignee_account_id = $3, status = $4,
                responded_at = CASE WHEN $6 THEN coalesce(responded_at, $5) ELSE responded_at END
            WHERE id = $1""",
        [work_order_id, code, assignee_account_id, status.value, now, responds],
    )
    event_id = await _event(
        work_order_id,
        actor,
        "rerouted" if rerouted else "assigned",
        now,
        from_status=found.status,
        to_status=status,
        department_code=code,
        assignee_account_id=assignee_account_id,
    )
    if rerouted:
        await notify(
            _to_department(
                known[code],
                "work_order.rerouted",
                WORK_ORDER_REROUTED,
                f"work_order.rerouted:{work_order_id}:{event_id}",
                work_order_id,
                found.resident_id,
            )
        )
    return await work_order(work_order_id)


async def add_comment(work_order_id: int, body: str, *, author: Requester, now: datetime) -> Comment:
    found = await work_order(work_order_id, lock=True)
    problems: list[InvalidInput] = []
    cleaned = text(body, "body", problems, limit=MAX_COMMENT, required=True)
    raise_if_any(problems)
    assert cleaned is not None
    if found.status is Status.CANCELLED:
        raise Conflict(NOT_ALLOWED, field="workOrderId")
    subject = _subject(found.resident_id)
    cipher = await field_cipher()
    await _writable(cipher, subject)
    comment_id = await _next_id(COMMENT_TABLE)
    sealed = await _seal(cipher, COMMENT_TABLE, "body", comment_id, subject, cleaned)
    await execute(
        f"""INSERT INTO {COMMENT_TABLE} (id, work_order_id, resident_id, author_kind, author_account_id, body,
                created_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        [comment_id, work_order_id, found.resident_id, author.kind.value, author.account_id, sealed, now],
    )
    await _event(work_order_id, author.subject, "commented", now)
    return Comment(comment_id, work_order_id, author.kind, author.account_id, cleaned, now)


async def rate(
    work_order_id: int, rating: int, comment: str | None, *, requester: Requester, now: datetime
) -> WorkOrder:
    """The requester's rating (1–5, with an optional comment), once, after resolution; rating a resolved
    work order closes it (the requester confirms the resolution)."""
    found = await work_order(work_order_id, lock=True)
    if found.requester_account_id != requester.account_id:
        raise Forbidden("Only the requester rates a work order.")
    problems: list[InvalidInput] = []
    if not 1 <= rating <= 5:
        problems.append(InvalidInput("A rating is from 1 to 5.", field="rating"))
    cleaned = text(comment, "comment", problems, limit=MAX_COMMENT)
    raise_if_any(problems)
    if found.rating is not None:
        raise Conflict("This work order was rated already.", field="workOrderId")
    if found.status not in (Status.RESOLVED, Status.CLOSED):
        raise Conflict("A work order is rated once it is resolved.", field="workOrderId")
    subject = _subject(found.resident_id)
    sealed = None
    if cleaned is not None:
        cipher = await field_cipher()
        await _writable(cipher, subject)
        sealed = await _seal(cipher, TABLE, "rating_comment", work_order_id, subject, cleaned)
    closing = found.status is Status.RESOLVED
    await execute(
        f"""UPDATE {TABLE} SET rating = $2, rating_comment = $3, rated_at = $4,
                status = CASE WHEN $5 THEN 'closed' ELSE status END,
                closed_at = CASE WHEN $5 THEN $4 ELSE closed_at END
            WHERE id = $1""",
        [work_order_id, rating, sealed, now, closing],
    )
    await _event(work_order_id, requester.subject, "rated", now)
    if closing:
        await _event(
            work_order_id, requester.subject, "closed", now, from_status=found.status, to_status=Status.CLOSED
        )
    return await work_order(work_order_id)


# The SLA sweep ---------------------------------------------------------------------------------------


async def sweep_sla_breaches(now: datetime) -> int:
    """Escalate every work order whose response or resolution deadline passed unmet, once per work order
    and deadline: marked escalated, the history told, the department's lead roles notified, all in the
    current unit of work. How many work orders were escalated (a second run at once finds none)."""
    response = await execute(
        f"""UPDATE {TABLE} SET response_escalated_at = $1
            WHERE responded_at IS NULL AND response_escalated_at IS NULL AND response_due_at < $1
                AND status <> 'cancelled'
            RETURNING id, resident_id, department_code""",
        [now],
    )
    resolution = await execute(
        f"""UPDATE {TABLE} SET resolution_escalated_at = $1
            WHERE resolved_at IS NULL AND resolution_escalated_at IS NULL AND resolution_due_at < $1
                AND status NOT IN ('closed', 'cancelled')
            RETURNING id, resident_id, department_code""",
        [now],
    )
    if not response and not resolution:
        return 0
    leads = {found.code: found.lead_roles for found in await departments()}
    for deadline, rows in (("response", response), ("resolution", resolution)):
        for row in sorted(rows, key=lambda r: r["id"]):
            await _event(
                row["id"], SWEEP_SUBJECT, f"{deadline}_breached", now, department_code=row["department_code"]
            )
            await notify(
                Notification(
                    kind="work_order.sla_breached",
                    message=WORK_ORDER_SLA_BREACHED,
                    idempotency_key=f"work_order.sla_breached:{row['id']}:{deadline}",
                    roles=leads.get(row["department_code"]) or frozenset({StaffRole.INSTITUTION_ADMIN}),
                    params={"work_order_id": row["id"]},
                    resident_id=row["resident_id"],
                    subject_type="WorkOrder",
                    subject_id=row["id"],
                )
            )
    residents = (row["resident_id"] for row in (*response, *resolution) if row["resident_id"])
    await audit_sweep(ESCALATE_ACTION, residents, subject=SWEEP_SUBJECT)
    return len({row["id"] for row in (*response, *resolution)})


# KPIs ------------------------------------------------------------------------------------------------


async def kpis(start: datetime, end: datetime, *, now: datetime) -> list[CategoryKpi]:
    """Per category, the work orders raised in [start, end): counts, median response and resolution
    times (minutes) and the share within their deadlines, the ratings. No resident, no requester."""
    if end <= start:
        raise InvalidInput("The period must end after it starts.", field="to")
    rows = await execute(
        f"""SELECT category,
                count(*) AS raised,
                count(*) FILTER (WHERE kind = 'complaint') AS complaints,
                count(responded_at) AS responded,
                percentile_cont(0.5) WITHIN GROUP (
                    ORDER BY extract(epoch FROM responded_at - created_at) / 60) AS median_response,
                count(*) FILTER (WHERE responded_at <= response_due_at) AS response_within,
                count(*) FILTER (WHERE responded_at IS NOT NULL
                    OR (status <> 'cancelled' AND response_due_at < $3)) AS response_due,
                count(resolved_at) AS resolved,
                percentile_cont(0.5) WITHIN GROUP (
                    ORDER BY extract(epoch FROM resolved_at - created_at) / 60) AS median_resolution,
                count(*) FILTER (WHERE resolved_at <= resolution_due_at) AS resolution_within,
                count(*) FILTER (WHERE resolved_at IS NOT NULL
                    OR (status NOT IN ('closed', 'cancelled') AND resolution_due_at < $3)) AS resolution_due,
                avg(rating)::float AS average_rating,
                count(rating) AS ratings
            FROM {TABLE} WHERE created_at >= $1 AND created_at < $2
            GROUP BY category""",
        [start, end, now],
    )
    by_category = {row["category"]: row for row in rows}

    def percent(part: int, whole: int) -> float | None:
        return None if not whole else round(100.0 * part / whole, 1)

    def minutes(value: object) -> float | None:
        return None if value is None else round(float(value), 1)  # type: ignore[arg-type]

    figures: list[CategoryKpi] = []
    for category in Category:
        row = by_category.get(category.value)
        if row is None:
            figures.append(CategoryKpi(category, 0, 0, 0, None, None, 0, None, None, None, 0))
            continue
        figures.append(
            CategoryKpi(
                category=category,
                raised=row["raised"],
                complaints=row["complaints"],
                responded=row["responded"],
                median_response_minutes=minutes(row["median_response"]),
                response_within_sla_percent=percent(row["response_within"], row["response_due"]),
                resolved=row["resolved"],
                median_resolution_minutes=minutes(row["median_resolution"]),
                resolution_within_sla_percent=percent(row["resolution_within"], row["resolution_due"]),
                average_rating=None if row["average_rating"] is None else round(row["average_rating"], 2),
                ratings=row["ratings"],
            )
        )
    return figures

"""Care tasks: the items of the care plans (care/care_plans.py) materialized as due tasks, checked off,
marked not done, listed, and escalated when overdue.

Tasks are materialized `HORIZON` ahead (7 days) by the sweep every 15 minutes (workers/care_tasks.py)
and at once when an item is added or edited. (item, due time) is unique: materializing again adds
nothing. An edit replaces the item's open tasks due from now on (they follow the new version); done and
not-done tasks, and open ones already due, are never touched, so nothing checked off is lost or doubled.

A task is overdue when it is still open after its due time, its expected duration and `GRACE`; the sweep
marks it escalated once (escalated_at) and returns it, for the notification to the shift lead (the
notifications increment). Results and not-done reasons are sealed under the resident's data key
(`care_task.note`). Every function takes `now` from the caller; all run in the tenant's unit of work.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any, Protocol

from care import vitals
from care.care_plans import (
    PlanItem,
    TaskKind,
    active_items,
    current_item_row,
    occurrences,
    to_utc,
    zone,
)
from care.notifications import TASK_OVERDUE, Notification, notify
from care.sealed_rows import execute, opened_texts, padded, seal, text, writable
from compliance.audit import AuditEvent, record_events
from compliance.audit.events import SYSTEM_KIND
from compliance.consent import Category, Purpose
from compliance.encryption import field_cipher
from compliance.principals import StaffRole
from tenants.errors import Conflict, InvalidInput, NotFound, raise_if_any

TABLE, NOTE_COLUMN = "care_task", "note"
HORIZON = timedelta(days=7)
GRACE = timedelta(minutes=30)
MAX_NOTE = 1000
_BLOCK = 64


class TaskStatus(StrEnum):
    OPEN = "open"
    DONE = "done"
    NOT_DONE = "not_done"


@dataclass(frozen=True, slots=True)
class Task:
    id: int
    item_id: int | None  # None: the task comes from a rule's firing (care/vital_rules.py)
    item_version: int | None
    resident_id: int
    kind: TaskKind
    due_at: datetime
    duration_minutes: int
    role: StaffRole | None
    caregiver_id: int | None
    measure: vitals.Measure | None
    status: TaskStatus
    done_at: datetime | None
    done_by: str | None
    reading_id: int | None
    note: str | None  # the result (done) or the reason (not done)
    escalated_at: datetime | None
    rule_firing_id: int | None = None  # set when the task comes from a rule over vitals


_COLUMNS = """id, item_id, item_version, resident_id, kind, due_at, duration_minutes, assignee_role,
    assignee_account_id, measure, status, done_at, done_by, reading_id, note, escalated_at, rule_firing_id"""


# Materialization -------------------------------------------------------------------------------------


async def _insert(items: Sequence[PlanItem], start: datetime, end: datetime) -> list[int]:
    """The tasks of `items` due in [start, end) that do not exist yet; the resident of each one added."""
    tz = zone()
    rows: list[tuple[PlanItem, datetime]] = [
        (found, due) for found in items for due in occurrences(found, start, end, tz)
    ]
    if not rows:
        return []
    inserted = await execute(
        f"""INSERT INTO {TABLE} (item_id, item_version, resident_id, kind, due_at, duration_minutes,
                assignee_role, assignee_account_id, measure)
            SELECT * FROM unnest($1::bigint[], $2::int[], $3::bigint[], $4::varchar[], $5::timestamptz[],
                $6::int[], $7::varchar[], $8::bigint[], $9::varchar[])
                AS t (item_id, item_version, resident_id, kind, due_at, duration_minutes, assignee_role,
                    assignee_account_id, measure)
            -- Only while the version is still the item's current one: a sweep that read the items before
            -- an edit committed must not add tasks of the old version (the lock waits for the edit).
            WHERE EXISTS (
                SELECT 1 FROM care_plan_item i
                WHERE i.id = t.item_id AND i.current_version = t.item_version AND i.removed_at IS NULL
                FOR SHARE
            )
            ON CONFLICT (item_id, due_at) DO NOTHING RETURNING resident_id""",
        [
            [found.id for found, _ in rows],
            [found.version for found, _ in rows],
            [found.resident_id for found, _ in rows],
            [found.kind.value for found, _ in rows],
            [due for _, due in rows],
            [found.duration_minutes for found, _ in rows],
            [found.role.value if found.role else None for found, _ in rows],
            [found.caregiver_id for found, _ in rows],
            [found.measure.value if found.measure else None for found, _ in rows],
        ],
    )
    return [row["resident_id"] for row in inserted]


async def materialize(now: datetime, horizon: timedelta = HORIZON) -> int:
    """Tasks of every plan item of the tenant due in [now, now + horizon) that do not exist yet; how
    many were added. The sweep acts for the institution under care delivery, for residents in residence
    and not erased only (`active_items`): one audit event per resident it added tasks for."""
    added = await _insert(await active_items(), now, now + horizon)
    await audit_sweep(MATERIALIZE_ACTION, added)
    return len(added)


# What the sweep (workers/care_tasks.py) records itself as, on the residents' audit trail.
SWEEP_SUBJECT = "system:care-tasks"
MATERIALIZE_ACTION = "task.materialize"
ESCALATE_ACTION = "task.escalate"


async def audit_sweep(action: str, resident_ids: Iterable[int], *, subject: str = SWEEP_SUBJECT) -> None:
    """One event per resident a system sweep (`subject`) acted for, under care delivery."""
    await record_events(
        [
            AuditEvent(
                principal_subject=subject,
                principal_kind=SYSTEM_KIND,
                action=action,
                resident_id=resident_id,
                data_categories=(Category.DAILY_CARE.value,),
                purpose=Purpose.CARE_DELIVERY.value,
            )
            for resident_id in sorted(set(resident_ids))
        ]
    )


async def rematerialize_item(item_id: int, now: datetime, horizon: timedelta = HORIZON) -> list[Task]:
    """After an item was added, edited or removed: its open tasks due from `now` on are replaced by those
    of its current version (none when removed). Returns the item's tasks in the window."""
    await execute(
        f"DELETE FROM {TABLE} WHERE item_id = $1 AND status = 'open' AND due_at >= $2", [item_id, now]
    )
    try:
        found = await current_item_row(item_id)
    except NotFound:
        return []
    await _insert([found], now, now + horizon)  # the request that edited the item is on the trail
    rows = await execute(
        f"SELECT {_COLUMNS} FROM {TABLE} WHERE item_id = $1 AND due_at >= $2 AND due_at < $3 ORDER BY due_at",
        [item_id, now, now + horizon],
    )
    return await _opened(rows)


async def add_rule_task(
    firing_id: int, resident_id: int, *, role: StaffRole, due_at: datetime, duration_minutes: int
) -> int:
    """The task of a rule's firing (care/vital_rules.py): an observation for `role`, once per firing."""
    rows = await execute(
        f"""INSERT INTO {TABLE} (rule_firing_id, resident_id, kind, due_at, duration_minutes, assignee_role)
            VALUES ($1, $2, $3, $4, $5, $6) RETURNING id""",
        [firing_id, resident_id, TaskKind.OBSERVATION.value, due_at, duration_minutes, role.value],
    )
    return rows[0]["id"]


# Reading ---------------------------------------------------------------------------------------------


async def _opened(rows: Iterable[Mapping[str, Any]]) -> list[Task]:
    rows = list(rows)
    notes = await opened_texts(TABLE, rows, NOTE_COLUMN)
    return [
        Task(
            id=row["id"],
            item_id=row["item_id"],
            item_version=row["item_version"],
            resident_id=row["resident_id"],
            kind=TaskKind(row["kind"]),
            due_at=row["due_at"],
            duration_minutes=row["duration_minutes"],
            role=StaffRole(row["assignee_role"]) if row["assignee_role"] else None,
            caregiver_id=row["assignee_account_id"],
            measure=vitals.Measure(row["measure"]) if row["measure"] else None,
            status=TaskStatus(row["status"]),
            done_at=row["done_at"],
            done_by=row["done_by"],
            reading_id=row["reading_id"],
            note=notes.get(row["id"]),
            escalated_at=row["escalated_at"],
            rule_firing_id=row["rule_firing_id"],
        )
        for row in rows
    ]


async def task(task_id: int) -> Task:
    rows = await execute(f"SELECT {_COLUMNS} FROM {TABLE} WHERE id = $1", [task_id])
    if not rows:
        raise NotFound("Task not found.", field="taskId")
    (found,) = await _opened(rows)
    return found


async def resident_of_task(task_id: int) -> int:
    rows = await execute(f"SELECT resident_id FROM {TABLE} WHERE id = $1", [task_id])
    if not rows:
        raise NotFound("Task not found.", field="taskId")
    return rows[0]["resident_id"]


# Keyset pages ordered by (due_at, id): one integer cursor key holds both (tasks, SOP steps).
_ID_BITS = 40


class Due(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def due_at(self) -> datetime: ...


def page_key(found: Due) -> int:
    return int(found.due_at.timestamp()) << _ID_BITS | found.id


def keyset_after(key: int | None) -> tuple[datetime, int]:
    """The (due_at, id) a page starts after, from its cursor key (None: the first page)."""
    if key is None:
        return datetime(1970, 1, 1, tzinfo=UTC), 0
    return datetime.fromtimestamp(key >> _ID_BITS, UTC), key & ((1 << _ID_BITS) - 1)


async def resident_tasks(
    resident_id: int, start: datetime, end: datetime, *, after_key: int | None, limit: int
) -> list[Task]:
    """The resident's tasks due in [start, end), by due time."""
    after_due, after_id = keyset_after(after_key)
    rows = await execute(
        f"""SELECT {_COLUMNS} FROM {TABLE} WHERE resident_id = $1 AND due_at >= $2 AND due_at < $3
                AND (date_trunc('second', due_at), id) > ($4, $5)
            ORDER BY due_at, id LIMIT $6""",
        [resident_id, start, end, after_due, after_id, limit],
    )
    return await _opened(rows)


async def count_resident_tasks(resident_id: int, start: datetime, end: datetime) -> int:
    rows = await execute(
        f"SELECT count(*) AS n FROM {TABLE} WHERE resident_id = $1 AND due_at >= $2 AND due_at < $3",
        [resident_id, start, end],
    )
    return rows[0]["n"]


def day_bounds(day: date) -> tuple[datetime, datetime]:
    """The UTC bounds of a local day of the institution (23 or 25 hours on a daylight-saving change)."""
    tz = zone()
    return to_utc(datetime.combine(day, time()), tz), to_utc(
        datetime.combine(day + timedelta(days=1), time()), tz
    )


_MINE = "(assignee_account_id = $3 OR (assignee_account_id IS NULL AND assignee_role = ANY($4::varchar[])))"


async def tasks_of_caregiver(
    account_id: int, roles: Iterable[StaffRole], day: date, *, after_key: int | None, limit: int
) -> list[Task]:
    """A member of staff's tasks of a local day: those named to them and those of one of their roles."""
    start, end = day_bounds(day)
    after_due, after_id = keyset_after(after_key)
    rows = await execute(
        f"""SELECT {_COLUMNS} FROM {TABLE} WHERE due_at >= $1 AND due_at < $2 AND {_MINE}
                AND (date_trunc('second', due_at), id) > ($5, $6)
            ORDER BY due_at, id LIMIT $7""",
        [start, end, account_id, sorted(r.value for r in roles), after_due, after_id, limit],
    )
    return await _opened(rows)


async def count_tasks_of_caregiver(account_id: int, roles: Iterable[StaffRole], day: date) -> int:
    start, end = day_bounds(day)
    rows = await execute(
        f"SELECT count(*) AS n FROM {TABLE} WHERE due_at >= $1 AND due_at < $2 AND {_MINE}",
        [start, end, account_id, sorted(r.value for r in roles)],
    )
    return rows[0]["n"]


# Checking off ----------------------------------------------------------------------------------------


async def _open_task(task_id: int) -> Task:
    rows = await execute(f"SELECT {_COLUMNS} FROM {TABLE} WHERE id = $1 FOR UPDATE", [task_id])
    if not rows:
        raise NotFound("Task not found.", field="taskId")
    (found,) = await _opened(rows)
    if found.status is not TaskStatus.OPEN:
        raise Conflict("This task was closed already.", field="taskId")
    return found


async def _close(
    found: Task, status: TaskStatus, note: str | None, by: str, now: datetime, reading: int | None
) -> Task:
    sealed = None
    if note is not None:
        cipher = await field_cipher()
        await writable(cipher, found.resident_id)
        sealed = await seal(cipher, TABLE, NOTE_COLUMN, found.id, found.resident_id, padded(note, _BLOCK))
    await execute(
        f"""UPDATE {TABLE} SET status = $2, done_at = $3, done_by = $4, note = $5, reading_id = $6
            WHERE id = $1""",
        [found.id, status.value, now, by, sealed, reading],
    )
    return await task(found.id)


async def complete_task(
    task_id: int,
    *,
    result: str | None,
    measurement: vitals.NewReading | None,
    recorder: vitals.Recorder,
    now: datetime,
) -> Task:
    """Check a task off. A task that records a measurement needs its value, recorded through
    care.vitals.record_reading (measured now) and kept on the task. Conflict when closed already."""
    found = await _open_task(task_id)
    problems: list[InvalidInput] = []
    note = text(result, "result", problems, limit=MAX_NOTE)
    if found.measure is None and measurement is not None:
        problems.append(InvalidInput("This task records no measurement.", field="measurement"))
    if found.measure is not None and measurement is None:
        problems.append(InvalidInput("This task records a measurement: give its value.", field="measurement"))
    raise_if_any(problems)
    reading_id = None
    if found.measure is not None and measurement is not None:
        given = vitals.NewReading(
            measure=found.measure,
            value=measurement.value,
            systolic=measurement.systolic,
            diastolic=measurement.diastolic,
            context=measurement.context,
            measured_at=measurement.measured_at or now,
        )
        reading_id = (await vitals.record_reading(found.resident_id, given, recorder)).id
    return await _close(found, TaskStatus.DONE, note, recorder.subject, now, reading_id)


async def mark_not_done(task_id: int, reason: str | None, *, by: str, now: datetime) -> Task:
    """Close a task as not done; the reason is required. Conflict when closed already."""
    found = await _open_task(task_id)
    problems: list[InvalidInput] = []
    note = text(reason, "reason", problems, limit=MAX_NOTE, required=True)
    raise_if_any(problems)
    return await _close(found, TaskStatus.NOT_DONE, note, by, now, None)


# Escalation ------------------------------------------------------------------------------------------


async def escalate_overdue(now: datetime, grace: timedelta = GRACE) -> list[Task]:
    """Open tasks past due + duration + grace not escalated yet, marked escalated now (once: a second run
    finds none), the shift lead (head nurse) notified in the same unit of work; the tasks returned."""
    rows = await execute(
        f"""UPDATE {TABLE} SET escalated_at = $1
            WHERE status = 'open' AND escalated_at IS NULL AND due_at < $1
                AND due_at + make_interval(mins => duration_minutes) + $2::interval < $1
            RETURNING {_COLUMNS}""",
        [now, grace],
    )
    escalated = sorted(await _opened(rows), key=lambda found: (found.due_at, found.id))
    await audit_sweep(ESCALATE_ACTION, (task.resident_id for task in escalated))
    for task in escalated:
        await notify(
            Notification(
                kind="task.overdue",
                message=TASK_OVERDUE,
                idempotency_key=f"task.overdue:{task.id}",
                roles=frozenset({StaffRole.HEAD_NURSE}),
                resident_id=task.resident_id,
                subject_type="CareTask",
                subject_id=task.id,
            )
        )
    return escalated

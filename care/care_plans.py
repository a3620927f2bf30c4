"""Care plans: what is done for a resident, how often, by whom (migrations/tenant/0019_care_plans.sql).

A resident's plan is the set of their items that are not removed. An item says what (a task kind and a
sealed label), how often (an RFC 5545 RRULE expanded with dateutil from a DTSTART that is a wall-clock
time of the institution's time zone), who (a staff role, or a named member of staff), how long (1–480
minutes) and, for a measurement, which vital measure. An edit is a new version of the item; nothing is
overwritten. Tasks are materialized from the items ahead of time (care/tasks.py).

Recurrence rules are checked before they are stored (all problems reported at once): the rule must be
readable, fire at least once in the coming year and never twice within 15 minutes. Rule parts that make
dateutil search day by day up to the year 9999 when the rule never fires (SECONDLY, BYSETPOS on a
daily or finer rule, BYYEARDAY, BYWEEKNO, impossible month days) are refused before expansion, and the
expansion itself runs off the event loop with a time limit: a request cannot hold a worker for seconds.

Every function runs in the caller's tenant unit of work; who may call which is decided by the resolvers
(`compliance.policy`: care_plan.view, care_plan.edit).
"""

import asyncio
import calendar
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from dateutil.rrule import rrule, rrulestr

from care.residents import next_ids
from care.sealed_rows import admission_date_of, execute, open_row, padded, seal, text, unpadded, writable
from care.vitals import Measure
from compliance.encryption import field_cipher
from compliance.principals import StaffRole
from tenants.context import current_tenant
from tenants.errors import InvalidInput, NotFound, raise_if_any

ITEM_TABLE = "care_plan_item"
VERSION_TABLE, LABEL_COLUMN = "care_plan_item_version", "label"
MAX_LABEL = 500
MAX_RULE = 500
MIN_GAP = timedelta(minutes=15)
LOOKAHEAD = timedelta(days=365)
CHECK_SECONDS = 1.0  # time the expansion of one rule may take when it is checked
_BLOCK = 64
# Roles a task can be given to: those who may check tasks off (task.complete).
ASSIGNABLE_ROLES = (StaffRole.CAREGIVER, StaffRole.NURSE, StaffRole.HEAD_NURSE, StaffRole.DOCTOR)
_RULE_PARTS = frozenset(
    {
        "FREQ",
        "INTERVAL",
        "COUNT",
        "UNTIL",
        "BYDAY",
        "BYMONTHDAY",
        "BYMONTH",
        "BYHOUR",
        "BYMINUTE",
        "BYSETPOS",
        "WKST",
    }
)
_FINE = frozenset({"DAILY", "HOURLY", "MINUTELY"})


class TaskKind(StrEnum):
    VITAL_SIGN = "vital_sign"
    MEDICATION = "medication"
    HYGIENE = "hygiene"
    MEALS = "meals"
    MOBILITY = "mobility"
    REPOSITIONING = "repositioning"
    TOILETING = "toileting"
    WOUND_CARE = "wound_care"
    OBSERVATION = "observation"
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class NewItem:
    kind: TaskKind | str
    recurrence: str  # RRULE parts, e.g. FREQ=WEEKLY;BYDAY=TU;BYHOUR=10;BYMINUTE=0
    duration_minutes: int
    starts_at: datetime | None = None  # naive: institution wall clock; aware: converted to it; None: now
    label: str | None = None
    role: StaffRole | str | None = None
    caregiver_id: int | None = None  # an account id, staff of the institution
    measure: Measure | str | None = None


@dataclass(frozen=True, slots=True)
class PlanItem:
    id: int
    resident_id: int
    version: int
    kind: TaskKind
    label: str | None
    recurrence: str
    starts_at: datetime  # naive, institution wall clock
    role: StaffRole | None
    caregiver_id: int | None
    duration_minutes: int
    measure: Measure | None
    recorded_by: str
    recorded_at: datetime


# Recurrence rules ------------------------------------------------------------------------------------


def zone() -> ZoneInfo:
    return ZoneInfo(current_tenant().time_zone)


def local_naive(moment: datetime, tz: ZoneInfo) -> datetime:
    """An aware moment as the naive wall-clock time of `tz` (what rules are expanded in)."""
    return moment.astimezone(tz).replace(tzinfo=None)


def to_utc(wall: datetime, tz: ZoneInfo) -> datetime:
    """A wall-clock time of `tz` as UTC. In the hour a clock skips (spring), a time is read with the offset
    before the change (02:30 becomes 03:30 summer time); in the hour it repeats (autumn), the first one."""
    return wall.replace(tzinfo=tz).astimezone(UTC)


def normalized_rule(recurrence: str) -> str:
    cleaned = recurrence.strip()
    if cleaned.upper().startswith("RRULE:"):
        cleaned = cleaned[6:]
    return cleaned.upper()


def build_rule(recurrence: str, starts_at: datetime) -> rrule:
    """The dateutil rule of a stored item (checked when it was written)."""
    return rrulestr(normalized_rule(recurrence), dtstart=starts_at)


def _structure_problems(rule_text: str, starts_at: datetime) -> list[InvalidInput]:
    """Problems visible without expanding the rule; among them the shapes that never fire but would make
    dateutil search up to the year 9999."""
    field = "recurrence"
    if not rule_text or len(rule_text) > MAX_RULE or "\n" in rule_text or "\0" in rule_text:
        return [InvalidInput("The recurrence rule cannot be read.", field=field)]
    parts: dict[str, str] = {}
    for part in rule_text.split(";"):
        name, _, value = part.partition("=")
        if not value or name in parts:
            return [InvalidInput("The recurrence rule cannot be read.", field=field)]
        parts[name] = value
    unknown = sorted(set(parts) - _RULE_PARTS)
    if unknown:
        return [InvalidInput("Rule part {part} is not supported.", field=field, part=unknown[0])]
    freq = parts.get("FREQ")
    if freq == "SECONDLY":
        return [InvalidInput("A care task can recur at most every 15 minutes.", field=field)]
    if freq not in {"YEARLY", "MONTHLY", "WEEKLY", "DAILY", "HOURLY", "MINUTELY"}:
        return [InvalidInput("The recurrence rule cannot be read.", field=field)]
    if "UNTIL" in parts and parts["UNTIL"].endswith("Z"):
        return [InvalidInput("UNTIL is a local time of the institution, without Z.", field=field)]
    if "BYSETPOS" in parts and freq in _FINE:
        return [InvalidInput("Rule part {part} is not supported.", field=field, part="BYSETPOS")]
    try:
        months = [int(m) for m in parts["BYMONTH"].split(",")] if "BYMONTH" in parts else None
        days = [int(d) for d in parts["BYMONTHDAY"].split(",")] if "BYMONTHDAY" in parts else None
    except ValueError:
        return [InvalidInput("The recurrence rule cannot be read.", field=field)]
    if months is None and freq == "YEARLY" and days is not None:
        months = [starts_at.month]
    if months is not None and days is not None and all(d > 0 for d in days):
        longest = {m: calendar.monthrange(2028, m)[1] for m in range(1, 13) if m in months}  # a leap year
        if not any(d <= last for d in days for last in longest.values()):
            return [InvalidInput("The recurrence rule never fires in the coming year.", field=field)]
    return []


def _expansion_problems(rule_text: str, starts_at: datetime, now_local: datetime) -> list[InvalidInput]:
    field = "recurrence"
    try:
        rule = rrulestr(rule_text, dtstart=starts_at)
    except (ValueError, TypeError, OverflowError):
        return [InvalidInput("The recurrence rule cannot be read.", field=field)]
    start = max(now_local, starts_at)
    first = rule.after(start, inc=True)
    if first is None or first > now_local + LOOKAHEAD:
        return [InvalidInput("The recurrence rule never fires in the coming year.", field=field)]
    window = itertools.takewhile(
        lambda moment: moment <= now_local + LOOKAHEAD, itertools.islice(rule.xafter(start, inc=True), 2_000)
    )
    previous = None
    for moment in window:
        if previous is not None and moment - previous < MIN_GAP:
            return [InvalidInput("A care task can recur at most every 15 minutes.", field=field)]
        previous = moment
    return []


async def check_rule(recurrence: str, starts_at: datetime, now_local: datetime) -> list[InvalidInput]:
    """The problems of a rule starting at `starts_at` (naive, wall clock), seen from `now_local`."""
    rule_text = normalized_rule(recurrence)
    problems = _structure_problems(rule_text, starts_at)
    if problems:
        return problems
    try:
        return await asyncio.wait_for(
            asyncio.to_thread(_expansion_problems, rule_text, starts_at, now_local), CHECK_SECONDS
        )
    except TimeoutError:
        # Only a rule that fires very rarely or never searches that long (see the module docstring).
        return [InvalidInput("The recurrence rule never fires in the coming year.", field="recurrence")]


# Checks ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Checked:
    kind: TaskKind
    label: str | None
    recurrence: str
    starts_at: datetime
    role: StaffRole | None
    caregiver_id: int | None
    duration_minutes: int
    measure: Measure | None


async def _is_staff(account_id: int, institution_id: int) -> bool:
    rows = await execute(
        """SELECT 1 FROM shared.staff_membership m JOIN shared.user_account a ON a.id = m.account_id
           WHERE m.account_id = $1 AND m.institution_id = $2 AND a.status = 'active' LIMIT 1""",
        [account_id, institution_id],
    )
    return bool(rows)


def assignable_role(role: StaffRole | None, name: str, problems: list[InvalidInput]) -> StaffRole | None:
    """`role` if tasks may be assigned to it (`ASSIGNABLE_ROLES`); else a problem on `name`, and None."""
    if role in ASSIGNABLE_ROLES:
        return role
    problems.append(
        InvalidInput(
            "Unknown role; one of: {roles}.", field=name, roles=", ".join(r.value for r in ASSIGNABLE_ROLES)
        )
    )
    return None


async def check_item(new: NewItem, now: datetime) -> _Checked:
    """`new` cleaned, or ValidationFailed with every problem."""
    problems: list[InvalidInput] = []
    tz = zone()
    kind = TaskKind.OTHER
    try:
        kind = TaskKind(new.kind)
    except ValueError:
        problems.append(InvalidInput("Unknown task kind.", field="kind"))
    label = text(new.label, "label", problems, limit=MAX_LABEL)
    if new.starts_at is None:
        starts_at = local_naive(now, tz).replace(second=0, microsecond=0)
    elif new.starts_at.tzinfo is not None and new.starts_at.utcoffset() is not None:
        starts_at = local_naive(new.starts_at, tz)
    else:
        starts_at = new.starts_at.replace(tzinfo=None)
    problems += await check_rule(new.recurrence, starts_at, local_naive(now, tz))
    role: StaffRole | None = None
    if (new.role is None) == (new.caregiver_id is None):
        problems.append(
            InvalidInput("Give either a role or a named caregiver, not both.", field="assigneeRole")
        )
    elif new.role is not None:
        try:
            role = StaffRole(new.role)
        except ValueError:
            role = None
        role = assignable_role(role, "assigneeRole", problems)
    elif new.caregiver_id is not None and not await _is_staff(
        new.caregiver_id, current_tenant().institution_id
    ):
        problems.append(
            InvalidInput("This caregiver is not on the staff of the institution.", field="caregiverId")
        )
    if not 1 <= new.duration_minutes <= 480:
        problems.append(
            InvalidInput("The expected duration is 1 to {max} minutes.", field="durationMinutes", max=480)
        )
    measure: Measure | None = None
    if new.measure is not None:
        try:
            measure = Measure(new.measure)
        except ValueError:
            problems.append(InvalidInput("Unknown vital measure.", field="measure"))
    if kind is TaskKind.VITAL_SIGN and measure is None and new.measure is None:
        problems.append(InvalidInput("A vital-sign task names the measure it records.", field="measure"))
    raise_if_any(problems)
    return _Checked(
        kind,
        label,
        normalized_rule(new.recurrence),
        starts_at,
        role,
        new.caregiver_id,
        new.duration_minutes,
        measure,
    )


# Storage ---------------------------------------------------------------------------------------------

_VERSION_COLUMNS = """v.id, v.item_id, v.resident_id, v.version, v.kind, v.label, v.rrule, v.dtstart,
    v.assignee_role, v.assignee_account_id, v.duration_minutes, v.measure, v.recorded_by, v.recorded_at"""


async def _write_version(
    item_id: int, resident_id: int, version: int, checked: _Checked, recorded_by: str
) -> None:
    cipher = await field_cipher()
    await writable(cipher, resident_id)
    (row_id,) = await next_ids(VERSION_TABLE, 1)
    label = None
    if checked.label is not None:
        label = await seal(
            cipher, VERSION_TABLE, LABEL_COLUMN, row_id, resident_id, padded(checked.label, _BLOCK)
        )
    await execute(
        f"""INSERT INTO {VERSION_TABLE} (id, item_id, resident_id, version, kind, label, rrule, dtstart,
                assignee_role, assignee_account_id, duration_minutes, measure, recorded_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)""",
        [
            row_id,
            item_id,
            resident_id,
            version,
            checked.kind.value,
            label,
            checked.recurrence,
            checked.starts_at,
            checked.role.value if checked.role else None,
            checked.caregiver_id,
            checked.duration_minutes,
            checked.measure.value if checked.measure else None,
            recorded_by,
        ],
    )


async def add_item(resident_id: int, new: NewItem, *, recorded_by: str, now: datetime) -> PlanItem:
    """A new item of the resident's plan (version 1). ValidationFailed, NotFound, Erased. Its tasks are
    materialized by the caller (care.tasks.rematerialize_item) in the same unit of work."""
    await admission_date_of(resident_id, lock=True)
    checked = await check_item(new, now)
    rows = await execute(
        f"INSERT INTO {ITEM_TABLE} (resident_id, created_by) VALUES ($1, $2) RETURNING id",
        [resident_id, recorded_by],
    )
    item_id = rows[0]["id"]
    await _write_version(item_id, resident_id, 1, checked, recorded_by)
    return await item(item_id)


async def edit_item(item_id: int, new: NewItem, *, recorded_by: str, now: datetime) -> PlanItem:
    """A new version of an item (the earlier ones stay). ValidationFailed, NotFound (unknown or removed)."""
    rows = await execute(
        f"""SELECT resident_id, current_version FROM {ITEM_TABLE}
            WHERE id = $1 AND removed_at IS NULL FOR UPDATE""",
        [item_id],
    )
    if not rows:
        raise NotFound("Care plan item not found.", field="itemId")
    checked = await check_item(new, now)
    version = rows[0]["current_version"] + 1
    await _write_version(item_id, rows[0]["resident_id"], version, checked, recorded_by)
    await execute(f"UPDATE {ITEM_TABLE} SET current_version = $2 WHERE id = $1", [item_id, version])
    return await item(item_id)


async def remove_item(item_id: int, *, removed_by: str, now: datetime) -> int:
    """Take the item out of the plan (its history and its done tasks stay); the resident's id."""
    rows = await execute(
        f"""UPDATE {ITEM_TABLE} SET removed_at = $2, removed_by = $3
            WHERE id = $1 AND removed_at IS NULL RETURNING resident_id""",
        [item_id, now, removed_by],
    )
    if not rows:
        raise NotFound("Care plan item not found.", field="itemId")
    return rows[0]["resident_id"]


async def resident_of_item(item_id: int) -> int:
    rows = await execute(
        f"SELECT resident_id FROM {ITEM_TABLE} WHERE id = $1 AND removed_at IS NULL", [item_id]
    )
    if not rows:
        raise NotFound("Care plan item not found.", field="itemId")
    return rows[0]["resident_id"]


async def _opened(rows: Iterable[Mapping[str, Any]]) -> list[PlanItem]:
    rows = list(rows)
    if not rows:
        return []
    cipher = await field_cipher()
    await cipher.load_data_keys({row["resident_id"] for row in rows})
    found = []
    for row in rows:
        label = None
        if row["label"] is not None:
            opened = await open_row(cipher, VERSION_TABLE, row, (LABEL_COLUMN,))
            label = unpadded(opened[LABEL_COLUMN] or b"")
        found.append(_unopened(row, label))
    return found


async def item(item_id: int) -> PlanItem:
    rows = await execute(
        f"""SELECT {_VERSION_COLUMNS} FROM {ITEM_TABLE} i
            JOIN {VERSION_TABLE} v ON v.item_id = i.id AND v.version = i.current_version WHERE i.id = $1""",
        [item_id],
    )
    if not rows:
        raise NotFound("Care plan item not found.", field="itemId")
    (found,) = await _opened(rows)
    return found


async def plan_of(resident_id: int) -> list[PlanItem]:
    """The current version of every item of the resident's plan, oldest item first (Erased if the
    resident's data key was destroyed)."""
    rows = await execute(
        f"""SELECT {_VERSION_COLUMNS} FROM {ITEM_TABLE} i
            JOIN {VERSION_TABLE} v ON v.item_id = i.id AND v.version = i.current_version
            WHERE i.resident_id = $1 AND i.removed_at IS NULL ORDER BY i.id""",
        [resident_id],
    )
    return await _opened(rows)


async def active_items() -> list[PlanItem]:
    """Every item of the plans of the tenant's residents in residence and not erased (current versions),
    for the materialization; labels are not opened (the tasks do not need them)."""
    rows = await execute(
        f"""SELECT {_VERSION_COLUMNS} FROM {ITEM_TABLE} i
            JOIN {VERSION_TABLE} v ON v.item_id = i.id AND v.version = i.current_version
            JOIN resident r ON r.id = i.resident_id
            WHERE i.removed_at IS NULL AND r.status <> 'discharged'
                AND NOT EXISTS (SELECT 1 FROM resident_erasure e WHERE e.resident_id = i.resident_id)
            ORDER BY i.id""",
        [],
    )
    return [_unopened(row) for row in rows]


def _unopened(row: Mapping[str, Any], label: str | None = None) -> PlanItem:
    """The item of a version row; its label as opened by the caller (None: not opened)."""
    return PlanItem(
        id=row["item_id"],
        resident_id=row["resident_id"],
        version=row["version"],
        kind=TaskKind(row["kind"]),
        label=label,
        recurrence=row["rrule"],
        starts_at=row["dtstart"],
        role=StaffRole(row["assignee_role"]) if row["assignee_role"] else None,
        caregiver_id=row["assignee_account_id"],
        duration_minutes=row["duration_minutes"],
        measure=Measure(row["measure"]) if row["measure"] else None,
        recorded_by=row["recorded_by"],
        recorded_at=row["recorded_at"],
    )


async def current_item_row(item_id: int) -> PlanItem:
    """The current version of an item, label not opened (NotFound if removed)."""
    rows = await execute(
        f"""SELECT {_VERSION_COLUMNS} FROM {ITEM_TABLE} i
            JOIN {VERSION_TABLE} v ON v.item_id = i.id AND v.version = i.current_version
            WHERE i.id = $1 AND i.removed_at IS NULL""",
        [item_id],
    )
    if not rows:
        raise NotFound("Care plan item not found.", field="itemId")
    return _unopened(rows[0])


def occurrences(found: PlanItem, start: datetime, end: datetime, tz: ZoneInfo) -> list[datetime]:
    """The item's due times (UTC) in [start, end)."""
    rule = build_rule(found.recurrence, found.starts_at)
    # A day of slack on each side: the wall-clock window and the UTC one differ by the zone's offset.
    low, high = local_naive(start, tz) - timedelta(days=1), local_naive(end, tz) + timedelta(days=1)
    due = (to_utc(wall, tz) for wall in rule.between(low, high, inc=True))
    return sorted({moment for moment in due if start <= moment < end})

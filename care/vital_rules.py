"""Rules over vital signs: per-institution data, evaluated whenever a vital is recorded
(migrations/tenant/0023_vital_rules.sql, docs/vital_rules.md).

A rule says "measure M out of the resident's range N times within D days" (`COUNT_WITHIN_DAYS`) or "on N
consecutive days" (`CONSECUTIVE_DAYS`) → notify roles, and optionally create a task for a role. "Out of
range" is the flag each reading got when it was recorded against the resident's range (care/vitals.py:
HIGH above it, LOW below it): a rule looks ABOVE (HIGH), BELOW (LOW) or on EITHER side. Days are local
days of the institution; the window of D days ends with the reading's day (from midnight D - 1 days
before it up to the reading).

- count within days: at least N readings out on the rule's side in the window;
- consecutive days: the readings since the last one that was not out on the rule's side (a normal reading
  breaks the run) fall on each of the N local days ending with the reading's day; several readings of one
  day count once. D (at least N) bounds how far back the run is read.

Episodes. A rule fires when its condition becomes true after a reading and records the firing (one row,
naming the rule's version). While that episode is open, it does not fire again. The episode ends when a
reading is back in range (not out on the rule's side) or when its condition no longer holds (the window
cleared: a day without an out reading, too few readings left in the window). A count rule fires again
only on N out readings after its previous firing's reading. At most one open episode per rule and
resident (a partial unique index), and the evaluation holds the resident's row until the unit of work
ends: readings recorded at the same time are evaluated one after the other and fire once.

On firing, in the recording's unit of work: the firing row, a notification to the rule's roles (kind
vital.rule_fired, no value: the rule's id only) and, when the rule says so, a care task for a role
(care/tasks.py), due the rule's offset after the recording.

Who may read and edit rules is decided by the resolvers (`compliance.policy`: vital_rule.view,
vital_rule.edit); a resident's firings are read as vitals (vitals.view).
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any

from care import tasks, vitals
from care.care_plans import assignable_role, to_utc, zone
from care.notifications import VITAL_RULE_FIRED, Notification, notify
from care.sealed_rows import execute, text
from compliance.principals import StaffRole
from tenants.errors import Conflict, InvalidInput, NotFound, raise_if_any

MAX_NAME = 200
MAX_LABEL = 200
MAX_DAYS = 90
MAX_DUE_MINUTES = 7 * 24 * 60
DEFAULT_DUE_MINUTES = 60
TASK_MINUTES = 30  # expected duration of a task a rule creates
MAX_WINDOW_READINGS = 10_000
FIRED_KIND = "vital.rule_fired"


class Condition(StrEnum):
    COUNT_WITHIN_DAYS = "count_within_days"
    CONSECUTIVE_DAYS = "consecutive_days"


class Direction(StrEnum):
    ABOVE = "above"
    BELOW = "below"
    EITHER = "either"


class EndReason(StrEnum):
    BACK_IN_RANGE = "back_in_range"
    WINDOW_CLEARED = "window_cleared"
    RULE_RETIRED = "rule_retired"


_OUT: dict[Direction, frozenset[vitals.Flag]] = {
    Direction.ABOVE: frozenset({vitals.Flag.HIGH}),
    Direction.BELOW: frozenset({vitals.Flag.LOW}),
    Direction.EITHER: frozenset({vitals.Flag.HIGH, vitals.Flag.LOW}),
}


@dataclass(frozen=True, slots=True)
class NewRule:
    name: str | None
    measure: vitals.Measure | str
    condition: Condition | str
    times: int  # N
    days: int | None  # D; None: N for consecutive days (required for a count)
    direction: Direction | str
    notify_roles: Sequence[StaffRole | str]
    task_role: StaffRole | str | None = None
    task_label: str | None = None
    task_due_minutes: int | None = None  # after the recording; default DEFAULT_DUE_MINUTES with a task
    active: bool = True


@dataclass(frozen=True, slots=True)
class RuleTerms:
    """What a rule says, checked (check_rule): one version's terms."""

    name: str
    measure: vitals.Measure
    condition: Condition
    times: int
    days: int
    direction: Direction
    notify_roles: tuple[StaffRole, ...]
    task_role: StaffRole | None
    task_label: str | None
    task_due_minutes: int | None
    active: bool


@dataclass(frozen=True, slots=True)
class Rule(RuleTerms):
    """A stored rule: its current version's terms."""

    id: int
    version: int
    retired_at: datetime | None
    recorded_by: str
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class Firing:
    id: int
    rule_id: int
    rule_version: int
    rule_name: str
    measure: vitals.Measure
    condition: Condition
    direction: Direction
    times: int
    days: int
    resident_id: int
    reading_id: int | None
    measured_at: datetime
    fired_at: datetime
    ended_at: datetime | None
    ended_reason: EndReason | None
    task_id: int | None


# Validation ------------------------------------------------------------------------------------------


def _member(enum: type[StrEnum], value: object) -> Any:
    try:
        return enum(str(value).strip().lower())
    except ValueError:
        return None


def check_rule(new: NewRule) -> RuleTerms:
    """`new` cleaned, or ValidationFailed with every problem."""
    problems: list[InvalidInput] = []
    name = text(new.name, "name", problems, limit=MAX_NAME, required=True)
    measure = _member(vitals.Measure, new.measure)
    if measure is None:
        problems.append(
            InvalidInput(
                "Unknown vital measure; one of: {measures}.",
                field="measure",
                measures=", ".join(m.value for m in vitals.Measure),
            )
        )
    condition = _member(Condition, new.condition)
    if condition is None:
        problems.append(InvalidInput("Unknown rule condition.", field="condition"))
    direction = _member(Direction, new.direction)
    if direction is None:
        problems.append(InvalidInput("Unknown rule direction.", field="direction"))
    times = new.times
    if not 1 <= times <= MAX_DAYS:
        problems.append(InvalidInput("N must be between 1 and {max}.", field="times", max=MAX_DAYS))
    days = new.days
    if days is None:
        if condition is Condition.CONSECUTIVE_DAYS:
            days = times
        else:
            problems.append(InvalidInput("Give the number of days D.", field="days"))
    if days is not None and not 1 <= days <= MAX_DAYS:
        problems.append(InvalidInput("D must be between 1 and {max} days.", field="days", max=MAX_DAYS))
    elif days is not None and condition is Condition.CONSECUTIVE_DAYS and times > days:
        problems.append(
            InvalidInput("N consecutive days cannot be more than the D days read.", field="times")
        )
    roles: list[StaffRole] = []
    for role in new.notify_roles:
        found = _member(StaffRole, role)
        if found is None:
            problems.append(
                InvalidInput(
                    "Unknown role; one of: {roles}.",
                    field="notifyRoles",
                    roles=", ".join(r.value for r in StaffRole),
                )
            )
        elif found not in roles:
            roles.append(found)
    if not new.notify_roles:
        problems.append(InvalidInput("Name at least one role to notify.", field="notifyRoles"))
    task_role = None
    if new.task_role is not None:
        task_role = assignable_role(_member(StaffRole, new.task_role), "taskRole", problems)
    label = text(new.task_label, "taskLabel", problems, limit=MAX_LABEL, required=new.task_role is not None)
    if new.task_role is None and label is not None:
        problems.append(InvalidInput("A task label needs the role the task is for.", field="taskRole"))
    due = new.task_due_minutes
    if due is not None and new.task_role is None:
        problems.append(InvalidInput("A task offset needs the role the task is for.", field="taskRole"))
    elif due is not None and not 0 <= due <= MAX_DUE_MINUTES:
        problems.append(
            InvalidInput(
                "The task is due 0 to {max} minutes after the firing.",
                field="taskDueMinutes",
                max=MAX_DUE_MINUTES,
            )
        )
    if new.task_role is not None and due is None:
        due = DEFAULT_DUE_MINUTES
    raise_if_any(problems)
    assert name is not None and measure is not None and condition is not None and direction is not None
    assert days is not None
    return RuleTerms(
        name, measure, condition, times, days, direction, tuple(roles), task_role, label, due, new.active
    )


# Storage ---------------------------------------------------------------------------------------------

_RULE_COLUMNS = """r.id, r.current_version AS version, r.retired_at, v.name, v.measure, v.condition, v.times,
    v.days, v.direction, v.notify_roles, v.task_role, v.task_label, v.task_due_minutes, v.active,
    v.recorded_by, v.recorded_at"""
_CURRENT = "vital_rule r JOIN vital_rule_version v ON v.rule_id = r.id AND v.version = r.current_version"


def _rule(row: Mapping[str, Any]) -> Rule:
    return Rule(
        id=row["id"],
        version=row["version"],
        name=row["name"],
        measure=vitals.Measure(row["measure"]),
        condition=Condition(row["condition"]),
        times=row["times"],
        days=row["days"],
        direction=Direction(row["direction"]),
        notify_roles=tuple(StaffRole(role) for role in row["notify_roles"]),
        task_role=StaffRole(row["task_role"]) if row["task_role"] else None,
        task_label=row["task_label"],
        task_due_minutes=row["task_due_minutes"],
        active=row["active"],
        retired_at=row["retired_at"],
        recorded_by=row["recorded_by"],
        recorded_at=row["recorded_at"],
    )


async def rule(rule_id: int) -> Rule:
    rows = await execute(f"SELECT {_RULE_COLUMNS} FROM {_CURRENT} WHERE r.id = $1", [rule_id])
    if not rows:
        raise NotFound("Rule not found.", field="ruleId")
    return _rule(rows[0])


async def rules(*, include_retired: bool, after_id: int | None, limit: int) -> list[Rule]:
    """The institution's rules (their current versions) by id; retired ones only when asked."""
    rows = await execute(
        f"""SELECT {_RULE_COLUMNS} FROM {_CURRENT}
            WHERE ($1 OR r.retired_at IS NULL) AND r.id > $2 ORDER BY r.id LIMIT $3""",
        [include_retired, after_id or 0, limit],
    )
    return [_rule(row) for row in rows]


async def count_rules(*, include_retired: bool) -> int:
    rows = await execute(
        "SELECT count(*) AS n FROM vital_rule WHERE $1 OR retired_at IS NULL", [include_retired]
    )
    return rows[0]["n"]


async def set_rule(rule_id: int | None, new: NewRule, *, recorded_by: str) -> Rule:
    """Add a rule (rule_id None) or edit one: an edit is a new version, earlier ones are kept (the
    firings name theirs). ValidationFailed; NotFound; Conflict for a retired rule."""
    checked = check_rule(new)
    if rule_id is None:
        created = await execute("INSERT INTO vital_rule (created_by) VALUES ($1) RETURNING id", [recorded_by])
        rule_id, version = created[0]["id"], 1
    else:
        rows = await execute(
            "SELECT current_version, retired_at FROM vital_rule WHERE id = $1 FOR UPDATE", [rule_id]
        )
        if not rows:
            raise NotFound("Rule not found.", field="ruleId")
        if rows[0]["retired_at"] is not None:
            raise Conflict("This rule was retired.", field="ruleId")
        version = rows[0]["current_version"] + 1
        await execute("UPDATE vital_rule SET current_version = $2 WHERE id = $1", [rule_id, version])
    await execute(
        """INSERT INTO vital_rule_version (rule_id, version, name, measure, condition, times, days, direction,
               notify_roles, task_role, task_label, task_due_minutes, active, recorded_by)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)""",
        [
            rule_id,
            version,
            checked.name,
            checked.measure.value,
            checked.condition.value,
            checked.times,
            checked.days,
            checked.direction.value,
            [role.value for role in checked.notify_roles],
            checked.task_role.value if checked.task_role else None,
            checked.task_label,
            checked.task_due_minutes,
            checked.active,
            recorded_by,
        ],
    )
    return await rule(rule_id)


async def retire_rule(rule_id: int, *, retired_by: str, now: datetime) -> Rule:
    """Retire a rule: it is evaluated no more, its open episodes end. NotFound; Conflict when retired."""
    rows = await execute(
        "UPDATE vital_rule SET retired_at = $2, retired_by = $3 WHERE id = $1 AND retired_at IS NULL"
        " RETURNING id",
        [rule_id, now, retired_by],
    )
    if not rows:
        await rule(rule_id)  # NotFound for an unknown rule
        raise Conflict("This rule was retired.", field="ruleId")
    await execute(
        "UPDATE vital_rule_firing SET ended_at = $2, ended_reason = $3"
        " WHERE rule_id = $1 AND ended_at IS NULL",
        [rule_id, now, EndReason.RULE_RETIRED.value],
    )
    return await rule(rule_id)


# Firings ---------------------------------------------------------------------------------------------

_FIRING_COLUMNS = """f.id, f.rule_id, f.rule_version, f.resident_id, f.reading_id, f.measured_at, f.fired_at,
    f.ended_at, f.ended_reason, v.name, v.measure, v.condition, v.direction, v.times, v.days,
    (SELECT t.id FROM care_task t WHERE t.rule_firing_id = f.id) AS task_id"""
_FIRING_FROM = (
    "vital_rule_firing f JOIN vital_rule_version v ON v.rule_id = f.rule_id AND v.version = f.rule_version"
)


def _firing(row: Mapping[str, Any]) -> Firing:
    return Firing(
        id=row["id"],
        rule_id=row["rule_id"],
        rule_version=row["rule_version"],
        rule_name=row["name"],
        measure=vitals.Measure(row["measure"]),
        condition=Condition(row["condition"]),
        direction=Direction(row["direction"]),
        times=row["times"],
        days=row["days"],
        resident_id=row["resident_id"],
        reading_id=row["reading_id"],
        measured_at=row["measured_at"],
        fired_at=row["fired_at"],
        ended_at=row["ended_at"],
        ended_reason=EndReason(row["ended_reason"]) if row["ended_reason"] else None,
        task_id=row["task_id"],
    )


async def firings_of(resident_id: int, *, before_id: int | None, limit: int) -> list[Firing]:
    """The resident's firings, newest first, before the firing `before_id` of the previous page."""
    rows = await execute(
        f"""SELECT {_FIRING_COLUMNS} FROM {_FIRING_FROM}
            WHERE f.resident_id = $1 AND ($2::bigint IS NULL OR f.id < $2) ORDER BY f.id DESC LIMIT $3""",
        [resident_id, before_id, limit],
    )
    return [_firing(row) for row in rows]


async def count_firings(resident_id: int) -> int:
    rows = await execute("SELECT count(*) AS n FROM vital_rule_firing WHERE resident_id = $1", [resident_id])
    return rows[0]["n"]


# Evaluation ------------------------------------------------------------------------------------------


def _day(moment: datetime, tz: Any) -> date:
    return moment.astimezone(tz).date()


def _window_start(day: date, days: int, tz: Any) -> datetime:
    """Midnight (UTC) of the first local day of a window of `days` days ending with `day`."""
    return to_utc(datetime.combine(day - timedelta(days=days - 1), time()), tz)


def condition_holds(
    found: Rule, readings: Sequence[vitals.Reading], at: datetime, tz: Any, *, after: datetime | None
) -> bool:
    """Whether `found`'s condition holds at `at` over `readings` (ascending, none later than `at`); for a
    count, only readings measured after `after` count (None: all)."""
    out = _OUT[found.direction]
    start = _window_start(_day(at, tz), found.days, tz)
    window = [r for r in readings if r.measured_at >= start and r.flag is not None]
    if found.condition is Condition.COUNT_WITHIN_DAYS:
        counted = [r for r in window if r.flag in out and (after is None or r.measured_at > after)]
        return len(counted) >= found.times
    run: set[date] = set()
    for reading in reversed(window):
        if reading.flag not in out:
            break  # a reading not out on the rule's side ends the run
        run.add(_day(reading.measured_at, tz))
    today = _day(at, tz)
    return all(today - timedelta(days=back) in run for back in range(found.times))


async def _active_rules(measure: vitals.Measure) -> list[Rule]:
    rows = await execute(
        f"""SELECT {_RULE_COLUMNS} FROM {_CURRENT}
            WHERE r.retired_at IS NULL AND v.active AND v.measure = $1 ORDER BY r.id""",
        [measure.value],
    )
    return [_rule(row) for row in rows]


async def _window(
    resident_id: int, measure: vitals.Measure, start: datetime, at: datetime
) -> list[vitals.Reading]:
    newest_first = await vitals.list_readings(
        resident_id,
        vitals.ReadingFilter(measure, start, at + timedelta(microseconds=1)),
        after_id=None,
        limit=MAX_WINDOW_READINGS,
    )
    return list(reversed(newest_first))


async def _end(firing_id: int, at: datetime, reason: EndReason, reading_id: int) -> None:
    await execute(
        """UPDATE vital_rule_firing SET ended_at = $2, ended_reason = $3, ended_reading_id = $4
           WHERE id = $1 AND ended_at IS NULL""",
        [firing_id, at, reason.value, reading_id],
    )


async def _fire(found: Rule, reading: vitals.Reading, now: datetime) -> int | None:
    """Record the firing (once: None when an episode is open already), its task and its notification."""
    inserted = await execute(
        """INSERT INTO vital_rule_firing
               (rule_id, rule_version, resident_id, reading_id, measured_at, fired_at)
           VALUES ($1, $2, $3, $4, $5, $6)
           ON CONFLICT (rule_id, resident_id) WHERE ended_at IS NULL DO NOTHING RETURNING id""",
        [found.id, found.version, reading.resident_id, reading.id, reading.measured_at, now],
    )
    if not inserted:
        return None
    firing_id = inserted[0]["id"]
    if found.task_role is not None:
        await tasks.add_rule_task(
            firing_id,
            reading.resident_id,
            role=found.task_role,
            due_at=now + timedelta(minutes=found.task_due_minutes or 0),
            duration_minutes=TASK_MINUTES,
        )
    await notify(
        Notification(
            kind=FIRED_KIND,
            message=VITAL_RULE_FIRED,
            idempotency_key=f"{FIRED_KIND}:{firing_id}",
            roles=frozenset(found.notify_roles),
            params={"rule_id": found.id},
            resident_id=reading.resident_id,
            subject_type="VitalRuleFiring",
            subject_id=firing_id,
        )
    )
    return firing_id


async def evaluate_after_reading(reading: vitals.Reading, now: datetime) -> list[int]:
    """Evaluate the institution's active rules on the reading's measure after it was recorded, in the
    recording's unit of work; the ids of the firings it caused. Holds the resident's row until the unit of
    work ends, so that readings of one resident recorded at once are evaluated one after the other."""
    if reading.flag is None:
        return []  # judged against no range: says nothing about any rule
    active = await _active_rules(reading.measure)
    if not active:
        return []
    await execute("SELECT 1 FROM resident WHERE id = $1 FOR NO KEY UPDATE", [reading.resident_id])
    episodes = await _episodes(reading.resident_id, (found.id for found in active))
    at = reading.measured_at
    breached = [found for found in active if reading.flag in _OUT[found.direction]]
    breached_ids = {found.id for found in breached}
    for found in active:
        open_id = episodes.get(found.id, (None, None))[0]
        if found.id not in breached_ids and open_id is not None:
            await _end(open_id, at, EndReason.BACK_IN_RANGE, reading.id)
    if not breached:
        return []  # most readings: in range, so no window of past readings to open
    tz = zone()
    longest = max(found.days for found in breached)
    readings = await _window(
        reading.resident_id, reading.measure, _window_start(_day(at, tz), longest, tz), at
    )
    fired: list[int] = []
    for found in breached:
        open_id, last_fired = episodes.get(found.id, (None, None))
        if open_id is not None:
            if not condition_holds(found, readings, at, tz, after=None):
                await _end(open_id, at, EndReason.WINDOW_CLEARED, reading.id)
            continue
        if condition_holds(found, readings, at, tz, after=last_fired):
            firing_id = await _fire(found, reading, now)
            if firing_id is not None:
                fired.append(firing_id)
    return fired


async def _episodes(
    resident_id: int, rule_ids: Iterable[int]
) -> dict[int, tuple[int | None, datetime | None]]:
    """Per rule: its open episode's firing id (None: none open) and the reading time of its last firing."""
    rows = await execute(
        """SELECT rule_id, max(id) FILTER (WHERE ended_at IS NULL) AS open_id, max(measured_at) AS last_fired
           FROM vital_rule_firing WHERE resident_id = $1 AND rule_id = ANY($2::bigint[]) GROUP BY rule_id""",
        [resident_id, sorted(set(rule_ids))],
    )
    return {row["rule_id"]: (row["open_id"], row["last_fired"]) for row in rows}

"""SOPs: templates of standard procedures, their instances for one resident, and the steps as due reminders
(migrations/tenant/0021_sops.sql, migrations/shared/0011_chain_sop_templates.sql, docs/sops.md).

A template is anchored on an event of a resident's stay (admission, discharge, birthday, contract end) and
made of steps: a day offset (and an hour offset) from the anchor's local date, a local time of day, an
assignee (a staff role or "the resident's butler"), instructions, a required outcome (a family
communication entry), a grace period and the role a missed step escalates to. Templates belong to an
institution or to a chain (they apply to every institution of the chain). Every edit is a new version;
an instance pins the version it started from and its steps are written out, due times and all, when it
starts, so editing or retiring a template never changes an instance in flight.

Due times are wall-clock times of the institution: (anchor date + day offset) at the time of day (00:00
when none), plus the hour offset, read in the institution's time zone, so that "day 15 at 10:00" stays
10:00 across a daylight-saving change. Admission starts the admission instances (care/residents.py,
same unit of work), discharge the discharge ones (and cancels the open steps of the others); the sweep
starts birthday instances (once a local day, for birthdays in the next `BIRTHDAY_AHEAD` days). Contract
end is accepted in templates; instances start when contracts exist (no contract date is kept yet).

`sweep_sop_steps(now)` (every minute, workers/sweep.py) notifies the assignee of each open step due within
`REMIND_AHEAD` once (not before its due time) and escalates each open step past due + grace once; both are
marked on the step in the statement that picks them and notified with the step's own idempotency key, so
running it twice, or twice at once, notifies once. Every function runs in the caller's tenant unit of
work except the chain template functions, which touch only the shared schema.
"""

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from tortoise.transactions import in_transaction

from care.care_plans import to_utc, zone
from care.family_log import NewFamilyCommunication, record_family_communication
from care.notifications import SOP_STEP_DUE, SOP_STEP_MISSED, Notification, notify
from care.sealed_rows import admission_date_of, execute, opened_texts, padded, seal, text, writable
from care.tasks import audit_sweep, day_bounds, keyset_after
from compliance.encryption import field_cipher
from compliance.principals import StaffRole
from tenants.context import current_tenant
from tenants.errors import Conflict, Erased, InvalidInput, NotFound, raise_if_any

BUTLER = "butler"  # a step's assignee: the resident's butler (their role when none is assigned)
MAX_STEPS = 30
MAX_DAYS = 3650
MAX_GRACE_HOURS = 720
MAX_NAME = 200
MAX_INSTRUCTIONS = 2000
MAX_NOTE = 1000
REMIND_AHEAD = timedelta(days=1)  # a reminder goes to the outbox this early, delivered at the due time
BIRTHDAY_AHEAD = 14  # days: birthday instances start this far ahead
SWEEP_SUBJECT = "system:sops"
_BLOCK = 64
STEP_TABLE, NOTE_COLUMN = "sop_step", "note"
# Roles a step may be assigned or escalated to: those who care for and speak for the resident.
ASSIGNABLE_ROLES = (
    StaffRole.INSTITUTION_ADMIN,
    StaffRole.HEAD_NURSE,
    StaffRole.NURSE,
    StaffRole.DOCTOR,
    StaffRole.CAREGIVER,
    StaffRole.BUTLER,
    StaffRole.SALES,
)


def clock() -> datetime:
    """Now, for the admission and discharge hooks (tests replace it: a controllable clock)."""
    return datetime.now(UTC)


class Anchor(StrEnum):
    ADMISSION = "admission"
    DISCHARGE = "discharge"
    BIRTHDAY = "birthday"
    CONTRACT_END = "contract_end"  # accepted; instances start when contracts exist


class Source(StrEnum):
    INSTITUTION = "institution"
    CHAIN = "chain"


class Outcome(StrEnum):
    FAMILY_COMMUNICATION = "family_communication"


class StepStatus(StrEnum):
    OPEN = "open"
    DONE = "done"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


@dataclass(frozen=True, slots=True)
class NewStep:
    title: str
    day_offset: int
    assignee: str  # BUTLER or a StaffRole value
    grace_hours: int
    instructions: str | None = None
    hour_offset: int = 0
    time_of_day: str | None = None  # "HH:MM", local
    requires_outcome: Outcome | str | None = None
    escalation_role: str | None = StaffRole.HEAD_NURSE.value


@dataclass(frozen=True, slots=True)
class NewTemplate:
    name: str
    anchor: Anchor | str
    steps: Sequence[NewStep]


@dataclass(frozen=True, slots=True)
class TemplateStep:
    title: str
    instructions: str
    day_offset: int
    hour_offset: int
    time_of_day: time | None
    assignee: str
    requires_outcome: Outcome | None
    grace_hours: int
    escalation_role: StaffRole

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "instructions": self.instructions,
            "dayOffset": self.day_offset,
            "hourOffset": self.hour_offset,
            "timeOfDay": self.time_of_day.strftime("%H:%M") if self.time_of_day else None,
            "assignee": self.assignee,
            "requiresOutcome": self.requires_outcome.value if self.requires_outcome else None,
            "graceHours": self.grace_hours,
            "escalationRole": self.escalation_role.value,
        }

    @classmethod
    def of_json(cls, given: Mapping[str, Any]) -> "TemplateStep":
        moment = given.get("timeOfDay")
        return cls(
            title=given["title"],
            instructions=given.get("instructions") or "",
            day_offset=int(given["dayOffset"]),
            hour_offset=int(given.get("hourOffset") or 0),
            time_of_day=time.fromisoformat(moment) if moment else None,
            assignee=given["assignee"],
            requires_outcome=Outcome(given["requiresOutcome"]) if given.get("requiresOutcome") else None,
            grace_hours=int(given["graceHours"]),
            escalation_role=StaffRole(given.get("escalationRole") or StaffRole.HEAD_NURSE.value),
        )


@dataclass(frozen=True, slots=True)
class Template:
    id: int
    source: Source
    owner_id: int  # the institution's or the chain's id
    version: int
    name: str
    anchor: Anchor
    steps: tuple[TemplateStep, ...]
    is_default: bool
    retired_at: datetime | None
    recorded_by: str
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class Step:
    id: int
    instance_id: int
    resident_id: int
    position: int
    title: str
    instructions: str
    assignee: str
    requires_outcome: Outcome | None
    due_at: datetime
    grace_minutes: int
    escalation_role: StaffRole
    status: StepStatus
    done_at: datetime | None
    done_by: str | None
    family_communication_id: int | None
    note: str | None  # why it was skipped (opened)
    closed_reason: str | None
    reminded_at: datetime | None
    escalated_at: datetime | None


@dataclass(frozen=True, slots=True)
class Instance:
    id: int
    resident_id: int
    source: Source
    template_id: int
    template_version: int
    name: str
    anchor: Anchor
    anchor_date: date
    status: str
    created_at: datetime
    steps: tuple[Step, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class SopSweep:
    reminded: int
    escalated: int
    started: int = 0  # birthday instances started


def due_at(anchor_date: date, step: TemplateStep, tz: ZoneInfo) -> datetime:
    """The step's due time (UTC): a wall-clock time of `tz` (in the hour a clock skips, read with the
    offset before the change; in the hour it repeats, the first one)."""
    wall = datetime.combine(anchor_date + timedelta(days=step.day_offset), step.time_of_day or time())
    wall += timedelta(hours=step.hour_offset)
    return to_utc(wall, tz)


# Checks ----------------------------------------------------------------------------------------------


def _role(value: str | None, name: str, problems: list[InvalidInput], *, butler: bool) -> str | None:
    allowed = [BUTLER] if butler else []
    allowed += [role.value for role in ASSIGNABLE_ROLES]
    if value not in allowed:
        problems.append(InvalidInput("Unknown role; one of: {roles}.", field=name, roles=", ".join(allowed)))
        return None
    return value


def _time_of_day(value: str | None, name: str, problems: list[InvalidInput]) -> time | None:
    if value is None or value.strip() == "":
        return None
    cleaned = value.strip()
    try:
        if len(cleaned) != 5 or cleaned[2] != ":":
            raise ValueError(cleaned)
        return time(int(cleaned[:2]), int(cleaned[3:]))
    except ValueError:
        problems.append(InvalidInput("The time of day is HH:MM, from 00:00 to 23:59.", field=name))
        return None


def check_template(new: NewTemplate) -> tuple[str, Anchor, tuple[TemplateStep, ...]]:
    """(name, anchor, steps) cleaned, or ValidationFailed with every problem."""
    problems: list[InvalidInput] = []
    name = text(new.name, "name", problems, limit=MAX_NAME, required=True) or ""
    anchor = Anchor.ADMISSION
    try:
        anchor = Anchor(new.anchor)
    except ValueError:
        problems.append(InvalidInput("Unknown anchor event.", field="anchor"))
    if not new.steps:
        problems.append(InvalidInput("A procedure needs at least one step.", field="steps"))
    elif len(new.steps) > MAX_STEPS:
        problems.append(InvalidInput("At most {max} steps.", field="steps", max=MAX_STEPS))
    steps: list[TemplateStep] = []
    for index, given in enumerate(new.steps[:MAX_STEPS]):
        at = f"steps.{index}."
        title = text(given.title, at + "title", problems, limit=MAX_NAME, required=True) or ""
        instructions = text(given.instructions, at + "instructions", problems, limit=MAX_INSTRUCTIONS) or ""
        if given.day_offset < 0 or given.hour_offset < 0:
            problems.append(
                InvalidInput(
                    "An offset cannot put a step before its anchor event.",
                    field=at + ("dayOffset" if given.day_offset < 0 else "hourOffset"),
                )
            )
        elif given.day_offset > MAX_DAYS:
            problems.append(
                InvalidInput(
                    "At most {max} days after the anchor event.", field=at + "dayOffset", max=MAX_DAYS
                )
            )
        elif given.hour_offset > 23:
            problems.append(InvalidInput("The hour offset is 0 to 23.", field=at + "hourOffset"))
        moment = _time_of_day(given.time_of_day, at + "timeOfDay", problems)
        assignee = _role(given.assignee, at + "assignee", problems, butler=True)
        escalation = _role(
            given.escalation_role or StaffRole.HEAD_NURSE.value, at + "escalationRole", problems, butler=False
        )
        outcome = None
        if given.requires_outcome is not None:
            try:
                outcome = Outcome(given.requires_outcome)
            except ValueError:
                problems.append(InvalidInput("Unknown outcome record.", field=at + "requiresOutcome"))
        if not 0 < given.grace_hours <= MAX_GRACE_HOURS:
            problems.append(
                InvalidInput(
                    "The grace period is 1 to {max} hours.", field=at + "graceHours", max=MAX_GRACE_HOURS
                )
            )
        if assignee is not None and escalation is not None:
            steps.append(
                TemplateStep(
                    title,
                    instructions,
                    given.day_offset,
                    given.hour_offset,
                    moment,
                    assignee,
                    outcome,
                    given.grace_hours,
                    StaffRole(escalation),
                )
            )
    raise_if_any(problems)
    return name, anchor, tuple(steps)


# Templates: an institution's (tenant schema) and a chain's (shared schema) -----------------------------

_TABLES = {
    Source.INSTITUTION: ("sop_template", "sop_template_version"),
    Source.CHAIN: ("shared.chain_sop_template", "shared.chain_sop_template_version"),
}


def _template(row: Mapping[str, Any], source: Source, owner_id: int) -> Template:
    steps = row["steps"]
    if isinstance(steps, str):
        steps = json.loads(steps)
    return Template(
        id=row["id"],
        source=source,
        owner_id=owner_id if source is Source.INSTITUTION else row["chain_id"],
        version=row["version"],
        name=row["name"],
        anchor=Anchor(row["anchor"]),
        steps=tuple(TemplateStep.of_json(step) for step in steps),
        is_default=bool(row.get("is_default", False)),
        retired_at=row["retired_at"],
        recorded_by=row["recorded_by"],
        recorded_at=row["recorded_at"],
    )


def _select(source: Source) -> str:
    table, versions = _TABLES[source]
    extra = "t.is_default" if source is Source.INSTITUTION else "t.chain_id"
    return f"""SELECT t.id, t.retired_at, {extra}, v.version, v.name, v.anchor, v.steps::text AS steps,
                      v.recorded_by, v.recorded_at
               FROM {table} t JOIN {versions} v ON v.template_id = t.id AND v.version = t.current_version"""


async def _write_version(
    source: Source,
    template_id: int,
    version: int,
    checked: tuple[str, Anchor, tuple[TemplateStep, ...]],
    by: str,
) -> None:
    _, versions = _TABLES[source]
    name, anchor, steps = checked
    await execute(
        f"""INSERT INTO {versions} (template_id, version, name, anchor, steps, recorded_by)
            VALUES ($1, $2, $3, $4, $5::jsonb, $6)""",
        [template_id, version, name, anchor.value, json.dumps([s.as_json() for s in steps]), by],
    )


async def create_template(new: NewTemplate, *, by: str, chain_id: int | None = None) -> Template:
    """A new template (version 1) of the acting institution, or of `chain_id`. ValidationFailed."""
    checked = check_template(new)
    source = Source.CHAIN if chain_id is not None else Source.INSTITUTION
    table, _ = _TABLES[source]
    # A chain's request has no tenant unit of work: its two rows are one transaction here.
    async with in_transaction("default"):
        if source is Source.CHAIN:
            rows = await execute(
                f"INSERT INTO {table} (chain_id, created_by) VALUES ($1, $2) RETURNING id", [chain_id, by]
            )
        else:
            rows = await execute(f"INSERT INTO {table} (created_by) VALUES ($1) RETURNING id", [by])
        await _write_version(source, rows[0]["id"], 1, checked, by)
    return await template(source, rows[0]["id"])


async def edit_template(source: Source, template_id: int, new: NewTemplate, *, by: str) -> Template:
    """A new version of a template (earlier ones stay, instances keep theirs). NotFound if retired."""
    table, _ = _TABLES[source]
    checked = check_template(new)
    async with in_transaction("default"):
        rows = await execute(
            f"SELECT current_version FROM {table} WHERE id = $1 AND retired_at IS NULL FOR UPDATE",
            [template_id],
        )
        if not rows:
            raise NotFound("SOP template not found.", field="templateId")
        version = rows[0]["current_version"] + 1
        await _write_version(source, template_id, version, checked, by)
        await execute(f"UPDATE {table} SET current_version = $2 WHERE id = $1", [template_id, version])
    return await template(source, template_id)


async def retire_template(source: Source, template_id: int, *, by: str, now: datetime) -> Template:
    """No new instances from it; instances in flight go on. NotFound if unknown or retired already."""
    table, _ = _TABLES[source]
    rows = await execute(
        f"""UPDATE {table} SET retired_at = $2, retired_by = $3 WHERE id = $1 AND retired_at IS NULL
            RETURNING id""",
        [template_id, now, by],
    )
    if not rows:
        raise NotFound("SOP template not found.", field="templateId")
    return await template(source, template_id)


async def template(source: Source, template_id: int) -> Template:
    rows = await execute(f"{_select(source)} WHERE t.id = $1", [template_id])
    if not rows:
        raise NotFound("SOP template not found.", field="templateId")
    return _template(rows[0], source, _owner(source))


async def chain_of_template(template_id: int) -> int:
    rows = await execute("SELECT chain_id FROM shared.chain_sop_template WHERE id = $1", [template_id])
    if not rows:
        raise NotFound("SOP template not found.", field="templateId")
    return rows[0]["chain_id"]


def _owner(source: Source) -> int:
    return current_tenant().institution_id if source is Source.INSTITUTION else 0


async def templates_page(
    source: Source,
    *,
    chain_id: int | None = None,
    include_retired: bool = False,
    after_id: int | None,
    limit: int,
) -> list[Template]:
    """Templates in id order (the acting institution's, or `chain_id`'s), current versions."""
    where = ["t.id > $1"]
    params: list[object] = [after_id or 0, limit]
    if not include_retired:
        where.append("t.retired_at IS NULL")
    if source is Source.CHAIN:
        where.append("t.chain_id = $3")
        params.append(chain_id)
    rows = await execute(f"{_select(source)} WHERE {' AND '.join(where)} ORDER BY t.id LIMIT $2", params)
    return [_template(row, source, _owner(source)) for row in rows]


async def count_templates(
    source: Source, *, chain_id: int | None = None, include_retired: bool = False
) -> int:
    table, _ = _TABLES[source]
    where = ["true" if include_retired else "retired_at IS NULL"]
    params: list[object] = []
    if source is Source.CHAIN:
        where.append("chain_id = $1")
        params.append(chain_id)
    rows = await execute(f"SELECT count(*) AS n FROM {table} WHERE {' AND '.join(where)}", params)
    return int(rows[0]["n"])


async def active_templates(anchor: Anchor) -> list[Template]:
    """The templates that apply in the acting institution: its own and its chain's, not retired."""
    found = [
        _template(row, Source.INSTITUTION, _owner(Source.INSTITUTION))
        for row in await execute(
            f"{_select(Source.INSTITUTION)} WHERE t.retired_at IS NULL AND v.anchor = $1 ORDER BY t.id",
            [anchor.value],
        )
    ]
    chain_id = current_tenant().chain_id
    if chain_id is not None:
        rows = await execute(
            f"""{_select(Source.CHAIN)} WHERE t.retired_at IS NULL AND v.anchor = $1 AND t.chain_id = $2
                ORDER BY t.id""",
            [anchor.value, chain_id],
        )
        found += [_template(row, Source.CHAIN, chain_id) for row in rows]
    return found


# Instances -------------------------------------------------------------------------------------------


async def start_instances(resident_id: int, anchor: Anchor, anchor_date: date, *, now: datetime) -> list[int]:
    """An instance of every active template on `anchor` for the resident's event of `anchor_date`, with
    its steps written out (the template's current version pinned). A step already past its grace at
    `now` starts closed ('before_start': a backdated event is not escalated). Idempotent: the ids of the
    instances added."""
    tz = zone()
    started: list[int] = []
    for found in await active_templates(anchor):
        rows = await execute(
            """INSERT INTO sop_instance (resident_id, source, template_id, template_version, name, anchor,
                   anchor_date)
               VALUES ($1, $2, $3, $4, $5, $6, $7)
               ON CONFLICT (resident_id, source, template_id, anchor_date) DO NOTHING RETURNING id""",
            [resident_id, found.source.value, found.id, found.version, found.name, anchor.value, anchor_date],
        )
        if not rows:
            continue
        instance_id = rows[0]["id"]
        started.append(instance_id)
        dues = [due_at(anchor_date, step, tz) for step in found.steps]
        past = [
            due + timedelta(hours=step.grace_hours) <= now
            for step, due in zip(found.steps, dues, strict=True)
        ]
        await execute(
            """INSERT INTO sop_step (instance_id, resident_id, position, title, instructions, assignee,
                   requires_outcome, due_at, grace_minutes, escalation_role, status, done_at, done_by,
                   closed_reason)
               SELECT $1, $2, t.* FROM unnest($3::int[], $4::varchar[], $5::text[], $6::varchar[],
                   $7::varchar[], $8::timestamptz[], $9::int[], $10::varchar[], $11::varchar[],
                   $12::timestamptz[], $13::varchar[], $14::varchar[]) AS t""",
            [
                instance_id,
                resident_id,
                list(range(1, len(found.steps) + 1)),
                [step.title for step in found.steps],
                [step.instructions for step in found.steps],
                [step.assignee for step in found.steps],
                [step.requires_outcome.value if step.requires_outcome else None for step in found.steps],
                dues,
                [step.grace_hours * 60 for step in found.steps],
                [step.escalation_role.value for step in found.steps],
                ["skipped" if gone else "open" for gone in past],
                [now if gone else None for gone in past],
                [SWEEP_SUBJECT if gone else None for gone in past],
                ["before_start" if gone else None for gone in past],
            ],
        )
    return started


async def on_admission(resident_id: int, admission_date: date) -> list[int]:
    """Called by care.residents.admit_resident, in the admission's unit of work."""
    return await start_instances(resident_id, Anchor.ADMISSION, admission_date, now=clock())


async def on_discharge(resident_id: int, discharged_on: date) -> list[int]:
    """Called by care.residents.discharge_resident, in its unit of work: the open steps of the resident's
    other instances are cancelled, the discharge instances start."""
    now = clock()
    await execute(
        """UPDATE sop_step s SET status = 'cancelled', done_at = $2, done_by = $3,
               closed_reason = 'discharged'
           FROM sop_instance i
           WHERE s.instance_id = i.id AND s.resident_id = $1 AND s.status = 'open'
               AND i.anchor <> 'discharge'""",
        [resident_id, now, SWEEP_SUBJECT],
    )
    return await start_instances(resident_id, Anchor.DISCHARGE, discharged_on, now=now)


_STEP_COLUMNS = """s.id, s.instance_id, s.resident_id, s.position, s.title, s.instructions, s.assignee,
    s.requires_outcome, s.due_at, s.grace_minutes, s.escalation_role, s.status, s.done_at, s.done_by,
    s.family_communication_id, s.note, s.closed_reason, s.reminded_at, s.escalated_at"""


async def _steps(rows: Iterable[Mapping[str, Any]]) -> list[Step]:
    rows = list(rows)
    notes = await opened_texts(STEP_TABLE, rows, NOTE_COLUMN)
    return [
        Step(
            id=row["id"],
            instance_id=row["instance_id"],
            resident_id=row["resident_id"],
            position=row["position"],
            title=row["title"],
            instructions=row["instructions"],
            assignee=row["assignee"],
            requires_outcome=Outcome(row["requires_outcome"]) if row["requires_outcome"] else None,
            due_at=row["due_at"],
            grace_minutes=row["grace_minutes"],
            escalation_role=StaffRole(row["escalation_role"]),
            status=StepStatus(row["status"]),
            done_at=row["done_at"],
            done_by=row["done_by"],
            family_communication_id=row["family_communication_id"],
            note=notes.get(row["id"]),
            closed_reason=row["closed_reason"],
            reminded_at=row["reminded_at"],
            escalated_at=row["escalated_at"],
        )
        for row in rows
    ]


async def instances_of(resident_id: int) -> list[Instance]:
    """The resident's instances, oldest first, with their steps in order."""
    rows = await execute(
        """SELECT id, resident_id, source, template_id, template_version, name, anchor, anchor_date, status,
                  created_at FROM sop_instance WHERE resident_id = $1 ORDER BY anchor_date, id""",
        [resident_id],
    )
    steps = await _steps(
        await execute(
            f"""SELECT {_STEP_COLUMNS} FROM sop_step s WHERE s.resident_id = $1
                ORDER BY s.instance_id, s.position""",
            [resident_id],
        )
    )
    by_instance: dict[int, list[Step]] = {}
    for step in steps:
        by_instance.setdefault(step.instance_id, []).append(step)
    return [
        Instance(
            id=row["id"],
            resident_id=row["resident_id"],
            source=Source(row["source"]),
            template_id=row["template_id"],
            template_version=row["template_version"],
            name=row["name"],
            anchor=Anchor(row["anchor"]),
            anchor_date=row["anchor_date"],
            status=row["status"],
            created_at=row["created_at"],
            steps=tuple(by_instance.get(row["id"], ())),
        )
        for row in rows
    ]


async def step(step_id: int) -> Step:
    rows = await execute(f"SELECT {_STEP_COLUMNS} FROM sop_step s WHERE s.id = $1", [step_id])
    if not rows:
        raise NotFound("SOP step not found.", field="stepId")
    (found,) = await _steps(rows)
    return found


async def resident_of_step(step_id: int) -> int:
    rows = await execute("SELECT resident_id FROM sop_step WHERE id = $1", [step_id])
    if not rows:
        raise NotFound("SOP step not found.", field="stepId")
    return rows[0]["resident_id"]


# Keyset pages of a day's steps, ordered by (due_at, id) as the tasks' (`page_key`, care/tasks.py).
# Mine: named to me as the resident's butler, the butler role's when the resident has none, or my role's.
_MINE = """(
    (s.assignee = 'butler' AND b.account_id = $3)
    OR (s.assignee = 'butler' AND b.account_id IS NULL AND 'butler' = ANY($4::varchar[]))
    OR (s.assignee <> 'butler' AND s.assignee = ANY($4::varchar[]))
)"""


async def steps_of_staff(
    account_id: int, roles: Iterable[StaffRole], day: date, *, after_key: int | None, limit: int
) -> list[Step]:
    """A member of staff's SOP steps due on a local day, by due time."""
    start, end = day_bounds(day)
    after_due, after_id = keyset_after(after_key)
    rows = await execute(
        f"""SELECT {_STEP_COLUMNS} FROM sop_step s
                LEFT JOIN resident_butler b ON b.resident_id = s.resident_id
            WHERE s.due_at >= $1 AND s.due_at < $2 AND {_MINE}
                AND (date_trunc('second', s.due_at), s.id) > ($5, $6)
            ORDER BY s.due_at, s.id LIMIT $7""",
        [start, end, account_id, sorted(r.value for r in roles), after_due, after_id, limit],
    )
    return await _steps(rows)


async def count_steps_of_staff(account_id: int, roles: Iterable[StaffRole], day: date) -> int:
    start, end = day_bounds(day)
    rows = await execute(
        f"""SELECT count(*) AS n FROM sop_step s LEFT JOIN resident_butler b ON b.resident_id = s.resident_id
            WHERE s.due_at >= $1 AND s.due_at < $2 AND {_MINE}""",
        [start, end, account_id, sorted(r.value for r in roles)],
    )
    return int(rows[0]["n"])


# Completing and skipping -----------------------------------------------------------------------------


async def _open_step(step_id: int) -> Step:
    rows = await execute(f"SELECT {_STEP_COLUMNS} FROM sop_step s WHERE s.id = $1 FOR UPDATE", [step_id])
    if not rows:
        raise NotFound("SOP step not found.", field="stepId")
    (found,) = await _steps(rows)
    if found.status is not StepStatus.OPEN:
        raise Conflict("This step was closed already.", field="stepId")
    return found


async def complete_step(
    step_id: int, outcome: NewFamilyCommunication | None, *, by: str, now: datetime
) -> tuple[Step, int | None]:
    """Close a step as done. The conversation given is recorded in the family communication log in the
    same unit of work (required when the step requires it). (the step, the log entry's id)."""
    found = await _open_step(step_id)
    if found.requires_outcome is Outcome.FAMILY_COMMUNICATION and outcome is None:
        raise InvalidInput(
            "This step requires a record of the conversation with the family.", field="outcome"
        )
    entry_id = None
    if outcome is not None:
        entry_id = (await record_family_communication(found.resident_id, outcome, recorded_by=by)).id
    await execute(
        """UPDATE sop_step SET status = 'done', done_at = $2, done_by = $3, family_communication_id = $4
           WHERE id = $1""",
        [step_id, now, by, entry_id],
    )
    return await step(step_id), entry_id


async def skip_step(step_id: int, reason: str | None, *, by: str, now: datetime) -> Step:
    """Close a step as skipped, with the reason (required, sealed under the resident's data key)."""
    found = await _open_step(step_id)
    problems: list[InvalidInput] = []
    note = text(reason, "reason", problems, limit=MAX_NOTE, required=True)
    raise_if_any(problems)
    cipher = await field_cipher()
    await writable(cipher, found.resident_id)
    sealed = await seal(
        cipher, STEP_TABLE, NOTE_COLUMN, found.id, found.resident_id, padded(note or "", _BLOCK)
    )
    await execute(
        """UPDATE sop_step SET status = 'skipped', done_at = $2, done_by = $3, note = $4,
               closed_reason = 'skipped'
           WHERE id = $1""",
        [step_id, now, by, sealed],
    )
    return await step(step_id)


# The resident's butler -------------------------------------------------------------------------------


async def assign_butler(resident_id: int, account_id: int, *, by: str) -> int:
    """Make `account_id` the resident's butler: an active account holding the butler role in the acting
    institution (ValidationFailed otherwise). NotFound if there is no such resident."""
    await admission_date_of(resident_id, lock=True)
    rows = await execute(
        """SELECT 1 FROM shared.staff_membership m JOIN shared.user_account a ON a.id = m.account_id
           WHERE m.account_id = $1 AND m.institution_id = $2 AND m.role = 'butler' AND a.status = 'active'
           LIMIT 1""",
        [account_id, current_tenant().institution_id],
    )
    if not rows:
        raise_if_any([InvalidInput("This account is not a butler of the institution.", field="butlerId")])
    await execute(
        """INSERT INTO resident_butler (resident_id, account_id, assigned_by) VALUES ($1, $2, $3)
           ON CONFLICT (resident_id) DO UPDATE SET account_id = excluded.account_id,
               assigned_by = excluded.assigned_by, assigned_at = now()""",
        [resident_id, account_id, by],
    )
    return account_id


async def unassign_butler(resident_id: int) -> None:
    """The resident has no butler of their own: their steps go to the butler role. NotFound."""
    await admission_date_of(resident_id, lock=True)
    await execute("DELETE FROM resident_butler WHERE resident_id = $1", [resident_id])


async def butler_of(resident_id: int) -> int | None:
    rows = await execute("SELECT account_id FROM resident_butler WHERE resident_id = $1", [resident_id])
    return rows[0]["account_id"] if rows else None


# The sweep -------------------------------------------------------------------------------------------


def _birthday_in(birth: date, year: int) -> date:
    try:
        return birth.replace(year=year)
    except ValueError:  # 29 February in a common year: the 28th
        return date(year, 2, 28)


async def start_birthday_instances(now: datetime) -> int:
    """Once a local day: instances of the birthday templates for residents in residence whose birthday
    falls in the next `BIRTHDAY_AHEAD` days (birth dates are sealed: opened here, once a day)."""
    from care.residents import get_resident  # care.residents calls this module at admission

    today = now.astimezone(zone()).date()
    if not await active_templates(Anchor.BIRTHDAY):
        return 0
    scanned = await execute(
        "INSERT INTO sop_birthday_scan (day) VALUES ($1) ON CONFLICT DO NOTHING RETURNING day", [today]
    )
    if not scanned:
        return 0
    residents = await execute(
        """SELECT id FROM resident r WHERE status <> 'discharged'
               AND NOT EXISTS (SELECT 1 FROM resident_erasure e WHERE e.resident_id = r.id) ORDER BY id""",
        [],
    )
    started: list[int] = []
    for row in residents:
        try:
            record = await get_resident(row["id"])
        except Erased:
            continue
        if record.identity is None:
            continue
        for year in (today.year, today.year + 1):
            birthday = _birthday_in(record.identity.birth_date, year)
            if today <= birthday <= today + timedelta(days=BIRTHDAY_AHEAD):
                if await start_instances(row["id"], Anchor.BIRTHDAY, birthday, now=now):
                    started.append(row["id"])
    await audit_sweep("sop.start", started, subject=SWEEP_SUBJECT)
    return len(started)


async def _recipients(rows: Sequence[Mapping[str, Any]]) -> dict[int, int]:
    """The butler account of each resident of `rows` that has one."""
    wanted = sorted({row["resident_id"] for row in rows})
    if not wanted:
        return {}
    found = await execute(
        "SELECT resident_id, account_id FROM resident_butler WHERE resident_id = ANY($1::bigint[])", [wanted]
    )
    return {row["resident_id"]: row["account_id"] for row in found}


async def remind_due(now: datetime) -> int:
    """Open steps due by now + REMIND_AHEAD not reminded yet: marked reminded and their assignee notified
    (delivered at the due time). Once: a second run finds none; the idempotency key holds on a race.
    Erased residents' steps are left alone (nobody is to act on them any more)."""
    rows = await execute(
        """UPDATE sop_step SET reminded_at = $1
           WHERE status = 'open' AND reminded_at IS NULL AND due_at <= $2
               AND NOT EXISTS (SELECT 1 FROM resident_erasure e WHERE e.resident_id = sop_step.resident_id)
           RETURNING id, resident_id, assignee, due_at""",
        [now, now + REMIND_AHEAD],
    )
    butlers = await _recipients(rows)
    for row in sorted(rows, key=lambda r: (r["due_at"], r["id"])):
        account = butlers.get(row["resident_id"]) if row["assignee"] == BUTLER else None
        await notify(
            Notification(
                kind="sop.step_due",
                message=SOP_STEP_DUE,
                idempotency_key=f"sop.step_due:{row['id']}",
                roles=frozenset() if account is not None else frozenset({StaffRole(row["assignee"])}),
                account_ids=frozenset({account}) if account is not None else frozenset(),
                params={"step_id": row["id"]},
                resident_id=row["resident_id"],
                subject_type="SopStep",
                subject_id=row["id"],
                not_before=row["due_at"],
            )
        )
    await audit_sweep("sop.remind", (row["resident_id"] for row in rows), subject=SWEEP_SUBJECT)
    return len(rows)


async def escalate_missed(now: datetime) -> int:
    """Open steps past due + grace not escalated yet: marked escalated and the escalation role notified,
    once."""
    rows = await execute(
        """UPDATE sop_step SET escalated_at = $1
           WHERE status = 'open' AND escalated_at IS NULL AND due_at < $1
               AND due_at + make_interval(mins => grace_minutes) < $1
               AND NOT EXISTS (SELECT 1 FROM resident_erasure e WHERE e.resident_id = sop_step.resident_id)
           RETURNING id, resident_id, escalation_role, due_at""",
        [now],
    )
    for row in sorted(rows, key=lambda r: (r["due_at"], r["id"])):
        await notify(
            Notification(
                kind="sop.step_missed",
                message=SOP_STEP_MISSED,
                idempotency_key=f"sop.step_missed:{row['id']}",
                roles=frozenset({StaffRole(row["escalation_role"])}),
                params={"step_id": row["id"]},
                resident_id=row["resident_id"],
                subject_type="SopStep",
                subject_id=row["id"],
            )
        )
    await audit_sweep("sop.escalate", (row["resident_id"] for row in rows), subject=SWEEP_SUBJECT)
    return len(rows)


async def sweep_sop_steps(now: datetime) -> SopSweep:
    """One sweep of the acting institution (workers/sweep.py, every minute): birthday instances (once a
    local day), reminders of steps coming due, escalation of missed steps. Idempotent."""
    started = await start_birthday_instances(now)
    reminded = await remind_due(now)
    escalated = await escalate_missed(now)
    return SopSweep(reminded=reminded, escalated=escalated, started=started)

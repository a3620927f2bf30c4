"""Rules over vital signs through GraphQL (care/vital_rules.py): `vitalRules`, `setVitalRule`,
`retireVitalRule`, and `Resident.vitalRuleFirings` (bound in schema/residents.py).

Rules are the institution's configuration: the policy alone decides (vital_rule.view, vital_rule.edit), like
schema/institutions.py. A resident's firings are their data: read through schema/resident_access.py as
vitals (vitals.view), on the audit trail.
"""

from datetime import UTC, datetime

import strawberry

from care import vital_rules as rules
from compliance.policy import Action, require
from schema.context import YiyangInfo
from schema.ids import decode_id, encode_id
from schema.pagination import Connection, connection, page_request
from schema.resident_access import ResidentNode, recorder, require_resident_access
from schema.user_errors import USER_ERROR_TYPES, UserError, user_errors
from schema.vitals import VitalMeasure
from tenants.errors import NotFound

ConditionEnum = strawberry.enum(rules.Condition, name="VitalRuleCondition")
DirectionEnum = strawberry.enum(rules.Direction, name="VitalRuleDirection")
EndReasonEnum = strawberry.enum(rules.EndReason, name="VitalRuleEpisodeEnd")


@strawberry.type(
    name="VitalRule",
    description="A rule of the institution over vital signs (its current version): measure out of the "
    "resident's range N times within D days, or on N consecutive days → notify roles, create a task.",
)
class VitalRuleType:
    id: strawberry.ID
    version: int = strawberry.field(description="1 when added; each edit adds one (firings name theirs).")
    name: str
    measure: VitalMeasure
    condition: ConditionEnum
    times: int = strawberry.field(description="N.")
    days: int = strawberry.field(description="D: the window in local days (for consecutive days, ≥ N).")
    direction: DirectionEnum = strawberry.field(description="Which side of the resident's range counts.")
    notify_roles: list[str]
    task_role: str | None
    task_label: str | None
    task_due_minutes: int | None = strawberry.field(description="The task is due this long after firing.")
    active: bool
    retired_at: datetime | None
    recorded_by: str
    recorded_at: datetime

    @classmethod
    def of(cls, found: rules.Rule, institution_id: int) -> "VitalRuleType":
        return cls(
            id=strawberry.ID(encode_id("VitalRule", institution_id, found.id)),
            version=found.version,
            name=found.name,
            measure=found.measure,
            condition=found.condition,
            times=found.times,
            days=found.days,
            direction=found.direction,
            notify_roles=[role.value for role in found.notify_roles],
            task_role=found.task_role.value if found.task_role else None,
            task_label=found.task_label,
            task_due_minutes=found.task_due_minutes,
            active=found.active,
            retired_at=found.retired_at,
            recorded_by=found.recorded_by,
            recorded_at=found.recorded_at,
        )


@strawberry.type(
    name="VitalRuleFiring",
    description="One episode of a rule for a resident: fired once when its condition became true.",
)
class VitalRuleFiringType:
    id: strawberry.ID
    rule_id: strawberry.ID = strawberry.field(description="The VitalRule.")
    rule_version: int = strawberry.field(description="The version of the rule that fired.")
    rule_name: str
    measure: VitalMeasure
    condition: ConditionEnum
    direction: DirectionEnum
    times: int
    days: int
    reading_id: strawberry.ID | None = strawberry.field(description="The VitalReading that made it fire.")
    measured_at: datetime = strawberry.field(description="When that reading was measured.")
    fired_at: datetime
    ended_at: datetime | None = strawberry.field(description="When the episode ended (none: still open).")
    ended_reason: EndReasonEnum | None
    task_id: strawberry.ID | None = strawberry.field(description="The CareTask it created, if any.")

    @classmethod
    def of(cls, found: rules.Firing, institution_id: int) -> "VitalRuleFiringType":
        return cls(
            id=strawberry.ID(encode_id("VitalRuleFiring", institution_id, found.id)),
            rule_id=strawberry.ID(encode_id("VitalRule", institution_id, found.rule_id)),
            rule_version=found.rule_version,
            rule_name=found.rule_name,
            measure=found.measure,
            condition=found.condition,
            direction=found.direction,
            times=found.times,
            days=found.days,
            reading_id=None
            if found.reading_id is None
            else strawberry.ID(encode_id("VitalReading", institution_id, found.reading_id)),
            measured_at=found.measured_at,
            fired_at=found.fired_at,
            ended_at=found.ended_at,
            ended_reason=found.ended_reason,
            task_id=None
            if found.task_id is None
            else strawberry.ID(encode_id("CareTask", institution_id, found.task_id)),
        )


# Resident fields (bound in schema/residents.py) ------------------------------------------------------


async def resident_vital_rule_firings(
    root: ResidentNode, info: YiyangInfo, first: int | None = None, after: str | None = None
) -> Connection[VitalRuleFiringType]:
    """The resident's rule firings, newest first."""
    await require_resident_access(info, Action.VITALS_VIEW, root.institution_id, root.pk)
    page = page_request(first, after)
    rows = await rules.firings_of(root.pk, before_id=page.after_key, limit=page.size + 1)
    return connection(
        rows,
        page,
        key=lambda row: row.id,
        node=lambda row: VitalRuleFiringType.of(row, root.institution_id),
        count_total=lambda: rules.count_firings(root.pk),
    )


# Queries ---------------------------------------------------------------------------------------------


@strawberry.type
class VitalRuleQueries:
    @strawberry.field(description="The acting institution's rules over vital signs, by id.")
    async def vital_rules(
        self,
        info: YiyangInfo,
        include_retired: bool = False,
        first: int | None = None,
        after: str | None = None,
    ) -> Connection[VitalRuleType]:
        require(info.context.principal, Action.VITAL_RULE_VIEW)
        tenant = info.context.require_tenant()
        page = page_request(first, after)
        rows = await rules.rules(
            include_retired=include_retired, after_id=page.after_key, limit=page.size + 1
        )
        return connection(
            rows,
            page,
            key=lambda row: row.id,
            node=lambda row: VitalRuleType.of(row, tenant.institution_id),
            count_total=lambda: rules.count_rules(include_retired=include_retired),
        )


# Mutations -------------------------------------------------------------------------------------------


@strawberry.input(description="Add a rule (no ruleId) or edit one (ruleId): an edit is a new version.")
class SetVitalRuleInput:
    rule_id: strawberry.ID | None = None
    name: str
    measure: str = strawberry.field(
        description="blood_pressure, glucose, heart_rate, temperature, spo2 or weight (any case)."
    )
    condition: ConditionEnum
    times: int = strawberry.field(description="N, at least 1.")
    days: int | None = strawberry.field(
        default=None, description="D, 1 to 90 local days; for consecutive days at least N (default N)."
    )
    direction: DirectionEnum
    notify_roles: list[str] = strawberry.field(description="Staff roles notified, at least one.")
    task_role: str | None = strawberry.field(
        default=None, description="caregiver, nurse, head_nurse or doctor: a task is created for that role."
    )
    task_label: str | None = None
    task_due_minutes: int | None = strawberry.field(
        default=None, description="The task is due this long after the firing (default 60)."
    )
    active: bool = True


@strawberry.type
class VitalRulePayload:
    rule: VitalRuleType | None
    user_errors: list[UserError]


@strawberry.input
class RetireVitalRuleInput:
    rule_id: strawberry.ID


def _rule_id(info: YiyangInfo, given: strawberry.ID) -> int:
    """The rule's pk, of the acting institution (NOT_FOUND for another's), the caller allowed to edit."""
    institution_id, pk = decode_id("VitalRule", given, 2, field="ruleId")
    require(info.context.principal, Action.VITAL_RULE_EDIT, institution=institution_id)
    if info.context.require_tenant().institution_id != institution_id:
        raise NotFound("Not found.", field="ruleId")
    return pk


@strawberry.type
class VitalRuleMutations:
    @strawberry.mutation(description="Add a rule over vital signs, or edit one (a new version).")
    async def set_vital_rule(self, info: YiyangInfo, input: SetVitalRuleInput) -> VitalRulePayload:
        if input.rule_id is not None:
            rule_id: int | None = _rule_id(info, input.rule_id)
        else:
            require(info.context.principal, Action.VITAL_RULE_EDIT)
            rule_id = None
        tenant = info.context.require_tenant()
        new = rules.NewRule(
            name=input.name,
            measure=input.measure,
            condition=input.condition,
            times=input.times,
            days=input.days,
            direction=input.direction,
            notify_roles=input.notify_roles,
            task_role=input.task_role,
            task_label=input.task_label,
            task_due_minutes=input.task_due_minutes,
            active=input.active,
        )
        try:
            found = await rules.set_rule(rule_id, new, recorded_by=recorder(info))
        except USER_ERROR_TYPES as error:
            return VitalRulePayload(rule=None, user_errors=user_errors(info, error))
        return VitalRulePayload(rule=VitalRuleType.of(found, tenant.institution_id), user_errors=[])

    @strawberry.mutation(description="Retire a rule: it is evaluated no more; its open episodes end.")
    async def retire_vital_rule(self, info: YiyangInfo, input: RetireVitalRuleInput) -> VitalRulePayload:
        rule_id = _rule_id(info, input.rule_id)
        tenant = info.context.require_tenant()
        try:
            found = await rules.retire_rule(rule_id, retired_by=recorder(info), now=datetime.now(UTC))
        except USER_ERROR_TYPES as error:
            return VitalRulePayload(rule=None, user_errors=user_errors(info, error))
        return VitalRulePayload(rule=VitalRuleType.of(found, tenant.institution_id), user_errors=[])

"""SOPs through GraphQL (care/sops.py, docs/sops.md): the templates of the institution (`sopTemplates`,
`setSopTemplate`, `retireSopTemplate`) and of its chain (`chainSopTemplates`, `setChainSopTemplate`,
`retireChainSopTemplate`), a resident's instances and butler (`Resident.sopInstances`,
`Resident.butlerId`, bound in schema/residents.py), the caller's steps of a day (`mySopSteps`), and the
mutations `assignResidentButler`, `completeSopStep` and `skipSopStep`.

Templates are no resident's data: the policy alone (sop_template.view/edit). Everything about a resident
goes through schema/resident_access.py (sop_step.view/complete, resident_butler.assign; a completion's
conversation also family_log.record), which decides and audits.
"""

from datetime import UTC, date, datetime

import strawberry

from care import family_log
from care import sops as care
from compliance.consent import Category
from compliance.policy import Action, require
from schema.care_plans import my_day
from schema.context import YiyangInfo
from schema.family_log import ChannelEnum, DirectionEnum
from schema.ids import decode_id, encode_id
from schema.pagination import Connection, connection, page_request
from schema.resident_access import (
    ResidentNode,
    part_to_change,
    recorder,
    require_resident_access,
    resident_to_change,
)
from schema.user_errors import USER_ERROR_TYPES, UserError, user_errors
from tenants.errors import InvalidInput, NotFound

AnchorEnum = strawberry.enum(care.Anchor, name="SopAnchor")
SourceEnum = strawberry.enum(care.Source, name="SopTemplateScope")
OutcomeEnum = strawberry.enum(care.Outcome, name="SopOutcomeRecord")
StepStatusEnum = strawberry.enum(care.StepStatus, name="SopStepStatus")
CATEGORIES = (Category.DAILY_CARE,)


def _id(type_name: str, *parts: int) -> strawberry.ID:
    return strawberry.ID(encode_id(type_name, *parts))


def _staff_member_id(institution_id: int, account_id: int | None) -> strawberry.ID | None:
    return None if account_id is None else _id("StaffMember", institution_id, account_id)


# Types -----------------------------------------------------------------------------------------------


@strawberry.type(name="SopTemplateStep")
class SopTemplateStepType:
    title: str
    instructions: str
    day_offset: int = strawberry.field(description="Days after the anchor event's local date (0 or more).")
    hour_offset: int = strawberry.field(description="Hours added after the time of day (0 to 23).")
    time_of_day: str | None = strawberry.field(
        description="Local time the step is due, HH:MM (00:00 if none)."
    )
    assignee: str = strawberry.field(description="butler (the resident's butler) or a staff role.")
    requires_outcome: OutcomeEnum | None
    grace_hours: int = strawberry.field(description="How long after its due time a step is missed.")
    escalation_role: str

    @classmethod
    def of(cls, step: care.TemplateStep) -> "SopTemplateStepType":
        return cls(
            title=step.title,
            instructions=step.instructions,
            day_offset=step.day_offset,
            hour_offset=step.hour_offset,
            time_of_day=step.time_of_day.strftime("%H:%M") if step.time_of_day else None,
            assignee=step.assignee,
            requires_outcome=step.requires_outcome,
            grace_hours=step.grace_hours,
            escalation_role=step.escalation_role.value,
        )


def _template_id(found: care.Template) -> strawberry.ID:
    if found.source is care.Source.CHAIN:
        return _id("ChainSopTemplate", found.owner_id, found.id)
    return _id("SopTemplate", found.owner_id, found.id)


@strawberry.type(name="SopTemplate", description="A standard procedure (its current version).")
class SopTemplateType:
    id: strawberry.ID
    scope: SourceEnum
    version: int = strawberry.field(description="1 when created; each edit adds one (instances keep theirs).")
    name: str
    anchor: AnchorEnum
    steps: list[SopTemplateStepType]
    is_default: bool = strawberry.field(description="Shipped with Yiyang (the new-resident 30-day plan).")
    retired_at: datetime | None
    recorded_by: str
    recorded_at: datetime

    @classmethod
    def of(cls, found: care.Template) -> "SopTemplateType":
        return cls(
            id=_template_id(found),
            scope=found.source,
            version=found.version,
            name=found.name,
            anchor=found.anchor,
            steps=[SopTemplateStepType.of(step) for step in found.steps],
            is_default=found.is_default,
            retired_at=found.retired_at,
            recorded_by=found.recorded_by,
            recorded_at=found.recorded_at,
        )


@strawberry.type(name="SopStep", description="A step of a resident's SOP instance: a due reminder.")
class SopStepType:
    id: strawberry.ID
    resident_id: strawberry.ID
    instance_id: strawberry.ID
    position: int
    title: str
    instructions: str
    assignee: str = strawberry.field(description="butler (the resident's butler) or a staff role.")
    requires_outcome: OutcomeEnum | None
    due_at: datetime
    grace_minutes: int
    escalation_role: str
    status: StepStatusEnum
    done_at: datetime | None = strawberry.field(description="When it was done, skipped or cancelled.")
    done_by: str | None
    family_communication_id: strawberry.ID | None = strawberry.field(
        description="The FamilyCommunication recorded when it was completed."
    )
    skip_reason: str | None
    closed_reason: str | None = strawberry.field(
        description="before_start (already past when the instance started), skipped, discharged."
    )
    reminded_at: datetime | None
    escalated_at: datetime | None

    @classmethod
    def of(cls, found: care.Step, institution_id: int) -> "SopStepType":
        return cls(
            id=_id("SopStep", institution_id, found.id),
            resident_id=_id("Resident", institution_id, found.resident_id),
            instance_id=_id("SopInstance", institution_id, found.instance_id),
            position=found.position,
            title=found.title,
            instructions=found.instructions,
            assignee=found.assignee,
            requires_outcome=found.requires_outcome,
            due_at=found.due_at,
            grace_minutes=found.grace_minutes,
            escalation_role=found.escalation_role.value,
            status=found.status,
            done_at=found.done_at,
            done_by=found.done_by,
            family_communication_id=None
            if found.family_communication_id is None
            else _id("FamilyCommunication", institution_id, found.family_communication_id),
            skip_reason=found.note,
            closed_reason=found.closed_reason,
            reminded_at=found.reminded_at,
            escalated_at=found.escalated_at,
        )


@strawberry.type(name="SopInstance", description="A template's run for one resident's event.")
class SopInstanceType:
    id: strawberry.ID
    name: str
    anchor: AnchorEnum
    anchor_date: date
    scope: SourceEnum
    template_id: strawberry.ID
    template_version: int = strawberry.field(description="The version pinned when it started.")
    status: str
    created_at: datetime
    steps: list[SopStepType]

    @classmethod
    def of(cls, found: care.Instance, institution_id: int, chain_id: int | None) -> "SopInstanceType":
        template_id = (
            _id("ChainSopTemplate", chain_id or 0, found.template_id)
            if found.source is care.Source.CHAIN
            else _id("SopTemplate", institution_id, found.template_id)
        )
        return cls(
            id=_id("SopInstance", institution_id, found.id),
            name=found.name,
            anchor=found.anchor,
            anchor_date=found.anchor_date,
            scope=found.source,
            template_id=template_id,
            template_version=found.template_version,
            status=found.status,
            created_at=found.created_at,
            steps=[SopStepType.of(step, institution_id) for step in found.steps],
        )


# Resident fields (bound in schema/residents.py) ------------------------------------------------------


async def resident_sop_instances(root: ResidentNode, info: YiyangInfo) -> list[SopInstanceType]:
    """The resident's SOP instances (oldest event first) with their steps."""
    await require_resident_access(info, Action.SOP_STEP_VIEW, root.institution_id, root.pk, CATEGORIES)
    chain_id = info.context.require_tenant().chain_id
    return [
        SopInstanceType.of(found, root.institution_id, chain_id) for found in await care.instances_of(root.pk)
    ]


async def resident_butler_id(root: ResidentNode, info: YiyangInfo) -> strawberry.ID | None:
    """The resident's butler (a StaffMember id), if one is assigned."""
    await require_resident_access(info, Action.SOP_STEP_VIEW, root.institution_id, root.pk, CATEGORIES)
    return _staff_member_id(root.institution_id, await care.butler_of(root.pk))


# Queries ---------------------------------------------------------------------------------------------


async def _chain_of(info: YiyangInfo, given: strawberry.ID | None, action: Action) -> int | None:
    """The chain named (a chain principal's), or the acting institution's."""
    if given is not None:
        (chain_id,) = decode_id("Chain", given, 1, field="chainId")
        require(info.context.principal, action, chain_id=chain_id)
        return chain_id
    require(info.context.principal, action)
    return info.context.require_tenant().chain_id


@strawberry.type
class SopQueries:
    @strawberry.field(description="The acting institution's own SOP templates, in id order.")
    async def sop_templates(
        self,
        info: YiyangInfo,
        first: int | None = None,
        after: str | None = None,
        include_retired: bool = False,
    ) -> Connection[SopTemplateType]:
        require(info.context.principal, Action.SOP_TEMPLATE_VIEW)
        info.context.require_tenant()
        page = page_request(first, after)
        rows = await care.templates_page(
            care.Source.INSTITUTION,
            include_retired=include_retired,
            after_id=page.after_key,
            limit=page.size + 1,
        )
        return connection(
            rows,
            page,
            key=lambda row: row.id,
            node=SopTemplateType.of,
            count_total=lambda: care.count_templates(
                care.Source.INSTITUTION, include_retired=include_retired
            ),
        )

    @strawberry.field(
        description="A chain's SOP templates (chainId: for chain roles), or those of the acting "
        "institution's chain; they apply to every institution of the chain."
    )
    async def chain_sop_templates(
        self,
        info: YiyangInfo,
        chain_id: strawberry.ID | None = None,
        first: int | None = None,
        after: str | None = None,
        include_retired: bool = False,
    ) -> Connection[SopTemplateType]:
        chain = await _chain_of(info, chain_id, Action.SOP_TEMPLATE_VIEW)
        page = page_request(first, after)
        rows = []
        if chain is not None:
            rows = await care.templates_page(
                care.Source.CHAIN,
                chain_id=chain,
                include_retired=include_retired,
                after_id=page.after_key,
                limit=page.size + 1,
            )

        async def total() -> int:
            if chain is None:
                return 0
            return await care.count_templates(
                care.Source.CHAIN, chain_id=chain, include_retired=include_retired
            )

        return connection(rows, page, key=lambda row: row.id, node=SopTemplateType.of, count_total=total)

    @strawberry.field(
        description="The caller's SOP steps due on a local day of the acting institution (default today): "
        "those of residents they are the butler of, of their roles, by due time."
    )
    async def my_sop_steps(
        self, info: YiyangInfo, day: date | None = None, first: int | None = None, after: str | None = None
    ) -> Connection[SopStepType]:
        return await my_day(
            info,
            Action.SOP_STEP_VIEW,
            day,
            page_request(first, after),
            rows=care.steps_of_staff,
            count=care.count_steps_of_staff,
            node=SopStepType.of,
        )


# Mutations -------------------------------------------------------------------------------------------


@strawberry.input(description="A step of a template.")
class SopStepInput:
    title: str
    instructions: str | None = None
    day_offset: int = strawberry.field(description="Days after the anchor event's local date, 0 to 3650.")
    hour_offset: int = 0
    time_of_day: str | None = strawberry.field(default=None, description="Local HH:MM the step is due.")
    assignee: str = strawberry.field(description="butler (the resident's butler) or a staff role.")
    requires_outcome: OutcomeEnum | None = None
    grace_hours: int = strawberry.field(description="Hours after the due time before it escalates (1-720).")
    escalation_role: str = "head_nurse"


@strawberry.input(description="Create a template (no templateId) or edit one (a new version).")
class SetSopTemplateInput:
    template_id: strawberry.ID | None = None
    name: str
    anchor: AnchorEnum
    steps: list[SopStepInput]


@strawberry.input(description="Create a chain template (chainId) or edit one (templateId).")
class SetChainSopTemplateInput:
    chain_id: strawberry.ID | None = None
    template_id: strawberry.ID | None = None
    name: str
    anchor: AnchorEnum
    steps: list[SopStepInput]


@strawberry.input
class RetireSopTemplateInput:
    template_id: strawberry.ID


@strawberry.type
class SopTemplatePayload:
    template: SopTemplateType | None
    user_errors: list[UserError]


@strawberry.input
class AssignResidentButlerInput:
    resident_id: strawberry.ID
    butler_id: strawberry.ID | None = strawberry.field(
        default=None,
        description="A StaffMember with the butler role here; null: none (steps go to the butler role).",
    )


@strawberry.type
class AssignResidentButlerPayload:
    butler_id: strawberry.ID | None
    steps: list[SopStepType] = strawberry.field(description="The resident's steps for the butler.")
    user_errors: list[UserError]


@strawberry.input(description="The conversation with the family, for the family communication log.")
class SopOutcomeInput:
    summary: str
    channel: ChannelEnum
    direction: DirectionEnum = family_log.Direction.TO_FAMILY
    occurred_at: datetime | None = strawberry.field(default=None, description="Default now.")
    family_member_id: strawberry.ID | None = None
    follow_up_needed: bool = False
    follow_up_due: date | None = None


@strawberry.input
class CompleteSopStepInput:
    step_id: strawberry.ID
    outcome: SopOutcomeInput | None = strawberry.field(
        default=None, description="Required when the step requires a family communication record."
    )


@strawberry.input
class SkipSopStepInput:
    step_id: strawberry.ID
    reason: str


@strawberry.type
class SopStepPayload:
    step: SopStepType | None
    user_errors: list[UserError]


def _new_template(given: SetSopTemplateInput | SetChainSopTemplateInput) -> care.NewTemplate:
    return care.NewTemplate(
        name=given.name,
        anchor=care.Anchor(given.anchor),
        steps=[
            care.NewStep(
                title=step.title,
                instructions=step.instructions,
                day_offset=step.day_offset,
                hour_offset=step.hour_offset,
                time_of_day=step.time_of_day,
                assignee=step.assignee,
                requires_outcome=step.requires_outcome,
                grace_hours=step.grace_hours,
                escalation_role=step.escalation_role,
            )
            for step in given.steps
        ],
    )


async def _saved_template(
    info: YiyangInfo,
    given: SetSopTemplateInput | SetChainSopTemplateInput,
    source: care.Source,
    template_id: int | None,
    *,
    chain_id: int | None = None,
) -> SopTemplatePayload:
    """A new template (of the acting institution, or of `chain_id`), or a new version of `template_id`."""
    try:
        if template_id is None:
            found = await care.create_template(_new_template(given), by=recorder(info), chain_id=chain_id)
        else:
            found = await care.edit_template(source, template_id, _new_template(given), by=recorder(info))
    except USER_ERROR_TYPES as error:
        return SopTemplatePayload(template=None, user_errors=user_errors(info, error))
    return SopTemplatePayload(template=SopTemplateType.of(found), user_errors=[])


async def _retired_template(info: YiyangInfo, source: care.Source, template_id: int) -> SopTemplatePayload:
    found = await care.retire_template(source, template_id, by=recorder(info), now=datetime.now(UTC))
    return SopTemplatePayload(template=SopTemplateType.of(found), user_errors=[])


def _own_template(info: YiyangInfo, given: strawberry.ID) -> int:
    institution_id, template_id = decode_id("SopTemplate", given, 2, field="templateId")
    require(info.context.principal, Action.SOP_TEMPLATE_EDIT, institution=institution_id)
    if info.context.require_tenant().institution_id != institution_id:
        raise NotFound("Not found.", field="templateId")
    return template_id


async def _chain_template(info: YiyangInfo, given: strawberry.ID) -> int:
    chain_id, template_id = decode_id("ChainSopTemplate", given, 2, field="templateId")
    require(info.context.principal, Action.SOP_TEMPLATE_EDIT, chain_id=chain_id)
    if await care.chain_of_template(template_id) != chain_id:
        raise NotFound("Not found.", field="templateId")
    return template_id


def _family_member(info: YiyangInfo, given: strawberry.ID | None) -> int | None:
    if given is None:
        return None
    institution_id, member_pk = decode_id("FamilyMember", given, 2, field="familyMemberId")
    if info.context.require_tenant().institution_id != institution_id:
        raise NotFound("Not found.", field="familyMemberId")
    return member_pk


@strawberry.type
class SopMutations:
    @strawberry.mutation(
        description="Create an SOP template of the institution, or edit one (a new version)."
    )
    async def set_sop_template(self, info: YiyangInfo, input: SetSopTemplateInput) -> SopTemplatePayload:
        template_id = None if input.template_id is None else _own_template(info, input.template_id)
        require(info.context.principal, Action.SOP_TEMPLATE_EDIT)
        info.context.require_tenant()
        return await _saved_template(info, input, care.Source.INSTITUTION, template_id)

    @strawberry.mutation(description="Retire an SOP template of the institution (instances in flight go on).")
    async def retire_sop_template(
        self, info: YiyangInfo, input: RetireSopTemplateInput
    ) -> SopTemplatePayload:
        return await _retired_template(info, care.Source.INSTITUTION, _own_template(info, input.template_id))

    @strawberry.mutation(
        description="Create a chain's SOP template (chain admins), or edit one (a new version)."
    )
    async def set_chain_sop_template(
        self, info: YiyangInfo, input: SetChainSopTemplateInput
    ) -> SopTemplatePayload:
        if input.template_id is not None:
            template_id = await _chain_template(info, input.template_id)
            chain_id = None
        elif input.chain_id is not None:
            (chain_id,) = decode_id("Chain", input.chain_id, 1, field="chainId")
            require(info.context.principal, Action.SOP_TEMPLATE_EDIT, chain_id=chain_id)
            template_id = None
        else:
            require(info.context.principal, Action.SOP_TEMPLATE_EDIT)  # the role first, then the input
            missing = InvalidInput(
                "Give the chain to add a template to, or the template to edit.", field="chainId"
            )
            return SopTemplatePayload(template=None, user_errors=user_errors(info, missing))
        return await _saved_template(info, input, care.Source.CHAIN, template_id, chain_id=chain_id)

    @strawberry.mutation(description="Retire a chain's SOP template (instances in flight go on).")
    async def retire_chain_sop_template(
        self, info: YiyangInfo, input: RetireSopTemplateInput
    ) -> SopTemplatePayload:
        return await _retired_template(
            info, care.Source.CHAIN, await _chain_template(info, input.template_id)
        )

    @strawberry.mutation(
        description="Name the resident's butler (SOP steps for the butler go to them), or remove them."
    )
    async def assign_resident_butler(
        self, info: YiyangInfo, input: AssignResidentButlerInput
    ) -> AssignResidentButlerPayload:
        institution_id, pk = await resident_to_change(
            info, input.resident_id, Action.RESIDENT_BUTLER_ASSIGN, categories=CATEGORIES
        )
        account_id = None
        if input.butler_id is not None:
            butler_institution, account_id = decode_id("StaffMember", input.butler_id, 2, field="butlerId")
            if butler_institution != institution_id:
                raise NotFound("Not found.", field="butlerId")
        try:
            if account_id is None:
                await care.unassign_butler(pk)
            else:
                await care.assign_butler(pk, account_id, by=recorder(info))
        except USER_ERROR_TYPES as error:
            return AssignResidentButlerPayload(butler_id=None, steps=[], user_errors=user_errors(info, error))
        steps = [
            SopStepType.of(step, institution_id)
            for instance in await care.instances_of(pk)
            for step in instance.steps
            if step.assignee == care.BUTLER
        ]
        return AssignResidentButlerPayload(
            butler_id=_staff_member_id(institution_id, account_id), steps=steps, user_errors=[]
        )

    @strawberry.mutation(
        description="Complete an SOP step; the conversation given goes to the family communication log."
    )
    async def complete_sop_step(self, info: YiyangInfo, input: CompleteSopStepInput) -> SopStepPayload:
        member_pk = None if input.outcome is None else _family_member(info, input.outcome.family_member_id)
        institution_id, resident_pk, step_id = await part_to_change(
            info,
            "SopStep",
            input.step_id,
            Action.SOP_STEP_COMPLETE,
            care.resident_of_step,
            categories=CATEGORIES,
        )
        outcome = None
        now = datetime.now(UTC)
        if input.outcome is not None:
            # The conversation lands in the family log: the caller must be one who may record it.
            await require_resident_access(
                info, Action.FAMILY_LOG_RECORD, institution_id, resident_pk, CATEGORIES
            )
            given = input.outcome
            outcome = family_log.NewFamilyCommunication(
                occurred_at=given.occurred_at or now,
                channel=family_log.Channel(given.channel),
                direction=family_log.Direction(given.direction),
                summary=given.summary,
                family_member_id=member_pk,
                follow_up_needed=given.follow_up_needed,
                follow_up_due=given.follow_up_due,
            )
        try:
            found, _ = await care.complete_step(step_id, outcome, by=recorder(info), now=now)
        except USER_ERROR_TYPES as error:
            return SopStepPayload(step=None, user_errors=user_errors(info, error))
        return SopStepPayload(step=SopStepType.of(found, institution_id), user_errors=[])

    @strawberry.mutation(description="Skip an SOP step, with the reason (it is not escalated).")
    async def skip_sop_step(self, info: YiyangInfo, input: SkipSopStepInput) -> SopStepPayload:
        institution_id, _, step_id = await part_to_change(
            info,
            "SopStep",
            input.step_id,
            Action.SOP_STEP_COMPLETE,
            care.resident_of_step,
            categories=CATEGORIES,
        )
        try:
            found = await care.skip_step(step_id, input.reason, by=recorder(info), now=datetime.now(UTC))
        except USER_ERROR_TYPES as error:
            return SopStepPayload(step=None, user_errors=user_errors(info, error))
        return SopStepPayload(step=SopStepType.of(found, institution_id), user_errors=[])

"""Ability assessments (GB/T 42195-2022, Barthel) through GraphQL (care/assessment_records.py).

Clients send item answers (and, for the capability scale, the inputs of its upgrade rules); the system
scores them. Reads: `Resident.assessments` (newest first), `Resident.latestAssessments` (through the
`Loaders.latest_assessments` DataLoader: one query for a page of residents), `Resident.careLevelSuggestion`
beside the current care level. `assessmentScales` describes the scales so a client can render the form.
Every read and write asks the policy (`assessment.view`, `assessment.record`).
"""

from collections.abc import Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated

import strawberry

from care import assessment_records as care
from care import assessments as scoring
from care.models import CareLevel
from care.residents import ResidentChanges, institution_today, update_resident
from compliance.consent import Category
from compliance.policy import Action, require
from schema.context import YiyangInfo
from schema.ids import decode_id, encode_id
from schema.pagination import Connection, connection, page_request
from schema.resident_access import ResidentNode, require_resident_access, resident_to_change
from schema.user_errors import USER_ERROR_TYPES, UserError, user_errors
from tenants.errors import NotFound

if TYPE_CHECKING:
    from schema.residents import ResidentType

ScaleEnum = strawberry.enum(care.Scale, name="AssessmentScale")
ReasonEnum = strawberry.enum(care.Reason, name="AssessmentReason")
RuleEnum = strawberry.enum(scoring.AdjustmentRule, name="AssessmentRule")
RiskEventKindEnum = strawberry.enum(scoring.RiskEventKind, name="RiskEventKind")
DependencyEnum = strawberry.enum(scoring.BarthelDependency, name="BarthelDependency")


@strawberry.type(name="LocalizedLabel")
class LabelType:
    zh: str
    en: str
    text: str = strawberry.field(description="The label in the language of the request.")

    @classmethod
    def of(cls, label: scoring.Label, locale: str) -> "LabelType":
        return cls(zh=label.zh, en=label.en, text=label.en if locale == "en" else label.zh)


# Results -----------------------------------------------------------------------------------------


@strawberry.type(name="AssessmentAnswer")
class AnswerType:
    item: str
    value: int


@strawberry.type(name="AssessmentDiagnosis")
class DiagnosisType:
    icd10: str
    by_psychiatrist: bool


@strawberry.type(name="AssessmentRiskEvent")
class RiskEventType:
    kind: RiskEventKindEnum
    occurred_on: date


@strawberry.type(name="AssessmentDomainScore")
class DomainScoreType:
    code: str
    label: LabelType
    score: int
    max_score: int


@strawberry.type(name="AppliedAssessmentRule")
class AppliedRuleType:
    rule: RuleEnum
    level_before: int
    level_after: int
    basis: list[str] = strawberry.field(
        description='What met the rule: "B3.9=0", ICD-10 codes, "fall 2026-11-20".'
    )


@strawberry.type(name="CapabilityResult")
class CapabilityResultType:
    """GB/T 42195-2022: domain scores, total (0–90), the level the total gives and the level after the
    upgrade rules (0 能力完好 … 4 完全失能)."""

    total: int
    max_total: int
    domains: list[DomainScoreType]
    level_before_rules: int
    level_before_rules_label: LabelType
    level: int
    level_label: LabelType
    rules_met: list[RuleEnum]
    rules_applied: list[AppliedRuleType]

    @classmethod
    def of(cls, result: scoring.CapabilityAssessment, locale: str) -> "CapabilityResultType":
        return cls(
            total=result.total,
            max_total=scoring.gbt42195_scale().total_max,
            domains=[
                DomainScoreType(
                    code=d.code, label=LabelType.of(d.label, locale), score=d.score, max_score=d.max_score
                )
                for d in result.domain_scores
            ],
            level_before_rules=int(result.level_before),
            level_before_rules_label=LabelType.of(result.label_before, locale),
            level=int(result.level),
            level_label=LabelType.of(result.label, locale),
            rules_met=list(result.rules_met),
            rules_applied=[
                AppliedRuleType(
                    rule=a.rule,
                    level_before=int(a.level_before),
                    level_after=int(a.level_after),
                    basis=list(a.basis),
                )
                for a in result.adjustments
            ],
        )


@strawberry.type(name="BarthelResult")
class BarthelResultType:
    total: int
    max_total: int
    dependency: DependencyEnum
    dependency_label: LabelType

    @classmethod
    def of(cls, result: scoring.BarthelAssessment, locale: str) -> "BarthelResultType":
        return cls(
            total=result.total,
            max_total=scoring.barthel_scale().total_max,
            dependency=result.band.dependency,
            dependency_label=LabelType.of(result.band.label, locale),
        )


@strawberry.type(name="Assessment")
class AssessmentType:
    id: strawberry.ID
    scale: ScaleEnum
    version: int = strawberry.field(description="1, 2, 3 … per resident and scale, in the order recorded.")
    assessed_on: date
    reason: ReasonEnum
    supersedes: int | None = strawberry.field(description="The version this one corrects.")
    superseded_by: int | None = strawberry.field(description="The version that corrects this one.")
    assessor: str
    created_at: datetime
    answers: list[AnswerType]
    diagnoses: list[DiagnosisType] = strawberry.field(
        description="Inputs of the diagnosis rule (capability)."
    )
    risk_events: list[RiskEventType] = strawberry.field(
        description="Inputs of the risk-event rule (capability)."
    )
    capability: CapabilityResultType | None = strawberry.field(description="Set for the capability scale.")
    barthel: BarthelResultType | None = strawberry.field(description="Set for the Barthel index.")

    @classmethod
    def of(cls, record: care.AssessmentRecord, institution_id: int, locale: str) -> "AssessmentType":
        return cls(
            id=strawberry.ID(encode_id("Assessment", institution_id, record.id)),
            scale=record.scale,
            version=record.version,
            assessed_on=record.assessed_on,
            reason=record.reason,
            supersedes=record.supersedes,
            superseded_by=record.superseded_by,
            assessor=record.assessor,
            created_at=record.created_at,
            answers=[AnswerType(item=a.item, value=a.value) for a in record.answers],
            diagnoses=[
                DiagnosisType(icd10=d.icd10, by_psychiatrist=d.by_psychiatrist) for d in record.diagnoses
            ],
            risk_events=[RiskEventType(kind=e.kind, occurred_on=e.occurred_on) for e in record.risk_events],
            capability=None
            if record.capability is None
            else CapabilityResultType.of(record.capability, locale),
            barthel=None if record.barthel is None else BarthelResultType.of(record.barthel, locale),
        )


@strawberry.type(name="LatestAssessments")
class LatestAssessmentsType:
    capability: AssessmentType | None
    barthel: AssessmentType | None


@strawberry.type(name="CareLevelSuggestion")
class SuggestionType:
    """Advice for the staff who set the care level ("suggested: X (current: Y)"); never applied by itself."""

    care_level: CareLevel
    label: LabelType
    current_care_level: CareLevel
    current_label: LabelType
    differs: bool
    from_capability: CareLevel
    from_barthel: CareLevel | None
    barthel_raised: bool = strawberry.field(
        description="The Barthel index made the suggestion more intensive."
    )
    capability_assessment: AssessmentType
    barthel_assessment: AssessmentType | None

    @classmethod
    def of(cls, found: care.ResidentSuggestion, institution_id: int, locale: str) -> "SuggestionType":
        suggestion = found.suggestion
        return cls(
            care_level=suggestion.care_level,
            label=LabelType.of(suggestion.label, locale),
            current_care_level=found.current,
            current_label=LabelType.of(scoring.CARE_LEVEL_LABELS[found.current], locale),
            differs=found.differs,
            from_capability=suggestion.from_capability,
            from_barthel=suggestion.from_barthel,
            barthel_raised=suggestion.barthel_raised,
            capability_assessment=AssessmentType.of(found.capability, institution_id, locale),
            barthel_assessment=None
            if found.barthel is None
            else AssessmentType.of(found.barthel, institution_id, locale),
        )


# The scales, for forms -----------------------------------------------------------------------------


@strawberry.type(name="AssessmentItem")
class ItemType:
    code: str
    label: LabelType
    allowed_values: list[int] = strawberry.field(description="The scores this item accepts, highest first.")


@strawberry.type(name="AssessmentDomain")
class DomainType:
    code: str
    label: LabelType
    max_score: int
    items: list[ItemType]


@strawberry.type(name="AssessmentGrade")
class GradeType:
    """A level (capability: 0–4) or a dependency band (Barthel) and the totals that give it."""

    level: int | None
    dependency: DependencyEnum | None
    label: LabelType
    min_total: int
    max_total: int


@strawberry.type(name="RiskEventKindInfo")
class RiskEventKindInfoType:
    kind: RiskEventKindEnum
    label: LabelType


@strawberry.type(name="AssessmentScaleInfo")
class ScaleInfoType:
    scale: ScaleEnum
    label: LabelType
    max_total: int
    domains: list[DomainType] = strawberry.field(
        description="The Barthel index has one domain of its 10 items."
    )
    grades: list[GradeType]
    risk_event_kinds: list[RiskEventKindInfoType] = strawberry.field(
        description="Risk events the upgrade rule counts (capability scale only)."
    )
    risk_window_days: int | None
    diagnosis_ranges: list[str] = strawberry.field(
        description='ICD-10 ranges of the diagnosis rule, e.g. "F00–F03".'
    )


def _scales(locale: str) -> list[ScaleInfoType]:
    gbt, barthel = scoring.gbt42195_scale(), scoring.barthel_scale()
    policy = gbt.policy
    capability = ScaleInfoType(
        scale=care.Scale.CAPABILITY,
        label=LabelType.of(care.SCALE_LABELS[care.Scale.CAPABILITY], locale),
        max_total=gbt.total_max,
        domains=[
            DomainType(
                code=domain.code,
                label=LabelType.of(domain.label, locale),
                max_score=domain.max_score,
                items=[
                    ItemType(
                        code=item.code,
                        label=LabelType.of(item.label, locale),
                        allowed_values=list(range(item.max_score, -1, -1)),
                    )
                    for item in domain.items
                ],
            )
            for domain in gbt.domains
        ],
        grades=[
            GradeType(
                level=int(band.level),
                dependency=None,
                label=LabelType.of(band.label, locale),
                min_total=band.min_total,
                max_total=band.max_total,
            )
            for band in sorted(gbt.levels, key=lambda band: band.level)
        ],
        risk_event_kinds=[
            RiskEventKindInfoType(kind=kind, label=LabelType.of(scoring.RISK_EVENT_LABELS[kind], locale))
            for kind in scoring.RiskEventKind
            if kind in policy.risk_event_kinds
        ],
        risk_window_days=policy.risk_window_days,
        diagnosis_ranges=[f"{icd.first}–{icd.last}" for icd in policy.diagnosis_ranges],
    )
    barthel_info = ScaleInfoType(
        scale=care.Scale.BARTHEL,
        label=LabelType.of(care.SCALE_LABELS[care.Scale.BARTHEL], locale),
        max_total=barthel.total_max,
        domains=[
            DomainType(
                code="barthel",
                label=LabelType.of(care.SCALE_LABELS[care.Scale.BARTHEL], locale),
                max_score=barthel.total_max,
                items=[
                    ItemType(
                        code=item.code,
                        label=LabelType.of(item.label, locale),
                        allowed_values=list(item.allowed),
                    )
                    for item in barthel.items
                ],
            )
        ],
        grades=[
            GradeType(
                level=None,
                dependency=band.dependency,
                label=LabelType.of(band.label, locale),
                min_total=band.min_total,
                max_total=band.max_total,
            )
            for band in barthel.bands
        ],
        risk_event_kinds=[],
        risk_window_days=None,
        diagnosis_ranges=[],
    )
    return [capability, barthel_info]


@strawberry.type
class AssessmentQueries:
    @strawberry.field(description="The assessment scales: domains, items, allowed values, grades, labels.")
    def assessment_scales(self, info: YiyangInfo) -> list[ScaleInfoType]:
        require(info.context.principal, Action.ASSESSMENT_VIEW)
        return _scales(info.context.locale)

    # Resident fields (bound in schema/residents.py) ----------------------------------------------------

    care_level: CareLevel


async def resident_assessments(
    root: ResidentNode,
    info: YiyangInfo,
    scale: ScaleEnum | None = None,
    first: int | None = None,
    after: str | None = None,
) -> Connection[AssessmentType] | None:
    """Assessments newest first (assessment date, then order recorded); corrected versions included.
    Null with an error of code GONE when the resident's data was erased."""
    await require_resident_access(
        info, Action.ASSESSMENT_VIEW, root.institution_id, root.pk, (Category.ASSESSMENTS,)
    )
    page = page_request(first, after)
    rows = await care.list_assessments(root.pk, scale, after_id=page.after_key, limit=page.size + 1)
    locale = info.context.locale
    return connection(
        rows,
        page,
        key=lambda row: row.id,
        node=lambda row: AssessmentType.of(row, root.institution_id, locale),
        count_total=lambda: care.count_assessments(root.pk, scale),
    )


async def resident_latest_assessments(root: ResidentNode, info: YiyangInfo) -> LatestAssessmentsType | None:
    """The latest (not corrected) assessment of each scale. Null with GONE when the data was erased."""
    await require_resident_access(
        info, Action.ASSESSMENT_VIEW, root.institution_id, root.pk, (Category.ASSESSMENTS,)
    )
    latest = await info.context.loaders.latest_assessments.load(root.pk)
    locale = info.context.locale

    def typed(record: care.AssessmentRecord | None) -> AssessmentType | None:
        return None if record is None else AssessmentType.of(record, root.institution_id, locale)

    return LatestAssessmentsType(capability=typed(latest.capability), barthel=typed(latest.barthel))


async def resident_care_level_suggestion(root: ResidentNode, info: YiyangInfo) -> SuggestionType | None:
    """The care level the latest assessments suggest, beside the current one; null without a capability
    assessment (or with GONE when the data was erased)."""
    await require_resident_access(
        info, Action.ASSESSMENT_VIEW, root.institution_id, root.pk, (Category.ASSESSMENTS,)
    )
    latest = await info.context.loaders.latest_assessments.load(root.pk)
    found = care.resident_suggestion(latest, root.care_level)
    return None if found is None else SuggestionType.of(found, root.institution_id, info.context.locale)


# Mutations -----------------------------------------------------------------------------------------


@strawberry.input
class AssessmentAnswerInput:
    item: str = strawberry.field(
        description='The item code: "B1.1" … "B4.5", or a Barthel item ("feeding" …).'
    )
    value: int


@strawberry.input
class AssessmentDiagnosisInput:
    icd10: str
    by_psychiatrist: bool = False


@strawberry.input
class AssessmentRiskEventInput:
    kind: RiskEventKindEnum
    occurred_on: date


@strawberry.input
class RecordAssessmentInput:
    resident_id: strawberry.ID
    scale: ScaleEnum
    assessed_on: date
    reason: ReasonEnum
    answers: list[AssessmentAnswerInput]
    diagnoses: list[AssessmentDiagnosisInput] = strawberry.field(
        default_factory=list, description="Capability scale only: diagnoses on record for the diagnosis rule."
    )
    risk_events: list[AssessmentRiskEventInput] = strawberry.field(
        default_factory=list, description="Capability scale only: falls, choking, self-harm, wandering."
    )
    supersedes: int | None = strawberry.field(
        default=None, description="The version of the same scale this assessment corrects."
    )


@strawberry.input
class ApplyCareLevelSuggestionInput:
    resident_id: strawberry.ID
    assessment_id: strawberry.ID = strawberry.field(
        description="The latest assessment the suggestion was read from (CONFLICT if a newer one exists)."
    )


@strawberry.type
class RecordAssessmentPayload:
    assessment: AssessmentType | None
    care_level_suggestion: SuggestionType | None = strawberry.field(
        description="What the resident's latest assessments suggest now, beside the current care level."
    )
    user_errors: list[UserError]


@strawberry.type
class ApplyCareLevelSuggestionPayload:
    resident: Annotated["ResidentType", strawberry.lazy("schema.residents")] | None
    previous_care_level: CareLevel | None
    user_errors: list[UserError]


def _answers(given: Sequence[AssessmentAnswerInput]) -> tuple[care.Answer, ...]:
    return tuple(care.Answer(answer.item.strip(), answer.value) for answer in given)


@strawberry.type
class AssessmentMutations:
    @strawberry.mutation(
        description="Record an assessment; the system scores it (clients never send scores)."
    )
    async def record_assessment(
        self, info: YiyangInfo, input: RecordAssessmentInput
    ) -> RecordAssessmentPayload:
        institution_id, pk = await resident_to_change(info, input.resident_id, Action.ASSESSMENT_RECORD)
        principal = info.context.principal
        new = care.NewAssessment(
            scale=input.scale,
            assessed_on=input.assessed_on,
            reason=input.reason,
            answers=_answers(input.answers),
            diagnoses=tuple(scoring.Diagnosis(d.icd10, d.by_psychiatrist) for d in input.diagnoses),
            risk_events=tuple(scoring.RiskEvent(e.kind, e.occurred_on) for e in input.risk_events),
            supersedes=input.supersedes,
        )
        try:
            record = await care.record_assessment(
                pk, new, assessor=principal.subject if principal else "-", today=institution_today()
            )
        except USER_ERROR_TYPES as error:
            return RecordAssessmentPayload(
                assessment=None,
                care_level_suggestion=None,
                user_errors=user_errors(info, error),
            )
        locale = info.context.locale
        found = care.resident_suggestion(await care.latest_assessments(pk), await care.current_care_level(pk))
        return RecordAssessmentPayload(
            assessment=AssessmentType.of(record, institution_id, locale),
            care_level_suggestion=None if found is None else SuggestionType.of(found, institution_id, locale),
            user_errors=[],
        )

    @strawberry.mutation(
        description="Set the resident's care level to what its latest assessments suggest (staff decide)."
    )
    async def apply_care_level_suggestion(
        self, info: YiyangInfo, input: ApplyCareLevelSuggestionInput
    ) -> ApplyCareLevelSuggestionPayload:
        from schema.residents import ResidentType

        # The assessment first: one of another institution is NOT_FOUND whatever the resident id says.
        assessment_institution, assessment_pk = decode_id(
            "Assessment", input.assessment_id, 2, field="assessmentId"
        )
        require(info.context.principal, Action.ASSESSMENT_RECORD, institution=assessment_institution)
        if info.context.require_tenant().institution_id != assessment_institution:
            raise NotFound("Not found.", field="assessmentId")
        institution_id, pk = await resident_to_change(info, input.resident_id, Action.ASSESSMENT_RECORD)
        await require_resident_access(info, Action.RESIDENT_UPDATE, institution_id, pk)
        if assessment_institution != institution_id:
            raise NotFound("Not found.", field="assessmentId")
        try:
            found = await care.suggestion_to_apply(pk, assessment_pk)
            updated = await update_resident(pk, ResidentChanges(care_level=found.suggestion.care_level))
        except USER_ERROR_TYPES as error:
            return ApplyCareLevelSuggestionPayload(
                resident=None, previous_care_level=None, user_errors=user_errors(info, error)
            )
        return ApplyCareLevelSuggestionPayload(
            resident=ResidentType.from_model(updated, institution_id),
            previous_care_level=found.current,
            user_errors=[],
        )

"""Ability assessment (能力评估) scoring: GB/T 42195-2022 and the Barthel index, as pure typed functions.

No database and no API here: answers in, a typed result out, `ValidationFailed` (one `InvalidInput` per
problem, `field` = the item code) for bad answers.

Where the data comes from (read at first use, never from ../shared at run time):

- `care/data/gbt42195-2022.json` and `care/data/barthel-index.json` are byte-for-byte copies of
  `shared/data/gbt42195-2022.json` and `shared/data/barthel-index.json` (the team's reference data; a test
  checks the copies still equal them). Domains, items, maxima, level ranges and labels come from there.
- `care/data/assessment-rules.json` is ours: the adjustments of GB/T 42195-2022 as values (coma item and
  value, ICD-10 ranges, risk-event kinds, count and window, how the two raises combine) and the Barthel
  dependency bands with their source.

GB/T 42195-2022 level (能力等级) → suggested care level (护理等级), `DEFAULT_CARE_LEVEL_MAP`:

| level | 能力等级 | total (after adjustments the level can be more severe) | suggested `CareLevel` |
| --- | --- | --- | --- |
| 0 | 能力完好 intact | 90 | `SELF_CARE` 自理 |
| 1 | 轻度失能 mild disability | 66–89 | `ASSISTED` 介护 |
| 2 | 中度失能 moderate disability | 46–65 | `ASSISTED` 介护 |
| 3 | 重度失能 severe disability | 30–45 | `FULL_CARE` 全护 |
| 4 | 完全失能 complete disability | 0–29 (and coma) | `SPECIAL_CARE` 特护 |

Mild and moderate disability both mean "does much alone, needs help with some of it", hence both 介护.
A Barthel result, when given, can only make the suggestion more intensive, up to `FULL_CARE`
(`DEFAULT_BARTHEL_CARE_LEVEL_MAP`: 100 → 自理, 41–99 → 介护, 0–40 → 全护): the Barthel index measures
daily activities alone, while 特护 also rests on consciousness, mental state and risks, which the GB/T
assessment covers. The suggestion is advice for the staff who set the care level, never applied by itself.
"""

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date
from enum import IntEnum, StrEnum
from functools import cache
from importlib.resources import files
from typing import Any

from care.models import CareLevel
from tenants.errors import InvalidInput, ValidationFailed

GBT42195_FILE = "gbt42195-2022.json"  # copy of shared/data/gbt42195-2022.json
BARTHEL_FILE = "barthel-index.json"  # copy of shared/data/barthel-index.json
RULES_FILE = "assessment-rules.json"  # ours: rule parameters and Barthel bands


@dataclass(frozen=True, slots=True)
class Label:
    """A label for the UI: Simplified Chinese first, English second."""

    zh: str
    en: str


# ---------------------------------------------------------------------------------------------- GB/T 42195


class CapabilityLevel(IntEnum):
    """能力等级 of GB/T 42195-2022; a higher number is more severe. Labels come from the data."""

    INTACT = 0
    MILD = 1
    MODERATE = 2
    SEVERE = 3
    COMPLETE = 4


class AdjustmentRule(StrEnum):
    COMA = "coma"
    DIAGNOSIS = "diagnosis"
    RISK_EVENTS = "risk_events"
    COMBINATION = "combination"


class Combination(StrEnum):
    """How the diagnosis and risk-event raises combine when both apply."""

    RAISE_ONCE = "raise_once"
    STACK = "stack"


class RiskEventKind(StrEnum):
    FALL = "fall"
    CHOKING = "choking"
    SELF_HARM = "self_harm"  # suicide or self-harm
    WANDERING = "wandering"


RISK_EVENT_LABELS: Mapping[RiskEventKind, Label] = {
    RiskEventKind.FALL: Label("跌倒", "fall"),
    RiskEventKind.CHOKING: Label("噎食", "choking"),
    RiskEventKind.SELF_HARM: Label("自杀或自伤", "suicide or self-harm"),
    RiskEventKind.WANDERING: Label("走失", "wandering off"),
}


@dataclass(frozen=True, slots=True)
class Item:
    code: str
    label: Label
    max_score: int


@dataclass(frozen=True, slots=True)
class Domain:
    code: str
    label: Label
    max_score: int
    items: tuple[Item, ...]


@dataclass(frozen=True, slots=True)
class LevelBand:
    level: CapabilityLevel
    label: Label
    min_total: int
    max_total: int


@dataclass(frozen=True, slots=True)
class ComaRule:
    """The answer that means coma, and the level a person in a coma is graded."""

    item: str
    value: int
    level: CapabilityLevel


@dataclass(frozen=True, slots=True)
class IcdRange:
    """ICD-10 categories from `first` to `last` inclusive, e.g. F00–F03."""

    first: str
    last: str
    label: Label
    needs_psychiatrist: bool

    def contains(self, code: str) -> bool:
        return self.first <= _icd_category(code) <= self.last


@dataclass(frozen=True, slots=True)
class AdjustmentPolicy:
    coma: ComaRule | None  # None: no coma rule
    diagnosis_ranges: tuple[IcdRange, ...]
    risk_event_kinds: frozenset[RiskEventKind]
    risk_event_threshold: int  # this many events or more in the window raise the level
    risk_window_days: int  # an event on the assessment day or up to this many days before it counts
    combination: Combination


@dataclass(frozen=True, slots=True)
class GBT42195Scale:
    domains: tuple[Domain, ...]
    total_max: int
    levels: tuple[LevelBand, ...]
    policy: AdjustmentPolicy

    @property
    def items(self) -> tuple[Item, ...]:
        return tuple(item for domain in self.domains for item in domain.items)

    def level_of_total(self, total: int) -> CapabilityLevel:
        return next(band.level for band in self.levels if band.min_total <= total <= band.max_total)

    def label_of(self, level: CapabilityLevel) -> Label:
        return next(band.label for band in self.levels if band.level == level)


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """A diagnosis on record: its ICD-10 code, and whether a psychiatrist made it."""

    icd10: str
    by_psychiatrist: bool = False


@dataclass(frozen=True, slots=True)
class RiskEvent:
    kind: RiskEventKind
    occurred_on: date


@dataclass(frozen=True, slots=True)
class DomainScore:
    code: str
    label: Label
    score: int
    max_score: int


@dataclass(frozen=True, slots=True)
class AppliedAdjustment:
    """One rule that changed (or, capped at level 4, would have changed) the level, for the record."""

    rule: AdjustmentRule
    level_before: CapabilityLevel
    level_after: CapabilityLevel
    basis: tuple[str, ...]  # what met the rule: "B3.9=0", ICD-10 codes, "fall 2026-11-20"


@dataclass(frozen=True, slots=True)
class CapabilityAssessment:
    assessed_on: date
    total: int
    domain_scores: tuple[DomainScore, ...]
    level_before: CapabilityLevel  # the level the total gives
    label_before: Label
    level: CapabilityLevel  # after the adjustments
    label: Label
    rules_met: tuple[AdjustmentRule, ...]  # conditions that held: coma, diagnosis, risk_events
    adjustments: tuple[AppliedAdjustment, ...]  # in the order applied

    @property
    def applied_rules(self) -> tuple[AdjustmentRule, ...]:
        return tuple(adjustment.rule for adjustment in self.adjustments)


# ---------------------------------------------------------------------------------------------- Barthel


class BarthelDependency(StrEnum):
    INDEPENDENT = "independent"
    MILD = "mild"
    MODERATE = "moderate"
    SEVERE = "severe"
    TOTAL = "total"


@dataclass(frozen=True, slots=True)
class BarthelItem:
    code: str
    label: Label
    allowed: tuple[int, ...]  # highest first, as in the data


@dataclass(frozen=True, slots=True)
class BarthelBand:
    dependency: BarthelDependency
    label: Label
    min_total: int
    max_total: int


@dataclass(frozen=True, slots=True)
class BarthelScale:
    items: tuple[BarthelItem, ...]
    total_max: int
    bands: tuple[BarthelBand, ...]

    def with_bands(self, bands: Sequence[BarthelBand]) -> "BarthelScale":
        """The same items graded by an institution's own bands (checked to cover 0..total_max once)."""
        _check_cover([(band.min_total, band.max_total) for band in bands], self.total_max, "Barthel bands")
        return replace(self, bands=tuple(bands))

    def band_of_total(self, total: int) -> BarthelBand:
        return next(band for band in self.bands if band.min_total <= total <= band.max_total)


@dataclass(frozen=True, slots=True)
class BarthelAssessment:
    total: int
    scores: tuple[tuple[str, int], ...]  # (item code, score) in the scale's order
    band: BarthelBand


# ---------------------------------------------------------------------------------------------- care level

CARE_LEVEL_LABELS: Mapping[CareLevel, Label] = {
    CareLevel.SELF_CARE: Label("自理", "self-care"),
    CareLevel.ASSISTED: Label("介护", "assisted care"),
    CareLevel.FULL_CARE: Label("全护", "full care"),
    CareLevel.SPECIAL_CARE: Label("特护", "special care"),
}
CARE_LEVEL_ORDER: tuple[CareLevel, ...] = (
    CareLevel.SELF_CARE,
    CareLevel.ASSISTED,
    CareLevel.FULL_CARE,
    CareLevel.SPECIAL_CARE,
)
DEFAULT_CARE_LEVEL_MAP: Mapping[CapabilityLevel, CareLevel] = {
    CapabilityLevel.INTACT: CareLevel.SELF_CARE,
    CapabilityLevel.MILD: CareLevel.ASSISTED,
    CapabilityLevel.MODERATE: CareLevel.ASSISTED,
    CapabilityLevel.SEVERE: CareLevel.FULL_CARE,
    CapabilityLevel.COMPLETE: CareLevel.SPECIAL_CARE,
}
DEFAULT_BARTHEL_CARE_LEVEL_MAP: Mapping[BarthelDependency, CareLevel] = {
    BarthelDependency.INDEPENDENT: CareLevel.SELF_CARE,
    BarthelDependency.MILD: CareLevel.ASSISTED,
    BarthelDependency.MODERATE: CareLevel.ASSISTED,
    BarthelDependency.SEVERE: CareLevel.FULL_CARE,
    BarthelDependency.TOTAL: CareLevel.FULL_CARE,
}


@dataclass(frozen=True, slots=True)
class CareLevelSuggestion:
    """Advice for the staff who set the care level; nothing applies it by itself."""

    care_level: CareLevel
    label: Label
    from_capability: CareLevel
    from_barthel: CareLevel | None  # None: no Barthel result was given

    @property
    def barthel_raised(self) -> bool:
        return self.care_level != self.from_capability


# ---------------------------------------------------------------------------------------------- loading


def _read(name: str) -> Any:
    return json.loads((files("care") / "data" / name).read_text(encoding="utf-8"))


def _label(entry: Mapping[str, Any]) -> Label:
    return Label(entry["zh"], entry.get("en") or entry["code"].replace("_", " "))


def _check_cover(ranges: Iterable[tuple[int, int]], total_max: int, what: str) -> None:
    covered = sorted(score for low, high in ranges for score in range(low, high + 1))
    if covered != list(range(total_max + 1)):
        raise ValueError(f"{what} must cover 0..{total_max} exactly once")


@cache
def gbt42195_scale() -> GBT42195Scale:
    data, rules = _read(GBT42195_FILE), _read(RULES_FILE)["gbt42195"]
    domains = tuple(
        Domain(
            code=domain["code"],
            label=_label(domain),
            max_score=domain["max"],
            items=tuple(Item(item["code"], _label(item), item["max"]) for item in domain["items"]),
        )
        for domain in data["domains"]
    )
    for domain in domains:
        if sum(item.max_score for item in domain.items) != domain.max_score:
            raise ValueError(f"the item maxima of {domain.code} do not add up to {domain.max_score}")
    if sum(domain.max_score for domain in domains) != data["total_max"]:
        raise ValueError("the domain maxima do not add up to total_max")
    levels = tuple(
        LevelBand(CapabilityLevel(level["level"]), _label(level), level["min"], level["max"])
        for level in data["levels"]
    )
    if sorted(band.level for band in levels) != list(CapabilityLevel):
        raise ValueError("the data must define each capability level 0..4 once")
    _check_cover([(band.min_total, band.max_total) for band in levels], data["total_max"], "GB/T levels")
    coma = rules["coma"]
    policy = AdjustmentPolicy(
        coma=None if coma is None else ComaRule(coma["item"], coma["value"], CapabilityLevel(coma["level"])),
        diagnosis_ranges=tuple(
            IcdRange(entry["first"], entry["last"], _label(entry), entry["needs_psychiatrist"])
            for entry in rules["diagnosis"]["icd10_ranges"]
        ),
        risk_event_kinds=frozenset(RiskEventKind(kind) for kind in rules["risk_events"]["kinds"]),
        risk_event_threshold=rules["risk_events"]["min_events"],
        risk_window_days=rules["risk_events"]["window_days"],
        combination=Combination(rules["combination"]),
    )
    scale = GBT42195Scale(domains, data["total_max"], levels, policy)
    _check_policy(scale, policy)
    return scale


def _check_policy(scale: GBT42195Scale, policy: AdjustmentPolicy) -> None:
    if policy.coma is not None:
        item = next((item for item in scale.items if item.code == policy.coma.item), None)
        if item is None or not 0 <= policy.coma.value <= item.max_score:
            raise ValueError(f"the coma rule names no valid answer: {policy.coma}")


@cache
def barthel_scale() -> BarthelScale:
    data, bands = _read(BARTHEL_FILE), _read(RULES_FILE)["barthel_bands"]["bands"]
    items = tuple(BarthelItem(item["code"], _label(item), tuple(item["scores"])) for item in data["items"])
    if sum(max(item.allowed) for item in items) != data["total_max"]:
        raise ValueError("the Barthel item maxima do not add up to total_max")
    scale = BarthelScale(items, data["total_max"], ())
    return scale.with_bands(
        [
            BarthelBand(BarthelDependency(band["dependency"]), _label(band), band["min"], band["max"])
            for band in bands
        ]
    )


# ---------------------------------------------------------------------------------------------- scoring

_ICD10 = re.compile(r"^([A-Z])(\d{2})(?:\.?[0-9A-Z]{1,4})?$")


def _icd_category(code: str) -> str:
    match = _ICD10.fullmatch(code.strip().upper())
    if match is None:
        raise ValueError(code)
    return match.group(1) + match.group(2)


def _check_answers(
    answers: Mapping[str, object], allowed: Mapping[str, Sequence[int] | range], problems: list[InvalidInput]
) -> dict[str, int]:
    """The valid scores by item code; a problem for each missing, unknown, non-integer or illegal answer."""
    scores: dict[str, int] = {}
    for code, values in allowed.items():
        if code not in answers:
            problems.append(InvalidInput("Answer this item.", field=code))
            continue
        value = answers[code]
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(InvalidInput("The score must be a whole number.", field=code))
        elif value not in values:
            if isinstance(values, range):
                problems.append(
                    InvalidInput("The score must be between 0 and {max}.", field=code, max=values.stop - 1)
                )
            else:
                problems.append(
                    InvalidInput(
                        "The score must be one of {allowed}.",
                        field=code,
                        allowed=", ".join(str(score) for score in values),
                    )
                )
        else:
            scores[code] = value
    for code in sorted(str(code) for code in answers if code not in allowed):
        problems.append(InvalidInput("This scale has no item {item}.", field=code, item=code))
    return scores


def assess_capability(
    answers: Mapping[str, int],
    *,
    assessed_on: date,
    diagnoses: Sequence[Diagnosis] = (),
    risk_events: Sequence[RiskEvent] = (),
    policy: AdjustmentPolicy | None = None,
    scale: GBT42195Scale | None = None,
) -> CapabilityAssessment:
    """Score a GB/T 42195-2022 assessment and grade it, with the standard's adjustments.

    `answers` maps every item code ("B1.1" … "B4.5") to its score 0..the item's maximum. Risk events count
    when they happened on `assessed_on` or up to `policy.risk_window_days` days before it. The raises for
    diagnosis and risk events apply first (once, or twice when `policy.combination` is STACK), then the
    coma rule sets the level to at least its level; nothing goes beyond level 4.
    """
    scale = scale or gbt42195_scale()
    policy = policy or scale.policy
    _check_policy(scale, policy)
    problems: list[InvalidInput] = []
    scores = _check_answers(answers, {item.code: range(item.max_score + 1) for item in scale.items}, problems)
    for diagnosis in diagnoses:
        if not _ICD10.fullmatch(diagnosis.icd10.strip().upper()):
            problems.append(
                InvalidInput(
                    "{code} is not an ICD-10 code such as F03 or F01.1.",
                    field="diagnoses",
                    code=diagnosis.icd10,
                )
            )
    if any(event.occurred_on > assessed_on for event in risk_events):
        problems.append(
            InvalidInput("A risk event cannot be dated after the assessment.", field="riskEvents")
        )
    if problems:
        raise ValidationFailed(problems)

    domain_scores = tuple(
        DomainScore(
            domain.code, domain.label, sum(scores[item.code] for item in domain.items), domain.max_score
        )
        for domain in scale.domains
    )
    total = sum(domain.score for domain in domain_scores)
    base = scale.level_of_total(total)

    matching = tuple(
        diagnosis.icd10.strip().upper()
        for diagnosis in diagnoses
        if any(
            icd.contains(diagnosis.icd10) and (diagnosis.by_psychiatrist or not icd.needs_psychiatrist)
            for icd in policy.diagnosis_ranges
        )
    )
    counted = tuple(
        f"{event.kind.value} {event.occurred_on.isoformat()}"
        for event in sorted(risk_events, key=lambda event: (event.occurred_on, event.kind.value))
        if event.kind in policy.risk_event_kinds
        and (assessed_on - event.occurred_on).days <= policy.risk_window_days
    )
    coma_rule = policy.coma
    coma = coma_rule is not None and scores[coma_rule.item] == coma_rule.value
    rules_met = tuple(
        rule
        for rule, met in (
            (AdjustmentRule.COMA, coma),
            (AdjustmentRule.DIAGNOSIS, bool(matching)),
            (AdjustmentRule.RISK_EVENTS, len(counted) >= policy.risk_event_threshold),
        )
        if met
    )

    def raised(level: CapabilityLevel) -> CapabilityLevel:
        return CapabilityLevel(min(level + 1, CapabilityLevel.COMPLETE))

    adjustments: list[AppliedAdjustment] = []
    level = base
    raises = [
        (rule, basis)
        for rule, basis in ((AdjustmentRule.DIAGNOSIS, matching), (AdjustmentRule.RISK_EVENTS, counted))
        if rule in rules_met
    ]
    if len(raises) == 2 and policy.combination == Combination.RAISE_ONCE:
        raises = [(AdjustmentRule.COMBINATION, matching + counted)]
    for rule, basis in raises:
        adjustments.append(AppliedAdjustment(rule, level, raised(level), basis))
        level = raised(level)
    if coma_rule is not None and coma:
        after = max(level, coma_rule.level)
        basis = (f"{coma_rule.item}={coma_rule.value}",)
        adjustments.append(AppliedAdjustment(AdjustmentRule.COMA, level, after, basis))
        level = after

    return CapabilityAssessment(
        assessed_on=assessed_on,
        total=total,
        domain_scores=domain_scores,
        level_before=base,
        label_before=scale.label_of(base),
        level=level,
        label=scale.label_of(level),
        rules_met=rules_met,
        adjustments=tuple(adjustments),
    )


def assess_barthel(answers: Mapping[str, int], *, scale: BarthelScale | None = None) -> BarthelAssessment:
    """Score a Barthel index: every item's score must be one the item allows (feeding 10, 5 or 0 …)."""
    scale = scale or barthel_scale()
    problems: list[InvalidInput] = []
    scores = _check_answers(answers, {item.code: item.allowed for item in scale.items}, problems)
    if problems:
        raise ValidationFailed(problems)
    total = sum(scores.values())
    return BarthelAssessment(
        total=total,
        scores=tuple((item.code, scores[item.code]) for item in scale.items),
        band=scale.band_of_total(total),
    )


def suggest_care_level(
    level: CapabilityLevel,
    barthel: BarthelAssessment | None = None,
    *,
    mapping: Mapping[CapabilityLevel, CareLevel] = DEFAULT_CARE_LEVEL_MAP,
    barthel_mapping: Mapping[BarthelDependency, CareLevel] = DEFAULT_BARTHEL_CARE_LEVEL_MAP,
) -> CareLevelSuggestion:
    """The care level to suggest for a GB/T 42195 level (after adjustments), raised by Barthel if given."""
    from_capability = mapping[level]
    from_barthel = None if barthel is None else barthel_mapping[barthel.band.dependency]
    suggested = max(
        (care for care in (from_capability, from_barthel) if care is not None), key=CARE_LEVEL_ORDER.index
    )
    return CareLevelSuggestion(suggested, CARE_LEVEL_LABELS[suggested], from_capability, from_barthel)

"""GB/T 42195-2022 and Barthel scoring, the adjustments, and the care-level suggestion: worked examples."""

import hashlib
from dataclasses import replace
from datetime import date, timedelta

import pytest

from api.settings import REPO_ROOT
from care.assessments import (
    AdjustmentRule,
    AppliedAdjustment,
    BarthelBand,
    BarthelDependency,
    CapabilityLevel,
    ComaRule,
    Combination,
    Diagnosis,
    Label,
    RiskEvent,
    RiskEventKind,
    assess_barthel,
    assess_capability,
    barthel_scale,
    gbt42195_scale,
    suggest_care_level,
)
from care.models import CareLevel
from tenants.errors import ValidationFailed

SHARED_DATA = REPO_ROOT.parent / "shared" / "data"
PACKAGE_DATA = REPO_ROOT / "care" / "data"
DAY = date(2026, 11, 30)
ITEM_CODES = [
    *(f"B1.{n}" for n in range(1, 9)),
    *(f"B2.{n}" for n in range(1, 5)),
    *(f"B3.{n}" for n in range(1, 10)),
    *(f"B4.{n}" for n in range(1, 6)),
]
MAXIMA = {"B2.4": 3, "B3.7": 1, "B3.8": 1, "B3.9": 2, "B4.1": 2, "B4.2": 2, "B4.4": 3}


def full_marks() -> dict[str, int]:
    return {code: MAXIMA.get(code, 4) for code in ITEM_CODES}


def answers_totalling(total: int) -> dict[str, int]:
    """Answers adding up to `total`, taking points off every item but B3.9 (consciousness) first."""
    answers = full_marks()
    deficit = 90 - total
    for code in [code for code in ITEM_CODES if code != "B3.9"] + ["B3.9"]:
        taken = min(deficit, answers[code])
        answers[code] -= taken
        deficit -= taken
    assert deficit == 0 and sum(answers.values()) == total
    return answers


def assess(answers: dict[str, int], **kwargs: object):  # type: ignore[no-untyped-def]
    return assess_capability(answers, assessed_on=DAY, **kwargs)  # type: ignore[arg-type]


def problems_of(excinfo: pytest.ExceptionInfo[ValidationFailed]) -> list[tuple[str | None, str]]:
    return [(problem.field, str(problem)) for problem in excinfo.value.problems]


# -------------------------------------------------------------------------------------------- the data


# SHA-256 of the reference files when they were copied into the package: the copies are checked against
# them everywhere, and against the reference itself where ../shared/data stands next to the repository.
REFERENCE_SHA256 = {
    "gbt42195-2022.json": "293e791514653cb6e0b7e1fb36e3b9bce2b4c9613db8997d53d8e995b45ca4f1",
    "barthel-index.json": "60eeb3f421ff1e416eace86740bf24e60b544bffdb61d00ea0a2bce2cab30bd7",
}


@pytest.mark.parametrize("name", sorted(REFERENCE_SHA256))
def test_packaged_reference_data_equals_the_shared_copy(name: str) -> None:
    packaged = (PACKAGE_DATA / name).read_bytes()
    assert hashlib.sha256(packaged).hexdigest() == REFERENCE_SHA256[name]
    if SHARED_DATA.is_dir():
        assert packaged == (SHARED_DATA / name).read_bytes()


def test_scale_structure_from_the_data() -> None:
    scale = gbt42195_scale()
    assert [item.code for item in scale.items] == ITEM_CODES
    assert [(domain.code, domain.max_score, len(domain.items)) for domain in scale.domains] == [
        ("B1", 32, 8),
        ("B2", 15, 4),
        ("B3", 28, 9),
        ("B4", 15, 5),
    ]
    assert {item.code: item.max_score for item in scale.items} == full_marks()
    assert scale.total_max == 90
    assert scale.label_of(CapabilityLevel.COMPLETE) == Label("完全失能", "complete disability")
    assert scale.policy.coma == ComaRule("B3.9", 0, CapabilityLevel.COMPLETE)
    assert scale.policy.combination == Combination.RAISE_ONCE
    assert {item.code: item.allowed for item in barthel_scale().items} == {
        "feeding": (10, 5, 0),
        "bathing": (5, 0),
        "grooming": (5, 0),
        "dressing": (10, 5, 0),
        "bowels": (10, 5, 0),
        "bladder": (10, 5, 0),
        "toilet_use": (10, 5, 0),
        "transfers": (15, 10, 5, 0),
        "mobility": (15, 10, 5, 0),
        "stairs": (10, 5, 0),
    }
    assert barthel_scale().items[6].label == Label("如厕", "toilet use")


# -------------------------------------------------------------------------------------------- GB/T totals


def test_full_marks_are_level_0() -> None:
    result = assess(full_marks())
    assert result.total == 90
    assert [(score.code, score.score, score.max_score) for score in result.domain_scores] == [
        ("B1", 32, 32),
        ("B2", 15, 15),
        ("B3", 28, 28),
        ("B4", 15, 15),
    ]
    assert result.level_before == result.level == CapabilityLevel.INTACT
    assert result.label == Label("能力完好", "intact")
    assert result.rules_met == () and result.adjustments == ()


def test_domain_scores_add_up_per_domain() -> None:
    answers = full_marks() | {"B1.1": 1, "B2.4": 0, "B3.7": 0, "B4.5": 2}
    result = assess(answers)
    assert [score.score for score in result.domain_scores] == [29, 12, 27, 13]
    assert result.total == 81


@pytest.mark.parametrize(
    ("total", "level"),
    [
        (90, CapabilityLevel.INTACT),
        (89, CapabilityLevel.MILD),
        (66, CapabilityLevel.MILD),
        (65, CapabilityLevel.MODERATE),
        (46, CapabilityLevel.MODERATE),
        (45, CapabilityLevel.SEVERE),
        (30, CapabilityLevel.SEVERE),
        (29, CapabilityLevel.COMPLETE),
        (2, CapabilityLevel.COMPLETE),
    ],
)
def test_level_boundaries(total: int, level: CapabilityLevel) -> None:
    result = assess(answers_totalling(total))
    assert result.total == total
    assert result.level_before == result.level == level
    assert result.adjustments == ()


def test_total_0_is_level_4_and_the_coma_rule_holds() -> None:
    result = assess(answers_totalling(0))
    assert result.total == 0
    assert result.level_before == result.level == CapabilityLevel.COMPLETE
    assert result.rules_met == (AdjustmentRule.COMA,)
    assert result.adjustments == (
        AppliedAdjustment(
            AdjustmentRule.COMA, CapabilityLevel.COMPLETE, CapabilityLevel.COMPLETE, ("B3.9=0",)
        ),
    )


# -------------------------------------------------------------------------------------------- adjustments


def test_coma_grades_complete_disability_whatever_the_total() -> None:
    result = assess(full_marks() | {"B3.9": 0})
    assert result.total == 88
    assert result.level_before == CapabilityLevel.MILD
    assert result.level == CapabilityLevel.COMPLETE
    assert result.label == Label("完全失能", "complete disability")
    assert result.applied_rules == (AdjustmentRule.COMA,)
    assert result.adjustments[0].basis == ("B3.9=0",)


def test_drowsy_is_not_coma() -> None:
    result = assess(full_marks() | {"B3.9": 1})
    assert (result.total, result.level, result.rules_met) == (89, CapabilityLevel.MILD, ())


def test_coma_rule_is_configurable() -> None:
    scale = gbt42195_scale()
    severe = replace(scale.policy, coma=ComaRule("B3.9", 0, CapabilityLevel.SEVERE))
    assert assess(full_marks() | {"B3.9": 0}, policy=severe).level == CapabilityLevel.SEVERE
    no_coma_rule = replace(scale.policy, coma=None)
    assert assess(full_marks() | {"B3.9": 0}, policy=no_coma_rule).level == CapabilityLevel.MILD


@pytest.mark.parametrize(
    "diagnosis",
    [Diagnosis("F03"), Diagnosis("f00.1"), Diagnosis("F01"), Diagnosis("F32.1", by_psychiatrist=True)],
)
def test_diagnosis_raises_one_level(diagnosis: Diagnosis) -> None:
    result = assess(answers_totalling(70), diagnoses=[diagnosis])
    assert result.level_before == CapabilityLevel.MILD
    assert result.level == CapabilityLevel.MODERATE
    assert result.rules_met == (AdjustmentRule.DIAGNOSIS,)
    assert result.adjustments == (
        AppliedAdjustment(
            AdjustmentRule.DIAGNOSIS,
            CapabilityLevel.MILD,
            CapabilityLevel.MODERATE,
            (diagnosis.icd10.upper(),),
        ),
    )


@pytest.mark.parametrize(
    "diagnosis", [Diagnosis("F32.1"), Diagnosis("G30.1"), Diagnosis("I10"), Diagnosis("E11", True)]
)
def test_other_diagnoses_do_not_raise(diagnosis: Diagnosis) -> None:
    result = assess(answers_totalling(70), diagnoses=[diagnosis])
    assert (result.level, result.rules_met) == (CapabilityLevel.MILD, ())


def test_one_risk_event_does_not_raise() -> None:
    result = assess(answers_totalling(50), risk_events=[RiskEvent(RiskEventKind.FALL, DAY)])
    assert (result.level_before, result.level, result.adjustments) == (
        CapabilityLevel.MODERATE,
        CapabilityLevel.MODERATE,
        (),
    )


def test_two_risk_events_raise_one_level() -> None:
    events = [
        RiskEvent(RiskEventKind.WANDERING, DAY - timedelta(days=30)),
        RiskEvent(RiskEventKind.CHOKING, DAY),
    ]
    result = assess(answers_totalling(50), risk_events=events)
    assert result.level == CapabilityLevel.SEVERE
    assert result.adjustments == (
        AppliedAdjustment(
            AdjustmentRule.RISK_EVENTS,
            CapabilityLevel.MODERATE,
            CapabilityLevel.SEVERE,
            ("wandering 2026-10-31", "choking 2026-11-30"),
        ),
    )


def test_risk_events_older_than_30_days_do_not_count() -> None:
    events = [
        RiskEvent(RiskEventKind.FALL, DAY - timedelta(days=31)),
        RiskEvent(RiskEventKind.SELF_HARM, DAY - timedelta(days=3)),
    ]
    assert assess(answers_totalling(50), risk_events=events).level == CapabilityLevel.MODERATE


def test_diagnosis_and_risk_events_raise_once_by_default() -> None:
    events = [RiskEvent(RiskEventKind.FALL, DAY), RiskEvent(RiskEventKind.FALL, DAY - timedelta(days=1))]
    result = assess(answers_totalling(70), diagnoses=[Diagnosis("F02")], risk_events=events)
    assert result.level_before == CapabilityLevel.MILD
    assert result.level == CapabilityLevel.MODERATE
    assert result.rules_met == (AdjustmentRule.DIAGNOSIS, AdjustmentRule.RISK_EVENTS)
    assert result.adjustments == (
        AppliedAdjustment(
            AdjustmentRule.COMBINATION,
            CapabilityLevel.MILD,
            CapabilityLevel.MODERATE,
            ("F02", "fall 2026-11-29", "fall 2026-11-30"),
        ),
    )


def test_stacking_raises_twice_and_stops_at_level_4() -> None:
    stack = replace(gbt42195_scale().policy, combination=Combination.STACK)
    events = [RiskEvent(RiskEventKind.FALL, DAY), RiskEvent(RiskEventKind.WANDERING, DAY)]
    twice = assess(answers_totalling(70), diagnoses=[Diagnosis("F03")], risk_events=events, policy=stack)
    assert (twice.level_before, twice.level) == (CapabilityLevel.MILD, CapabilityLevel.SEVERE)
    assert twice.applied_rules == (AdjustmentRule.DIAGNOSIS, AdjustmentRule.RISK_EVENTS)
    capped = assess(answers_totalling(40), diagnoses=[Diagnosis("F03")], risk_events=events, policy=stack)
    assert (capped.level_before, capped.level) == (CapabilityLevel.SEVERE, CapabilityLevel.COMPLETE)
    assert [(step.level_before, step.level_after) for step in capped.adjustments] == [
        (CapabilityLevel.SEVERE, CapabilityLevel.COMPLETE),
        (CapabilityLevel.COMPLETE, CapabilityLevel.COMPLETE),
    ]


def test_level_4_with_a_raise_stays_4() -> None:
    result = assess(answers_totalling(20), diagnoses=[Diagnosis("F03")])
    assert (result.level_before, result.level) == (CapabilityLevel.COMPLETE, CapabilityLevel.COMPLETE)
    assert result.adjustments == (
        AppliedAdjustment(
            AdjustmentRule.DIAGNOSIS, CapabilityLevel.COMPLETE, CapabilityLevel.COMPLETE, ("F03",)
        ),
    )


# -------------------------------------------------------------------------------------------- bad input


def test_missing_item_is_named() -> None:
    answers = full_marks()
    del answers["B2.3"]
    with pytest.raises(ValidationFailed) as excinfo:
        assess(answers)
    assert problems_of(excinfo) == [("B2.3", "Answer this item.")]


def test_unknown_item_is_named() -> None:
    with pytest.raises(ValidationFailed) as excinfo:
        assess(full_marks() | {"B5.1": 3})
    assert problems_of(excinfo) == [("B5.1", "This scale has no item B5.1.")]


@pytest.mark.parametrize(
    ("code", "value", "message"),
    [
        ("B1.1", 5, "The score must be between 0 and 4."),
        ("B2.4", 4, "The score must be between 0 and 3."),
        ("B3.7", 2, "The score must be between 0 and 1."),
        ("B4.1", -1, "The score must be between 0 and 2."),
        ("B1.2", 2.0, "The score must be a whole number."),
        ("B1.3", "3", "The score must be a whole number."),
        ("B1.4", True, "The score must be a whole number."),
        ("B1.5", None, "The score must be a whole number."),
    ],
)
def test_bad_value_is_named(code: str, value: object, message: str) -> None:
    with pytest.raises(ValidationFailed) as excinfo:
        assess(full_marks() | {code: value})  # type: ignore[dict-item]
    assert problems_of(excinfo) == [(code, message)]
    assert excinfo.value.problems[0].message in {
        "The score must be between 0 and {max}.",
        "The score must be a whole number.",
    }


def test_all_problems_are_reported_at_once() -> None:
    answers = full_marks() | {"B1.1": 9, "B3.9": -2, "X": 1, "B4.4": 1.5}
    del answers["B2.1"]
    with pytest.raises(ValidationFailed) as excinfo:
        assess(
            answers,
            diagnoses=[Diagnosis("dementia")],
            risk_events=[RiskEvent(RiskEventKind.FALL, DAY + timedelta(days=1))],
        )
    assert problems_of(excinfo) == [
        ("B1.1", "The score must be between 0 and 4."),
        ("B2.1", "Answer this item."),
        ("B3.9", "The score must be between 0 and 2."),
        ("B4.4", "The score must be a whole number."),
        ("X", "This scale has no item X."),
        ("diagnoses", "dementia is not an ICD-10 code such as F03 or F01.1."),
        ("riskEvents", "A risk event cannot be dated after the assessment."),
    ]


# -------------------------------------------------------------------------------------------- Barthel

BARTHEL_FULL = {
    "feeding": 10,
    "bathing": 5,
    "grooming": 5,
    "dressing": 10,
    "bowels": 10,
    "bladder": 10,
    "toilet_use": 10,
    "transfers": 15,
    "mobility": 15,
    "stairs": 10,
}


def barthel_totalling(total: int) -> dict[str, int]:
    """Barthel answers adding up to `total` (a multiple of 5), lowering items in steps they allow."""
    answers = dict(BARTHEL_FULL)
    deficit = 100 - total
    for code in answers:
        taken = min(deficit, answers[code])
        answers[code] -= taken
        deficit -= taken
    assert deficit == 0 and sum(answers.values()) == total
    return answers


def test_barthel_full_and_zero() -> None:
    full = assess_barthel(BARTHEL_FULL)
    assert (full.total, full.band.dependency) == (100, BarthelDependency.INDEPENDENT)
    assert full.band.label == Label("无需依赖", "independent")
    zero = assess_barthel(dict.fromkeys(BARTHEL_FULL, 0))
    assert (zero.total, zero.band.dependency) == (0, BarthelDependency.TOTAL)
    assert zero.band.label == Label("完全依赖", "total dependence")


@pytest.mark.parametrize(
    ("total", "dependency"),
    [
        (100, BarthelDependency.INDEPENDENT),
        (95, BarthelDependency.MILD),
        (65, BarthelDependency.MILD),
        (60, BarthelDependency.MODERATE),
        (45, BarthelDependency.MODERATE),
        (40, BarthelDependency.SEVERE),
        (25, BarthelDependency.SEVERE),
        (20, BarthelDependency.TOTAL),
    ],
)
def test_barthel_band_boundaries_reachable_in_steps_of_5(total: int, dependency: BarthelDependency) -> None:
    result = assess_barthel(barthel_totalling(total))
    assert (result.total, result.band.dependency) == (total, dependency)


@pytest.mark.parametrize(
    ("total", "dependency"),
    [
        (100, BarthelDependency.INDEPENDENT),
        (99, BarthelDependency.MILD),
        (61, BarthelDependency.MILD),
        (60, BarthelDependency.MODERATE),
        (41, BarthelDependency.MODERATE),
        (40, BarthelDependency.SEVERE),
        (21, BarthelDependency.SEVERE),
        (20, BarthelDependency.TOTAL),
        (0, BarthelDependency.TOTAL),
    ],
)
def test_barthel_band_edges(total: int, dependency: BarthelDependency) -> None:
    # Item scores are multiples of 5, so 99, 61, 41 and 21 are not reachable by answers; the bands still
    # have to place them (an institution may configure other bands or a modified scale).
    assert barthel_scale().band_of_total(total).dependency == dependency


def test_barthel_bands_are_configurable() -> None:
    four = barthel_scale().with_bands(
        [
            BarthelBand(BarthelDependency.INDEPENDENT, Label("无需依赖", "independent"), 100, 100),
            BarthelBand(BarthelDependency.MILD, Label("轻度依赖", "mild dependence"), 61, 99),
            BarthelBand(BarthelDependency.MODERATE, Label("中度依赖", "moderate dependence"), 41, 60),
            BarthelBand(BarthelDependency.SEVERE, Label("重度依赖", "severe dependence"), 0, 40),
        ]
    )
    assert assess_barthel(barthel_totalling(20), scale=four).band.dependency == BarthelDependency.SEVERE
    with pytest.raises(ValueError):
        barthel_scale().with_bands(four.bands[:3])


@pytest.mark.parametrize(
    ("code", "value", "message"),
    [
        ("feeding", 7, "The score must be one of 10, 5, 0."),
        ("bathing", 10, "The score must be one of 5, 0."),
        ("transfers", -5, "The score must be one of 15, 10, 5, 0."),
        ("stairs", 5.0, "The score must be a whole number."),
    ],
)
def test_barthel_refuses_values_the_item_does_not_allow(code: str, value: object, message: str) -> None:
    with pytest.raises(ValidationFailed) as excinfo:
        assess_barthel(BARTHEL_FULL | {code: value})  # type: ignore[dict-item]
    assert problems_of(excinfo) == [(code, message)]


def test_barthel_missing_and_unknown_items() -> None:
    answers = BARTHEL_FULL | {"walking": 10}
    del answers["bladder"]
    with pytest.raises(ValidationFailed) as excinfo:
        assess_barthel(answers)
    assert problems_of(excinfo) == [
        ("bladder", "Answer this item."),
        ("walking", "This scale has no item walking."),
    ]


# -------------------------------------------------------------------------------------------- care level


@pytest.mark.parametrize(
    ("level", "care_level"),
    [
        (CapabilityLevel.INTACT, CareLevel.SELF_CARE),
        (CapabilityLevel.MILD, CareLevel.ASSISTED),
        (CapabilityLevel.MODERATE, CareLevel.ASSISTED),
        (CapabilityLevel.SEVERE, CareLevel.FULL_CARE),
        (CapabilityLevel.COMPLETE, CareLevel.SPECIAL_CARE),
    ],
)
def test_care_level_suggestion_for_each_level(level: CapabilityLevel, care_level: CareLevel) -> None:
    suggestion = suggest_care_level(level)
    assert (suggestion.care_level, suggestion.from_capability, suggestion.from_barthel) == (
        care_level,
        care_level,
        None,
    )
    assert not suggestion.barthel_raised


def test_barthel_can_raise_the_suggestion_but_not_lower_it() -> None:
    severe_adl = assess_barthel(barthel_totalling(30))
    raised = suggest_care_level(CapabilityLevel.MILD, severe_adl)
    assert (raised.care_level, raised.from_capability, raised.from_barthel) == (
        CareLevel.FULL_CARE,
        CareLevel.ASSISTED,
        CareLevel.FULL_CARE,
    )
    assert raised.label == Label("全护", "full care") and raised.barthel_raised
    independent = assess_barthel(BARTHEL_FULL)
    kept = suggest_care_level(CapabilityLevel.COMPLETE, independent)
    assert kept.care_level == CareLevel.SPECIAL_CARE and not kept.barthel_raised
    total_adl = assess_barthel(barthel_totalling(0))
    assert suggest_care_level(CapabilityLevel.INTACT, total_adl).care_level == CareLevel.FULL_CARE


def test_suggestion_from_an_adjusted_assessment() -> None:
    result = assess(full_marks() | {"B3.9": 0})
    assert suggest_care_level(result.level).care_level == CareLevel.SPECIAL_CARE

"""The checks of corrections to the health record, without a database: what a change keeps, clears and
refuses (the GraphQL round trips are in tests/api/test_record_corrections.py)."""

from datetime import date

import pytest

from care.health_record import (
    KEEP,
    Allergy,
    AllergyChanges,
    AllergySeverity,
    Diagnosis,
    DiagnosisChanges,
    check_allergy_changes,
    check_diagnosis_changes,
)
from tenants.errors import ValidationFailed

TODAY = date(2026, 3, 1)
CURRENT = Diagnosis(7, 3, "高血压", "I10", "晨起头晕", date(2024, 3, 1), None)


def fields(error: pytest.ExceptionInfo[ValidationFailed]) -> set[str | None]:
    return {problem.field for problem in error.value.problems}


def test_left_out_keeps_empty_text_and_null_date_clear() -> None:
    assert check_diagnosis_changes(CURRENT, DiagnosisChanges(), TODAY) == CURRENT
    changed = check_diagnosis_changes(
        CURRENT, DiagnosisChanges(icd10=" i10 ", note="", resolved_on=date(2025, 1, 10)), TODAY
    )
    assert (changed.icd10, changed.note, changed.resolved_on) == ("I10", None, date(2025, 1, 10))
    cleared = check_diagnosis_changes(changed, DiagnosisChanges(diagnosed_on=None, resolved_on=KEEP), TODAY)
    assert (cleared.diagnosed_on, cleared.resolved_on) == (None, date(2025, 1, 10))


def test_every_problem_is_reported_with_its_input_field() -> None:
    with pytest.raises(ValidationFailed) as error:
        check_diagnosis_changes(
            CURRENT,
            DiagnosisChanges(
                condition="", icd10="123", note="x" * 201, diagnosed_on=date(2026, 4, 1), resolved_on=TODAY
            ),
            TODAY,
        )
    assert fields(error) == {"condition", "icd10", "note", "diagnosedOn", "resolvedOn"}


def test_dates_are_checked_as_they_would_be_after_the_change() -> None:
    resolved = Diagnosis(7, 3, "肺炎", None, None, date(2025, 1, 1), date(2025, 2, 1))
    with pytest.raises(ValidationFailed) as error:
        check_diagnosis_changes(resolved, DiagnosisChanges(diagnosed_on=date(2025, 3, 1)), TODAY)
    assert fields(error) == {"diagnosedOn"}
    with pytest.raises(ValidationFailed) as error:
        check_diagnosis_changes(resolved, DiagnosisChanges(resolved_on=date(2024, 12, 31)), TODAY)
    assert fields(error) == {"resolvedOn"}
    # The stored dates are not checked against today again: only what changes.
    assert check_diagnosis_changes(resolved, DiagnosisChanges(note="已治愈"), TODAY).note == "已治愈"


def test_allergy_changes() -> None:
    current = Allergy(5, 3, "青霉素", "皮疹", AllergySeverity.MODERATE)
    changed = check_allergy_changes(current, AllergyChanges(reaction="", severity=AllergySeverity.SEVERE))
    assert changed == Allergy(5, 3, "青霉素", None, AllergySeverity.SEVERE)
    with pytest.raises(ValidationFailed) as error:
        check_allergy_changes(current, AllergyChanges(substance="  ", reaction="x" * 201))
    assert fields(error) == {"substance", "reaction"}

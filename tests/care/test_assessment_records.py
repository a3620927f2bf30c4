"""Stored assessments: answers in, level out, sealed at rest, versions in order (also when recorded at the
same moment), corrections, the care-level suggestion from what is stored, bad input reported together
with nothing written, erasure, and the demo data."""

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from datetime import date, timedelta
from typing import TypeVar

import pytest

from care import assessment_records as records
from care.assessments import (
    AdjustmentRule,
    BarthelDependency,
    CapabilityLevel,
    Diagnosis,
    RiskEvent,
    RiskEventKind,
    barthel_scale,
)
from care.models import CareLevel, Gender
from care.residents import Admission, Placement, admit_resident, institution_today
from compliance.encryption import CiphertextRejected, destroy_data_key
from tenants.db import default_connection
from tenants.errors import Erased, NotFound, ValidationFailed
from tenants.models import Institution
from tenants.registry import tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.care.test_assessments import answers_totalling
from tests.conftest import World

T = TypeVar("T")
ADMITTED = date(2025, 6, 1)
HOME, OTHER = 18, 3


async def in_tenant(institution_id: int, work: Callable[[], Awaitable[T]]) -> T:
    return await run_in_tenant(tenant_ref(await Institution.get(id=institution_id)), work)


async def admitted(institution_id: int, name: str, care_level: CareLevel = CareLevel.ASSISTED) -> int:
    async def admit() -> int:
        record = await admit_resident(
            Admission(name, Gender.FEMALE, date(1938, 4, 2), care_level, ADMITTED, Placement())
        )
        return record.id

    return await in_tenant(institution_id, admit)


class _RollBack(Exception):
    """Raised at the end of a unit of work to roll it back."""


def capability(
    total: int,
    assessed_on: date = date(2026, 6, 1),
    reason: records.Reason = records.Reason.ADMISSION,
    **changes: object,
) -> records.NewAssessment:
    answers = tuple(records.Answer(code, value) for code, value in answers_totalling(total).items())
    given: dict[str, object] = {
        "scale": records.Scale.CAPABILITY,
        "assessed_on": assessed_on,
        "reason": reason,
        "answers": answers,
    }
    return records.NewAssessment(**(given | changes))  # type: ignore[arg-type]


def barthel(total: int, assessed_on: date = date(2026, 6, 1)) -> records.NewAssessment:
    """Barthel answers adding up to `total` (a multiple of 5), points taken from the first items first."""
    answers, deficit = {}, 100 - total
    for item in barthel_scale().items:
        value = min(v for v in item.allowed if max(item.allowed) - v <= deficit)
        deficit -= max(item.allowed) - value
        answers[item.code] = value
    assert deficit == 0
    return records.NewAssessment(
        records.Scale.BARTHEL,
        assessed_on,
        records.Reason.ADMISSION,
        tuple(records.Answer(code, value) for code, value in answers.items()),
    )


async def record(resident_id: int, new: records.NewAssessment) -> records.AssessmentRecord:
    return await records.record_assessment(
        resident_id, new, assessor="account:7001", today=institution_today()
    )


async def raw_rows(resident_id: int) -> list[dict]:
    _, rows = await default_connection().execute_query(
        "SELECT * FROM assessment WHERE resident_id = $1 ORDER BY id", [resident_id]
    )
    return [dict(row) for row in rows]


async def test_answers_in_level_out_sealed_at_rest_and_read_back(world: World) -> None:
    institution = world.institution_ids[HOME]
    pk = await admitted(institution, "评估长者甲")

    async def work() -> None:
        plain = await record(pk, capability(60))
        assert plain.version == 1 and plain.capability is not None
        assert (plain.capability.total, plain.capability.level) == (60, CapabilityLevel.MODERATE)
        assert plain.capability.label.zh == "中度失能" and plain.capability.adjustments == ()
        # Dementia (F03) and two falls within 30 days: raised once (moderate → severe), as the rules say.
        raised = await record(
            pk,
            capability(
                60,
                date(2026, 7, 1),
                records.Reason.CHANGE_IN_CONDITION,
                diagnoses=(Diagnosis("F03"),),
                risk_events=(
                    RiskEvent(RiskEventKind.FALL, date(2026, 6, 20)),
                    RiskEvent(RiskEventKind.FALL, date(2026, 6, 28)),
                ),
            ),
        )
        assert raised.version == 2 and raised.capability is not None
        assert raised.capability.level is CapabilityLevel.SEVERE
        assert raised.capability.applied_rules == (AdjustmentRule.COMBINATION,)

        newest, oldest = await records.list_assessments(pk, None, after_id=None, limit=10)
        assert (newest.id, oldest.id) == (raised.id, plain.id)
        assert newest.capability == raised.capability  # the stored result, as computed
        assert newest.diagnoses == (Diagnosis("F03"),) and len(newest.risk_events) == 2
        assert dict((a.item, a.value) for a in newest.answers) == answers_totalling(60)
        assert [d.score for d in newest.capability.domain_scores] == [
            d.score for d in raised.capability.domain_scores
        ]
        assert (newest.reason, newest.assessor) == (records.Reason.CHANGE_IN_CONDITION, "account:7001")

        for row in await raw_rows(pk):
            for column in records.SEALED_COLUMNS:
                value = row[column]
                assert isinstance(value, bytes) and len(value) % 256 > 0  # padded, plus the envelope
                for plaintext in (b"B1.1", b"F03", b"fall", b"total", b"combination", b"level"):
                    assert plaintext not in value, column

    await in_tenant(institution, work)


async def test_versions_count_per_scale_and_corrections_supersede(world: World) -> None:
    institution = world.institution_ids[HOME]
    pk = await admitted(institution, "评估长者乙")

    async def work() -> None:
        first = await record(pk, capability(80, date(2026, 1, 10)))
        index = await record(pk, barthel(70, date(2026, 1, 10)))
        second = await record(pk, capability(70, date(2026, 6, 1), records.Reason.PERIODIC_REVIEW))
        # A correction of the second, dated earlier than it: it replaces it as the latest all the same.
        third = await record(
            pk, capability(60, date(2026, 5, 30), records.Reason.REASSESSMENT, supersedes=second.version)
        )
        assert [first.version, second.version, third.version, index.version] == [1, 2, 3, 1]
        assert third.supersedes == 2

        listed = await records.list_assessments(pk, records.Scale.CAPABILITY, after_id=None, limit=10)
        assert [r.version for r in listed] == [2, 3, 1]  # assessment date, newest first
        assert listed[0].superseded_by == 3 and listed[1].superseded_by is None
        page = await records.list_assessments(pk, records.Scale.CAPABILITY, after_id=listed[0].id, limit=1)
        assert [r.version for r in page] == [3]
        assert await records.count_assessments(pk, None) == 4

        latest = await records.latest_assessments(pk)
        assert latest.capability is not None and latest.capability.version == 3
        assert latest.barthel is not None and latest.barthel.id == index.id

        with pytest.raises(ValidationFailed) as again:
            await record(pk, capability(60, supersedes=2))  # already corrected by 3
        with pytest.raises(ValidationFailed) as missing:
            await record(pk, capability(60, supersedes=9))
        assert [p.field for p in again.value.problems + missing.value.problems] == ["supersedes"] * 2

        # Rows are never updated.
        with pytest.raises(Exception, match="never updated"):
            await default_connection().execute_query(
                "UPDATE assessment SET reason = 'other' WHERE id = $1", [first.id]
            )

    await in_tenant(institution, work)


async def test_assessments_recorded_at_the_same_moment_get_distinct_versions(world: World) -> None:
    institution = world.institution_ids[HOME]
    pk = await admitted(institution, "评估长者丙")

    async def one(total: int) -> int:
        return (await in_tenant(institution, lambda: record(pk, capability(total)))).version

    versions = await asyncio.gather(*(one(total) for total in (50, 60, 70, 80)))
    assert sorted(versions) == [1, 2, 3, 4]

    async def stored() -> list[int]:
        return [row["version"] for row in await raw_rows(pk)]

    assert sorted(await in_tenant(institution, stored)) == [1, 2, 3, 4]


async def test_the_suggestion_comes_from_the_latest_stored_assessments(world: World) -> None:
    institution = world.institution_ids[OTHER]
    pk = await admitted(institution, "建议长者", CareLevel.ASSISTED)

    async def work() -> None:
        assert (await records.latest_assessments(pk)).suggestion() is None
        await record(pk, barthel(30))
        assert (await records.latest_assessments(pk)).suggestion() is None  # Barthel alone: no suggestion
        mild = await record(pk, capability(75))  # level 1 → 介护
        latest = await records.latest_assessments(pk)
        suggestion = latest.suggestion()
        assert suggestion is not None
        assert suggestion.from_capability is CareLevel.ASSISTED
        assert suggestion.from_barthel is CareLevel.FULL_CARE  # Barthel 30: severe dependence
        assert suggestion.care_level is CareLevel.FULL_CARE and suggestion.barthel_raised
        found = records.resident_suggestion(latest, await records.current_care_level(pk))
        assert found is not None and found.current is CareLevel.ASSISTED and found.differs
        assert latest.barthel is not None and latest.barthel.barthel is not None
        assert latest.barthel.barthel.band.dependency is BarthelDependency.SEVERE

        applied = await records.suggestion_to_apply(pk, mild.id)
        assert applied.suggestion.care_level is CareLevel.FULL_CARE
        await record(pk, barthel(100, date(2026, 6, 2)))  # a newer one: the old id is stale now
        with pytest.raises(records.Conflict):
            await records.suggestion_to_apply(pk, latest.barthel.id)
        after = (await records.latest_assessments(pk)).suggestion()
        assert after is not None and after.care_level is CareLevel.ASSISTED and not after.barthel_raised

    await in_tenant(institution, work)


async def test_bad_input_is_reported_together_and_nothing_is_written(world: World) -> None:
    institution = world.institution_ids[HOME]
    pk = await admitted(institution, "错误输入长者")

    async def work() -> None:
        answers = {**answers_totalling(70), "B1.1": 5, "B3.9": -1, "Z9": 1}
        del answers["B4.5"]
        given = [records.Answer(code, value) for code, value in answers.items()]
        bad = capability(
            70,
            institution_today() + timedelta(days=1),
            answers=(*given, records.Answer("B2.1", 2)),
            diagnoses=(Diagnosis("dementia"),),
            risk_events=(RiskEvent(RiskEventKind.FALL, institution_today() + timedelta(days=5)),),
        )
        with pytest.raises(ValidationFailed) as failed:
            await record(pk, bad)
        fields = sorted(str(p.field) for p in failed.value.problems)
        assert fields == sorted(
            ["assessedOn", "B2.1", "B1.1", "B3.9", "B4.5", "Z9", "diagnoses", "riskEvents"]
        ), fields

        too_early = capability(70, ADMITTED - timedelta(days=366))
        index = barthel(60)
        with pytest.raises(ValidationFailed) as early:
            await record(pk, too_early)
        with pytest.raises(ValidationFailed) as barthel_extras:
            await record(pk, records.NewAssessment(**{**_fields(index), "diagnoses": (Diagnosis("F03"),)}))
        with pytest.raises(ValidationFailed) as barthel_values:
            await record(
                pk, records.NewAssessment(**{**_fields(index), "answers": (records.Answer("feeding", 7),)})
            )
        assert [p.field for p in early.value.problems] == ["assessedOn"]
        assert [p.field for p in barthel_extras.value.problems] == ["diagnoses"]
        assert {p.field for p in barthel_values.value.problems} == {
            item.code for item in barthel_scale().items
        }
        with pytest.raises(NotFound):
            await record(999_999, capability(70))
        assert await raw_rows(pk) == []

    await in_tenant(institution, work)


def _fields(new: records.NewAssessment) -> dict[str, object]:
    return {name: getattr(new, name) for name in records.NewAssessment.__dataclass_fields__}


async def test_a_sealed_document_moved_to_another_row_does_not_open(world: World) -> None:
    institution = world.institution_ids[HOME]
    pk = await admitted(institution, "搬移长者")

    async def work() -> None:
        first = await record(pk, capability(40))
        second = await record(pk, capability(85))
        # Rows cannot be updated: a forged row copies the first one's result under another id.
        await default_connection().execute_query(
            """INSERT INTO assessment
                   (resident_id, scale, version, assessed_on, reason, assessor, answers, result)
               SELECT resident_id, scale, 99, assessed_on, reason, assessor,
                      (SELECT answers FROM assessment WHERE id = $2), result
               FROM assessment WHERE id = $1""",
            [first.id, second.id],
        )
        with pytest.raises(CiphertextRejected):
            await records.list_assessments(pk, None, after_id=None, limit=10)
        raise _RollBack  # the forged row goes: it would break every later read of the institution's page

    with pytest.raises(_RollBack):
        await in_tenant(institution, work)


async def test_an_erased_resident_is_gone(world: World) -> None:
    institution = world.institution_ids[OTHER]
    pk = await admitted(institution, "删除长者")
    keep = await admitted(institution, "保留长者")

    async def work() -> None:
        await record(pk, capability(70))
        await record(keep, capability(50))
        await destroy_data_key(pk)

    await in_tenant(institution, work)

    async def read() -> None:
        with pytest.raises(Erased):
            await records.list_assessments(pk, None, after_id=None, limit=10)
        with pytest.raises(Erased):
            await records.latest_assessments(pk)
        with pytest.raises(Erased):
            await record(pk, capability(60))
        found = await records.latest_assessments_of([pk, keep])
        assert isinstance(found[pk], Erased)
        kept = found[keep]
        assert isinstance(kept, records.LatestAssessments) and kept.capability is not None

    await in_tenant(institution, read)


async def test_demo_assessments_match_each_residents_care_level(world: World) -> None:
    institution = world.institution_ids[OTHER]
    levels = list(CareLevel)

    async def work() -> None:
        today = institution_today()
        ids = []
        for k in range(40):
            resident = await admit_resident(
                Admission(
                    f"演示长者{k:02d}",
                    Gender.MALE,
                    date(1940, 1, 1),
                    levels[k % 4],
                    today - timedelta(days=30 + 17 * k),
                    Placement(),
                )
            )
            ids.append(resident.id)
        await default_connection().execute_query("DELETE FROM assessment", [])  # as on a fresh tenant
        _, rows = await default_connection().execute_query(
            """SELECT count(*) FILTER (WHERE least($1, coalesce(discharged_on, $1)) - admission_date >= 180)
                      AS long_stay, count(*) AS residents
               FROM resident r WHERE NOT EXISTS
                   (SELECT 1 FROM data_key d WHERE d.subject_id = r.id AND d.wrapped_key IS NULL)""",
            [today],
        )
        started = time.perf_counter()
        written = await records.seed_demo(random.Random(7), today)
        elapsed = time.perf_counter() - started
        long_stay = [pk for k, pk in enumerate(ids) if 30 + 17 * k >= 180]
        assert written == 2 * rows[0]["residents"] + 2 * rows[0]["long_stay"]
        assert elapsed < 0.5 * rows[0]["residents"] / 150 + 0.1, elapsed
        latest = await records.latest_assessments_of(ids)
        for k, pk in enumerate(ids):
            found = latest[pk]
            assert isinstance(found, records.LatestAssessments)
            suggestion = found.suggestion()
            assert suggestion is not None and suggestion.care_level is levels[k % 4], (k, suggestion)
            assert found.capability is not None
            expected = records.Reason.PERIODIC_REVIEW if pk in long_stay else records.Reason.ADMISSION
            assert (found.capability.reason, found.capability.version) == (
                expected,
                2 if pk in long_stay else 1,
            )
            assert found.capability.assessed_on <= today
        raise _RollBack  # leave the institution as it was

    with pytest.raises(_RollBack):
        await in_tenant(institution, work)

"""Stored ability assessments (能力评估) of residents: recorded, versioned, sealed, read back.

The scoring is `care/assessments.py` (GB/T 42195-2022 and the Barthel index): clients send item answers
and, for the capability scale, the inputs of the upgrade rules (diagnoses, risk events); the system scores
them here, and the answers and the computed result are stored as two sealed JSON documents
(migrations/tenant/0009_assessments.sql), each under the resident's data key and bound to the row id.

Versions count 1, 2, 3 … per resident and scale. The resident's row is locked (`FOR NO KEY UPDATE`) before
the next version is taken, so two assessments recorded at the same moment get distinct versions (and a
unique constraint backs it). Rows are never updated: a correction is a new version that `supersedes` the
version it corrects; a superseded version is history, never the latest.

"Latest" of a scale: the assessment not superseded with the latest `assessed_on` (then the highest
version). The care-level suggestion comes from the latest capability assessment, raised by the latest
Barthel index when there is one (`care.assessments.suggest_care_level`); without a capability assessment
there is no suggestion.
"""

import json
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from care.assessments import (
    AdjustmentRule,
    AppliedAdjustment,
    BarthelAssessment,
    BarthelDependency,
    CapabilityAssessment,
    CapabilityLevel,
    CareLevelSuggestion,
    Diagnosis,
    DomainScore,
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
from care.residents import next_ids
from compliance.encryption import DataKeyDestroyed, FieldCipher, field_cipher
from tenants.db import default_connection
from tenants.errors import Conflict, Erased, InvalidInput, NotFound, ValidationFailed, raise_if_any

TABLE = "assessment"
SEALED_COLUMNS: tuple[str, ...] = ("answers", "result")
ERASED = "The personal data of this resident was erased."
MAX_DIAGNOSES = 30
MAX_RISK_EVENTS = 50
MAX_ANSWERS = 100
EARLIEST_BEFORE_ADMISSION = timedelta(days=365)
# Sealed documents are padded with NUL bytes to these blocks, so that a ciphertext's length says little
# about how many diagnoses or rules it holds.
_BLOCK = 256


class Scale(StrEnum):
    CAPABILITY = "capability_gbt42195_2022"  # GB/T 42195-2022 老年人能力评估
    BARTHEL = "barthel"  # Barthel index of activities of daily living


class Reason(StrEnum):
    ADMISSION = "admission"  # 入住评估
    PERIODIC_REVIEW = "periodic_review"  # 定期评估
    CHANGE_IN_CONDITION = "change_in_condition"  # 状况变化后的即时评估
    REASSESSMENT = "reassessment"  # 对护理等级有异议时的复评
    OTHER = "other"


SCALE_LABELS: Mapping[Scale, Label] = {
    Scale.CAPABILITY: Label(
        "老年人能力评估（GB/T 42195-2022）", "older adults' capability (GB/T 42195-2022)"
    ),
    Scale.BARTHEL: Label("巴氏指数（Barthel）", "Barthel index"),
}
REASON_LABELS: Mapping[Reason, Label] = {
    Reason.ADMISSION: Label("入住评估", "admission"),
    Reason.PERIODIC_REVIEW: Label("定期评估", "periodic review"),
    Reason.CHANGE_IN_CONDITION: Label("状况变化评估", "change in condition"),
    Reason.REASSESSMENT: Label("复评（等级异议）", "re-assessment (care-level dispute)"),
    Reason.OTHER: Label("其他", "other"),
}


@dataclass(frozen=True, slots=True)
class Answer:
    item: str
    value: int


@dataclass(frozen=True, slots=True)
class NewAssessment:
    scale: Scale
    assessed_on: date
    reason: Reason
    answers: tuple[Answer, ...]
    diagnoses: tuple[Diagnosis, ...] = ()  # capability scale only: inputs of the diagnosis rule
    risk_events: tuple[RiskEvent, ...] = ()  # capability scale only: inputs of the risk-event rule
    supersedes: int | None = None  # the version (same resident and scale) this one corrects


@dataclass(frozen=True, slots=True)
class AssessmentRecord:
    id: int
    resident_id: int
    scale: Scale
    version: int
    assessed_on: date
    reason: Reason
    supersedes: int | None
    superseded_by: int | None  # the version that corrects this one, if any
    assessor: str
    created_at: datetime
    answers: tuple[Answer, ...]
    diagnoses: tuple[Diagnosis, ...]
    risk_events: tuple[RiskEvent, ...]
    capability: CapabilityAssessment | None  # set for Scale.CAPABILITY
    barthel: BarthelAssessment | None  # set for Scale.BARTHEL


@dataclass(frozen=True, slots=True)
class LatestAssessments:
    capability: AssessmentRecord | None = None
    barthel: AssessmentRecord | None = None

    def all(self) -> tuple[AssessmentRecord, ...]:
        return tuple(record for record in (self.capability, self.barthel) if record is not None)

    def suggestion(self) -> CareLevelSuggestion | None:
        """The care level the latest assessments suggest; None without a capability assessment."""
        if self.capability is None or self.capability.capability is None:
            return None
        barthel = self.barthel.barthel if self.barthel is not None else None
        return suggest_care_level(self.capability.capability.level, barthel)


@dataclass(frozen=True, slots=True)
class ResidentSuggestion:
    """A suggestion beside the care level the resident has now ("suggested: X (current: Y)")."""

    suggestion: CareLevelSuggestion
    current: CareLevel
    capability: AssessmentRecord
    barthel: AssessmentRecord | None

    @property
    def differs(self) -> bool:
        return self.suggestion.care_level != self.current


# Documents ---------------------------------------------------------------------------------------


def _sealable(document: Mapping[str, Any]) -> bytes:
    raw = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode()
    return raw.ljust(-(-len(raw) // _BLOCK) * _BLOCK, b"\0")


def _document(raw: bytes) -> Any:
    return json.loads(raw.rstrip(b"\0").decode())


def _answers_document(new: NewAssessment) -> dict[str, Any]:
    return {
        "answers": [[answer.item, answer.value] for answer in new.answers],
        "diagnoses": [{"icd10": d.icd10, "byPsychiatrist": d.by_psychiatrist} for d in new.diagnoses],
        "riskEvents": [{"kind": e.kind.value, "on": e.occurred_on.isoformat()} for e in new.risk_events],
    }


def _capability_document(result: CapabilityAssessment) -> dict[str, Any]:
    return {
        "total": result.total,
        "domains": [[domain.code, domain.score, domain.max_score] for domain in result.domain_scores],
        "levelBefore": int(result.level_before),
        "level": int(result.level),
        "rulesMet": [rule.value for rule in result.rules_met],
        "adjustments": [
            {
                "rule": adjustment.rule.value,
                "before": int(adjustment.level_before),
                "after": int(adjustment.level_after),
                "basis": list(adjustment.basis),
            }
            for adjustment in result.adjustments
        ],
    }


def _barthel_document(result: BarthelAssessment) -> dict[str, Any]:
    return {
        "total": result.total,
        "scores": [[code, score] for code, score in result.scores],
        "dependency": result.band.dependency.value,
    }


def _capability_of(document: Mapping[str, Any], assessed_on: date) -> CapabilityAssessment:
    """The stored result as computed then; labels from the scale's data (codes are what is stored)."""
    scale = gbt42195_scale()
    labels = {domain.code: domain.label for domain in scale.domains}
    level_before = CapabilityLevel(document["levelBefore"])
    level = CapabilityLevel(document["level"])
    return CapabilityAssessment(
        assessed_on=assessed_on,
        total=document["total"],
        domain_scores=tuple(
            DomainScore(code, labels.get(code, Label(code, code)), score, maximum)
            for code, score, maximum in document["domains"]
        ),
        level_before=level_before,
        label_before=scale.label_of(level_before),
        level=level,
        label=scale.label_of(level),
        rules_met=tuple(AdjustmentRule(rule) for rule in document["rulesMet"]),
        adjustments=tuple(
            AppliedAdjustment(
                AdjustmentRule(entry["rule"]),
                CapabilityLevel(entry["before"]),
                CapabilityLevel(entry["after"]),
                tuple(entry["basis"]),
            )
            for entry in document["adjustments"]
        ),
    )


def _barthel_of(document: Mapping[str, Any]) -> BarthelAssessment:
    dependency = BarthelDependency(document["dependency"])
    band = next(band for band in barthel_scale().bands if band.dependency == dependency)
    return BarthelAssessment(
        total=document["total"],
        scores=tuple((code, score) for code, score in document["scores"]),
        band=band,
    )


# Checks ------------------------------------------------------------------------------------------


def _answers_by_item(answers: Sequence[Answer], problems: list[InvalidInput]) -> dict[str, int]:
    if len(answers) > MAX_ANSWERS:
        problems.append(InvalidInput("At most {max} answers.", field="answers", max=MAX_ANSWERS))
    by_item: dict[str, int] = {}
    repeated: set[str] = set()
    for answer in answers[:MAX_ANSWERS]:
        if answer.item in by_item:
            repeated.add(answer.item)
        by_item[answer.item] = answer.value
    for item in sorted(repeated):
        problems.append(InvalidInput("This item is answered more than once.", field=item))
    return by_item


def score(
    new: NewAssessment, problems: list[InvalidInput]
) -> CapabilityAssessment | BarthelAssessment | None:
    """Score `new` on its scale; every problem found is added to `problems` (then None)."""
    answers = _answers_by_item(new.answers, problems)
    if len(new.diagnoses) > MAX_DIAGNOSES:
        problems.append(InvalidInput("At most {max} diagnoses.", field="diagnoses", max=MAX_DIAGNOSES))
    if len(new.risk_events) > MAX_RISK_EVENTS:
        problems.append(InvalidInput("At most {max} risk events.", field="riskEvents", max=MAX_RISK_EVENTS))
    try:
        if new.scale is Scale.BARTHEL:
            for name, given in (("diagnoses", new.diagnoses), ("riskEvents", new.risk_events)):
                if given:
                    problems.append(
                        InvalidInput(
                            "Only the capability assessment takes diagnoses and risk events.", field=name
                        )
                    )
            return assess_barthel(answers)
        return assess_capability(
            answers, assessed_on=new.assessed_on, diagnoses=new.diagnoses, risk_events=new.risk_events
        )
    except ValidationFailed as failed:
        problems.extend(failed.problems)
        return None


def _check_dates(
    new: NewAssessment, resident: Mapping[str, Any], today: date, problems: list[InvalidInput]
) -> None:
    if new.assessed_on > today:
        problems.append(InvalidInput("The date cannot be in the future.", field="assessedOn"))
    elif new.assessed_on < resident["admission_date"] - EARLIEST_BEFORE_ADMISSION:
        problems.append(
            InvalidInput(
                "An assessment can be dated at most one year before admission ({admitted}).",
                field="assessedOn",
                admitted=resident["admission_date"].isoformat(),
            )
        )
    discharged = resident["discharged_on"]
    if discharged is not None and new.assessed_on > discharged:
        problems.append(
            InvalidInput(
                "The resident was discharged on {discharged}.",
                field="assessedOn",
                discharged=discharged.isoformat(),
            )
        )


async def _check_supersedes(resident_id: int, new: NewAssessment, problems: list[InvalidInput]) -> None:
    if new.supersedes is None:
        return
    rows = await _execute(
        """SELECT a.version, (SELECT min(s.version) FROM assessment s WHERE s.resident_id = a.resident_id
                   AND s.scale = a.scale AND s.supersedes = a.version) AS superseded_by
           FROM assessment a WHERE a.resident_id = $1 AND a.scale = $2 AND a.version = $3""",
        [resident_id, new.scale.value, new.supersedes],
    )
    if not rows:
        problems.append(
            InvalidInput(
                "There is no version {version} of this assessment.",
                field="supersedes",
                version=new.supersedes,
            )
        )
    elif rows[0]["superseded_by"] is not None:
        problems.append(
            InvalidInput(
                "Version {version} was already corrected by version {by}: correct that one.",
                field="supersedes",
                version=new.supersedes,
                by=rows[0]["superseded_by"],
            )
        )


# Storage -----------------------------------------------------------------------------------------


async def _execute(sql: str, parameters: Sequence[object]) -> list[Mapping[str, Any]]:
    return await default_connection().execute_query_dict(sql, list(parameters))


async def _seal(
    cipher: FieldCipher, column: str, row_id: int, resident_id: int, document: Mapping[str, Any]
) -> bytes:
    return await cipher.encrypt(
        _sealable(document), table=TABLE, column=column, row_id=row_id, subject_id=resident_id
    )


async def record_assessment(
    resident_id: int, new: NewAssessment, *, assessor: str, today: date
) -> AssessmentRecord:
    """Check and score `new` as a whole (ValidationFailed with every problem, nothing written), then
    store it as the resident's next version of its scale. NotFound for no such resident, Erased for one
    whose data key was destroyed."""
    rows = await _execute(
        "SELECT id, admission_date, discharged_on FROM resident WHERE id = $1 FOR NO KEY UPDATE",
        [resident_id],
    )
    if not rows:
        raise NotFound("Resident not found.")
    new = replace(new, diagnoses=tuple(replace(d, icd10=d.icd10.strip().upper()) for d in new.diagnoses))
    problems: list[InvalidInput] = []
    _check_dates(new, rows[0], today, problems)
    result = score(new, problems)
    await _check_supersedes(resident_id, new, problems)
    raise_if_any(problems)
    assert result is not None
    cipher = await field_cipher()
    try:
        await cipher.ensure_data_keys([resident_id])
    except DataKeyDestroyed as exc:
        raise Erased(ERASED) from exc
    # The resident row is locked until the unit of work ends: the next version is ours alone.
    (next_version,) = await _execute(
        "SELECT coalesce(max(version), 0) + 1 AS version FROM assessment"
        " WHERE resident_id = $1 AND scale = $2",
        [resident_id, new.scale.value],
    )
    version = int(next_version["version"])
    (row_id,) = await next_ids(TABLE, 1)
    document = (
        _capability_document(result)
        if isinstance(result, CapabilityAssessment)
        else _barthel_document(result)
    )
    stored = await _execute(
        """INSERT INTO assessment (id, resident_id, scale, version, assessed_on, reason, supersedes, assessor,
                                  answers, result)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING created_at""",
        [
            row_id,
            resident_id,
            new.scale.value,
            version,
            new.assessed_on,
            new.reason.value,
            new.supersedes,
            assessor,
            await _seal(cipher, "answers", row_id, resident_id, _answers_document(new)),
            await _seal(cipher, "result", row_id, resident_id, document),
        ],
    )
    return AssessmentRecord(
        id=row_id,
        resident_id=resident_id,
        scale=new.scale,
        version=version,
        assessed_on=new.assessed_on,
        reason=new.reason,
        supersedes=new.supersedes,
        superseded_by=None,
        assessor=assessor,
        created_at=stored[0]["created_at"],
        answers=tuple(new.answers),
        diagnoses=tuple(new.diagnoses),
        risk_events=tuple(new.risk_events),
        capability=result if isinstance(result, CapabilityAssessment) else None,
        barthel=result if isinstance(result, BarthelAssessment) else None,
    )


_COLUMNS = """a.id, a.resident_id, a.scale, a.version, a.assessed_on, a.reason, a.supersedes, a.assessor,
    a.created_at, a.answers, a.result,
    (SELECT min(s.version) FROM assessment s WHERE s.resident_id = a.resident_id
     AND s.scale = a.scale AND s.supersedes = a.version) AS superseded_by"""


async def _open(cipher: FieldCipher, row: Mapping[str, Any]) -> AssessmentRecord:
    """One row decrypted; DataKeyDestroyed for an erased resident, CiphertextRejected for a ciphertext
    that is not this row's."""
    opened: dict[str, Any] = {}
    for column in SEALED_COLUMNS:
        raw = await cipher.decrypt(
            row[column], table=TABLE, column=column, row_id=row["id"], subject_id=row["resident_id"]
        )
        opened[column] = _document(raw)
    scale = Scale(row["scale"])
    given = opened["answers"]
    return AssessmentRecord(
        id=row["id"],
        resident_id=row["resident_id"],
        scale=scale,
        version=row["version"],
        assessed_on=row["assessed_on"],
        reason=Reason(row["reason"]),
        supersedes=row["supersedes"],
        superseded_by=row["superseded_by"],
        assessor=row["assessor"],
        created_at=row["created_at"],
        answers=tuple(Answer(item, value) for item, value in given["answers"]),
        diagnoses=tuple(Diagnosis(d["icd10"], d["byPsychiatrist"]) for d in given["diagnoses"]),
        risk_events=tuple(
            RiskEvent(RiskEventKind(e["kind"]), date.fromisoformat(e["on"])) for e in given["riskEvents"]
        ),
        capability=_capability_of(opened["result"], row["assessed_on"])
        if scale is Scale.CAPABILITY
        else None,
        barthel=_barthel_of(opened["result"]) if scale is Scale.BARTHEL else None,
    )


async def _opened(rows: Sequence[Mapping[str, Any]]) -> list[AssessmentRecord]:
    cipher = await field_cipher()
    await cipher.load_data_keys(row["resident_id"] for row in rows)
    try:
        return [await _open(cipher, row) for row in rows]
    except DataKeyDestroyed as exc:
        raise Erased(ERASED) from exc


async def require_resident(resident_id: int) -> None:
    if not await _execute("SELECT 1 FROM resident WHERE id = $1", [resident_id]):
        raise NotFound("Resident not found.")


async def list_assessments(
    resident_id: int, scale: Scale | None, *, after_id: int | None, limit: int
) -> list[AssessmentRecord]:
    """The resident's assessments, newest first (assessed_on, then id, descending; superseded versions
    included), after the assessment `after_id` of the previous page. Erased for an erased resident."""
    conditions, parameters = _where(resident_id, scale)
    if after_id is not None:
        parameters.append(after_id)
        conditions.append(
            f"(a.assessed_on, a.id) < (SELECT c.assessed_on, c.id FROM assessment c"
            f" WHERE c.id = ${len(parameters)} AND c.resident_id = $1)"
        )
    parameters.append(limit)
    rows = await _execute(
        f"SELECT {_COLUMNS} FROM assessment a WHERE {' AND '.join(conditions)}"
        f" ORDER BY a.assessed_on DESC, a.id DESC LIMIT ${len(parameters)}",
        parameters,
    )
    return await _opened(rows)


def _where(resident_id: int, scale: Scale | None) -> tuple[list[str], list[object]]:
    conditions, parameters = ["a.resident_id = $1"], [resident_id]
    if scale is not None:
        parameters.append(scale.value)
        conditions.append(f"a.scale = ${len(parameters)}")
    return conditions, parameters


async def count_assessments(resident_id: int, scale: Scale | None) -> int:
    conditions, parameters = _where(resident_id, scale)
    rows = await _execute(
        f"SELECT count(*) AS n FROM assessment a WHERE {' AND '.join(conditions)}", parameters
    )
    return int(rows[0]["n"])


async def get_assessment(assessment_id: int) -> AssessmentRecord:
    rows = await _execute(f"SELECT {_COLUMNS} FROM assessment a WHERE a.id = $1", [assessment_id])
    if not rows:
        raise NotFound("Not found.")
    (record,) = await _opened(rows)
    return record


async def latest_assessments_of(resident_ids: Iterable[int]) -> dict[int, LatestAssessments | Erased]:
    """The latest assessment of each scale of several residents: one query, one for their data keys.
    An erased resident with assessments maps to an `Erased` error (its assessments no longer open)."""
    wanted = sorted(set(resident_ids))
    found: dict[int, LatestAssessments | Erased] = {
        resident_id: LatestAssessments() for resident_id in wanted
    }
    if not wanted:
        return found
    rows = await _execute(
        f"""SELECT DISTINCT ON (a.resident_id, a.scale) {_COLUMNS} FROM assessment a
            WHERE a.resident_id = ANY($1::bigint[])
              AND NOT EXISTS (SELECT 1 FROM assessment s WHERE s.resident_id = a.resident_id
                              AND s.scale = a.scale AND s.supersedes = a.version)
            ORDER BY a.resident_id, a.scale, a.assessed_on DESC, a.version DESC""",
        [wanted],
    )
    cipher = await field_cipher()
    await cipher.load_data_keys(wanted)
    opened: dict[int, dict[Scale, AssessmentRecord]] = {}
    for row in rows:
        resident_id = row["resident_id"]
        if isinstance(found[resident_id], Erased):
            continue
        try:
            record = await _open(cipher, row)
        except DataKeyDestroyed:
            found[resident_id] = Erased(ERASED)
            continue
        opened.setdefault(resident_id, {})[record.scale] = record
    for resident_id, by_scale in opened.items():
        if not isinstance(found[resident_id], Erased):
            found[resident_id] = LatestAssessments(
                by_scale.get(Scale.CAPABILITY), by_scale.get(Scale.BARTHEL)
            )
    return found


async def latest_assessments(resident_id: int) -> LatestAssessments:
    latest = (await latest_assessments_of([resident_id]))[resident_id]
    if isinstance(latest, Erased):
        raise latest
    return latest


async def current_care_level(resident_id: int) -> CareLevel:
    rows = await _execute("SELECT care_level FROM resident WHERE id = $1", [resident_id])
    if not rows:
        raise NotFound("Resident not found.")
    return CareLevel(rows[0]["care_level"])


def resident_suggestion(latest: LatestAssessments, current: CareLevel) -> ResidentSuggestion | None:
    suggestion = latest.suggestion()
    if suggestion is None or latest.capability is None:
        return None
    return ResidentSuggestion(suggestion, current, latest.capability, latest.barthel)


async def suggestion_to_apply(resident_id: int, assessment_id: int) -> ResidentSuggestion:
    """The suggestion of the resident's latest assessments, provided `assessment_id` is its latest
    capability or Barthel assessment (the one the operator looked at): CONFLICT when a newer one was
    recorded meanwhile, NotFound when it is not this resident's."""
    rows = await _execute(
        "SELECT 1 FROM assessment WHERE id = $1 AND resident_id = $2", [assessment_id, resident_id]
    )
    if not rows:
        raise NotFound("Not found.", field="assessmentId")
    latest = await latest_assessments(resident_id)
    if assessment_id not in {record.id for record in latest.all()}:
        raise Conflict("A newer assessment was recorded: look at its suggestion first.", field="assessmentId")
    found = resident_suggestion(latest, await current_care_level(resident_id))
    if found is None:
        raise Conflict(
            "There is no capability assessment to suggest a care level from.", field="assessmentId"
        )
    return found


# Demo data ---------------------------------------------------------------------------------------

# The GB/T total each care level's demo residents are drawn from (consistent with DEFAULT_CARE_LEVEL_MAP)
# and the Barthel total (consistent with DEFAULT_BARTHEL_CARE_LEVEL_MAP, never raising the suggestion).
_DEMO_TOTALS: Mapping[CareLevel, tuple[int, int]] = {
    CareLevel.SELF_CARE: (90, 90),
    CareLevel.ASSISTED: (50, 86),
    CareLevel.FULL_CARE: (31, 45),
    CareLevel.SPECIAL_CARE: (6, 28),
}
_DEMO_BARTHEL: Mapping[CareLevel, tuple[int, int]] = {
    CareLevel.SELF_CARE: (100, 100),
    CareLevel.ASSISTED: (45, 95),
    CareLevel.FULL_CARE: (5, 40),
    CareLevel.SPECIAL_CARE: (0, 25),
}
_DEMO_ASSESSORS = ("demo:seed",)  # who assessed: a principal subject, as the API records it
_LONG_STAY = timedelta(days=180)


def _demo_capability(rng: random.Random, care_level: CareLevel) -> dict[str, int]:
    """Answers whose total lies in the care level's range: every item at its best, then points taken
    one by one from random items (physical items more often than perception, as in frail elders)."""
    items = gbt42195_scale().items
    answers = {item.code: item.max_score for item in items}
    low, high = _DEMO_TOTALS[care_level]
    deficit = sum(answers.values()) - rng.randint(low, high)
    weights = [3 if item.code.startswith(("B1", "B2")) else 1 for item in items]
    while deficit > 0:
        item = rng.choices(items, weights)[0]
        floor = 1 if item.code == "B3.9" and care_level is not CareLevel.SPECIAL_CARE else 0
        if answers[item.code] > floor:
            answers[item.code] -= 1
            deficit -= 1
    return answers


def _demo_barthel(rng: random.Random, care_level: CareLevel) -> dict[str, int]:
    items = barthel_scale().items
    answers = {item.code: max(item.allowed) for item in items}
    low, high = _DEMO_BARTHEL[care_level]
    target = rng.randint(low, high)
    while sum(answers.values()) > target:
        item = rng.choice(items)
        lower = [value for value in item.allowed if value < answers[item.code]]
        if lower:
            answers[item.code] = max(lower)
    return answers


def _demo_assessments(
    rng: random.Random, today: date, resident: Mapping[str, Any]
) -> list[tuple[NewAssessment, CapabilityAssessment | BarthelAssessment]]:
    care_level = CareLevel(resident["care_level"])
    admitted: date = resident["admission_date"]
    last_day = min(today, resident["discharged_on"] or today)
    first_day = min(admitted - timedelta(days=rng.randint(0, 7)), last_day)
    days = [(first_day, Reason.ADMISSION)]
    if last_day - admitted >= _LONG_STAY:
        days.append((admitted + _LONG_STAY + timedelta(days=rng.randint(0, 20)), Reason.PERIODIC_REVIEW))
    made: list[tuple[NewAssessment, CapabilityAssessment | BarthelAssessment]] = []
    for day, reason in days:
        day = min(day, last_day)
        answers = _demo_capability(rng, care_level)
        capability = NewAssessment(
            Scale.CAPABILITY, day, reason, tuple(Answer(code, value) for code, value in answers.items())
        )
        made.append((capability, assess_capability(answers, assessed_on=day)))
        barthel_answers = _demo_barthel(rng, care_level)
        barthel = NewAssessment(
            Scale.BARTHEL, day, reason, tuple(Answer(code, value) for code, value in barthel_answers.items())
        )
        made.append((barthel, assess_barthel(barthel_answers)))
    return made


async def seed_demo(rng: random.Random, today: date) -> int:
    """An admission assessment (GB/T 42195 and Barthel) for every resident, consistent with its care
    level, and a periodic re-assessment for residents who stayed at least 180 days; bulk, sealed.
    Residents whose data key was destroyed are skipped. Returns the rows written."""
    residents = await _execute(
        "SELECT id, care_level, admission_date, status, discharged_on FROM resident ORDER BY id", []
    )
    planned: list[tuple[int, NewAssessment, CapabilityAssessment | BarthelAssessment]] = [
        (row["id"], new, result) for row in residents for new, result in _demo_assessments(rng, today, row)
    ]
    if not planned:
        return 0
    cipher = await field_cipher()
    await cipher.load_data_keys(row["id"] for row in residents)
    ids = await next_ids(TABLE, len(planned))
    versions: dict[tuple[int, Scale], int] = {}
    columns: dict[str, list[Any]] = {
        name: []
        for name in (
            "id",
            "resident_id",
            "scale",
            "version",
            "assessed_on",
            "reason",
            "assessor",
            "answers",
            "result",
        )
    }
    for row_id, (resident_id, new, result) in zip(ids, planned, strict=True):
        document = (
            _capability_document(result)
            if isinstance(result, CapabilityAssessment)
            else _barthel_document(result)
        )
        try:
            answers = await _seal(cipher, "answers", row_id, resident_id, _answers_document(new))
            sealed_result = await _seal(cipher, "result", row_id, resident_id, document)
        except DataKeyDestroyed:
            continue
        version = versions[(resident_id, new.scale)] = versions.get((resident_id, new.scale), 0) + 1
        for name, value in (
            ("id", row_id),
            ("resident_id", resident_id),
            ("scale", new.scale.value),
            ("version", version),
            ("assessed_on", new.assessed_on),
            ("reason", new.reason.value),
            ("assessor", rng.choice(_DEMO_ASSESSORS)),
            ("answers", answers),
            ("result", sealed_result),
        ):
            columns[name].append(value)
    await _execute(
        """INSERT INTO assessment
               (id, resident_id, scale, version, assessed_on, reason, assessor, answers, result)
           SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::varchar[], $4::int[], $5::date[],
                                $6::varchar[], $7::varchar[], $8::bytea[], $9::bytea[])""",
        list(columns.values()),
    )
    return len(columns["id"])

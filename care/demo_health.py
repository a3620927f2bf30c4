"""Demo health data: diagnoses, medications, allergies and a week of vital signs for the residents in
residence, sealed as the product seals them and bulk-inserted (one INSERT per table).

The conditions are the common ones of a Chinese nursing home, each with the drugs usually prescribed for
it (generic names, usual adult doses), so that a record reads as a clinician would expect; vital signs
follow the conditions (a resident with hypertension has higher pressures, one with diabetes has glucose
measured). Runs inside the institution's unit of work, after its residents exist (care/demo.py).
"""

import json
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

from care.health_record import (
    DOCUMENT_COLUMN,
    SEALED_COLUMNS,
    AllergySeverity,
    DoseUnit,
    Frequency,
    Route,
    entry_document,
)
from care.residents import next_ids
from care.vitals import (
    DEFAULT_RANGES,
    READING_COLUMN,
    READING_TABLE,
    GlucoseContext,
    Measure,
    flag_of,
    range_document,
)
from compliance.encryption import FieldCipher, field_cipher
from tenants.context import current_tenant
from tenants.db import default_connection

SEEDED_BY = "demo:seed"


@dataclass(frozen=True, slots=True)
class _Drug:
    name: str
    amount: str
    unit: DoseUnit
    route: Route
    frequency: Frequency


@dataclass(frozen=True, slots=True)
class _Condition:
    name: str
    icd10: str
    weight: int
    drugs: tuple[_Drug, ...]
    note: str | None = None


_ORAL = Route.ORAL
CONDITIONS = (
    _Condition(
        "原发性高血压",
        "I10",
        55,
        (
            _Drug("苯磺酸氨氯地平片", "5", DoseUnit.MG, _ORAL, Frequency.ONCE_DAILY),
            _Drug("缬沙坦胶囊", "80", DoseUnit.MG, _ORAL, Frequency.ONCE_DAILY),
        ),
        "晨起血压偏高，低盐饮食",
    ),
    _Condition(
        "2型糖尿病",
        "E11.9",
        28,
        (
            _Drug("二甲双胍缓释片", "0.5", DoseUnit.G, _ORAL, Frequency.TWICE_DAILY),
            _Drug("阿卡波糖片", "50", DoseUnit.MG, _ORAL, Frequency.THREE_TIMES_DAILY),
        ),
        "糖尿病饮食，监测空腹血糖",
    ),
    _Condition(
        "冠状动脉粥样硬化性心脏病",
        "I25.1",
        22,
        (
            _Drug("阿司匹林肠溶片", "100", DoseUnit.MG, _ORAL, Frequency.ONCE_DAILY),
            _Drug("阿托伐他汀钙片", "20", DoseUnit.MG, _ORAL, Frequency.AT_NIGHT),
        ),
    ),
    _Condition(
        "阿尔茨海默病",
        "G30.9",
        14,
        (_Drug("盐酸多奈哌齐片", "5", DoseUnit.MG, _ORAL, Frequency.AT_NIGHT),),
        "近期记忆减退，需防走失",
    ),
    _Condition(
        "脑梗死后遗症",
        "I69.3",
        16,
        (_Drug("硫酸氢氯吡格雷片", "75", DoseUnit.MG, _ORAL, Frequency.ONCE_DAILY),),
        "左侧肢体乏力，康复训练中",
    ),
    _Condition(
        "骨质疏松症",
        "M81.9",
        20,
        (
            _Drug("碳酸钙D3片", "600", DoseUnit.MG, _ORAL, Frequency.ONCE_DAILY),
            _Drug("阿仑膦酸钠片", "70", DoseUnit.MG, _ORAL, Frequency.WEEKLY),
        ),
    ),
    _Condition(
        "慢性阻塞性肺疾病",
        "J44.9",
        9,
        (_Drug("噻托溴铵粉吸入剂", "18", DoseUnit.MCG, Route.INHALED, Frequency.ONCE_DAILY),),
    ),
    _Condition(
        "帕金森病", "G20", 6, (_Drug("多巴丝肼片", "125", DoseUnit.MG, _ORAL, Frequency.THREE_TIMES_DAILY),)
    ),
    _Condition(
        "慢性心力衰竭", "I50.9", 7, (_Drug("呋塞米片", "20", DoseUnit.MG, _ORAL, Frequency.ONCE_DAILY),)
    ),
    _Condition(
        "失眠", "G47.0", 12, (_Drug("艾司唑仑片", "1", DoseUnit.MG, _ORAL, Frequency.AS_NEEDED),), None
    ),
    _Condition("白内障", "H25.9", 10, (), "双眼视物模糊，已预约手术评估"),
)
ALLERGIES = (
    ("青霉素", "全身皮疹", AllergySeverity.SEVERE, 8),
    ("磺胺类药物", "荨麻疹", AllergySeverity.MODERATE, 4),
    ("头孢类抗生素", "皮肤瘙痒", AllergySeverity.MODERATE, 3),
    ("海鲜", "口唇肿胀", AllergySeverity.MILD, 5),
    ("花粉", "打喷嚏、流涕", AllergySeverity.MILD, 3),
    ("阿司匹林", "哮喘发作", AllergySeverity.SEVERE, 1),
)
PRESCRIBER_SURNAMES = "王李张刘陈杨黄赵周吴"
VITAL_DAYS = 7


async def _residents_in_residence() -> list[dict]:
    return await default_connection().execute_query_dict(
        "SELECT id, admission_date FROM resident WHERE status = 'in_residence' ORDER BY id"
    )


async def _insert(cipher: FieldCipher, table: str, rows: list[dict[str, object]]) -> int:
    """Seal each row's SEALED_COLUMNS as its document (as care/health_record.py writes an entry), take
    their ids, one INSERT for all."""
    if not rows:
        return 0
    ids = await next_ids(table, len(rows))
    sealed_columns = SEALED_COLUMNS[table]
    for row_id, row in zip(ids, rows, strict=True):
        row["id"] = row_id
        values = {column: row.pop(column) for column in sealed_columns}
        row[DOCUMENT_COLUMN] = await cipher.encrypt(
            entry_document({k: None if v is None else str(v) for k, v in values.items()}),
            table=table,
            column=DOCUMENT_COLUMN,
            row_id=row_id,
            subject_id=row["resident_id"],
        )
    columns = list(rows[0])
    types = {column: _SQL_TYPES.get(column, "text") for column in columns}
    types[DOCUMENT_COLUMN] = "bytea"
    selects = ", ".join(f"${n}::{types[c]}[]" for n, c in enumerate(columns, start=1))
    # Table and column names are this module's, never input.
    await default_connection().execute_query(
        f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM unnest({selects})",
        [[row[c] for row in rows] for c in columns],
    )
    return len(rows)


_SQL_TYPES = {
    "id": "bigint",
    "resident_id": "bigint",
    "diagnosed_on": "date",
    "resolved_on": "date",
    "started_on": "date",
    "ended_on": "date",
    "measured_at": "timestamptz",
}


async def seed_health_records(rng: random.Random, today: date) -> int:
    """Diagnoses (one to four), their medications and sometimes an allergy for each resident in
    residence. Returns the rows written."""
    cipher = await field_cipher()
    residents = await _residents_in_residence()
    diagnoses: list[dict[str, object]] = []
    medications: list[dict[str, object]] = []
    allergies: list[dict[str, object]] = []
    weights = [c.weight for c in CONDITIONS]
    for resident in residents:
        admitted: date = resident["admission_date"]
        chosen = {c.icd10: c for c in rng.choices(CONDITIONS, weights, k=rng.choice((1, 2, 2, 3, 4)))}
        for condition in chosen.values():
            diagnosed = admitted - timedelta(days=rng.randrange(60, 3650))
            diagnoses.append(
                {
                    "resident_id": resident["id"],
                    "condition": condition.name,
                    "icd10": condition.icd10,
                    "note": condition.note if rng.random() < 0.6 else None,
                    "diagnosed_on": diagnosed,
                    "resolved_on": None,
                    "recorded_by": SEEDED_BY,
                }
            )
            for drug in condition.drugs:
                if rng.random() < 0.25:
                    continue  # not every patient takes every usual drug
                started = max(diagnosed, admitted - timedelta(days=rng.randrange(0, 400)))
                ended = None
                if rng.random() < 0.12 and (today - started).days > 30:
                    ended = started + timedelta(days=rng.randrange(14, (today - started).days))
                medications.append(
                    {
                        "resident_id": resident["id"],
                        "drug": drug.name,
                        "dose": f"{drug.amount} {drug.unit.value}",
                        "route": drug.route.value,
                        "frequency": drug.frequency.value,
                        "prescriber": f"{rng.choice(PRESCRIBER_SURNAMES)}医生",
                        "started_on": started,
                        "ended_on": ended,
                        "recorded_by": SEEDED_BY,
                    }
                )
        if rng.random() < 0.22:
            substance, reaction, severity, _ = rng.choices(ALLERGIES, [a[3] for a in ALLERGIES])[0]
            allergies.append(
                {
                    "resident_id": resident["id"],
                    "substance": substance,
                    "reaction": reaction,
                    "severity": severity.value,
                    "recorded_by": SEEDED_BY,
                }
            )
    await cipher.ensure_data_keys(r["id"] for r in residents)
    return (
        await _insert(cipher, "diagnosis", diagnoses)
        + await _insert(cipher, "medication", medications)
        + await _insert(cipher, "allergy", allergies)
    )


def _reading(
    measure: Measure, value: Decimal, diastolic: Decimal | None, context: GlucoseContext | None
) -> str:
    normal = DEFAULT_RANGES[(measure, context)]
    flag = flag_of(value, diastolic, normal)
    document = {
        "v": str(value),
        "d": None if diastolic is None else str(diastolic),
        "c": context.value if context else None,
        "f": flag.value if flag else None,
        "r": range_document(normal),
    }
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False)


async def seed_vitals(rng: random.Random, today: date) -> int:
    """A week of vital signs for each resident in residence: blood pressure and heart rate every
    morning, SpO2 and temperature most days, fasting glucose for diabetics, weight once. Values follow
    the resident's conditions, so some are flagged. Returns the readings written."""
    cipher = await field_cipher()
    zone = ZoneInfo(current_tenant().time_zone)
    conditions = await default_connection().execute_query_dict(
        "SELECT DISTINCT resident_id FROM diagnosis WHERE recorded_by = $1", [SEEDED_BY]
    )
    has_diagnosis = {row["resident_id"] for row in conditions}
    readings: list[tuple[int, Measure, datetime, str]] = []
    for resident in await _residents_in_residence():
        rid = resident["id"]
        hypertensive = rid in has_diagnosis and rng.random() < 0.55
        diabetic = rid in has_diagnosis and rng.random() < 0.3
        weight = Decimal(rng.randint(40, 78))
        first_day = max(resident["admission_date"], today - timedelta(days=VITAL_DAYS - 1))
        day = first_day
        while day <= today:
            morning = datetime.combine(day, time(7, rng.randrange(0, 50)), zone).astimezone(UTC)
            systolic = rng.randint(128, 168) if hypertensive else rng.randint(104, 136)
            diastolic = rng.randint(78, 98) if hypertensive else rng.randint(62, 86)
            measured = [
                (
                    Measure.BLOOD_PRESSURE,
                    _reading(Measure.BLOOD_PRESSURE, Decimal(systolic), Decimal(diastolic), None),
                ),
                (
                    Measure.HEART_RATE,
                    _reading(Measure.HEART_RATE, Decimal(rng.randint(56, 102)), None, None),
                ),
            ]
            if rng.random() < 0.8:
                spo2 = Decimal(rng.choice((93, 95, 96, 97, 97, 98, 98, 99)))
                measured.append((Measure.SPO2, _reading(Measure.SPO2, spo2, None, None)))
            if rng.random() < 0.7:
                temperature = Decimal(rng.choice(("36.2", "36.4", "36.5", "36.6", "36.8", "37.0", "37.4")))
                measured.append((Measure.TEMPERATURE, _reading(Measure.TEMPERATURE, temperature, None, None)))
            if diabetic:
                glucose = Decimal(rng.choice(("5.6", "6.4", "7.1", "7.8", "8.6")))
                measured.append(
                    (Measure.GLUCOSE, _reading(Measure.GLUCOSE, glucose, None, GlucoseContext.FASTING))
                )
            if day == today - timedelta(days=2) or (
                day == first_day and first_day > today - timedelta(days=2)
            ):
                measured.append((Measure.WEIGHT, _reading(Measure.WEIGHT, weight, None, None)))
            readings += [(rid, measure, morning, document) for measure, document in measured]
            day += timedelta(days=1)
    if not readings:
        return 0
    await cipher.ensure_data_keys({rid for rid, *_ in readings})
    ids = await next_ids(READING_TABLE, len(readings))
    sealed = [
        await cipher.encrypt(
            document, table=READING_TABLE, column=READING_COLUMN, row_id=row_id, subject_id=rid
        )
        for row_id, (rid, _, _, document) in zip(ids, readings, strict=True)
    ]
    await default_connection().execute_query(
        f"""INSERT INTO {READING_TABLE} (id, resident_id, measure, measured_at, recorded_by, source, reading)
            SELECT id, resident_id, measure, measured_at, $5, 'staff', reading
            FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::timestamptz[], $6::bytea[])
                 AS r (id, resident_id, measure, measured_at, reading)""",
        [
            ids,
            [rid for rid, *_ in readings],
            [measure.value for _, measure, _, _ in readings],
            [at for _, _, at, _ in readings],
            SEEDED_BY,
            sealed,
        ],
    )
    return len(readings)

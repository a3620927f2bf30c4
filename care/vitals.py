"""Vital signs: recording a reading, per-resident normal ranges, lists, chart series, latest values.

Every function runs inside the caller's tenant unit of work (`tenants.unit_of_work`); who may call which
is decided by the resolvers (`compliance.policy`: vitals.view, vitals.record, vital_ranges.set).

Measures, units, precision and plausible physical limits
--------------------------------------------------------
| measure        | unit    | stored as          | accepted (outside: an input error)                  |
| blood pressure | mmHg    | integers           | systolic 40–300, diastolic 20–200, systolic > diast. |
| glucose        | mmol/L  | 1 decimal          | 1.0–35.0 (mg/dL numbers such as 108 are refused)     |
| heart rate     | bpm     | integer            | 20–250                                               |
| temperature    | °C      | 1 decimal          | 30.0–43.0 (45 °C is a typo or °F confusion)          |
| SpO2           | %       | integer            | 50–100                                               |
| weight         | kg      | 1 decimal          | 20.0–300.0 (grams and pounds above 300 are refused)  |

Values are rounded half-up to the stored precision before any check (a device sending 36.55 °C records
36.6). The limits are wide on purpose: they catch wrong units and typing errors, never a real value of a
very sick person (a hypothermic 31 °C, a SpO2 of 70 % are accepted and flagged LOW).

Default normal ranges and where they come from
----------------------------------------------
Bounds are inclusive: a reading is NORMAL when low ≤ value ≤ high, LOW below low, HIGH above high; a bound
left out does not apply. "Below 140" is stored as high 139 for an integer measure (the same thing).

- Blood pressure: systolic 90–139, diastolic 60–89 mmHg. Hypertension is ≥ 140 and/or ≥ 90 (中国高血压
  防治指南 2018, ESH/ESC 2018); hypotension is commonly taken as < 90/60. A reading is HIGH when either
  value is above its range, else LOW when either is below, else NORMAL.
- Glucose (needs its context): fasting 3.9–6.1 mmol/L, post-meal (2 h) 3.9–7.7 mmol/L, i.e. below 7.8
  (中国2型糖尿病防治指南 2020 / WHO: impaired glucose tolerance from 7.8 two hours after a meal;
  hypoglycaemia below 3.9). The fasting upper bound 6.1 follows the reference range printed by Chinese
  laboratories (3.9–6.1); WHO counts 6.1 itself as impaired fasting glucose — a doctor who wants that
  sets the resident's range to high 6.0.
- Heart rate: 60–100 bpm (resting adult; bradycardia < 60, tachycardia > 100).
- Temperature: 36.0–37.3 °C (axillary, as measured in Chinese institutions; fever above 37.3).
- SpO2: at least 95 %, no upper bound.
- Weight: no default range (only a resident's own range flags it); readings without a range have no flag.

A resident's own range (`set_range`, action vital_ranges.set: head nurses and doctors) replaces the
default for that measure (for glucose, for that context) wholesale: bounds it leaves out do not apply.
Each reading keeps the flag and the range it was judged against when it was recorded; changing a range
later does not re-flag old readings.

Storage and encryption
----------------------
`vital_reading` (migrations/tenant/0004_vitals.sql) keeps in plaintext only what queries need: resident,
measure, measured_at, who recorded it (principal subject, source, client id). Everything the reading says
— value(s), glucose context, flag, range used — is one JSON document sealed with the resident's data key
(`vital_reading.reading`, row id = reading id): one AEAD operation per reading. Per-resident ranges are
sealed too (`vital_range.bounds`, row id = "measure:context"). Lists, series and latest values load the
data keys of all their residents in one query, then decrypt in one pass.
"""

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from enum import StrEnum

from tortoise.backends.base.client import BaseDBAsyncClient

from care.models import Resident
from care.residents import next_ids
from compliance.encryption import DataKeyDestroyed, field_cipher
from tenants.errors import Conflict, InvalidInput, NotFound, raise_if_any

READING_TABLE, READING_COLUMN = "vital_reading", "reading"
RANGE_TABLE, RANGE_COLUMN = "vital_range", "bounds"
FUTURE_TOLERANCE = timedelta(minutes=5)  # device and phone clocks drift
DEFAULT_SERIES_POINTS = 200
MAX_SERIES_POINTS = 1_000
MAX_SERIES_READINGS = 20_000  # values are encrypted: a series decrypts every reading of its range
DEFAULT_SERIES_DAYS = 30


class Measure(StrEnum):
    BLOOD_PRESSURE = "blood_pressure"
    GLUCOSE = "glucose"
    HEART_RATE = "heart_rate"
    TEMPERATURE = "temperature"
    SPO2 = "spo2"
    WEIGHT = "weight"


class GlucoseContext(StrEnum):
    FASTING = "fasting"
    POST_MEAL = "post_meal"


class Flag(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"


class Source(StrEnum):
    STAFF = "staff"
    INTEGRATOR = "integrator"


class RangeOrigin(StrEnum):
    DEFAULT = "default"
    RESIDENT = "resident"


def _d(text: str) -> Decimal:
    return Decimal(text)


@dataclass(frozen=True, slots=True)
class NormalRange:
    """Inclusive bounds of NORMAL; None: that side is not checked. For blood pressure, low/high are the
    systolic bounds and diastolic_low/diastolic_high the diastolic ones."""

    low: Decimal | None = None
    high: Decimal | None = None
    diastolic_low: Decimal | None = None
    diastolic_high: Decimal | None = None
    origin: RangeOrigin = RangeOrigin.DEFAULT

    @property
    def empty(self) -> bool:
        return all(b is None for b in (self.low, self.high, self.diastolic_low, self.diastolic_high))


@dataclass(frozen=True, slots=True)
class MeasureSpec:
    unit: str
    places: int  # decimals kept
    limits: tuple[Decimal, Decimal]  # plausible physical values (systolic for blood pressure)
    diastolic_limits: tuple[Decimal, Decimal] | None = None


SPECS: dict[Measure, MeasureSpec] = {
    Measure.BLOOD_PRESSURE: MeasureSpec("mmHg", 0, (_d("40"), _d("300")), (_d("20"), _d("200"))),
    Measure.GLUCOSE: MeasureSpec("mmol/L", 1, (_d("1.0"), _d("35.0"))),
    Measure.HEART_RATE: MeasureSpec("bpm", 0, (_d("20"), _d("250"))),
    Measure.TEMPERATURE: MeasureSpec("°C", 1, (_d("30.0"), _d("43.0"))),
    Measure.SPO2: MeasureSpec("%", 0, (_d("50"), _d("100"))),
    Measure.WEIGHT: MeasureSpec("kg", 1, (_d("20.0"), _d("300.0"))),
}

# (measure, glucose context or None) -> default normal range; sources in the module docstring.
DEFAULT_RANGES: dict[tuple[Measure, GlucoseContext | None], NormalRange] = {
    (Measure.BLOOD_PRESSURE, None): NormalRange(_d("90"), _d("139"), _d("60"), _d("89")),
    (Measure.GLUCOSE, GlucoseContext.FASTING): NormalRange(_d("3.9"), _d("6.1")),
    (Measure.GLUCOSE, GlucoseContext.POST_MEAL): NormalRange(_d("3.9"), _d("7.7")),
    (Measure.HEART_RATE, None): NormalRange(_d("60"), _d("100")),
    (Measure.TEMPERATURE, None): NormalRange(_d("36.0"), _d("37.3")),
    (Measure.SPO2, None): NormalRange(_d("95"), None),
    (Measure.WEIGHT, None): NormalRange(),
}


@dataclass(frozen=True, slots=True)
class NewReading:
    measure: Measure
    value: Decimal | None = None  # every measure but blood pressure
    systolic: Decimal | None = None
    diastolic: Decimal | None = None
    context: GlucoseContext | None = None  # glucose only, and then required
    measured_at: datetime | None = None  # None: now; otherwise with its UTC offset


@dataclass(frozen=True, slots=True)
class Recorder:
    subject: str  # the principal's subject: account:<id> or client:<client_id>
    source: Source
    client_id: str | None = None


@dataclass(frozen=True, slots=True)
class Reading:
    id: int
    resident_id: int
    measure: Measure
    measured_at: datetime
    recorded_at: datetime
    source: Source
    value: Decimal  # the systolic pressure for blood pressure
    diastolic: Decimal | None
    context: GlucoseContext | None
    flag: Flag | None  # None: no range applied (weight without a resident range)
    range: NormalRange


@dataclass(frozen=True, slots=True)
class NewRange:
    """Bounds left as None are not checked; all four None: back to the default range."""

    measure: Measure
    context: GlucoseContext | None = None
    low: Decimal | None = None
    high: Decimal | None = None
    diastolic_low: Decimal | None = None
    diastolic_high: Decimal | None = None


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """One point of a chart: a single reading (count 1, start = end = its time) or, when the range holds
    more readings than points, every reading of a time bucket [start, end)."""

    start: datetime
    end: datetime
    count: int
    min: Decimal
    mean: Decimal
    max: Decimal
    diastolic_min: Decimal | None
    diastolic_mean: Decimal | None
    diastolic_max: Decimal | None
    low_count: int
    high_count: int


@dataclass(frozen=True, slots=True)
class Series:
    measure: Measure
    start: datetime
    end: datetime
    reading_count: int
    bucket_seconds: float | None  # None: one point per reading
    points: list[SeriesPoint]


# Validation ------------------------------------------------------------------------------------------


def _rounded(value: Decimal, places: int) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def _limits_error(
    measure: Measure, field: str, limits: tuple[Decimal, Decimal], diastolic: bool
) -> InvalidInput:
    low, high = limits
    match measure:
        case Measure.BLOOD_PRESSURE if diastolic:
            return InvalidInput(
                "Diastolic pressure must be between {low} and {high} mmHg.", field=field, low=low, high=high
            )
        case Measure.BLOOD_PRESSURE:
            return InvalidInput(
                "Systolic pressure must be between {low} and {high} mmHg.", field=field, low=low, high=high
            )
        case Measure.GLUCOSE:
            return InvalidInput(
                "Glucose must be between {low} and {high} mmol/L (values in mg/dL are not accepted).",
                field=field,
                low=low,
                high=high,
            )
        case Measure.HEART_RATE:
            return InvalidInput(
                "Heart rate must be between {low} and {high} beats per minute.",
                field=field,
                low=low,
                high=high,
            )
        case Measure.TEMPERATURE:
            return InvalidInput(
                "Temperature must be between {low} and {high} °C.", field=field, low=low, high=high
            )
        case Measure.SPO2:
            return InvalidInput("SpO2 must be between {low} and {high} %.", field=field, low=low, high=high)
        case Measure.WEIGHT:
            return InvalidInput(
                "Weight must be between {low} and {high} kg.", field=field, low=low, high=high
            )


def _checked(
    measure: Measure, value: Decimal, field: str, problems: list[InvalidInput], *, diastolic: bool = False
) -> Decimal | None:
    """`value` rounded to the measure's precision, or None (and a problem) when it is implausible."""
    spec = SPECS[measure]
    limits = spec.diastolic_limits if diastolic and spec.diastolic_limits else spec.limits
    try:
        rounded = _rounded(value, spec.places)
    except InvalidOperation:
        rounded = None
    if rounded is None or not value.is_finite() or not limits[0] <= rounded <= limits[1]:
        problems.append(_limits_error(measure, field, limits, diastolic))
        return None
    return rounded


def _check_context(measure: Measure, context: GlucoseContext | None, problems: list[InvalidInput]) -> None:
    if measure is Measure.GLUCOSE and context is None:
        problems.append(InvalidInput("Glucose needs its context: fasting or after a meal.", field="context"))
    elif measure is not Measure.GLUCOSE and context is not None:
        problems.append(InvalidInput("Only glucose takes a context.", field="context"))


def _validated_reading(new: NewReading, now: datetime) -> tuple[Decimal, Decimal | None, datetime]:
    problems: list[InvalidInput] = []
    value: Decimal | None = None
    diastolic: Decimal | None = None
    if new.measure is Measure.BLOOD_PRESSURE:
        if new.value is not None:
            problems.append(
                InvalidInput("Blood pressure takes systolic and diastolic, not value.", field="value")
            )
        if new.systolic is None:
            problems.append(InvalidInput("Blood pressure needs its systolic pressure.", field="systolic"))
        else:
            value = _checked(new.measure, new.systolic, "systolic", problems)
        if new.diastolic is None:
            problems.append(InvalidInput("Blood pressure needs its diastolic pressure.", field="diastolic"))
        else:
            diastolic = _checked(new.measure, new.diastolic, "diastolic", problems, diastolic=True)
        if value is not None and diastolic is not None and value <= diastolic:
            problems.append(
                InvalidInput("Systolic pressure must be higher than diastolic pressure.", field="systolic")
            )
    else:
        if new.systolic is not None or new.diastolic is not None:
            problems.append(
                InvalidInput(
                    "Only blood pressure takes systolic and diastolic values.",
                    field="systolic" if new.systolic is not None else "diastolic",
                )
            )
        if new.value is None:
            problems.append(InvalidInput("Give the measured value.", field="value"))
        else:
            value = _checked(new.measure, new.value, "value", problems)
    _check_context(new.measure, new.context, problems)
    measured_at = new.measured_at or now
    if measured_at.tzinfo is None or measured_at.utcoffset() is None:
        problems.append(InvalidInput("Give the measurement time with its UTC offset.", field="measuredAt"))
    elif measured_at > now + FUTURE_TOLERANCE:
        problems.append(InvalidInput("The measurement time cannot be in the future.", field="measuredAt"))
    raise_if_any(problems)
    assert value is not None
    return value, diastolic, measured_at


def _validated_range(new: NewRange) -> NormalRange:
    problems: list[InvalidInput] = []
    _check_context(new.measure, new.context, problems)
    bp = new.measure is Measure.BLOOD_PRESSURE
    if not bp and (new.diastolic_low is not None or new.diastolic_high is not None):
        problems.append(
            InvalidInput(
                "Only blood pressure takes diastolic bounds.",
                field="diastolicLow" if new.diastolic_low is not None else "diastolicHigh",
            )
        )

    def bound(value: Decimal | None, field: str, diastolic: bool = False) -> Decimal | None:
        return None if value is None else _checked(new.measure, value, field, problems, diastolic=diastolic)

    low, high = bound(new.low, "low"), bound(new.high, "high")
    d_low = bound(new.diastolic_low, "diastolicLow", True) if bp else None
    d_high = bound(new.diastolic_high, "diastolicHigh", True) if bp else None
    for lower, upper, field in ((low, high, "high"), (d_low, d_high, "diastolicHigh")):
        if lower is not None and upper is not None and lower > upper:
            problems.append(InvalidInput("The low bound cannot be above the high bound.", field=field))
    raise_if_any(problems)
    return NormalRange(low, high, d_low, d_high, RangeOrigin.RESIDENT)


# Flags -----------------------------------------------------------------------------------------------


def _side(value: Decimal | None, low: Decimal | None, high: Decimal | None) -> Flag | None:
    if value is None or (low is None and high is None):
        return None
    if high is not None and value > high:
        return Flag.HIGH
    if low is not None and value < low:
        return Flag.LOW
    return Flag.NORMAL


def flag_of(value: Decimal, diastolic: Decimal | None, normal: NormalRange) -> Flag | None:
    """LOW, NORMAL or HIGH against `normal`; None when no bound applies. Blood pressure: HIGH when either
    value is above its range, else LOW when either is below, else NORMAL."""
    flags = {
        _side(value, normal.low, normal.high),
        _side(diastolic, normal.diastolic_low, normal.diastolic_high),
    } - {None}
    for flag in (Flag.HIGH, Flag.LOW, Flag.NORMAL):
        if flag in flags:
            return flag
    return None


# Storage ---------------------------------------------------------------------------------------------


def _db() -> BaseDBAsyncClient:
    # The model's connection: the unit of work's transaction, and its guard against use outside one.
    return Resident._choose_db()


def _text(value: Decimal | None) -> str | None:
    return None if value is None else str(value)


def _decimal(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def range_document(normal: NormalRange) -> dict[str, str | None]:
    """A normal range as sealed readings and ranges hold it (compact keys: it is in every reading)."""
    return {
        "lo": _text(normal.low),
        "hi": _text(normal.high),
        "dlo": _text(normal.diastolic_low),
        "dhi": _text(normal.diastolic_high),
        "o": normal.origin.value,
    }


def _range_from_json(data: dict[str, str | None]) -> NormalRange:
    return NormalRange(
        _decimal(data.get("lo")),
        _decimal(data.get("hi")),
        _decimal(data.get("dlo")),
        _decimal(data.get("dhi")),
        RangeOrigin(data.get("o") or RangeOrigin.DEFAULT.value),
    )


def _dumps(data: object) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def _range_row_id(measure: Measure, context: GlucoseContext | None) -> str:
    return f"{measure.value}:{context.value if context else 'any'}"


async def _require_resident(resident_id: int) -> None:
    rows = await _db().execute_query_dict("SELECT 1 FROM resident WHERE id = $1", [resident_id])
    if not rows:
        raise NotFound("Resident not found.")


async def _ensure_key(resident_id: int) -> None:
    """The resident's data key, created if missing (outside any savepoint: docs/security.md); Conflict
    when it was destroyed (the resident was erased: nothing can be sealed for them any more)."""
    try:
        await (await field_cipher()).ensure_data_keys([resident_id])
    except DataKeyDestroyed as exc:
        raise Conflict("This resident's data was erased: no vital sign can be recorded.") from exc


async def effective_range(resident_id: int, measure: Measure, context: GlucoseContext | None) -> NormalRange:
    """The resident's own range for the measure (and glucose context), else the default."""
    rows = await _db().execute_query_dict(
        "SELECT bounds FROM vital_range WHERE resident_id = $1 AND measure = $2 AND context = $3",
        [resident_id, measure.value, context.value if context else "any"],
    )
    if not rows:
        return DEFAULT_RANGES[(measure, context)]
    cipher = await field_cipher()
    plain = await cipher.decrypt_text(
        rows[0]["bounds"],
        table=RANGE_TABLE,
        column=RANGE_COLUMN,
        row_id=_range_row_id(measure, context),
        subject_id=resident_id,
    )
    return _range_from_json(json.loads(plain))


async def set_range(resident_id: int, new: NewRange, set_by: str) -> NormalRange:
    """Set (or, with every bound None, remove) the resident's own range; returns the range now in effect."""
    await _require_resident(resident_id)
    normal = _validated_range(new)
    context = new.context.value if new.context else "any"
    if normal.empty:
        await _db().execute_query(
            "DELETE FROM vital_range WHERE resident_id = $1 AND measure = $2 AND context = $3",
            [resident_id, new.measure.value, context],
        )
        return DEFAULT_RANGES[(new.measure, new.context)]
    await _ensure_key(resident_id)
    cipher = await field_cipher()
    sealed = await cipher.encrypt(
        _dumps(range_document(normal)),
        table=RANGE_TABLE,
        column=RANGE_COLUMN,
        row_id=_range_row_id(new.measure, new.context),
        subject_id=resident_id,
    )
    await _db().execute_query(
        """INSERT INTO vital_range (resident_id, measure, context, bounds, set_by) VALUES ($1, $2, $3, $4, $5)
           ON CONFLICT (resident_id, measure, context)
           DO UPDATE SET bounds = excluded.bounds, set_by = excluded.set_by, set_at = now()""",
        [resident_id, new.measure.value, context, sealed, set_by],
    )
    return normal


async def record_reading(resident_id: int, new: NewReading, recorder: Recorder) -> Reading:
    """Validate, flag against the resident's effective range, seal and store one reading."""
    await _require_resident(resident_id)
    now = datetime.now(UTC)
    value, diastolic, measured_at = _validated_reading(new, now)
    cipher = await field_cipher()
    await _ensure_key(resident_id)
    normal = await effective_range(resident_id, new.measure, new.context)
    flag = flag_of(value, diastolic, normal)
    connection = _db()
    (reading_id,) = await next_ids("vital_reading", 1)
    document = {
        "v": str(value),
        "d": _text(diastolic),
        "c": new.context.value if new.context else None,
        "f": flag.value if flag else None,
        "r": range_document(normal),
    }
    sealed = await cipher.encrypt(
        _dumps(document),
        table=READING_TABLE,
        column=READING_COLUMN,
        row_id=reading_id,
        subject_id=resident_id,
    )
    stored = await connection.execute_query_dict(
        """INSERT INTO vital_reading
               (id, resident_id, measure, measured_at, recorded_by, source, client_id, reading)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING recorded_at""",
        [
            reading_id,
            resident_id,
            new.measure.value,
            measured_at,
            recorder.subject,
            recorder.source.value,
            recorder.client_id if recorder.source is Source.INTEGRATOR else None,
            sealed,
        ],
    )
    reading = Reading(
        id=reading_id,
        resident_id=resident_id,
        measure=new.measure,
        measured_at=measured_at,
        recorded_at=stored[0]["recorded_at"],
        source=recorder.source,
        value=value,
        diastolic=diastolic,
        context=new.context,
        flag=flag,
        range=normal,
    )
    # The institution's rules over vitals, in the same unit of work (care/vital_rules.py imports this module).
    from care.vital_rules import evaluate_after_reading

    await evaluate_after_reading(reading, now)
    return reading


_READING_COLUMNS = "id, resident_id, measure, measured_at, recorded_at, source, reading"


async def _opened(rows: Sequence[dict]) -> list[Reading]:
    """Decrypt rows of vital_reading in one pass, the keys of all their residents loaded in one query.
    Readings of an erased resident (data key destroyed) are left out."""
    if not rows:
        return []
    cipher = await field_cipher()
    await cipher.load_data_keys({row["resident_id"] for row in rows})
    readings = []
    for row in rows:
        try:
            plain = await cipher.decrypt_text(
                row["reading"],
                table=READING_TABLE,
                column=READING_COLUMN,
                row_id=row["id"],
                subject_id=row["resident_id"],
            )
        except DataKeyDestroyed:
            continue  # the resident was erased: their readings say nothing any more
        data = json.loads(plain)
        readings.append(
            Reading(
                id=row["id"],
                resident_id=row["resident_id"],
                measure=Measure(row["measure"]),
                measured_at=row["measured_at"],
                recorded_at=row["recorded_at"],
                source=Source(row["source"]),
                value=Decimal(data["v"]),
                diastolic=_decimal(data.get("d")),
                context=GlucoseContext(data["c"]) if data.get("c") else None,
                flag=Flag(data["f"]) if data.get("f") else None,
                range=_range_from_json(data["r"]),
            )
        )
    return readings


@dataclass(frozen=True, slots=True)
class ReadingFilter:
    measure: Measure | None = None
    start: datetime | None = None  # inclusive
    end: datetime | None = None  # exclusive


def _check_window(start: datetime | None, end: datetime | None) -> None:
    for value, field in ((start, "from"), (end, "to")):
        if value is not None and value.utcoffset() is None:
            raise InvalidInput("Give the time with its UTC offset.", field=field)
    if start is not None and end is not None and start >= end:
        raise InvalidInput("The start of the time range must precede its end.", field="from")


def _where(resident_id: int, criteria: ReadingFilter) -> tuple[list[str], list[object]]:
    conditions, parameters = ["resident_id = $1"], [resident_id]
    if criteria.measure is not None:
        parameters.append(criteria.measure.value)
        conditions.append(f"measure = ${len(parameters)}")
    if criteria.start is not None:
        parameters.append(criteria.start)
        conditions.append(f"measured_at >= ${len(parameters)}")
    if criteria.end is not None:
        parameters.append(criteria.end)
        conditions.append(f"measured_at < ${len(parameters)}")
    return conditions, parameters


async def list_readings(
    resident_id: int, criteria: ReadingFilter, *, after_id: int | None, limit: int
) -> list[Reading]:
    """The resident's readings, newest first (measured_at, then id, descending), after the reading
    `after_id` of the previous page (a keyset on (measured_at, id): readings pushed late by a device land
    in their place, not at the top)."""
    _check_window(criteria.start, criteria.end)
    conditions, parameters = _where(resident_id, criteria)
    if after_id is not None:
        parameters.append(after_id)
        conditions.append(
            f"(measured_at, id) < (SELECT c.measured_at, c.id FROM vital_reading c"
            f" WHERE c.id = ${len(parameters)} AND c.resident_id = $1)"
        )
    parameters.append(limit)
    rows = await _db().execute_query_dict(
        f"SELECT {_READING_COLUMNS} FROM vital_reading WHERE {' AND '.join(conditions)}"
        f" ORDER BY measured_at DESC, id DESC LIMIT ${len(parameters)}",
        parameters,
    )
    return await _opened(rows)


async def count_readings(resident_id: int, criteria: ReadingFilter) -> int:
    conditions, parameters = _where(resident_id, criteria)
    rows = await _db().execute_query_dict(
        f"SELECT count(*) AS n FROM vital_reading WHERE {' AND '.join(conditions)}", parameters
    )
    return int(rows[0]["n"])


def _mean(values: Sequence[Decimal], places: int) -> Decimal:
    return _rounded(sum(values, Decimal(0)) / len(values), places + 1)


def _point(readings: Sequence[Reading], start: datetime, end: datetime, places: int) -> SeriesPoint:
    values = [r.value for r in readings]
    diastolic = [r.diastolic for r in readings if r.diastolic is not None]
    return SeriesPoint(
        start=start,
        end=end,
        count=len(readings),
        min=min(values),
        mean=_mean(values, places) if len(values) > 1 else values[0],
        max=max(values),
        diastolic_min=min(diastolic) if diastolic else None,
        diastolic_mean=(_mean(diastolic, places) if len(diastolic) > 1 else diastolic[0])
        if diastolic
        else None,
        diastolic_max=max(diastolic) if diastolic else None,
        low_count=sum(1 for r in readings if r.flag is Flag.LOW),
        high_count=sum(1 for r in readings if r.flag is Flag.HIGH),
    )


def downsample(
    readings: Sequence[Reading], start: datetime, end: datetime, max_points: int, places: int
) -> tuple[float | None, list[SeriesPoint]]:
    """At most `max_points` points for `readings` (ascending by time, within [start, end)).

    As many readings as points or fewer: one point each. More: [start, end) is cut into `max_points`
    buckets of equal duration, and each bucket holding readings becomes one point with their count,
    min, mean and max (so a chart can draw the mean and a min–max band, and no spike disappears in an
    average). Empty buckets give no point: gaps stay gaps."""
    if len(readings) <= max_points:
        return None, [_point([r], r.measured_at, r.measured_at, places) for r in readings]
    span = (end - start) // timedelta(microseconds=1)
    buckets: dict[int, list[Reading]] = {}
    for reading in readings:
        offset = (reading.measured_at - start) // timedelta(microseconds=1)
        index = min(max(offset * max_points // span, 0), max_points - 1)
        buckets.setdefault(index, []).append(reading)

    def edge(index: int) -> datetime:
        return start + timedelta(microseconds=span * index // max_points)

    points = [_point(buckets[i], edge(i), edge(i + 1), places) for i in sorted(buckets)]
    return span / max_points / 1_000_000, points


async def series(
    resident_id: int,
    measure: Measure,
    *,
    start: datetime | None,
    end: datetime | None,
    max_points: int | None,
    context: GlucoseContext | None = None,
) -> Series:
    """The resident's readings of `measure` in [start, end) for a chart, downsampled to at most
    `max_points` points (`downsample`). Defaults: the last 30 days, 200 points. Glucose may be narrowed
    to one context (the context is encrypted, so this filter runs after decryption)."""
    points_wanted = DEFAULT_SERIES_POINTS if max_points is None else max_points
    if not 1 <= points_wanted <= MAX_SERIES_POINTS:
        raise InvalidInput("maxPoints must be between 1 and {max}.", field="maxPoints", max=MAX_SERIES_POINTS)
    if context is not None and measure is not Measure.GLUCOSE:
        raise InvalidInput("Only glucose takes a context.", field="context")
    end = end or datetime.now(UTC)
    start = start or end - timedelta(days=DEFAULT_SERIES_DAYS)
    _check_window(start, end)
    conditions, parameters = _where(resident_id, ReadingFilter(measure, start, end))
    parameters.append(MAX_SERIES_READINGS + 1)
    rows = await _db().execute_query_dict(
        f"SELECT {_READING_COLUMNS} FROM vital_reading WHERE {' AND '.join(conditions)}"
        f" ORDER BY measured_at, id LIMIT ${len(parameters)}",
        parameters,
    )
    if len(rows) > MAX_SERIES_READINGS:
        raise InvalidInput(
            "More than {max} readings in this time range: choose a shorter one.",
            field="from",
            max=MAX_SERIES_READINGS,
        )
    readings = await _opened(rows)
    if context is not None:
        readings = [r for r in readings if r.context is context]
    bucket_seconds, points = downsample(readings, start, end, points_wanted, SPECS[measure].places)
    return Series(measure, start, end, len(readings), bucket_seconds, points)


async def latest_vitals_of(resident_ids: Iterable[int]) -> dict[int, dict[Measure, Reading]]:
    """The latest reading of each measure for each resident: one query for the readings (an index probe
    per resident and measure) and one for the data keys, whatever the number of residents. Ready for a
    DataLoader (`load_latest_vitals`)."""
    wanted = sorted({int(r) for r in resident_ids})
    found: dict[int, dict[Measure, Reading]] = {r: {} for r in wanted}
    if not wanted:
        return found
    rows = await _db().execute_query_dict(
        f"""SELECT v.* FROM unnest($1::bigint[]) AS p (resident_id)
            CROSS JOIN unnest($2::text[]) AS m (measure)
            CROSS JOIN LATERAL (
                SELECT {_READING_COLUMNS} FROM vital_reading r
                WHERE r.resident_id = p.resident_id AND r.measure = m.measure
                ORDER BY r.measured_at DESC, r.id DESC LIMIT 1
            ) v""",
        [wanted, [m.value for m in Measure]],
    )
    for reading in await _opened(rows):
        found[reading.resident_id][reading.measure] = reading
    return found


async def latest_vitals(resident_id: int) -> dict[Measure, Reading]:
    return (await latest_vitals_of([resident_id]))[resident_id]


async def load_latest_vitals(resident_ids: list[int]) -> list[dict[Measure, Reading]]:
    """`latest_vitals_of` in the shape of a DataLoader's load function."""
    found = await latest_vitals_of(resident_ids)
    return [found[r] for r in resident_ids]

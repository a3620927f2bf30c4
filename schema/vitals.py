"""Vital signs: the reading and range types, `Resident.vitals` / `Resident.vitalSeries` resolvers (bound
to ResidentType in schema/residents.py), and the mutations `recordVitalSign`, `setVitalRange`.

Rules, units and defaults: care/vitals.py; the client's view: docs/api.md, "Vital signs".
"""

from datetime import datetime
from decimal import Decimal
from typing import Annotated

import strawberry

from care import vitals as care
from compliance.consent import Category
from compliance.policy import Action
from compliance.principals import Principal, PrincipalKind
from schema.context import YiyangInfo
from schema.ids import encode_id
from schema.pagination import Connection, connection, page_request
from schema.resident_access import ResidentNode, require_resident_access, resident_to_change
from schema.user_errors import USER_ERROR_TYPES, UserError, user_errors

VitalMeasure = strawberry.enum(care.Measure, name="VitalMeasure")
GlucoseContextEnum = strawberry.enum(care.GlucoseContext, name="GlucoseContext")
VitalFlag = strawberry.enum(care.Flag, name="VitalFlag")
VitalSource = strawberry.enum(care.Source, name="VitalSource")
VitalRangeOrigin = strawberry.enum(care.RangeOrigin, name="VitalRangeOrigin")


def _float(value: Decimal | None) -> float | None:
    return None if value is None else float(value)


def measured_value(value: float | None) -> Decimal | None:
    # str() of a float is its shortest exact representation: 36.6 stays 36.6, not 36.600000000000001
    return None if value is None else Decimal(str(value))


@strawberry.type(
    name="VitalRange",
    description="Inclusive bounds of a normal reading; a null bound is not checked. For BLOOD_PRESSURE, "
    "low/high are systolic and diastolicLow/diastolicHigh diastolic.",
)
class VitalRangeType:
    unit: str
    low: float | None
    high: float | None
    diastolic_low: float | None
    diastolic_high: float | None
    origin: VitalRangeOrigin

    @classmethod
    def from_range(cls, normal: care.NormalRange, measure: care.Measure) -> "VitalRangeType":
        return cls(
            unit=care.SPECS[measure].unit,
            low=_float(normal.low),
            high=_float(normal.high),
            diastolic_low=_float(normal.diastolic_low),
            diastolic_high=_float(normal.diastolic_high),
            origin=normal.origin,
        )


@strawberry.type(name="VitalReading")
class VitalReadingType:
    id: strawberry.ID
    measure: VitalMeasure
    unit: str
    measured_at: datetime
    recorded_at: datetime
    source: VitalSource
    value: float | None = strawberry.field(description="Null for BLOOD_PRESSURE (see systolic, diastolic).")
    systolic: float | None
    diastolic: float | None
    context: GlucoseContextEnum | None = strawberry.field(description="GLUCOSE only.")
    flag: VitalFlag | None = strawberry.field(
        description="Against the resident's range when the reading was recorded; null when no range applied."
    )
    range: VitalRangeType = strawberry.field(description="The range the flag was judged against.")
    pk: strawberry.Private[int]

    @classmethod
    def from_reading(cls, reading: care.Reading, institution_id: int) -> "VitalReadingType":
        bp = reading.measure is care.Measure.BLOOD_PRESSURE
        return cls(
            id=strawberry.ID(encode_id("VitalReading", institution_id, reading.id)),
            measure=reading.measure,
            unit=care.SPECS[reading.measure].unit,
            measured_at=reading.measured_at,
            recorded_at=reading.recorded_at,
            source=reading.source,
            value=None if bp else float(reading.value),
            systolic=float(reading.value) if bp else None,
            diastolic=_float(reading.diastolic),
            context=reading.context,
            flag=reading.flag,
            range=VitalRangeType.from_range(reading.range, reading.measure),
            pk=reading.id,
        )


@strawberry.type(
    name="VitalSeriesPoint",
    description="One reading (count 1, start = end = its time) or the readings of the bucket [start, end).",
)
class VitalSeriesPointType:
    start: datetime
    end: datetime
    count: int
    min: float
    mean: float
    max: float
    diastolic_min: float | None
    diastolic_mean: float | None
    diastolic_max: float | None
    low_count: int
    high_count: int


@strawberry.type(name="VitalSeries")
class VitalSeriesType:
    measure: VitalMeasure
    unit: str
    start: datetime = strawberry.field(name="from")
    end: datetime = strawberry.field(name="to")
    reading_count: int
    bucket_seconds: float | None = strawberry.field(
        description="Duration of a bucket; null when every point is a single reading."
    )
    points: list[VitalSeriesPointType]

    @classmethod
    def from_series(cls, found: care.Series) -> "VitalSeriesType":
        return cls(
            measure=found.measure,
            unit=care.SPECS[found.measure].unit,
            start=found.start,
            end=found.end,
            reading_count=found.reading_count,
            bucket_seconds=found.bucket_seconds,
            points=[
                VitalSeriesPointType(
                    start=p.start,
                    end=p.end,
                    count=p.count,
                    min=float(p.min),
                    mean=float(p.mean),
                    max=float(p.max),
                    diastolic_min=_float(p.diastolic_min),
                    diastolic_mean=_float(p.diastolic_mean),
                    diastolic_max=_float(p.diastolic_max),
                    low_count=p.low_count,
                    high_count=p.high_count,
                )
                for p in found.points
            ],
        )


# Resident fields (bound in schema/residents.py) ------------------------------------------------------


async def resident_vitals(
    root: ResidentNode,
    info: YiyangInfo,
    measure: VitalMeasure | None = None,
    from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
    to: datetime | None = None,
    first: int | None = None,
    after: str | None = None,
) -> Connection[VitalReadingType]:
    """The resident's vital signs, newest first; `from` inclusive, `to` exclusive."""
    await require_resident_access(info, Action.VITALS_VIEW, root.institution_id, root.pk, (Category.VITALS,))
    page = page_request(first, after)
    criteria = care.ReadingFilter(measure=measure, start=from_, end=to)
    rows = await care.list_readings(root.pk, criteria, after_id=page.after_key, limit=page.size + 1)
    return connection(
        rows,
        page,
        key=lambda row: row.id,
        node=lambda row: VitalReadingType.from_reading(row, root.institution_id),
        count_total=lambda: care.count_readings(root.pk, criteria),
    )


async def resident_latest_vitals(root: ResidentNode, info: YiyangInfo) -> list[VitalReadingType]:
    """The latest reading of each measure taken (a page of residents: one query for all of them)."""
    await require_resident_access(info, Action.VITALS_VIEW, root.institution_id, root.pk, (Category.VITALS,))
    latest = await info.context.loaders.latest_vitals.load(root.pk)
    return [
        VitalReadingType.from_reading(latest[m], root.institution_id) for m in care.Measure if m in latest
    ]


async def resident_vital_series(
    root: ResidentNode,
    info: YiyangInfo,
    measure: VitalMeasure,
    from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
    to: datetime | None = None,
    max_points: int | None = None,
    context: GlucoseContextEnum | None = None,
) -> VitalSeriesType:
    """Readings of one measure in [from, to) for a chart (default: the last 30 days), at most maxPoints
    points (default 200, at most 1000): beyond that, time buckets with count, min, mean and max."""
    await require_resident_access(info, Action.VITALS_VIEW, root.institution_id, root.pk, (Category.VITALS,))
    found = await care.series(root.pk, measure, start=from_, end=to, max_points=max_points, context=context)
    return VitalSeriesType.from_series(found)


# Mutations -------------------------------------------------------------------------------------------


@strawberry.input
class RecordVitalSignInput:
    resident_id: strawberry.ID
    measure: VitalMeasure
    value: float | None = strawberry.field(default=None, description="Every measure but BLOOD_PRESSURE.")
    systolic: float | None = None
    diastolic: float | None = None
    context: GlucoseContextEnum | None = strawberry.field(default=None, description="Required for GLUCOSE.")
    measured_at: datetime | None = strawberry.field(
        default=None, description="With its UTC offset; default now; at most 5 minutes ahead."
    )


@strawberry.type
class RecordVitalSignPayload:
    reading: VitalReadingType | None
    user_errors: list[UserError]


@strawberry.input(
    description="Replaces the resident's range for the measure (for GLUCOSE, for the context); "
    "all bounds null: back to the default range."
)
class SetVitalRangeInput:
    resident_id: strawberry.ID
    measure: VitalMeasure
    context: GlucoseContextEnum | None = None
    low: float | None = None
    high: float | None = None
    diastolic_low: float | None = None
    diastolic_high: float | None = None


@strawberry.type
class SetVitalRangePayload:
    range: VitalRangeType | None
    user_errors: list[UserError]


def reading_recorder(principal: Principal | None) -> care.Recorder:
    assert principal is not None  # require() passed
    if principal.kind is PrincipalKind.INTEGRATOR:
        client_id = principal.client_id or principal.subject.removeprefix("client:")
        return care.Recorder(principal.subject, care.Source.INTEGRATOR, client_id)
    return care.Recorder(principal.subject, care.Source.STAFF)


@strawberry.type
class VitalMutations:
    @strawberry.mutation(
        description="Record one vital sign of a resident (staff who measure, or an "
        "integrator with scope vitals:write)."
    )
    async def record_vital_sign(
        self, info: YiyangInfo, input: RecordVitalSignInput
    ) -> RecordVitalSignPayload:
        _, pk = await resident_to_change(info, input.resident_id, Action.VITALS_RECORD)
        tenant = info.context.require_tenant()
        new = care.NewReading(
            measure=input.measure,
            value=measured_value(input.value),
            systolic=measured_value(input.systolic),
            diastolic=measured_value(input.diastolic),
            context=input.context,
            measured_at=input.measured_at,
        )
        try:
            reading = await care.record_reading(pk, new, reading_recorder(info.context.principal))
        except USER_ERROR_TYPES as error:
            return RecordVitalSignPayload(reading=None, user_errors=user_errors(info, error))
        return RecordVitalSignPayload(
            reading=VitalReadingType.from_reading(reading, tenant.institution_id), user_errors=[]
        )

    @strawberry.mutation(description="Set a resident's own normal range of a measure (head nurses, doctors).")
    async def set_vital_range(self, info: YiyangInfo, input: SetVitalRangeInput) -> SetVitalRangePayload:
        _, pk = await resident_to_change(info, input.resident_id, Action.VITAL_RANGES_SET)
        principal = info.context.principal
        assert principal is not None
        new = care.NewRange(
            measure=input.measure,
            context=input.context,
            low=measured_value(input.low),
            high=measured_value(input.high),
            diastolic_low=measured_value(input.diastolic_low),
            diastolic_high=measured_value(input.diastolic_high),
        )
        try:
            normal = await care.set_range(pk, new, principal.subject)
        except USER_ERROR_TYPES as error:
            return SetVitalRangePayload(range=None, user_errors=user_errors(info, error))
        return SetVitalRangePayload(range=VitalRangeType.from_range(normal, input.measure), user_errors=[])

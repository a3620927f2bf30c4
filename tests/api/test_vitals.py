"""Vital signs end to end on real PostgreSQL: record and read every measure, flags against default and
per-resident ranges, bad input as userErrors that write nothing, chart series downsampling, integrators,
other institutions' ids, and no value in plaintext in the tables."""

import itertools
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TypeVar

import httpx
import pytest

from care import vitals
from compliance.consent import Category, record_consent
from compliance.encryption import destroy_data_key, field_cipher
from compliance.identity.clients import create_integrator_client
from compliance.principals import Principal, PrincipalKind, StaffRole
from schema.ids import encode_id
from tenants.models import Institution
from tenants.registry import tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.care.notification_support import integrator_consent
from tests.conftest import World, gql, token_for

T = TypeVar("T")

READING_FIELDS = (
    "id measure unit measuredAt recordedAt source value systolic diastolic context flag"
    " range { unit low high diastolicLow diastolicHigh origin }"
)
RECORD = f"""mutation($input: RecordVitalSignInput!) {{
  recordVitalSign(input: $input) {{ reading {{ {READING_FIELDS} }} userErrors {{ field message code }} }}
}}"""
SET_RANGE = """mutation($input: SetVitalRangeInput!) {
  setVitalRange(input: $input) {
    range { unit low high diastolicLow diastolicHigh origin } userErrors { field message code }
  }
}"""
VITALS = f"""query($id: ID!, $measure: VitalMeasure, $from: DateTime, $to: DateTime, $first: Int,
                 $after: String) {{
  resident(id: $id) {{
    vitals(measure: $measure, from: $from, to: $to, first: $first, after: $after) {{
      totalCount pageInfo {{ hasNextPage endCursor }} edges {{ node {{ {READING_FIELDS} }} }}
    }}
  }}
}}"""
SERIES = """query($id: ID!, $measure: VitalMeasure!, $from: DateTime, $to: DateTime, $maxPoints: Int,
                 $context: GlucoseContext) {
  resident(id: $id) {
    vitalSeries(measure: $measure, from: $from, to: $to, maxPoints: $maxPoints, context: $context) {
      measure unit from to readingCount bucketSeconds
      points { start end count min mean max diastolicMin diastolicMean diastolicMax lowCount highCount }
    }
  }
}"""

MINE, OTHER = 14, 19  # indexes into world.institution_ids that no other test module writes to
MORNING = datetime(2025, 6, 1, 8, 0, tzinfo=UTC)


def when(minutes: int) -> str:
    return (MORNING + timedelta(minutes=minutes)).isoformat()


def resident_id(world: World, index: int, pk: int) -> str:
    return encode_id("Resident", world.institution_ids[index], pk)


_subjects = itertools.count(870_000)


def staff(world: World, index: int, role: StaffRole) -> str:
    """A staff token of a subject of its own: each test spends its own rate-limit budget."""
    return token_for(
        Principal(
            f"account:{next(_subjects)}",
            PrincipalKind.STAFF,
            institution_id=world.institution_ids[index],
            roles=frozenset({role}),
        )
    )


def nurse(world: World, index: int = MINE) -> str:
    return staff(world, index, StaffRole.NURSE)


def doctor_of(world: World, index: int = MINE) -> str:
    return staff(world, index, StaffRole.DOCTOR)


def integrator(world: World, *scopes: str, index: int = MINE, client_id: str = "vitals-device") -> str:
    return token_for(
        Principal(
            f"client:{client_id}",
            PrincipalKind.INTEGRATOR,
            institution_id=world.institution_ids[index],
            scopes=frozenset(scopes),
            client_id=client_id,
        )
    )


async def vitals_consent(institution_id: int, resident_pk: int, client_id: str) -> None:
    """The resident's consent to `client_id` for vitals (compliance/consent.py): what an integrator needs
    besides its scope."""

    async def work() -> None:
        await record_consent(
            integrator_consent(resident_pk, client_id, frozenset({Category.VITALS})), recorded_by="test"
        )

    await in_tenant(institution_id, work)


async def record(client: httpx.AsyncClient, token: str, rid: str, **fields: object) -> dict:
    body = await gql(client, RECORD, {"input": {"residentId": rid} | fields}, token=token)
    assert "errors" not in body, body
    return body["data"]["recordVitalSign"]


async def recorded(client: httpx.AsyncClient, token: str, rid: str, **fields: object) -> dict:
    payload = await record(client, token, rid, **fields)
    assert payload["userErrors"] == [], payload
    return payload["reading"]


async def readings(client: httpx.AsyncClient, token: str, rid: str, **arguments: object) -> dict:
    body = await gql(client, VITALS, {"id": rid} | arguments, token=token)
    assert "errors" not in body, body
    return body["data"]["resident"]["vitals"]


COUNT = "query($id: ID!) { resident(id: $id) { vitals(first: 0) { totalCount } } }"


async def count(client: httpx.AsyncClient, token: str, rid: str) -> int:
    body = await gql(client, COUNT, {"id": rid}, token=token)
    assert "errors" not in body, body
    return body["data"]["resident"]["vitals"]["totalCount"]


async def in_tenant(institution_id: int, work: Callable[[], Awaitable[T]]) -> T:
    institution = await Institution.get(id=institution_id)
    return await run_in_tenant(tenant_ref(institution), work)


async def rows_of(institution_id: int, sql: str, *parameters: object) -> list[dict]:
    async def work() -> list[dict]:
        from care.models import Resident

        return await Resident._choose_db().execute_query_dict(sql, list(parameters))

    return await in_tenant(institution_id, work)


async def test_record_and_read_each_measure(client: httpx.AsyncClient, world: World) -> None:
    rid, token = resident_id(world, MINE, 1), nurse(world)
    given = [
        ({"measure": "BLOOD_PRESSURE", "systolic": 122, "diastolic": 78}, "mmHg"),
        ({"measure": "GLUCOSE", "value": 5.4, "context": "FASTING"}, "mmol/L"),
        ({"measure": "GLUCOSE", "value": 6.8, "context": "POST_MEAL"}, "mmol/L"),
        ({"measure": "HEART_RATE", "value": 72}, "bpm"),
        ({"measure": "TEMPERATURE", "value": 36.55}, "°C"),  # rounded half-up to 36.6
        ({"measure": "SPO2", "value": 97}, "%"),
        ({"measure": "WEIGHT", "value": 58.25}, "kg"),  # 58.3
    ]
    for minute, (fields, unit) in enumerate(given):
        reading = await recorded(client, token, rid, measuredAt=when(minute), **fields)
        assert reading["unit"] == unit and reading["source"] == "STAFF"
        assert reading["measure"] == fields["measure"]

    page = await readings(client, token, rid, first=50)
    assert page["totalCount"] == len(given)
    nodes = [edge["node"] for edge in page["edges"]]
    # Newest first.
    assert [n["measuredAt"] for n in nodes] == sorted((n["measuredAt"] for n in nodes), reverse=True)
    by_measure = {(n["measure"], n["context"]): n for n in nodes}
    bp = by_measure[("BLOOD_PRESSURE", None)]
    assert (bp["systolic"], bp["diastolic"], bp["value"], bp["flag"]) == (122, 78, None, "NORMAL")
    assert by_measure[("GLUCOSE", "FASTING")]["value"] == 5.4
    assert by_measure[("GLUCOSE", "POST_MEAL")]["value"] == 6.8
    assert by_measure[("HEART_RATE", None)]["value"] == 72
    assert by_measure[("TEMPERATURE", None)]["value"] == 36.6
    assert by_measure[("SPO2", None)]["value"] == 97
    weight = by_measure[("WEIGHT", None)]
    assert weight["value"] == 58.3 and weight["flag"] is None  # no default range for weight
    assert all(n["flag"] == "NORMAL" for n in nodes if n["measure"] != "WEIGHT")

    # A measure and a time window; pages with a cursor.
    glucose = await readings(client, token, rid, measure="GLUCOSE")
    assert glucose["totalCount"] == 2
    window = await readings(client, token, rid, **{"from": when(3), "to": when(6)})
    assert [e["node"]["measure"] for e in window["edges"]] == ["SPO2", "TEMPERATURE", "HEART_RATE"]
    first = await readings(client, token, rid, first=4)
    assert first["pageInfo"]["hasNextPage"]
    rest = await readings(client, token, rid, first=4, after=first["pageInfo"]["endCursor"])
    assert not rest["pageInfo"]["hasNextPage"]
    paged = [e["node"]["id"] for e in first["edges"] + rest["edges"]]
    assert paged == [n["id"] for n in nodes]


@pytest.mark.parametrize(
    ("fields", "flag"),
    [
        ({"measure": "BLOOD_PRESSURE", "systolic": 139, "diastolic": 89}, "NORMAL"),
        ({"measure": "BLOOD_PRESSURE", "systolic": 140, "diastolic": 80}, "HIGH"),
        ({"measure": "BLOOD_PRESSURE", "systolic": 130, "diastolic": 90}, "HIGH"),
        ({"measure": "BLOOD_PRESSURE", "systolic": 85, "diastolic": 55}, "LOW"),
        ({"measure": "BLOOD_PRESSURE", "systolic": 150, "diastolic": 55}, "HIGH"),  # high wins
        ({"measure": "GLUCOSE", "value": 6.1, "context": "FASTING"}, "NORMAL"),
        ({"measure": "GLUCOSE", "value": 6.2, "context": "FASTING"}, "HIGH"),
        ({"measure": "GLUCOSE", "value": 3.8, "context": "FASTING"}, "LOW"),
        ({"measure": "GLUCOSE", "value": 7.7, "context": "POST_MEAL"}, "NORMAL"),
        ({"measure": "GLUCOSE", "value": 7.8, "context": "POST_MEAL"}, "HIGH"),
        ({"measure": "HEART_RATE", "value": 59}, "LOW"),
        ({"measure": "HEART_RATE", "value": 100}, "NORMAL"),
        ({"measure": "HEART_RATE", "value": 101}, "HIGH"),
        ({"measure": "TEMPERATURE", "value": 35.9}, "LOW"),
        ({"measure": "TEMPERATURE", "value": 37.3}, "NORMAL"),
        ({"measure": "TEMPERATURE", "value": 37.4}, "HIGH"),
        ({"measure": "SPO2", "value": 94}, "LOW"),
        ({"measure": "SPO2", "value": 100}, "NORMAL"),
        ({"measure": "WEIGHT", "value": 120}, None),
    ],
)
async def test_flags_against_default_ranges(
    client: httpx.AsyncClient, world: World, fields: dict, flag: str | None
) -> None:
    reading = await recorded(client, nurse(world), resident_id(world, MINE, 2), **fields)
    assert reading["flag"] == flag
    assert reading["range"]["origin"] == "DEFAULT"


async def test_per_resident_ranges_override_defaults(client: httpx.AsyncClient, world: World) -> None:
    rid, token = resident_id(world, MINE, 3), nurse(world)
    doctor = doctor_of(world)
    before = await recorded(client, token, rid, measure="BLOOD_PRESSURE", systolic=152, diastolic=94)
    assert before["flag"] == "HIGH"
    assert before["range"] == {
        "unit": "mmHg",
        "low": 90,
        "high": 139,
        "diastolicLow": 60,
        "diastolicHigh": 89,
        "origin": "DEFAULT",
    }

    # A nurse may not set ranges; a doctor may.
    refused = await gql(
        client,
        SET_RANGE,
        {"input": {"residentId": rid, "measure": "BLOOD_PRESSURE", "high": 159}},
        token=token,
    )
    assert [e["extensions"]["code"] for e in refused["errors"]] == ["FORBIDDEN"]
    bp_range = {"residentId": rid, "measure": "BLOOD_PRESSURE", "low": 100, "high": 159, "diastolicHigh": 99}
    body = await gql(client, SET_RANGE, {"input": bp_range}, token=doctor)
    assert body["data"]["setVitalRange"] == {
        "range": {
            "unit": "mmHg",
            "low": 100,
            "high": 159,
            "diastolicLow": None,
            "diastolicHigh": 99,
            "origin": "RESIDENT",
        },
        "userErrors": [],
    }
    after = await recorded(client, token, rid, measure="BLOOD_PRESSURE", systolic=152, diastolic=94)
    assert after["flag"] == "NORMAL" and after["range"]["origin"] == "RESIDENT"
    low = await recorded(client, token, rid, measure="BLOOD_PRESSURE", systolic=98, diastolic=50)
    assert low["flag"] == "LOW"  # systolic below 100; diastolic has no lower bound any more, 98 does
    # The earlier reading keeps its flag and the range it was judged against.
    stored = {e["node"]["id"]: e["node"] for e in (await readings(client, token, rid))["edges"]}
    assert stored[before["id"]]["flag"] == "HIGH" and stored[before["id"]]["range"]["origin"] == "DEFAULT"

    # Weight has no default range: a resident's own range flags it.
    weight = {"residentId": rid, "measure": "WEIGHT", "low": 45, "high": 60}
    assert (await gql(client, SET_RANGE, {"input": weight}, token=doctor))["data"]["setVitalRange"][
        "userErrors"
    ] == []
    assert (await recorded(client, token, rid, measure="WEIGHT", value=61.5))["flag"] == "HIGH"

    # Glucose ranges are per context.
    post_meal = {"residentId": rid, "measure": "GLUCOSE", "context": "POST_MEAL", "high": 10}
    assert (await gql(client, SET_RANGE, {"input": post_meal}, token=doctor))["data"]["setVitalRange"][
        "userErrors"
    ] == []
    assert (await recorded(client, token, rid, measure="GLUCOSE", value=9.5, context="POST_MEAL"))[
        "flag"
    ] == "NORMAL"
    assert (await recorded(client, token, rid, measure="GLUCOSE", value=9.5, context="FASTING"))[
        "flag"
    ] == "HIGH"

    # All bounds null: back to the default.
    cleared = await gql(
        client, SET_RANGE, {"input": {"residentId": rid, "measure": "BLOOD_PRESSURE"}}, token=doctor
    )
    assert cleared["data"]["setVitalRange"]["range"]["origin"] == "DEFAULT"
    again = await recorded(client, token, rid, measure="BLOOD_PRESSURE", systolic=152, diastolic=94)
    assert again["flag"] == "HIGH"

    # Bad ranges are userErrors.
    for bad, field in [
        ({"measure": "GLUCOSE", "high": 8}, "context"),
        ({"measure": "HEART_RATE", "low": 90, "high": 60}, "high"),
        ({"measure": "TEMPERATURE", "high": 45}, "high"),
        ({"measure": "HEART_RATE", "diastolicHigh": 60}, "diastolicHigh"),
    ]:
        body = await gql(client, SET_RANGE, {"input": {"residentId": rid} | bad}, token=doctor)
        payload = body["data"]["setVitalRange"]
        assert payload["range"] is None and [e["field"] for e in payload["userErrors"]] == [field], body


@pytest.mark.parametrize(
    ("fields", "field", "mentions"),
    [
        ({"measure": "TEMPERATURE", "value": 45}, "value", "°C"),
        ({"measure": "SPO2", "value": 120}, "value", "%"),
        ({"measure": "GLUCOSE", "value": 108, "context": "FASTING"}, "value", "mmol/L"),  # mg/dL
        ({"measure": "HEART_RATE", "value": 0}, "value", "次"),
        ({"measure": "WEIGHT", "value": 65000}, "value", "kg"),  # grams
        ({"measure": "BLOOD_PRESSURE", "systolic": 400, "diastolic": 80}, "systolic", "mmHg"),
        ({"measure": "BLOOD_PRESSURE", "systolic": 130}, "diastolic", "舒张压"),
        ({"measure": "BLOOD_PRESSURE", "systolic": 80, "diastolic": 90}, "systolic", "收缩压"),
        ({"measure": "BLOOD_PRESSURE", "value": 130, "systolic": 130, "diastolic": 80}, "value", "血压"),
        ({"measure": "HEART_RATE", "systolic": 120, "value": 70}, "systolic", "血压"),
        ({"measure": "HEART_RATE"}, "value", "测量值"),
        ({"measure": "GLUCOSE", "value": 5.5}, "context", "空腹"),
        ({"measure": "HEART_RATE", "value": 70, "context": "FASTING"}, "context", "血糖"),
        ({"measure": "HEART_RATE", "value": 70, "measuredAt": "FUTURE"}, "measuredAt", "当前时间"),
        ({"measure": "HEART_RATE", "value": 70, "measuredAt": "2025-06-01T08:00:00"}, "measuredAt", "时区"),
    ],
)
async def test_bad_input_is_a_user_error_and_writes_nothing(
    client: httpx.AsyncClient, world: World, fields: dict, field: str, mentions: str
) -> None:
    rid, token = resident_id(world, MINE, 4), nurse(world)
    if fields.get("measuredAt") == "FUTURE":
        fields = fields | {"measuredAt": (datetime.now(UTC) + timedelta(hours=1)).isoformat()}
    before = await count(client, token, rid)
    payload = await record(client, token, rid, **fields)
    assert payload["reading"] is None
    assert field in [e["field"] for e in payload["userErrors"]], payload
    assert all(e["code"] == "BAD_USER_INPUT" for e in payload["userErrors"])
    assert any(mentions in e["message"] for e in payload["userErrors"]), payload
    assert await count(client, token, rid) == before


async def test_unknown_measure_and_clock_tolerance(client: httpx.AsyncClient, world: World) -> None:
    rid, token = resident_id(world, MINE, 4), nurse(world)
    before = await count(client, token, rid)
    # The measure is an enum: an unknown one fails validation before anything runs.
    body = await gql(
        client, RECORD, {"input": {"residentId": rid, "measure": "CHOLESTEROL", "value": 5}}, token=token
    )
    assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"] and not body.get("data")
    assert await count(client, token, rid) == before
    # A device clock a little ahead is tolerated.
    ahead = (datetime.now(UTC) + timedelta(minutes=2)).isoformat()
    await recorded(client, token, rid, measure="HEART_RATE", value=70, measuredAt=ahead)
    assert await count(client, token, rid) == before + 1


async def test_series_is_downsampled_with_true_min_and_max(client: httpx.AsyncClient, world: World) -> None:
    institution = world.institution_ids[MINE]
    pk, rid, token = 5, resident_id(world, MINE, 5), nurse(world)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    values = [60 + (i * 37) % 41 for i in range(1_000)]  # 60..100
    values[417] = 180  # a spike must survive downsampling
    values[733] = 31
    times = [start + timedelta(minutes=53 * i) for i in range(1_000)]

    async def fill() -> None:
        recorder = vitals.Recorder("account:1", vitals.Source.STAFF)
        for at, value in zip(times, values, strict=True):
            new = vitals.NewReading(vitals.Measure.HEART_RATE, value=Decimal(value), measured_at=at)
            await vitals.record_reading(pk, new, recorder)

    await in_tenant(institution, fill)
    end = times[-1] + timedelta(minutes=1)
    body = await gql(
        client,
        SERIES,
        {
            "id": rid,
            "measure": "HEART_RATE",
            "from": start.isoformat(),
            "to": end.isoformat(),
            "maxPoints": 60,
        },
        token=token,
    )
    assert "errors" not in body, body
    series = body["data"]["resident"]["vitalSeries"]
    points = series["points"]
    assert series["readingCount"] == 1_000 and series["unit"] == "bpm"
    assert 0 < len(points) <= 60 and series["bucketSeconds"] == pytest.approx(
        (end - start).total_seconds() / 60
    )
    assert sum(p["count"] for p in points) == 1_000
    assert max(p["max"] for p in points) == 180 and min(p["min"] for p in points) == 31
    assert sum(p["highCount"] for p in points) == sum(1 for v in values if v > 100)
    assert sum(p["lowCount"] for p in points) == sum(1 for v in values if v < 60)
    # Each point summarizes exactly the readings of its bucket.
    for point in points:
        low, high = datetime.fromisoformat(point["start"]), datetime.fromisoformat(point["end"])
        inside = [v for t, v in zip(times, values, strict=True) if low <= t < high]
        assert point["count"] == len(inside)
        assert (point["min"], point["max"]) == (min(inside), max(inside))
        assert point["mean"] == pytest.approx(sum(inside) / len(inside), abs=0.05)
    assert [p["start"] for p in points] == sorted(p["start"] for p in points)

    # Fewer readings than points: one point per reading.
    short = await gql(
        client,
        SERIES,
        {"id": rid, "measure": "HEART_RATE", "from": times[10].isoformat(), "to": times[15].isoformat()},
        token=token,
    )
    raw = short["data"]["resident"]["vitalSeries"]
    assert raw["bucketSeconds"] is None and [p["max"] for p in raw["points"]] == values[10:15]
    assert all(p["count"] == 1 and p["start"] == p["end"] for p in raw["points"])

    for bad in ({"maxPoints": 0}, {"maxPoints": 1_001}, {"from": end.isoformat(), "to": start.isoformat()}):
        body = await gql(client, SERIES, {"id": rid, "measure": "HEART_RATE"} | bad, token=token)
        assert [e["extensions"]["code"] for e in body["errors"]] == ["BAD_USER_INPUT"], body


async def test_blood_pressure_and_glucose_series(client: httpx.AsyncClient, world: World) -> None:
    rid, token = resident_id(world, MINE, 6), nurse(world)
    for minute, (systolic, diastolic) in enumerate([(120, 80), (150, 95), (110, 70)]):
        await recorded(
            client,
            token,
            rid,
            measure="BLOOD_PRESSURE",
            systolic=systolic,
            diastolic=diastolic,
            measuredAt=when(minute),
        )
    for minute, (value, context) in enumerate([(5.0, "FASTING"), (9.0, "POST_MEAL"), (6.5, "FASTING")]):
        await recorded(
            client, token, rid, measure="GLUCOSE", value=value, context=context, measuredAt=when(minute)
        )
    window = {"from": when(-1), "to": when(10)}
    bp = await gql(
        client, SERIES, {"id": rid, "measure": "BLOOD_PRESSURE", "maxPoints": 1} | window, token=token
    )
    (point,) = bp["data"]["resident"]["vitalSeries"]["points"]
    assert (point["min"], point["max"], point["diastolicMin"], point["diastolicMax"]) == (110, 150, 70, 95)
    assert point["mean"] == pytest.approx(126.7) and point["highCount"] == 1
    fasting = await gql(
        client, SERIES, {"id": rid, "measure": "GLUCOSE", "context": "FASTING"} | window, token=token
    )
    assert [p["max"] for p in fasting["data"]["resident"]["vitalSeries"]["points"]] == [5.0, 6.5]


async def test_integrators_need_vitals_write(client: httpx.AsyncClient, world: World) -> None:
    institution = world.institution_ids[OTHER]
    rid = resident_id(world, OTHER, 3)
    device = (
        await create_integrator_client(
            "血氧设备", scopes=["vitals:write"], created_by="test", institution_id=institution
        )
    ).client.client_id
    writer = integrator(world, "vitals:write", index=OTHER, client_id=device)
    # The scope alone is not enough: the resident's consent must name the client (compliance/consent.py).
    unconsented = await gql(
        client, RECORD, {"input": {"residentId": rid, "measure": "SPO2", "value": 93}}, token=writer
    )
    assert [e["extensions"].get("reason") for e in unconsented["errors"]] == ["CONSENT_REQUIRED"]
    await vitals_consent(institution, 3, device)
    reading = await recorded(client, writer, rid, measure="SPO2", value=93)
    assert reading["source"] == "INTEGRATOR" and reading["flag"] == "LOW"
    (row,) = await rows_of(
        institution, "SELECT source, client_id, recorded_by FROM vital_reading WHERE resident_id = $1", 3
    )
    assert row == {"source": "integrator", "client_id": device, "recorded_by": f"client:{device}"}

    without = await gql(
        client,
        RECORD,
        {"input": {"residentId": rid, "measure": "SPO2", "value": 93}},
        token=integrator(world, "residents:read", "residents:write", index=OTHER),
    )
    assert [e["extensions"]["code"] for e in without["errors"]] == ["FORBIDDEN"] and without["data"] is None
    # Recording does not give reading: vitals.view is for staff.
    read = await gql(
        client, VITALS, {"id": rid}, token=integrator(world, "vitals:write", "residents:read", index=OTHER)
    )
    assert [e["extensions"]["code"] for e in read["errors"]] == ["FORBIDDEN"]
    assert len(await rows_of(institution, "SELECT id FROM vital_reading WHERE resident_id = $1", 3)) == 1


async def test_other_institutions_residents_are_not_found(client: httpx.AsyncClient, world: World) -> None:
    theirs = resident_id(world, OTHER, 1)
    for operation, variables in [
        (RECORD, {"input": {"residentId": theirs, "measure": "HEART_RATE", "value": 70}}),
        (SET_RANGE, {"input": {"residentId": theirs, "measure": "HEART_RATE", "high": 90}}),
        (VITALS, {"id": theirs}),
    ]:
        body = await gql(client, operation, variables, token=doctor_of(world))
        assert [e["extensions"]["code"] for e in body["errors"]] == ["NOT_FOUND"] and body["data"] is None
    # A resident id of the right institution that does not exist.
    missing = resident_id(world, MINE, 999_999)
    body = await gql(
        client,
        RECORD,
        {"input": {"residentId": missing, "measure": "HEART_RATE", "value": 70}},
        token=nurse(world),
    )
    assert [e["extensions"]["code"] for e in body["errors"]] == ["NOT_FOUND"]
    assert (
        await rows_of(world.institution_ids[OTHER], "SELECT id FROM vital_reading WHERE resident_id = 1")
        == []
    )


async def test_values_are_not_stored_in_plaintext(client: httpx.AsyncClient, world: World) -> None:
    institution, pk = world.institution_ids[OTHER], 2
    rid, token = resident_id(world, OTHER, pk), nurse(world, OTHER)
    await recorded(client, token, rid, measure="BLOOD_PRESSURE", systolic=187, diastolic=113)
    await recorded(client, token, rid, measure="GLUCOSE", value=8.4, context="POST_MEAL")
    doctor = doctor_of(world, OTHER)
    body = await gql(
        client,
        SET_RANGE,
        {"input": {"residentId": rid, "measure": "HEART_RATE", "low": 52, "high": 96}},
        token=doctor,
    )
    assert body["data"]["setVitalRange"]["userErrors"] == []
    secrets = ["187", "113", "8.4", "52", "96", "high", "post_meal", "fasting"]

    columns = await rows_of(
        institution,
        """SELECT table_name, column_name, data_type FROM information_schema.columns
           WHERE table_schema = current_schema() AND table_name IN ('vital_reading', 'vital_range')""",
    )
    # No numeric column holds a value: the only numbers are ids.
    numeric = {
        (c["table_name"], c["column_name"])
        for c in columns
        if c["data_type"] in {"numeric", "real", "double precision", "integer", "smallint"}
    }
    assert numeric == set()
    for table in ("vital_reading", "vital_range"):
        rows = await rows_of(institution, f"SELECT * FROM {table} WHERE resident_id = $1", pk)
        assert rows
        for row in rows:
            for name, value in row.items():
                if isinstance(value, bytes):
                    assert not any(s.encode() in value for s in secrets), (table, name)
                elif isinstance(value, str):
                    assert not any(s in value for s in secrets if s.isdigit() or "." in s), (
                        table,
                        name,
                        value,
                    )
                    assert name in {"measure", "recorded_by", "source", "client_id", "context", "set_by"}

    # What is sealed opens with the resident's key, bound to its row.
    (reading,) = await rows_of(
        institution,
        "SELECT id, reading FROM vital_reading WHERE resident_id = $1 AND measure = 'glucose'",
        pk,
    )

    async def open_it() -> str:
        cipher = await field_cipher()
        return await cipher.decrypt_text(
            reading["reading"], table="vital_reading", column="reading", row_id=reading["id"], subject_id=pk
        )

    assert '"v":"8.4"' in await in_tenant(institution, open_it)


async def test_latest_vitals_of_a_page_of_residents(client: httpx.AsyncClient, world: World) -> None:
    institution = world.institution_ids[OTHER]
    token = nurse(world, OTHER)
    await recorded(
        client, token, resident_id(world, OTHER, 4), measure="HEART_RATE", value=70, measuredAt=when(0)
    )
    await recorded(
        client, token, resident_id(world, OTHER, 4), measure="HEART_RATE", value=88, measuredAt=when(9)
    )
    await recorded(
        client, token, resident_id(world, OTHER, 4), measure="HEART_RATE", value=75, measuredAt=when(5)
    )
    await recorded(
        client, token, resident_id(world, OTHER, 4), measure="WEIGHT", value=52, measuredAt=when(1)
    )
    await recorded(
        client,
        token,
        resident_id(world, OTHER, 6),
        measure="BLOOD_PRESSURE",
        systolic=135,
        diastolic=85,
        measuredAt=when(2),
    )

    async def latest() -> tuple[dict, list, int]:
        cipher = await field_cipher()
        before = cipher.queries
        found = await vitals.latest_vitals_of([4, 6, 1])
        loaded = await vitals.load_latest_vitals([6, 4])
        return found, loaded, cipher.queries - before

    found, loaded, key_queries = await in_tenant(institution, latest)
    assert key_queries == 1  # the data keys of every resident of the page in one query
    assert {m: r.value for m, r in found[4].items()} == {
        vitals.Measure.HEART_RATE: Decimal("88"),
        vitals.Measure.WEIGHT: Decimal("52.0"),
    }
    bp = found[6][vitals.Measure.BLOOD_PRESSURE]
    assert (bp.value, bp.diastolic, bp.flag) == (Decimal("135"), Decimal("85"), vitals.Flag.NORMAL)
    assert found[1] == {}
    assert loaded == [found[6], found[4]]


async def test_an_erased_resident_gets_no_new_readings(client: httpx.AsyncClient, world: World) -> None:
    institution, pk = world.institution_ids[OTHER], 5
    rid, token = resident_id(world, OTHER, pk), nurse(world, OTHER)
    await recorded(client, token, rid, measure="HEART_RATE", value=70)

    async def erase() -> None:
        await destroy_data_key(pk)

    await in_tenant(institution, erase)
    payload = await record(client, token, rid, measure="HEART_RATE", value=71)
    assert payload["reading"] is None and [e["code"] for e in payload["userErrors"]] == ["CONFLICT"]
    body = await gql(client, VITALS, {"id": rid}, token=token)
    if body.get("data") and body["data"]["resident"]:  # the resident record itself may report GONE
        assert body["data"]["resident"]["vitals"]["edges"] == []

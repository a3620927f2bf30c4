"""The health record (diagnoses, medications, allergies): sealed at rest, checked as a whole, read in bulk."""

from collections.abc import Awaitable, Callable
from datetime import date
from decimal import Decimal
from typing import TypeVar

import pytest

from care import health_record as care
from care.residents import next_ids
from compliance.encryption import CiphertextRejected, field_cipher
from compliance.encryption.format import OVERHEAD
from tenants.db import default_connection
from tenants.errors import NotFound, ValidationFailed
from tenants.models import Institution
from tenants.registry import tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.conftest import World

T = TypeVar("T")
TODAY = date(2026, 12, 1)


async def in_tenant(institution_id: int, work: Callable[[], Awaitable[T]]) -> T:
    return await run_in_tenant(tenant_ref(await Institution.get(id=institution_id)), work)


def amlodipine(**changes: object) -> care.NewMedication:
    given: dict[str, object] = {
        "drug": "苯磺酸氨氯地平片",
        "dose_amount": Decimal("5"),
        "dose_unit": care.DoseUnit.MG,
        "route": care.Route.ORAL,
        "frequency": care.Frequency.ONCE_DAILY,
        "started_on": date(2026, 3, 1),
        "prescriber": "王医生",
    }
    return care.NewMedication(**(given | changes))  # type: ignore[arg-type]


async def raw_rows(table: str, resident_id: int) -> list[dict]:
    _, rows = await default_connection().execute_query(
        f"SELECT * FROM {table} WHERE resident_id = $1 ORDER BY id", [resident_id]
    )
    return [dict(row) for row in rows]


async def test_the_record_round_trips_and_is_sealed_at_rest(world: World) -> None:
    institution = world.institution_ids[16]

    async def work() -> None:
        diagnosis = await care.add_diagnosis(
            2,
            care.NewDiagnosis("2型糖尿病", "e11.9", "饮食控制", date(2019, 5, 1)),
            recorded_by="account:1",
            today=TODAY,
        )
        assert diagnosis.icd10 == "E11.9"
        medication = await care.add_medication(2, amlodipine(), recorded_by="account:1")
        await care.add_allergy(
            2, care.NewAllergy("青霉素", care.AllergySeverity.SEVERE, "皮疹"), recorded_by="account:1"
        )
        ended = await care.end_medication(2, medication.id, date(2026, 11, 1))
        assert ended.ended_on == date(2026, 11, 1) and not ended.current_on(TODAY)

        record = (await care.health_records_of([2, 3]))[2]
        assert [d.condition for d in record.diagnoses] == ["2型糖尿病"]
        [read] = record.medications
        assert (read.drug, read.dose_amount, read.dose_unit, read.route) == (
            "苯磺酸氨氯地平片",
            Decimal("5"),
            care.DoseUnit.MG,
            care.Route.ORAL,
        )
        assert read.frequency is care.Frequency.ONCE_DAILY and read.prescriber == "王医生"
        assert [(a.substance, a.severity) for a in record.allergies] == [
            ("青霉素", care.AllergySeverity.SEVERE)
        ]

        for table in ("diagnosis", "medication", "allergy"):
            for row in await raw_rows(table, 2):
                # One sealed document per entry; the columns of the older shape stay empty.
                assert all(row[column] is None for column in care.SEALED_COLUMNS[table])
                value = row[care.DOCUMENT_COLUMN]
                assert isinstance(value, bytes) and (len(value) - OVERHEAD) % care.DOCUMENT_BLOCK == 0
                for plaintext in ("糖尿病", "E11.9", "氨氯地平", "王医生", "青霉素", "皮疹", "oral"):
                    assert plaintext.encode() not in value, table

    await in_tenant(institution, work)


async def test_bad_input_is_reported_together_and_nothing_is_written(world: World) -> None:
    institution = world.institution_ids[17]

    async def work() -> None:
        with pytest.raises(ValidationFailed) as medication:
            await care.add_medication(
                1,
                amlodipine(drug=" ", dose_amount=Decimal("-5"), ended_on=date(2026, 1, 1)),
                recorded_by="account:1",
            )
        assert {p.field for p in medication.value.problems} == {"drug", "doseAmount", "endedOn"}
        for dose in (Decimal(0), Decimal("10001"), Decimal("NaN")):
            with pytest.raises(ValidationFailed):
                await care.add_medication(1, amlodipine(dose_amount=dose), recorded_by="account:1")
        with pytest.raises(ValidationFailed) as diagnosis:
            await care.add_diagnosis(
                1,
                care.NewDiagnosis("高血压", "not-a-code", None, date(2027, 1, 1), date(2020, 1, 1)),
                recorded_by="account:1",
                today=TODAY,
            )
        assert {p.field for p in diagnosis.value.problems} == {"icd10", "diagnosedOn", "resolvedOn"}
        with pytest.raises(ValidationFailed):
            await care.add_allergy(1, care.NewAllergy("", care.AllergySeverity.MILD), recorded_by="account:1")
        with pytest.raises(NotFound):
            await care.add_allergy(
                999_999, care.NewAllergy("花粉", care.AllergySeverity.MILD), recorded_by="account:1"
            )
        for table in ("diagnosis", "medication", "allergy"):
            assert await raw_rows(table, 1) == []

    await in_tenant(institution, work)


async def test_a_sealed_field_moved_to_another_row_does_not_open(world: World) -> None:
    institution = world.institution_ids[18]

    async def work() -> None:
        first = await care.add_allergy(
            1, care.NewAllergy("海鲜", care.AllergySeverity.MODERATE), recorded_by="account:1"
        )
        second = await care.add_allergy(
            1, care.NewAllergy("花生", care.AllergySeverity.MILD), recorded_by="account:1"
        )
        await default_connection().execute_query(
            "UPDATE allergy SET details = (SELECT details FROM allergy WHERE id = $1) WHERE id = $2",
            [first.id, second.id],
        )
        with pytest.raises(CiphertextRejected):
            await care.health_records_of([1])

    await in_tenant(institution, work)


async def test_an_entry_sealed_column_by_column_before_documents_still_reads_and_converts(
    world: World,
) -> None:
    """Rows written before migration 0012 hold one ciphertext per column: they read as before, and a
    correction writes them as a document."""
    institution = world.institution_ids[18]

    async def work() -> None:
        resident = 2
        cipher = await field_cipher()
        (row_id,) = await next_ids("allergy", 1)
        sealed = {
            column: await cipher.encrypt(
                value, table="allergy", column=column, row_id=row_id, subject_id=resident
            )
            for column, value in (("substance", "头孢"), ("reaction", "皮疹"), ("severity", "moderate"))
        }
        await default_connection().execute_query(
            """INSERT INTO allergy (id, resident_id, substance, reaction, severity, recorded_by)
               VALUES ($1, $2, $3, $4, $5, 'account:1')""",
            [row_id, resident, sealed["substance"], sealed["reaction"], sealed["severity"]],
        )
        record = (await care.health_records_of([resident]))[resident]
        assert ("头孢", "皮疹", care.AllergySeverity.MODERATE) in [
            (a.substance, a.reaction, a.severity) for a in record.allergies
        ]

        updated = await care.update_allergy(
            resident, row_id, care.AllergyChanges(reaction="荨麻疹"), changed_by="account:2"
        )
        assert (updated.substance, updated.reaction) == ("头孢", "荨麻疹")
        (row,) = [r for r in await raw_rows("allergy", resident) if r["id"] == row_id]
        assert row["substance"] is None and row["reaction"] is None and row["details"] is not None
        record = (await care.health_records_of([resident]))[resident]
        assert ("头孢", "荨麻疹") in [(a.substance, a.reaction) for a in record.allergies]

    await in_tenant(institution, work)

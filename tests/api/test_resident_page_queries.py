"""A page of residents with their families, latest vitals and health records costs a bounded number of
SQL queries, the same for 50 residents as for 5: every nested list comes from a DataLoader (one query per
kind of object for the whole page) and the data keys come with the page itself.

Queries are counted where tortoise sends them (its `tortoise.db_client` logger, one record a statement),
the transaction's own statements (BEGIN, SET search_path, COMMIT) included."""

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import httpx

from care import health_record, vitals
from care.models import CareLevel, Gender, Relationship
from care.residents import Admission, NewFamilyMember, Placement, add_family_member, admit_resident
from compliance.principals import StaffRole
from tenants.registry import NewInstitution, provision_institution, tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.conftest import World, gql, staff_token

RESIDENTS = 50
PAGE = """
query($first: Int!) { residents(first: $first) { edges { node {
  name idCardNumber phone room bed careLevel
  familyMembers { edges { node { name phone relationship isEmergencyContact } } }
  latestVitals { measure value diastolic flag measuredAt }
  healthRecord { diagnoses { condition } medications { drug current } allergies { substance } }
} } } }"""


class _Counter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.statements: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.getMessage().startswith(("Created connection pool", "Closed connection pool")):
            self.statements.append(record.getMessage())


@contextmanager
def counted_queries() -> Iterator[list[str]]:
    logger = logging.getLogger("tortoise.db_client")
    counter, level = _Counter(), logger.level
    logger.addHandler(counter)
    logger.setLevel(logging.DEBUG)
    try:
        yield counter.statements
    finally:
        logger.removeHandler(counter)
        logger.setLevel(level)


async def _populate() -> None:
    measured = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
    nurse = vitals.Recorder("account:1", vitals.Source.STAFF)
    for k in range(RESIDENTS):
        resident = await admit_resident(
            Admission(
                name=f"计数长者{k:02d}",
                gender=Gender.MALE if k % 2 else Gender.FEMALE,
                birth_date=date(1935 + k % 20, 1 + k % 12, 1 + k % 28),
                care_level=CareLevel.ASSISTED,
                admission_date=date(2025, 1, 1) + timedelta(days=k),
                placement=Placement(building="B", room=f"{200 + k}", bed="1"),
                phone=f"1390000{k:04d}",
            )
        )
        for relative in range(2):
            await add_family_member(
                resident.id,
                NewFamilyMember(
                    f"家属{k:02d}-{relative}", Relationship.DAUGHTER, f"1370000{k:02d}{relative:02d}"
                ),
            )
        await vitals.record_reading(
            resident.id,
            vitals.NewReading(vitals.Measure.HEART_RATE, Decimal(70 + k % 20), measured_at=measured),
            nurse,
        )
        await vitals.record_reading(
            resident.id,
            vitals.NewReading(
                vitals.Measure.BLOOD_PRESSURE,
                systolic=Decimal(120 + k % 30),
                diastolic=Decimal(80),
                measured_at=measured,
            ),
            nurse,
        )
        await health_record.add_medication(
            resident.id,
            health_record.NewMedication(
                "苯磺酸氨氯地平片",
                Decimal(5),
                health_record.DoseUnit.MG,
                health_record.Route.ORAL,
                health_record.Frequency.ONCE_DAILY,
                date(2025, 3, 1),
            ),
            recorded_by="account:1",
        )


async def test_a_page_of_50_residents_costs_as_many_queries_as_a_page_of_5(
    client: httpx.AsyncClient, world: World
) -> None:
    assert world.institution_ids  # its regions exist
    institution = await provision_institution(NewInstitution(name="查询计数养老院", region_code="test-east"))
    await run_in_tenant(tenant_ref(institution), _populate)
    token = staff_token(institution.id, StaffRole.HEAD_NURSE)

    # Once before counting: the first read of the institution's keys also reads its tenant key.
    assert "errors" not in await gql(client, PAGE, {"first": 1}, token=token)
    costs = {}
    for first in (5, RESIDENTS):
        with counted_queries() as statements:
            answer = await gql(client, PAGE, {"first": first}, token=token)
        assert "errors" not in answer, answer
        nodes = [edge["node"] for edge in answer["data"]["residents"]["edges"]]
        assert len(nodes) == first
        costs[first] = len(statements)

    last = nodes[-1]
    assert last["name"] == f"计数长者{RESIDENTS - 1:02d}"
    assert [m["node"]["name"] for m in last["familyMembers"]["edges"]] == [
        f"家属{RESIDENTS - 1:02d}-0",
        f"家属{RESIDENTS - 1:02d}-1",
    ]
    assert {v["measure"] for v in last["latestVitals"]} == {"HEART_RATE", "BLOOD_PRESSURE"}
    assert last["healthRecord"]["medications"] == [{"drug": "苯磺酸氨氯地平片", "current": True}]
    # The transaction's SET search_path, the page with its data keys, families, latest vitals, the health
    # record's three tables, and the request's audit events (lock, end of the chain, one INSERT for all):
    # the same for 5 residents as for 50.
    assert costs[5] == costs[RESIDENTS], costs
    assert costs[RESIDENTS] <= 10, statements

"""The health record through GraphQL: who may read and write it, userErrors, one load per page."""

from datetime import date

import httpx

from care import health_record
from care.models import CareLevel, Gender
from care.residents import Admission, admit_resident
from compliance.encryption import destroy_data_key
from compliance.principals import Principal, PrincipalKind, StaffRole
from schema.ids import encode_id
from tenants.registry import NewInstitution, provision_institution, tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.conftest import World, gql, token_for

ADD_MEDICATION = """
mutation($input: AddMedicationInput!) {
  addMedication(input: $input) {
    medication { id drug doseAmount doseUnit route frequency current }
    userErrors { field code }
  }
}"""
RECORDS = """
{ residents(first: 6) { edges { node { name healthRecord {
    diagnoses { condition icd10 } medications { drug current } allergies { substance severity } } } } } }"""


def staff(institution_id: int, *roles: StaffRole) -> str:
    return token_for(
        Principal(
            "account:860001", PrincipalKind.STAFF, institution_id=institution_id, roles=frozenset(roles)
        )
    )


async def test_a_nurse_records_and_a_caregiver_reads_but_finance_does_not(
    client: httpx.AsyncClient, world: World
) -> None:
    institution = world.institution_ids[15]
    nurse = staff(institution, StaffRole.NURSE)
    resident = encode_id("Resident", institution, 3)
    medication = {
        "residentId": resident,
        "drug": "二甲双胍缓释片",
        "doseAmount": "0.5",
        "doseUnit": "G",
        "route": "ORAL",
        "frequency": "TWICE_DAILY",
        "startedOn": "2026-02-01",
    }
    added = (await gql(client, ADD_MEDICATION, {"input": medication}, token=nurse))["data"]["addMedication"]
    assert added["userErrors"] == []
    assert added["medication"]["doseAmount"] == "0.5" and added["medication"]["current"] is True
    allergy = await gql(
        client,
        'mutation($id: ID!) { addAllergy(input: {residentId: $id, substance: "磺胺", severity: SEVERE})'
        " { allergy { substance } userErrors { field } } }",
        {"id": resident},
        token=nurse,
    )
    assert allergy["data"]["addAllergy"]["allergy"] == {"substance": "磺胺"}

    caregiver = staff(institution, StaffRole.CAREGIVER)
    nodes = [e["node"] for e in (await gql(client, RECORDS, token=caregiver))["data"]["residents"]["edges"]]
    third = nodes[2]["healthRecord"]
    assert third["medications"] == [{"drug": "二甲双胍缓释片", "current": True}]
    assert third["allergies"] == [{"substance": "磺胺", "severity": "SEVERE"}]
    assert nodes[0]["healthRecord"] == {"diagnoses": [], "medications": [], "allergies": []}

    refused = await gql(client, RECORDS, token=staff(institution, StaffRole.FINANCE))
    assert {e["extensions"]["code"] for e in refused["errors"]} == {"FORBIDDEN"}
    written = await gql(client, ADD_MEDICATION, {"input": medication}, token=caregiver)
    assert [e["extensions"]["code"] for e in written["errors"]] == ["FORBIDDEN"]


async def test_bad_medication_input_gives_user_errors(client: httpx.AsyncClient, world: World) -> None:
    institution = world.institution_ids[15]
    bad = {
        "residentId": encode_id("Resident", institution, 4),
        "drug": "",
        "doseAmount": "-1",
        "doseUnit": "MG",
        "route": "ORAL",
        "frequency": "ONCE_DAILY",
        "startedOn": "2026-02-01",
        "endedOn": "2026-01-01",
    }
    answer = await gql(client, ADD_MEDICATION, {"input": bad}, token=staff(institution, StaffRole.DOCTOR))
    payload = answer["data"]["addMedication"]
    assert payload["medication"] is None
    assert {(e["field"], e["code"]) for e in payload["userErrors"]} == {
        ("drug", "BAD_USER_INPUT"),
        ("doseAmount", "BAD_USER_INPUT"),
        ("endedOn", "BAD_USER_INPUT"),
    }


async def test_an_erased_residents_record_is_gone_and_the_others_still_read(
    client: httpx.AsyncClient, world: World
) -> None:
    # An institution of its own: the world's institutions keep their six residents (tests count them).
    registered = await provision_institution(NewInstitution(name="抹除测试养老院", region_code="test-east"))
    institution = registered.id

    async def admit_and_erase() -> tuple[int, int]:
        erased = await admit_resident(
            Admission("待删长者", Gender.FEMALE, date(1938, 5, 6), CareLevel.ASSISTED, date(2025, 6, 1))
        )
        await health_record.add_allergy(
            erased.id,
            health_record.NewAllergy("青霉素", health_record.AllergySeverity.SEVERE),
            recorded_by="account:1",
        )
        kept = await admit_resident(
            Admission("留存长者", Gender.MALE, date(1940, 2, 3), CareLevel.ASSISTED, date(2025, 6, 2))
        )
        await destroy_data_key(erased.id)
        return erased.id, kept.id

    erased_id, kept_id = await run_in_tenant(tenant_ref(registered), admit_and_erase)
    answer = await gql(
        client,
        """query($erased: ID!, $other: ID!) {
             erased: resident(id: $erased) { careLevel healthRecord { allergies { substance } } }
             other: resident(id: $other) { healthRecord { allergies { substance } } } }""",
        {
            "erased": encode_id("Resident", institution, erased_id),
            "other": encode_id("Resident", institution, kept_id),
        },
        token=staff(institution, StaffRole.NURSE),
    )
    assert [(e["path"], e["extensions"]["code"]) for e in answer["errors"]] == [
        (["erased", "healthRecord"], "GONE")
    ]
    assert answer["data"]["erased"] == {"careLevel": "ASSISTED", "healthRecord": None}
    assert answer["data"]["other"]["healthRecord"] == {"allergies": []}

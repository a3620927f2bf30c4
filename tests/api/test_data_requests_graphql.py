"""Data-subject requests through GraphQL: only the institution's admin, the export is JSON, erasure turns
the record to GONE for every reader."""

from datetime import date

import httpx

from care.models import CareLevel, Gender
from care.residents import Admission, admit_resident
from compliance.audit.verify import verify_tenants
from compliance.principals import StaffRole
from schema.ids import encode_id
from tenants.db import default_connection
from tenants.registry import NewInstitution, provision_institution, tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.conftest import World, gql, staff_token

EXPORT = "mutation($id: ID!) { exportResidentData(input: {residentId: $id}) { export userErrors { field } } }"
ERASE = """mutation($id: ID!, $reference: String) {
  eraseResident(input: {residentId: $id, reason: GUARDIAN_REQUEST, reference: $reference}) {
    erasure { residentId reason reference erasedAt } userErrors { field code } } }"""
READ = "query($id: ID!) { resident(id: $id) { careLevel name healthRecord { allergies { substance } } } }"


async def test_export_and_erasure_by_the_admin_only(client: httpx.AsyncClient, world: World) -> None:
    assert world.institution_ids  # its regions exist
    home = await provision_institution(NewInstitution(name="删除请求测试养老院", region_code="test-east"))

    async def admit() -> int:
        admitted = await admit_resident(
            Admission("郑淑珍", Gender.FEMALE, date(1938, 8, 8), CareLevel.FULL_CARE, date(2025, 3, 3))
        )
        return admitted.id

    resident = encode_id("Resident", home.id, await run_in_tenant(tenant_ref(home), admit))
    admin, nurse = staff_token(home.id, StaffRole.INSTITUTION_ADMIN), staff_token(home.id, StaffRole.NURSE)

    refused = await gql(client, EXPORT, {"id": resident}, token=nurse)
    assert [e["extensions"]["code"] for e in refused["errors"]] == ["FORBIDDEN"]
    exported = (await gql(client, EXPORT, {"id": resident}, token=admin))["data"]["exportResidentData"]
    assert exported["export"]["resident"]["identity"]["name"] == "郑淑珍"

    bad = await gql(client, ERASE, {"id": resident, "reference": "郑淑珍"}, token=admin)
    assert bad["data"]["eraseResident"]["userErrors"] == [{"field": "reference", "code": "BAD_USER_INPUT"}]
    assert (await gql(client, READ, {"id": resident}, token=nurse))["data"]["resident"]["name"] == "郑淑珍"
    assert [
        e["extensions"]["code"] for e in (await gql(client, ERASE, {"id": resident}, token=nurse))["errors"]
    ] == ["FORBIDDEN"]

    done = (await gql(client, ERASE, {"id": resident, "reference": "G-2026-3"}, token=admin))["data"]
    assert done["eraseResident"]["erasure"]["reference"] == "G-2026-3"
    read = await gql(client, READ, {"id": resident}, token=nurse)
    assert read["data"]["resident"]["careLevel"] == "FULL_CARE"
    assert {(tuple(e["path"]), e["extensions"]["code"]) for e in read["errors"]} == {
        (("resident", "name"), "GONE"),
        (("resident", "healthRecord"), "GONE"),
    }
    again = await gql(client, ERASE, {"id": resident}, token=admin)
    assert again["data"]["eraseResident"]["userErrors"] == [{"field": None, "code": "CONFLICT"}]
    gone = await gql(client, EXPORT, {"id": resident}, token=admin)
    assert [e["extensions"]["code"] for e in gone["errors"]] == ["GONE"]

    # Every request is on the audit log with what came of it, and the chain still verifies after the
    # erasure.
    async def audited() -> list[tuple[str, str, str | None]]:
        _, rows = await default_connection().execute_query(
            "SELECT action, outcome, reason_code FROM audit_event WHERE action LIKE 'data_subject.%' "
            "ORDER BY seq"
        )
        return [(row["action"], row["outcome"], row["reason_code"]) for row in rows]

    assert await run_in_tenant(tenant_ref(home), audited) == [
        ("data_subject.export", "denied", "forbidden"),  # the nurse
        ("data_subject.export", "permitted", None),
        ("data_subject.erase", "failed", "bad_user_input"),  # the reference held a name
        ("data_subject.erase", "denied", "forbidden"),  # the nurse
        ("data_subject.erase", "permitted", None),
        ("data_subject.erase", "failed", "conflict"),  # erased already
        ("data_subject.export", "failed", "gone"),
    ]
    (report,) = await verify_tenants([tenant_ref(home)])
    assert report.intact, report

"""Corrections of the record through GraphQL: family members changed and removed, diagnoses and allergies
changed, entries recorded in error taken out. Round trips; every problem of an input reported at once with
nothing written (the raw row bytes unchanged); sealed at rest after a change, under the same row id;
another institution's ids NOT_FOUND; roles FORBIDDEN; an erased resident GONE; the phone filter follows a
relative's new phone.

Every test admits its residents in an institution of its own (the world's keep their six residents)."""

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar

import httpx
import pytest

from care import health_record
from care.family_log import Channel, Direction, NewFamilyCommunication, record_family_communication
from care.models import CareLevel, Gender, Relationship
from care.residents import Admission, NewFamilyMember, add_family_member, admit_resident
from compliance.encryption import CiphertextRejected, destroy_data_key, field_cipher
from compliance.identity.account_models import AccountKind, FamilyLink
from compliance.identity.accounts import NewAccount, add_family_link, create_account
from compliance.principals import Principal, PrincipalKind, StaffRole
from schema.ids import encode_id
from tenants.db import default_connection
from tenants.models import Institution
from tenants.registry import NewInstitution, provision_institution, tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.conftest import World, gql, token_for

T = TypeVar("T")

UPDATE_DIAGNOSIS = """
mutation($input: UpdateDiagnosisInput!) {
  updateDiagnosis(input: $input) {
    diagnosis { id condition icd10 note diagnosedOn resolvedOn }
    userErrors { field code message }
  }
}"""
UPDATE_ALLERGY = """
mutation($input: UpdateAllergyInput!) {
  updateAllergy(input: $input) { allergy { id substance reaction severity } userErrors { field code } }
}"""
UPDATE_MEMBER = """
mutation($input: UpdateFamilyMemberInput!) {
  updateFamilyMember(input: $input) {
    familyMember { id name relationship phone isEmergencyContact }
    userErrors { field code message }
  }
}"""
REMOVE = "mutation($id: ID!) {{ {name}(input: {{id: $id}}) {{ {field} userErrors {{ field }} }} }}"
RECORD = """
query($id: ID!) { resident(id: $id) { healthRecord {
  diagnoses { id condition icd10 note diagnosedOn resolvedOn }
  medications { id drug } allergies { id substance reaction severity } } } }"""
BY_PHONE = """
query($phone: String!) { residents(filter: {phone: $phone}) { totalCount edges { node { name } } } }"""


def staff(institution_id: int, *roles: StaffRole) -> str:
    return token_for(
        Principal(
            "account:880003", PrincipalKind.STAFF, institution_id=institution_id, roles=frozenset(roles)
        )
    )


def codes(body: dict) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


async def institution(name: str) -> int:
    registered = await provision_institution(
        NewInstitution(name=f"{name}{uuid.uuid4().hex[:6]}", region_code="test-east")
    )
    return registered.id


async def in_tenant(institution_id: int, work: Callable[[], Awaitable[T]]) -> T:
    return await run_in_tenant(tenant_ref(await Institution.get(id=institution_id)), work)


async def raw_row(institution_id: int, table: str, row_id: int) -> dict[str, Any] | None:
    async def read() -> dict[str, Any] | None:
        rows = await default_connection().execute_query_dict(f"SELECT * FROM {table} WHERE id = $1", [row_id])
        return dict(rows[0]) if rows else None

    return await in_tenant(institution_id, read)


async def admit(institution_id: int, name: str) -> int:
    async def work() -> int:
        record = await admit_resident(
            Admission(name, Gender.FEMALE, date(1941, 4, 5), CareLevel.ASSISTED, date(2025, 3, 1))
        )
        return record.id

    return await in_tenant(institution_id, work)


async def add_diagnosis(institution_id: int, resident_id: int, **fields: Any) -> int:
    new = health_record.NewDiagnosis(**({"condition": "高血压"} | fields))

    async def work() -> int:
        row = await health_record.add_diagnosis(
            resident_id, new, recorded_by="account:1", today=date(2026, 1, 1)
        )
        return row.id

    return await in_tenant(institution_id, work)


async def add_allergy(institution_id: int, resident_id: int) -> int:
    new = health_record.NewAllergy("青霉素", health_record.AllergySeverity.MODERATE, "皮疹")

    async def work() -> int:
        return (await health_record.add_allergy(resident_id, new, recorded_by="account:1")).id

    return await in_tenant(institution_id, work)


async def add_medication(institution_id: int, resident_id: int) -> int:
    new = health_record.NewMedication(
        "氨氯地平片",
        Decimal(5),
        health_record.DoseUnit.MG,
        health_record.Route.ORAL,
        health_record.Frequency.ONCE_DAILY,
        date(2025, 3, 2),
    )

    async def work() -> int:
        return (await health_record.add_medication(resident_id, new, recorded_by="account:1")).id

    return await in_tenant(institution_id, work)


async def add_member(institution_id: int, resident_id: int, phone: str) -> int:
    async def work() -> int:
        member = await add_family_member(
            resident_id, NewFamilyMember("王秀兰", Relationship.DAUGHTER, phone, True)
        )
        return member.id

    return await in_tenant(institution_id, work)


# Diagnoses ---------------------------------------------------------------------------------------


async def test_a_diagnosis_is_corrected_resolved_and_sealed_again_under_its_row(
    client: httpx.AsyncClient, world: World
) -> None:
    home = await institution("更正测试养老院")
    resident = await admit(home, "更正长者")
    diagnosis = await add_diagnosis(
        home, resident, icd10="I10", note="晨起头晕", diagnosed_on=date(2024, 3, 1)
    )
    other = await add_diagnosis(home, resident, condition="2型糖尿病", icd10="E11.9")
    before = await raw_row(home, "diagnosis", diagnosis)
    assert before is not None
    doctor = staff(home, StaffRole.DOCTOR)
    diagnosis_id = encode_id("Diagnosis", home, diagnosis)

    answer = await gql(
        client,
        UPDATE_DIAGNOSIS,
        {
            "input": {
                "id": diagnosis_id,
                "condition": "原发性高血压",
                "note": "",
                "resolvedOn": "2025-01-10",
            }
        },
        token=doctor,
    )
    assert answer["data"]["updateDiagnosis"] == {
        "diagnosis": {
            "id": diagnosis_id,
            "condition": "原发性高血压",
            "icd10": "I10",
            "note": None,
            "diagnosedOn": "2024-03-01",
            "resolvedOn": "2025-01-10",
        },
        "userErrors": [],
    }
    record = await gql(client, RECORD, {"id": encode_id("Resident", home, resident)}, token=doctor)
    diagnoses = record["data"]["resident"]["healthRecord"]["diagnoses"]
    assert [d["condition"] for d in diagnoses] == ["原发性高血压", "2型糖尿病"]
    assert diagnoses[0]["resolvedOn"] == "2025-01-10" and diagnoses[0]["note"] is None

    after = await raw_row(home, "diagnosis", diagnosis)
    assert after is not None
    assert after["details"] != before["details"]  # the entry's document, sealed again
    assert "原发性高血压".encode() not in bytes(after["details"])
    assert after["updated_by"] == "account:880003" and after["updated_at"] is not None
    assert after["recorded_by"] == "account:1"

    async def reopen() -> None:
        cipher = await field_cipher()
        opened = await cipher.decrypt_text(
            after["details"], table="diagnosis", column="details", row_id=diagnosis, subject_id=resident
        )
        assert json.loads(opened) == {"condition": "原发性高血压", "icd10": "I10"}
        with pytest.raises(CiphertextRejected):  # bound to its row: another row's id does not open it
            await cipher.decrypt_text(
                after["details"], table="diagnosis", column="details", row_id=other, subject_id=resident
            )

    await in_tenant(home, reopen)

    # A null date clears it (resolved by mistake); a date left out keeps its value.
    cleared = await gql(
        client, UPDATE_DIAGNOSIS, {"input": {"id": diagnosis_id, "resolvedOn": None}}, token=doctor
    )
    assert cleared["data"]["updateDiagnosis"]["diagnosis"]["resolvedOn"] is None
    assert cleared["data"]["updateDiagnosis"]["diagnosis"]["diagnosedOn"] == "2024-03-01"


async def test_bad_diagnosis_changes_are_reported_together_and_nothing_is_written(
    client: httpx.AsyncClient, world: World
) -> None:
    home = await institution("更正校验养老院")
    resident = await admit(home, "校验长者")
    diagnosis = await add_diagnosis(
        home,
        resident,
        icd10="I10",
        note="控制良好",
        diagnosed_on=date(2024, 3, 1),
        resolved_on=date(2025, 5, 1),
    )
    before = await raw_row(home, "diagnosis", diagnosis)
    doctor = staff(home, StaffRole.DOCTOR)
    diagnosis_id = encode_id("Diagnosis", home, diagnosis)
    future = (date.today() + timedelta(days=30)).isoformat()

    cases: list[tuple[dict[str, Any], set[str]]] = [
        (
            {
                "condition": " ",
                "icd10": "XYZ",
                "note": "长" * 201,
                "diagnosedOn": future,
                "resolvedOn": "2024-01-01",
            },
            {"condition", "icd10", "note", "diagnosedOn", "resolvedOn"},
        ),
        # Against the stored dates: resolved before the stored diagnosis date, and the other way round.
        ({"resolvedOn": "2024-02-01"}, {"resolvedOn"}),
        ({"diagnosedOn": "2025-06-01"}, {"diagnosedOn"}),
        ({"resolvedOn": future}, {"resolvedOn"}),
    ]
    for changes, fields in cases:
        answer = await gql(client, UPDATE_DIAGNOSIS, {"input": {"id": diagnosis_id, **changes}}, token=doctor)
        payload = answer["data"]["updateDiagnosis"]
        assert payload["diagnosis"] is None
        assert {e["field"] for e in payload["userErrors"]} == fields, changes
        assert {e["code"] for e in payload["userErrors"]} == {"BAD_USER_INPUT"}
        assert await raw_row(home, "diagnosis", diagnosis) == before, changes


# Allergies ---------------------------------------------------------------------------------------


async def test_an_allergy_is_corrected_and_bad_changes_write_nothing(
    client: httpx.AsyncClient, world: World
) -> None:
    home = await institution("过敏更正养老院")
    resident = await admit(home, "过敏长者")
    allergy = await add_allergy(home, resident)
    before = await raw_row(home, "allergy", allergy)
    assert before is not None
    nurse = staff(home, StaffRole.NURSE)
    allergy_id = encode_id("Allergy", home, allergy)

    bad = await gql(
        client,
        UPDATE_ALLERGY,
        {"input": {"id": allergy_id, "substance": "", "reaction": "喉" * 201, "severity": "SEVERE"}},
        token=nurse,
    )
    assert bad["data"]["updateAllergy"]["allergy"] is None
    assert {e["field"] for e in bad["data"]["updateAllergy"]["userErrors"]} == {"substance", "reaction"}
    assert await raw_row(home, "allergy", allergy) == before

    good = await gql(
        client,
        UPDATE_ALLERGY,
        {"input": {"id": allergy_id, "reaction": "喉头水肿", "severity": "SEVERE"}},
        token=nurse,
    )
    assert good["data"]["updateAllergy"] == {
        "allergy": {"id": allergy_id, "substance": "青霉素", "reaction": "喉头水肿", "severity": "SEVERE"},
        "userErrors": [],
    }
    after = await raw_row(home, "allergy", allergy)
    assert after is not None
    assert after["details"] != before["details"]  # the entry's document, sealed again
    assert b"severe" not in bytes(after["details"]) and "喉头水肿".encode() not in bytes(after["details"])

    cleared = await gql(client, UPDATE_ALLERGY, {"input": {"id": allergy_id, "reaction": ""}}, token=nurse)
    assert cleared["data"]["updateAllergy"]["allergy"]["reaction"] is None


# Entries recorded in error -----------------------------------------------------------------------


async def test_entries_recorded_in_error_leave_the_record_but_are_kept_marked(
    client: httpx.AsyncClient, world: World
) -> None:
    home = await institution("误录测试养老院")
    resident = await admit(home, "误录长者")
    entries = {
        ("removeDiagnosis", "Diagnosis", "diagnosis"): await add_diagnosis(home, resident),
        ("removeMedication", "Medication", "medication"): await add_medication(home, resident),
        ("removeAllergy", "Allergy", "allergy"): await add_allergy(home, resident),
    }
    kept = await add_diagnosis(home, resident, condition="慢性胃炎")
    doctor = staff(home, StaffRole.DOCTOR)
    for (mutation, type_name, table), pk in entries.items():
        entry_id = encode_id(type_name, home, pk)
        removed = await gql(
            client, REMOVE.format(name=mutation, field="removedId"), {"id": entry_id}, token=doctor
        )
        assert removed["data"][mutation] == {"removedId": entry_id, "userErrors": []}, removed
        row = await raw_row(home, table, pk)
        assert row is not None  # kept, sealed, marked
        assert row["entered_in_error_by"] == "account:880003" and row["entered_in_error_at"] is not None
        again = await gql(
            client, REMOVE.format(name=mutation, field="removedId"), {"id": entry_id}, token=doctor
        )
        assert codes(again) == ["NOT_FOUND"]

    record = await gql(client, RECORD, {"id": encode_id("Resident", home, resident)}, token=doctor)
    assert record["data"]["resident"]["healthRecord"] == {
        "diagnoses": [
            {
                "id": encode_id("Diagnosis", home, kept),
                "condition": "慢性胃炎",
                "icd10": None,
                "note": None,
                "diagnosedOn": None,
                "resolvedOn": None,
            }
        ],
        "medications": [],
        "allergies": [],
    }
    # A removed entry can no longer be changed.
    removed_diagnosis = encode_id("Diagnosis", home, entries[("removeDiagnosis", "Diagnosis", "diagnosis")])
    changed = await gql(
        client, UPDATE_DIAGNOSIS, {"input": {"id": removed_diagnosis, "note": "篡改"}}, token=doctor
    )
    assert codes(changed) == ["NOT_FOUND"]
    removed_medication = encode_id(
        "Medication", home, entries[("removeMedication", "Medication", "medication")]
    )
    ended = await gql(
        client,
        'mutation($id: ID!) { endMedication(input: {id: $id, endedOn: "2025-12-01"}) { medication { id } } }',
        {"id": removed_medication},
        token=doctor,
    )
    assert codes(ended) == ["NOT_FOUND"]


# Access ------------------------------------------------------------------------------------------


async def test_roles_and_other_institutions(client: httpx.AsyncClient, world: World) -> None:
    home, elsewhere = await institution("权限测试养老院"), await institution("别家养老院")
    resident = await admit(home, "权限长者")
    diagnosis = await add_diagnosis(home, resident)
    allergy = await add_allergy(home, resident)
    member = await add_member(home, resident, "13911112222")
    rows = {
        ("diagnosis", diagnosis): await raw_row(home, "diagnosis", diagnosis),
        ("allergy", allergy): await raw_row(home, "allergy", allergy),
        ("family_member", member): await raw_row(home, "family_member", member),
    }
    probes = [
        (UPDATE_DIAGNOSIS, {"input": {"id": encode_id("Diagnosis", home, diagnosis), "note": "篡改"}}),
        (UPDATE_ALLERGY, {"input": {"id": encode_id("Allergy", home, allergy), "reaction": "篡改"}}),
        (
            REMOVE.format(name="removeDiagnosis", field="removedId"),
            {"id": encode_id("Diagnosis", home, diagnosis)},
        ),
        (REMOVE.format(name="removeAllergy", field="removedId"), {"id": encode_id("Allergy", home, allergy)}),
        (UPDATE_MEMBER, {"input": {"id": encode_id("FamilyMember", home, member), "name": "篡改"}}),
        (
            REMOVE.format(name="removeFamilyMember", field="removedFamilyMemberId"),
            {"id": encode_id("FamilyMember", home, member)},
        ),
    ]
    health_only, family_only = StaffRole.CAREGIVER, StaffRole.FINANCE
    for number, (operation, variables) in enumerate(probes):
        role = health_only if number < 4 else family_only
        refused = await gql(client, operation, variables, token=staff(home, role))
        assert codes(refused) == ["FORBIDDEN"], operation
        # The same real ids, from another institution, by a role that could: NOT_FOUND.
        foreign = await gql(
            client, operation, variables, token=staff(elsewhere, StaffRole.DOCTOR, StaffRole.NURSE)
        )
        assert codes(foreign) == ["NOT_FOUND"], operation
        assert foreign.get("data") is None
    for (table, pk), before in rows.items():
        assert await raw_row(home, table, pk) == before


async def test_an_erased_residents_entries_are_gone_and_its_relatives_can_be_removed(
    client: httpx.AsyncClient, world: World
) -> None:
    home = await institution("抹除更正养老院")
    resident = await admit(home, "抹除长者")
    diagnosis = await add_diagnosis(home, resident)
    allergy = await add_allergy(home, resident)
    medication = await add_medication(home, resident)
    member = await add_member(home, resident, "13922223333")
    await in_tenant(home, lambda: destroy_data_key(resident))
    token = staff(home, StaffRole.HEAD_NURSE)

    gone = [
        (
            UPDATE_DIAGNOSIS,
            {"input": {"id": encode_id("Diagnosis", home, diagnosis), "resolvedOn": "2025-06-01"}},
        ),
        (UPDATE_ALLERGY, {"input": {"id": encode_id("Allergy", home, allergy), "severity": "MILD"}}),
        (
            REMOVE.format(name="removeMedication", field="removedId"),
            {"id": encode_id("Medication", home, medication)},
        ),
        (UPDATE_MEMBER, {"input": {"id": encode_id("FamilyMember", home, member), "phone": "13933334444"}}),
    ]
    for operation, variables in gone:
        assert codes(await gql(client, operation, variables, token=token)) == ["GONE"], operation
    assert (await raw_row(home, "medication", medication) or {})["entered_in_error_at"] is None

    member_id = encode_id("FamilyMember", home, member)
    removed = await gql(
        client,
        REMOVE.format(name="removeFamilyMember", field="removedFamilyMemberId"),
        {"id": member_id},
        token=token,
    )
    assert removed["data"]["removeFamilyMember"] == {"removedFamilyMemberId": member_id, "userErrors": []}
    assert await raw_row(home, "family_member", member) is None


# Family members ----------------------------------------------------------------------------------


async def test_a_relatives_new_phone_finds_the_resident_and_the_old_one_no_longer_does(
    client: httpx.AsyncClient, world: World
) -> None:
    home = await institution("家属更正养老院")
    resident = await admit(home, "家属更正长者")
    member = await add_member(home, resident, "13812345678")
    before = await raw_row(home, "family_member", member)
    assert before is not None
    butler = staff(home, StaffRole.BUTLER)
    member_id = encode_id("FamilyMember", home, member)
    assert (await gql(client, BY_PHONE, {"phone": "13812345678"}, token=butler))["data"]["residents"][
        "totalCount"
    ] == 1

    bad = await gql(
        client,
        UPDATE_MEMBER,
        {"input": {"id": member_id, "name": " ", "phone": "12345", "relationship": "SON"}},
        token=butler,
    )
    assert bad["data"]["updateFamilyMember"]["familyMember"] is None
    assert {(e["field"], e["code"]) for e in bad["data"]["updateFamilyMember"]["userErrors"]} == {
        ("name", "BAD_USER_INPUT"),
        ("phone", "BAD_USER_INPUT"),
    }
    assert await raw_row(home, "family_member", member) == before

    changed = await gql(
        client,
        UPDATE_MEMBER,
        {"input": {"id": member_id, "phone": " 13987654321 ", "relationship": "DAUGHTER_IN_LAW"}},
        token=butler,
    )
    assert changed["data"]["updateFamilyMember"] == {
        "familyMember": {
            "id": member_id,
            "name": "王秀兰",
            "relationship": "DAUGHTER_IN_LAW",
            "phone": "13987654321",
            "isEmergencyContact": True,
        },
        "userErrors": [],
    }
    found = await gql(client, BY_PHONE, {"phone": "13987654321"}, token=butler)
    assert found["data"]["residents"]["edges"] == [{"node": {"name": "家属更正长者"}}]
    old = await gql(client, BY_PHONE, {"phone": "13812345678"}, token=butler)
    assert old["data"]["residents"]["totalCount"] == 0

    after = await raw_row(home, "family_member", member)
    assert after is not None
    assert after["name_enc"] == before["name_enc"]  # unchanged: not sealed again
    assert after["phone_enc"] != before["phone_enc"] and after["phone_bidx"] != before["phone_bidx"]
    assert b"13987654321" not in bytes(after["phone_enc"]) and b"9876" not in bytes(after["phone_enc"])

    renamed = await gql(
        client,
        UPDATE_MEMBER,
        {"input": {"id": member_id, "name": "王秀芳", "isEmergencyContact": False}},
        token=staff(home, StaffRole.NURSE),
    )
    assert renamed["data"]["updateFamilyMember"]["familyMember"]["name"] == "王秀芳"
    assert renamed["data"]["updateFamilyMember"]["familyMember"]["isEmergencyContact"] is False
    final = await raw_row(home, "family_member", member)
    assert final is not None and "王秀芳".encode() not in bytes(final["name_enc"])
    assert final["phone_enc"] == after["phone_enc"]


async def test_removing_a_relative_keeps_the_log_and_ends_family_following(
    client: httpx.AsyncClient, world: World
) -> None:
    home = await institution("家属删除养老院")
    resident = await admit(home, "家属删除长者")
    member = await add_member(home, resident, "13855556666")

    async def log() -> int:
        entry = await record_family_communication(
            resident,
            NewFamilyCommunication(
                datetime(2026, 1, 2, 10, 0), Channel.PHONE, Direction.TO_FAMILY, "告知体检结果", member
            ),
            recorded_by="account:1",
        )
        return entry.id

    entry = await in_tenant(home, log)
    account = await create_account(
        NewAccount(
            AccountKind.FAMILY,
            f"relative-{uuid.uuid4().hex[:8]}@example.com",
            "王秀兰",
            "a-long-passphrase-9",
        )
    )
    await add_family_link(account, home, family_member_id=member, resident_id=resident)
    follower = token_for(Principal(f"account:{account.id}", PrincipalKind.FAMILY))
    # The resident's id (her name would need a consent naming this relative: compliance/consent.py).
    followed = await gql(client, "{ residents { edges { node { id } } } }", token=follower)
    assert followed["data"]["residents"]["edges"] == [{"node": {"id": encode_id("Resident", home, resident)}}]

    member_id = encode_id("FamilyMember", home, member)
    removed = await gql(
        client,
        REMOVE.format(name="removeFamilyMember", field="removedFamilyMemberId"),
        {"id": member_id},
        token=staff(home, StaffRole.SALES),
    )
    assert removed["data"]["removeFamilyMember"] == {"removedFamilyMemberId": member_id, "userErrors": []}
    assert await raw_row(home, "family_member", member) is None
    logged = await raw_row(home, "family_communication", entry)
    assert logged is not None and logged["family_member_id"] is None
    assert not await FamilyLink.filter(account_id=account.id).exists()
    # The account follows nobody any more: it acts in no institution.
    unfollowed = await gql(client, "{ residents { edges { node { name } } } }", token=follower)
    assert codes(unfollowed) == ["BAD_USER_INPUT"] and unfollowed.get("data") is None
    members = await gql(
        client,
        "query($id: ID!) { resident(id: $id) { familyMembers { totalCount } } }",
        {"id": encode_id("Resident", home, resident)},
        token=staff(home, StaffRole.SALES),
    )
    assert members["data"]["resident"]["familyMembers"]["totalCount"] == 0
    again = await gql(
        client,
        REMOVE.format(name="removeFamilyMember", field="removedFamilyMemberId"),
        {"id": member_id},
        token=staff(home, StaffRole.SALES),
    )
    assert codes(again) == ["NOT_FOUND"]

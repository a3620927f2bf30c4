"""The audit log: events chained gaplessly in the unit of work of the work they record, under concurrent
writers too; rolled back with failed work; checkpoints signed and verified; a read of vitals through
GraphQL recorded."""

import asyncio
import itertools
from datetime import UTC, datetime

import httpx
import pytest

from care.models import CareLevel, Gender
from care.residents import Admission, admit_resident
from compliance.audit import AuditEvent, Outcome, record_event, record_request_event
from compliance.audit.chain import GENESIS_HASH, canonical_encoding
from compliance.audit.checkpoints import checkpoint, checkpoints_of
from compliance.audit.verify import verify_tenant
from compliance.principals import Principal, PrincipalKind, StaffRole
from schema.ids import encode_id
from tenants.context import OutsideTenantScope
from tenants.db import default_connection
from tests.compliance.audit_support import append, event, fresh_tenant, in_tenant, rows
from tests.conftest import World, gql, staff_token


async def test_events_form_a_chain_that_verifies(world: World) -> None:
    tenant = await fresh_tenant("审计链养老院")
    recorded = await append(tenant, 6)
    assert [r.seq for r in recorded] == [1, 2, 3, 4, 5, 6]
    stored = await rows(tenant)
    assert [row["seq"] for row in stored] == [1, 2, 3, 4, 5, 6]
    assert bytes(stored[0]["prev_hash"]) == GENESIS_HASH
    for before, after in itertools.pairwise(stored):
        assert bytes(after["prev_hash"]) == bytes(before["hash"])
    assert stored[4]["outcome"] == "denied" and stored[4]["reason_code"] == "no_consent"
    assert stored[0]["data_categories"] == ["vitals"]

    point = await checkpoint(tenant)
    assert point is not None and (point.seq, point.hash) == (6, bytes(stored[-1]["hash"]))
    assert await checkpoint(tenant) == point  # the same seq twice: the stored one
    await append(tenant, 2, first=7)
    await checkpoint(tenant)
    assert [p.seq for p in await checkpoints_of(tenant.institution_id)] == [6, 8]
    report = await verify_tenant(tenant)
    assert report.intact, report.lines()
    assert (report.events, report.last_seq, report.checkpoints) == (8, 8, 2)


async def test_an_empty_log_verifies_and_has_no_checkpoint(world: World) -> None:
    tenant = await fresh_tenant("审计空养老院")
    assert await checkpoint(tenant) is None
    report = await verify_tenant(tenant)
    assert report.intact and report.events == 0


async def test_concurrent_writers_produce_a_gapless_chain(world: World) -> None:
    tenant = await fresh_tenant("审计并发养老院")

    async def unit(number: int) -> None:
        async def work() -> None:
            # Resolvers of one request append concurrently on the unit's one connection, too.
            await asyncio.gather(*(record_event(event(number * 10 + k)) for k in range(3)))

        await in_tenant(tenant, work)

    await asyncio.gather(*(unit(number) for number in range(25)))
    stored = await rows(tenant)
    assert [row["seq"] for row in stored] == list(range(1, 76))
    report = await verify_tenant(tenant)
    assert report.intact, report.lines()


async def test_an_event_is_rolled_back_with_the_work_that_fails(world: World) -> None:
    tenant = await fresh_tenant("审计回滚养老院")
    await append(tenant, 2)

    async def failing() -> None:
        await record_event(event(3))
        raise RuntimeError("the work failed after recording")

    with pytest.raises(RuntimeError):
        await in_tenant(tenant, failing)
    assert [row["seq"] for row in await rows(tenant)] == [1, 2]
    await append(tenant, 1, first=3)
    assert [row["seq"] for row in await rows(tenant)] == [1, 2, 3]  # no gap left by the rolled-back one


async def test_the_work_fails_when_its_event_cannot_be_written(world: World) -> None:
    tenant = await fresh_tenant("审计失败养老院")

    async def admit_and_record() -> None:
        await admit_resident(
            Admission("审计长者", Gender.FEMALE, datetime(1940, 1, 1).date(), CareLevel.ASSISTED, TODAY)
        )
        # An action longer than the column allows: the insert fails, and with it the admission.
        await record_event(
            AuditEvent(principal_subject="account:1", principal_kind="staff", action="x" * 1001)
        )

    with pytest.raises(Exception):  # noqa: B017 (the database's check violation, as tortoise wraps it)
        await in_tenant(tenant, admit_and_record)

    async def residents() -> int:
        _, found = await default_connection().execute_query("SELECT count(*) AS n FROM resident")
        return found[0]["n"]

    assert await in_tenant(tenant, residents) == 0
    assert await rows(tenant) == []


TODAY = datetime(2026, 12, 1, tzinfo=UTC).date()


async def test_recording_needs_a_unit_of_work_and_a_reason_for_denials() -> None:
    with pytest.raises(OutsideTenantScope):
        await record_event(event(1))
    with pytest.raises(ValueError):
        AuditEvent(principal_subject="account:1", principal_kind="staff", action="a", outcome=Outcome.DENIED)
    with pytest.raises(ValueError):
        AuditEvent(principal_subject="account:1", principal_kind="staff", action="a", reason_code="x")


def test_the_encoding_is_unambiguous() -> None:
    moment = datetime(2026, 12, 1, 8, 0, 0, 123456, tzinfo=UTC)

    def encoded(subject: str, kind: str, roles: list[str], client: str | None, purpose: str | None) -> bytes:
        return canonical_encoding(
            1, 1, moment, subject, kind, roles, client, "a", None, [], purpose, "permitted", None, None, None,
            GENESIS_HASH,
        )  # fmt: skip

    base = encoded("ab", "c", ["x", "y"], None, None)
    assert encoded("a", "bc", ["x", "y"], None, None) != base  # a character moved between fields
    assert encoded("ab", "c", ["xy"], None, None) != base  # list items joined
    assert encoded("ab", "c", ["x", "y"], "", None) != base  # empty text is not null
    assert encoded("ab", "c", ["x", "y"], None, "") != encoded("ab", "c", ["x", "y"], "", None)


async def test_reading_vitals_through_graphql_records_a_read_event(
    world: World, client: httpx.AsyncClient
) -> None:
    tenant = await fresh_tenant("审计读取养老院")

    async def admit() -> int:
        record = await admit_resident(
            Admission("读取长者", Gender.MALE, datetime(1938, 5, 6).date(), CareLevel.ASSISTED, TODAY)
        )
        return record.id

    resident_id = await in_tenant(tenant, admit)
    query = "query($id: ID!) { resident(id: $id) { vitals(first: 5) { totalCount } } }"
    token = staff_token(tenant.institution_id, StaffRole.NURSE)
    body = await gql(
        client, query, {"id": encode_id("Resident", tenant.institution_id, resident_id)}, token=token
    )
    assert "errors" not in body, body
    # The resident's identity (the field `resident`) and its vitals, read in one request: one event that
    # names both actions and both categories (reads of one resident are coalesced).
    (row,) = await rows(tenant)
    assert row["action"] == "resident.view,vitals.view" and row["resident_id"] == resident_id
    assert row["principal_subject"] == f"account:{900_000 + tenant.institution_id}"
    assert (row["principal_kind"], row["roles"], row["outcome"]) == ("staff", ["nurse"], "permitted")
    assert row["data_categories"] == ["identity", "vitals"] and row["request_id"]
    assert (row["purpose"], row["client_id"]) == ("care_delivery", "yiyang-tests")


async def test_the_request_helper_fills_principal_request_and_address(world: World) -> None:
    from dataclasses import dataclass

    @dataclass(frozen=True)
    class Facts:
        principal: Principal | None
        request_id: str
        client_address: str

    tenant = await fresh_tenant("审计请求养老院")
    family = Principal(subject="account:55", kind=PrincipalKind.FAMILY, client_id="family-app")

    async def work() -> None:
        await record_request_event(Facts(family, "r-1", "192.0.2.9"), "vitals.view", resident_id=3)
        await record_request_event(
            Facts(None, "r-2", ""), "vitals.view", outcome=Outcome.DENIED, reason_code="unauthenticated"
        )

    await in_tenant(tenant, work)
    first, second = await rows(tenant)
    assert (first["principal_subject"], first["principal_kind"], first["client_id"]) == (
        "account:55",
        "family",
        "family-app",
    )
    assert (first["request_id"], first["client_ip"], first["resident_id"]) == ("r-1", "192.0.2.9", 3)
    assert (second["principal_kind"], second["client_ip"], second["reason_code"]) == (
        "anonymous",
        None,
        "unauthenticated",
    )

"""Helpers of the audit tests: a fresh institution, events written in units of work, raw SQL."""

from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any, TypeVar

from compliance.audit import AuditEvent, Outcome, RecordedEvent, record_event
from tenants.context import TenantRef
from tenants.db import default_connection, owner_connection
from tenants.registry import NewInstitution, provision_institution, tenant_ref
from tenants.unit_of_work import run_in_tenant

T = TypeVar("T")


async def fresh_tenant(name: str) -> TenantRef:
    return tenant_ref(await provision_institution(NewInstitution(name=name, region_code="test-east")))


def event(number: int, *, resident_id: int | None = 1) -> AuditEvent:
    return AuditEvent(
        principal_subject=f"account:{700 + number % 3}",
        principal_kind="staff",
        roles=("nurse",),
        client_id="yiyang-tests",
        action="vitals.view" if number % 2 else "health_record.view",
        resident_id=resident_id,
        data_categories=("vitals",) if number % 2 else ("diagnoses", "medications"),
        purpose="care_delivery",
        outcome=Outcome.PERMITTED if number % 5 else Outcome.DENIED,
        reason_code=None if number % 5 else "no_consent",
        request_id=f"req-{number}",
        client_ip="10.0.0.7",
    )


async def in_tenant(tenant: TenantRef, work: Callable[[], Awaitable[T]]) -> T:
    return await run_in_tenant(tenant, work)


async def append(tenant: TenantRef, count: int, *, first: int = 1) -> list[RecordedEvent]:
    """`count` events, each in a unit of work of its own."""
    recorded: list[RecordedEvent] = []
    for number in range(first, first + count):

        async def one(number: int = number) -> RecordedEvent:
            return await record_event(event(number))

        recorded.append(await in_tenant(tenant, one))
    return recorded


async def rows(tenant: TenantRef) -> list[dict[str, Any]]:
    return await default_connection().execute_query_dict(
        f'SELECT * FROM "{tenant.schema_name}".audit_event ORDER BY seq'
    )


async def tamper(tenant: TenantRef, *statements: str, parameters: list[object] | None = None) -> None:
    """Statements run as the database superuser with the append-only trigger bypassed (what someone with
    the server's superuser can do), in the tenant's schema: on the owner's connection, since the
    application's role can do neither."""
    async with owner_connection() as connection, connection.transaction():
        await connection.execute(
            f'SET LOCAL session_replication_role = replica; SET LOCAL search_path TO "{tenant.schema_name}"'
        )
        for statement in statements:
            await connection.execute(statement, *(parameters or []))


TODAY = date(2026, 12, 1)

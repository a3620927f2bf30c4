"""Institutions of the sweep tests' own, with overdue care tasks made in bulk, and what was delivered."""

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from care import care_plans as plans
from care.models import CareLevel, Gender
from care.residents import Admission, admit_resident
from compliance.identity.account_models import UserAccount
from compliance.principals import StaffRole
from tenants.context import TenantRef
from tenants.db import default_connection
from tenants.registry import NewInstitution, provision_institution, tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.care.notification_support import staff_account


@dataclass(frozen=True)
class Overdue:
    tenant: TenantRef
    lead: UserAccount  # the head nurse the escalations go to
    task_ids: list[int]


async def overdue_institution(label: str, now: datetime, *, residents: int = 2, tasks: int = 10) -> Overdue:
    """A new institution whose residents each have `tasks` open care tasks, all past due and grace at
    `now`, and a head nurse with an e-mail address."""
    tenant = tenant_ref(
        await provision_institution(
            NewInstitution(name=f"{label}-{uuid.uuid4().hex[:6]}", region_code="test-east")
        )
    )
    lead = await staff_account(tenant.institution_id, StaffRole.HEAD_NURSE)

    async def make() -> list[int]:
        ids: list[int] = []
        for number in range(residents):
            resident = await admit_resident(
                Admission(
                    f"巡检长者{number}", Gender.FEMALE, date(1940, 1, 2), CareLevel.ASSISTED, date(2026, 1, 2)
                )
            )
            item = await plans.add_item(
                resident.id,
                plans.NewItem(
                    kind=plans.TaskKind.REPOSITIONING,
                    recurrence="FREQ=HOURLY;BYMINUTE=0",
                    duration_minutes=5,
                    starts_at=now + timedelta(days=30),
                    role=StaffRole.CAREGIVER,
                ),
                recorded_by="account:1",
                now=now,
            )
            rows = await default_connection().execute_query_dict(
                """INSERT INTO care_task (item_id, item_version, resident_id, kind, due_at, duration_minutes,
                       assignee_role)
                   SELECT $1, $2, $3, 'repositioning', $4::timestamptz - make_interval(mins => 60 + g), 5,
                       'caregiver'
                   FROM generate_series(1, $5) AS g
                   RETURNING id""",
                [item.id, item.version, resident.id, now, tasks],
            )
            ids.extend(row["id"] for row in rows)
        return ids

    return Overdue(tenant, lead, await run_in_tenant(tenant, make))


async def escalated(tenant: TenantRef, task_ids: list[int]) -> dict[int, datetime | None]:
    rows = await default_connection().execute_query_dict(
        f'SELECT id, escalated_at FROM "{tenant.schema_name}".care_task WHERE id = ANY($1::bigint[])',
        [task_ids],
    )
    return {row["id"]: row["escalated_at"] for row in rows}


async def inbox_of(tenant: TenantRef, account_id: int) -> list[int]:
    """The task ids of the overdue notifications in `account_id`'s inbox, one entry per inbox row."""
    rows = await default_connection().execute_query_dict(
        f"""SELECT o.subject_id FROM "{tenant.schema_name}".notification_inbox i
            JOIN "{tenant.schema_name}".notification_outbox o ON o.id = i.outbox_id
            WHERE i.account_id = $1 AND o.kind = 'task.overdue'""",
        [account_id],
    )
    return sorted(row["subject_id"] for row in rows)


async def outbox_states(tenant: TenantRef) -> dict[str, int]:
    rows = await default_connection().execute_query_dict(
        f'SELECT state, count(*) AS n FROM "{tenant.schema_name}".notification_outbox GROUP BY state'
    )
    return {row["state"]: row["n"] for row in rows}

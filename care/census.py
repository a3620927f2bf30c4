"""The daily census of an institution: residents in residence, admissions and discharges of a day.

Written to the shared fact table so that facilities can be compared without reading tenant schemas.
"""

from dataclasses import dataclass
from datetime import date

from tortoise import connections
from tortoise.expressions import Q

from care.models import Resident
from tenants.context import current_tenant
from tenants.schema_names import SHARED_SCHEMA


@dataclass(frozen=True)
class Census:
    day: date
    in_residence: int
    admissions: int
    discharges: int


async def census_on(day: date) -> Census:
    still_there = Q(discharged_on__isnull=True) | Q(discharged_on__gt=day)
    in_residence = await Resident.filter(Q(admission_date__lte=day) & still_there).count()
    admissions = await Resident.filter(admission_date=day).count()
    discharges = await Resident.filter(discharged_on=day).count()
    return Census(day=day, in_residence=in_residence, admissions=admissions, discharges=discharges)


async def record_census(day: date) -> Census:
    """Compute the census of `day` and upsert it into the shared fact table (idempotent)."""
    census = await census_on(day)
    tenant = current_tenant()
    await connections.get("default").execute_query(
        f"""INSERT INTO {SHARED_SCHEMA}.institution_daily_census
                (institution_id, day, residents_in_residence, admissions, discharges, bed_capacity)
            SELECT $1, $2, $3, $4, $5, bed_capacity FROM {SHARED_SCHEMA}.institution WHERE id = $1
            ON CONFLICT (institution_id, day) DO UPDATE SET
                residents_in_residence = excluded.residents_in_residence,
                admissions = excluded.admissions,
                discharges = excluded.discharges,
                bed_capacity = excluded.bed_capacity,
                computed_at = now()""",
        [tenant.institution_id, day, census.in_residence, census.admissions, census.discharges],
    )
    return census

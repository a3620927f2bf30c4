"""Prints, as JSON, every institution's residents and family members decrypted through the domain:
`python -m tests.care.decrypted_dump` with DATABASE_URL set. Tests that seed in a subprocess (a database
of their own) use it to see what the sealed columns hold."""

import asyncio
import json
import os

from care.health_record import health_records_of
from care.residents import ResidentFilter, family_members_of, list_residents
from tenants.db import close_database, open_database
from tenants.models import Institution
from tenants.registry import tenant_ref
from tenants.unit_of_work import run_in_tenant


async def _institution(institution: Institution) -> dict:
    async def read() -> dict:
        residents = await list_residents(ResidentFilter(), after_id=None, limit=1_000_000)
        families = await family_members_of([r.id for r in residents])
        health = await health_records_of([r.id for r in residents if r.identity is not None])
        return {
            "residents": [
                {
                    "id": r.id,
                    "name": r.identity.name if r.identity else None,
                    "gender": r.identity.gender.value if r.identity else None,
                    "birth_date": r.identity.birth_date.isoformat() if r.identity else None,
                    "id_card_number": r.identity.id_card_number if r.identity else None,
                    "phone": r.identity.phone if r.identity else None,
                    "discharge_note": r.discharge_note,
                }
                for r in residents
            ],
            "family": [
                {"id": m.id, "resident_id": m.resident_id, "name": m.name, "phone": m.phone}
                for r in residents
                for m in families[r.id]
            ],
            # The sealed free texts of the rest of the record, for scans that look for them in plaintext.
            "record_texts": sorted(
                {
                    text
                    for record in health.values()
                    for text in (
                        *(d.condition for d in record.diagnoses),
                        *(d.note for d in record.diagnoses),
                        *(m.drug for m in record.medications),
                        *(m.prescriber for m in record.medications),
                        *(a.substance for a in record.allergies),
                        *(a.reaction for a in record.allergies),
                    )
                    if text
                }
            ),
        }

    return await run_in_tenant(tenant_ref(institution), read)


async def main() -> None:
    await open_database(os.environ["DATABASE_URL"])
    try:
        dump = {
            institution.schema_name: await _institution(institution)
            for institution in await Institution.all().order_by("id")
        }
    finally:
        await close_database()
    print(json.dumps(dump, ensure_ascii=False))


if __name__ == "__main__":
    asyncio.run(main())

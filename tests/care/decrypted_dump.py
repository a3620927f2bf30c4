"""Prints, as JSON, every institution's residents and family members decrypted through the domain:
`python -m tests.care.decrypted_dump` with DATABASE_URL set. Tests that seed in a subprocess (a database
of their own) use it to see what the sealed columns hold."""

import asyncio
import json
import os
from collections.abc import Iterator
from dataclasses import fields, is_dataclass
from enum import Enum

from care.assessment_records import latest_assessments_of
from care.emergency_contacts import contacts_of
from care.family_log import first_pages_of
from care.health_record import health_records_of
from care.preferences import current_preferences_of
from care.reports import reports_of
from care.residents import ResidentFilter, family_members_of, list_residents
from care.timeline import latest_records_of
from tenants.db import close_database, open_database
from tenants.models import Institution
from tenants.registry import tenant_ref
from tenants.unit_of_work import run_in_tenant

# Who wrote what (principal subjects) is plaintext on purpose; enum values are plaintext codes.
_NOT_SEALED = frozenset({"recorded_by", "assessor", "uploaded_by"})


def _texts(value: object) -> Iterator[str]:
    """Every free text inside `value` (dataclasses, lists, dicts), enums and who-wrote-it fields left out."""
    if isinstance(value, Enum) or value is None:
        return
    if isinstance(value, str):
        # Short ASCII (codes such as "F03") would turn up in any few MB of random ciphertext bytes.
        if (len(value) >= 2 and not value.isascii()) or len(value) >= 8:
            yield value
    elif is_dataclass(value) and not isinstance(value, type):
        for item in fields(value):
            if item.name not in _NOT_SEALED:
                yield from _texts(getattr(value, item.name))
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _texts(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _texts(item)


async def _record_texts(ids: list[int]) -> set[str]:
    """What every part of the record holds as free text, read through the domain."""
    parts: list[object] = [
        await health_records_of(ids),
        await current_preferences_of(ids),
        await contacts_of(ids),
        await first_pages_of(ids, 100),
        await latest_records_of(ids, 50),  # the most it reads a resident; the seed writes a week
        await reports_of(ids),
        await latest_assessments_of(ids),
    ]
    return {text for part in parts for text in _texts(part)}


async def _institution(institution: Institution) -> dict:
    async def read() -> dict:
        residents = await list_residents(ResidentFilter(), after_id=None, limit=1_000_000)
        families = await family_members_of([r.id for r in residents])
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
            "record_texts": sorted(await _record_texts([r.id for r in residents if r.identity is not None])),
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

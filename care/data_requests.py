"""Data-subject requests about a resident (PIPL arts. 45 and 47): an export of everything the institution
holds about them, machine-readable, and erasure by crypto-shredding.

The export reads every part of the record through its own module (what each part holds is decided
there, not here) and returns it as one JSON document: the domain's objects as they read, files included
(base64). Erasure destroys the resident's data key (every sealed field of every part becomes unreadable
at once, backups included), removes what could still single them out without it (the blind indexes of
their ID-card number and phone, their relatives' rows with the phone's blind index, the family accounts'
links) and writes a tombstone: who erased, when, why. Placement, care level and dates stay: they are
plaintext care-operations data that no longer point to anyone (docs/security.md, "Crypto-shredding").
"""

import base64
import dataclasses
import json
import re
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum, StrEnum
from typing import Any, TypeVar

from care import (
    assessment_records,
    care_plans,
    emergency_contacts,
    family_log,
    health_record,
    photos,
    preferences,
    reports,
    residents,
    sops,
    tasks,
    timeline,
    vital_rules,
    vitals,
    webhooks,
    work_orders,
)
from care.models import FamilyMember
from care.sealed_rows import ERASED, execute
from compliance.encryption import destroy_data_key
from compliance.identity.account_models import FamilyLink
from tenants.context import current_tenant
from tenants.errors import Conflict, Erased, InvalidInput, NotFound, raise_if_any

EXPORT_FORMAT = "yiyang.resident-export/1"
MAX_REFERENCE = 40
_REFERENCE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9/_-]*$")
_PAGE = 500
T = TypeVar("T")


def _plain(value: object) -> object:
    """What json.dumps cannot write by itself, as JSON values."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, frozenset | set):
        return sorted(_plain(item) for item in value)  # type: ignore[type-var]
    raise TypeError(f"not exportable: {type(value).__name__}")


def _data(value: object) -> Any:
    """Dataclasses (nested, in lists, in dicts) as plain dicts; the rest as it is."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {field.name: _data(getattr(value, field.name)) for field in dataclasses.fields(value)}
    if isinstance(value, list | tuple):
        return [_data(item) for item in value]
    if isinstance(value, dict):
        return {
            str(_plain(key) if not isinstance(key, str) else key): _data(item) for key, item in value.items()
        }
    return value


async def _all_pages(
    page: Callable[[T | None], Awaitable[Sequence[Any]]], cursor: Callable[[Any], T]
) -> list[Any]:
    found: list[Any] = []
    after: T | None = None
    while True:
        rows = await page(after)
        found.extend(rows)
        if len(rows) < _PAGE:
            return found
        after = cursor(rows[-1])


def _or_erased(value: T | Erased) -> T:
    if isinstance(value, Erased):
        raise value
    return value


# Every due time a task can have: the export holds them all, past and materialized ahead.
_EVER = (datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC))


async def export_resident(resident_id: int) -> dict[str, Any]:
    """Everything held about the resident, as one JSON-ready document. NotFound; Erased (GONE) when the
    resident was erased (nothing personal is left to export)."""
    resident = await residents.get_resident(resident_id)
    if resident.identity is None:
        raise Erased(ERASED)
    ids = [resident_id]
    photo = (await photos.photos_of(ids))[resident_id]
    photo_file = None
    if photo is not None:
        meta = _or_erased(photo)
        photo_file = {"meta": _data(meta), "file": _data(await photos.photo_file(resident_id, meta.id))}
    report_list = (await reports.reports_of(ids))[resident_id].require()
    document = {
        "format": EXPORT_FORMAT,
        "exported_at": datetime.now(UTC),
        "institution_id": current_tenant().institution_id,
        "resident": _data(resident),
        "photo": photo_file,
        "family_members": _data((await residents.family_members_of(ids))[resident_id]),
        "emergency_contacts": _data(_or_erased((await emergency_contacts.contacts_of(ids))[resident_id])),
        "health_record": _data((await health_record.health_records_of(ids))[resident_id]),
        "vital_readings": _data(
            await _all_pages(
                lambda after: vitals.list_readings(
                    resident_id, vitals.ReadingFilter(), after_id=after, limit=_PAGE
                ),
                lambda reading: reading.id,
            )
        ),
        "assessments": _data(
            await _all_pages(
                lambda after: assessment_records.list_assessments(
                    resident_id, None, after_id=after, limit=_PAGE
                ),
                lambda assessment: assessment.id,
            )
        ),
        "preferences": _data(await preferences.preferences_history(resident_id)),
        "family_communications": _data(
            await _all_pages(
                lambda after: family_log.communications_page(resident_id, after_id=after, limit=_PAGE),
                lambda entry: entry.id,
            )
        ),
        "service_records": _data(
            await _all_pages(
                lambda after: timeline.timeline(
                    resident_id, timeline.TimelineFilter(), after=after, limit=_PAGE
                ),
                lambda record: (record.occurred_at, record.id),
            )
        ),
        "care_plan": _data(await care_plans.plan_of(resident_id)),
        "care_tasks": _data(
            await _all_pages(
                lambda after: tasks.resident_tasks(
                    resident_id, _EVER[0], _EVER[1], after_key=after, limit=_PAGE
                ),
                tasks.page_key,
            )
        ),
        "vital_rule_firings": _data(
            await _all_pages(
                lambda before: vital_rules.firings_of(resident_id, before_id=before, limit=_PAGE),
                lambda firing: firing.id,
            )
        ),
        "sop_butler_account_id": await sops.butler_of(resident_id),
        "sop_instances": _data(await sops.instances_of(resident_id)),
        "work_orders": await _work_orders(resident_id),
        "checkup_reports": [
            {"meta": _data(meta), "file": _data(await reports.report_file(resident_id, meta.id))}
            for meta in report_list
        ],
        # Events about the resident delivered to integrators (ids only; when, to whom, which host).
        "webhook_disclosures": _data(await webhooks.disclosures_about(resident_id)),
    }
    # Through JSON once: what goes out is exactly what a client receives, and nothing is left unencodable.
    return json.loads(json.dumps(document, default=_plain, ensure_ascii=False))


async def _work_orders(resident_id: int) -> list[dict[str, Any]]:
    """The work orders about the resident, each with its comments and history."""
    found = await work_orders.resident_work_orders(resident_id)
    ids = [order.id for order in found]
    comments, events = await work_orders.comments_of(ids), await work_orders.events_of(ids)
    return [
        {**_data(order), "comments": _data(comments[order.id]), "history": _data(events[order.id])}
        for order in found
    ]


class ErasureReason(StrEnum):
    """Why a resident was erased. A code, not free text: the tombstone outlives the data key, so it must
    not hold anything personal."""

    DATA_SUBJECT_REQUEST = "data_subject_request"  # the resident asked (PIPL art. 47)
    GUARDIAN_REQUEST = "guardian_request"  # their guardian asked for them
    RETENTION_ENDED = "retention_ended"  # the period the institution must keep records for is over
    CONSENT_WITHDRAWN = "consent_withdrawn"  # the processing it served has no other basis


@dataclasses.dataclass(frozen=True, slots=True)
class Erasure:
    resident_id: int
    erased_at: datetime
    erased_by: str
    reason: ErasureReason
    reference: str | None  # the request's number in the institution's own register
    data_keys_destroyed: int
    relatives_removed: int


async def erase_resident(
    resident_id: int, *, reason: ErasureReason, reference: str | None, erased_by: str
) -> Erasure:
    """Crypto-shred the resident: their data key is destroyed, what could still single them out without
    it is removed, a tombstone says who erased them, when and why. NotFound; Conflict if already erased;
    ValidationFailed for a bad reference (nothing done)."""
    problems: list[InvalidInput] = []
    cleaned = (reference or "").strip() or None
    if cleaned is not None and (len(cleaned) > MAX_REFERENCE or not _REFERENCE.fullmatch(cleaned)):
        problems.append(
            InvalidInput(
                "A reference is up to {max} letters, digits, dashes or slashes (a request number, nothing "
                "personal).",
                field="reference",
                max=MAX_REFERENCE,
            )
        )
    raise_if_any(problems)
    if not await execute("SELECT 1 FROM resident WHERE id = $1 FOR UPDATE", [resident_id]):
        raise NotFound("Resident not found.")
    if await execute("SELECT 1 FROM resident_erasure WHERE resident_id = $1", [resident_id]):
        raise Conflict("This resident's data was already erased.")
    destroyed = await destroy_data_key(resident_id)
    # The blind indexes are keyed hashes of an ID-card number and a phone: without the data key they
    # would still tell whether a given number was this resident's. The sealed values go with them (a
    # CHECK keeps each pair together); the other sealed columns are unreadable ciphertext now.
    await execute(
        """UPDATE resident SET id_card_number_enc = NULL, id_card_number_bidx = NULL,
                                phone_enc = NULL, phone_bidx = NULL
           WHERE id = $1""",
        [resident_id],
    )
    relatives = await FamilyMember.filter(resident_id=resident_id).delete()
    await FamilyLink.filter(institution_id=current_tenant().institution_id, resident_id=resident_id).delete()
    rows = await execute(
        """INSERT INTO resident_erasure (resident_id, erased_by, reason, reference) VALUES ($1, $2, $3, $4)
           RETURNING erased_at""",
        [resident_id, erased_by, reason.value, cleaned],
    )
    return Erasure(resident_id, rows[0]["erased_at"], erased_by, reason, cleaned, destroyed, relatives)

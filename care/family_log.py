"""The family communication log: every call, video call, visit, message or letter between the institution
and a resident's family, with what was said and whether something must follow.

Other code records through `record_family_communication` (the SOP steps of the care-operations issue log
the day-3/7/15/30 calls with it). The log is append-only here: entries are neither changed nor deleted.

The summary is sealed under the resident's data key (padded to 64-byte blocks); the time, channel,
direction, follow-up flag and date, the family member's id and the staff who recorded it stay plain: pages
are ordered by time in SQL and due follow-ups are found across residents, and none of these says what was
discussed. A resident whose data key was destroyed reads and writes as `Erased` (GONE).
"""

import random
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo

from care.residents import next_ids
from care.sealed_rows import (
    admission_date_of,
    execute,
    open_row,
    padded,
    seal,
    text,
    unpadded,
    writable,
)
from compliance.encryption import field_cipher
from tenants.context import current_tenant
from tenants.errors import Erased, InvalidInput, raise_if_any

TABLE = "family_communication"
COLUMN = "summary"
MAX_SUMMARY = 2000
_BLOCK = 64
# How far back an entry may go: contacts with the family start before admission (the intake visits).
MAX_DAYS_BEFORE_ADMISSION = 365
CLOCK_SKEW = timedelta(minutes=5)  # a client clock slightly ahead is not "in the future"


class Channel(StrEnum):
    PHONE = "phone"
    VIDEO = "video"
    VISIT = "visit"  # in person
    MESSAGE = "message"  # WeChat, SMS
    LETTER = "letter"


class Direction(StrEnum):
    TO_FAMILY = "to_family"  # the institution contacted the family
    FROM_FAMILY = "from_family"  # the family contacted the institution


@dataclass(frozen=True, slots=True)
class NewFamilyCommunication:
    occurred_at: datetime  # naive: the institution's local time
    channel: Channel
    direction: Direction
    summary: str
    family_member_id: int | None = None  # a family member of the same resident
    follow_up_needed: bool = False
    follow_up_due: date | None = None


@dataclass(frozen=True, slots=True)
class FamilyCommunication:
    id: int
    resident_id: int
    occurred_at: datetime
    channel: Channel
    direction: Direction
    summary: str
    family_member_id: int | None
    follow_up_needed: bool
    follow_up_due: date | None
    recorded_by: str
    recorded_at: datetime


@dataclass(frozen=True, slots=True)
class FamilyCommunicationPage:
    """Entries newest first (up to the limit asked, which may be one more than a page) and the total."""

    entries: list[FamilyCommunication]
    total: int


def _zone() -> ZoneInfo:
    return ZoneInfo(current_tenant().time_zone)


# Checks ------------------------------------------------------------------------------------------


async def check_entry(
    resident_id: int, entry: NewFamilyCommunication, now: datetime
) -> NewFamilyCommunication:
    """`entry` cleaned and with an aware time, or ValidationFailed with every problem (NotFound if there
    is no such resident)."""
    admitted = await admission_date_of(resident_id)
    zone = _zone()
    problems: list[InvalidInput] = []
    summary = text(entry.summary, "summary", problems, limit=MAX_SUMMARY, required=True)
    occurred = entry.occurred_at if entry.occurred_at.tzinfo else entry.occurred_at.replace(tzinfo=zone)
    if occurred > now + CLOCK_SKEW:
        problems.append(InvalidInput("The time cannot be in the future.", field="occurredAt"))
    elif occurred.astimezone(zone).date() < admitted - timedelta(days=MAX_DAYS_BEFORE_ADMISSION):
        problems.append(
            InvalidInput(
                "At most {days} days before the admission date.",
                field="occurredAt",
                days=MAX_DAYS_BEFORE_ADMISSION,
            )
        )
    try:
        channel, direction = Channel(entry.channel), Direction(entry.direction)
    except ValueError:
        problems.append(InvalidInput("Unknown channel or direction.", field="channel"))
        channel, direction = Channel.PHONE, Direction.TO_FAMILY
    if entry.follow_up_due is not None:
        if not entry.follow_up_needed:
            problems.append(InvalidInput("A due date needs a follow-up to be needed.", field="followUpDue"))
        elif entry.follow_up_due < occurred.astimezone(zone).date():
            problems.append(
                InvalidInput("The follow-up cannot be due before the contact.", field="followUpDue")
            )
    if entry.family_member_id is not None:
        rows = await execute(
            "SELECT 1 FROM family_member WHERE id = $1 AND resident_id = $2",
            [entry.family_member_id, resident_id],
        )
        if not rows:
            problems.append(InvalidInput("Not a family member of this resident.", field="familyMemberId"))
    raise_if_any(problems)
    return NewFamilyCommunication(
        occurred,
        channel,
        direction,
        summary or "",
        entry.family_member_id,
        entry.follow_up_needed,
        entry.follow_up_due,
    )


# Storage -----------------------------------------------------------------------------------------


async def record_family_communication(
    resident_id: int, entry: NewFamilyCommunication, *, recorded_by: str
) -> FamilyCommunication:
    """Log a communication with the resident's family. Checked as a whole first (ValidationFailed);
    NotFound if there is no such resident, Erased if its data key was destroyed. Runs in the caller's
    tenant unit of work."""
    checked = await check_entry(resident_id, entry, datetime.now(UTC))
    cipher = await field_cipher()
    await writable(cipher, resident_id)
    (row_id,) = await next_ids(TABLE, 1)
    sealed = await seal(cipher, TABLE, COLUMN, row_id, resident_id, padded(checked.summary, _BLOCK))
    rows = await execute(
        f"""INSERT INTO {TABLE} (id, resident_id, family_member_id, occurred_at, channel, direction,
                                 summary, follow_up_needed, follow_up_due, recorded_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING recorded_at""",
        [
            row_id,
            resident_id,
            checked.family_member_id,
            checked.occurred_at,
            checked.channel.value,
            checked.direction.value,
            sealed,
            checked.follow_up_needed,
            checked.follow_up_due,
            recorded_by,
        ],
    )
    return FamilyCommunication(
        row_id,
        resident_id,
        checked.occurred_at,
        checked.channel,
        checked.direction,
        checked.summary,
        checked.family_member_id,
        checked.follow_up_needed,
        checked.follow_up_due,
        recorded_by,
        rows[0]["recorded_at"],
    )


async def _entries(rows: list[dict]) -> list[FamilyCommunication]:
    cipher = await field_cipher()
    await cipher.load_data_keys(row["resident_id"] for row in rows)
    entries = []
    for row in rows:
        opened = await open_row(cipher, TABLE, row, (COLUMN,))
        entries.append(
            FamilyCommunication(
                row["id"],
                row["resident_id"],
                row["occurred_at"],
                Channel(row["channel"]),
                Direction(row["direction"]),
                unpadded(opened[COLUMN] or b""),
                row["family_member_id"],
                row["follow_up_needed"],
                row["follow_up_due"],
                row["recorded_by"],
                row["recorded_at"],
            )
        )
    return entries


_COLUMNS = (
    "id, resident_id, family_member_id, occurred_at, channel, direction, summary, follow_up_needed,"
    " follow_up_due, recorded_by, recorded_at"
)


async def communications_page(
    resident_id: int, *, after_id: int | None, limit: int
) -> list[FamilyCommunication]:
    """The resident's entries newest first (by time, then id), after the entry `after_id` (a keyset
    cursor: the entry's own time and id), at most `limit`. Erased if its data key was destroyed."""
    if after_id is None:
        rows = await execute(
            f"""SELECT {_COLUMNS} FROM {TABLE} WHERE resident_id = $1
                ORDER BY occurred_at DESC, id DESC LIMIT $2""",
            [resident_id, limit],
        )
    else:
        rows = await execute(
            f"""SELECT {_COLUMNS} FROM {TABLE}
                WHERE resident_id = $1 AND (occurred_at, id) < (
                    SELECT occurred_at, id FROM {TABLE} WHERE id = $2 AND resident_id = $1)
                ORDER BY occurred_at DESC, id DESC LIMIT $3""",
            [resident_id, after_id, limit],
        )
    return await _entries([dict(row) for row in rows])


async def count_communications(resident_id: int) -> int:
    rows = await execute(f"SELECT count(*) AS n FROM {TABLE} WHERE resident_id = $1", [resident_id])
    return int(rows[0]["n"])


async def first_pages_of(
    resident_ids: Iterable[int], limit: int
) -> dict[int, FamilyCommunicationPage | Erased]:
    """The newest `limit` entries of each resident and their total, in one query (plus one for the data
    keys), however many residents; an `Erased` error for a resident whose data key was destroyed."""
    wanted = sorted(set(resident_ids))
    pages: dict[int, FamilyCommunicationPage | Erased] = {
        resident_id: FamilyCommunicationPage([], 0) for resident_id in wanted
    }
    if not wanted:
        return pages
    rows = await execute(
        f"""SELECT * FROM (
                SELECT {_COLUMNS},
                       row_number() OVER (PARTITION BY resident_id ORDER BY occurred_at DESC, id DESC) AS n,
                       count(*) OVER (PARTITION BY resident_id) AS total
                FROM {TABLE} WHERE resident_id = ANY($1::bigint[])
            ) AS ranked WHERE n <= $2 ORDER BY resident_id, n""",
        [wanted, limit],
    )
    if not rows:
        return pages
    cipher = await field_cipher()
    await cipher.load_data_keys(row["resident_id"] for row in rows)
    by_resident: dict[int, list[dict]] = {}
    for row in rows:
        by_resident.setdefault(row["resident_id"], []).append(dict(row))
    for resident_id, resident_rows in by_resident.items():
        try:
            entries = await _entries(resident_rows)
        except Erased as erased:
            pages[resident_id] = erased
            continue
        pages[resident_id] = FamilyCommunicationPage(entries, int(resident_rows[0]["total"]))
    return pages


PageKey = tuple[int, int]  # (resident id, how many entries)


async def load_first_pages(keys: list[PageKey]) -> list[FamilyCommunicationPage | BaseException]:
    """DataLoader batch function (schema/context.py): the first pages of many residents, one query per
    page size asked (a list of residents asks one size)."""
    found: dict[PageKey, FamilyCommunicationPage | BaseException] = {}
    for limit in sorted({limit for _, limit in keys}):
        pages = await first_pages_of([resident_id for resident_id, size in keys if size == limit], limit)
        found.update({(resident_id, limit): page for resident_id, page in pages.items()})
    return [found[key] for key in keys]


# Demo data ---------------------------------------------------------------------------------------

_SUMMARIES: dict[Channel, tuple[str, ...]] = {
    Channel.PHONE: (
        "入住第三天电话回访：老人睡眠尚可，饭量偏少，已告知家属会调整为软食。",
        "告知家属老人近期血压偏高，医生已调整用药，家属表示理解。",
        "家属来电询问本月费用明细，已说明并答应寄送账单。",
        "老人夜间起夜一次摔倒未受伤，已电话告知家属并说明防跌措施。",
        "家属来电说下周六来接老人回家过生日，已登记外出。",
        "入住满一个月回访：老人已适应，参加书法活动，家属满意。",
    ),
    Channel.VIDEO: (
        "协助老人与在外地工作的儿子视频通话约二十分钟，老人情绪很好。",
        "视频通话中家属希望老人多参加集体活动，已转告生活管家。",
    ),
    Channel.VISIT: (
        "女儿来院探望，带来换季衣物，与护理员沟通了洗澡时间。",
        "家属来院参加季度照护计划沟通会，同意增加康复训练。",
        "儿子儿媳周末探望，反映房间空调偏冷，已报修。",
    ),
    Channel.MESSAGE: (
        "微信发送老人参加中秋活动的照片，家属回复感谢。",
        "家属微信询问老人最近的饮食情况，已回复一周食谱。",
        "微信提醒家属补充老人常用药，家属答应周三送来。",
    ),
    Channel.LETTER: ("寄送年度健康体检报告及照护小结给家属。",),
}
_FOLLOW_UP_CHANCE = 0.2


async def seed_demo(rng: random.Random, today: date) -> int:
    """0 to 6 log entries per resident over its stay (calls, visits, messages), bulk-inserted, some with
    a follow-up, linked to one of the resident's family members. Returns the rows written."""
    residents = await execute(
        "SELECT id, admission_date, status, discharged_on FROM resident ORDER BY id", []
    )
    members = await execute("SELECT id, resident_id FROM family_member ORDER BY id", [])
    family: dict[int, list[int]] = {}
    for member in members:
        family.setdefault(member["resident_id"], []).append(member["id"])
    zone = _zone()
    entries: list[tuple[int, NewFamilyCommunication]] = []  # (resident, entry)
    for resident in residents:
        start: date = resident["admission_date"]
        end: date = resident["discharged_on"] or today
        if end < start:
            continue
        span = (end - start).days
        for _ in range(rng.randint(0, 6)):
            day = start + timedelta(days=rng.randint(0, span))
            at = datetime.combine(day, time(rng.randint(9, 19), rng.randint(0, 59)), zone)
            if at > datetime.now(zone):
                at = datetime.now(zone) - timedelta(hours=1)
            channel = rng.choices(list(Channel), weights=(50, 12, 20, 15, 3))[0]
            direction = rng.choice((Direction.TO_FAMILY, Direction.TO_FAMILY, Direction.FROM_FAMILY))
            relatives = family.get(resident["id"], [])
            member = rng.choice(relatives) if relatives and rng.random() < 0.85 else None
            follow_up = rng.random() < _FOLLOW_UP_CHANCE
            due = day + timedelta(days=rng.randint(1, 14)) if follow_up else None
            summary = rng.choice(_SUMMARIES[channel])
            entries.append(
                (
                    resident["id"],
                    NewFamilyCommunication(at, channel, direction, summary, member, follow_up, due),
                )
            )
    if not entries:
        return 0
    cipher = await field_cipher()
    await cipher.ensure_data_keys({resident_id for resident_id, _ in entries})
    ids = await next_ids(TABLE, len(entries))
    summaries = [
        await seal(cipher, TABLE, COLUMN, row_id, resident_id, padded(entry.summary, _BLOCK))
        for row_id, (resident_id, entry) in zip(ids, entries, strict=True)
    ]
    await execute(
        f"""INSERT INTO {TABLE} (id, resident_id, occurred_at, channel, direction, summary,
                                 family_member_id, follow_up_needed, follow_up_due, recorded_by)
            SELECT i, r, o, c, d, s, f, n, u, 'demo' FROM unnest(
                $1::bigint[], $2::bigint[], $3::timestamptz[], $4::varchar[], $5::varchar[], $6::bytea[],
                $7::bigint[], $8::boolean[], $9::date[]
            ) AS t (i, r, o, c, d, s, f, n, u)""",
        [
            ids,
            [resident_id for resident_id, _ in entries],
            [entry.occurred_at for _, entry in entries],
            [entry.channel.value for _, entry in entries],
            [entry.direction.value for _, entry in entries],
            summaries,
            [entry.family_member_id for _, entry in entries],
            [entry.follow_up_needed for _, entry in entries],
            [entry.follow_up_due for _, entry in entries],
        ],
    )
    return len(entries)

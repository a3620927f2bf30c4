"""A resident's preferences: diet and taboos, daily routine, hobbies, religion, personality, what to avoid.

One current set per resident, replaced as a whole (`set_preferences`); every change is a new row with the
next version (migrations/tenant/0006_preferences_and_contacts.sql), so nothing is overwritten and the
history stays. The whole set is sealed as ONE JSON document per row: it is always read and written
whole, one AEAD operation per set, and one ciphertext (padded to 256-byte blocks) hides which parts were
filled in. Everything in it is sealed, the diet kind too: "halal" reveals a religion, "diabetic" a
diagnosis.

Reads for many residents at once (`current_preferences_of`) cost one query for the rows and one for the
data keys. A resident whose data key was destroyed reads as `Erased` (GONE).
"""

import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from enum import StrEnum
from typing import Any

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
from tenants.errors import Erased, InvalidInput, raise_if_any

TABLE = "resident_preferences"
COLUMN = "document"
_BLOCK = 256
MAX_SHORT = 200  # taboos, dislikes, bathing, religion
MAX_LONG = 1000  # personality, what to avoid
MAX_NOTES = 2000
MAX_HOBBIES = 20
MAX_HOBBY = 30


class DietKind(StrEnum):
    NORMAL = "normal"
    SOFT = "soft"
    MINCED = "minced"
    LIQUID = "liquid"
    DIABETIC = "diabetic"
    LOW_SALT = "low_salt"
    LOW_FAT = "low_fat"
    VEGETARIAN = "vegetarian"
    HALAL = "halal"


@dataclass(frozen=True, slots=True)
class Diet:
    kind: DietKind = DietKind.NORMAL
    taboos: str | None = None  # 忌口: what must not be served
    dislikes: str | None = None  # what the resident does not like


@dataclass(frozen=True, slots=True)
class Routine:
    wake_time: time | None = None
    bed_time: time | None = None
    naps: bool | None = None  # takes an afternoon nap; None: not known
    bathing: str | None = None  # free text: when, how, shower or bath, who


@dataclass(frozen=True, slots=True)
class Preferences:
    diet: Diet = Diet()
    routine: Routine = Routine()
    hobbies: tuple[str, ...] = ()
    religion: str | None = None
    personality: str | None = None
    avoid: str | None = None  # topics, triggers, what upsets the resident
    notes: str | None = None


@dataclass(frozen=True, slots=True)
class ResidentPreferences:
    """One version of a resident's preferences (the highest version is the current one)."""

    id: int
    resident_id: int
    version: int
    preferences: Preferences
    recorded_by: str
    recorded_at: datetime


# Checks ------------------------------------------------------------------------------------------


def check_preferences(given: Preferences) -> Preferences:
    """`given` cleaned (texts stripped, empty ones None), or ValidationFailed with every problem."""
    problems: list[InvalidInput] = []
    try:
        kind = DietKind(given.diet.kind)
    except ValueError:
        problems.append(InvalidInput("Unknown diet kind.", field="diet.kind"))
        kind = DietKind.NORMAL
    diet = Diet(
        kind,
        text(given.diet.taboos, "diet.taboos", problems, limit=MAX_SHORT),
        text(given.diet.dislikes, "diet.dislikes", problems, limit=MAX_SHORT),
    )
    routine = given.routine
    for name, moment in (("routine.wakeTime", routine.wake_time), ("routine.bedTime", routine.bed_time)):
        if moment is not None and (moment.tzinfo is not None or moment.second or moment.microsecond):
            problems.append(InvalidInput("A time of day in hours and minutes (e.g. 06:30).", field=name))
    if routine.wake_time is not None and routine.wake_time == routine.bed_time:
        problems.append(InvalidInput("Wake time and bed time cannot be the same.", field="routine.bedTime"))
    bathing = text(routine.bathing, "routine.bathing", problems, limit=MAX_SHORT)
    if len(given.hobbies) > MAX_HOBBIES:
        problems.append(InvalidInput("At most {max} hobbies.", field="hobbies", max=MAX_HOBBIES))
    hobbies: list[str] = []
    for hobby in given.hobbies:
        cleaned = text(hobby, "hobbies", problems, limit=MAX_HOBBY, required=True)
        if cleaned is not None and cleaned not in hobbies:
            hobbies.append(cleaned)
    checked = Preferences(
        diet=diet,
        routine=Routine(routine.wake_time, routine.bed_time, routine.naps, bathing),
        hobbies=tuple(hobbies),
        religion=text(given.religion, "religion", problems, limit=MAX_SHORT),
        personality=text(given.personality, "personality", problems, limit=MAX_LONG),
        avoid=text(given.avoid, "avoid", problems, limit=MAX_LONG),
        notes=text(given.notes, "notes", problems, limit=MAX_NOTES),
    )
    raise_if_any(problems)
    return checked


# The sealed document -----------------------------------------------------------------------------


def _clock(moment: time | None) -> str | None:
    return None if moment is None else moment.strftime("%H:%M")


def to_document(preferences: Preferences) -> bytes:
    """The JSON document sealed per row (short keys; absent parts left out), padded to whole blocks."""
    diet, routine = preferences.diet, preferences.routine
    document: dict[str, Any] = {
        "diet": {"kind": diet.kind.value, "taboos": diet.taboos, "dislikes": diet.dislikes},
        "routine": {
            "wake": _clock(routine.wake_time),
            "bed": _clock(routine.bed_time),
            "naps": routine.naps,
            "bathing": routine.bathing,
        },
        "hobbies": list(preferences.hobbies),
        "religion": preferences.religion,
        "personality": preferences.personality,
        "avoid": preferences.avoid,
        "notes": preferences.notes,
    }
    return padded(json.dumps(document, ensure_ascii=False, separators=(",", ":")), _BLOCK)


def from_document(raw: bytes) -> Preferences:
    document = json.loads(unpadded(raw))
    diet, routine = document["diet"], document["routine"]
    return Preferences(
        diet=Diet(DietKind(diet["kind"]), diet.get("taboos"), diet.get("dislikes")),
        routine=Routine(
            None if routine.get("wake") is None else time.fromisoformat(routine["wake"]),
            None if routine.get("bed") is None else time.fromisoformat(routine["bed"]),
            routine.get("naps"),
            routine.get("bathing"),
        ),
        hobbies=tuple(document.get("hobbies") or ()),
        religion=document.get("religion"),
        personality=document.get("personality"),
        avoid=document.get("avoid"),
        notes=document.get("notes"),
    )


# Storage -----------------------------------------------------------------------------------------


async def set_preferences(
    resident_id: int, preferences: Preferences, *, recorded_by: str
) -> ResidentPreferences:
    """Replace the resident's current preferences with `preferences` (a new version; the previous ones
    stay). Checked as a whole first (ValidationFailed); NotFound, Erased."""
    checked = check_preferences(preferences)
    await admission_date_of(resident_id, lock=True)  # writers of one resident take turns: versions 1, 2, …
    cipher = await field_cipher()
    await writable(cipher, resident_id)
    (row_id,) = await next_ids(TABLE, 1)
    sealed = await seal(cipher, TABLE, COLUMN, row_id, resident_id, to_document(checked))
    rows = await execute(
        f"""INSERT INTO {TABLE} (id, resident_id, version, document, recorded_by)
            SELECT $1, $2, coalesce(max(version), 0) + 1, $3, $4 FROM {TABLE} WHERE resident_id = $2
            RETURNING version, recorded_at""",
        [row_id, resident_id, sealed, recorded_by],
    )
    return ResidentPreferences(
        row_id, resident_id, rows[0]["version"], checked, recorded_by, rows[0]["recorded_at"]
    )


async def current_preferences_of(
    resident_ids: Iterable[int],
) -> dict[int, ResidentPreferences | Erased | None]:
    """The current preferences of each resident (None: never recorded; an `Erased` error when the
    resident's data key was destroyed): one query for the rows and one for the data keys."""
    wanted = sorted(set(resident_ids))
    found: dict[int, ResidentPreferences | Erased | None] = dict.fromkeys(wanted)
    if not wanted:
        return found
    rows = await execute(
        f"""SELECT DISTINCT ON (resident_id) id, resident_id, version, document, recorded_by, recorded_at
            FROM {TABLE} WHERE resident_id = ANY($1::bigint[]) ORDER BY resident_id, version DESC""",
        [wanted],
    )
    if not rows:
        return found
    cipher = await field_cipher()
    await cipher.load_data_keys(row["resident_id"] for row in rows)
    for row in rows:
        try:
            opened = await open_row(cipher, TABLE, row, (COLUMN,))
        except Erased as erased:
            found[row["resident_id"]] = erased
            continue
        found[row["resident_id"]] = _version_of(row, opened)
    return found


def _version_of(row: Mapping[str, Any], opened: Mapping[str, bytes | None]) -> ResidentPreferences:
    return ResidentPreferences(
        row["id"],
        row["resident_id"],
        row["version"],
        from_document(opened[COLUMN] or b""),
        row["recorded_by"],
        row["recorded_at"],
    )


async def load_preferences(resident_ids: list[int]) -> list[ResidentPreferences | BaseException | None]:
    """DataLoader batch function (schema/context.py): `current_preferences_of` in the order asked."""
    found = await current_preferences_of(resident_ids)
    return [found[resident_id] for resident_id in resident_ids]


async def preferences_history(resident_id: int) -> list[ResidentPreferences]:
    """Every version of the resident's preferences, newest first (Erased if its key was destroyed)."""
    rows = await execute(
        f"""SELECT id, resident_id, version, document, recorded_by, recorded_at FROM {TABLE}
            WHERE resident_id = $1 ORDER BY version DESC""",
        [resident_id],
    )
    cipher = await field_cipher()
    history = []
    for row in rows:
        opened = await open_row(cipher, TABLE, row, (COLUMN,))
        history.append(_version_of(row, opened))
    return history


# Demo data ---------------------------------------------------------------------------------------

_TABOOS = ("不吃辣", "忌生冷", "不吃海鲜", "忌油腻", "不吃牛羊肉", "少糖", "忌酒", "不吃动物内脏", "忌浓茶")
_DISLIKES = ("不爱吃胡萝卜", "不喜欢芹菜", "不爱喝牛奶", "不喜欢香菜", "不吃肥肉", "不爱吃面食", "嫌米饭太硬")
_BATHING = (
    "每周二、五上午洗澡，喜欢水温偏热",
    "晚饭后淋浴，需一人搀扶",
    "隔天擦身，每周一次盆浴，由女护理员协助",
    "上午十点后洗澡，怕冷，浴室需提前开暖风",
)
_HOBBIES = (
    "下象棋",
    "打麻将",
    "听越剧",
    "听京剧",
    "唱红歌",
    "书法",
    "国画",
    "养花",
    "打太极拳",
    "广场舞",
    "看新闻联播",
    "读报",
    "散步",
    "钓鱼",
    "织毛衣",
    "剪纸",
    "听评书",
    "打扑克",
    "拉二胡",
    "做手工",
)
_RELIGIONS = ("佛教", "基督教", "伊斯兰教", "天主教", "道教")
_PERSONALITIES = (
    "性格开朗，爱聊天，喜欢被人叫“老师”",
    "内向少言，熟悉后愿意交流，需要耐心",
    "脾气急，讲究规矩，做事前要先和他说明",
    "乐观热心，常帮助同楼层长者",
    "多疑，容易担心子女，需常安慰",
    "安静随和，喜欢独处看书",
)
_AVOID = (
    "不要提起去世的老伴",
    "避免谈论子女工作的事，容易焦虑",
    "夜间不要大声叫醒，会受惊",
    "不要催促吃饭",
    "忌讳谈论住院和医院",
    "不要在他面前说方言以外的外地话题，他会觉得被排斥",
)
_NOTES = (
    "午饭后习惯喝一杯温水再午睡",
    "早餐喜欢稀饭配咸菜",
    "每晚九点前要给女儿打电话",
    "喜欢坐靠窗的位置",
    "有晨练习惯，天气好时陪同下楼",
)


def demo_preferences(rng: random.Random) -> Preferences:
    """A realistic set of preferences (Chinese content) for demo data."""
    kind = rng.choices(list(DietKind), weights=(40, 12, 6, 2, 14, 12, 6, 5, 3))[0]
    religion = None
    if kind is DietKind.HALAL:
        religion = "伊斯兰教"
    elif rng.random() < 0.2:
        religion = rng.choice(_RELIGIONS[:2] + _RELIGIONS[3:])
    return Preferences(
        diet=Diet(
            kind,
            "、".join(rng.sample(_TABOOS, rng.randint(0, 2))) or None,
            rng.choice(_DISLIKES) if rng.random() < 0.6 else None,
        ),
        routine=Routine(
            time(rng.choice((5, 6, 6, 7)), rng.choice((0, 15, 30, 45))),
            time(rng.choice((20, 21, 21, 22)), rng.choice((0, 30))),
            rng.random() < 0.7,
            rng.choice(_BATHING) if rng.random() < 0.8 else None,
        ),
        hobbies=tuple(rng.sample(_HOBBIES, rng.randint(1, 4))),
        religion=religion,
        personality=rng.choice(_PERSONALITIES),
        avoid=rng.choice(_AVOID) if rng.random() < 0.5 else None,
        notes=rng.choice(_NOTES) if rng.random() < 0.4 else None,
    )


async def seed_demo(rng: random.Random, today: date) -> int:
    """Preferences for about nine residents in ten (a second, older version for some), bulk-inserted.
    Runs in the tenant unit of work after the residents exist; returns the rows written."""
    residents = await execute("SELECT id FROM resident ORDER BY id", [])
    chosen = [row["id"] for row in residents if rng.random() < 0.9]
    versions: list[tuple[int, int]] = []  # (resident, version)
    for resident_id in chosen:
        count = 2 if rng.random() < 0.25 else 1
        versions += [(resident_id, version) for version in range(1, count + 1)]
    if not versions:
        return 0
    cipher = await field_cipher()
    await cipher.ensure_data_keys({resident_id for resident_id, _ in versions})
    ids = await next_ids(TABLE, len(versions))
    documents = [
        await seal(cipher, TABLE, COLUMN, row_id, resident_id, to_document(demo_preferences(rng)))
        for row_id, (resident_id, _) in zip(ids, versions, strict=True)
    ]
    await execute(
        f"""INSERT INTO {TABLE} (id, resident_id, version, document, recorded_by)
            SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::bytea[], $5::varchar[])""",
        [
            ids,
            [resident_id for resident_id, _ in versions],
            [version for _, version in versions],
            documents,
            ["demo"] * len(versions),
        ],
    )
    return len(versions)

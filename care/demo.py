"""Demo data for a newcomer's first `make run`: two chains and a dozen institutions in three regions,
residents with their families and five years of history. Deterministic (seeded), realistic, loaded once.

Institutions are provisioned through the registry; residents and family members are bulk-inserted in one
unit of work per institution (about 2,000 rows in under a second in all, where admitting them one by
one would take much longer), built so that they satisfy what `care.residents` would check: names of 1 to
100 characters, birth before admission, discharge on or after admission and never in the institution's
future, mobile numbers of real mainland segments, one resident per bed at a time (also across history:
a bed's earlier occupants left before the next one came).
"""

import random
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from faker import Faker
from tortoise import Tortoise, connections

from care import assessment_records, emergency_contacts, family_log, photos, preferences, reports, timeline
from care.demo_accounts import seed_demo_accounts
from care.demo_health import seed_health_records, seed_vitals
from care.demo_sops import seed_demo_sops
from care.demo_work_orders import seed_demo_work_orders
from care.models import (
    CareLevel,
    DischargeReason,
    FamilyMember,
    Gender,
    Relationship,
    Resident,
    ResidentStatus,
)
from care.residents import (
    FAMILY_TABLE,
    Identity,
    id_card_check_character,
    seal_discharge_note,
    seal_family_member,
    seal_identity,
)
from compliance.encryption import field_cipher
from tenants.db import close_database, default_connection, open_database
from tenants.models import Institution, Region
from tenants.registry import (
    NewInstitution,
    get_or_create_chain,
    get_or_create_region,
    provision_institution,
    tenant_ref,
)
from tenants.unit_of_work import run_in_tenant

DEFAULT_SEED = 20261122
# Held while seeding, so that two runners at once cannot both find the registry empty.
_SEED_LOCK_KEY = 0x5969_7961_6E68

REGIONS = {"east": "华东区", "north": "华北区", "south": "华南区"}
CHAINS = ("颐养康护集团", "松鹤颐年连锁")
# (name, region, chain index or None, beds)
INSTITUTIONS = (
    ("颐养·杭州西湖颐园", "east", 0, 180),
    ("颐养·上海静安长者公寓", "east", 0, 150),
    ("颐养·北京朝阳康养中心", "north", 0, 160),
    ("颐养·广州天河颐居", "south", 0, 120),
    ("颐养·深圳南山护理院", "south", 0, 100),
    ("松鹤·苏州姑苏颐年苑", "east", 1, 110),
    ("松鹤·天津河西养老院", "north", 1, 90),
    ("松鹤·石家庄长安护理中心", "north", 1, 80),
    ("松鹤·厦门思明颐养院", "south", 1, 70),
    ("南京鼓楼区社会福利院", "east", None, 130),
    ("北京海淀安康老年公寓", "north", None, 60),
    ("佛山禅城乐龄之家", "south", None, 55),
)

HISTORY_YEARS = 5
MIN_IN_RESIDENCE, MAX_IN_RESIDENCE = 40, 150
MIN_AGE, MAX_AGE, MODE_AGE = 62, 100, 83
MIN_ADMISSION_AGE = 60
# Chance that a bed had one more earlier occupant (each earlier stay must also fit in the history).
EARLIER_OCCUPANT = 0.35

# Given names of people born 1925-1965 (Faker's zh_CN lists mix in today's names, 婷婷 or 浩宇).
ELDER_GIVEN_MALE = (
    "建国", "建华", "建军", "国强", "国庆", "国华", "志强", "志刚", "志明", "德明", "德华", "德福",
    "福生", "金生", "永福", "永康", "永明", "保国", "卫国", "卫东", "振华", "振国", "文华", "文明",
    "玉林", "长林", "长海", "海林", "春生", "桂林", "明华", "荣华", "树林", "有福", "广才", "学文",
    "世昌", "家明", "伟", "强", "军", "明", "刚", "平", "华", "斌", "勇", "林", "成", "东", "峰",
)  # fmt: skip
ELDER_GIVEN_FEMALE = (
    "秀英", "秀兰", "桂英", "玉兰", "桂兰", "秀珍", "玉梅", "玉珍", "凤英", "玉英", "兰英", "淑珍",
    "春梅", "冬梅", "秀荣", "桂珍", "秀云", "桂荣", "秀梅", "玉华", "淑兰", "秀芳", "淑英", "桂芳",
    "丽华", "桂香", "淑华", "秀华", "桂芝", "金凤", "桂花", "凤兰", "红梅", "素芬", "美华", "月英",
    "翠兰", "彩霞", "淑贞", "慧珍", "芳", "英", "梅", "兰", "珍", "霞", "琴", "萍", "红",
)  # fmt: skip

# Care level by age band: (age below, weights of self care, assisted, full care, special care).
CARE_LEVELS = (CareLevel.SELF_CARE, CareLevel.ASSISTED, CareLevel.FULL_CARE, CareLevel.SPECIAL_CARE)
CARE_WEIGHTS_BY_AGE = ((75, (45, 35, 15, 5)), (85, (30, 37, 24, 9)), (200, (15, 33, 37, 15)))

# Reasons for leaving, for residents who needed little care and for those who needed much.
DISCHARGE_REASONS = (
    DischargeReason.RETURNED_HOME,
    DischargeReason.TRANSFERRED_TO_HOSPITAL,
    DischargeReason.DECEASED,
    DischargeReason.MOVED_TO_OTHER_INSTITUTION,
    DischargeReason.COST,
    DischargeReason.DISSATISFIED,
    DischargeReason.OTHER,
)
REASON_WEIGHTS_LIGHT_CARE = (35, 15, 12, 14, 12, 9, 3)
REASON_WEIGHTS_HEAVY_CARE = (12, 28, 45, 6, 6, 2, 1)
DISCHARGE_NOTES = {
    DischargeReason.RETURNED_HOME: ("子女接回家中照护", "康复良好，返家居住", "家属退休后自行照顾"),
    DischargeReason.TRANSFERRED_TO_HOSPITAL: ("病情加重转入三甲医院", "转医院康复科长期治疗"),
    DischargeReason.DECEASED: ("安详离世，家属已办理后事", "因病医治无效去世"),
    DischargeReason.MOVED_TO_OTHER_INSTITUTION: ("随子女迁居外地，转入当地机构", "转入离家更近的机构"),
    DischargeReason.COST: ("费用压力较大，家属决定居家养老",),
    DischargeReason.DISSATISFIED: ("对餐饮不满意", "家属对护理响应速度有意见"),
    DischargeReason.OTHER: ("个人原因",),
}

# Who the family contacts are: (relationship, weight as the first contact, weight as a further one).
RELATIONSHIPS = (
    (Relationship.SON, 38, 22),
    (Relationship.DAUGHTER, 38, 22),
    (Relationship.DAUGHTER_IN_LAW, 6, 16),
    (Relationship.SON_IN_LAW, 3, 10),
    (Relationship.SPOUSE, 6, 8),
    (Relationship.GRANDCHILD, 4, 14),
    (Relationship.SIBLING, 2, 5),
    (Relationship.GUARDIAN, 2, 1),
    (Relationship.OTHER_RELATIVE, 1, 2),
)
FAMILY_SIZE_WEIGHTS = ((1, 30), (2, 45), (3, 25))
# Mobile segments of China Mobile, Unicom, Telecom and virtual operators.
MOBILE_PREFIXES = (
    *range(130, 140), 145, 147, 150, 151, 152, 153, 155, 156, 157, 158, 159, 166,
    173, 175, 176, 177, 178, *range(180, 190), 191, 193, 195, 198, 199,
)  # fmt: skip


@dataclass(frozen=True)
class SeedReport:
    chains: int
    institutions: int
    residents: int
    family_members: int
    skipped: bool
    accounts: int = 0


# Administrative division codes (first six characters of an ID-card number) of the institutions' districts
# and of a few places elders were born elsewhere.
HOME_AREAS = {
    "杭州": "330106", "上海": "310106", "北京朝阳": "110105", "广州": "440106", "深圳": "440305",
    "苏州": "320508", "天津": "120103", "石家庄": "130102", "厦门": "350203", "南京": "320106",
    "北京海淀": "110108", "佛山": "440604",
}  # fmt: skip
BIRTH_AREAS = ("320102", "330102", "370102", "410102", "420102", "430102", "510104", "340102", "360102")
RESIDENT_PHONE = 0.35  # share of residents with a phone of their own


@dataclass
class _Relative:
    member: FamilyMember
    name: str
    phone: str


@dataclass
class _Stay:
    """One resident before it becomes a row; ids are given once every stay is known. The identity stays
    here in plaintext until `_fill` seals it under the resident's data key."""

    resident: Resident
    identity: Identity
    surname: str
    note: str | None = None
    family: list[_Relative] = field(default_factory=list)


def _years_before(day: date, years: int) -> date:
    try:
        return day.replace(year=day.year - years)
    except ValueError:  # 29 February
        return day.replace(year=day.year - years, day=28)


def _bed_slots(beds: int) -> list[tuple[str, str, str, str]]:
    """Two-bed rooms, twelve to a floor, four floors to a building: (building, floor, room, bed)."""
    slots: list[tuple[str, str, str, str]] = []
    building = 1
    while len(slots) < beds:
        for floor in range(1, 5):
            for room in range(1, 13):
                for bed in ("1", "2"):
                    slots.append((f"{building}号楼", f"{floor}层", f"{floor}{room:02d}", bed))
        building += 1
    return slots[:beds]


def _mobile(rng: random.Random) -> str:
    return f"{rng.choice(MOBILE_PREFIXES)}{rng.randrange(10**8):08d}"


def _id_card(rng: random.Random, area: str, birth: date, gender: Gender) -> str:
    """A resident ID-card number of GB 11643: area, birth date, a sequence odd for men and even for women,
    and its check character."""
    sequence = rng.randrange(50) * 2 * 10 + rng.randrange(5) * 2 + (1 if gender is Gender.MALE else 0)
    first17 = f"{area}{birth:%Y%m%d}{sequence:03d}"
    return first17 + id_card_check_character(first17)


def _care_level(rng: random.Random, age: int) -> CareLevel:
    weights = next(w for below, w in CARE_WEIGHTS_BY_AGE if age < below)
    return rng.choices(CARE_LEVELS, weights=weights)[0]


class _People:
    """Residents and families of one institution."""

    def __init__(self, rng: random.Random, fake: Faker, today: date, area: str) -> None:
        self.area = area
        self.rng = rng
        self.fake = fake
        self.today = today
        self.horizon = _years_before(today, HISTORY_YEARS)

    def _elder(
        self, age: int, admitted: date, on: date, placement: tuple[str, str, str, str]
    ) -> tuple[Resident, Identity, str]:
        """A resident `age` years old on `on`, at least MIN_ADMISSION_AGE when admitted."""
        rng = self.rng
        gender = Gender.FEMALE if rng.random() < 0.62 else Gender.MALE
        surname = self.fake.last_name()
        given = rng.choice(ELDER_GIVEN_FEMALE if gender is Gender.FEMALE else ELDER_GIVEN_MALE)
        birth = _years_before(on, age) - timedelta(days=rng.randrange(365))
        birth = min(birth, _years_before(admitted, MIN_ADMISSION_AGE))
        area = self.area if rng.random() < 0.7 else rng.choice(BIRTH_AREAS)
        identity = Identity(
            name=surname + given,
            gender=gender,
            birth_date=birth,
            id_card_number=_id_card(rng, area, birth, gender),
            phone=_mobile(rng) if rng.random() < RESIDENT_PHONE else None,
        )
        resident = Resident(
            care_level=_care_level(rng, age),
            admission_date=admitted,
            building=placement[0],
            floor=placement[1],
            room=placement[2],
            bed=placement[3],
        )
        return resident, identity, surname

    def _age(self) -> int:
        return round(self.rng.triangular(MIN_AGE, MAX_AGE, MODE_AGE))

    def current(self, placement: tuple[str, str, str, str]) -> _Stay:
        rng = self.rng
        # Most residents came in the last two years; a few have lived here since the history began.
        longest = (self.today - self.horizon).days
        tenure = 0
        while not 3 <= tenure < longest:
            tenure = int(rng.expovariate(1 / 700))
        admitted = self.today - timedelta(days=tenure)
        resident, identity, surname = self._elder(self._age(), admitted, self.today, placement)
        return _Stay(resident, identity, surname)

    def earlier(self, placement: tuple[str, str, str, str], before: date) -> _Stay | None:
        """Someone who left this bed some days before `before`, or None when that is before the history."""
        rng = self.rng
        left = before - timedelta(days=rng.randrange(3, 90))
        admitted = left - timedelta(days=7 + int(rng.expovariate(1 / 420)))
        if admitted < self.horizon:
            return None
        resident, identity, surname = self._elder(self._age(), admitted, left, placement)
        heavy = resident.care_level in (CareLevel.FULL_CARE, CareLevel.SPECIAL_CARE)
        reason = rng.choices(
            DISCHARGE_REASONS, weights=REASON_WEIGHTS_HEAVY_CARE if heavy else REASON_WEIGHTS_LIGHT_CARE
        )[0]
        resident.status = ResidentStatus.DISCHARGED
        resident.discharged_on = left
        resident.discharge_reason = reason
        note = rng.choice(DISCHARGE_NOTES[reason]) if rng.random() < 0.6 else None
        return _Stay(resident, identity, surname, note)

    def family(self, stay: _Stay) -> None:
        rng, fake = self.rng, self.fake
        # Children carry the father's surname; a wife keeps her own.
        husband_surname = stay.surname if stay.identity.gender is Gender.MALE else fake.last_name()
        size = rng.choices(*zip(*FAMILY_SIZE_WEIGHTS, strict=True))[0]
        taken: set[Relationship] = set()
        for n in range(size):
            choices = [
                (relationship, first if n == 0 else further)
                for relationship, first, further in RELATIONSHIPS
                if relationship not in taken
            ]
            relationship = rng.choices(*zip(*choices, strict=True))[0]
            if relationship in (Relationship.SPOUSE, Relationship.GUARDIAN):
                taken.add(relationship)
            stay.family.append(
                _Relative(
                    FamilyMember(relationship=relationship, is_emergency_contact=n == 0),
                    name=self._relative_name(stay, relationship, husband_surname),
                    phone=_mobile(rng),
                )
            )

    def _relative_name(self, stay: _Stay, relationship: Relationship, husband_surname: str) -> str:
        rng, fake = self.rng, self.fake
        if relationship is Relationship.SPOUSE:
            if stay.identity.gender is Gender.FEMALE:
                return husband_surname + rng.choice(ELDER_GIVEN_MALE)
            return fake.last_name() + rng.choice(ELDER_GIVEN_FEMALE)
        if relationship is Relationship.SIBLING:
            return stay.surname + rng.choice(ELDER_GIVEN_MALE if rng.random() < 0.5 else ELDER_GIVEN_FEMALE)
        if relationship in (Relationship.SON, Relationship.SON_IN_LAW):
            male = True
        elif relationship in (Relationship.DAUGHTER, Relationship.DAUGHTER_IN_LAW):
            male = False
        else:
            male = rng.random() < 0.5
        if relationship in (Relationship.SON, Relationship.DAUGHTER, Relationship.GRANDCHILD):
            surname = husband_surname
        else:
            surname = fake.last_name()
        return surname + (fake.first_name_male() if male else fake.first_name_female())

    def institution(self, beds: int) -> list[_Stay]:
        """Everyone who lives or lived here, in order of admission."""
        rng = self.rng
        slots = _bed_slots(beds)
        occupancy = rng.uniform(0.7, 0.92)
        in_residence = max(MIN_IN_RESIDENCE, min(MAX_IN_RESIDENCE, round(beds * occupancy)))
        occupied = set(rng.sample(range(beds), in_residence))
        stays: list[_Stay] = []
        for index, slot in enumerate(slots):
            before = self.today
            if index in occupied:
                stays.append(self.current(slot))
                before = stays[-1].resident.admission_date
            while rng.random() < EARLIER_OCCUPANT and (stay := self.earlier(slot, before)) is not None:
                stays.append(stay)
                before = stay.resident.admission_date
        stays.sort(key=lambda s: (s.resident.admission_date, s.resident.building, s.resident.room))
        for stay in stays:
            self.family(stay)
        return stays


async def _fill(stays: list[_Stay]) -> None:
    """Ids first (the row id is part of each field's associated data), every data key of the institution
    in one INSERT, then the sealed rows in bulk."""
    cipher = await field_cipher()
    await cipher.ensure_data_keys(range(1, len(stays) + 1))
    residents, family = [], []
    member_id = 0
    for pk, stay in enumerate(stays, start=1):
        stay.resident.id = pk
        await seal_identity(cipher, stay.resident, stay.identity)
        await seal_discharge_note(cipher, stay.resident, stay.note)
        residents.append(stay.resident)
        for relative in stay.family:
            member_id += 1
            relative.member.id = member_id
            relative.member.resident_id = pk
            await seal_family_member(cipher, relative.member, relative.name, relative.phone)
            family.append(relative.member)
    await Resident.bulk_create(residents, batch_size=500)
    await FamilyMember.bulk_create(family, batch_size=500)
    # The rows came with explicit ids: move the identities past them for the next admission.
    await connections.get("default").execute_script(
        "SELECT setval(pg_get_serial_sequence('resident', 'id'), (SELECT max(id) FROM resident));"
        f"SELECT setval(pg_get_serial_sequence('{FAMILY_TABLE}', 'id'), "
        f"(SELECT coalesce(max(id), 1) FROM {FAMILY_TABLE}));"
    )


async def _record(rng: random.Random, today: date) -> None:
    """The rest of each resident's record, after the residents and their families are in (each part's
    `seed_demo` reads the residents it fills itself; the order matters only for vitals, which follow the
    diagnoses)."""
    await seed_health_records(rng, today)
    await seed_vitals(rng, today)
    await assessment_records.seed_demo(rng, today)
    await preferences.seed_demo(rng, today)
    await emergency_contacts.seed_demo(rng, today)
    await family_log.seed_demo(rng, today)
    await timeline.seed_demo(rng, today)
    await reports.seed_demo(rng, today)
    await photos.seed_demo(rng, today)


async def _load(seed: int) -> SeedReport:
    rng = random.Random(seed)
    fake = Faker("zh_CN")
    fake.seed_instance(seed)
    for code, name in REGIONS.items():
        await get_or_create_region(code, name)
    chains = [await get_or_create_chain(name) for name in CHAINS]
    resident_count = family_count = 0
    institutions = []
    for name, region, chain_index, beds in INSTITUTIONS:
        institution = await provision_institution(
            NewInstitution(
                name=name,
                region_code=region,
                chain_name=chains[chain_index].name if chain_index is not None else None,
                bed_capacity=beds,
            )
        )
        today = datetime.now(ZoneInfo(institution.time_zone)).date()
        area = next(
            code for place, code in sorted(HOME_AREAS.items(), key=lambda kv: -len(kv[0])) if place in name
        )
        stays = _People(rng, fake, today, area).institution(beds)
        await run_in_tenant(tenant_ref(institution), lambda stays=stays: _fill(stays))
        history = random.Random(f"{seed}:{name}")
        await run_in_tenant(
            tenant_ref(institution), lambda history=history, today=today: _record(history, today)
        )
        resident_count += len(stays)
        family_count += sum(len(stay.family) for stay in stays)
        institutions.append(institution)
    regions = await Region.filter(code__in=list(REGIONS)).order_by("code")
    accounts = await seed_demo_accounts(institutions, chains, list(regions))
    await seed_demo_work_orders(institutions, seed)
    await seed_demo_sops(institutions)
    return SeedReport(
        len(chains),
        len(INSTITUTIONS),
        resident_count,
        family_count,
        skipped=False,
        accounts=accounts.accounts,
    )


async def _seed_once(seed: int) -> SeedReport:
    async with default_connection().acquire_connection() as lock:
        await lock.execute("SELECT pg_advisory_lock($1)", _SEED_LOCK_KEY)
        try:
            if await Institution.exists():
                return SeedReport(0, 0, 0, 0, skipped=True)
            return await _load(seed)
        finally:
            await lock.execute("SELECT pg_advisory_unlock($1)", _SEED_LOCK_KEY)


async def seed_demo_data(database_url: str, *, seed: int = DEFAULT_SEED) -> SeedReport:
    """Load the demo data into an empty registry; with any institution present, change nothing.

    The shared and tenant migrations must have run. Uses the ORM if it is already open (then
    `database_url` is not used), otherwise opens it on `database_url` and closes it afterwards.
    """
    if Tortoise._inited:
        return await _seed_once(seed)
    await open_database(database_url)
    try:
        return await _seed_once(seed)
    finally:
        await close_database()

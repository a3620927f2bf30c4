"""Demo data for a newcomer's first `make run`: chains, a dozen institutions in three regions, residents
with families and history. Deterministic (seeded), realistic, and loaded once."""

import random
from dataclasses import dataclass
from datetime import date, timedelta

from faker import Faker
from tortoise import connections

from care.models import (
    CareLevel,
    DischargeReason,
    FamilyMember,
    Gender,
    Relationship,
    Resident,
    ResidentStatus,
)
from tenants.db import close_database, open_database
from tenants.models import Institution
from tenants.registry import (
    NewInstitution,
    get_or_create_chain,
    get_or_create_region,
    provision_institution,
    tenant_ref,
)
from tenants.unit_of_work import run_in_tenant

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
CARE_LEVELS = (
    (CareLevel.SELF_CARE, 30),
    (CareLevel.ASSISTED, 35),
    (CareLevel.FULL_CARE, 25),
    (CareLevel.SPECIAL_CARE, 10),
)
DISCHARGE_REASONS = (
    (DischargeReason.RETURNED_HOME, 30),
    (DischargeReason.TRANSFERRED_TO_HOSPITAL, 20),
    (DischargeReason.DECEASED, 25),
    (DischargeReason.MOVED_TO_OTHER_INSTITUTION, 10),
    (DischargeReason.COST, 8),
    (DischargeReason.DISSATISFIED, 5),
    (DischargeReason.OTHER, 2),
)
CHILDREN = (Relationship.SON, Relationship.DAUGHTER, Relationship.DAUGHTER_IN_LAW, Relationship.SON_IN_LAW)
OTHERS = (Relationship.SPOUSE, Relationship.GRANDCHILD, Relationship.SIBLING, Relationship.GUARDIAN)


@dataclass(frozen=True)
class SeedReport:
    chains: int
    institutions: int
    residents: int
    family_members: int
    skipped: bool


def _weighted(rng: random.Random, choices: tuple) -> object:
    values, weights = zip(*choices, strict=True)
    return rng.choices(values, weights=weights)[0]


def _bed_slots(beds: int) -> list[tuple[str, str, str]]:
    """Two-bed rooms, twelve to a floor, four floors to a building."""
    slots: list[tuple[str, str, str]] = []
    building = 1
    while len(slots) < beds:
        for floor in range(1, 5):
            for room in range(1, 13):
                for bed in ("1", "2"):
                    slots.append((f"{building}号楼", f"{floor}{room:02d}", bed))
        building += 1
    return slots[:beds]


def _mobile(rng: random.Random) -> str:
    return f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}"


_MALE_RELATIONS = {Relationship.SON, Relationship.SON_IN_LAW}
_FEMALE_RELATIONS = {Relationship.DAUGHTER, Relationship.DAUGHTER_IN_LAW}


def _relative_name(fake: Faker, relationship: Relationship, resident: Resident) -> str:
    if relationship in _MALE_RELATIONS:
        given = fake.first_name_male()
    elif relationship in _FEMALE_RELATIONS:
        given = fake.first_name_female()
    else:
        given = fake.first_name()
    # Children take their father's surname.
    if relationship in (Relationship.SON, Relationship.DAUGHTER) and resident.gender is Gender.MALE:
        return resident.name[0] + given
    return fake.last_name() + given


def _people(
    rng: random.Random, fake: Faker, beds: int, today: date
) -> tuple[list[Resident], list[FamilyMember]]:
    occupied = max(40, min(150, round(beds * rng.uniform(0.7, 0.92))))
    slots = rng.sample(_bed_slots(beds), occupied)
    discharged = round(occupied * rng.uniform(0.12, 0.25))
    residents: list[Resident] = []
    family: list[FamilyMember] = []
    for pk in range(1, occupied + discharged + 1):
        gender = Gender.FEMALE if rng.random() < 0.62 else Gender.MALE
        name = fake.name_female() if gender is Gender.FEMALE else fake.name_male()
        age = round(rng.triangular(62, 100, 83))
        birth = today - timedelta(days=age * 365 + rng.randrange(365))
        admitted = today - timedelta(days=rng.randrange(5, 5 * 365))
        placement = slots[pk - 1] if pk <= occupied else rng.choice(slots)
        resident = Resident(
            id=pk,
            name=name,
            gender=gender,
            birth_date=birth,
            care_level=_weighted(rng, CARE_LEVELS),
            admission_date=admitted,
            building=placement[0],
            room=placement[1],
            bed=placement[2],
        )
        if pk > occupied:
            resident.status = ResidentStatus.DISCHARGED
            resident.discharged_on = admitted + timedelta(
                days=rng.randrange(1, max(2, (today - admitted).days))
            )
            resident.discharge_reason = _weighted(rng, DISCHARGE_REASONS)
        residents.append(resident)
        for n in range(rng.choice((1, 1, 2, 2, 2, 3))):
            relationship = rng.choice(CHILDREN) if n == 0 or rng.random() < 0.6 else rng.choice(OTHERS)
            relative = _relative_name(fake, relationship, resident)
            family.append(
                FamilyMember(
                    resident_id=pk,
                    name=relative,
                    relationship=relationship,
                    phone=_mobile(rng),
                    is_emergency_contact=n == 0,
                )
            )
    return residents, family


async def _load(rng: random.Random, fake: Faker) -> SeedReport:
    for code, name in REGIONS.items():
        await get_or_create_region(code, name)
    chains = [await get_or_create_chain(name) for name in CHAINS]
    today = date.today()
    resident_count = family_count = 0
    for name, region, chain_index, beds in INSTITUTIONS:
        institution = await provision_institution(
            NewInstitution(
                name=name,
                region_code=region,
                chain_name=chains[chain_index].name if chain_index is not None else None,
                bed_capacity=beds,
            )
        )
        residents, family = _people(rng, fake, beds, today)

        async def fill(residents: list[Resident] = residents, family: list[FamilyMember] = family) -> None:
            await Resident.bulk_create(residents, batch_size=500)
            await FamilyMember.bulk_create(family, batch_size=500)
            # Rows came with explicit ids: move the identity past them for the next admission.
            await connections.get("default").execute_script(
                "SELECT setval(pg_get_serial_sequence('resident', 'id'), (SELECT max(id) FROM resident));"
            )

        await run_in_tenant(tenant_ref(institution), fill)
        resident_count += len(residents)
        family_count += len(family)
    return SeedReport(len(chains), len(INSTITUTIONS), resident_count, family_count, skipped=False)


async def seed_demo_data(database_url: str, *, seed: int = 20261122) -> SeedReport:
    """Load the demo data into an empty registry; with any institution present, do nothing."""
    await open_database(database_url)
    try:
        if await Institution.exists():
            return SeedReport(0, 0, 0, 0, skipped=True)
        fake = Faker("zh_CN")
        fake.seed_instance(seed)
        return await _load(random.Random(seed), fake)
    finally:
        await close_database()

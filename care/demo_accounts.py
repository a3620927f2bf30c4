"""Demo accounts, so that a newcomer can sign in as each kind of user after `make run`.

Every demo account has the password `DEMO_PASSWORD` (printed by `yiyang run` and in the README); the
logins follow one pattern so they can be guessed from the demo data:

- platform operator: `ops@demo.yiyang.cn`;
- staff of the n-th institution (01–12): `admin01@demo.yiyang.cn` (institution admin),
  `nurse01@…` (head nurse), `caregiver01@…`, `butler01@…`, `finance01@…`, `compliance01@…` (compliance
  officer: the audit log and access reports);
- chain staff: `director.chain1@demo.yiyang.cn` (chain director), `admin.chain1@…` (chain admin);
- supervisors: `supervisor.east@demo.yiyang.cn` (and `.north`, `.south`);
- family: the first family member of the first three residents in residence of each institution signs in
  with the mobile number on record (see `yiyang seed` output or the resident's family members).

The password is hashed once for all of them: argon2id costs about 22 ms a hash, and a hundred accounts
with the same password need no hundred hashes.
"""

from dataclasses import dataclass

from care.models import Resident, ResidentStatus
from care.residents import FamilyMemberRecord, family_members_of
from compliance.identity.account_models import (
    AccountKind,
    ChainMembership,
    FamilyLink,
    StaffMembership,
    SupervisorRegion,
    UserAccount,
)
from compliance.identity.passwords import hash_password
from compliance.principals import ChainRole, StaffRole
from tenants.models import Chain, Institution, Region
from tenants.registry import tenant_ref
from tenants.unit_of_work import run_in_tenant

DEMO_PASSWORD = "yiyang-demo-2026"
DEMO_DOMAIN = "demo.yiyang.cn"
STAFF_ROLES = (
    ("admin", StaffRole.INSTITUTION_ADMIN, "院长"),
    ("nurse", StaffRole.HEAD_NURSE, "护士长"),
    ("caregiver", StaffRole.CAREGIVER, "护理员"),
    ("butler", StaffRole.BUTLER, "管家"),
    ("finance", StaffRole.FINANCE, "财务"),
    ("compliance", StaffRole.COMPLIANCE_OFFICER, "合规专员"),
)
FAMILY_ACCOUNTS_PER_INSTITUTION = 3


@dataclass(frozen=True)
class DemoAccounts:
    accounts: int
    family_accounts: int


async def seed_demo_accounts(
    institutions: list[Institution], chains: list[Chain], regions: list[Region]
) -> DemoAccounts:
    password_hash = await hash_password(DEMO_PASSWORD)

    async def account(kind: AccountKind, login: str, name: str) -> UserAccount:
        found, _ = await UserAccount.get_or_create(
            login=login, defaults={"kind": kind, "display_name": name, "password_hash": password_hash}
        )
        return found

    count = 1
    await account(AccountKind.OPERATOR, f"ops@{DEMO_DOMAIN}", "平台运维")
    for number, institution in enumerate(institutions, start=1):
        for prefix, role, title in STAFF_ROLES:
            staff = await account(
                AccountKind.STAFF, f"{prefix}{number:02d}@{DEMO_DOMAIN}", f"{institution.name}{title}"
            )
            await StaffMembership.get_or_create(account=staff, institution=institution, role=role)
            count += 1
    for number, chain in enumerate(chains, start=1):
        for prefix, role, title in (
            ("director", ChainRole.CHAIN_DIRECTOR, "总监"),
            ("admin", ChainRole.CHAIN_ADMIN, "管理员"),
        ):
            staff = await account(
                AccountKind.STAFF, f"{prefix}.chain{number}@{DEMO_DOMAIN}", f"{chain.name}{title}"
            )
            await ChainMembership.get_or_create(account=staff, chain=chain, role=role)
            count += 1
    for region in regions:
        supervisor = await account(
            AccountKind.SUPERVISOR, f"supervisor.{region.code}@{DEMO_DOMAIN}", f"{region.name}民政监管"
        )
        await SupervisorRegion.get_or_create(account=supervisor, region=region)
        count += 1
    family = 0
    for institution in institutions:
        for member in await _first_relatives(institution):
            follower = await account(AccountKind.FAMILY, member.phone, member.name)
            await FamilyLink.get_or_create(
                account=follower,
                institution=institution,
                resident_id=member.resident_id,
                defaults={"family_member_id": member.id},
            )
            family += 1
    return DemoAccounts(accounts=count + family, family_accounts=family)


async def _first_relatives(institution: Institution) -> list[FamilyMemberRecord]:
    async def read() -> list[FamilyMemberRecord]:
        residents = (
            await Resident.filter(status=ResidentStatus.IN_RESIDENCE)
            .order_by("id")
            .limit(FAMILY_ACCOUNTS_PER_INSTITUTION)
            .values_list("id", flat=True)
        )
        families = await family_members_of(residents)  # decrypted: names and phones are sealed
        return [families[resident_id][0] for resident_id in residents if families[resident_id]]

    return await run_in_tenant(tenant_ref(institution), read)

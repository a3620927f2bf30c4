"""Staff of an institution as its administrators manage them, and what an account is, seen from itself.

Staff management works in one institution at a time (the one the request acts in): a staff member there
is an account holding at least one staff role there, and managing it means adding, replacing or
removing those roles. Who may do it is the caller's question to the policy (Action.STAFF_VIEW,
Action.STAFF_MANAGE); these functions keep the tables right:

- An institution never loses its last institution administrator: a change that would take the role
  from the last active account holding it is refused (Conflict). Changes to one institution's staff are
  serialized by a row lock on the institution, so two administrators demoting each other at the same
  moment cannot both succeed.
- Adding a login that names an existing staff account only adds roles: the account's name and password
  stay as they are. The answer looks the same whether the account existed or was created (the given
  initial password is checked, and hashed, in both cases), except that a new account needs an initial
  password and a non-staff account cannot hold staff roles.
"""

from collections.abc import Collection, Iterable
from dataclasses import dataclass

from tortoise.transactions import in_transaction

from compliance.identity.account_models import (
    AccountKind,
    AccountStatus,
    ChainMembership,
    FamilyLink,
    StaffMembership,
    UserAccount,
)
from compliance.identity.accounts import NewAccount, create_account, normalize_login
from compliance.identity.passwords import check_password_policy, hash_password
from compliance.principals import ChainRole, StaffRole
from tenants.errors import Conflict, InvalidInput, NotFound, ValidationFailed
from tenants.models import Institution, InstitutionStatus

LAST_ADMIN = "An institution must keep at least one institution administrator."
NO_ROLES = "Choose at least one role."
INITIAL_PASSWORD_REQUIRED = "Enter an initial password for the new account."
NOT_A_STAFF_ACCOUNT = "This login belongs to an account that cannot hold staff roles."
BAD_LOGIN = "Login must be an e-mail address or a mainland mobile number."
BAD_DISPLAY_NAME = "Name must be 1 to 100 characters."


def ordered_roles(roles: Iterable[StaffRole]) -> list[StaffRole]:
    """Roles in the order StaffRole declares them (most powerful first)."""
    order = list(StaffRole)
    return sorted(set(roles), key=order.index)


def ordered_chain_roles(roles: Iterable[ChainRole]) -> list[ChainRole]:
    order = list(ChainRole)
    return sorted(set(roles), key=order.index)


@dataclass(frozen=True, slots=True)
class StaffMember:
    """An account as staff of one institution."""

    institution_id: int
    account_id: int
    login: str
    display_name: str
    status: AccountStatus
    roles: frozenset[StaffRole]


@dataclass(frozen=True)
class NewStaffMember:
    login: str
    display_name: str
    roles: Collection[StaffRole]
    initial_password: str | None = None  # required only when the account does not exist yet


# Reading


async def staff_page(institution_id: int, *, after_account_id: int | None, limit: int) -> list[StaffMember]:
    """Staff of the institution in account-id order, after `after_account_id`, at most `limit`."""
    query = StaffMembership.filter(institution_id=institution_id)
    if after_account_id is not None:
        query = query.filter(account_id__gt=after_account_id)
    account_ids = (
        await query.distinct().order_by("account_id").limit(limit).values_list("account_id", flat=True)
    )
    return await _members(institution_id, list(account_ids))


async def count_staff(institution_id: int) -> int:
    return await UserAccount.filter(staff_memberships__institution_id=institution_id).distinct().count()


async def staff_member(institution_id: int, account_id: int, *, field: str = "staffMemberId") -> StaffMember:
    """The account as staff of the institution; NotFound unless it holds a role there."""
    found = await _members(institution_id, [account_id])
    if not found:
        raise NotFound("Not found.", field=field)
    return found[0]


async def _members(institution_id: int, account_ids: list[int]) -> list[StaffMember]:
    if not account_ids:
        return []
    roles_of: dict[int, set[StaffRole]] = {}
    for account_id, role in await StaffMembership.filter(
        institution_id=institution_id, account_id__in=account_ids
    ).values_list("account_id", "role"):
        roles_of.setdefault(account_id, set()).add(StaffRole(role))
    accounts = {a.id: a for a in await UserAccount.filter(id__in=list(roles_of))}
    return [
        StaffMember(
            institution_id=institution_id,
            account_id=account_id,
            login=accounts[account_id].login,
            display_name=accounts[account_id].display_name,
            status=AccountStatus(accounts[account_id].status),
            roles=frozenset(roles_of[account_id]),
        )
        for account_id in account_ids
        if account_id in roles_of and account_id in accounts
    ]


# Changing


def _wanted_roles(roles: Iterable[StaffRole], problems: list[InvalidInput]) -> frozenset[StaffRole]:
    wanted = frozenset(StaffRole(role) for role in roles)
    if not wanted:
        problems.append(InvalidInput(NO_ROLES, field="roles"))
    return wanted


async def add_staff_member(institution_id: int, spec: NewStaffMember) -> StaffMember:
    """Give the account `spec.login` the roles in the institution, creating a staff account if none has
    that login (then with `spec.initial_password`, checked by the password policy)."""
    problems: list[InvalidInput] = []
    roles = _wanted_roles(spec.roles, problems)
    login = normalize_login(spec.login)
    if login is None:
        problems.append(InvalidInput(BAD_LOGIN, field="login"))
    display_name = spec.display_name.strip()
    if not display_name or len(display_name) > 100:
        problems.append(InvalidInput(BAD_DISPLAY_NAME, field="displayName"))
    password = spec.initial_password or None
    if password is not None:
        # Checked whether or not the account exists, so that the answer does not tell which.
        try:
            check_password_policy(password, login=login or spec.login, field="initialPassword")
        except ValidationFailed as refused:
            problems.extend(refused.problems)
    if problems:
        raise ValidationFailed(problems)
    assert login is not None
    async with in_transaction("default"):
        account = await UserAccount.get_or_none(login=login)
        if account is None:
            if password is None:
                raise InvalidInput(INITIAL_PASSWORD_REQUIRED, field="initialPassword")
            account = await _create_staff_account(login, display_name, password)
        elif password is not None:
            await hash_password(password)  # as long as a creation takes; the hash is not kept
        if account.kind != AccountKind.STAFF:
            raise InvalidInput(NOT_A_STAFF_ACCOUNT, field="login")
        for role in ordered_roles(roles):
            await StaffMembership.get_or_create(account=account, institution_id=institution_id, role=role)
    return await staff_member(institution_id, account.id)


async def _create_staff_account(login: str, display_name: str, password: str) -> UserAccount:
    try:
        async with in_transaction("default"):  # a savepoint: a lost race on the login must not abort
            return await create_account(NewAccount(AccountKind.STAFF, login, display_name, password))
    except Conflict:
        # Created a moment ago by someone else: it exists now, so only roles are added.
        return await UserAccount.get(login=login)


async def set_staff_roles(institution_id: int, account_id: int, roles: Iterable[StaffRole]) -> StaffMember:
    """Replace the account's roles in the institution (NotFound unless it is staff there)."""
    problems: list[InvalidInput] = []
    wanted = _wanted_roles(roles, problems)
    if problems:
        raise ValidationFailed(problems)
    async with in_transaction("default"):
        current = await _locked_roles(institution_id, account_id)
        await _keep_an_admin(institution_id, account_id, current, wanted, field="roles")
        await StaffMembership.filter(
            institution_id=institution_id, account_id=account_id, role__in=[r.value for r in current - wanted]
        ).delete()
        for role in ordered_roles(wanted - current):
            await StaffMembership.create(account_id=account_id, institution_id=institution_id, role=role)
    return await staff_member(institution_id, account_id)


async def remove_staff_member(institution_id: int, account_id: int) -> None:
    """Take every role in the institution from the account (NotFound unless it is staff there). The
    account itself stays: it may be staff elsewhere."""
    async with in_transaction("default"):
        current = await _locked_roles(institution_id, account_id)
        await _keep_an_admin(institution_id, account_id, current, frozenset(), field="staffMemberId")
        await StaffMembership.filter(institution_id=institution_id, account_id=account_id).delete()


async def _locked_roles(institution_id: int, account_id: int) -> frozenset[StaffRole]:
    """Lock the institution's staff against concurrent changes; the account's roles there."""
    await Institution.filter(id=institution_id).select_for_update().get_or_none()
    current = frozenset(
        StaffRole(role)
        for role in await StaffMembership.filter(
            institution_id=institution_id, account_id=account_id
        ).values_list("role", flat=True)
    )
    if not current:
        raise NotFound("Not found.", field="staffMemberId")
    return current


async def _keep_an_admin(
    institution_id: int,
    account_id: int,
    current: frozenset[StaffRole],
    wanted: frozenset[StaffRole],
    *,
    field: str,
) -> None:
    admin = StaffRole.INSTITUTION_ADMIN
    if admin not in current or admin in wanted:
        return
    others = (
        await StaffMembership.filter(
            institution_id=institution_id, role=admin, account__status=AccountStatus.ACTIVE
        )
        .exclude(account_id=account_id)
        .exists()
    )
    if not others:
        raise Conflict(LAST_ADMIN, field=field)


# The account seen from itself (the `me` query)


async def staff_memberships_of(account_id: int) -> list[tuple[int, frozenset[StaffRole]]]:
    """(institution id, roles there) of every institution where the account is staff, by id."""
    roles_in: dict[int, set[StaffRole]] = {}
    for institution_id, role in await StaffMembership.filter(account_id=account_id).values_list(
        "institution_id", "role"
    ):
        roles_in.setdefault(institution_id, set()).add(StaffRole(role))
    return [(institution, frozenset(roles)) for institution, roles in sorted(roles_in.items())]


async def chain_memberships_of(account_id: int) -> list[tuple[int, frozenset[ChainRole]]]:
    roles_in: dict[int, set[ChainRole]] = {}
    for chain_id, role in await ChainMembership.filter(account_id=account_id).values_list("chain_id", "role"):
        roles_in.setdefault(chain_id, set()).add(ChainRole(role))
    return [(chain, frozenset(roles)) for chain, roles in sorted(roles_in.items())]


async def followed_residents_of(account_id: int) -> list[tuple[int, int]]:
    """(institution id, resident id) of every resident a family account follows; ids only."""
    rows = (
        await FamilyLink.filter(account_id=account_id)
        .order_by("institution_id", "resident_id")
        .values_list("institution_id", "resident_id")
    )
    return [(institution, resident) for institution, resident in rows]


async def family_acting_options(account_id: int) -> list[int]:
    """Active institutions where a family account follows someone, i.e. may act in."""
    linked = await FamilyLink.filter(account_id=account_id).values_list("institution_id", flat=True)
    return list(
        await Institution.filter(id__in=list(set(linked)), status=InstitutionStatus.ACTIVE)
        .order_by("name", "id")
        .values_list("id", flat=True)
    )

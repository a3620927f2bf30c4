"""Accounts: creating them, their memberships, signing in, changing a password, and the principal an
account acts as in an institution."""

import re
from dataclasses import dataclass
from datetime import UTC, datetime

from tortoise.exceptions import IntegrityError
from tortoise.expressions import Q

from compliance.identity.account_models import (
    AccountKind,
    AccountStatus,
    ChainMembership,
    FamilyLink,
    StaffMembership,
    SupervisorRegion,
    UserAccount,
)
from compliance.identity.login_throttle import Lockout, LoginThrottle
from compliance.identity.passwords import (
    check_password_policy,
    dummy_hash,
    hash_password,
    needs_rehash,
    verify_password,
)
from compliance.principals import ChainRole, Principal, PrincipalKind, StaffRole
from tenants.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    RateLimited,
    Unauthenticated,
    ValidationFailed,
)
from tenants.models import Institution, InstitutionStatus

WRONG_CREDENTIALS = "Login or password is wrong."

_MOBILE = re.compile(r"^1[3-9]\d{9}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class LoginFailed(Unauthenticated):
    """The one answer to every failed sign-in, whether the login exists or not; `lockout` says whether
    further attempts are refused for a while, for the caller to show."""

    def __init__(self, lockout: Lockout | None = None) -> None:
        super().__init__(WRONG_CREDENTIALS)
        self.lockout = lockout


def normalize_login(login: str) -> str | None:
    """The stored spelling of an e-mail or a mainland mobile number, or None if `login` is neither."""
    given = login.strip()
    digits = re.sub(r"[\s-]", "", given)
    for country_code in ("+86", "0086"):
        if digits.startswith(country_code):
            digits = digits[len(country_code) :]
    if _MOBILE.match(digits):
        return digits
    lowered = given.lower()
    if len(lowered) <= 254 and _EMAIL.match(lowered):
        return lowered
    return None


@dataclass(frozen=True)
class NewAccount:
    kind: AccountKind
    login: str
    display_name: str
    password: str


async def create_account(spec: NewAccount) -> UserAccount:
    problems: list[InvalidInput] = []
    login = normalize_login(spec.login)
    if login is None:
        problems.append(
            InvalidInput("Login must be an e-mail address or a mainland mobile number.", field="login")
        )
    display_name = spec.display_name.strip()
    if not display_name or len(display_name) > 100:
        problems.append(InvalidInput("Name must be 1 to 100 characters.", field="displayName"))
    try:
        check_password_policy(spec.password, login=login or spec.login)
    except ValidationFailed as refused:
        problems.extend(refused.problems)
    if problems:
        raise ValidationFailed(problems)
    assert login is not None
    password_hash = await hash_password(spec.password)
    try:
        return await UserAccount.create(
            kind=spec.kind, login=login, display_name=display_name, password_hash=password_hash
        )
    except IntegrityError as taken:
        raise Conflict("An account with this login already exists.", field="login") from taken


async def authenticate(login: str, password: str, ip: str, *, throttle: LoginThrottle) -> UserAccount:
    """The active account `login` names if `password` is its password; LoginFailed otherwise.

    Unknown logins verify against a dummy hash, so that they take as long as wrong passwords.
    """
    normalized = normalize_login(login)
    attempt = await throttle.reserve(normalized or login, ip)
    if isinstance(attempt, Lockout):
        raise LoginFailed(attempt)
    account = await UserAccount.get_or_none(login=normalized) if normalized else None
    matches = await verify_password(account.password_hash if account else await dummy_hash(), password)
    if account is None or not matches or account.status != AccountStatus.ACTIVE:
        raise LoginFailed(await throttle.failed(attempt))
    await throttle.succeeded(attempt)
    if needs_rehash(account.password_hash):
        account.password_hash = await hash_password(password)
        await account.save(update_fields=["password_hash"])
    return account


async def change_password(
    account: UserAccount, current_password: str, new_password: str, *, throttle: LoginThrottle, ip: str
) -> None:
    """Replace the password, proven by the current one. Wrong current passwords count against the same
    throttle as sign-in: a stolen access token must not become a way to guess the password."""
    attempt = await throttle.reserve(account.login, ip)
    if isinstance(attempt, Lockout):
        raise RateLimited(
            "Too many wrong passwords. Try again in {seconds} seconds.",
            retry_after_seconds=attempt.retry_after_seconds,
            seconds=attempt.retry_after_seconds,
        )
    if not await verify_password(account.password_hash, current_password):
        await throttle.failed(attempt)
        raise InvalidInput("The current password is wrong.", field="currentPassword")
    await throttle.succeeded(attempt)
    check_password_policy(new_password, login=account.login, field="newPassword")
    if current_password == new_password:
        raise ValidationFailed(
            [InvalidInput("The new password must differ from the current one.", field="newPassword")]
        )
    account.password_hash = await hash_password(new_password)
    account.password_changed_at = datetime.now(UTC)
    await account.save(update_fields=["password_hash", "password_changed_at"])


def _require_kind(account: UserAccount, kind: AccountKind) -> None:
    if account.kind != kind:
        raise InvalidInput("This account is not a {kind} account.", field="account", kind=kind.value)


async def add_staff_membership(account: UserAccount, institution_id: int, role: StaffRole) -> StaffMembership:
    """Give `account` a role in an institution; giving it again changes nothing."""
    _require_kind(account, AccountKind.STAFF)
    membership, _ = await StaffMembership.get_or_create(
        account=account, institution_id=institution_id, role=role
    )
    return membership


async def remove_staff_membership(account: UserAccount, institution_id: int, role: StaffRole) -> bool:
    """Whether a role was taken away."""
    return bool(
        await StaffMembership.filter(account=account, institution_id=institution_id, role=role).delete()
    )


async def add_chain_membership(account: UserAccount, chain_id: int, role: ChainRole) -> ChainMembership:
    _require_kind(account, AccountKind.STAFF)
    membership, _ = await ChainMembership.get_or_create(account=account, chain_id=chain_id, role=role)
    return membership


async def remove_chain_membership(account: UserAccount, chain_id: int, role: ChainRole) -> bool:
    return bool(await ChainMembership.filter(account=account, chain_id=chain_id, role=role).delete())


async def add_supervisor_region(account: UserAccount, region_id: int) -> SupervisorRegion:
    _require_kind(account, AccountKind.SUPERVISOR)
    supervised, _ = await SupervisorRegion.get_or_create(account=account, region_id=region_id)
    return supervised


async def remove_supervisor_region(account: UserAccount, region_id: int) -> bool:
    return bool(await SupervisorRegion.filter(account=account, region_id=region_id).delete())


async def add_family_link(
    account: UserAccount, institution_id: int, *, family_member_id: int, resident_id: int
) -> FamilyLink:
    """Let a family account follow a resident. The caller has checked, in the institution's schema, that
    `family_member_id` is a family member of `resident_id` (compliance knows no tenant tables)."""
    _require_kind(account, AccountKind.FAMILY)
    link, _ = await FamilyLink.get_or_create(
        account=account,
        institution_id=institution_id,
        resident_id=resident_id,
        defaults={"family_member_id": family_member_id},
    )
    return link


async def remove_family_link(account: UserAccount, institution_id: int, resident_id: int) -> bool:
    return bool(
        await FamilyLink.filter(
            account=account, institution_id=institution_id, resident_id=resident_id
        ).delete()
    )


def subject_of(account: UserAccount) -> str:
    return f"account:{account.id}"


@dataclass(frozen=True, slots=True)
class ActingOption:
    """An institution a staff account may act in, for the choice after sign-in."""

    institution_id: int
    institution_name: str
    chain_name: str | None


async def acting_options(account: UserAccount) -> list[ActingOption]:
    """Where a staff account may act: its institutions, and every active institution of its chains."""
    if account.kind != AccountKind.STAFF:
        return []
    chain_ids = await ChainMembership.filter(account=account).values_list("chain_id", flat=True)
    institutions = (
        await Institution.filter(
            Q(staff_memberships__account_id=account.id) | Q(chain_id__in=list(chain_ids)),
            status=InstitutionStatus.ACTIVE,
        )
        .select_related("chain")
        .distinct()
        .order_by("name", "id")
    )
    return [ActingOption(i.id, i.name, i.chain.name if i.chain is not None else None) for i in institutions]


async def principal_for(account: UserAccount, institution_id: int | None) -> Principal:
    """The principal `account` acts as; for staff, in `institution_id`.

    Staff roles come from the staff memberships in that institution; chain roles from the chain
    memberships of the institution's chain (a chain role opens no resident record by itself, see
    migrations/shared/0003_accounts.sql and compliance/policy.py). A staff account that may act in
    several places and names none gets InvalidInput("Choose an institution."): the sign-in page then
    offers `acting_options`. A staff account with chain roles only may also act chain-wide (no
    institution): each request then names the institution (compliance/acting.py).
    """
    if account.status != AccountStatus.ACTIVE:
        raise Unauthenticated("Authentication required.")
    subject = subject_of(account)
    if account.kind == AccountKind.OPERATOR:
        return Principal(subject=subject, kind=PrincipalKind.OPERATOR)
    if account.kind == AccountKind.FAMILY:
        return Principal(subject=subject, kind=PrincipalKind.FAMILY)
    if account.kind == AccountKind.SUPERVISOR:
        regions = await SupervisorRegion.filter(account=account).values_list("region_id", flat=True)
        return Principal(subject=subject, kind=PrincipalKind.SUPERVISOR, region_ids=frozenset(regions))
    memberships = await StaffMembership.filter(account=account).values_list("institution_id", "role")
    chain_memberships = await ChainMembership.filter(account=account).values_list("chain_id", "role")
    roles_in: dict[int, set[StaffRole]] = {}
    for institution, role in memberships:
        roles_in.setdefault(institution, set()).add(StaffRole(role))
    chain_roles_in: dict[int, set[ChainRole]] = {}
    for chain, role in chain_memberships:
        chain_roles_in.setdefault(chain, set()).add(ChainRole(role))
    if institution_id is None:
        if len(roles_in) == 1 and not chain_roles_in:
            institution_id = next(iter(roles_in))
        elif not roles_in and len(chain_roles_in) == 1:
            chain_id, chain_roles = next(iter(chain_roles_in.items()))
            return Principal(
                subject=subject,
                kind=PrincipalKind.STAFF,
                chain_id=chain_id,
                chain_roles=frozenset(chain_roles),
            )
        else:
            raise InvalidInput("Choose an institution.", field="institution")
    institution = await Institution.get_or_none(id=institution_id, status=InstitutionStatus.ACTIVE)
    if institution is None:
        raise NotFound("Not found.", field="institution")
    roles = frozenset(roles_in.get(institution.id, ()))
    chain_roles = frozenset(chain_roles_in.get(institution.chain_id or 0, ()))
    if not roles and not chain_roles:
        raise NotFound("Not found.", field="institution")
    return Principal(
        subject=subject,
        kind=PrincipalKind.STAFF,
        institution_id=institution.id,
        roles=roles,
        chain_id=institution.chain_id if chain_roles else None,
        chain_roles=chain_roles,
    )

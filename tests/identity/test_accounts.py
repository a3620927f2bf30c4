"""Accounts against the real PostgreSQL and Redis: hashing, policy, sign-in, memberships, principals."""

import asyncio
import uuid

import pytest
from argon2 import PasswordHasher, Type
from redis.asyncio import Redis

import compliance.identity.accounts as accounts_module
from compliance.identity import passwords
from compliance.identity.account_models import (
    AccountKind,
    AccountStatus,
    ChainMembership,
    ChainRole,
    FamilyLink,
    StaffMembership,
    SupervisorRegion,
    UserAccount,
)
from compliance.identity.accounts import (
    WRONG_CREDENTIALS,
    LoginFailed,
    NewAccount,
    acting_options,
    add_chain_membership,
    add_family_link,
    add_staff_membership,
    add_supervisor_region,
    authenticate,
    change_password,
    create_account,
    normalize_login,
    principal_for,
    remove_family_link,
    remove_staff_membership,
    remove_supervisor_region,
)
from compliance.identity.login_throttle import LockScope, LoginThrottle, ThrottlePolicy
from compliance.identity.passwords import check_password_policy, hash_password, needs_rehash, verify_password
from compliance.principals import PrincipalKind, StaffRole
from tenants.errors import (
    Conflict,
    InvalidInput,
    NotFound,
    RateLimited,
    Unauthenticated,
    ValidationFailed,
)
from tenants.models import Institution
from tests.conftest import ManualClock, World

PASSWORD = "lanterns-over-the-river"


@pytest.fixture
def throttle(redis: Redis, clock: ManualClock) -> LoginThrottle:
    return LoginThrottle(redis, prefix=f"test:{uuid.uuid4().hex}", policy=ThrottlePolicy(), clock=clock)


def unique_login() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


async def new_account(kind: AccountKind = AccountKind.STAFF, password: str = PASSWORD) -> UserAccount:
    return await create_account(NewAccount(kind, unique_login(), "王小明", password))


def messages(refused: ValidationFailed) -> list[str]:
    return [problem.message for problem in refused.problems]


# Hashing and policy


async def test_hashes_are_argon2id_with_the_chosen_parameters_and_round_trip() -> None:
    stored = await hash_password(PASSWORD)
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert stored != await hash_password(PASSWORD)  # salted
    assert await verify_password(stored, PASSWORD)
    assert not await verify_password(stored, PASSWORD + "x")
    assert not await verify_password("not a hash", PASSWORD)
    assert not needs_rehash(stored)
    assert needs_rehash(PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1, type=Type.ID).hash("x"))


def test_policy_refuses_short_same_as_login_and_common_passwords() -> None:
    with pytest.raises(ValidationFailed) as short:
        check_password_policy("short-pw", login="a@example.com")
    assert messages(short.value) == ["Password must be at least {minimum} characters."]
    with pytest.raises(ValidationFailed) as same:
        check_password_policy("Li.Hua@Example.com", login="li.hua@example.com")
    assert messages(same.value) == ["Password must not be the same as the login."]
    with pytest.raises(ValidationFailed) as common:
        check_password_policy("WoAiNi1314", login="a@example.com")
    assert messages(common.value) == ["Password is too common; choose another."]
    with pytest.raises(ValidationFailed):
        check_password_policy("x" * 257, login="a@example.com")
    check_password_policy(PASSWORD, login="a@example.com")


# Creating accounts


def test_logins_are_stored_in_one_spelling() -> None:
    assert normalize_login("  Li.Hua@Example.COM ") == "li.hua@example.com"
    assert normalize_login("+86 138-0013-8000") == "13800138000"
    assert normalize_login("13800138000") == "13800138000"
    assert normalize_login("12800138000") is None  # not a mainland mobile number
    assert normalize_login("li.hua") is None


async def test_create_account_refuses_bad_input_and_a_taken_login(app: object) -> None:
    with pytest.raises(ValidationFailed) as refused:
        await create_account(NewAccount(AccountKind.STAFF, "not-a-login", " ", "1234567890"))
    assert {problem.field for problem in refused.value.problems} == {"login", "displayName", "password"}
    login = unique_login()
    created = await create_account(NewAccount(AccountKind.FAMILY, login.upper(), "李华", PASSWORD))
    assert created.login == login and created.status == AccountStatus.ACTIVE
    with pytest.raises(Conflict):
        await create_account(NewAccount(AccountKind.STAFF, login, "别人", PASSWORD))


# Signing in


async def test_authenticate_returns_the_account_for_its_password(
    app: object, throttle: LoginThrottle
) -> None:
    account = await new_account()
    found = await authenticate(f" {account.login.upper()} ", PASSWORD, "10.0.0.1", throttle=throttle)
    assert found.id == account.id


async def test_unknown_login_and_wrong_password_fail_alike(app: object, throttle: LoginThrottle) -> None:
    account = await new_account()
    with pytest.raises(LoginFailed) as wrong:
        await authenticate(account.login, "not-the-password", "10.0.0.1", throttle=throttle)
    with pytest.raises(LoginFailed) as unknown:
        await authenticate(unique_login(), PASSWORD, "10.0.0.1", throttle=throttle)
    with pytest.raises(LoginFailed) as malformed:
        await authenticate("nobody", PASSWORD, "10.0.0.1", throttle=throttle)
    for refused in (wrong.value, unknown.value, malformed.value):
        assert isinstance(refused, Unauthenticated)
        assert (refused.message, refused.code, refused.field, refused.lockout) == (
            WRONG_CREDENTIALS,
            "UNAUTHENTICATED",
            None,
            None,
        )


async def test_unknown_logins_do_the_hashing_work_of_known_ones(
    app: object, throttle: LoginThrottle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unknown login is verified against a real argon2id hash, so it takes as long as a wrong password."""
    account = await new_account()
    verified: list[str] = []
    real_verify = accounts_module.verify_password

    async def recording_verify(password_hash: str, password: str) -> bool:
        verified.append(password_hash)
        return await real_verify(password_hash, password)

    monkeypatch.setattr(accounts_module, "verify_password", recording_verify)
    for login in (account.login, unique_login()):
        with pytest.raises(LoginFailed):
            await authenticate(login, "not-the-password", "10.0.0.2", throttle=throttle)
    known, unknown = verified
    assert known == account.password_hash
    assert unknown == await passwords.dummy_hash()
    assert unknown.split("$")[1:4] == known.split("$")[1:4]  # same algorithm, version and cost


async def test_inactive_accounts_cannot_sign_in(app: object, throttle: LoginThrottle) -> None:
    for status in (AccountStatus.LOCKED, AccountStatus.DISABLED):
        account = await new_account()
        await UserAccount.filter(id=account.id).update(status=status)
        with pytest.raises(LoginFailed) as refused:
            await authenticate(account.login, PASSWORD, "10.0.0.1", throttle=throttle)
        assert refused.value.message == WRONG_CREDENTIALS


async def test_a_hash_with_old_parameters_is_upgraded_at_sign_in(
    app: object, throttle: LoginThrottle
) -> None:
    account = await new_account()
    weaker = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1, type=Type.ID).hash(PASSWORD)
    await UserAccount.filter(id=account.id).update(password_hash=weaker)
    await authenticate(account.login, PASSWORD, "10.0.0.1", throttle=throttle)
    stored = (await UserAccount.get(id=account.id)).password_hash
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert await verify_password(stored, PASSWORD)


async def test_a_locked_login_is_refused_even_with_the_right_password_then_recovers(
    app: object, throttle: LoginThrottle, clock: ManualClock
) -> None:
    account = await new_account()
    lockouts = []
    for _ in range(5):
        with pytest.raises(LoginFailed) as refused:
            await authenticate(account.login, "not-the-password", "10.0.0.3", throttle=throttle)
        lockouts.append(refused.value.lockout)
    assert lockouts[:4] == [None] * 4
    assert lockouts[4] is not None and lockouts[4].scope is LockScope.ACCOUNT
    assert lockouts[4].retry_after_seconds == 900
    with pytest.raises(LoginFailed) as still:
        await authenticate(account.login, PASSWORD, "10.0.0.4", throttle=throttle)
    assert still.value.message == WRONG_CREDENTIALS and still.value.lockout is not None
    clock.now += 900
    assert (await authenticate(account.login, PASSWORD, "10.0.0.3", throttle=throttle)).id == account.id


async def test_thirty_concurrent_guesses_check_at_most_five_passwords(
    app: object, throttle: LoginThrottle, monkeypatch: pytest.MonkeyPatch
) -> None:
    account = await new_account()
    checked = 0
    real_verify = passwords.verify_password

    async def counting_verify(password_hash: str, password: str) -> bool:
        nonlocal checked
        checked += 1
        return await real_verify(password_hash, password)

    monkeypatch.setattr("compliance.identity.accounts.verify_password", counting_verify)
    outcomes = await asyncio.gather(
        *(authenticate(account.login, f"guess-{n:04d}-x", "10.0.0.5", throttle=throttle) for n in range(30)),
        return_exceptions=True,
    )
    assert all(isinstance(outcome, LoginFailed) for outcome in outcomes)
    assert checked == 5
    assert sum(1 for outcome in outcomes if outcome.lockout is not None) >= 25  # type: ignore[union-attr]
    with pytest.raises(LoginFailed):
        await authenticate(account.login, PASSWORD, "10.0.0.6", throttle=throttle)


async def test_change_password_needs_the_current_one(app: object, throttle: LoginThrottle) -> None:
    account = await new_account()
    before = account.password_changed_at
    checked = {"throttle": throttle, "ip": "10.0.0.8"}
    with pytest.raises(InvalidInput) as wrong:
        await change_password(account, "not-the-password", "a-brand-new-passphrase", **checked)
    assert wrong.value.field == "currentPassword"
    with pytest.raises(ValidationFailed) as weak:
        await change_password(account, PASSWORD, "qwertyuiop", **checked)
    assert weak.value.field == "newPassword"
    with pytest.raises(ValidationFailed):
        await change_password(account, PASSWORD, PASSWORD, **checked)
    await change_password(account, PASSWORD, "a-brand-new-passphrase", **checked)
    reloaded = await UserAccount.get(id=account.id)
    assert reloaded.password_changed_at > before
    with pytest.raises(LoginFailed):
        await authenticate(account.login, PASSWORD, "10.0.0.7", throttle=throttle)
    assert (
        await authenticate(account.login, "a-brand-new-passphrase", "10.0.0.7", throttle=throttle)
    ).id == (account.id)


# Memberships and principals


async def test_wrong_current_passwords_lock_the_account_like_failed_sign_ins(
    app: object, throttle: LoginThrottle, clock: ManualClock
) -> None:
    """A stolen access token must not let anyone guess the password through changePassword."""
    account = await new_account()
    checked = {"throttle": throttle, "ip": "10.0.0.9"}
    for _ in range(ThrottlePolicy().account_failures):
        with pytest.raises(InvalidInput):
            await change_password(account, "guess", "a-brand-new-passphrase", **checked)
    with pytest.raises(RateLimited) as locked:  # even the right password, now
        await change_password(account, PASSWORD, "a-brand-new-passphrase", **checked)
    assert 0 < locked.value.retry_after_seconds <= ThrottlePolicy().lockout_seconds
    with pytest.raises(LoginFailed):  # the same lock as sign-in
        await authenticate(account.login, PASSWORD, "10.0.0.10", throttle=throttle)
    clock.now += ThrottlePolicy().lockout_seconds + 1  # recovers
    await change_password(account, PASSWORD, "a-brand-new-passphrase", **checked)


async def test_principal_for_holds_the_roles_in_that_institution_only(world: World) -> None:
    first, second = world.institution_ids[:2]
    account = await new_account()
    await add_staff_membership(account, first, StaffRole.NURSE)
    await add_staff_membership(account, first, StaffRole.BUTLER)
    await add_staff_membership(account, first, StaffRole.NURSE)  # again: no second row
    await add_staff_membership(account, second, StaffRole.FINANCE)
    assert await StaffMembership.filter(account=account).count() == 3

    principal = await principal_for(account, first)
    assert principal.kind is PrincipalKind.STAFF
    assert principal.institution_id == first
    assert principal.roles == {StaffRole.NURSE, StaffRole.BUTLER}
    assert principal.subject == f"account:{account.id}"
    assert (await principal_for(account, second)).roles == {StaffRole.FINANCE}
    with pytest.raises(NotFound):
        await principal_for(account, world.institution_ids[2])

    assert await remove_staff_membership(account, first, StaffRole.BUTLER)
    assert not await remove_staff_membership(account, first, StaffRole.BUTLER)
    assert (await principal_for(account, first)).roles == {StaffRole.NURSE}

    await UserAccount.filter(id=account.id).update(status=AccountStatus.DISABLED)
    with pytest.raises(Unauthenticated):
        await principal_for(await UserAccount.get(id=account.id), first)


async def test_chain_roles_act_in_every_institution_of_the_chain_and_no_other(world: World) -> None:
    institution = await Institution.get(id=world.institution_ids[0])
    assert institution.chain_id is not None
    same_chain = await Institution.filter(chain_id=institution.chain_id).exclude(id=institution.id).first()
    other_chain = await Institution.exclude(chain_id=institution.chain_id).first()
    assert same_chain is not None and other_chain is not None
    account = await new_account()
    await add_chain_membership(account, institution.chain_id, ChainRole.CHAIN_ADMIN)
    await add_chain_membership(account, institution.chain_id, ChainRole.CHAIN_DIRECTOR)
    assert await ChainMembership.filter(account=account).count() == 2

    chain_wide = await principal_for(account, None)
    assert chain_wide.institution_id is None and chain_wide.chain_id == institution.chain_id
    assert chain_wide.chain_roles == {ChainRole.CHAIN_ADMIN, ChainRole.CHAIN_DIRECTOR}
    in_one = await principal_for(account, same_chain.id)
    assert in_one.institution_id == same_chain.id and not in_one.roles
    assert in_one.chain_roles == chain_wide.chain_roles
    with pytest.raises(NotFound):
        await principal_for(account, other_chain.id)
    offered = {option.institution_id for option in await acting_options(account)}
    assert offered == set(
        await Institution.filter(chain_id=institution.chain_id).values_list("id", flat=True)
    )

    await add_staff_membership(account, other_chain.id, StaffRole.NURSE)
    with pytest.raises(InvalidInput):  # two places to act in and none named
        await principal_for(account, None)
    nurse_there = await principal_for(account, other_chain.id)
    assert nurse_there.roles == {StaffRole.NURSE} and not nurse_there.chain_roles
    assert nurse_there.chain_id is None
    assert other_chain.id in {option.institution_id for option in await acting_options(account)}


async def test_operators_family_and_supervisors(world: World) -> None:
    operator = await new_account(AccountKind.OPERATOR)
    principal = await principal_for(operator, None)
    assert (
        principal.kind is PrincipalKind.OPERATOR and principal.institution_id is None and not principal.roles
    )

    family = await new_account(AccountKind.FAMILY)
    with pytest.raises(InvalidInput):
        await add_staff_membership(family, world.institution_ids[0], StaffRole.NURSE)
    as_family = await principal_for(family, None)
    assert as_family.kind is PrincipalKind.FAMILY and as_family.institution_id is None
    first, second = world.institution_ids[:2]
    await add_family_link(family, first, family_member_id=1, resident_id=1)
    await add_family_link(family, second, family_member_id=4, resident_id=3)  # another institution
    await add_family_link(family, first, family_member_id=1, resident_id=1)  # again: no second row
    links = (
        await FamilyLink.filter(account=family)
        .order_by("institution_id")
        .values_list("institution_id", "resident_id", "family_member_id")
    )
    assert links == [(first, 1, 1), (second, 3, 4)]
    assert await remove_family_link(family, second, 3)
    assert await FamilyLink.filter(account=family).count() == 1

    supervisor = await new_account(AccountKind.SUPERVISOR)
    institution = await Institution.get(id=first)
    await add_supervisor_region(supervisor, institution.region_id)
    with pytest.raises(InvalidInput):
        await add_supervisor_region(family, institution.region_id)
    assert await SupervisorRegion.filter(account=supervisor).count() == 1
    assert await remove_supervisor_region(supervisor, institution.region_id)


async def test_memberships_go_with_their_account(world: World) -> None:
    account = await new_account()
    await add_staff_membership(account, world.institution_ids[0], StaffRole.CAREGIVER)
    await account.delete()
    assert await StaffMembership.filter(account_id=account.id).count() == 0

"""TOTP second factor against the real PostgreSQL: enrolment, codes, replay, sealing, who must enrol."""

import asyncio
import uuid
from urllib.parse import parse_qs, urlsplit

import pyotp
import pytest

from compliance.identity.account_models import AccountKind, UserAccount
from compliance.identity.accounts import NewAccount, add_staff_membership, create_account
from compliance.identity.keys import RootKeyError, root_key_from_environ, unseal
from compliance.identity.totp import (
    ALREADY_ENROLLED,
    NO_SECOND_FACTOR,
    STEP_SECONDS,
    WRONG_CODE,
    SecondFactor,
    TotpEnrolment,
    begin_enrolment,
    confirm_enrolment,
    disable_totp,
    second_factor_for,
    set_institution_requires_totp,
    verify_code,
)
from compliance.principals import StaffRole
from tenants.db import default_connection
from tenants.errors import Conflict, InvalidInput, NotFound
from tenants.models import Institution, InstitutionStatus
from tenants.registry import NewInstitution, get_or_create_region, provision_institution
from tests.conftest import ManualClock

PASSWORD = "lanterns-over-the-river"


async def new_account(kind: AccountKind = AccountKind.STAFF) -> UserAccount:
    login = f"totp-{uuid.uuid4().hex[:12]}@example.com"
    return await create_account(NewAccount(kind, login, "李护士", PASSWORD))


def code_at(enrolment: TotpEnrolment, moment: float) -> str:
    return pyotp.TOTP(enrolment.secret).at(moment)


async def enrolled(clock: ManualClock) -> tuple[UserAccount, TotpEnrolment]:
    """A staff account with a confirmed TOTP; the confirmation used the current step of `clock`."""
    account = await new_account()
    enrolment = await begin_enrolment(account, clock=clock)
    await confirm_enrolment(account, code_at(enrolment, clock()), clock=clock)
    return account, enrolment


async def stored_row(account: UserAccount) -> dict:
    rows = await default_connection().execute_query_dict(
        "SELECT * FROM shared.totp_credential WHERE account_id = $1", [account.id]
    )
    return rows[0]


@pytest.fixture
async def institution(app: object) -> Institution:
    await get_or_create_region("test-totp", "二次验证测试区")
    return await provision_institution(
        NewInstitution(name=f"双因素养老院{uuid.uuid4().hex[:6]}", region_code="test-totp")
    )


# Enrolment and confirmation


async def test_enrol_then_confirm_turns_the_second_factor_on(app: object, clock: ManualClock) -> None:
    account = await new_account()
    assert await second_factor_for(account) == SecondFactor.NONE
    enrolment = await begin_enrolment(account, clock=clock)

    uri = urlsplit(enrolment.otpauth_uri)
    assert (uri.scheme, uri.netloc) == ("otpauth", "totp")
    assert parse_qs(uri.query)["secret"] == [enrolment.secret]
    assert parse_qs(uri.query)["issuer"] == ["Yiyang"]
    assert account.login in uri.path.replace("%40", "@")
    assert len(enrolment.secret) == 32  # base32 of 160 bits

    # Pending: nothing to verify yet, and a code of the pending secret signs nobody in.
    assert await second_factor_for(account) == SecondFactor.NONE
    assert not await verify_code(account, code_at(enrolment, clock()), clock=clock)

    await confirm_enrolment(account, code_at(enrolment, clock()), clock=clock)
    assert await second_factor_for(account) == SecondFactor.VERIFY
    clock.now += STEP_SECONDS
    assert await verify_code(account, code_at(enrolment, clock()), clock=clock)


async def test_a_wrong_code_does_not_confirm(app: object, clock: ManualClock) -> None:
    account = await new_account()
    enrolment = await begin_enrolment(account, clock=clock)
    right = code_at(enrolment, clock())
    wrong = f"{(int(right) + 1) % 1_000_000:06d}"
    for bad in (wrong, "", "12345", "1234567", "abcdef", code_at(enrolment, clock() + 5 * STEP_SECONDS)):
        with pytest.raises(InvalidInput) as refused:
            await confirm_enrolment(account, bad, clock=clock)
        assert (refused.value.message, refused.value.field) == (WRONG_CODE, "code")
    assert await second_factor_for(account) == SecondFactor.NONE
    await confirm_enrolment(account, f"{right[:3]} {right[3:]}", clock=clock)  # spaces as apps show them
    assert await second_factor_for(account) == SecondFactor.VERIFY


async def test_a_new_enrolment_replaces_a_pending_secret_but_not_a_confirmed_one(
    app: object, clock: ManualClock
) -> None:
    account = await new_account()
    first = await begin_enrolment(account, clock=clock)
    second = await begin_enrolment(account, clock=clock)
    assert first.secret != second.secret
    with pytest.raises(InvalidInput):
        await confirm_enrolment(account, code_at(first, clock()), clock=clock)
    await confirm_enrolment(account, code_at(second, clock()), clock=clock)

    with pytest.raises(Conflict) as refused:
        await begin_enrolment(account, clock=clock)
    assert refused.value.message == ALREADY_ENROLLED
    with pytest.raises(Conflict):
        await confirm_enrolment(account, code_at(second, clock()), clock=clock)
    clock.now += STEP_SECONDS
    assert await verify_code(account, code_at(second, clock()), clock=clock)  # the confirmed one still works


async def test_only_staff_accounts_enrol(app: object, clock: ManualClock) -> None:
    for kind in (AccountKind.FAMILY, AccountKind.OPERATOR, AccountKind.SUPERVISOR):
        with pytest.raises(InvalidInput) as refused:
            await begin_enrolment(await new_account(kind), clock=clock)
        assert refused.value.field == "account"


# Verification


async def test_a_code_is_accepted_once_only(app: object, clock: ManualClock) -> None:
    account, enrolment = await enrolled(clock)
    # The confirming code's step is used up already.
    assert not await verify_code(account, code_at(enrolment, clock()), clock=clock)
    clock.now += STEP_SECONDS
    code = code_at(enrolment, clock())
    assert await verify_code(account, code, clock=clock)
    assert not await verify_code(account, code, clock=clock)  # replay within the same step
    clock.now += 10
    assert not await verify_code(account, code, clock=clock)  # or a little later, still inside the window


async def test_concurrent_presentations_of_one_code_accept_exactly_one(
    app: object, clock: ManualClock
) -> None:
    account, enrolment = await enrolled(clock)
    clock.now += STEP_SECONDS
    code = code_at(enrolment, clock())
    outcomes = await asyncio.gather(*(verify_code(account, code, clock=clock) for _ in range(10)))
    assert outcomes.count(True) == 1


async def test_the_window_is_one_step_either_side(app: object, clock: ManualClock) -> None:
    account, enrolment = await enrolled(clock)
    start = clock()
    # A phone one step ahead: the next step's code is accepted now.
    clock.now = start + 2 * STEP_SECONDS
    assert await verify_code(account, code_at(enrolment, clock() + STEP_SECONDS), clock=clock)
    # Two steps ahead or two behind: refused.
    clock.now = start + 10 * STEP_SECONDS
    assert not await verify_code(account, code_at(enrolment, clock() + 2 * STEP_SECONDS), clock=clock)
    assert not await verify_code(account, code_at(enrolment, clock() - 2 * STEP_SECONDS), clock=clock)
    # One behind (a slow phone, or a code typed just as it changed): accepted.
    assert await verify_code(account, code_at(enrolment, clock() - STEP_SECONDS), clock=clock)
    # Once a step is used, an earlier step within the window is no longer accepted either.
    clock.now = start + 20 * STEP_SECONDS
    assert await verify_code(account, code_at(enrolment, clock()), clock=clock)
    assert not await verify_code(account, code_at(enrolment, clock() - STEP_SECONDS), clock=clock)
    assert await verify_code(account, code_at(enrolment, clock() + STEP_SECONDS), clock=clock)


async def test_other_accounts_codes_and_unenrolled_accounts_fail(app: object, clock: ManualClock) -> None:
    account, own = await enrolled(clock)
    _, other = await enrolled(clock)
    clock.now += STEP_SECONDS
    if code_at(other, clock()) != code_at(own, clock()):  # equal one time in a million
        assert not await verify_code(account, code_at(other, clock()), clock=clock)
    assert not await verify_code(await new_account(), "123456", clock=clock)


# Sealing


async def test_the_secret_is_sealed_and_bound_to_its_account(app: object, clock: ManualClock) -> None:
    account, enrolment = await enrolled(clock)
    other, _ = await enrolled(clock)
    row = await stored_row(account)
    sealed = bytes(row["secret_sealed"])
    assert enrolment.secret.encode() not in sealed
    all_columns = " ".join(str(value) for value in row.values())
    assert enrolment.secret not in all_columns
    root_key = root_key_from_environ({})
    assert unseal(root_key, sealed, f"totp-secret:account:{account.id}".encode(), what="t") == (
        enrolment.secret.encode()
    )
    with pytest.raises(RootKeyError):
        unseal(root_key, sealed, f"totp-secret:account:{other.id}".encode(), what="t")

    # Copied onto another account's row, the sealed secret opens nowhere: codes of it are errors there.
    await default_connection().execute_query(
        "UPDATE shared.totp_credential SET secret_sealed = $2 WHERE account_id = $1", [other.id, sealed]
    )
    clock.now += STEP_SECONDS
    with pytest.raises(RootKeyError):
        await verify_code(other, code_at(enrolment, clock()), clock=clock)
    # Under another root key, the account's own secret does not open either.
    with pytest.raises(RootKeyError):
        await verify_code(account, code_at(enrolment, clock()), clock=clock, root_key=b"k" * 32)
    assert await verify_code(account, code_at(enrolment, clock()), clock=clock)


# Who must enrol


async def test_requirement_follows_institution_and_role(app: object, institution: Institution) -> None:
    nurse, caregiver, admin = await new_account(), await new_account(), await new_account()
    await add_staff_membership(nurse, institution.id, StaffRole.NURSE)
    await add_staff_membership(caregiver, institution.id, StaffRole.CAREGIVER)
    await add_staff_membership(admin, institution.id, StaffRole.INSTITUTION_ADMIN)
    family = await new_account(AccountKind.FAMILY)
    accounts = (nurse, caregiver, admin, family)
    assert [await second_factor_for(a) for a in accounts] == [SecondFactor.NONE] * 4

    await set_institution_requires_totp(institution.id, True)
    assert (await Institution.get(id=institution.id)).requires_totp
    assert [await second_factor_for(a) for a in accounts] == [
        SecondFactor.ENROL,
        SecondFactor.NONE,  # caregivers are not required
        SecondFactor.ENROL,
        SecondFactor.NONE,
    ]
    # A caregiver who is also a doctor somewhere that requires it must enrol.
    await add_staff_membership(caregiver, institution.id, StaffRole.DOCTOR)
    assert await second_factor_for(caregiver) == SecondFactor.ENROL

    # A suspended institution requires nothing of anyone.
    await Institution.filter(id=institution.id).update(status=InstitutionStatus.SUSPENDED)
    assert await second_factor_for(nurse) == SecondFactor.NONE
    await Institution.filter(id=institution.id).update(status=InstitutionStatus.ACTIVE)

    await set_institution_requires_totp(institution.id, False)
    assert await second_factor_for(nurse) == SecondFactor.NONE
    with pytest.raises(NotFound):
        await set_institution_requires_totp(-1, True)


async def test_enrolled_accounts_verify_whether_required_or_not(
    app: object, institution: Institution, clock: ManualClock
) -> None:
    await set_institution_requires_totp(institution.id, True)
    account = await new_account()
    await add_staff_membership(account, institution.id, StaffRole.HEAD_NURSE)
    assert await second_factor_for(account) == SecondFactor.ENROL
    enrolment = await begin_enrolment(account, clock=clock)
    assert await second_factor_for(account) == SecondFactor.ENROL  # pending is not enough
    await confirm_enrolment(account, code_at(enrolment, clock()), clock=clock)
    assert await second_factor_for(account) == SecondFactor.VERIFY
    await set_institution_requires_totp(institution.id, False)
    assert await second_factor_for(account) == SecondFactor.VERIFY  # chosen freely, still asked for


# Disabling


async def test_disable_needs_a_valid_unused_code(app: object, clock: ManualClock) -> None:
    account, enrolment = await enrolled(clock)
    with pytest.raises(InvalidInput) as refused:
        await disable_totp(account, code_at(enrolment, clock()), clock=clock)  # used by the confirmation
    assert refused.value.message == WRONG_CODE
    wrong = f"{(int(code_at(enrolment, clock() + STEP_SECONDS)) + 1) % 1_000_000:06d}"
    with pytest.raises(InvalidInput):
        await disable_totp(account, wrong, clock=clock)
    assert await second_factor_for(account) == SecondFactor.VERIFY

    clock.now += STEP_SECONDS
    await disable_totp(account, code_at(enrolment, clock()), clock=clock)
    assert await second_factor_for(account) == SecondFactor.NONE
    assert not await verify_code(account, code_at(enrolment, clock() + STEP_SECONDS), clock=clock)
    with pytest.raises(InvalidInput) as refused:
        await disable_totp(account, code_at(enrolment, clock()), clock=clock)
    assert refused.value.message == NO_SECOND_FACTOR
    # Enrolling again gives a new secret.
    again = await begin_enrolment(account, clock=clock)
    assert again.secret != enrolment.secret


async def test_the_credential_goes_with_its_account(app: object, clock: ManualClock) -> None:
    account, _ = await enrolled(clock)
    await account.delete()
    rows = await default_connection().execute_query_dict(
        "SELECT 1 FROM shared.totp_credential WHERE account_id = $1", [account.id]
    )
    assert rows == []

"""TOTP second factor (RFC 6238) of staff accounts: enrolment, confirmation, verification, requirement.

Staff enrol an authenticator app (a 160-bit secret shown once, as an otpauth:// URI for a QR code) and
confirm it with a first code; from then on `second_factor_for` tells the sign-in to ask for a code
(VERIFY). An institution may require a second factor of its admin and clinical staff: such an account
without one is told to enrol (ENROL) before it may act.

- The secret is stored in `shared.totp_credential` (migrations/shared/0006_totp.sql) sealed with
  AES-256-GCM under the root key (keys.py), with the account id as associated data: a database dump
  yields no secret, and a sealed secret copied onto another account does not open there.
- Codes are 6 digits for 30-second steps; a code of the step before or after the current one is
  accepted too (clock drift of a phone).
- Replay: `last_used_step` is the latest step ever accepted, and a code is accepted only for a later
  step, by one conditional UPDATE: a code seen once (or an earlier one) is refused, even when two
  requests present it at the same moment.

Counting failed codes (brute force: each guess has a 3-in-a-million chance) is the caller's job, with the
login throttle of the sign-in that asks for the code.

Rows are read and written with SQL, not an ORM model: the conditional UPDATE is the point, and the table
is touched only here.
"""

import hmac
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

import pyotp
from tortoise import connections
from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.transactions import in_transaction

from compliance.identity.account_models import AccountKind, StaffMembership, UserAccount
from compliance.identity.keys import resealed, root_keys_from_environ, seal, unseal
from compliance.principals import StaffRole
from tenants.errors import Conflict, InvalidInput, NotFound
from tenants.models import Institution, InstitutionStatus
from tenants.schema_names import SHARED_SCHEMA

Clock = Callable[[], float]

ISSUER_NAME = "Yiyang"  # the label an authenticator app shows above the account
STEP_SECONDS = 30
DIGITS = 6
# Steps accepted on either side of the current one: a phone whose clock is up to 30 s off still works.
WINDOW_STEPS = 1
# Roles whose holders must enrol where their institution requires a second factor.
ROLES_REQUIRING_TOTP = frozenset(
    {StaffRole.INSTITUTION_ADMIN, StaffRole.HEAD_NURSE, StaffRole.NURSE, StaffRole.DOCTOR}
)

WRONG_CODE = "The code is wrong or has expired."
ALREADY_ENROLLED = "A second factor is already set up for this account."
NOTHING_TO_CONFIRM = "Start setting up a second factor first."
NO_SECOND_FACTOR = "This account has no second factor."

_TABLE = f"{SHARED_SCHEMA}.totp_credential"


class SecondFactor(StrEnum):
    NONE = "none"  # sign in with the password alone
    VERIFY = "verify"  # ask for a code of the confirmed authenticator
    ENROL = "enrol"  # an institution requires a second factor the account does not have yet


@dataclass(frozen=True)
class TotpEnrolment:
    secret: str  # base32, for typing in by hand
    otpauth_uri: str  # for the QR code


def _db() -> BaseDBAsyncClient:
    return connections.get("default")


def _associated_data(account_id: int) -> bytes:
    # Prefixed, so a value sealed for another purpose (a signing key, bound to its kid) never opens here.
    return f"totp-secret:account:{account_id}".encode()


RootKeys = bytes | Sequence[bytes]  # one key, or the environment's (the first seals, every one opens)


def _root_keys(root_key: RootKeys | None) -> tuple[bytes, ...]:
    if root_key is None:
        return root_keys_from_environ()
    return (root_key,) if isinstance(root_key, bytes) else tuple(root_key)


def _seal_secret(account_id: int, secret: str, root_key: RootKeys | None) -> bytes:
    return seal(_root_keys(root_key)[0], secret.encode(), _associated_data(account_id))


def _open_secret(account_id: int, sealed: bytes, root_key: RootKeys | None) -> str:
    what = f"TOTP secret of account {account_id}"
    return unseal(_root_keys(root_key), sealed, _associated_data(account_id), what=what).decode()


async def reseal_secrets(root_keys: Sequence[bytes], *, batch_size: int = 500) -> int:
    """Seal every TOTP secret under `root_keys[0]` (a root-key rotation), in batches of short
    transactions; a secret replaced meanwhile (a new enrolment) is left as its writer sealed it. Returns
    how many were re-sealed."""
    count, after = 0, 0
    while True:
        async with in_transaction("default") as connection:
            rows = await connection.execute_query_dict(
                f"""SELECT account_id, secret_sealed FROM {_TABLE} WHERE account_id > $1
                    ORDER BY account_id LIMIT $2 FOR UPDATE""",
                [after, batch_size],
            )
            for row in rows:
                account_id = row["account_id"]
                what = f"TOTP secret of account {account_id}"
                again = resealed(
                    root_keys, bytes(row["secret_sealed"]), _associated_data(account_id), what=what
                )
                if again is not None:
                    await connection.execute_query(
                        f"UPDATE {_TABLE} SET secret_sealed = $2 WHERE account_id = $1", [account_id, again]
                    )
                    count += 1
        if len(rows) < batch_size:
            return count
        after = rows[-1]["account_id"]


def _step(moment: float) -> int:
    return int(moment // STEP_SECONDS)


def _matching_step(secret: str, code: str, moment: float) -> int | None:
    """The step within the window whose code `code` is, or None. Every candidate is compared, in constant
    time, so the time taken says nothing about which one matched."""
    given = "".join(code.split())
    if len(given) != DIGITS or not given.isascii() or not given.isdigit():
        return None
    totp = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS)
    current = _step(moment)
    matched: int | None = None
    for step in range(current - WINDOW_STEPS, current + WINDOW_STEPS + 1):
        if hmac.compare_digest(totp.generate_otp(step).encode(), given.encode()) and matched is None:
            matched = step
    return matched


async def _credential(account_id: int) -> dict | None:
    rows = await _db().execute_query_dict(
        f"SELECT secret_sealed, confirmed_at, last_used_step FROM {_TABLE} WHERE account_id = $1",
        [account_id],
    )
    return rows[0] if rows else None


async def second_factor_for(account: UserAccount, *, clock: Clock = time.time) -> SecondFactor:
    """VERIFY with a confirmed TOTP; ENROL without one where an active institution in which the account
    holds an admin or clinical role requires it; NONE otherwise. (`clock` is unused: the answer does not
    depend on time; it is taken for a uniform interface.)"""
    credential = await _credential(account.id)
    if credential is not None and credential["confirmed_at"] is not None:
        return SecondFactor.VERIFY
    return SecondFactor.ENROL if await second_factor_required(account) else SecondFactor.NONE


async def second_factor_required(account: UserAccount) -> bool:
    """Whether an active institution requires a second factor of this account (an admin or clinical
    role there), enrolled or not."""
    if account.kind != AccountKind.STAFF:
        return False
    return await StaffMembership.filter(
        account_id=account.id,
        role__in=[role.value for role in ROLES_REQUIRING_TOTP],
        institution__status=InstitutionStatus.ACTIVE,
        institution__requires_totp=True,
    ).exists()


async def begin_enrolment(
    account: UserAccount, *, clock: Clock = time.time, root_key: RootKeys | None = None
) -> TotpEnrolment:
    """A new secret for `account`, pending until `confirm_enrolment`; it replaces a pending one (the user
    scanned nothing, or lost the page). Conflict if the account already has a confirmed second factor:
    `disable_totp` first."""
    if account.kind != AccountKind.STAFF:
        raise InvalidInput(
            "This account is not a {kind} account.", field="account", kind=AccountKind.STAFF.value
        )
    secret = pyotp.random_base32(length=32)  # 160 bits, the length RFC 4226 recommends
    rows = await _db().execute_query_dict(
        f"""INSERT INTO {_TABLE} (account_id, secret_sealed, created_at)
            VALUES ($1, $2, $3)
            ON CONFLICT (account_id) DO UPDATE
                SET secret_sealed = excluded.secret_sealed, created_at = excluded.created_at,
                    last_used_step = NULL
                WHERE totp_credential.confirmed_at IS NULL
            RETURNING account_id""",
        [account.id, _seal_secret(account.id, secret, root_key), datetime.fromtimestamp(clock(), UTC)],
    )
    if not rows:
        raise Conflict(ALREADY_ENROLLED, field="code")
    uri = pyotp.TOTP(secret, digits=DIGITS, interval=STEP_SECONDS).provisioning_uri(
        name=account.login, issuer_name=ISSUER_NAME
    )
    return TotpEnrolment(secret=secret, otpauth_uri=uri)


async def confirm_enrolment(
    account: UserAccount, code: str, *, clock: Clock = time.time, root_key: RootKeys | None = None
) -> None:
    """Confirm the pending secret with a first code from the app; that code's step counts as used."""
    credential = await _credential(account.id)
    if credential is None:
        raise InvalidInput(NOTHING_TO_CONFIRM, field="code")
    if credential["confirmed_at"] is not None:
        raise Conflict(ALREADY_ENROLLED, field="code")
    sealed = bytes(credential["secret_sealed"])
    now = clock()
    step = _matching_step(_open_secret(account.id, sealed, root_key), code, now)
    if step is None:
        raise InvalidInput(WRONG_CODE, field="code")
    # Only the very secret the code was checked against is confirmed: a concurrent begin_enrolment that
    # replaced it (or a concurrent confirmation) leaves nothing to update.
    rows = await _db().execute_query_dict(
        f"""UPDATE {_TABLE} SET confirmed_at = $3, last_used_step = $4
            WHERE account_id = $1 AND secret_sealed = $2 AND confirmed_at IS NULL
            RETURNING account_id""",
        [account.id, sealed, datetime.fromtimestamp(now, UTC), step],
    )
    if not rows:
        raise InvalidInput(WRONG_CODE, field="code")


async def verify_code(
    account: UserAccount, code: str, *, clock: Clock = time.time, root_key: RootKeys | None = None
) -> bool:
    """Whether `code` is a valid code of the account's confirmed secret, never accepted before. A True
    consumes the code's time step (and every earlier one)."""
    credential = await _credential(account.id)
    if credential is None or credential["confirmed_at"] is None:
        return False
    last_used = credential["last_used_step"]
    step = _matching_step(
        _open_secret(account.id, bytes(credential["secret_sealed"]), root_key), code, clock()
    )
    if step is None or (last_used is not None and step <= last_used):
        return False
    # Atomic: of two requests presenting the same code, exactly one updates the row.
    rows = await _db().execute_query_dict(
        f"""UPDATE {_TABLE} SET last_used_step = $2
            WHERE account_id = $1 AND confirmed_at IS NOT NULL
              AND (last_used_step IS NULL OR last_used_step < $2)
            RETURNING account_id""",
        [account.id, step],
    )
    return bool(rows)


async def disable_totp(
    account: UserAccount, code: str, *, clock: Clock = time.time, root_key: RootKeys | None = None
) -> None:
    """Remove the confirmed second factor, proven by a valid code (a stolen session alone cannot)."""
    credential = await _credential(account.id)
    if credential is None or credential["confirmed_at"] is None:
        raise InvalidInput(NO_SECOND_FACTOR, field="code")
    if not await verify_code(account, code, clock=clock, root_key=root_key):
        raise InvalidInput(WRONG_CODE, field="code")
    await _db().execute_query_dict(
        f"DELETE FROM {_TABLE} WHERE account_id = $1 AND confirmed_at IS NOT NULL RETURNING account_id",
        [account.id],
    )


async def set_institution_requires_totp(
    institution_id: int, required: bool, *, clock: Clock = time.time
) -> None:
    """Require (or stop requiring) a second factor of the institution's admin and clinical staff.
    (`clock` is unused, for a uniform interface.)"""
    if not await Institution.filter(id=institution_id).update(requires_totp=required):
        raise NotFound("Not found.", field="institution")

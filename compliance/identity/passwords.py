"""Password hashing (argon2id) and the password policy.

Parameters: OWASP's minimum for argon2id, m = 19 MiB, t = 2, p = 1, rather than argon2-cffi's default
(RFC 9106 low-memory profile, m = 64 MiB, t = 3, p = 4). Measured on the development machine (2 cores,
argon2-cffi 25.1): one hash or verification takes ~22 ms with these parameters against ~127 ms with
the default. The API is CPU-bound with one process per core and the sign-in endpoint is reachable
without credentials, so a cheaper hash keeps a burst of sign-ins (a shift change) or of hostile attempts
from starving requests, while login throttling, not hash cost alone, stops online guessing. A stored
hash records its parameters; `needs_rehash` upgrades it at the next successful sign-in if they change.

Hashing runs in a worker thread (argon2 releases the GIL), so it never blocks the event loop.
"""

import asyncio
import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from tenants.errors import InvalidInput, ValidationFailed

HASHER = PasswordHasher(
    time_cost=2, memory_cost=19 * 1024, parallelism=1, hash_len=32, salt_len=16, type=Type.ID
)

MIN_LENGTH = 10
# argon2 takes any length, but a megabyte "password" would still cost a round trip of work for nothing.
MAX_LENGTH = 256

# Ten characters or more of the kinds that top leaked-password lists (digit runs, keyboard walks,
# "woaini1314" phrases); shorter ones are refused by length already. Kept short on purpose: it stops the
# first guesses of a throttled attacker, it is not a breach corpus.
COMMON_PASSWORDS: frozenset[str] = frozenset(
    {
        "0123456789",
        "1234567890",
        "0987654321",
        "1111111111",
        "0000000000",
        "1234512345",
        "1234554321",
        "12345678910",
        "123456789a",
        "a123456789",
        "aa123456789",
        "qwertyuiop",
        "qwerty1234",
        "qwerty123456",
        "1q2w3e4r5t",
        "1qaz2wsx3edc",
        "1qaz@wsx3edc",
        "password12",
        "password123",
        "password1234",
        "passw0rd123",
        "abc1234567",
        "abcd123456",
        "abcdefghij",
        "admin12345",
        "admin123456",
        "administrator",
        "iloveyou123",
        "woaini1314",
        "woaini123456",
        "5201314520",
        "1314520520",
        "zxcvbnm123",
        "asdfghjkl123",
        "yiyang123456",
    }
)


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(HASHER.hash, password)


async def verify_password(password_hash: str, password: str) -> bool:
    """Whether `password` matches; argon2 compares the digests in constant time."""
    return await asyncio.to_thread(_verify, password_hash, password)


def _verify(password_hash: str, password: str) -> bool:
    try:
        return HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(password_hash: str) -> bool:
    return HASHER.check_needs_rehash(password_hash)


_dummy: list[str] = []  # made on first use, not at import: importing stays free


async def dummy_hash() -> str:
    """A hash of nothing anyone knows, verified for unknown logins so that they take as long as known ones."""
    if not _dummy:
        _dummy.append(await hash_password(secrets.token_urlsafe(32)))  # a race makes two; either serves
    return _dummy[0]


def check_password_policy(password: str, *, login: str, field: str = "password") -> None:
    """Raise ValidationFailed unless `password` may be chosen by the account `login`."""
    problems: list[InvalidInput] = []
    if len(password) < MIN_LENGTH:
        problems.append(
            InvalidInput("Password must be at least {minimum} characters.", field=field, minimum=MIN_LENGTH)
        )
    if len(password) > MAX_LENGTH:
        problems.append(
            InvalidInput("Password must be at most {maximum} characters.", field=field, maximum=MAX_LENGTH)
        )
    folded = password.strip().casefold()
    if login and folded == login.strip().casefold():
        problems.append(InvalidInput("Password must not be the same as the login.", field=field))
    if folded in COMMON_PASSWORDS:
        problems.append(InvalidInput("Password is too common; choose another.", field=field))
    if problems:
        raise ValidationFailed(problems)

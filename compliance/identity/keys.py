"""Access-token signing keys: kept sealed in `shared.signing_key`, rotated, published, cached per process.

A key goes through three moments. It is *published* (listed in the JWKS) from `created_at`; it *signs*
from `activated_at`, which rotation puts PUBLISH_AHEAD after creation, so that every API process (whose
cache is at most KEY_CACHE_TTL old) and every client honouring the JWKS `max-age` knows the key before
the first token it signed arrives; it stays published until `retired_at`, which rotation sets to when
the last token the old key may have signed has expired (the longest lifetime plus the clock-skew
leeway). Every decision is taken against the clock at the moment of use, not at the moment of caching,
so a cached copy never serves a retired key past its window.
"""

import asyncio
import base64
import binascii
import os
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from joserfc.jwk import ECKey
from tortoise.transactions import in_transaction

from compliance.identity.signing_key_model import SigningKey

ALGORITHM = "ES256"
CURVE = "P-256"
# Longest access-token lifetime and the verifier's leeway: access_tokens.py enforces both; they are
# here because a retiring key must outlive every token it signed.
MAX_ACCESS_TOKEN_LIFETIME_SECONDS = 600
CLOCK_SKEW_SECONDS = 30
# How stale a process's copy of the key table may be: a rotation reaches every process within this.
KEY_CACHE_TTL_SECONDS = 5.0
# Cache-Control max-age of /.well-known/jwks.json.
JWKS_MAX_AGE_SECONDS = 60
# A new key is published this long before it signs: a stale process copy plus a client's cached JWKS.
PUBLISH_AHEAD_SECONDS = KEY_CACHE_TTL_SECONDS + JWKS_MAX_AGE_SECONDS
RETIRE_AFTER_SECONDS = MAX_ACCESS_TOKEN_LIFETIME_SECONDS + CLOCK_SKEW_SECONDS

ROOT_KEY_VARIABLE = "YIYANG_ROOT_KEY"
# Alongside YIYANG_ROOT_KEY during a root-key rotation: it seals from then on, both open (docs/security.md).
ROOT_KEY_NEW_VARIABLE = "YIYANG_ROOT_KEY_NEW"
# Development and test only: Settings-independent, because a sealed key must open in every process.
_DEVELOPMENT_ROOT_KEY = b"yiyang-development-only-root-key"  # 32 bytes
_SEALED_FORMAT = b"\x01"  # version byte: AES-256-GCM, 12-byte nonce, then ciphertext and tag
_NONCE_BYTES = 12
# Serialises key creation among processes (two processes starting at once must not both create one).
_KEY_CREATION_LOCK = 0x5969_7961_6E68

Clock = Callable[[], float]


class RootKeyError(RuntimeError):
    """The root key is missing (production), malformed, or does not open a stored key."""


def root_key_from_environ(environ: Mapping[str, str] = os.environ) -> bytes:
    """The 32-byte key that seals private signing keys: YIYANG_ROOT_KEY (base64), required in production."""
    given = environ.get(ROOT_KEY_VARIABLE, "")
    production = environ.get("YIYANG_ENV", "development") == "production"
    if not given:
        if production:
            raise RootKeyError(f"{ROOT_KEY_VARIABLE} is required in production")
        return _DEVELOPMENT_ROOT_KEY
    try:
        key = base64.b64decode(given, validate=True)
    except binascii.Error:
        raise RootKeyError(f"{ROOT_KEY_VARIABLE} must be base64") from None
    if len(key) != 32:
        raise RootKeyError(f"{ROOT_KEY_VARIABLE} must decode to 32 bytes, not {len(key)}")
    if production and key == _DEVELOPMENT_ROOT_KEY:
        raise RootKeyError(f"{ROOT_KEY_VARIABLE} must not be the development key in production")
    return key


def root_keys_from_environ(environ: Mapping[str, str] = os.environ) -> tuple[bytes, ...]:
    """The root keys of the environment, the one that seals first: YIYANG_ROOT_KEY alone, or during a
    rotation YIYANG_ROOT_KEY_NEW, then YIYANG_ROOT_KEY (which still opens what it sealed)."""
    current = root_key_from_environ(environ)
    given = environ.get(ROOT_KEY_NEW_VARIABLE, "")
    if not given:
        return (current,)
    try:
        new = base64.b64decode(given, validate=True)
    except binascii.Error:
        raise RootKeyError(f"{ROOT_KEY_NEW_VARIABLE} must be base64") from None
    if len(new) != 32:
        raise RootKeyError(f"{ROOT_KEY_NEW_VARIABLE} must decode to 32 bytes, not {len(new)}")
    if environ.get("YIYANG_ENV", "development") == "production" and new == _DEVELOPMENT_ROOT_KEY:
        raise RootKeyError(f"{ROOT_KEY_NEW_VARIABLE} must not be the development key in production")
    return (current,) if new == current else (new, current)


def _as_keys(root_keys: bytes | Sequence[bytes]) -> tuple[bytes, ...]:
    return (root_keys,) if isinstance(root_keys, bytes) else tuple(root_keys)


def seal(root_key: bytes, plaintext: bytes, associated_data: bytes) -> bytes:
    """`plaintext` sealed with AES-256-GCM under the root key; it opens only with the same associated data,
    which binds it to its row (a sealed value copied onto another row does not open there)."""
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return _SEALED_FORMAT + nonce + AESGCM(root_key).encrypt(nonce, plaintext, associated_data)


def unseal(root_keys: bytes | Sequence[bytes], sealed: bytes, associated_data: bytes, *, what: str) -> bytes:
    """The plaintext of `seal` under any of `root_keys` (one key, or the environment's during a rotation);
    RootKeyError (naming `what`) if the format or associated data differ, or no key opens it."""
    if not sealed.startswith(_SEALED_FORMAT):
        raise RootKeyError(f"{what}: unknown sealed format")
    nonce = sealed[1 : 1 + _NONCE_BYTES]
    for root_key in _as_keys(root_keys):
        try:
            return AESGCM(root_key).decrypt(nonce, sealed[1 + _NONCE_BYTES :], associated_data)
        except InvalidTag:
            continue
    raise RootKeyError(f"{what} does not open with this root key")


def resealed(
    root_keys: bytes | Sequence[bytes], sealed: bytes, associated_data: bytes, *, what: str
) -> bytes | None:
    """`sealed` sealed again under the first of `root_keys`, or None if that key already sealed it (a
    root-key rotation re-seals what the previous key sealed)."""
    keys = _as_keys(root_keys)
    try:
        unseal(keys[0], sealed, associated_data, what=what)
        return None
    except RootKeyError:
        return seal(keys[0], unseal(keys, sealed, associated_data, what=what), associated_data)


def seal_private_key(root_key: bytes, kid: str, private_pem: bytes) -> bytes:
    # The kid as associated data: a sealed key copied onto another row does not open there.
    return seal(root_key, private_pem, kid.encode())


def open_private_key(root_keys: bytes | Sequence[bytes], kid: str, sealed: bytes) -> bytes:
    return unseal(root_keys, sealed, kid.encode(), what=f"signing key {kid}")


async def reseal_signing_keys(root_keys: Sequence[bytes]) -> int:
    """Seal every signing key's private key under `root_keys[0]` (a root-key rotation): opened with any of
    `root_keys`, updated only where it changed. Returns how many were re-sealed."""
    count = 0
    async with in_transaction("default"):
        for row in await SigningKey.all().select_for_update():
            again = resealed(
                root_keys, bytes(row.private_key_sealed), row.kid.encode(), what=f"signing key {row.kid}"
            )
            if again is not None:
                row.private_key_sealed = again
                await row.save(update_fields=["private_key_sealed"])
                count += 1
    return count


@dataclass(frozen=True, slots=True)
class StoredKey:
    """One row of shared.signing_key as the cache keeps it (the private key still sealed)."""

    kid: str
    public_jwk: Mapping[str, str]
    private_key_sealed: bytes
    created_at: float
    activated_at: float
    retired_at: float | None

    def published_at(self, now: float) -> bool:
        # Not `created_at <= now`: a key just created by a server whose clock is ahead exists all the same.
        return self.retired_at is None or now < self.retired_at


def signer_at(keys: Iterable[StoredKey], now: float) -> StoredKey | None:
    """The key that signs at `now`: the last one activated. If every published key activates later,
    this clock is behind the one of the server that created the first key: that key signs."""
    published = [key for key in keys if key.published_at(now)]
    activated = [key for key in published if key.activated_at <= now]
    if activated:
        return max(activated, key=lambda k: (k.activated_at, k.kid))
    return min(published, key=lambda k: (k.activated_at, k.kid), default=None)


@dataclass(frozen=True, slots=True)
class ActiveKey:
    """The key that signs now, opened."""

    kid: str
    private_key: ECKey


def new_key_pair() -> tuple[str, ECKey]:
    """A fresh P-256 key and its kid, the RFC 7638 thumbprint of the public key."""
    key = ECKey.generate_key(CURVE, private=True)
    return key.thumbprint(), key


def _timestamp(moment: datetime) -> float:
    return moment.timestamp()


def _moment(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


class SigningKeys:
    """One process's view of shared.signing_key: re-read at most every `ttl_seconds`."""

    def __init__(
        self,
        root_keys: bytes | Sequence[bytes],
        *,
        ttl_seconds: float = KEY_CACHE_TTL_SECONDS,
        clock: Clock = time.time,
    ) -> None:
        # The first seals new keys; every one opens (during a root-key rotation: the new key, the old).
        self._root_keys = _as_keys(root_keys)
        self._ttl = ttl_seconds
        self._clock = clock
        self._keys: tuple[StoredKey, ...] = ()
        self._read_at: float | None = None
        self._opened: dict[str, ActiveKey] = {}
        self._public: dict[str, ECKey] = {}  # imported once: every request verifies a token
        self._reading = asyncio.Lock()
        self.table_reads = 0  # for tests: how often the cache went to the database

    async def signing_key(self) -> ActiveKey:
        """The key that signs now (one is created if there is none)."""
        now = self._clock()
        key = signer_at(await self._current(now), now)
        if key is None:
            await self.ensure_active_key()
            key = signer_at(await self._current(now, refresh=True), now)
            if key is None:
                raise RuntimeError("no signing key after creating one")
        opened = self._opened.get(key.kid)
        if opened is None:
            pem = open_private_key(self._root_keys, key.kid, key.private_key_sealed)
            opened = self._opened[key.kid] = ActiveKey(key.kid, ECKey.import_key(pem))
        return opened

    async def verification_key(self, kid: str) -> ECKey | None:
        """The public key `kid` if it is published now, else None."""
        now = self._clock()
        for key in await self._current(now):
            if key.kid == kid and key.published_at(now):
                public = self._public.get(kid)
                if public is None:
                    public = self._public[kid] = ECKey.import_key(dict(key.public_jwk))
                return public
        return None

    async def published_keys(self) -> list[dict[str, str]]:
        """The public JWKs to publish now: the active key, any retiring ones and any announced ahead."""
        now = self._clock()
        keys = [key for key in await self._current(now) if key.published_at(now)]
        if not keys:
            await self.ensure_active_key()
            keys = [key for key in await self._current(now, refresh=True) if key.published_at(now)]
        keys.sort(key=lambda k: (-k.activated_at, k.kid))
        return [{**key.public_jwk, "kid": key.kid, "alg": ALGORITHM, "use": "sig"} for key in keys]

    async def ensure_active_key(self) -> str:
        """The kid of the key that signs now, creating one (active at once) if there is none."""
        async with in_transaction("default") as connection:
            await connection.execute_query("SELECT pg_advisory_xact_lock($1)", [_KEY_CREATION_LOCK])
            now = self._clock()
            existing = signer_at(await self._read_table(now), now)
            if existing is not None:
                return existing.kid
            # Nobody can hold a token of this key yet, so it may sign at once (the first key, or
            # after every key was retired).
            kid = await self._create(now, activated_at=now)
        self._read_at = None
        return kid

    async def rotate(self) -> str:
        """Announce a new key that signs PUBLISH_AHEAD from now; retire the others after their tokens."""
        async with in_transaction("default") as connection:
            await connection.execute_query("SELECT pg_advisory_xact_lock($1)", [_KEY_CREATION_LOCK])
            now = self._clock()
            activated_at = now + PUBLISH_AHEAD_SECONDS
            retired_at = _moment(activated_at + RETIRE_AFTER_SECONDS)
            # Keys already retiring keep their window: it covers every token they signed.
            await SigningKey.filter(retired_at__isnull=True).update(retired_at=retired_at)
            kid = await self._create(now, activated_at=activated_at)
        self._read_at = None
        return kid

    async def _create(self, now: float, *, activated_at: float) -> str:
        kid, key = new_key_pair()
        await SigningKey.create(
            kid=kid,
            algorithm=ALGORITHM,
            public_jwk=key.as_dict(private=False),
            private_key_sealed=seal_private_key(self._root_keys[0], kid, key.as_pem(private=True)),
            created_at=_moment(now),
            activated_at=_moment(activated_at),
        )
        return kid

    async def _current(self, now: float, *, refresh: bool = False) -> tuple[StoredKey, ...]:
        if refresh or self._stale(now):
            async with self._reading:
                if refresh or self._stale(now):  # another task may have read meanwhile
                    self._keys = await self._read_table(now)
                    self._read_at = now
                    live = {key.kid for key in self._keys}
                    self._opened = {kid: key for kid, key in self._opened.items() if kid in live}
                    self._public = {kid: key for kid, key in self._public.items() if kid in live}
        return self._keys

    def _stale(self, now: float) -> bool:
        return self._read_at is None or not (self._read_at <= now < self._read_at + self._ttl)

    async def _read_table(self, now: float) -> tuple[StoredKey, ...]:
        self.table_reads += 1
        rows = await SigningKey.filter(algorithm=ALGORITHM).all()
        keys = (
            StoredKey(
                kid=row.kid,
                public_jwk=row.public_jwk,
                private_key_sealed=bytes(row.private_key_sealed),
                created_at=_timestamp(row.created_at),
                activated_at=_timestamp(row.activated_at),
                retired_at=_timestamp(row.retired_at) if row.retired_at is not None else None,
            )
            for row in rows
        )
        # Retired keys never enter the cache; keys announced for later do (they are published).
        return tuple(key for key in keys if key.retired_at is None or now < key.retired_at)


_process_keys: SigningKeys | None = None


def process_signing_keys() -> SigningKeys:
    """The key cache of this process, sealed with the root keys of the environment."""
    global _process_keys
    if _process_keys is None:
        _process_keys = SigningKeys(root_keys_from_environ())
    return _process_keys


async def ensure_active_key() -> str:
    return await process_signing_keys().ensure_active_key()


async def rotate_signing_key() -> str:
    return await process_signing_keys().rotate()


async def published_keys() -> list[dict[str, str]]:
    return await process_signing_keys().published_keys()


async def signing_key() -> ActiveKey:
    return await process_signing_keys().signing_key()

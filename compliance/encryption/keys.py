"""The key hierarchy of field-level encryption: root key → tenant key → data key per data subject.

- The **root key** comes from the environment (YIYANG_ROOT_KEY, 32 bytes, base64; refused at start in
  production when missing: api/settings.py) and is never stored. During a root-key rotation a process
  also holds YIYANG_ROOT_KEY_NEW: it then wraps with the new key and opens what either key wrapped
  (rows name their root key by `root_key_id`, a fingerprint).
- A **tenant key** per institution and version, in `shared.tenant_key`, wrapped by the root key. Its
  plaintext is the key itself (32 bytes for AES-256-GCM, 16 for SM4-GCM) followed by the tenant's
  32-byte blind-index secret, which a rotation carries over unchanged (stored blind indexes stay valid).
- A **data key** per data subject (a resident) and version, in the tenant schema's `data_key`, wrapped
  by a tenant-key version; field values are sealed with it (cipher.py).
"""

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from compliance.encryption.format import Algorithm, KeyUnavailable, SecretKey, context
from compliance.identity.keys import (
    ROOT_KEY_NEW_VARIABLE,
    ROOT_KEY_VARIABLE,
    RootKeyError,
    root_keys_from_environ,
)

INDEX_SECRET_BYTES = 32
DEFAULT_ALGORITHM = Algorithm.AES_256_GCM
_TENANT_KEY_CONTEXT = b"yiyang/tenant-key/v1"
_DATA_KEY_CONTEXT = b"yiyang/data-key/v1"
_ROOT_KEY_ID_LABEL = b"yiyang/root-key-id/v1"


def root_key_id(root_key: bytes) -> str:
    """A public fingerprint of a root key (64 bits of an HMAC under it): says which key wrapped a row."""
    return hmac.new(root_key, _ROOT_KEY_ID_LABEL, hashlib.sha256).hexdigest()[:16]


@dataclass(frozen=True, repr=False)
class RootKeyring:
    """The root keys a process knows: `primary` wraps, every one opens what it wrapped."""

    primary: bytes
    previous: tuple[bytes, ...] = ()
    _by_id: dict[str, bytes] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        for key in (self.primary, *self.previous):
            if len(key) != 32:
                raise RootKeyError("a root key has 32 bytes")
        object.__setattr__(self, "_by_id", {root_key_id(k): k for k in (*self.previous, self.primary)})

    @property
    def keys(self) -> tuple[bytes, ...]:
        """Every root key, the primary (which seals) first."""
        return (self.primary, *self.previous)

    @property
    def primary_id(self) -> str:
        return root_key_id(self.primary)

    def key(self, key_id: str) -> bytes:
        try:
            return self._by_id[key_id]
        except KeyError:
            raise KeyUnavailable(
                f"no root key with id {key_id} in this process (is {ROOT_KEY_VARIABLE} or "
                f"{ROOT_KEY_NEW_VARIABLE} missing?)"
            ) from None

    def __repr__(self) -> str:
        return f"RootKeyring(primary={self.primary_id}, previous={[root_key_id(k) for k in self.previous]})"


def root_keyring_from_environ(environ: Mapping[str, str] = os.environ) -> RootKeyring:
    """YIYANG_ROOT_KEY alone, or during a rotation YIYANG_ROOT_KEY_NEW (primary) and YIYANG_ROOT_KEY."""
    primary, *previous = root_keys_from_environ(environ)
    return RootKeyring(primary, tuple(previous))


_process_keyring: RootKeyring | None = None


def process_root_keyring() -> RootKeyring:
    """The root keys of this process's environment, read once."""
    global _process_keyring
    if _process_keyring is None:
        _process_keyring = root_keyring_from_environ()
    return _process_keyring


@dataclass(frozen=True, slots=True, repr=False)
class TenantKey:
    institution_id: int
    version: int
    key: SecretKey
    index_secret: bytes

    @property
    def algorithm(self) -> Algorithm:
        return self.key.algorithm

    def __repr__(self) -> str:
        return f"TenantKey(institution={self.institution_id}, version={self.version}, {self.algorithm.label})"


def _tenant_key_context(institution_id: int, version: int, algorithm: Algorithm) -> bytes:
    return context(_TENANT_KEY_CONTEXT, institution_id, version, algorithm.label)


def new_tenant_key(
    institution_id: int, version: int, algorithm: Algorithm, *, index_secret: bytes | None = None
) -> TenantKey:
    secret = index_secret if index_secret is not None else os.urandom(INDEX_SECRET_BYTES)
    return TenantKey(institution_id, version, SecretKey.generate(algorithm), secret)


def wrap_tenant_key(root_key: bytes, tenant_key: TenantKey) -> bytes:
    """The tenant key and its index secret sealed with AES-256-GCM under a root key."""
    return SecretKey(Algorithm.AES_256_GCM, root_key).seal(
        tenant_key.key.material + tenant_key.index_secret,
        key_version=tenant_key.version,
        context=_tenant_key_context(tenant_key.institution_id, tenant_key.version, tenant_key.algorithm),
    )


def unwrap_tenant_key(
    keyring: RootKeyring,
    institution_id: int,
    version: int,
    algorithm_label: str,
    wrapped: bytes | None,
    key_id: str | None,
) -> TenantKey:
    if wrapped is None or key_id is None:
        raise KeyUnavailable(f"tenant key {version} of institution {institution_id} is retired or missing")
    algorithm = Algorithm.from_label(algorithm_label)
    what = f"tenant key {version} of institution {institution_id}"
    try:
        plain = SecretKey(Algorithm.AES_256_GCM, keyring.key(key_id)).open(
            bytes(wrapped), context=_tenant_key_context(institution_id, version, algorithm), what=what
        )
    except KeyUnavailable:
        raise
    except Exception as problem:
        raise KeyUnavailable(f"{what} does not open with root key {key_id}: {problem}") from None
    if len(plain) != algorithm.key_bytes + INDEX_SECRET_BYTES:
        raise KeyUnavailable(f"{what} has a malformed plaintext")
    return TenantKey(
        institution_id,
        version,
        SecretKey(algorithm, plain[: algorithm.key_bytes]),
        plain[algorithm.key_bytes :],
    )


def _data_key_context(institution_id: int, subject_id: int, version: int, algorithm: Algorithm) -> bytes:
    return context(_DATA_KEY_CONTEXT, institution_id, subject_id, version, algorithm.label)


def wrap_data_key(tenant_key: TenantKey, subject_id: int, version: int, data_key: SecretKey) -> bytes:
    return tenant_key.key.seal(
        data_key.material,
        key_version=tenant_key.version,
        context=_data_key_context(tenant_key.institution_id, subject_id, version, data_key.algorithm),
    )


def unwrap_data_key(
    tenant_key: TenantKey, subject_id: int, version: int, algorithm_label: str, wrapped: bytes
) -> SecretKey:
    algorithm = Algorithm.from_label(algorithm_label)
    what = f"data key {version} of subject {subject_id}"
    try:
        material = tenant_key.key.open(
            bytes(wrapped),
            context=_data_key_context(tenant_key.institution_id, subject_id, version, algorithm),
            what=what,
        )
    except Exception as problem:
        raise KeyUnavailable(
            f"{what} does not open with tenant key {tenant_key.version}: {problem}"
        ) from None
    return SecretKey(algorithm, material)

"""Unwrapped keys kept by the process, so that a request does not unwrap again what the last one did.

Unwrapping is most of what encryption costs a page of residents (50 data keys, each an AEAD open and a
new AES context: docs/benchmarks.md, "Search of encrypted residents"). The cache never decides whether a
key may be used: every unit of work still reads the subject's `data_key` rows, and a row whose wrapped
key is gone (crypto-shredded) is refused before the cache is asked. An entry is found only under the
exact wrapped bytes it was unwrapped from (with the institution, subject, versions and algorithm), so a
rotation (new wrapped bytes) or a row copied to another subject or tenant never hits an entry; such
entries simply age out. Bounded (least recently used first out): at most `DATA_KEYS` data keys, about
200 bytes each, per root keyring (a keyring uses only what it unwrapped itself).

What the cache adds to an attacker who reads this process's memory is nothing the root key in the same
memory would not give them already.
"""

from collections import OrderedDict
from typing import Generic, TypeVar
from weakref import WeakKeyDictionary

from compliance.encryption.format import SecretKey
from compliance.encryption.keys import RootKeyring, TenantKey, unwrap_data_key, unwrap_tenant_key

DATA_KEYS = 20_000
TENANT_KEYS = 4_000

K = TypeVar("K")
V = TypeVar("V")


class _Bounded(Generic[K, V]):
    """A small LRU map (the event loop is single-threaded: no lock)."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def keys(self) -> list[K]:
        return list(self._entries)

    def pop(self, key: K) -> None:
        self._entries.pop(key, None)

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


DataKeyId = tuple[
    int, int, int, str, int, bytes
]  # institution, subject, version, algorithm, tenant v., wrapped
TenantKeyId = tuple[int, int, str, str, bytes]  # institution, version, algorithm, root key id, wrapped


class UnwrappedKeys:
    """The keys one root keyring unwrapped. Per keyring, so that a keyring never uses what only another
    (with other root keys) could open."""

    def __init__(self) -> None:
        self.data_keys: _Bounded[DataKeyId, SecretKey] = _Bounded(DATA_KEYS)
        self.tenant_keys: _Bounded[TenantKeyId, TenantKey] = _Bounded(TENANT_KEYS)


_caches: "WeakKeyDictionary[RootKeyring, UnwrappedKeys]" = WeakKeyDictionary()


def _cache(keyring: RootKeyring) -> UnwrappedKeys:
    cache = _caches.get(keyring)
    if cache is None:
        cache = _caches[keyring] = UnwrappedKeys()
    return cache


def data_key_id(
    institution_id: int,
    subject_id: int,
    version: int,
    algorithm: str,
    tenant_key_version: int,
    wrapped: bytes,
) -> DataKeyId:
    return (institution_id, subject_id, version, algorithm, tenant_key_version, bytes(wrapped))


def cached_data_key(keyring: RootKeyring, key_id: DataKeyId) -> SecretKey | None:
    return _cache(keyring).data_keys.get(key_id)


def unwrapped_data_key(keyring: RootKeyring, tenant_key: TenantKey, key_id: DataKeyId) -> SecretKey:
    """The data key `key_id` names, unwrapped with `tenant_key` (which `keyring` opened) and remembered."""
    _, subject_id, version, algorithm, _, wrapped = key_id
    key = unwrap_data_key(tenant_key, subject_id, version, algorithm, wrapped)
    _cache(keyring).data_keys.put(key_id, key)
    return key


def unwrapped_tenant_key(
    keyring: RootKeyring,
    institution_id: int,
    version: int,
    algorithm: str,
    wrapped: bytes | None,
    root_key_id: str | None,
) -> TenantKey:
    """`unwrap_tenant_key`, remembered under the wrapped bytes and root key id it came from."""
    if wrapped is None or root_key_id is None:  # retired: unwrap_tenant_key words the error
        return unwrap_tenant_key(keyring, institution_id, version, algorithm, wrapped, root_key_id)
    key_id = (institution_id, version, algorithm, root_key_id, bytes(wrapped))
    cache = _cache(keyring).tenant_keys
    found = cache.get(key_id)
    if found is None:
        found = unwrap_tenant_key(keyring, institution_id, version, algorithm, wrapped, root_key_id)
        cache.put(key_id, found)
    return found


def forget_subject(institution_id: int, subject_id: int) -> None:
    """Drop a crypto-shredded subject's keys now rather than when they age out."""
    for cache in list(_caches.values()):
        for key_id in cache.data_keys.keys():
            if key_id[0] == institution_id and key_id[1] == subject_id:
                cache.data_keys.pop(key_id)


def clear() -> None:
    """Forget every key (benchmarks that measure unwrapping)."""
    _caches.clear()

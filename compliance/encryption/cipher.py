"""FieldCipher: encrypts, decrypts and blind-indexes the fields of one tenant within one unit of work.

    cipher = await field_cipher()                      # inside run_in_tenant / tenant_transaction
    await cipher.load_data_keys(resident_ids)           # a page: one query for all their keys
    sealed = await cipher.encrypt("13800138000", table="family_member", column="phone",
                                  row_id=member.id, subject_id=member.resident_id)
    phone = await cipher.decrypt_text(sealed, table="family_member", column="phone",
                                      row_id=member.id, subject_id=member.resident_id)

A FieldCipher serves the unit of work it was made in (it refuses to work in another one) and reads the
subjects' key rows itself, so an erasure or a rotation takes effect on the next unit of work; what it
unwrapped is remembered per root keyring under the exact wrapped bytes (key_cache.py).

Associated data of a field: the institution id, table, column, row id and subject id, plus the 6 header
bytes (format version, algorithm, data-key version): a ciphertext copied to another row, column, subject
or tenant raises CiphertextRejected; it never opens as somebody else's data.
"""

from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

from tortoise.backends.base.client import BaseDBAsyncClient

from compliance.encryption import blind_index as blind
from compliance.encryption.format import (
    FORMAT_VERSION,
    OVERHEAD,
    Algorithm,
    CiphertextRejected,
    DataKeyDestroyed,
    KeyUnavailable,
    SecretKey,
    context,
    context_part,
)
from compliance.encryption.key_cache import (
    cached_data_key,
    data_key_id,
    forget_subject,
    unwrapped_data_key,
    unwrapped_tenant_key,
)
from compliance.encryption.keys import (
    DEFAULT_ALGORITHM,
    RootKeyring,
    TenantKey,
    process_root_keyring,
    wrap_data_key,
)
from compliance.encryption.store import current_tenant_key, db
from tenants.context import (
    OutsideTenantScope,
    TenantRef,
    current_tenant,
    current_tenant_or_none,
    current_unit_of_work,
    current_unit_of_work_or_none,
)
from tenants.schema_names import SHARED_SCHEMA

_FIELD_CONTEXT = b"yiyang/field/v1"
RowId = int | str
# A data key as the key queries read it: version, algorithm, tenant-key version, wrapped key (None:
# destroyed), then its tenant key's algorithm, wrapped key and root key id (None when retired).
KeyRow = tuple[int, str, int, bytes | None, str | None, bytes | None, str | None]
_KEY_COLUMNS = (
    "d.version, d.algorithm, d.tenant_key_version, d.wrapped_key, t.algorithm, t.wrapped_key, t.root_key_id"
)


def field_context(institution_id: int, table: str, column: str, row_id: RowId, subject_id: int) -> bytes:
    return context(_FIELD_CONTEXT, institution_id, table, column, row_id, subject_id)


def _field_prefix(institution_id: int, table: str, column: str) -> bytes:
    return context(_FIELD_CONTEXT, institution_id, table, column)


class FieldCipher:
    """The field encryption of the current tenant in the current unit of work."""

    def __init__(self, tenant: TenantRef, connection: BaseDBAsyncClient, keyring: RootKeyring) -> None:
        self._tenant = tenant
        self._connection = connection
        self._unit = current_unit_of_work()
        self._keyring = keyring
        self._tenant_keys: dict[int, TenantKey] = {}  # by version
        self._current: TenantKey | None = None  # the version that wraps new data keys, locked FOR SHARE
        self._data_keys: dict[tuple[int, int], SecretKey] = {}  # (subject, version)
        self._latest: dict[int, int] = {}  # subject -> its highest data-key version
        self._destroyed: set[int] = set()
        self._loaded: set[int] = set()  # subjects whose rows were read (with or without a key)
        self._reread: set[int] = set()  # subjects read again after a miss (once per unit of work)
        self._index_keys: dict[tuple[str, str], bytes] = {}
        self._prefixes: dict[tuple[str, str], bytes] = {}  # field_context up to the column, per column
        self._row_prefixes: dict[tuple[str, Sequence[str]], tuple[bytes, ...]] = {}  # the same, per row shape
        self.queries = 0  # for tests: round trips to the database

    @property
    def institution_id(self) -> int:
        return self._tenant.institution_id

    def _context(self, table: str, column: str, row_id: RowId, subject_id: int) -> bytes:
        """field_context(...), its constant part computed once per column."""
        prefix = self._prefixes.get((table, column))
        if prefix is None:
            prefix = self._prefixes[(table, column)] = _field_prefix(self.institution_id, table, column)
        row = context_part(row_id)
        return prefix + row + (row if row_id == subject_id else context_part(subject_id))

    def _check_scope(self) -> BaseDBAsyncClient:
        # Called for every field: a context-variable read, not a connection look-up (which cost a tenth of
        # a page's API time in the benchmark's profile).
        if current_unit_of_work_or_none() is not self._unit:
            tenant = current_tenant_or_none()
            if tenant is not None and tenant != self._tenant:
                raise OutsideTenantScope("a FieldCipher serves the tenant it was made for")
            raise OutsideTenantScope("a FieldCipher serves the unit of work it was made in")
        return self._connection

    # Keys ------------------------------------------------------------------------------------------

    def data_keys_column(self, subject: str) -> str:
        """A column for a SELECT that brings the data keys of the row's subject along (`subject`: the SQL
        of its id, e.g. "resident.id"), so that a page of residents and its keys are one round trip; hand
        the rows to `take_data_keys`. Named `data_keys`."""
        # The institution id is an int of this cipher's tenant, never input.
        return (
            f"(SELECT array_agg(ROW({_KEY_COLUMNS})) FROM data_key d {self._tenant_key_join()}"
            f" WHERE d.subject_id = {subject}) AS data_keys"
        )

    def _tenant_key_join(self) -> str:
        return (
            f"LEFT JOIN {SHARED_SCHEMA}.tenant_key t"
            f" ON t.institution_id = {int(self.institution_id)} AND t.version = d.tenant_key_version"
        )

    async def take_data_keys(self, rows: Iterable[tuple[int, Sequence[KeyRow] | None]]) -> None:
        """The data keys a SELECT with `data_keys_column` brought, as (subject id, the column's value)."""
        self._check_scope()
        found: list[tuple[int, *KeyRow]] = []
        subjects: set[int] = set()
        for subject, keys in rows:
            if subject in self._loaded:
                continue
            subjects.add(subject)
            found.extend((subject, *key) for key in keys or ())
        self._accept(found)
        self._loaded.update(subjects)

    async def load_data_keys(self, subject_ids: Iterable[int]) -> None:
        """Read and unwrap the data keys of every subject not read yet, in one query (a page of 50
        residents: one round trip, not 50)."""
        connection = self._check_scope()
        wanted = sorted({int(s) for s in subject_ids} - self._loaded)
        if not wanted:
            return
        self.queries += 1
        _, rows = await connection.execute_query(
            f"SELECT d.subject_id, {_KEY_COLUMNS} FROM data_key d {self._tenant_key_join()}"
            " WHERE d.subject_id = ANY($1::bigint[])",
            [wanted],
        )
        self._accept([tuple(row) for row in rows])
        self._loaded.update(wanted)

    def _accept(self, rows: Sequence[tuple[int, *KeyRow]]) -> None:
        """Takes (subject, *KeyRow) rows: a destroyed key marks its subject erased; the others are
        unwrapped, or found in the process's cache of unwrapped keys (key_cache.py)."""
        for subject, version, algorithm, tenant_version, wrapped, *tenant_row in rows:
            if wrapped is None:
                self._forget(subject)
                self._destroyed.add(subject)
                continue
            if subject in self._destroyed:
                continue
            key_id = data_key_id(self.institution_id, subject, version, algorithm, tenant_version, wrapped)
            key = cached_data_key(self._keyring, key_id)
            if key is None:
                tenant_key = self._tenant_keys.get(tenant_version)
                if tenant_key is None:
                    tenant_algorithm, tenant_wrapped, root_key_id = tenant_row
                    tenant_key = self._tenant_keys[tenant_version] = unwrapped_tenant_key(
                        self._keyring,
                        self.institution_id,
                        tenant_version,
                        tenant_algorithm or "",
                        tenant_wrapped,
                        root_key_id,
                    )
                key = unwrapped_data_key(self._keyring, tenant_key, key_id)
            self._data_keys[(subject, version)] = key
            self._latest[subject] = max(version, self._latest.get(subject, 0))

    def erased(self, subject_id: int) -> bool:
        """Whether the subject's data key was destroyed (crypto-shredding); its keys must have been read
        in this unit of work (load_data_keys, take_data_keys)."""
        if subject_id not in self._loaded:
            raise RuntimeError(f"the data keys of subject {subject_id} were not read in this unit of work")
        return subject_id in self._destroyed

    async def ensure_data_keys(self, subject_ids: Iterable[int]) -> None:
        """Make sure each subject has a data key: the missing ones are created in one INSERT
        (DataKeyDestroyed if one of the subjects was erased). Call it outside any savepoint that may roll
        back: a key row is part of the unit of work and goes with it, while this cipher would still hold
        the key."""
        subjects = sorted({int(s) for s in subject_ids})
        await self.load_data_keys(subjects)
        erased = [s for s in subjects if s in self._destroyed]
        if erased:
            raise DataKeyDestroyed(f"subject {erased[0]} was erased: its data key is destroyed")
        missing = [s for s in subjects if s not in self._latest]
        if missing:
            await self._create_data_keys(missing)

    async def _data_key_for_writing(self, subject_id: int) -> tuple[int, SecretKey]:
        if subject_id not in self._loaded:
            await self.load_data_keys([subject_id])
        if subject_id not in self._latest and subject_id not in self._destroyed:
            await self._create_data_keys([subject_id])
        if subject_id in self._destroyed:
            raise DataKeyDestroyed(f"subject {subject_id} was erased: its data key is destroyed")
        version = self._latest[subject_id]
        return version, self._data_keys[(subject_id, version)]

    async def _create_data_keys(self, subject_ids: list[int]) -> None:
        connection = self._check_scope()
        if self._current is None:
            self.queries += 1
            self._current = await current_tenant_key(
                connection, self._keyring, self.institution_id, for_share=True, create_with=DEFAULT_ALGORITHM
            )
            assert self._current is not None
            self._tenant_keys.setdefault(self._current.version, self._current)
        tenant_key = self._current
        fresh = {subject: SecretKey.generate(tenant_key.algorithm) for subject in subject_ids}
        self.queries += 1
        # A concurrent unit of work creating the same subject's key: this INSERT waits for it, then skips
        # that subject, whose committed key is read instead.
        created = await connection.execute_query_dict(
            """INSERT INTO data_key (subject_id, version, algorithm, tenant_key_version, wrapped_key)
               SELECT subject_id, 1, $2, $3, wrapped_key
               FROM unnest($1::bigint[], $4::bytea[]) AS fresh (subject_id, wrapped_key)
               ON CONFLICT (subject_id, version) DO NOTHING RETURNING subject_id""",
            [
                list(fresh),
                tenant_key.algorithm.label,
                tenant_key.version,
                [wrap_data_key(tenant_key, subject, 1, key) for subject, key in fresh.items()],
            ],
        )
        for row in created:
            subject = row["subject_id"]
            self._data_keys[(subject, 1)] = fresh[subject]
            self._latest[subject] = 1
        raced = [subject for subject in subject_ids if subject not in self._latest]
        if raced:
            self._loaded.difference_update(raced)
            await self.load_data_keys(raced)

    def _forget(self, subject_id: int) -> None:
        for key in [k for k in self._data_keys if k[0] == subject_id]:
            del self._data_keys[key]
        self._latest.pop(subject_id, None)

    # Fields ----------------------------------------------------------------------------------------

    async def encrypt(
        self, value: str | bytes, *, table: str, column: str, row_id: RowId, subject_id: int
    ) -> bytes:
        """`value` (text as UTF-8) sealed under the subject's data key (created if it has none), bound to
        this tenant, table, column, row and subject. Store the bytes in a `bytea` column."""
        self._check_scope()
        plaintext = value.encode() if isinstance(value, str) else bytes(value)
        version, key = await self._data_key_for_writing(subject_id)
        return key.seal(
            plaintext,
            key_version=version,
            context=self._context(table, column, row_id, subject_id),
        )

    async def open_row(
        self,
        sealed: Sequence[bytes | None],
        *,
        table: str,
        columns: Sequence[str],
        row_id: RowId,
        subject_id: int,
    ) -> list[bytes | None]:
        """The plaintexts of one row's sealed `columns` (values in the same order; None stays None): what
        `decrypt` does per value, with the row's part of the associated data built once. Every field of a
        page goes through here or `decrypt` (measured: docs/benchmarks.md, "The 50-resident page")."""
        self._check_scope()
        row = context_part(row_id)
        suffix = row + (row if row_id == subject_id else context_part(subject_id))
        prefixes = self._row_prefixes.get((table, columns))
        if prefixes is None:
            prefixes = self._row_prefixes[(table, columns)] = tuple(
                _field_prefix(self.institution_id, table, column) for column in columns
            )
        keys = self._data_keys
        opened: list[bytes | None] = []
        for column, prefix, value in zip(columns, prefixes, sealed, strict=True):
            if value is None:
                opened.append(None)
                continue
            ciphertext = value if type(value) is bytes else bytes(value)
            if len(ciphertext) < OVERHEAD or ciphertext[0] != FORMAT_VERSION:
                raise CiphertextRejected(
                    f"{table}.{column} of row {row_id}: not a ciphertext of this format (too short or "
                    "another version)"
                )
            version = int.from_bytes(ciphertext[2:6], "big")
            key = keys.get((subject_id, version))
            if key is None:
                key = await self._key_after_miss(subject_id, version, table, column, row_id)
            opened.append(key.open_field(ciphertext, prefix + suffix, (table, column, row_id)))
        return opened

    async def decrypt(
        self, ciphertext: bytes, *, table: str, column: str, row_id: RowId, subject_id: int
    ) -> bytes:
        """The plaintext bytes. DataKeyDestroyed if the subject was erased; CiphertextRejected if the
        ciphertext was tampered with or belongs to another row, column, subject or tenant."""
        (plaintext,) = await self.open_row(
            [ciphertext], table=table, columns=(column,), row_id=row_id, subject_id=subject_id
        )
        assert plaintext is not None
        return plaintext

    async def _key_after_miss(
        self, subject_id: int, version: int, table: str, column: str, row_id: RowId
    ) -> SecretKey:
        if subject_id not in self._loaded:
            await self.load_data_keys([subject_id])
        if subject_id in self._destroyed:
            raise DataKeyDestroyed(f"subject {subject_id} was erased: its data key is destroyed")
        key = self._data_keys.get((subject_id, version))
        if key is None and subject_id not in self._reread:
            # Committed by another unit of work since this one read the subject's keys: read once more.
            self._reread.add(subject_id)
            self._loaded.discard(subject_id)
            await self.load_data_keys([subject_id])
            if subject_id in self._destroyed:
                raise DataKeyDestroyed(f"subject {subject_id} was erased: its data key is destroyed")
            key = self._data_keys.get((subject_id, version))
        if key is None:
            raise CiphertextRejected(
                f"{table}.{column} of row {row_id}: subject {subject_id} has no data key "
                f"{version} (copied from another subject or tenant?)"
            )
        return key

    async def decrypt_text(
        self, ciphertext: bytes, *, table: str, column: str, row_id: RowId, subject_id: int
    ) -> str:
        plaintext = await self.decrypt(
            ciphertext, table=table, column=column, row_id=row_id, subject_id=subject_id
        )
        return plaintext.decode("utf-8")

    # Blind indexes ---------------------------------------------------------------------------------

    async def blind_index(
        self, value: str, *, table: str, column: str, normalize: Callable[[str], str] = blind.normalize_text
    ) -> bytes:
        """The blind index of `value` for exact lookup in `table.column` (16 bytes; blind_index.py)."""
        key = self._index_keys.get((table, column))
        if key is None:
            key = self._index_keys[(table, column)] = blind.index_key(
                (await self._any_tenant_key()).index_secret, self.institution_id, table, column
            )
        return blind.compute(key, normalize(value))

    async def _any_tenant_key(self) -> TenantKey:
        if self._current is not None:
            return self._current
        if self._tenant_keys:
            return next(iter(self._tenant_keys.values()))  # every version carries the same index secret
        connection = self._check_scope()
        self.queries += 1
        tenant_key = await current_tenant_key(
            connection, self._keyring, self.institution_id, for_share=False, create_with=DEFAULT_ALGORITHM
        )
        assert tenant_key is not None
        self._tenant_keys[tenant_key.version] = tenant_key
        return tenant_key

    # Crypto-shredding ------------------------------------------------------------------------------

    async def destroy_data_key(self, subject_id: int) -> int:
        """Erase the subject: every version of its data key is destroyed, so every field sealed for it
        raises DataKeyDestroyed from now on, and no new field can be sealed for it. Returns how many key
        versions were destroyed (0 for a subject without a key, which is marked erased all the same)."""
        connection = self._check_scope()
        self.queries += 2
        destroyed = await connection.execute_query_dict(
            """UPDATE data_key SET wrapped_key = NULL, destroyed_at = now()
               WHERE subject_id = $1 AND wrapped_key IS NOT NULL RETURNING version""",
            [subject_id],
        )
        # A subject without a key gets a tombstone, so that nothing is ever sealed for it again.
        await connection.execute_query_dict(
            """INSERT INTO data_key
                   (subject_id, version, algorithm, tenant_key_version, wrapped_key, destroyed_at)
               VALUES ($1, 1, $2, 1, NULL, now()) ON CONFLICT (subject_id, version) DO NOTHING""",
            [subject_id, Algorithm.AES_256_GCM.label],
        )
        self._forget(subject_id)
        self._destroyed.add(subject_id)
        self._loaded.add(subject_id)
        forget_subject(self.institution_id, subject_id)
        return len(destroyed)


_cipher: ContextVar[FieldCipher | None] = ContextVar("yiyang_field_cipher", default=None)
# Benchmarks only (bench/identity_cipher.py): what encryption costs is measured against the same code with
# a cipher that seals nothing. Never set by the product.
_replacement: ContextVar[Callable[[], FieldCipher] | None] = ContextVar(
    "yiyang_cipher_replacement", default=None
)


@contextmanager
def cipher_replaced(factory: Callable[[], FieldCipher]) -> Iterator[None]:
    """Within the block (this task and the tasks it starts), `field_cipher()` returns `factory()`."""
    token = _replacement.set(factory)
    try:
        yield
    finally:
        _replacement.reset(token)


async def field_cipher(*, keyring: RootKeyring | None = None) -> FieldCipher:
    """The FieldCipher of the open unit of work (OutsideTenantScope without one): the same object for
    every call within one unit of work, a new one in the next."""
    replacement = _replacement.get()
    if replacement is not None:
        return replacement()
    tenant = current_tenant()
    connection = db()
    existing = _cipher.get()
    if (
        existing is not None
        and existing._connection is connection
        and existing._unit is current_unit_of_work_or_none()
        and existing._tenant == tenant
        and (keyring is None or existing._keyring is keyring)
    ):
        return existing
    cipher = FieldCipher(tenant, connection, keyring or process_root_keyring())
    _cipher.set(cipher)
    return cipher


async def destroy_data_key(subject_id: int) -> int:
    """Crypto-shred one data subject of the current tenant (FieldCipher.destroy_data_key)."""
    return await (await field_cipher()).destroy_data_key(subject_id)


__all__ = ["FieldCipher", "KeyUnavailable", "destroy_data_key", "field_cipher"]

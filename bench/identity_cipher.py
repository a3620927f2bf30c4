"""A cipher that seals nothing, for measuring what field-level encryption costs: the same code, the same
SQL, plaintext bytes in the sealed columns, no data-key query, no AEAD. Used by `yiyang bench search` and
`yiyang bench page` through `compliance.encryption.cipher.cipher_replaced`; never by the product."""

import hashlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import cast

from compliance.encryption.cipher import FieldCipher, cipher_replaced


class IdentityCipher:
    """The FieldCipher's interface with no encryption: what a page would cost without it."""

    queries = 0

    async def load_data_keys(self, subject_ids: Iterable[int]) -> None:
        return None

    async def ensure_data_keys(self, subject_ids: Iterable[int]) -> None:
        return None

    def data_keys_column(self, subject: str) -> str:
        return "NULL AS data_keys"

    async def take_data_keys(self, rows: Iterable[object]) -> None:
        return None

    def erased(self, subject_id: int) -> bool:
        return False

    async def encrypt(self, value: str | bytes, **where: object) -> bytes:
        return value.encode() if isinstance(value, str) else bytes(value)

    async def open_row(self, sealed: Iterable[bytes | None], **where: object) -> list[bytes | None]:
        return [None if value is None else bytes(value) for value in sealed]

    async def decrypt(self, ciphertext: bytes, **where: object) -> bytes:
        return bytes(ciphertext)

    async def decrypt_text(self, ciphertext: bytes, **where: object) -> str:
        return bytes(ciphertext).decode()

    async def blind_index(
        self, value: str, *, normalize: Callable[[str], str] = str, **where: object
    ) -> bytes:
        return hashlib.sha256(normalize(value).encode()).digest()[:16]


_IDENTITY = IdentityCipher()


@contextmanager
def identity_cipher() -> Iterator[None]:
    """Within the block, everything seals and opens with the identity."""
    with cipher_replaced(lambda: cast(FieldCipher, _IDENTITY)):
        yield

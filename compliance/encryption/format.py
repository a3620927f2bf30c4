"""The ciphertext format of field-level encryption, and the two AEADs behind it.

Every ciphertext this package writes (a field value, a wrapped data key, a wrapped tenant key) is

    offset  size  content
    0       1     format version, 0x01
    1       1     algorithm id: 1 = AES-256-GCM, 2 = SM4-GCM
    2       4     key version, unsigned big-endian: the version of the key that sealed it (a field: the
                  subject's data-key version; a wrapped data key: the tenant-key version; a wrapped tenant
                  key: the tenant-key version it holds)
    6       12    nonce (96 random bits, fresh for every seal)
    18      n+16  ciphertext of the n plaintext bytes, then the 16-byte GCM tag

so 34 bytes more than the plaintext. The 6 header bytes are part of the associated data, so a changed
version, algorithm or key version fails authentication like a changed ciphertext does.
"""

import secrets
import struct
from dataclasses import dataclass
from enum import IntEnum
from functools import cache

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT_VERSION = 1
HEADER = struct.Struct(">BBI")
NONCE_BYTES = 12
TAG_BYTES = 16
OVERHEAD = HEADER.size + NONCE_BYTES + TAG_BYTES  # 34
HEADER_BYTES = HEADER.size
BODY_START = HEADER.size + NONCE_BYTES


class FieldEncryptionError(RuntimeError):
    """Base of the errors of field-level encryption. None reaches an API client as such: the layer that
    reads a record decides what a reader sees (for instance "erased" for DataKeyDestroyed)."""


class CiphertextRejected(FieldEncryptionError):
    """A ciphertext does not open where it is read: tampered with, truncated, or copied from another row,
    column, data subject or tenant. GCM cannot tell these apart, and no other data is ever returned."""


class DataKeyDestroyed(FieldEncryptionError):
    """The data subject's key was destroyed (crypto-shredding): every field of that subject is erased."""


class KeyUnavailable(FieldEncryptionError):
    """A key the ciphertext names is not there, or a wrapped key does not open with the keys at hand
    (a root key missing from the environment during a rotation, a retired tenant-key version)."""


class AlgorithmUnavailable(FieldEncryptionError):
    """The algorithm is unknown, or the OpenSSL behind `cryptography` does not provide it."""


class Algorithm(IntEnum):
    AES_256_GCM = 1
    SM4_GCM = 2

    @property
    def label(self) -> str:
        """The name stored in the `algorithm` columns."""
        return _LABELS[self]

    @property
    def key_bytes(self) -> int:
        return 32 if self is Algorithm.AES_256_GCM else 16

    @classmethod
    def from_label(cls, label: str) -> "Algorithm":
        for algorithm, name in _LABELS.items():
            if name == label:
                return algorithm
        raise AlgorithmUnavailable(f"unknown field-encryption algorithm {label!r}")


_LABELS = {Algorithm.AES_256_GCM: "aes-256-gcm", Algorithm.SM4_GCM: "sm4-gcm"}
_ALGORITHM_OF_ID = {int(algorithm): algorithm for algorithm in Algorithm}


@cache
def sm4_gcm_available() -> bool:
    """Whether the linked OpenSSL does SM4 in GCM mode (OpenSSL 3 does unless built without SM4, e.g. some
    FIPS builds), checked once per process with the RFC 8998 A.1 test vector."""
    try:
        key = bytes.fromhex("0123456789abcdeffedcba9876543210")
        nonce = bytes.fromhex("00001234567800000000abcd")
        aad = bytes.fromhex("feedfacedeadbeeffeedfacedeadbeefabaddad2")
        plaintext = bytes.fromhex(
            "aa" * 8 + "bb" * 8 + "cc" * 8 + "dd" * 8 + "ee" * 8 + "ff" * 8 + "ee" * 8 + "aa" * 8
        )
        sealed = _sm4_gcm_seal(key, nonce, plaintext, aad)
    except Exception:  # UnsupportedAlgorithm, or anything else the binding may raise: not available
        return False
    return sealed[-TAG_BYTES:] == bytes.fromhex("83de3541e4c2b58177e065a9bf7b62ec")


def require_available(algorithm: Algorithm) -> None:
    if algorithm is Algorithm.SM4_GCM and not sm4_gcm_available():
        raise AlgorithmUnavailable(
            "SM4-GCM is not provided by the OpenSSL that `cryptography` is linked against on this machine"
        )


def _sm4_gcm_seal(key: bytes, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
    encryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce)).encryptor()
    encryptor.authenticate_additional_data(aad)
    body = encryptor.update(plaintext) + encryptor.finalize()
    return body + encryptor.tag


def _sm4_gcm_open(key: bytes, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
    if len(sealed) < TAG_BYTES:
        raise InvalidTag()
    decryptor = Cipher(algorithms.SM4(key), modes.GCM(nonce, sealed[-TAG_BYTES:])).decryptor()
    decryptor.authenticate_additional_data(aad)
    return decryptor.update(sealed[:-TAG_BYTES]) + decryptor.finalize()


class SecretKey:
    """Key material of one algorithm, ready to seal and open (an AESGCM object is built once per key).

    `repr` never shows the material."""

    __slots__ = ("_aesgcm", "algorithm", "material")

    def __init__(self, algorithm: Algorithm, material: bytes) -> None:
        if len(material) != algorithm.key_bytes:
            raise KeyUnavailable(
                f"a {algorithm.label} key has {algorithm.key_bytes} bytes, not {len(material)}"
            )
        require_available(algorithm)
        self.algorithm = algorithm
        self.material = material
        self._aesgcm = AESGCM(material) if algorithm is Algorithm.AES_256_GCM else None

    @classmethod
    def generate(cls, algorithm: Algorithm) -> "SecretKey":
        require_available(algorithm)
        return cls(algorithm, secrets.token_bytes(algorithm.key_bytes))

    def __repr__(self) -> str:
        return f"SecretKey({self.algorithm.label})"

    def seal(self, plaintext: bytes, *, key_version: int, context: bytes) -> bytes:
        """`plaintext` in the format above; it opens only with the same `context` (associated data)."""
        header = HEADER.pack(FORMAT_VERSION, self.algorithm, key_version)
        nonce = secrets.token_bytes(NONCE_BYTES)
        aad = header + context
        if self._aesgcm is not None:
            body = self._aesgcm.encrypt(nonce, plaintext, aad)
        else:
            body = _sm4_gcm_seal(self.material, nonce, plaintext, aad)
        return header + nonce + body

    def open(self, sealed: bytes, *, context: bytes, what: str) -> bytes:
        """The plaintext of `seal`; CiphertextRejected (naming `what`) if anything differs."""
        parse_header(sealed, what=what)
        return self.open_field(sealed, context, what)

    def open_field(self, sealed: bytes, context: bytes, where: "str | tuple[object, ...]") -> bytes:
        """`open` for the hot path of field reads (once per field of every resident read): the caller
        read the header's version and key version; the algorithm byte is compared here. `where` names
        the value in an error: a text, or parts joined only when there is an error to word."""
        if sealed[1] != self.algorithm:
            raise CiphertextRejected(
                f"{_where(where)}: sealed with algorithm id {sealed[1]}, key is {self.algorithm.label}"
            )
        aad = sealed[:HEADER_BYTES] + context
        try:
            if self._aesgcm is not None:
                return self._aesgcm.decrypt(sealed[HEADER_BYTES:BODY_START], sealed[BODY_START:], aad)
            return _sm4_gcm_open(self.material, sealed[HEADER_BYTES:BODY_START], sealed[BODY_START:], aad)
        except InvalidTag:
            raise CiphertextRejected(
                f"{_where(where)} does not open here: tampered with, or copied from another row, column, "
                "subject or tenant"
            ) from None


def _where(where: "str | tuple[object, ...]") -> str:
    if isinstance(where, str):
        return where
    table, column, row_id = where
    return f"{table}.{column} of row {row_id}"


@dataclass(frozen=True, slots=True)
class Header:
    format_version: int
    algorithm: Algorithm
    key_version: int


def parse_header(sealed: bytes, *, what: str = "ciphertext") -> Header:
    """The header of a ciphertext (not authenticated until the ciphertext is opened)."""
    if not isinstance(sealed, bytes | bytearray | memoryview) or len(sealed) < OVERHEAD:
        raise CiphertextRejected(f"{what}: not a ciphertext of this format (too short)")
    version, algorithm_id, key_version = HEADER.unpack_from(sealed)
    if version != FORMAT_VERSION:
        raise CiphertextRejected(f"{what}: unknown format version {version}")
    algorithm = _ALGORITHM_OF_ID.get(algorithm_id)
    if algorithm is None:
        raise CiphertextRejected(f"{what}: unknown algorithm id {algorithm_id}")
    return Header(version, algorithm, key_version)


def context(label: bytes, *parts: int | str | bytes) -> bytes:
    """Associated data: a purpose label, then each part typed and length-prefixed, so no two different
    lists of parts encode alike ("ab" + "c" never equals "a" + "bc", 5 never equals "5")."""
    return label + b"".join(map(context_part, parts))


def context_part(part: int | str | bytes) -> bytes:
    if type(part) is int:  # the common case (ids), tested first: once per field read
        encoded = b"i%d" % part
    elif isinstance(part, int):
        encoded = b"i%d" % int(part)
    elif isinstance(part, str):
        encoded = b"s" + part.encode()
    else:
        encoded = b"b" + bytes(part)
    return len(encoded).to_bytes(2, "big") + encoded

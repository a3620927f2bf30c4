"""Blind indexes: exact-match lookup of encrypted values (ID-card number, phone) without decrypting.

The index of a value is HMAC-SHA256 over its normalized form, truncated to 16 bytes, under a key of its
own for each tenant, table and column: HKDF-SHA256 of the tenant's 32-byte blind-index secret (carried in
the tenant key, unchanged by tenant-key rotation, so stored indexes stay valid) with the info
"yiyang/blind-index/v1", institution id, table, column. Equal normalized values give equal indexes in one
tenant's column; the same value gives unrelated indexes in another column or tenant, so indexes cannot be
joined across them.

Why 16 bytes: a false match needs two of a column's values to collide, about n²/2¹²⁹ for n values,
negligible at any size we have, and 16 bytes halve the index. Shorter truncation (deliberate collisions)
would buy nothing: without the key the HMAC reveals nothing anyway, and with it an ID-card number or a
mobile number (about 10⁹ candidates each) can be tried exhaustively whatever the length. That is the
residual risk of any blind index over low-entropy values; it is why the key is per tenant and column and
only ever in memory. A lookup should still decrypt what it finds and compare.
"""

import hashlib
import hmac
import re
import unicodedata

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from compliance.encryption.format import context

BLIND_INDEX_BYTES = 16
_INFO = b"yiyang/blind-index/v1"
_SPACE = re.compile(r"\s+")
_ID_CARD_NOISE = re.compile(r"[\s\-]")
_PHONE_NOISE = re.compile(r"[\s\-().]")


def normalize_text(value: str) -> str:
    """NFKC (full-width to half-width), trimmed, inner whitespace collapsed to one space, case-folded."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", value)).strip().casefold()


def normalize_id_card(value: str) -> str:
    """A resident ID-card number (居民身份证号): NFKC, no spaces or hyphens, check character X upper-case."""
    return _ID_CARD_NOISE.sub("", unicodedata.normalize("NFKC", value)).upper()


def normalize_phone(value: str) -> str:
    """A phone number: NFKC, no spaces, hyphens, dots or brackets; a mainland mobile number loses its
    +86 / 0086 / 86 prefix (so "+86 138-0013-8000" and "13800138000" index alike)."""
    digits = _PHONE_NOISE.sub("", unicodedata.normalize("NFKC", value))
    for prefix in ("+86", "0086", "86"):
        rest = digits[len(prefix) :]
        if digits.startswith(prefix) and len(rest) == 11 and rest.startswith("1"):
            return rest
    return digits


def index_key(index_secret: bytes, institution_id: int, table: str, column: str) -> bytes:
    """The HMAC key of one tenant's column."""
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=context(_INFO, institution_id, table, column),
    ).derive(index_secret)


def compute(key: bytes, normalized: str) -> bytes:
    if not normalized:
        raise ValueError("no blind index of an empty value")
    return hmac.new(key, normalized.encode(), hashlib.sha256).digest()[:BLIND_INDEX_BYTES]

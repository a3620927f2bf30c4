"""The hash chain of a tenant's audit log: the canonical encoding of an event and its SHA-256.

Encoding, version 1 (docs/security.md "Audit log"): the tag `yiyang-audit-v1`, then the institution id,
then every column of the row in table order, then `prev_hash`, each field as one type byte followed by a
4-byte big-endian length and the value's bytes:

    N  null (length 0)
    I  integer: its decimal digits in ASCII (seq, resident id, institution id, time in µs since the epoch)
    T  text: UTF-8
    L  list of text: the count as a 4-byte big-endian number, then each item as a T field
    B  bytes (prev_hash)

Every field carries its own length and type, so no two different rows encode alike (no separator can be
smuggled into a value), and null differs from the empty text and the empty list.
"""

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime

ENCODING_TAG = b"yiyang-audit-v1"
HASH_BYTES = 32
GENESIS_HASH = bytes(HASH_BYTES)  # prev_hash of the first event of a tenant
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LENGTH = struct.Struct(">I")


@dataclass(frozen=True, slots=True)
class ChainedRow:
    """One row of audit_event as stored (its columns in table order)."""

    seq: int
    occurred_at: datetime
    principal_subject: str
    principal_kind: str
    roles: Sequence[str]
    client_id: str | None
    action: str
    resident_id: int | None
    data_categories: Sequence[str]
    purpose: str | None
    outcome: str
    reason_code: str | None
    request_id: str | None
    client_ip: str | None
    prev_hash: bytes
    hash: bytes


# The columns of audit_event in table order: what an INSERT or a COPY of chained rows names.
COLUMNS: tuple[str, ...] = tuple(field.name for field in fields(ChainedRow))


def microseconds(moment: datetime) -> int:
    """`moment` as whole microseconds since the epoch: PostgreSQL's precision, so it reads back equal."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _field(tag: bytes, value: bytes) -> bytes:
    return tag + _LENGTH.pack(len(value)) + value


def _int(value: int | None) -> bytes:
    return _field(b"N", b"") if value is None else _field(b"I", str(value).encode())


def _text(value: str | None) -> bytes:
    return _field(b"N", b"") if value is None else _field(b"T", value.encode())


def _texts(values: Sequence[str]) -> bytes:
    inner = _LENGTH.pack(len(values)) + b"".join(_field(b"T", value.encode()) for value in values)
    return _field(b"L", inner)


def canonical_encoding(
    institution_id: int,
    seq: int,
    occurred_at: datetime,
    principal_subject: str,
    principal_kind: str,
    roles: Sequence[str],
    client_id: str | None,
    action: str,
    resident_id: int | None,
    data_categories: Sequence[str],
    purpose: str | None,
    outcome: str,
    reason_code: str | None,
    request_id: str | None,
    client_ip: str | None,
    prev_hash: bytes,
) -> bytes:
    return b"".join(
        (
            _field(b"T", ENCODING_TAG),
            _int(institution_id),
            _int(seq),
            _int(microseconds(occurred_at)),
            _text(principal_subject),
            _text(principal_kind),
            _texts(roles),
            _text(client_id),
            _text(action),
            _int(resident_id),
            _texts(data_categories),
            _text(purpose),
            _text(outcome),
            _text(reason_code),
            _text(request_id),
            _text(client_ip),
            _field(b"B", prev_hash),
        )
    )


def event_hash(institution_id: int, row: ChainedRow) -> bytes:
    """The hash `row` must carry: SHA-256 of its canonical encoding (its own `hash` left out)."""
    return hashlib.sha256(
        canonical_encoding(
            institution_id,
            row.seq,
            row.occurred_at,
            row.principal_subject,
            row.principal_kind,
            row.roles,
            row.client_id,
            row.action,
            row.resident_id,
            row.data_categories,
            row.purpose,
            row.outcome,
            row.reason_code,
            row.request_id,
            row.client_ip,
            row.prev_hash,
        )
    ).digest()

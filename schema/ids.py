"""Opaque global ids: base64url of "Type:part:part". A resident's id names its institution too, so an
id copied from one tenant never matches a row of another even where primary keys coincide."""

import base64
import binascii

from tenants.errors import InvalidInput, NotFound


def encode_id(type_name: str, *parts: int) -> str:
    raw = ":".join([type_name, *map(str, parts)])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_id(type_name: str, value: str, arity: int, *, field: str = "id") -> tuple[int, ...]:
    try:
        padded = value + "=" * (-len(value) % 4)
        kind, *parts = base64.urlsafe_b64decode(padded.encode("ascii")).decode().split(":")
        numbers = tuple(int(p) for p in parts)
    except (ValueError, binascii.Error, UnicodeError):
        raise InvalidInput("Malformed id.", field=field) from None
    if kind != type_name or len(numbers) != arity:
        raise NotFound("Not found.", field=field)
    return numbers

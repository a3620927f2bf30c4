"""Residents' photos: one current photo per resident, so that caregivers recognise whom they serve (shown
on the resident's card).

The image is sealed with the resident's data key (compliance/encryption) before it is written, bound to
the row id taken from the sequence first (migrations/tenant/0010_resident_photos.sql). Plain are the
resident, the content type (JPEG or PNG, sniffed from the bytes: care/uploads.py), the size, who uploaded
it and when. A new photo replaces the current one and keeps no history (the row, its ciphertext with it,
is overwritten under a new id); removing it deletes the row.

Reads of many residents at once (`photos_of`) select the metadata only, never the image, and read the
residents' data keys in one query: an erased resident (data key destroyed) has no photo to show, only
its Erased error.
"""

import random
import struct
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from care.residents import get_resident, next_ids
from care.uploads import IMAGES, ContentType, UploadedFile, check_file, resident_of_file
from compliance.encryption import DataKeyDestroyed, field_cipher
from tenants.db import default_connection
from tenants.errors import Erased, InvalidInput, NotFound, raise_if_any

TABLE = "resident_photo"
# A portrait for a card, not a scan: 5 MiB is plenty for a phone photo (the request body limit,
# YIYANG_MAX_UPLOAD_BYTES, applies too: the smaller of the two is the cap).
MAX_PHOTO_BYTES = 5 * 1024 * 1024
ERASED = "The personal data of this resident was erased."


@dataclass(frozen=True, slots=True)
class PhotoMeta:
    """What the resident's card shows of its photo: everything but the image."""

    id: int
    resident_id: int
    content_type: ContentType
    size_bytes: int
    uploaded_by: str
    uploaded_at: datetime


@dataclass(frozen=True, slots=True)
class PhotoFile:
    """A photo, opened, for a download."""

    id: int
    resident_id: int
    content_type: ContentType
    content: bytes

    @property
    def file_name(self) -> str:
        # Says nothing about the resident: no name in it.
        return f"resident-photo-{self.id}.{self.content_type.extension}"


def check_photo(file: UploadedFile | None, *, max_bytes: int) -> ContentType:
    """The photo's type (ValidationFailed when it is missing, empty, too large or no JPEG or PNG)."""
    problems: list[InvalidInput] = []
    kind = check_file(file, problems, accepted=IMAGES, max_bytes=min(max_bytes, MAX_PHOTO_BYTES))
    raise_if_any(problems)
    assert kind is not None  # else reported above
    return kind


async def _execute(sql: str, parameters: Sequence[object]) -> list[dict[str, Any]]:
    # execute_query_dict: Tortoise's execute_query drops the rows of INSERT/DELETE ... RETURNING.
    return await default_connection().execute_query_dict(sql, list(parameters))


async def set_photo(
    resident_id: int, file: UploadedFile | None, *, uploaded_by: str, max_bytes: int
) -> PhotoMeta:
    """Check and store the resident's photo in place of the current one, if any (NotFound without the
    resident, Erased when its personal data was erased; ValidationFailed: nothing is written)."""
    (await get_resident(resident_id)).require_identity()
    kind = check_photo(file, max_bytes=max_bytes)
    assert file is not None
    cipher = await field_cipher()
    (row_id,) = await next_ids(TABLE, 1)
    try:
        content = await cipher.encrypt(
            file.content, table=TABLE, column="content", row_id=row_id, subject_id=resident_id
        )
    except DataKeyDestroyed as exc:
        raise Erased(ERASED) from exc
    # One statement whichever way: a concurrent upload for the same resident waits, then replaces.
    rows = await _execute(
        f"""INSERT INTO {TABLE} (id, resident_id, content_type, size_bytes, content, uploaded_by)
            VALUES ($1, $2, $3, $4, $5, $6)
            ON CONFLICT (resident_id) DO UPDATE SET
                id = EXCLUDED.id, content_type = EXCLUDED.content_type, size_bytes = EXCLUDED.size_bytes,
                content = EXCLUDED.content, uploaded_by = EXCLUDED.uploaded_by, uploaded_at = now()
            RETURNING uploaded_at""",
        [row_id, resident_id, kind.value, len(file.content), content, uploaded_by],
    )
    return PhotoMeta(row_id, resident_id, kind, len(file.content), uploaded_by, rows[0]["uploaded_at"])


async def remove_photo(resident_id: int) -> int | None:
    """Delete the resident's photo, its ciphertext with it: the removed photo's id, None when it had
    none (NotFound without the resident). An erased resident's photo may be removed too."""
    await get_resident(resident_id)
    rows = await _execute(f"DELETE FROM {TABLE} WHERE resident_id = $1 RETURNING id", [resident_id])
    return int(rows[0]["id"]) if rows else None


async def resident_of_photo(photo_id: int) -> int:
    """The resident a photo belongs to (NotFound): asked before the photo is opened."""
    return await resident_of_file(TABLE, photo_id)


async def photo_file(resident_id: int, photo_id: int) -> PhotoFile:
    """A photo, decrypted (NotFound; Erased when the resident's data was erased)."""
    rows = await _execute(
        f"SELECT content_type, content FROM {TABLE} WHERE id = $1 AND resident_id = $2",
        [photo_id, resident_id],
    )
    if not rows:
        raise NotFound("Not found.")
    cipher = await field_cipher()
    try:
        content = await cipher.decrypt(
            rows[0]["content"], table=TABLE, column="content", row_id=photo_id, subject_id=resident_id
        )
    except DataKeyDestroyed as exc:
        raise Erased(ERASED) from exc
    return PhotoFile(photo_id, resident_id, ContentType(rows[0]["content_type"]), content)


async def photos_of(resident_ids: Iterable[int]) -> dict[int, PhotoMeta | Erased | None]:
    """The photo metadata of several residents (None: no photo; Erased: the resident's personal data was
    erased): one query for the rows, never the images, and one for the data keys (none when this unit
    of work has read them already, as a page of residents does)."""
    wanted = sorted(set(resident_ids))
    if not wanted:
        return {}
    rows = await _execute(
        f"""SELECT id, resident_id, content_type, size_bytes, uploaded_by, uploaded_at FROM {TABLE}
            WHERE resident_id = ANY($1::bigint[])""",
        [wanted],
    )
    cipher = await field_cipher()
    await cipher.load_data_keys(wanted)
    found: dict[int, PhotoMeta | Erased | None] = {
        resident_id: Erased(ERASED) if cipher.erased(resident_id) else None for resident_id in wanted
    }
    for row in rows:
        if found[row["resident_id"]] is None:
            found[row["resident_id"]] = PhotoMeta(
                row["id"],
                row["resident_id"],
                ContentType(row["content_type"]),
                row["size_bytes"],
                row["uploaded_by"],
                row["uploaded_at"],
            )
    return found


# Demo data ---------------------------------------------------------------------------------------

_AVATAR_SIZE = 48
_BACKGROUNDS = ((214, 228, 240), (232, 222, 210), (220, 236, 220), (240, 226, 226), (226, 224, 240))
_SKIN = ((241, 204, 170), (226, 185, 150), (205, 160, 125))
_HAIR = ((235, 235, 235), (200, 200, 200), (150, 150, 150), (90, 90, 90))
_CLOTHES = ((70, 100, 150), (150, 70, 70), (80, 120, 90), (120, 100, 140), (160, 130, 80))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def avatar_png(rng: random.Random, size: int = _AVATAR_SIZE) -> bytes:
    """A small RGB PNG of a head and shoulders (grey hair, a coloured top) on a pastel ground: a
    stand-in portrait for demo residents, drawn with the standard library only."""
    ground, skin, hair, top = (
        bytes(rng.choice(palette)) for palette in (_BACKGROUNDS, _SKIN, _HAIR, _CLOTHES)
    )
    centre, head = size / 2, size * rng.uniform(0.19, 0.23)
    head_y = size * 0.4
    rows = bytearray()
    for y in range(size):
        rows.append(0)  # filter: none
        for x in range(size):
            dx, dy = x + 0.5 - centre, y + 0.5 - head_y
            if dx * dx + dy * dy <= head * head:
                rows += hair if dy < -head * 0.45 else skin
            elif (dx / (size * 0.42)) ** 2 + ((y + 0.5 - size * 1.05) / (size * 0.32)) ** 2 <= 1:
                rows += top  # the shoulders: the top of an ellipse centred below the picture
            else:
                rows += ground
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(bytes(rows), 9))
        + _png_chunk(b"IEND", b"")
    )


async def seed_demo(rng: random.Random, today: date) -> int:
    """About two residents in five who live here (not discharged) get a photo (a generated PNG avatar),
    uploaded by "demo". One INSERT for all of them."""
    del today  # photos carry their upload time only
    residents = await _execute("SELECT id, status, discharged_on FROM resident ORDER BY id", [])
    chosen = [row["id"] for row in residents if row["discharged_on"] is None and rng.random() < 0.4]
    if not chosen:
        return 0
    cipher = await field_cipher()
    await cipher.load_data_keys(chosen)
    chosen = [resident_id for resident_id in chosen if not cipher.erased(resident_id)]
    if not chosen:
        return 0
    ids = await next_ids(TABLE, len(chosen))
    sizes: list[int] = []
    sealed: list[bytes] = []
    for row_id, resident_id in zip(ids, chosen, strict=True):
        image = avatar_png(rng)
        sizes.append(len(image))
        sealed.append(
            await cipher.encrypt(image, table=TABLE, column="content", row_id=row_id, subject_id=resident_id)
        )
    written = await _execute(
        f"""INSERT INTO {TABLE} (id, resident_id, content_type, size_bytes, content, uploaded_by)
            SELECT id, resident_id, $5, size_bytes, content, $6
            FROM unnest($1::bigint[], $2::bigint[], $3::int[], $4::bytea[])
                AS r (id, resident_id, size_bytes, content)
            ON CONFLICT (resident_id) DO NOTHING RETURNING id""",
        [ids, chosen, sizes, sealed, ContentType.PNG.value, "demo"],
    )
    return len(written)  # a resident who has a photo already keeps it

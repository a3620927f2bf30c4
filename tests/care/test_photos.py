"""Residents' photos (care/photos.py) and the checks every upload passes (care/uploads.py): one photo per
resident, sealed at rest and bound to its row, checked before anything is written, read in bulk without
the images, GONE once the resident is erased; the demo's generated avatars. In an institution of its
own (the world's residents are counted elsewhere)."""

import random
import struct
import time
import zlib
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any, TypeVar

import pytest

from care import photos as care
from care.models import CareLevel, Gender
from care.residents import Admission, admit_resident
from care.uploads import DOCUMENTS, IMAGES, ContentType, UploadedFile, check_file, sniff
from compliance.encryption import CiphertextRejected, destroy_data_key
from tenants.db import default_connection
from tenants.errors import Erased, InvalidInput, NotFound, ValidationFailed
from tenants.models import Institution
from tenants.registry import NewInstitution, provision_institution, tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.care.statements import counted
from tests.conftest import World

T = TypeVar("T")
CAP = 10 * 1024 * 1024
PNG = care.avatar_png(random.Random(1))
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4


@pytest.fixture(scope="module")
async def home(world: World) -> int:
    return (
        await provision_institution(NewInstitution(name="照片领域测试养老院", region_code="test-east"))
    ).id


class _Undo(Exception):
    """Raised at the end of a unit of work so that it rolls back."""


async def in_tenant(institution_id: int, work: Callable[[], Awaitable[T]]) -> T:
    return await run_in_tenant(tenant_ref(await Institution.get(id=institution_id)), work)


async def rolled_back(institution_id: int, work: Callable[[], Awaitable[None]]) -> None:
    async def undone() -> None:
        await work()
        raise _Undo

    with pytest.raises(_Undo):
        await in_tenant(institution_id, undone)


async def admit(name: str) -> int:
    admission = Admission(name, Gender.MALE, date(1939, 8, 9), CareLevel.ASSISTED, date(2025, 6, 1))
    return (await admit_resident(admission)).id


async def set_photo(resident_id: int, content: bytes, declared: str | None = None) -> care.PhotoMeta:
    return await care.set_photo(
        resident_id, UploadedFile(content, declared), uploaded_by="account:7", max_bytes=CAP
    )


async def raw_rows() -> list[dict[str, Any]]:
    return await default_connection().execute_query_dict("SELECT * FROM resident_photo ORDER BY id", [])


def test_files_are_judged_by_their_content() -> None:
    assert sniff(PNG) is ContentType.PNG and sniff(JPEG) is ContentType.JPEG
    assert sniff(b"%PDF-1.7") is ContentType.PDF and sniff(b"GIF89a") is None

    def problems(file: UploadedFile | None, accepted: frozenset[ContentType] = IMAGES) -> list[str]:
        found: list[InvalidInput] = []
        kind = check_file(file, found, accepted=accepted, max_bytes=2048)
        assert (kind is None) == bool(found)
        return [problem.message for problem in found]

    assert problems(UploadedFile(PNG, "image/png")) == []
    assert problems(UploadedFile(JPEG, "image/pjpeg; q=1")) == []
    assert problems(UploadedFile(b"%PDF-1.4")) == ["Only JPEG or PNG images are accepted."]
    assert problems(UploadedFile(b"%PDF-1.4"), DOCUMENTS) == []
    assert problems(UploadedFile(b"GIF89a"), DOCUMENTS) == ["Only PDF, JPEG or PNG files are accepted."]
    assert problems(UploadedFile(PNG, "image/jpeg")) == [
        "The file's content does not match its declared type."
    ]
    assert problems(UploadedFile(b"")) == ["The file is empty."]
    assert problems(None) == ["This field is required."]
    assert problems(UploadedFile(JPEG + b"0" * 2048)) == ["The file is larger than {max} MiB."]
    assert problems(UploadedFile(JPEG[:10], exceeded=True)) == ["The file is larger than {max} MiB."]


def test_the_demo_avatar_is_a_valid_png() -> None:
    image = care.avatar_png(random.Random(5), size=32)
    assert image.startswith(b"\x89PNG\r\n\x1a\n")
    chunks: list[tuple[bytes, bytes]] = []
    at = 8
    while at < len(image):
        (length,) = struct.unpack(">I", image[at : at + 4])
        kind, data = image[at + 4 : at + 8], image[at + 8 : at + 8 + length]
        (crc,) = struct.unpack(">I", image[at + 8 + length : at + 12 + length])
        assert crc == zlib.crc32(kind + data)
        chunks.append((kind, data))
        at += 12 + length
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    assert struct.unpack(">IIBBBBB", chunks[0][1]) == (32, 32, 8, 2, 0, 0, 0)
    pixels = zlib.decompress(chunks[1][1])
    assert len(pixels) == 32 * (1 + 32 * 3)
    colours = {pixels[row * 97 + 1 + 3 * x :][:3] for row in range(32) for x in range(32)}
    assert len(colours) == 4  # the ground, hair, face and top


async def test_a_photo_is_sealed_replaced_and_removed(home: int) -> None:
    async def work() -> None:
        resident_id = await admit("照片领域长者甲")
        first = await set_photo(resident_id, PNG, "image/png")
        assert (first.content_type, first.size_bytes, first.uploaded_by) == (
            ContentType.PNG,
            len(PNG),
            "account:7",
        )
        opened = await care.photo_file(resident_id, first.id)
        assert opened.content == PNG and opened.file_name == f"resident-photo-{first.id}.png"
        (row,) = await raw_rows()
        for plaintext in (b"\x89PNG", b"IHDR", PNG[16:48], PNG[-30:-12]):
            assert plaintext not in row["content"]
        with pytest.raises(NotFound):
            await care.photo_file(resident_id + 1, first.id)

        second = await set_photo(resident_id, JPEG)  # replaces: the first is no more
        assert second.id != first.id and second.content_type is ContentType.JPEG
        assert [r["id"] for r in await raw_rows()] == [second.id]
        with pytest.raises(NotFound):
            await care.resident_of_photo(first.id)
        assert await care.resident_of_photo(second.id) == resident_id
        assert (await care.photo_file(resident_id, second.id)).content == JPEG
        assert (await care.photos_of([resident_id]))[resident_id] == second

        assert await care.remove_photo(resident_id) == second.id
        assert await care.remove_photo(resident_id) is None
        assert await raw_rows() == [] and (await care.photos_of([resident_id]))[resident_id] is None
        with pytest.raises(NotFound):
            await care.remove_photo(999_999)

    await rolled_back(home, work)


async def test_a_ciphertext_moved_to_another_row_does_not_open(home: int) -> None:
    async def work() -> None:
        one, two = await admit("照片领域长者乙"), await admit("照片领域长者丙")
        mine, theirs = await set_photo(one, PNG), await set_photo(two, JPEG)
        await default_connection().execute_query(
            """UPDATE resident_photo SET content = (SELECT content FROM resident_photo WHERE id = $1)
               WHERE id = $2""",
            [mine.id, theirs.id],
        )
        with pytest.raises(CiphertextRejected):
            await care.photo_file(two, theirs.id)

    await rolled_back(home, work)


async def test_bad_photos_are_refused_and_nothing_is_written(home: int) -> None:
    async def work() -> None:
        resident_id = await admit("照片领域长者丁")
        kept = await set_photo(resident_id, PNG)
        for content, declared in (
            (b"%PDF-1.4 not a photo", None),
            (b"", "image/png"),
            (PNG, "image/jpeg"),
            (JPEG + b"0" * care.MAX_PHOTO_BYTES, "image/jpeg"),  # the photo's own cap, under max_bytes
        ):
            with pytest.raises(ValidationFailed) as failed:
                await set_photo(resident_id, content, declared)
            assert [p.field for p in failed.value.problems] == ["file"]
        with pytest.raises(ValidationFailed):
            await care.set_photo(resident_id, None, uploaded_by="account:7", max_bytes=CAP)
        with pytest.raises(ValidationFailed):  # the request's smaller cap wins
            await care.set_photo(resident_id, UploadedFile(PNG), uploaded_by="account:7", max_bytes=64)
        with pytest.raises(NotFound):
            await set_photo(999_999, PNG)
        assert [(r["id"], r["size_bytes"]) for r in await raw_rows()] == [(kept.id, len(PNG))]
        assert (await care.photo_file(resident_id, kept.id)).content == PNG

    await rolled_back(home, work)


async def test_metadata_of_many_residents_in_one_query_and_erased_ones_gone(
    home: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def work() -> None:
        residents = [await admit(f"照片领域长者戊{n}") for n in range(4)]
        for resident_id in residents[:3]:
            await set_photo(resident_id, PNG)
        await destroy_data_key(residents[0])
        cipher, statements = await counted(monkeypatch, care)  # as in a new request
        keys_before = cipher.queries
        found = await care.photos_of(residents)
        assert len(statements) == 1 and "content," not in statements[0] and "content " not in statements[0]
        assert cipher.queries - keys_before == 1  # the four residents' data keys in one query
        assert isinstance(found[residents[0]], Erased)
        assert all(isinstance(found[r], care.PhotoMeta) for r in residents[1:3])
        assert found[residents[3]] is None

        (erased_row,) = [r for r in await raw_rows() if r["resident_id"] == residents[0]]
        with pytest.raises(Erased):
            await care.photo_file(residents[0], erased_row["id"])
        with pytest.raises(Erased):
            await set_photo(residents[0], JPEG)
        assert await care.remove_photo(residents[0]) == erased_row["id"]

    await rolled_back(home, work)


async def test_seed_demo_gives_some_residents_a_photo_fast(home: int) -> None:
    async def work() -> None:
        residents = [await admit(f"照片领域长者己{n}") for n in range(150)]
        started = time.perf_counter()
        written = await care.seed_demo(random.Random(3), date(2026, 12, 1))
        elapsed = time.perf_counter() - started
        rows = await raw_rows()
        assert 0 < written == len(rows) < len(residents) and elapsed < 0.5
        assert {r["uploaded_by"] for r in rows} == {"demo"}
        found = await care.photos_of(residents)
        row = rows[0]
        opened = await care.photo_file(row["resident_id"], row["id"])
        assert sniff(opened.content) is ContentType.PNG and len(opened.content) == row["size_bytes"]
        assert sum(isinstance(meta, care.PhotoMeta) for meta in found.values()) == written

    await rolled_back(home, work)

"""Check-up reports (care/reports.py): sniffed by content, sealed at rest, checked as a whole, listed in bulk
without the files, unreadable once the resident is erased."""

import random
import re
import time
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any, TypeVar

import pytest

from care import reports as care
from care.models import CareLevel, Gender
from care.residents import Admission, admit_resident
from compliance.encryption import CiphertextRejected, destroy_data_key
from tenants.db import default_connection
from tenants.errors import Erased, NotFound, ValidationFailed
from tenants.models import Institution
from tenants.registry import tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.care.statements import counted
from tests.conftest import World

T = TypeVar("T")
TODAY = date(2026, 12, 1)
BIRTH = date(1941, 6, 15)
CAP = 64 * 1024
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\rIHDR" + bytes(range(256)) * 4
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + bytes(range(256)) * 4


async def in_tenant(institution_id: int, work: Callable[[], Awaitable[T]]) -> T:
    return await run_in_tenant(tenant_ref(await Institution.get(id=institution_id)), work)


async def admit(institution_id: int, name: str) -> int:
    async def work() -> int:
        admission = Admission(name, Gender.FEMALE, BIRTH, CareLevel.ASSISTED, date(2025, 3, 1))
        return (await admit_resident(admission)).id

    return await in_tenant(institution_id, work)


def pdf(*lines: str) -> bytes:
    return care.minimal_pdf(lines or ["Blood pressure 146/88 mmHg", "Fasting glucose 7.9 mmol/L"])


def report(content: bytes, **changes: Any) -> care.NewReport:
    given: dict[str, Any] = {
        "report_date": date(2026, 10, 8),
        "title": "2026年度健康体检报告",
        "file": care.UploadedFile(content, "application/pdf"),
        "issuer": "上海市第六人民医院",
    }
    return care.NewReport(**(given | changes))


async def add(resident_id: int, new: care.NewReport) -> care.ReportMeta:
    return await care.add_report(resident_id, new, uploaded_by="account:1", today=TODAY, max_bytes=CAP)


async def raw_rows(resident_id: int) -> list[dict[str, Any]]:
    _, rows = await default_connection().execute_query(
        "SELECT * FROM checkup_report WHERE resident_id = $1 ORDER BY id", [resident_id]
    )
    return [dict(row) for row in rows]


def test_the_type_is_told_by_the_first_bytes() -> None:
    assert care.sniff(pdf()) is care.ReportContentType.PDF
    assert care.sniff(PNG) is care.ReportContentType.PNG
    assert care.sniff(JPEG) is care.ReportContentType.JPEG
    for other in (b"", b"%PD", b"GIF89a....", b"PK\x03\x04 a zip", b"<html>%PDF-", b"\x89PNG\r\n"):
        assert care.sniff(other) is None


def test_the_generated_pdf_is_well_formed() -> None:
    document = pdf("Health check-up report", "Heart rate (resting) 72 bpm")
    assert document.startswith(b"%PDF-1.4\n") and document.endswith(b"%%EOF\n")
    startxref = int(re.search(rb"startxref\n(\d+)\n", document).group(1))  # type: ignore[union-attr]
    assert document[startxref:].startswith(b"xref\n0 6\n")
    offsets = [int(m) for m in re.findall(rb"(\d{10}) 00000 n ", document)]
    assert len(offsets) == 5
    for number, offset in enumerate(offsets, start=1):
        assert document[offset:].startswith(b"%d 0 obj\n" % number)
    length = int(re.search(rb"/Length (\d+)", document).group(1))  # type: ignore[union-attr]
    stream = document[document.index(b"stream\n") + 7 :]
    assert stream[length:].startswith(b"\nendstream")
    assert b"\\(resting\\)" in document  # parentheses escaped in the PDF string


async def test_a_report_round_trips_and_is_sealed_at_rest(world: World) -> None:
    institution = world.institution_ids[14]
    resident_id = await admit(institution, "报告长者甲")
    content = pdf()

    async def work() -> None:
        older = await add(
            resident_id,
            report(
                PNG,
                report_date=date(2025, 4, 2),
                issuer=None,
                title=" 胸片 ",
                file=care.UploadedFile(PNG, "image/png"),
            ),
        )
        newer = await add(resident_id, report(content))
        assert (newer.content_type, newer.size_bytes, newer.title) == (
            care.ReportContentType.PDF,
            len(content),
            "2026年度健康体检报告",
        )
        assert (
            older.title == "胸片"
            and older.issuer is None
            and older.content_type is care.ReportContentType.PNG
        )

        listed = (await care.reports_of([resident_id, 999_999]))[resident_id].require()
        assert [r.id for r in listed] == [newer.id, older.id]  # newest report date first
        assert listed[0] == newer
        assert (await care.reports_of([999_999]))[999_999].require() == []

        opened = await care.report_file(resident_id, newer.id)
        assert opened.content == content and opened.content_type is care.ReportContentType.PDF
        assert opened.file_name == f"checkup-report-2026-10-08-{newer.id}.pdf"
        assert (await care.report_file(resident_id, older.id)).content == PNG
        with pytest.raises(NotFound):
            await care.report_file(resident_id + 1, newer.id)  # the id of another resident's report

        for row in await raw_rows(resident_id):
            for column in ("title", "issuer", "content"):
                value = row[column]
                if value is None:
                    continue
                assert isinstance(value, bytes)
                for plaintext in (
                    b"%PDF",
                    b"Blood pressure",
                    b"146/88",
                    b"\x89PNG",
                    PNG[16:80],
                    "体检".encode(),
                    "胸片".encode(),
                    "第六人民医院".encode(),
                ):
                    assert plaintext not in value, column

    await in_tenant(institution, work)


async def test_a_ciphertext_moved_to_another_row_does_not_open(world: World) -> None:
    institution = world.institution_ids[14]
    resident_id = await admit(institution, "报告长者乙")

    async def work() -> None:
        first = await add(resident_id, report(pdf("first")))
        second = await add(resident_id, report(pdf("second"), title="复查报告"))
        await default_connection().execute_query(
            """UPDATE checkup_report SET content = (SELECT content FROM checkup_report WHERE id = $1),
                                         title = (SELECT title FROM checkup_report WHERE id = $1)
               WHERE id = $2""",
            [first.id, second.id],
        )
        with pytest.raises(CiphertextRejected):
            await care.report_file(resident_id, second.id)
        with pytest.raises(CiphertextRejected):
            await care.reports_of([resident_id])
        raise _Undo

    with pytest.raises(_Undo):
        await in_tenant(institution, work)


class _Undo(Exception):
    """Raised at the end of a unit of work so that it rolls back."""


async def test_bad_input_is_reported_together_and_nothing_is_written(world: World) -> None:
    institution = world.institution_ids[17]
    resident_id = await admit(institution, "报告长者丙")

    async def problems_of(new: care.NewReport) -> set[tuple[str | None, str]]:
        with pytest.raises(ValidationFailed) as failed:
            await add(resident_id, new)
        return {(p.field, p.message) for p in failed.value.problems}

    async def work() -> None:
        everything = await problems_of(
            report(b"GIF89a not a report", title=" ", issuer="院" * 201, report_date=date(2026, 12, 2))
        )
        assert everything == {
            ("title", "This field is required."),
            ("issuer", "At most {max} characters."),
            ("reportDate", "The date cannot be in the future."),
            ("file", "Only PDF, JPEG or PNG files are accepted."),
        }
        assert await problems_of(report(pdf(), report_date=date(1941, 6, 14), title="x" * 201)) == {
            ("reportDate", "The report cannot be older than the resident."),
            ("title", "At most {max} characters."),
        }
        assert await problems_of(report(b"")) == {("file", "The file is empty.")}
        assert await problems_of(report(pdf(), file=None)) == {("file", "This field is required.")}
        big = b"%PDF-" + b"0" * CAP
        assert await problems_of(report(big[: CAP + 1], file=care.UploadedFile(big[: CAP + 1]))) == {
            ("file", "The file is larger than {max} MiB.")
        }
        assert await problems_of(report(pdf(), file=care.UploadedFile(b"%PDF-1.4", exceeded=True))) == {
            ("file", "The file is larger than {max} MiB.")
        }
        # Declared as a PDF, but the bytes are a PNG; declared as a PNG, but the bytes are HTML.
        for file in (care.UploadedFile(PNG, "application/pdf"), care.UploadedFile(b"<html>", "image/png")):
            assert len(await problems_of(report(b"", file=file))) == 1
        with pytest.raises(NotFound):
            await add(999_999, report(pdf()))
        assert await raw_rows(resident_id) == []

        # What is accepted: exactly the cap, a generic declared type, JPEG with a parameter.
        exact = b"%PDF-" + b"1" * (CAP - 5)
        accepted = [
            await add(resident_id, report(b"", file=care.UploadedFile(exact, None))),
            await add(resident_id, report(b"", file=care.UploadedFile(JPEG, "application/octet-stream"))),
            await add(resident_id, report(b"", file=care.UploadedFile(JPEG, "image/jpeg; q=1"))),
            await add(resident_id, report(pdf(), report_date=BIRTH, issuer="  ")),
        ]
        assert [a.size_bytes for a in accepted] == [CAP, len(JPEG), len(JPEG), len(pdf())]
        assert accepted[-1].issuer is None
        raise _Undo

    with pytest.raises(_Undo):
        await in_tenant(institution, work)


async def test_metadata_of_many_residents_in_one_query_without_the_files(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    institution = world.institution_ids[17]
    residents = [await admit(institution, f"报告长者丁{n}") for n in range(3)]

    async def work() -> None:
        for n, resident_id in enumerate(residents[:2]):
            for day in (date(2026, 1, 5), date(2026, 6, 1), date(2026, 1, 5)):
                await add(resident_id, report(pdf(), report_date=day, title=f"报告{n}-{day}"))
        cipher, statements = await counted(monkeypatch, care)  # as in a new request
        keys_before = cipher.queries
        found = await care.reports_of(residents)
        assert len(statements) == 1 and "content" not in statements[0].replace("content_type", "")
        assert cipher.queries - keys_before == 1  # the three residents' data keys in one query
        first = found[residents[0]].require()
        assert [(r.report_date, r.title) for r in first] == [
            (date(2026, 6, 1), "报告0-2026-06-01"),
            (date(2026, 1, 5), "报告0-2026-01-05"),
            (date(2026, 1, 5), "报告0-2026-01-05"),
        ]
        assert first[1].id > first[2].id  # same date: the newer upload first
        assert len(found[residents[1]].require()) == 3 and found[residents[2]].require() == []
        raise _Undo

    with pytest.raises(_Undo):
        await in_tenant(institution, work)


async def test_an_erased_residents_reports_are_gone(world: World) -> None:
    institution = world.institution_ids[17]
    erased, other = await admit(institution, "报告长者戊"), await admit(institution, "报告长者己")

    async def work() -> None:
        gone = await add(erased, report(pdf()))
        kept = await add(other, report(pdf(), title="保留"))
        await destroy_data_key(erased)
        found = await care.reports_of([erased, other])
        assert found[erased].erased
        with pytest.raises(Erased):
            found[erased].require()
        assert [r.title for r in found[other].require()] == ["保留"]
        with pytest.raises(Erased):
            await care.report_file(erased, gone.id)
        assert (await care.report_file(other, kept.id)).content == pdf()
        with pytest.raises(Erased):
            await add(erased, report(pdf()))
        raise _Undo

    with pytest.raises(_Undo):
        await in_tenant(institution, work)


async def test_seed_demo_writes_openable_pdfs_for_some_residents(world: World) -> None:
    institution = world.institution_ids[14]

    async def work() -> None:
        written, seed = 0, 0
        while not written:  # one resident in five: some seed picks at least one of the institution's
            seed += 1
            started = time.perf_counter()
            written = await care.seed_demo(random.Random(seed), TODAY)
            elapsed = time.perf_counter() - started
        _, rows = await default_connection().execute_query(
            "SELECT id, resident_id, uploaded_by, size_bytes FROM checkup_report WHERE uploaded_by = 'demo'",
            [],
        )
        assert written == len(rows) > 0 and elapsed < 0.5
        row = rows[0]
        opened = await care.report_file(row["resident_id"], row["id"])
        assert opened.content.startswith(b"%PDF-1.4") and len(opened.content) == row["size_bytes"]
        meta = (await care.reports_of([row["resident_id"]]))[row["resident_id"]].require()
        assert all(r.title.endswith("报告") and r.issuer for r in meta)
        raise _Undo

    with pytest.raises(_Undo):
        await in_tenant(institution, work)

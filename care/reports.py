"""Check-up reports: PDFs and scans (JPEG, PNG) of hospital check-ups, kept with the resident's record.

The file and its free text (title, issuer) are sealed with the resident's data key (compliance/encryption)
before they are written; the row id is taken from the sequence first, because the ciphertexts are bound
to it (migrations/tenant/0008_checkup_reports.sql). Plain are the resident, the report date (lists are
newest first), the content type (sniffed from the bytes: one of three), the size, who uploaded it and
when.

A file's type is decided by its first bytes, never by the name or the declared type alone (care/uploads.py:
the checks every upload passes, with residents' photos). Input is
checked as a whole and reported together (ValidationFailed): nothing is written unless all of it is
valid. Reads of many residents at once (`reports_of`) select the metadata only, never the files, and
load the residents' data keys in one query.
"""

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from care.residents import get_resident, next_ids
from care.sealed_rows import text
from care.uploads import DOCUMENTS, ContentType, UploadedFile, check_file, resident_of_file
from care.uploads import sniff as sniff  # re-exported: a report's kind is what sniff says
from compliance.encryption import DataKeyDestroyed, FieldCipher, field_cipher
from tenants.db import default_connection
from tenants.errors import Erased, InvalidInput, NotFound, raise_if_any

TABLE = "checkup_report"
MAX_TITLE = 200
MAX_ISSUER = 200
ERASED = "The personal data of this resident was erased."
# The kinds of file a report may be (care/uploads.py decides a file's kind by its content).
ReportContentType = ContentType


@dataclass(frozen=True, slots=True)
class NewReport:
    report_date: date
    title: str
    file: UploadedFile | None  # None: no file came with the request
    issuer: str | None = None


@dataclass(frozen=True, slots=True)
class CheckedReport:
    report_date: date
    title: str
    issuer: str | None
    content_type: ReportContentType
    content: bytes


@dataclass(frozen=True, slots=True)
class ReportMeta:
    """What lists show of a report: everything but the file."""

    id: int
    resident_id: int
    report_date: date
    title: str
    issuer: str | None
    content_type: ReportContentType
    size_bytes: int
    uploaded_by: str
    uploaded_at: datetime


@dataclass(frozen=True, slots=True)
class ReportFile:
    """A report's file, opened, for a download."""

    id: int
    resident_id: int
    report_date: date
    content_type: ReportContentType
    content: bytes

    @property
    def file_name(self) -> str:
        # Says nothing about the resident or the report's content: the title stays out of the name.
        return f"checkup-report-{self.report_date.isoformat()}-{self.id}.{self.content_type.extension}"


@dataclass(slots=True)
class ResidentReports:
    """A resident's reports, newest first; `erased` when they no longer open (data key destroyed)."""

    reports: list[ReportMeta] = field(default_factory=list)
    erased: bool = False

    def require(self) -> list[ReportMeta]:
        if self.erased:
            raise Erased(ERASED)
        return self.reports


# Checks ------------------------------------------------------------------------------------------


def check_report(new: NewReport, *, birth_date: date, today: date, max_bytes: int) -> CheckedReport:
    problems: list[InvalidInput] = []
    title = text(new.title, "title", problems, limit=MAX_TITLE, required=True)
    issuer = text(new.issuer, "issuer", problems, limit=MAX_ISSUER)
    if new.report_date > today:
        problems.append(InvalidInput("The date cannot be in the future.", field="reportDate"))
    elif new.report_date < birth_date:
        problems.append(InvalidInput("The report cannot be older than the resident.", field="reportDate"))
    kind = check_file(new.file, problems, accepted=DOCUMENTS, max_bytes=max_bytes)
    raise_if_any(problems)
    assert kind is not None and title is not None and new.file is not None  # else reported above
    return CheckedReport(new.report_date, title, issuer, kind, new.file.content)


# Storage -----------------------------------------------------------------------------------------

# The metadata columns: lists never read `content`.
_META_COLUMNS = (
    "id, resident_id, report_date, title, issuer, content_type, size_bytes, uploaded_by, uploaded_at"
)


async def _execute(sql: str, parameters: Sequence[object]) -> list[dict[str, Any]]:
    # execute_query_dict: Tortoise's execute_query drops the rows of INSERT/DELETE ... RETURNING.
    return await default_connection().execute_query_dict(sql, list(parameters))


async def _seal(cipher: FieldCipher, value: str | bytes, column: str, row_id: int, resident_id: int) -> bytes:
    return await cipher.encrypt(value, table=TABLE, column=column, row_id=row_id, subject_id=resident_id)


async def _open(cipher: FieldCipher, sealed: bytes, column: str, row: Mapping[str, Any]) -> bytes:
    return await cipher.decrypt(
        sealed, table=TABLE, column=column, row_id=row["id"], subject_id=row["resident_id"]
    )


async def add_report(
    resident_id: int, new: NewReport, *, uploaded_by: str, today: date, max_bytes: int
) -> ReportMeta:
    """Check and store a report (NotFound without the resident, Erased when its data was erased)."""
    birth_date = (await get_resident(resident_id)).require_identity().birth_date
    checked = check_report(new, birth_date=birth_date, today=today, max_bytes=max_bytes)
    cipher = await field_cipher()
    (row_id,) = await next_ids(TABLE, 1)
    try:
        title = await _seal(cipher, checked.title, "title", row_id, resident_id)
        issuer = (
            None
            if checked.issuer is None
            else await _seal(cipher, checked.issuer, "issuer", row_id, resident_id)
        )
        content = await _seal(cipher, checked.content, "content", row_id, resident_id)
    except DataKeyDestroyed as exc:
        raise Erased(ERASED) from exc
    rows = await _execute(
        f"""INSERT INTO {TABLE}
                (id, resident_id, report_date, title, issuer, content_type, size_bytes, content, uploaded_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING uploaded_at""",
        [
            row_id,
            resident_id,
            checked.report_date,
            title,
            issuer,
            checked.content_type.value,
            len(checked.content),
            content,
            uploaded_by,
        ],
    )
    return ReportMeta(
        row_id,
        resident_id,
        checked.report_date,
        checked.title,
        checked.issuer,
        checked.content_type,
        len(checked.content),
        uploaded_by,
        rows[0]["uploaded_at"],
    )


async def resident_of_report(report_id: int) -> int:
    """The resident a report belongs to (NotFound): the policy is asked before anything is opened."""
    return await resident_of_file(TABLE, report_id)


async def report_file(resident_id: int, report_id: int) -> ReportFile:
    """A report's file, decrypted (NotFound; Erased when the resident's data was erased)."""
    rows = await _execute(
        f"SELECT id, resident_id, report_date, content_type, content FROM {TABLE}"
        " WHERE id = $1 AND resident_id = $2",
        [report_id, resident_id],
    )
    if not rows:
        raise NotFound("Not found.")
    row = rows[0]
    cipher = await field_cipher()
    try:
        content = await _open(cipher, row["content"], "content", row)
    except DataKeyDestroyed as exc:
        raise Erased(ERASED) from exc
    return ReportFile(
        row["id"], row["resident_id"], row["report_date"], ReportContentType(row["content_type"]), content
    )


async def remove_report(resident_id: int, report_id: int) -> None:
    """Delete a report (its ciphertexts with it); NotFound when it is not this resident's."""
    rows = await _execute(
        f"DELETE FROM {TABLE} WHERE id = $1 AND resident_id = $2 RETURNING id", [report_id, resident_id]
    )
    if not rows:
        raise NotFound("Not found.")


async def reports_of(resident_ids: Iterable[int]) -> dict[int, ResidentReports]:
    """The report metadata of several residents, newest report date first: one query for the rows (no
    file content) and one for the data keys, however many residents. Only title and issuer are opened."""
    wanted = sorted(set(resident_ids))
    found = {resident_id: ResidentReports() for resident_id in wanted}
    if not wanted:
        return found
    rows = await _execute(
        f"""SELECT {_META_COLUMNS} FROM {TABLE} WHERE resident_id = ANY($1::bigint[])
            ORDER BY resident_id, report_date DESC, id DESC""",
        [wanted],
    )
    if not rows:
        return found
    cipher = await field_cipher()
    await cipher.load_data_keys({row["resident_id"] for row in rows})
    for row in rows:
        reports = found[row["resident_id"]]
        if reports.erased:
            continue
        try:
            title = (await _open(cipher, row["title"], "title", row)).decode()
            issuer = (
                None
                if row["issuer"] is None
                else (await _open(cipher, row["issuer"], "issuer", row)).decode()
            )
        except DataKeyDestroyed:
            reports.erased = True
            reports.reports.clear()
            continue
        reports.reports.append(
            ReportMeta(
                row["id"],
                row["resident_id"],
                row["report_date"],
                title,
                issuer,
                ReportContentType(row["content_type"]),
                row["size_bytes"],
                row["uploaded_by"],
                row["uploaded_at"],
            )
        )
    return found


# Demo data ---------------------------------------------------------------------------------------


def _pdf_string(text: str) -> str:
    return "(" + text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def minimal_pdf(lines: Sequence[str]) -> bytes:
    """A one-page PDF 1.4 showing `lines` (ASCII) in Helvetica: header, four objects, a correct
    cross-reference table and trailer, so that any reader opens it."""
    text = "BT /F1 12 Tf 72 760 Td 16 TL " + " ".join(f"{_pdf_string(line)} '" for line in lines) + " ET"
    stream = text.encode("ascii", "replace")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


_HOSPITALS = (
    "上海市第六人民医院",
    "杭州市第一人民医院",
    "南京鼓楼医院",
    "北京协和医院",
    "广州市红十字会医院",
    "苏州大学附属第一医院",
    "社区卫生服务中心",
)
_TITLES = ("健康体检报告", "老年人健康体检报告", "入院体检报告", "血液生化检查报告", "心电图检查报告")


def _demo_pdf(rng: random.Random, day: date) -> bytes:
    systolic, diastolic = rng.randint(112, 158), rng.randint(66, 96)
    return minimal_pdf(
        [
            "Health check-up report",
            f"Date: {day.isoformat()}",
            f"Blood pressure: {systolic}/{diastolic} mmHg",
            f"Fasting glucose: {rng.uniform(4.4, 8.2):.1f} mmol/L",
            f"Total cholesterol: {rng.uniform(3.6, 6.4):.2f} mmol/L",
            f"Heart rate: {rng.randint(58, 92)} bpm",
        ]
    )


async def seed_demo(rng: random.Random, today: date) -> int:
    """About one resident in five gets one or two check-up reports (small generated PDFs) dated between
    a year before admission and its discharge (or today). One INSERT for all of them."""
    residents = await _execute(
        "SELECT id, admission_date, status, discharged_on FROM resident ORDER BY id", []
    )
    chosen = [row for row in residents if rng.random() < 0.2]
    if not chosen:
        return 0
    cipher = await field_cipher()
    await cipher.load_data_keys(row["id"] for row in chosen)
    planned: list[tuple[int, date]] = []
    for row in chosen:
        last = min(row["discharged_on"] or today, today)
        first = row["admission_date"] - timedelta(days=365)
        span = max((last - first).days, 0)
        planned += [
            (row["id"], first + timedelta(days=rng.randint(0, span))) for _ in range(rng.randint(1, 2))
        ]
    ids = await next_ids(TABLE, len(planned))
    columns: dict[str, list[object]] = {
        name: [] for name in ("id", "resident_id", "report_date", "title", "issuer", "size", "content")
    }
    for row_id, (resident_id, day) in zip(ids, planned, strict=True):
        content = _demo_pdf(rng, day)
        try:
            sealed = [
                await _seal(cipher, f"{day.year}年{rng.choice(_TITLES)}", "title", row_id, resident_id),
                await _seal(cipher, rng.choice(_HOSPITALS), "issuer", row_id, resident_id),
                await _seal(cipher, content, "content", row_id, resident_id),
            ]
        except DataKeyDestroyed:
            continue  # an erased resident gets nothing new
        for name, value in zip(
            columns, [row_id, resident_id, day, sealed[0], sealed[1], len(content), sealed[2]], strict=True
        ):
            columns[name].append(value)
    if not columns["id"]:
        return 0
    await _execute(
        f"""INSERT INTO {TABLE}
                (id, resident_id, report_date, title, issuer, content_type, size_bytes, content, uploaded_by)
            SELECT id, resident_id, report_date, title, issuer, $8, size_bytes, content, $9
            FROM unnest($1::bigint[], $2::bigint[], $3::date[], $4::bytea[], $5::bytea[],
                        $6::int[], $7::bytea[])
                AS r (id, resident_id, report_date, title, issuer, size_bytes, content)""",
        [*columns.values(), ReportContentType.PDF.value, "demo"],
    )
    return len(columns["id"])

"""Uploaded files as the domain receives them, and the checks every upload passes.

A file's type is decided by its first bytes (PDF `%PDF-`, JPEG `FF D8 FF`, PNG's signature), never by the
name or the declared type alone: a declared type that contradicts the bytes is refused too. The checks
append their problems to the caller's list, so that a file's problems are reported together with the
rest of the input (tenants.errors.raise_if_any). Used by check-up reports (care/reports.py) and residents'
photos (care/photos.py).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from tenants.db import default_connection
from tenants.errors import InvalidInput, NotFound

DEFAULT_MAX_FILE_BYTES = 10 * 1024 * 1024  # the default of YIYANG_MAX_UPLOAD_BYTES (api/settings.py)
# Declared types that say nothing either way (a browser or client that does not know): the bytes decide.
_UNDECLARED = frozenset({"", "application/octet-stream", "binary/octet-stream"})


class ContentType(StrEnum):
    PDF = "application/pdf"
    JPEG = "image/jpeg"
    PNG = "image/png"

    @property
    def extension(self) -> str:
        return {"application/pdf": "pdf", "image/jpeg": "jpg", "image/png": "png"}[self.value]


IMAGES = frozenset({ContentType.JPEG, ContentType.PNG})
DOCUMENTS = frozenset(ContentType)

_SIGNATURES: tuple[tuple[bytes, ContentType], ...] = (
    (b"%PDF-", ContentType.PDF),
    (b"\xff\xd8\xff", ContentType.JPEG),
    (b"\x89PNG\r\n\x1a\n", ContentType.PNG),
)
# Declared types a client may send for each kind (image/jpg and image/pjpeg are seen in the wild).
_DECLARED_AS: Mapping[ContentType, frozenset[str]] = {
    ContentType.PDF: frozenset({"application/pdf", "application/x-pdf"}),
    ContentType.JPEG: frozenset({"image/jpeg", "image/jpg", "image/pjpeg"}),
    ContentType.PNG: frozenset({"image/png"}),
}


def sniff(content: bytes) -> ContentType | None:
    """The type the file's first bytes say it is, or None when it is none of PDF, JPEG, PNG."""
    return next((kind for magic, kind in _SIGNATURES if content.startswith(magic)), None)


@dataclass(frozen=True, slots=True)
class UploadedFile:
    """An upload as read: at most `max_bytes + 1` bytes (`exceeded` when there were more than `max_bytes`:
    the rest was never read), and the type the client declared, if any."""

    content: bytes
    declared_type: str | None = None
    exceeded: bool = False


def _not_accepted(accepted: frozenset[ContentType], field: str) -> InvalidInput:
    if accepted <= IMAGES:
        return InvalidInput("Only JPEG or PNG images are accepted.", field=field)
    return InvalidInput("Only PDF, JPEG or PNG files are accepted.", field=field)


def check_file(
    file: UploadedFile | None,
    problems: list[InvalidInput],
    *,
    accepted: frozenset[ContentType],
    max_bytes: int,
    field: str = "file",
) -> ContentType | None:
    """The file's type when it is present, not empty, at most `max_bytes`, of an `accepted` type by its
    content and not declared as another; else None, with the one problem appended to `problems`."""
    if file is None:
        problems.append(InvalidInput("This field is required.", field=field))
        return None
    if file.exceeded or len(file.content) > max_bytes:
        problems.append(
            InvalidInput("The file is larger than {max} MiB.", field=field, max=f"{max_bytes / 2**20:g}")
        )
        return None
    if not file.content:
        problems.append(InvalidInput("The file is empty.", field=field))
        return None
    kind = sniff(file.content)
    if kind is None or kind not in accepted:
        problems.append(_not_accepted(accepted, field))
        return None
    declared = (file.declared_type or "").split(";")[0].strip().lower()
    if declared not in _UNDECLARED and declared not in _DECLARED_AS[kind]:
        problems.append(InvalidInput("The file's content does not match its declared type.", field=field))
        return None
    return kind


async def resident_of_file(table: str, file_id: int) -> int:
    """The resident a stored file (a row of `table`: checkup_report, resident_photo) belongs to, else
    NotFound: the policy is asked for that resident before anything is opened."""
    rows = await default_connection().execute_query_dict(
        f"SELECT resident_id FROM {table} WHERE id = $1", [file_id]
    )
    if not rows:
        raise NotFound("Not found.")
    return int(rows[0]["resident_id"])

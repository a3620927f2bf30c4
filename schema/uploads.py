"""Uploaded files in GraphQL mutations (the multipart request spec): read with a cap, and who uploaded.

Used by check-up reports (schema/reports.py) and residents' photos (schema/photos.py).
"""

from dataclasses import dataclass

from starlette.datastructures import UploadFile

from care.uploads import UploadedFile
from compliance.policy import Action
from schema.context import YiyangInfo
from schema.resident_access import resident_to_change

_READ_CHUNK = 64 * 1024
# What a `downloadUrl` field says (api/files.py serves the path).
DOWNLOAD_URL = "GET it with the same `Authorization: Bearer` header (relative to the API's origin)."


async def read_upload(file: object, max_bytes: int) -> UploadedFile | None:
    """At most `max_bytes + 1` bytes of an upload (what lies beyond is never read into memory: Starlette
    spools a file part to a temporary file); None when `file` is no upload (a JSON request with a string
    where the file goes)."""
    if not isinstance(file, UploadFile):
        return None
    chunks: list[bytes] = []
    size = 0
    try:
        while size <= max_bytes:
            chunk = await file.read(min(_READ_CHUNK, max_bytes + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        await file.close()  # its temporary file goes now, not when the request object is collected
    return UploadedFile(b"".join(chunks), file.content_type, exceeded=size > max_bytes)


@dataclass(frozen=True, slots=True)
class ResidentUpload:
    """A file uploaded for a resident: whose (institution, primary key), and the file as read."""

    institution_id: int
    resident_pk: int
    file: UploadedFile | None


async def resident_upload(
    info: YiyangInfo, resident_id: str, action: Action, file: object, max_bytes: int
) -> ResidentUpload:
    """The resident a file is uploaded for, asked of the policy (`action`; NOT_FOUND for another
    institution's) before a byte of the file is read; then at most `max_bytes + 1` of them."""
    institution_id, pk = await resident_to_change(info, resident_id, action)
    return ResidentUpload(institution_id, pk, await read_upload(file, max_bytes))

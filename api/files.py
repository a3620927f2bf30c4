"""File downloads: `GET /files/checkup-reports/{id}` and `GET /files/resident-photos/{id}`, the sealed files
of a resident, decrypted, for staff who may see them.

One endpoint class serves every kind of file (`SealedFileDownload`, told by a `FileKind` what the id names,
which action the policy asks and how the file is found and opened). The same bearer token as /graphql,
verified and narrowed to the acting institution by the GraphQL endpoint's own code
(`GraphQLEndpoint.acting`, so the `Yiyang-Institution` header works the same way); the policy is asked
for the file's institution, then for its resident, before the file is read and opened. The id is the
GraphQL id (`CheckupReport.id`, `ResidentPhoto.id`; `downloadUrl` gives the whole path).

The file goes out with its sniffed type (`Content-Type`), as an attachment (reports) or inline (photos,
shown on the resident's card), with `X-Content-Type-Options: nosniff` (a browser never renders it as
something else) and `Cache-Control: no-store` (no proxy or browser cache keeps personal data). Refusals
are JSON like the OAuth2 endpoints' (`error`, `error_description`): 401 without a valid token, 403 for a
role that may not see the file, 404 for an unknown id or one of another institution, 410 when the
resident's personal data was erased.
"""

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Protocol

from starlette.datastructures import Headers
from starlette.responses import Response
from starlette.types import Scope

from api.graphql import GraphQLEndpoint
from api.middleware import request_id_of
from api.token_edges import NO_STORE, TokenEdge
from care import photos, reports
from compliance import consent
from compliance.audit import Outcome, record_event
from compliance.policy import Action, require
from compliance.principals import Principal
from schema.ids import decode_id
from tenants.errors import DomainError, NotFound
from tenants.unit_of_work import run_in_tenant

log = logging.getLogger("yiyang.files")

CHECKUP_REPORT_PATH = "/files/checkup-reports/{file_id}"
RESIDENT_PHOTO_PATH = "/files/resident-photos/{file_id}"


class SealedFile(Protocol):
    """A file opened for a download (care.reports.ReportFile, care.photos.PhotoFile)."""

    @property
    def content(self) -> bytes: ...

    @property
    def content_type(self) -> StrEnum: ...

    @property
    def file_name(self) -> str: ...


@dataclass(frozen=True, slots=True)
class FileKind:
    """What a download endpoint serves: the GraphQL type its ids name, the action the policy asks, the
    resident a file belongs to (NotFound), the file opened (NotFound, Erased), and how it is shown."""

    type_name: str
    action: Action
    resident_of: Callable[[int], Awaitable[int]]
    open: Callable[[int, int], Awaitable[SealedFile]]
    inline: bool = False


CHECKUP_REPORTS = FileKind(
    "CheckupReport", Action.CHECKUP_REPORT_VIEW, reports.resident_of_report, reports.report_file
)
RESIDENT_PHOTOS = FileKind(
    "ResidentPhoto", Action.RESIDENT_PHOTO_VIEW, photos.resident_of_photo, photos.photo_file, inline=True
)


class SealedFileDownload(TokenEdge):
    """The ASGI endpoint of a download path (`{file_id}` in it) for one kind of file."""

    def __init__(self, graphql: GraphQLEndpoint, kind: FileKind) -> None:
        super().__init__(graphql)
        self.kind = kind

    async def respond(self, scope: Scope, headers: Headers) -> Response:
        kind = self.kind
        principal, tenant = await self.graphql.acting(headers)
        given = str(scope.get("path_params", {}).get("file_id", ""))
        institution_id, file_id = decode_id(kind.type_name, given, 2)
        require(principal, kind.action, institution=institution_id)
        if tenant is None or tenant.institution_id != institution_id:
            raise NotFound("Not found.")

        request = _DownloadRequest(
            principal, request_id_of(scope), scope["client"][0] if scope.get("client") else ""
        )

        async def read() -> SealedFile | DomainError:
            resident_id = await kind.resident_of(file_id)
            require(principal, kind.action, institution=institution_id, resident_id=resident_id)
            return await _decided(request, kind.action, resident_id, lambda: kind.open(resident_id, file_id))

        found = await run_in_tenant(tenant, read)
        if isinstance(found, DomainError):
            raise found
        log.info(
            "%s %s downloaded by %s (request %s)",
            kind.type_name,
            file_id,
            principal.subject,
            request_id_of(scope),
        )
        disposition = "inline" if kind.inline else "attachment"
        return Response(
            found.content,
            media_type=found.content_type.value,
            headers={
                "Content-Disposition": f'{disposition}; filename="{found.file_name}"',
                "X-Content-Type-Options": "nosniff",
                **NO_STORE,
            },
        )


@dataclass(frozen=True, slots=True)
class _DownloadRequest:
    """What the audit records of a download request (compliance.audit.RequestFacts)."""

    principal: Principal
    request_id: str
    client_address: str


async def _decided(
    request: _DownloadRequest,
    action: Action,
    resident_id: int,
    open_file: Callable[[], Awaitable[SealedFile]],
) -> SealedFile | DomainError:
    """The decision point on the file's category, on the audit trail in this unit of work either way:
    the file, or the refusal or failure (returned, not raised, so that the unit of work keeps its event)."""
    category = consent.category_of(action)
    assert category is not None  # every download action is resident data
    decision = await consent.decide(request.principal, action, resident_id, category)
    event = consent.decision_event(request, action, resident_id, (category,), None, decision)
    refused = consent.refusal(decision)
    if refused is not None:
        await record_event(event)
        return refused
    try:
        found = await open_file()
    except DomainError as failed:  # e.g. GONE: the resident was erased
        await record_event(replace(event, outcome=Outcome.FAILED, reason_code=failed.code.lower()))
        return failed
    await record_event(event)
    return found

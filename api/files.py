"""`GET /files/checkup-reports/{id}`: the file of a check-up report, decrypted, for staff who may see it.

The same bearer token as /graphql, verified and narrowed to the acting institution by the GraphQL
endpoint's own code (`GraphQLEndpoint.acting`, so the `Yiyang-Institution` header works the same way);
the policy is asked (`checkup_report.view`) for the report's institution, then for its resident, before
the file is read and opened. The report id is the GraphQL id (`CheckupReport.id`; `downloadUrl` gives the
whole path).

The file goes out as an attachment with its sniffed type (`Content-Type`), `X-Content-Type-Options:
nosniff` (a browser never renders it as something else) and `Cache-Control: no-store` (no proxy or
browser cache keeps health data). Refusals are JSON like the OAuth2 endpoints' (`error`,
`error_description`): 401 without a valid token, 403 for a role that may not see reports, 404 for an
unknown id or one of another institution, 410 when the resident's personal data was erased.
"""

import logging

from starlette.datastructures import Headers
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from api.graphql import GraphQLEndpoint
from api.middleware import request_id_of
from care import reports
from compliance.policy import Action, require
from schema.i18n import negotiate_locale, translate
from schema.ids import decode_id
from tenants.errors import DomainError, Erased, Forbidden, InvalidInput, NotFound, Unauthenticated
from tenants.unit_of_work import run_in_tenant

log = logging.getLogger("yiyang.files")

CHECKUP_REPORT_PATH = "/files/checkup-reports/{report_id}"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_STATUS_OF: tuple[tuple[type[DomainError], int], ...] = (
    (Unauthenticated, 401),
    (Forbidden, 403),
    (NotFound, 404),
    (Erased, 410),
    (InvalidInput, 400),
)


class CheckupReportDownload:
    """The ASGI endpoint of CHECKUP_REPORT_PATH."""

    def __init__(self, graphql: GraphQLEndpoint) -> None:
        self.graphql = graphql

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        try:
            response = await self._download(scope, headers)
        except DomainError as refusal:
            response = _refusal(refusal, headers)
        await response(scope, receive, send)

    async def _download(self, scope: Scope, headers: Headers) -> Response:
        principal, tenant = await self.graphql.acting(headers)
        given = str(scope.get("path_params", {}).get("report_id", ""))
        institution_id, report_id = decode_id("CheckupReport", given, 2)
        require(principal, Action.CHECKUP_REPORT_VIEW, institution=institution_id)
        if tenant is None or tenant.institution_id != institution_id:
            raise NotFound("Not found.")

        async def read() -> reports.ReportFile:
            resident_id = await reports.resident_of_report(report_id)
            require(
                principal, Action.CHECKUP_REPORT_VIEW, institution=institution_id, resident_id=resident_id
            )
            return await reports.report_file(resident_id, report_id)

        found = await run_in_tenant(tenant, read)
        log.info(
            "checkup report %s downloaded by %s (request %s)",
            report_id,
            principal.subject,
            request_id_of(scope),
        )
        return Response(
            found.content,
            media_type=found.content_type.value,
            headers={
                "Content-Disposition": f'attachment; filename="{found.file_name}"',
                "X-Content-Type-Options": "nosniff",
                **_NO_STORE,
            },
        )


def _refusal(refusal: DomainError, headers: Headers) -> JSONResponse:
    status = next((code for kind, code in _STATUS_OF if isinstance(refusal, kind)), 400)
    extra = {"WWW-Authenticate": 'Bearer realm="yiyang"'} if status == 401 else {}
    message = translate(refusal.message, negotiate_locale(headers.get("accept-language")), refusal.params)
    return JSONResponse(
        {"error": refusal.code.lower(), "error_description": message},
        status_code=status,
        headers={**_NO_STORE, **extra},
    )

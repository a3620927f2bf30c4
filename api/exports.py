"""CSV exports: `GET /exports/residents/{resident_id}/access-report.csv`, a resident's access report
(compliance/audit/report.py) as a spreadsheet, for those who may read it in GraphQL
(`Resident.accessReport`): the compliance officer, the institution admin, the resident's guardian.

The same bearer token as /graphql, narrowed to the acting institution by the GraphQL endpoint's own code
(`GraphQLEndpoint.acting`, as api/files.py does); `{resident_id}` is the GraphQL `Resident.id`.
`?since=` (inclusive) and `?until=` (inclusive for a date, exclusive for a date and time) take ISO dates or
dates and times, local to the institution without an offset.

The export is an audit event of its own (access_report.export, written before the first row leaves, in
its own unit of work, so that a download cut short is still on the record); a refused one is recorded as
denied. The rows are the report up to that moment (the export's own event is not among them), read a
batch at a time, each batch in a short unit of work of its own rather than one transaction held open for
as long as the client takes to download: the log is append-only and read by `seq`, so the batches
together are the same snapshot.

The file is UTF-8 with a byte-order mark (Excel then opens Chinese correctly), its header row in the
caller's language (Accept-Language, Chinese first). A cell that begins with = + - @ (or a tab or carriage
return) gets a leading apostrophe, so that a spreadsheet never runs a display name as a formula (CSV
formula injection). Refusals are JSON like the file downloads': 401, 403, 404, and 400 for a bad id or
time range.
"""

import csv
import io
import logging
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from starlette.datastructures import Headers, QueryParams
from starlette.responses import Response, StreamingResponse
from starlette.types import Scope

from api.middleware import request_id_of
from api.token_edges import NO_STORE, TokenEdge
from care.models import Resident
from compliance.audit import Outcome, record_event, report, request_event
from compliance.consent import current_terms
from compliance.policy import Action, require
from compliance.principals import Principal
from schema.i18n import negotiate_locale, translate
from schema.ids import decode_id
from tenants.context import TenantRef
from tenants.errors import Forbidden, NotFound
from tenants.unit_of_work import run_in_tenant

log = logging.getLogger("yiyang.exports")

ACCESS_REPORT_CSV_PATH = "/exports/residents/{resident_id}/access-report.csv"
BATCH_SIZE = 500
BOM = "\ufeff"
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# The header row: English msgids, translated for the caller (schema/locale/zh_CN.po).
COLUMNS = (
    "Time",
    "Name",
    "Principal",
    "Kind of principal",
    "Roles",
    "Client",
    "Action",
    "Access",
    "Data categories",
    "Purpose",
    "Outcome",
    "Reason",
)


@dataclass(frozen=True, slots=True)
class _Request:
    """What the audit needs of the request (compliance.audit.RequestFacts)."""

    principal: Principal | None
    request_id: str
    client_address: str


def safe_cell(value: str) -> str:
    """`value`, with a leading apostrophe if a spreadsheet would take it for a formula."""
    return "'" + value if value.startswith(_FORMULA_STARTS) else value


def csv_rows(rows: Iterable[Iterable[str]]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    for row in rows:
        writer.writerow([safe_cell(cell) for cell in row])
    return buffer.getvalue()


def report_row(event: report.LoggedEvent, zone: ZoneInfo) -> list[str]:
    return [
        event.occurred_at.astimezone(zone).isoformat(timespec="seconds"),
        event.display_name or "",
        event.principal_subject,
        event.principal_kind.value,
        " ".join(event.roles),
        event.client_id or "",
        event.action,
        event.access.value,
        " ".join(event.data_categories),
        event.purpose or "",
        event.outcome.value,
        event.reason_code or "",
    ]


class AccessReportExport(TokenEdge):
    """The ASGI endpoint of ACCESS_REPORT_CSV_PATH."""

    async def respond(self, scope: Scope, headers: Headers) -> Response:
        action = Action.ACCESS_REPORT_EXPORT
        principal, tenant = await self.graphql.acting(headers)
        given = str(scope.get("path_params", {}).get("resident_id", ""))
        institution_id, resident_id = decode_id("Resident", given, 2, field="residentId")
        if tenant is None or tenant.institution_id != institution_id:
            require(principal, action, institution=institution_id)
            raise NotFound("Not found.")
        query = QueryParams(scope.get("query_string", b""))
        since = _bound(query.get("since"), tenant, end=False, field="since")
        until = _bound(query.get("until"), tenant, end=True, field="until")
        report.check_range(since, until)
        client = scope.get("client")
        facts = _Request(principal, request_id_of(scope), client[0] if client else "")

        async def start() -> int | Forbidden:
            # The resident first: a role that may not read reports learns nothing it could not see anyway.
            if not await Resident.filter(id=resident_id).exists():
                raise NotFound("Not found.")
            try:
                await report.require_access_report(
                    principal, action, resident_id, institution=institution_id, consents=current_terms
                )
            except Forbidden as refused:
                denied = request_event(
                    facts,
                    action,
                    resident_id=resident_id,
                    outcome=Outcome.DENIED,
                    reason_code=report.refusal_reason(refused),
                )
                await record_event(denied)
                return refused  # returned, not raised: the denied event commits
            recorded = await record_event(request_event(facts, action, resident_id=resident_id))
            return recorded.seq

        started = await run_in_tenant(tenant, start)
        if isinstance(started, Forbidden):
            raise started
        log.info(
            "access report of resident %s exported by %s (request %s)",
            resident_id,
            principal.subject,
            facts.request_id,
        )
        locale = negotiate_locale(headers.get("accept-language"))
        body = _stream(tenant, resident_id, since, until, before_seq=started, locale=locale)
        file_name = f"access-report-{institution_id}-{resident_id}.csv"  # an id, never the resident's name
        return StreamingResponse(
            body,
            media_type="text/csv; charset=utf-8",
            headers={
                "Content-Disposition": f'attachment; filename="{file_name}"',
                "X-Content-Type-Options": "nosniff",
                **NO_STORE,
            },
        )


def _bound(value: str | None, tenant: TenantRef, *, end: bool, field: str) -> datetime | None:
    if value is None or not value.strip():
        return None
    return report.moment(value.strip(), tenant.time_zone, end=end, field=field)


async def _stream(
    tenant: TenantRef,
    resident_id: int,
    since: datetime | None,
    until: datetime | None,
    *,
    before_seq: int,
    locale: str,
) -> AsyncIterator[bytes]:
    zone = ZoneInfo(tenant.time_zone)
    yield (BOM + csv_rows([[translate(column, locale) for column in COLUMNS]])).encode()
    while True:

        async def batch(before: int = before_seq) -> list[report.LoggedEvent]:
            return await report.access_report(
                resident_id, since=since, until=until, before_seq=before, limit=BATCH_SIZE
            )

        events = await run_in_tenant(tenant, batch)
        if events:
            yield csv_rows(report_row(event, zone) for event in events).encode()
        if len(events) < BATCH_SIZE:
            return
        before_seq = events[-1].seq

"""Check-up reports (care/reports.py): the `Resident.checkupReports` connection (bound to ResidentType in
schema/residents.py), the mutations `uploadCheckupReport` (GraphQL multipart request spec: the file is an
`Upload` variable) and `removeCheckupReport`. The file itself is downloaded from api/files.py
(`downloadUrl`), never through GraphQL.

Reads go through a per-request DataLoader (`Loaders.checkup_reports`: metadata only, never the files).
Every read and write asks the policy (`checkup_report.view`, `checkup_report.upload`).
"""

from datetime import date, datetime

import strawberry
from strawberry.file_uploads import Upload

from care import reports as care
from care.residents import institution_today
from compliance.consent import Category
from compliance.policy import Action
from schema.context import YiyangInfo
from schema.ids import encode_id
from schema.pagination import Connection, page_request, paginate_loaded
from schema.resident_access import (
    ResidentNode,
    part_to_change,
    recorder,
    require_resident_access,
)
from schema.uploads import DOWNLOAD_URL, resident_upload
from schema.user_errors import USER_ERROR_TYPES, UserError, user_errors

DOWNLOAD_PATH = "/files/checkup-reports/"
_ID_BITS = 40  # report ids stay below 2**40


def download_url(institution_id: int, report_id: int) -> str:
    return DOWNLOAD_PATH + encode_id("CheckupReport", institution_id, report_id)


@strawberry.type(name="CheckupReport")
class CheckupReportType:
    id: strawberry.ID
    report_date: date
    title: str
    issuer: str | None
    content_type: str = strawberry.field(description="application/pdf, image/jpeg or image/png.")
    size_bytes: int
    uploaded_at: datetime
    download_url: str = strawberry.field(description=DOWNLOAD_URL)
    order: strawberry.Private[int]

    @classmethod
    def of(cls, row: care.ReportMeta, institution_id: int) -> "CheckupReportType":
        return cls(
            id=strawberry.ID(encode_id("CheckupReport", institution_id, row.id)),
            report_date=row.report_date,
            title=row.title,
            issuer=row.issuer,
            content_type=row.content_type.value,
            size_bytes=row.size_bytes,
            uploaded_at=row.uploaded_at,
            download_url=download_url(institution_id, row.id),
            # Newest report date first, then newest id, as one ascending whole number (the cursor key).
            order=((date.max.toordinal() - row.report_date.toordinal()) << _ID_BITS)
            + ((1 << _ID_BITS) - 1 - row.id),
        )


async def resident_checkup_reports(
    root: ResidentNode, info: YiyangInfo, first: int | None = None, after: str | None = None
) -> Connection[CheckupReportType] | None:
    """The resident's check-up reports, newest report date first (metadata; files via downloadUrl). Null,
    with an error of code GONE, when the resident's personal data was erased (the rest of a page reads)."""
    await require_resident_access(
        info, Action.CHECKUP_REPORT_VIEW, root.institution_id, root.pk, (Category.MEDICAL_HISTORY,)
    )
    page = page_request(first, after)
    reports = (await info.context.loaders.checkup_reports.load(root.pk)).require()
    nodes = [CheckupReportType.of(row, root.institution_id) for row in reports]
    return paginate_loaded(nodes, page, key=lambda node: node.order)


@strawberry.input
class UploadCheckupReportInput:
    resident_id: strawberry.ID
    report_date: date
    title: str
    file: Upload = strawberry.field(
        description="The file, sent as the GraphQL multipart request spec says: PDF, JPEG or PNG (judged "
        "by its content), at most YIYANG_MAX_UPLOAD_BYTES (10 MiB by default)."
    )
    issuer: str | None = strawberry.field(default=None, description="The hospital or clinic.")


@strawberry.input
class RemoveCheckupReportInput:
    id: strawberry.ID


@strawberry.type
class UploadCheckupReportPayload:
    report: CheckupReportType | None
    user_errors: list[UserError]


@strawberry.type
class RemoveCheckupReportPayload:
    removed_id: strawberry.ID | None
    user_errors: list[UserError]


@strawberry.type
class CheckupReportMutations:
    @strawberry.mutation(
        description="Upload a check-up report of a resident (multipart request; clinical staff, admin)."
    )
    async def upload_checkup_report(
        self, info: YiyangInfo, input: UploadCheckupReportInput
    ) -> UploadCheckupReportPayload:
        upload = await resident_upload(
            info, input.resident_id, Action.CHECKUP_REPORT_UPLOAD, input.file, info.context.max_upload_bytes
        )
        new = care.NewReport(
            report_date=input.report_date, title=input.title, file=upload.file, issuer=input.issuer
        )
        try:
            row = await care.add_report(
                upload.resident_pk,
                new,
                uploaded_by=recorder(info),
                today=institution_today(),
                max_bytes=info.context.max_upload_bytes,
            )
        except USER_ERROR_TYPES as error:
            return UploadCheckupReportPayload(report=None, user_errors=user_errors(info, error))
        return UploadCheckupReportPayload(
            report=CheckupReportType.of(row, upload.institution_id), user_errors=[]
        )

    @strawberry.mutation(description="Remove a check-up report (clinical staff, admin).")
    async def remove_checkup_report(
        self, info: YiyangInfo, input: RemoveCheckupReportInput
    ) -> RemoveCheckupReportPayload:
        _, resident_id, report_id = await part_to_change(
            info, "CheckupReport", input.id, Action.CHECKUP_REPORT_UPLOAD, care.resident_of_report
        )
        await care.remove_report(resident_id, report_id)
        return RemoveCheckupReportPayload(removed_id=input.id, user_errors=[])

"""Check-up reports through the app: multipart upload to /graphql (GraphQL multipart request spec), the
`Resident.checkupReports` connection, the download edge `GET /files/checkup-reports/{id}`; body limits,
the preflight header, userErrors with nothing written, GONE, NOT_FOUND, FORBIDDEN, 401."""

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from api.settings import ConfigurationError, Settings
from care.reports import ResidentReports, minimal_pdf
from compliance.encryption import destroy_data_key
from compliance.policy import Action, may
from compliance.principals import Principal, PrincipalKind, StaffRole
from schema.ids import encode_id
from tests.api.upload_support import PREFLIGHT, admit, in_tenant, post_file, rows_of, staff
from tests.conftest import World, gql

HOME, OTHER = 14, 17
CAP = 10 * 1024 * 1024  # the default YIYANG_MAX_UPLOAD_BYTES (the tests' settings keep it)
PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8

UPLOAD = """
mutation($input: UploadCheckupReportInput!) {
  uploadCheckupReport(input: $input) {
    report { id reportDate title issuer contentType sizeBytes uploadedAt downloadUrl }
    userErrors { field message code }
  }
}"""
REPORTS = """
query($id: ID!, $first: Int, $after: String) { resident(id: $id) {
  checkupReports(first: $first, after: $after) {
    totalCount pageInfo { hasNextPage endCursor }
    edges { node { id reportDate title issuer contentType sizeBytes downloadUrl } } } } }"""
REMOVE = """
mutation($id: ID!) { removeCheckupReport(input: {id: $id}) { removedId userErrors { field } } }"""


async def stored(institution_id: int, pk: int) -> list[dict[str, Any]]:
    return await rows_of(
        institution_id, "SELECT * FROM checkup_report WHERE resident_id = $1 ORDER BY id", pk
    )


async def upload(
    client: httpx.AsyncClient,
    token: str | None,
    resident_id: str,
    content: bytes,
    *,
    content_type: str = "application/pdf",
    headers: dict[str, str] | None = None,
    **fields: object,
) -> httpx.Response:
    given = {"residentId": resident_id, "reportDate": "2026-09-20", "title": "2026年老年人健康体检报告"}
    variables = {"input": given | fields | {"file": None}}
    return await post_file(
        client, token, UPLOAD, variables, ("report.bin", content, content_type), headers=headers
    )


def payload(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    return response.json()["data"]["uploadCheckupReport"]


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


async def test_upload_list_and_download(client: httpx.AsyncClient, world: World) -> None:
    institution = world.institution_ids[HOME]
    pk, resident = await admit(institution, "上传长者甲")
    nurse = staff(institution, StaffRole.NURSE)
    content = minimal_pdf(["Blood pressure 152/94 mmHg", "ECG: sinus rhythm"])

    first = payload(await upload(client, nurse, resident, content, issuer=" 华山医院 "))
    assert first["userErrors"] == []
    report = first["report"]
    assert (report["title"], report["issuer"], report["contentType"], report["sizeBytes"]) == (
        "2026年老年人健康体检报告",
        "华山医院",
        "application/pdf",
        len(content),
    )
    assert report["downloadUrl"] == f"/files/checkup-reports/{report['id']}"
    second = payload(
        await upload(
            client, nurse, resident, PNG, content_type="image/png", reportDate="2026-11-02", title="胸片"
        )
    )["report"]

    # Sealed at rest: no file bytes, no title, no issuer in the row.
    for row in await stored(institution, pk):
        for column in ("title", "issuer", "content"):
            for plaintext in (b"%PDF", b"152/94", b"\x89PNG", PNG[40:120], "体检".encode(), "华山".encode()):
                assert plaintext not in (row[column] or b""), column

    listed = await gql(client, REPORTS, {"id": resident, "first": 1}, token=nurse)
    connection = listed["data"]["resident"]["checkupReports"]
    assert connection["totalCount"] == 2 and connection["pageInfo"]["hasNextPage"] is True
    assert [e["node"]["id"] for e in connection["edges"]] == [second["id"]]  # newest report date first
    rest = await gql(
        client,
        REPORTS,
        {"id": resident, "first": 5, "after": connection["pageInfo"]["endCursor"]},
        token=nurse,
    )
    assert [e["node"] for e in rest["data"]["resident"]["checkupReports"]["edges"]] == [
        {
            key: report[key]
            for key in ("id", "reportDate", "title", "issuer", "contentType", "sizeBytes", "downloadUrl")
        }
    ]

    doctor = staff(institution, StaffRole.DOCTOR)
    downloaded = await client.get(report["downloadUrl"], headers={"Authorization": f"Bearer {doctor}"})
    assert downloaded.status_code == 200 and downloaded.content == content
    assert downloaded.headers["content-type"] == "application/pdf"
    assert downloaded.headers["content-disposition"].startswith(
        'attachment; filename="checkup-report-2026-09-20'
    )
    assert downloaded.headers["x-content-type-options"] == "nosniff"
    assert downloaded.headers["cache-control"] == "no-store"
    image = await client.get(second["downloadUrl"], headers={"Authorization": f"Bearer {doctor}"})
    assert image.content == PNG and image.headers["content-type"] == "image/png"

    removed = await gql(
        client, REMOVE, {"id": second["id"]}, token=staff(institution, StaffRole.INSTITUTION_ADMIN)
    )
    assert removed["data"]["removeCheckupReport"] == {"removedId": second["id"], "userErrors": []}
    gone = await client.get(second["downloadUrl"], headers={"Authorization": f"Bearer {doctor}"})
    assert gone.status_code == 404 and gone.json()["error"] == "not_found"
    assert len(await stored(institution, pk)) == 1


async def test_bad_files_give_user_errors_and_nothing_is_written(
    client: httpx.AsyncClient, world: World
) -> None:
    institution = world.institution_ids[HOME]
    pk, resident = await admit(institution, "上传长者乙")
    nurse = staff(institution, StaffRole.HEAD_NURSE)

    def problems(response: httpx.Response) -> set[tuple[str, str]]:
        body = payload(response)
        assert body["report"] is None
        return {(e["field"], e["code"]) for e in body["userErrors"]}

    # A text file declared as a PNG, with a future date and no title: all reported at once.
    everything = await upload(
        client,
        nurse,
        resident,
        b"hello, not an image",
        content_type="image/png",
        reportDate="2099-01-01",
        title="",
    )
    assert problems(everything) == {
        ("file", "BAD_USER_INPUT"),
        ("reportDate", "BAD_USER_INPUT"),
        ("title", "BAD_USER_INPUT"),
    }
    # A PNG declared as a PDF (the bytes decide); an empty file; a report older than the resident.
    assert problems(await upload(client, nurse, resident, PNG)) == {("file", "BAD_USER_INPUT")}
    assert problems(await upload(client, nurse, resident, b"")) == {("file", "BAD_USER_INPUT")}
    assert problems(await upload(client, nurse, resident, minimal_pdf(["x"]), reportDate="1930-01-01")) == {
        ("reportDate", "BAD_USER_INPUT")
    }
    # Just above the cap: the body passes the limit, the file does not (read no further than the cap + 1).
    above = b"%PDF-1.4\n" + b"0" * (CAP + 1 - 9)
    too_large = payload(await upload(client, nurse, resident, above))
    assert [(e["field"], e["message"]) for e in too_large["userErrors"]] == [("file", "文件超过 10 MiB。")]
    # Well above the cap (and its overhead): refused by the body limit before GraphQL runs.
    refused = await upload(client, nurse, resident, above + b"0" * (100 * 1024))
    assert refused.status_code == 413 and codes(refused.json()) == ["BAD_USER_INPUT"]
    assert await stored(institution, pk) == []

    # Every other request keeps the small limit (64 KiB in the tests): JSON to /graphql, forms elsewhere.
    big_json = await client.post(
        "/graphql",
        json={"query": "{ __typename }", "variables": {"pad": "x" * 100_000}},
        headers={"Authorization": f"Bearer {nurse}"},
    )
    assert big_json.status_code == 413
    big_form = await client.post(
        "/oauth/token", files={"f": ("a.pdf", b"%PDF-" + b"0" * 100_000)}, headers=PREFLIGHT
    )
    assert big_form.status_code == 413


async def test_a_multipart_request_needs_the_preflight_header(
    client: httpx.AsyncClient, world: World
) -> None:
    institution = world.institution_ids[HOME]
    pk, resident = await admit(institution, "上传长者丙")
    nurse = staff(institution, StaffRole.NURSE)
    simple = await upload(client, nurse, resident, minimal_pdf(["csrf"]), headers={})
    assert simple.status_code == 400 and codes(simple.json()) == ["BAD_USER_INPUT"]
    blank = await upload(
        client, nurse, resident, minimal_pdf(["csrf"]), headers={"Apollo-Require-Preflight": " "}
    )
    assert blank.status_code == 400
    assert await stored(institution, pk) == []
    apollo = await upload(
        client, nurse, resident, minimal_pdf(["ok"]), headers={"Apollo-Require-Preflight": "true"}
    )
    assert payload(apollo)["userErrors"] == []
    anonymous = await upload(client, None, resident, minimal_pdf(["who"]))
    assert anonymous.status_code == 401
    # A JSON request cannot carry a file: the variable is no upload.
    as_json = await gql(
        client,
        UPLOAD,
        {"input": {"residentId": resident, "reportDate": "2026-01-01", "title": "t", "file": "%PDF-1.4"}},
        token=nurse,
    )
    assert as_json["data"]["uploadCheckupReport"]["userErrors"] == [
        {"field": "file", "message": "此项为必填。", "code": "BAD_USER_INPUT"}
    ]
    assert len(await stored(institution, pk)) == 1


async def test_access_is_refused_by_role_institution_and_token(
    client: httpx.AsyncClient, world: World
) -> None:
    institution, other = world.institution_ids[HOME], world.institution_ids[OTHER]
    pk, resident = await admit(institution, "上传长者丁")
    report = payload(
        await upload(client, staff(institution, StaffRole.DOCTOR), resident, minimal_pdf(["a"]))
    )["report"]
    url = report["downloadUrl"]

    for role in (StaffRole.CAREGIVER, StaffRole.FINANCE):
        token = staff(institution, role)
        assert codes((await upload(client, token, resident, minimal_pdf(["b"]))).json()) == ["FORBIDDEN"]
        assert codes(await gql(client, REPORTS, {"id": resident}, token=token)) == ["FORBIDDEN"]
        refused = await client.get(url, headers={"Authorization": f"Bearer {token}"})
        assert refused.status_code == 403 and refused.json()["error"] == "forbidden"
        assert codes(await gql(client, REMOVE, {"id": report["id"]}, token=token)) == ["FORBIDDEN"]

    stranger = staff(other, StaffRole.INSTITUTION_ADMIN)
    assert codes((await upload(client, stranger, resident, minimal_pdf(["c"]))).json()) == ["NOT_FOUND"]
    assert codes(await gql(client, REMOVE, {"id": report["id"]}, token=stranger)) == ["NOT_FOUND"]
    elsewhere = await client.get(url, headers={"Authorization": f"Bearer {stranger}"})
    assert elsewhere.status_code == 404 and elsewhere.json()["error"] == "not_found"
    # The same report number in the stranger's own institution names no report of theirs.
    mine = encode_id("CheckupReport", other, (await stored(institution, pk))[0]["id"])
    assert (
        await client.get(f"/files/checkup-reports/{mine}", headers={"Authorization": f"Bearer {stranger}"})
    ).status_code == 404
    # A family account sees no reports, even of a resident it follows (until consent allows it).
    family = Principal(
        "account:870002",
        PrincipalKind.FAMILY,
        institution_id=institution,
        followed_resident_ids=frozenset({pk}),
    )
    assert not may(family, Action.CHECKUP_REPORT_VIEW, institution=institution, resident_id=pk)

    anonymous = await client.get(url)
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "unauthenticated"
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert anonymous.headers["cache-control"] == "no-store"
    forged = await client.get(url, headers={"Authorization": "Bearer not.a.token"})
    assert forged.status_code == 401
    doctor = staff(institution, StaffRole.DOCTOR)
    wrong_kind = encode_id("Resident", institution, pk)
    assert (
        await client.get(
            f"/files/checkup-reports/{wrong_kind}", headers={"Authorization": f"Bearer {doctor}"}
        )
    ).status_code == 404
    assert len(await stored(institution, pk)) == 1


async def test_an_erased_residents_reports_are_gone(client: httpx.AsyncClient, world: World) -> None:
    institution = world.institution_ids[OTHER]
    pk, resident = await admit(institution, "上传长者戊")
    nurse = staff(institution, StaffRole.NURSE)
    report = payload(await upload(client, nurse, resident, minimal_pdf(["erase me"])))["report"]

    async def erase() -> None:
        await destroy_data_key(pk)

    await in_tenant(institution, erase)
    listed = await gql(client, REPORTS, {"id": resident}, token=nurse)
    assert "GONE" in codes(listed)
    page = await gql(
        client,
        "{ residents(first: 50) { edges { node { id checkupReports { totalCount } } } } }",
        token=nurse,
    )
    nodes = {edge["node"]["id"]: edge["node"] for edge in page["data"]["residents"]["edges"]}
    assert nodes[resident]["checkupReports"] is None  # the rest of the page still reads
    assert {e["extensions"]["code"] for e in page["errors"]} == {"GONE"}
    assert all(node["checkupReports"] is not None for rid, node in nodes.items() if rid != resident)
    download = await client.get(report["downloadUrl"], headers={"Authorization": f"Bearer {nurse}"})
    assert download.status_code == 410 and download.json()["error"] == "gone"
    again = await upload(client, nurse, resident, minimal_pdf(["new"]))
    assert codes(again.json()) == ["GONE"]
    assert len(await stored(institution, pk)) == 1


async def test_a_streamed_body_over_the_limit_is_a_413_not_a_500(
    client: httpx.AsyncClient, world: World
) -> None:
    """No Content-Length (chunked): the limit is counted while the multipart parser reads."""
    institution = world.institution_ids[HOME]
    pk, resident = await admit(institution, "上传长者己")
    nurse = staff(institution, StaffRole.NURSE)
    boundary = "yiyang-boundary"
    operations = json.dumps(
        {
            "query": UPLOAD,
            "variables": {
                "input": {"residentId": resident, "reportDate": "2026-01-02", "title": "流式", "file": None}
            },
        }
    )
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="operations"\r\n\r\n{operations}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="map"\r\n\r\n'
        '{"0": ["variables.input.file"]}\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="0"; filename="a.pdf"\r\n'
        "Content-Type: application/pdf\r\n\r\n%PDF-1.4\n"
    ).encode()

    async def body() -> AsyncIterator[bytes]:
        yield head
        for _ in range(CAP // (1024 * 1024) + 1):
            yield b"0" * (1024 * 1024)
        yield f"\r\n--{boundary}--\r\n".encode()

    response = await client.post(
        "/graphql",
        content=body(),
        headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Authorization": f"Bearer {nurse}",
            **PREFLIGHT,
        },
    )
    assert response.status_code == 413 and codes(response.json()) == ["BAD_USER_INPUT"]
    assert await stored(institution, pk) == []


def test_the_upload_cap_is_a_setting() -> None:
    environ = {"DATABASE_URL": "postgres://x", "REDIS_URL": "redis://x"}
    assert Settings.from_environ(environ).max_upload_bytes == CAP
    assert Settings.from_environ(environ | {"YIYANG_MAX_UPLOAD_BYTES": "2048"}).max_upload_bytes == 2048
    with pytest.raises(ConfigurationError):
        Settings.from_environ(environ | {"YIYANG_MAX_UPLOAD_BYTES": "0"})


async def test_a_page_of_residents_loads_report_metadata_once(
    client: httpx.AsyncClient, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    import schema.context

    institution = world.institution_ids[OTHER]
    _, resident = await admit(institution, "上传长者庚")
    doctor = staff(institution, StaffRole.DOCTOR)
    assert (
        payload(await upload(client, doctor, resident, minimal_pdf(["page"]), title="页"))["userErrors"] == []
    )
    calls: list[list[int]] = []
    original = schema.context.reports_of

    async def counting(resident_ids: list[int]) -> dict[int, ResidentReports]:
        calls.append(list(resident_ids))
        return await original(resident_ids)

    monkeypatch.setattr(schema.context, "reports_of", counting)
    body = await gql(
        client,
        "{ residents(first: 50) { edges { node { id"
        " checkupReports { totalCount edges { node { title } } } } } } }",
        token=doctor,
    )
    nodes = [edge["node"] for edge in body["data"]["residents"]["edges"]]
    assert len(nodes) > 6 and len(calls) == 1 and len(calls[0]) == len(nodes)
    mine = next(node for node in nodes if node["id"] == resident)
    assert [e["node"]["title"] for e in mine["checkupReports"]["edges"]] == ["页"]

"""Residents' photos through the app: multipart `setResidentPhoto`, `Resident.photo`, `removeResidentPhoto`,
the download edge `GET /files/resident-photos/{id}`; userErrors with nothing written, GONE/410,
NOT_FOUND, FORBIDDEN, 401. In institutions of their own (the world's residents are counted elsewhere)."""

import random
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from care.photos import MAX_PHOTO_BYTES, avatar_png
from compliance.encryption import destroy_data_key
from compliance.policy import Action, may
from compliance.principals import Principal, PrincipalKind, StaffRole
from schema.ids import encode_id
from tenants.registry import NewInstitution, provision_institution
from tests.api.upload_support import admit, in_tenant, post_file, rows_of, staff
from tests.conftest import World, gql, token_for

PNG = avatar_png(random.Random(7))
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01" + bytes(range(256)) * 4 + b"\xff\xd9"

SET = """
mutation($input: SetResidentPhotoInput!) {
  setResidentPhoto(input: $input) {
    photo { id contentType sizeBytes uploadedAt downloadUrl }
    userErrors { field message code }
  }
}"""
PHOTO = "query($id: ID!) { resident(id: $id) { name photo { id contentType sizeBytes downloadUrl } } }"
REMOVE = """
mutation($id: ID!) { removeResidentPhoto(input: {residentId: $id}) { removedId userErrors { field } } }"""


@dataclass(frozen=True)
class Homes:
    home: int
    other: int


@pytest.fixture(scope="module")
async def homes(world: World) -> Homes:
    created = [
        await provision_institution(NewInstitution(name=f"照片测试养老院{n}", region_code="test-east"))
        for n in range(2)
    ]
    return Homes(created[0].id, created[1].id)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def stored(institution_id: int) -> list[dict[str, Any]]:
    return await rows_of(institution_id, "SELECT * FROM resident_photo ORDER BY resident_id")


async def upload(
    client: httpx.AsyncClient,
    token: str | None,
    resident_id: str,
    content: bytes,
    declared: str = "image/png",
) -> httpx.Response:
    variables = {"input": {"residentId": resident_id, "file": None}}
    return await post_file(client, token, SET, variables, ("face.bin", content, declared))


def payload(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body
    return body["data"]["setResidentPhoto"]


def codes(body: dict[str, Any]) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


async def test_set_show_download_replace_and_remove(client: httpx.AsyncClient, homes: Homes) -> None:
    pk, resident = await admit(homes.home, "照片长者甲")
    sales = staff(homes.home, StaffRole.SALES)
    assert (await gql(client, PHOTO, {"id": resident}, token=sales))["data"]["resident"]["photo"] is None

    first = payload(await upload(client, sales, resident, PNG))
    assert first["userErrors"] == []
    photo = first["photo"]
    assert (photo["contentType"], photo["sizeBytes"]) == ("image/png", len(PNG))
    assert photo["downloadUrl"] == f"/files/resident-photos/{photo['id']}"

    # Every staff role sees it: a caregiver must recognise the resident.
    caregiver = staff(homes.home, StaffRole.CAREGIVER)
    shown = await gql(client, PHOTO, {"id": resident}, token=caregiver)
    assert shown["data"]["resident"]["photo"] == {
        key: photo[key] for key in ("id", "contentType", "sizeBytes", "downloadUrl")
    }
    downloaded = await client.get(photo["downloadUrl"], headers=bearer(caregiver))
    assert downloaded.status_code == 200 and downloaded.content == PNG
    assert downloaded.headers["content-type"] == "image/png"
    assert downloaded.headers["content-disposition"].startswith('inline; filename="resident-photo-')
    assert downloaded.headers["x-content-type-options"] == "nosniff"
    assert downloaded.headers["cache-control"] == "no-store"

    # Sealed at rest: the row holds no byte run of the image.
    (row,) = await stored(homes.home)
    assert row["resident_id"] == pk and row["size_bytes"] == len(PNG)
    for plaintext in (b"\x89PNG", b"IHDR", b"IDAT", PNG[30:60], PNG[-40:-12]):
        assert plaintext not in row["content"]

    # A JPEG replaces it (declared generically: the bytes decide); the old one is no more.
    nurse = staff(homes.home, StaffRole.NURSE)
    second = payload(await upload(client, nurse, resident, JPEG, "application/octet-stream"))["photo"]
    assert second["contentType"] == "image/jpeg" and second["id"] != photo["id"]
    assert (await client.get(photo["downloadUrl"], headers=bearer(nurse))).status_code == 404
    replaced = await client.get(second["downloadUrl"], headers=bearer(nurse))
    assert replaced.content == JPEG and replaced.headers["content-type"] == "image/jpeg"
    assert len(await stored(homes.home)) == 1

    butler = staff(homes.home, StaffRole.BUTLER)
    removed = await gql(client, REMOVE, {"id": resident}, token=butler)
    assert removed["data"]["removeResidentPhoto"] == {"removedId": second["id"], "userErrors": []}
    again = await gql(client, REMOVE, {"id": resident}, token=butler)
    assert again["data"]["removeResidentPhoto"] == {"removedId": None, "userErrors": []}
    assert (await client.get(second["downloadUrl"], headers=bearer(nurse))).status_code == 404
    assert (await gql(client, PHOTO, {"id": resident}, token=nurse))["data"]["resident"]["photo"] is None
    assert await stored(homes.home) == []


async def test_bad_files_give_user_errors_and_nothing_is_written(
    client: httpx.AsyncClient, homes: Homes
) -> None:
    pk, resident = await admit(homes.home, "照片长者乙")
    nurse = staff(homes.home, StaffRole.HEAD_NURSE)
    kept = payload(await upload(client, nurse, resident, PNG))["photo"]

    def problems(response: httpx.Response) -> list[tuple[str, str, str]]:
        body = payload(response)
        assert body["photo"] is None
        return [(e["field"], e["code"], e["message"]) for e in body["userErrors"]]

    refused = ("file", "BAD_USER_INPUT")
    # A PDF is no photo; text declared as a PNG; a PNG declared as a JPEG; an empty file.
    pdf = await upload(client, nurse, resident, b"%PDF-1.4\n1 0 obj\n", "application/pdf")
    assert problems(pdf) == [(*refused, "仅接受 JPEG 或 PNG 图片。")]
    assert problems(await upload(client, nurse, resident, b"<svg onload=alert(1)>"))[0][:2] == refused
    mismatch = await upload(client, nurse, resident, PNG, "image/jpeg")
    assert problems(mismatch) == [(*refused, "文件内容与其声明的类型不符。")]
    assert problems(await upload(client, nurse, resident, b""))[0][:2] == refused
    # Over 5 MiB (though within the body limit of 10 MiB): the photo's own cap.
    too_large = await upload(client, nurse, resident, PNG + b"\x00" * (MAX_PHOTO_BYTES + 1 - len(PNG)))
    assert problems(too_large) == [(*refused, "文件超过 5 MiB。")]
    # A JSON request cannot carry a file.
    as_json = await gql(client, SET, {"input": {"residentId": resident, "file": "iVBORw0KGgo="}}, token=nurse)
    assert [e["field"] for e in as_json["data"]["setResidentPhoto"]["userErrors"]] == ["file"]

    (row,) = await stored(homes.home)  # the photo set first is still the one
    assert row["resident_id"] == pk and row["content_type"] == "image/png"
    assert encode_id("ResidentPhoto", homes.home, row["id"]) == kept["id"]
    shown = await gql(client, PHOTO, {"id": resident}, token=nurse)
    assert shown["data"]["resident"]["photo"]["id"] == kept["id"]
    await gql(client, REMOVE, {"id": resident}, token=nurse)


async def test_access_is_refused_by_role_institution_and_token(
    client: httpx.AsyncClient, homes: Homes
) -> None:
    pk, resident = await admit(homes.home, "照片长者丙")
    photo = payload(await upload(client, staff(homes.home, StaffRole.INSTITUTION_ADMIN), resident, PNG))[
        "photo"
    ]
    url = photo["downloadUrl"]

    for role in (StaffRole.CAREGIVER, StaffRole.DOCTOR, StaffRole.FINANCE):
        token = staff(homes.home, role)
        assert codes((await upload(client, token, resident, JPEG, "image/jpeg")).json()) == ["FORBIDDEN"]
        assert codes(await gql(client, REMOVE, {"id": resident}, token=token)) == ["FORBIDDEN"]
    # Family accounts and integrators without a consent see no photo, nor download it.
    family = Principal(
        "account:870102",
        PrincipalKind.FAMILY,
        institution_id=homes.home,
        followed_resident_ids=frozenset({pk}),
    )
    assert not may(family, Action.RESIDENT_PHOTO_VIEW, institution=homes.home, resident_id=pk)
    integrator = token_for(
        Principal(
            "client:photo-probe",
            PrincipalKind.INTEGRATOR,
            institution_id=homes.home,
            scopes=frozenset({"residents:read"}),
            client_id="photo-probe",
        )
    )
    shown = await gql(client, PHOTO, {"id": resident}, token=integrator)
    # Neither the photo nor the name (identity): no consent names the integrator's client.
    assert shown["data"]["resident"]["photo"] is None and codes(shown) == ["FORBIDDEN", "FORBIDDEN"]
    refused = await client.get(url, headers=bearer(integrator))
    assert refused.status_code == 403 and refused.json()["error"] == "forbidden"

    stranger = staff(homes.other, StaffRole.INSTITUTION_ADMIN)
    assert codes((await upload(client, stranger, resident, PNG)).json()) == ["NOT_FOUND"]
    assert codes(await gql(client, REMOVE, {"id": resident}, token=stranger)) == ["NOT_FOUND"]
    assert codes(await gql(client, PHOTO, {"id": resident}, token=stranger)) == ["NOT_FOUND"]
    elsewhere = await client.get(url, headers=bearer(stranger))
    assert elsewhere.status_code == 404 and elsewhere.json()["error"] == "not_found"
    (row,) = [r for r in await stored(homes.home) if r["resident_id"] == pk]
    mine = encode_id("ResidentPhoto", homes.other, row["id"])  # the same number in their institution
    assert (await client.get(f"/files/resident-photos/{mine}", headers=bearer(stranger))).status_code == 404
    wrong_kind = encode_id("CheckupReport", homes.home, row["id"])
    nurse = staff(homes.home, StaffRole.NURSE)
    assert (
        await client.get(f"/files/resident-photos/{wrong_kind}", headers=bearer(nurse))
    ).status_code == 404

    anonymous = await client.get(url)
    assert anonymous.status_code == 401 and anonymous.json()["error"] == "unauthenticated"
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    assert (await client.get(url, headers=bearer("not.a.token"))).status_code == 401
    assert (await upload(client, None, resident, PNG)).status_code == 401
    assert [r["id"] for r in await stored(homes.home) if r["resident_id"] == pk] == [row["id"]]
    assert (await client.get(url, headers=bearer(nurse))).content == PNG


async def test_an_erased_residents_photo_is_gone(client: httpx.AsyncClient, homes: Homes) -> None:
    pk, resident = await admit(homes.other, "照片长者丁")
    kept_pk, kept = await admit(homes.other, "照片长者戊")
    nurse = staff(homes.other, StaffRole.NURSE)
    photo = payload(await upload(client, nurse, resident, PNG))["photo"]
    assert payload(await upload(client, nurse, kept, JPEG, "image/jpeg"))["userErrors"] == []

    async def erase() -> None:
        await destroy_data_key(pk)

    await in_tenant(homes.other, erase)
    shown = await gql(client, PHOTO, {"id": resident}, token=nurse)
    assert shown["data"]["resident"] is not None and shown["data"]["resident"]["photo"] is None
    assert "GONE" in codes(shown)
    page = await gql(
        client, "{ residents(first: 50) { edges { node { id photo { sizeBytes } } } } }", token=nurse
    )
    nodes = {edge["node"]["id"]: edge["node"] for edge in page["data"]["residents"]["edges"]}
    assert nodes[resident]["photo"] is None and nodes[kept]["photo"] == {"sizeBytes": len(JPEG)}
    assert {e["extensions"]["code"] for e in page["errors"]} == {"GONE"}
    download = await client.get(photo["downloadUrl"], headers=bearer(nurse))
    assert download.status_code == 410 and download.json()["error"] == "gone"
    assert codes((await upload(client, nurse, resident, JPEG, "image/jpeg")).json()) == ["GONE"]
    # Its photo may still be removed (what is left is a ciphertext nobody can open).
    removed = await gql(client, REMOVE, {"id": resident}, token=nurse)
    assert removed["data"]["removeResidentPhoto"]["removedId"] == photo["id"]
    assert [r["resident_id"] for r in await stored(homes.other)] == [kept_pk]


async def test_a_page_of_residents_reads_their_photos_in_one_query(
    client: httpx.AsyncClient, world: World
) -> None:
    from tests.api.test_resident_page_queries import counted_queries

    institution = (
        await provision_institution(NewInstitution(name="照片分页测试养老院", region_code="test-east"))
    ).id
    nurse = staff(institution, StaffRole.NURSE)
    residents = [await admit(institution, f"照片分页长者{n}") for n in range(12)]
    for _, resident in residents[::2]:
        assert payload(await upload(client, nurse, resident, PNG))["userErrors"] == []
    page = "{ residents(first: 50) { edges { node { id name photo { id sizeBytes downloadUrl } } } } }"
    with counted_queries() as statements:
        body = await gql(client, page, token=nurse)
    assert "errors" not in body
    photos = [edge["node"]["photo"] for edge in body["data"]["residents"]["edges"]]
    assert [photo is not None for photo in photos] == [n % 2 == 0 for n in range(12)]
    assert all(photo is None or photo["sizeBytes"] == len(PNG) for photo in photos)
    assert sum("FROM resident_photo" in statement for statement in statements) == 1
    assert not any("content" in statement.replace("content_type", "") for statement in statements)

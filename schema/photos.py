"""The resident's photo in GraphQL. `Resident.photo` (a field of ResidentType, schema/residents.py) gives
the photo's metadata through `Loaders.resident_photo`, one query for a whole page of residents; the image
is never part of a GraphQL response: clients GET it at `downloadUrl` (api/files.py). `setResidentPhoto`
takes the image as an `Upload` (a multipart request) and replaces the current photo; `removeResidentPhoto`
deletes it. Policy: `resident_photo.view` to see it, `resident_photo.set` to change it (care/photos.py
does the rest)."""

from datetime import datetime

import strawberry
from strawberry.file_uploads import Upload

from care import photos as care
from compliance.consent import Category
from compliance.policy import Action
from schema.context import YiyangInfo
from schema.ids import encode_id
from schema.resident_access import (
    ResidentNode,
    recorder,
    require_resident_access,
    resident_to_change,
)
from schema.uploads import DOWNLOAD_URL, resident_upload
from schema.user_errors import USER_ERROR_TYPES, UserError, user_errors

DOWNLOAD_PATH = "/files/resident-photos/"


@strawberry.type(name="ResidentPhoto")
class ResidentPhotoType:
    id: strawberry.ID
    content_type: str = strawberry.field(description="image/jpeg or image/png.")
    size_bytes: int
    uploaded_at: datetime
    download_url: str = strawberry.field(description=DOWNLOAD_URL)

    @classmethod
    def of(cls, row: care.PhotoMeta, institution_id: int) -> "ResidentPhotoType":
        photo_id = encode_id("ResidentPhoto", institution_id, row.id)
        return cls(
            id=strawberry.ID(photo_id),
            content_type=row.content_type.value,
            size_bytes=row.size_bytes,
            uploaded_at=row.uploaded_at,
            download_url=DOWNLOAD_PATH + photo_id,
        )


async def resident_photo(root: ResidentNode, info: YiyangInfo) -> ResidentPhotoType | None:
    """The resident's photo (metadata; the image via downloadUrl); null when it has none, and null with an
    error of code GONE when the resident's personal data was erased."""
    await require_resident_access(
        info, Action.RESIDENT_PHOTO_VIEW, root.institution_id, root.pk, (Category.PHOTOS,)
    )
    row = await info.context.loaders.resident_photo.load(root.pk)
    return None if row is None else ResidentPhotoType.of(row, root.institution_id)


@strawberry.input
class SetResidentPhotoInput:
    resident_id: strawberry.ID
    file: Upload = strawberry.field(
        description="The image, sent as the GraphQL multipart request spec says: JPEG or PNG (judged by its "
        "content), at most 5 MiB. It replaces the current photo, which is not kept."
    )


@strawberry.input
class RemoveResidentPhotoInput:
    resident_id: strawberry.ID


@strawberry.type
class SetResidentPhotoPayload:
    photo: ResidentPhotoType | None
    user_errors: list[UserError]


@strawberry.type
class RemoveResidentPhotoPayload:
    removed_id: strawberry.ID | None = strawberry.field(description="Null when the resident had no photo.")
    user_errors: list[UserError]


@strawberry.type
class ResidentPhotoMutations:
    @strawberry.mutation(description="Remove a resident's photo (intake roles, nurses, butlers).")
    async def remove_resident_photo(
        self, info: YiyangInfo, input: RemoveResidentPhotoInput
    ) -> RemoveResidentPhotoPayload:
        institution_id, pk = await resident_to_change(info, input.resident_id, Action.RESIDENT_PHOTO_SET)
        removed = await care.remove_photo(pk)
        removed_id = (
            None if removed is None else strawberry.ID(encode_id("ResidentPhoto", institution_id, removed))
        )
        return RemoveResidentPhotoPayload(removed_id=removed_id, user_errors=[])

    @strawberry.mutation(
        description="Set (or replace) a resident's photo (multipart request; intake roles, nurses, butlers)."
    )
    async def set_resident_photo(
        self, info: YiyangInfo, input: SetResidentPhotoInput
    ) -> SetResidentPhotoPayload:
        cap = min(info.context.max_upload_bytes, care.MAX_PHOTO_BYTES)
        upload = await resident_upload(info, input.resident_id, Action.RESIDENT_PHOTO_SET, input.file, cap)
        try:
            row = await care.set_photo(
                upload.resident_pk, upload.file, uploaded_by=recorder(info), max_bytes=cap
            )
        except USER_ERROR_TYPES as error:
            return SetResidentPhotoPayload(photo=None, user_errors=user_errors(info, error))
        return SetResidentPhotoPayload(photo=ResidentPhotoType.of(row, upload.institution_id), user_errors=[])

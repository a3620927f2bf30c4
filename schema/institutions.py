"""Institutions, regions and chains: types, queries and the provisioning mutation."""

from datetime import datetime

import strawberry
from tortoise.expressions import Q

from compliance.policy import Action, Place, require, visible_institutions
from schema.context import YiyangInfo
from schema.ids import decode_id, encode_id
from schema.pagination import Connection, connection, page_request
from schema.user_errors import USER_ERROR_TYPES, UserError, user_errors
from tenants.errors import NotFound
from tenants.models import Institution, InstitutionStatus
from tenants.registry import NewInstitution, provision_institution

InstitutionStatusEnum = strawberry.enum(InstitutionStatus, name="InstitutionStatus")


@strawberry.type(name="Region")
class RegionType:
    code: str
    name: str


@strawberry.type(name="Chain")
class ChainType:
    id: strawberry.ID
    name: str


@strawberry.type(name="Institution")
class InstitutionType:
    id: strawberry.ID
    name: str
    region: RegionType
    chain: ChainType | None
    status: InstitutionStatusEnum
    time_zone: str
    currency: str
    bed_capacity: int
    created_at: datetime

    @classmethod
    def from_model(cls, row: Institution) -> "InstitutionType":
        """`row` must come with region and chain selected."""
        chain = row.chain
        return cls(
            id=strawberry.ID(encode_id("Institution", row.id)),
            name=row.name,
            region=RegionType(code=row.region.code, name=row.region.name),
            chain=ChainType(id=strawberry.ID(encode_id("Chain", chain.id)), name=chain.name)
            if chain
            else None,
            status=row.status,
            time_zone=row.time_zone,
            currency=row.currency,
            bed_capacity=row.bed_capacity,
            created_at=row.created_at,
        )


def place_of(row: Institution) -> Place:
    return Place(row.id, chain_id=row.chain_id, region_id=row.region_id)


def institutions_with_relations():
    return Institution.all().select_related("region", "chain")


@strawberry.input
class ProvisionInstitutionInput:
    name: str
    region_code: str
    chain_name: str | None = None
    time_zone: str = "Asia/Shanghai"
    currency: str = "CNY"
    bed_capacity: int = 0


@strawberry.type
class ProvisionInstitutionPayload:
    institution: InstitutionType | None
    user_errors: list[UserError]


@strawberry.type
class InstitutionQueries:
    @strawberry.field(description="Institutions the caller may see, in id order.")
    async def institutions(
        self, info: YiyangInfo, first: int | None = None, after: str | None = None
    ) -> Connection[InstitutionType]:
        visible = visible_institutions(info.context.principal)
        page = page_request(first, after)
        query = institutions_with_relations()
        if not visible.every:
            query = query.filter(
                Q(id__in=list(visible.institution_ids))
                | Q(chain_id=visible.chain_id or 0)
                | Q(region_id__in=list(visible.region_ids))
            )
        rows = (
            await query.filter(**({"id__gt": page.after_key} if page.after_key else {}))
            .order_by("id")
            .limit(page.size + 1)
        )
        return connection(
            rows,
            page,
            key=lambda row: row.id,
            node=InstitutionType.from_model,
            count_total=query.count,
        )

    @strawberry.field
    async def institution(self, info: YiyangInfo, id: strawberry.ID) -> InstitutionType:
        (institution_id,) = decode_id("Institution", id, 1)
        row = await institutions_with_relations().get_or_none(id=institution_id)
        if row is None:
            raise NotFound("Not found.")
        require(info.context.principal, Action.INSTITUTION_VIEW, institution=place_of(row))
        return InstitutionType.from_model(row)


@strawberry.type
class InstitutionMutations:
    @strawberry.mutation(description="Register an institution and create its schema (platform operators).")
    async def provision_institution(
        self, info: YiyangInfo, input: ProvisionInstitutionInput
    ) -> ProvisionInstitutionPayload:
        require(info.context.principal, Action.INSTITUTION_PROVISION)
        try:
            created = await provision_institution(
                NewInstitution(
                    name=input.name,
                    region_code=input.region_code,
                    chain_name=input.chain_name,
                    time_zone=input.time_zone,
                    currency=input.currency,
                    bed_capacity=input.bed_capacity,
                )
            )
        except USER_ERROR_TYPES as error:
            return ProvisionInstitutionPayload(institution=None, user_errors=user_errors(info, error))
        row = await institutions_with_relations().get(id=created.id)
        return ProvisionInstitutionPayload(institution=InstitutionType.from_model(row), user_errors=[])

"""What the tests of uploads through the app share (check-up reports, residents' photos): a staff token,
work in an institution's tenant, an admitted resident, the rows of a table, a multipart request."""

import json
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any, TypeVar

import httpx

from care.models import CareLevel, Gender
from care.residents import Admission, admit_resident
from compliance.principals import Principal, PrincipalKind, StaffRole
from schema.ids import encode_id
from tenants.db import default_connection
from tenants.models import Institution
from tenants.registry import tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.conftest import token_for

T = TypeVar("T")
PREFLIGHT = {"GraphQL-Require-Preflight": "1"}
BIRTH_DATE = date(1938, 2, 3)


def staff(institution_id: int, *roles: StaffRole, subject: str = "account:870001") -> str:
    return token_for(
        Principal(subject, PrincipalKind.STAFF, institution_id=institution_id, roles=frozenset(roles))
    )


async def in_tenant(institution_id: int, work: Callable[[], Awaitable[T]]) -> T:
    return await run_in_tenant(tenant_ref(await Institution.get(id=institution_id)), work)


async def admit(institution_id: int, name: str) -> tuple[int, str]:
    """A new resident of the institution: (primary key, GraphQL id)."""

    async def work() -> int:
        admission = Admission(name, Gender.MALE, BIRTH_DATE, CareLevel.ASSISTED, date(2025, 9, 1))
        return (await admit_resident(admission)).id

    pk = await in_tenant(institution_id, work)
    return pk, encode_id("Resident", institution_id, pk)


async def rows_of(institution_id: int, sql: str, *parameters: object) -> list[dict[str, Any]]:
    async def work() -> list[dict[str, Any]]:
        return await default_connection().execute_query_dict(sql, list(parameters))

    return await in_tenant(institution_id, work)


async def post_file(
    client: httpx.AsyncClient,
    token: str | None,
    query: str,
    variables: dict[str, Any],
    file: tuple[str, bytes, str],
    *,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """A multipart request as the GraphQL multipart request spec lays it out: operations, map (the file
    goes to `variables.input.file`), then the file (name, content, declared type)."""
    sent = dict(PREFLIGHT if headers is None else headers)
    if token:
        sent["Authorization"] = f"Bearer {token}"
    return await client.post(
        "/graphql",
        data={
            "operations": json.dumps({"query": query, "variables": variables}),
            "map": json.dumps({"0": ["variables.input.file"]}),
        },
        files={"0": file},
        headers=sent,
    )

"""The BOLA matrix: every id-taking query and mutation argument (found by introspection, see
test_bola.py) probed with an id of one institution by every kind of principal that has no business
there. Each is refused (NOT_FOUND or FORBIDDEN), with no data and no change."""

from dataclasses import dataclass

import httpx
import pytest

from compliance.identity.account_models import AccountKind
from compliance.identity.accounts import NewAccount, add_family_link, create_account
from compliance.principals import ChainRole, Principal, PrincipalKind, StaffRole
from schema.ids import encode_id
from tests.api.test_bola import PROBES, foreign_id
from tests.conftest import World, gql, token_for

REFUSED = {"NOT_FOUND", "FORBIDDEN"}
RESIDENT_LEVEL = {"Resident"}  # id types whose objects are a resident's data


@dataclass(frozen=True)
class Attacker:
    token: str
    institution_header: str | None = None
    # Whose institution-level objects this principal may legitimately see (e.g. a supervisor of the
    # target's region sees the institution itself, never a resident).
    sees_institution: bool = False


async def attackers(world: World) -> dict[str, Attacker]:
    target, other_chain, same_chain = (
        world.institution_ids[0],
        world.institution_ids[1],
        world.institution_ids[2],
    )
    unrelated = await create_account(
        NewAccount(AccountKind.FAMILY, "bola-unrelated@example.com", "无关家属", "lanterns-over-the-river")
    )
    await add_family_link(unrelated, other_chain, family_member_id=1, resident_id=1)
    neighbour = await create_account(
        NewAccount(AccountKind.FAMILY, "bola-neighbour@example.com", "邻床家属", "lanterns-over-the-river")
    )
    await add_family_link(neighbour, target, family_member_id=2, resident_id=2)  # not resident 1
    director = Principal(
        "account:880001",
        PrincipalKind.STAFF,
        chain_id=await _chain_of(other_chain),
        chain_roles=frozenset(ChainRole),
    )
    return {
        "staff of another institution (same chain)": Attacker(
            token_for(
                Principal(
                    "account:880002",
                    PrincipalKind.STAFF,
                    institution_id=same_chain,
                    roles=frozenset(StaffRole),
                )
            )
        ),
        "director of another chain": Attacker(token_for(director)),
        "director of another chain, acting in his chain": Attacker(
            token_for(director), institution_header=encode_id("Institution", other_chain)
        ),
        "unrelated family": Attacker(token_for(Principal(f"account:{unrelated.id}", PrincipalKind.FAMILY))),
        "family of another resident": Attacker(
            token_for(Principal(f"account:{neighbour.id}", PrincipalKind.FAMILY)), sees_institution=True
        ),
        "integrator of another institution": Attacker(
            token_for(
                Principal(
                    "client:bola-other",
                    PrincipalKind.INTEGRATOR,
                    institution_id=same_chain,
                    scopes=frozenset({"residents:read", "residents:write", "vitals:write"}),
                    client_id="bola-other",
                )
            )
        ),
        "supervisor of another region": Attacker(
            token_for(
                Principal(
                    "account:880003",
                    PrincipalKind.SUPERVISOR,
                    region_ids=frozenset({await _region_of(other_chain)}),
                )
            )
        ),
        "supervisor of the region": Attacker(
            token_for(
                Principal(
                    "account:880004",
                    PrincipalKind.SUPERVISOR,
                    region_ids=frozenset({await _region_of(target)}),
                )
            ),
            sees_institution=True,
        ),
    }


async def _chain_of(institution_id: int) -> int:
    from tenants.models import Institution

    chain = (await Institution.get(id=institution_id)).chain_id
    assert chain is not None
    return chain


async def _region_of(institution_id: int) -> int:
    from tenants.models import Institution

    return (await Institution.get(id=institution_id)).region_id


@pytest.fixture(scope="module")
async def matrix_attackers(world: World) -> dict[str, Attacker]:
    return await attackers(world)


async def snapshot(client: httpx.AsyncClient, world: World) -> dict:
    return await gql(
        client,
        "{ residents(first: 50) { edges { node { id name status familyMembers { totalCount } } } } }",
        token=world.token(world.institution_ids[0]),
    )


async def test_every_principal_kind_is_refused_every_foreign_id(
    client: httpx.AsyncClient, world: World, matrix_attackers: dict[str, Attacker]
) -> None:
    target = world.institution_ids[0]
    before = await snapshot(client, world)
    failures = []
    for (_, field, argument), (type_name, operation) in PROBES.items():
        for name, attacker in matrix_attackers.items():
            if attacker.sees_institution and type_name not in RESIDENT_LEVEL and type_name == "Institution":
                continue  # allowed to see the institution itself: not a BOLA
            headers = {"Authorization": f"Bearer {attacker.token}"}
            if attacker.institution_header:
                headers["Yiyang-Institution"] = attacker.institution_header
            response = await client.post(
                "/graphql",
                json={"query": operation, "variables": {"id": foreign_id(type_name, target)}},
                headers=headers,
            )
            body = response.json()
            codes = {error["extensions"]["code"] for error in body.get("errors", [])}
            if not codes or not codes <= REFUSED or body.get("data") not in (None, {}):
                failures.append((field, argument, name, response.status_code, body))
    assert not failures, failures
    assert await snapshot(client, world) == before  # nothing changed

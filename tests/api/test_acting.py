"""Which institution a request acts in: from the token, or named in the Yiyang-Institution header and
checked against the token's chain or the family account's links."""

import httpx

from compliance.identity.account_models import AccountKind
from compliance.identity.accounts import NewAccount, add_family_link, create_account, remove_family_link
from compliance.principals import ChainRole, Principal, PrincipalKind
from schema.ids import encode_id
from tenants.models import Institution
from tests.conftest import World, token_for

# A family account reads a resident's name only under a consent naming it (compliance/consent.py;
# tests/api/test_consents_graphql.py): its assertions go by ids.
NAMES = "{ residents(first: 50) { totalCount edges { node { id name } } } }"


async def post(client: httpx.AsyncClient, token: str, institution: int | str | None = None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if institution is not None:
        headers["Yiyang-Institution"] = (
            encode_id("Institution", institution) if isinstance(institution, int) else institution
        )
    return await client.post("/graphql", json={"query": NAMES}, headers=headers)


def codes(response: httpx.Response) -> list[str]:
    return [error["extensions"]["code"] for error in response.json().get("errors", [])]


async def chain_of(institution_id: int) -> int:
    chain = (await Institution.get(id=institution_id)).chain_id
    assert chain is not None
    return chain


async def test_a_chain_bound_integrator_names_an_institution_of_its_chain(
    client: httpx.AsyncClient, world: World
) -> None:
    first, other_chain, same_chain = world.institution_ids[:3]
    reader = token_for(
        Principal(
            "client:acting-reader",
            PrincipalKind.INTEGRATOR,
            chain_id=await chain_of(first),
            scopes=frozenset({"residents:read"}),
            client_id="acting-reader",
        )
    )
    for institution in (first, same_chain):
        # It acts there: the residents are listed; their names only under a consent naming its client
        # (none was recorded here: tests/api/test_consents_graphql.py has the consented case).
        answered = (await post(client, reader, institution)).json()
        edges = answered["data"]["residents"]["edges"]
        assert len(edges) == len(world.resident_names[institution])
        assert {(e["extensions"]["code"], e["extensions"]["reason"]) for e in answered["errors"]} == {
            ("FORBIDDEN", "CONSENT_REQUIRED")
        }
        assert len(answered["errors"]) == len(edges)
    unnamed = await post(client, reader)
    assert codes(unnamed) == ["BAD_USER_INPUT"]
    assert "Yiyang-Institution" in unnamed.json()["errors"][0]["message"]
    foreign = await post(client, reader, other_chain)
    assert foreign.status_code == 404 and codes(foreign) == ["NOT_FOUND"]
    assert (await post(client, reader, 987_654)).status_code == 404
    malformed = await post(client, reader, "not-an-id")
    assert malformed.status_code == 400 and codes(malformed) == ["BAD_USER_INPUT"]


async def test_a_chain_director_acts_in_the_chain_without_staff_roles(
    client: httpx.AsyncClient, world: World
) -> None:
    first, other_chain = world.institution_ids[:2]
    director = token_for(
        Principal(
            "account:870001",
            PrincipalKind.STAFF,
            chain_id=await chain_of(first),
            chain_roles=frozenset({ChainRole.CHAIN_DIRECTOR}),
        )
    )
    assert codes(await post(client, director, first)) == ["FORBIDDEN"]  # a chain role opens no resident
    assert (await post(client, director, other_chain)).status_code == 404


async def test_staff_cannot_name_another_institution(client: httpx.AsyncClient, world: World) -> None:
    first, _, same_chain = world.institution_ids[:3]
    assert (await post(client, world.token(first), first)).json()["data"]["residents"]["totalCount"] == 6
    refused = await post(client, world.token(first), same_chain)
    assert refused.status_code == 404 and codes(refused) == ["NOT_FOUND"]


async def test_supervisors_and_operators_act_in_no_institution(
    client: httpx.AsyncClient, world: World
) -> None:
    for kind in (PrincipalKind.SUPERVISOR, PrincipalKind.OPERATOR):
        token = token_for(Principal("account:870002", kind))
        refused = await post(client, token, world.institution_ids[0])
        assert refused.status_code == 403 and codes(refused) == ["FORBIDDEN"]
        assert codes(await post(client, token)) == ["FORBIDDEN"]


async def test_family_sees_only_followed_residents_and_a_removed_link_counts_at_once(
    client: httpx.AsyncClient, world: World
) -> None:
    first, second = world.institution_ids[3:5]
    account = await create_account(
        NewAccount(AccountKind.FAMILY, "acting-daughter@example.com", "女儿", "lanterns-over-the-river")
    )
    token = token_for(Principal(f"account:{account.id}", PrincipalKind.FAMILY))
    assert codes(await post(client, token)) == ["BAD_USER_INPUT"]  # follows nobody yet: acts nowhere
    await add_family_link(account, first, family_member_id=1, resident_id=2)
    answered = (await post(client, token)).json()["data"]["residents"]  # one institution: implied
    assert [e["node"]["id"] for e in answered["edges"]] == [encode_id("Resident", first, 2)]
    assert answered["totalCount"] == 1

    await add_family_link(account, second, family_member_id=3, resident_id=4)
    assert codes(await post(client, token)) == ["BAD_USER_INPUT"]  # two: the app names one
    there = (await post(client, token, second)).json()["data"]["residents"]
    assert [e["node"]["id"] for e in there["edges"]] == [encode_id("Resident", second, 4)]
    assert (await post(client, token, world.institution_ids[6])).status_code == 404

    await remove_family_link(account, second, 4)
    assert (await post(client, token, second)).status_code == 404  # the very next request

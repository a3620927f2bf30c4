from tests.conftest import World, gql


async def test_residents_of_own_institution(client, world: World) -> None:
    institution = world.institution_ids[3]
    body = await gql(
        client,
        "{ residents(first: 3) { totalCount edges { node { id name institution { name }"
        " familyMembers { totalCount } } } pageInfo { hasNextPage endCursor } } }",
        token=world.token(institution),
    )
    assert "errors" not in body, body
    names = [edge["node"]["name"] for edge in body["data"]["residents"]["edges"]]
    assert names == world.resident_names[institution][:3]
    assert body["data"]["residents"]["pageInfo"]["hasNextPage"] is True

"""Every argument that takes an id, given an id of another institution: NOT_FOUND, and nothing changes."""

import httpx
from graphql import GraphQLNonNull, GraphQLObjectType, get_named_type

from schema.ids import encode_id
from schema.root import build_schema
from tests.conftest import World, gql

# Every (operation type, field, argument path) that carries an id, with the operation to probe it.
PROBES: dict[tuple[str, str, str], tuple[str, str]] = {
    ("query", "resident", "id"): ("Resident", "query($id: ID!) { resident(id: $id) { name } }"),
    ("query", "institution", "id"): ("Institution", "query($id: ID!) { institution(id: $id) { name } }"),
    ("mutation", "updateResident", "input.id"): (
        "Resident",
        'mutation($id: ID!) { updateResident(input: {id: $id, name: "篡改"}) { resident { name } } }',
    ),
    ("mutation", "dischargeResident", "input.id"): (
        "Resident",
        'mutation($id: ID!) { dischargeResident(input: {id: $id, dischargedOn: "2025-01-01", reason: OTHER})'
        " { resident { name } } }",
    ),
    ("mutation", "addFamilyMember", "input.residentId"): (
        "Resident",
        'mutation($id: ID!) { addFamilyMember(input: {residentId: $id, name: "陌生人", relationship: FRIEND,'
        ' phone: "13800000000"}) { familyMember { name } } }',
    ),
}


def id_arguments() -> set[tuple[str, str, str]]:
    """Introspect the schema for every argument (or input field) of type ID."""
    schema = build_schema()._schema
    found: set[tuple[str, str, str]] = set()
    for kind, root in (("query", schema.query_type), ("mutation", schema.mutation_type)):
        assert isinstance(root, GraphQLObjectType)
        for field_name, field in root.fields.items():
            for arg_name, arg in field.args.items():
                named = get_named_type(arg.type)
                if named.name == "ID":
                    found.add((kind, field_name, arg_name))
                elif hasattr(named, "fields"):
                    for input_name, input_field in named.fields.items():
                        inner = (
                            input_field.type.of_type
                            if isinstance(input_field.type, GraphQLNonNull)
                            else input_field.type
                        )
                        if get_named_type(inner).name == "ID":
                            found.add((kind, field_name, f"{arg_name}.{input_name}"))
    return found


def test_every_id_argument_has_a_probe() -> None:
    missing = id_arguments() - PROBES.keys()
    assert not missing, f"id-taking fields without a BOLA probe: {sorted(missing)}"


async def test_ids_of_another_institution_are_not_found(client: httpx.AsyncClient, world: World) -> None:
    mine, theirs = world.institution_ids[0], world.institution_ids[1]
    before = await gql(
        client, "{ residents(first: 50) { edges { node { id name status } } } }", token=world.token(theirs)
    )
    for (_, field, _), (type_name, operation) in PROBES.items():
        foreign_id = (
            encode_id(type_name, theirs) if type_name == "Institution" else encode_id(type_name, theirs, 1)
        )
        body = await gql(client, operation, {"id": foreign_id}, token=world.token(mine))
        codes = [error["extensions"]["code"] for error in body.get("errors", [])]
        assert codes == ["NOT_FOUND"], (field, body)
        assert body.get("data") is None, (field, body)
    after = await gql(
        client, "{ residents(first: 50) { edges { node { id name status } } } }", token=world.token(theirs)
    )
    assert after == before
    family = await gql(
        client,
        "query($id: ID!) { resident(id: $id) { familyMembers { totalCount } } }",
        {"id": encode_id("Resident", theirs, 1)},
        token=world.token(theirs),
    )
    assert family["data"]["resident"]["familyMembers"]["totalCount"] == 0


async def test_own_resident_with_same_primary_key_is_found(client: httpx.AsyncClient, world: World) -> None:
    mine = world.institution_ids[0]
    body = await gql(
        client,
        "query($id: ID!) { resident(id: $id) { name } }",
        {"id": encode_id("Resident", mine, 1)},
        token=world.token(mine),
    )
    assert body["data"]["resident"]["name"] == world.resident_names[mine][0]

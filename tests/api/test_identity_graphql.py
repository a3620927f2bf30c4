"""The GraphQL operations of identity end to end: `me` for every kind of principal, staff management and
its guards, integrator clients (created, used at the token endpoint, revoked), password and TOTP."""

import base64
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pyotp
import pytest
from redis.asyncio import Redis

from api.settings import Settings
from compliance.identity.account_models import AccountKind, StaffMembership, UserAccount
from compliance.identity.accounts import (
    LoginFailed,
    NewAccount,
    add_chain_membership,
    add_family_link,
    add_staff_membership,
    add_supervisor_region,
    authenticate,
    create_account,
)
from compliance.identity.client_models import OAuthClient
from compliance.identity.clients import create_integrator_client
from compliance.identity.login_throttle import LoginThrottle, ThrottlePolicy
from compliance.identity.passwords import verify_password
from compliance.principals import ChainRole, Principal, PrincipalKind, StaffRole
from schema.ids import encode_id
from schema.root import build_schema
from tenants.models import Institution, Region
from tenants.registry import NewInstitution, get_or_create_chain, provision_institution
from tests.conftest import World, token_for

PASSWORD = "paper-cranes-at-dawn"
REGION = "test-east"

ME = """{ me {
  kind roles chainRoles scopes
  account { id login displayName kind status }
  client { id clientId name scopes }
  actingIn { id name }
  memberships { institution { id name } roles }
  chainMemberships { chain { id name } roles }
  supervisedRegions { code name }
  followedResidents { institutionId residentId }
  actingOptions { id name }
  secondFactor { enrolled required }
} }"""
STAFF = """query($after: String) { staffMembers(first: 1, after: $after) {
  totalCount edges { node { id displayName login roles status } } pageInfo { hasNextPage endCursor }
} }"""
ALL_STAFF = "{ staffMembers(first: 100) { totalCount edges { node { id displayName login roles status } } } }"
ADD = """mutation($input: AddStaffMemberInput!) { addStaffMember(input: $input) {
  staffMember { id displayName login roles status } userErrors { field message code } } }"""
SET_ROLES = """mutation($input: SetStaffRolesInput!) { setStaffRoles(input: $input) {
  staffMember { id roles } userErrors { field message code } } }"""
REMOVE = """mutation($input: RemoveStaffMemberInput!) { removeStaffMember(input: $input) {
  removedStaffMemberId userErrors { field message code } } }"""
CREATE_CLIENT = """mutation($input: CreateIntegratorClientInput!) { createIntegratorClient(input: $input) {
  client { id clientId name scopes revokedAt institution { id } chain { id name } }
  clientSecret userErrors { field message code } } }"""
REVOKE_CLIENT = """mutation($id: ID!) { revokeIntegratorClient(input: {id: $id}) {
  client { id revokedAt } userErrors { field code } } }"""
CLIENTS = """{ integratorClients(first: 100) {
  totalCount edges { node { id clientId name scopes revokedAt institution { id } chain { name } } } } }"""
CHANGE_PASSWORD = """mutation($input: ChangePasswordInput!) { changePassword(input: $input) {
  account { login } userErrors { field message code } } }"""
BEGIN_TOTP = "mutation { beginTotpEnrolment { secret otpauthUri userErrors { field code } } }"
CONFIRM_TOTP = """mutation($code: String!) { confirmTotpEnrolment(input: {code: $code}) {
  secondFactor { enrolled required } userErrors { field message code } } }"""
DISABLE_TOTP = """mutation($code: String!) { disableTotp(input: {code: $code}) {
  secondFactor { enrolled required } userErrors { field message code } } }"""
REQUIRE_TOTP = """mutation($required: Boolean!) { setInstitutionRequiresTotp(input: {required: $required}) {
  institution { id } requiresTotp userErrors { field code } } }"""


# Helpers


async def call(
    client: httpx.AsyncClient,
    query: str,
    variables: dict | None = None,
    *,
    token: str,
    institution: int | None = None,
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if institution is not None:
        headers["Yiyang-Institution"] = encode_id("Institution", institution)
    return await client.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)


async def gql(
    client: httpx.AsyncClient,
    query: str,
    variables: dict | None = None,
    *,
    token: str,
    institution: int | None = None,
) -> dict:
    return (await call(client, query, variables, token=token, institution=institution)).json()


def codes(body: dict) -> list[str]:
    return [error["extensions"]["code"] for error in body.get("errors", [])]


def new_login() -> str:
    return f"id-{uuid.uuid4().hex[:12]}@example.com"


async def new_account(kind: AccountKind = AccountKind.STAFF, name: str = "周护士") -> UserAccount:
    return await create_account(NewAccount(kind, new_login(), name, PASSWORD))


def staff_principal(account: UserAccount, institution_id: int, *roles: StaffRole) -> Principal:
    return Principal(
        subject=f"account:{account.id}",
        kind=PrincipalKind.STAFF,
        institution_id=institution_id,
        roles=frozenset(roles),
    )


async def staff_in(institution_id: int, *roles: StaffRole, name: str = "周护士") -> tuple[UserAccount, str]:
    """A real staff account with `roles` in the institution, and a token acting there."""
    account = await new_account(name=name)
    for role in roles:
        await add_staff_membership(account, institution_id, role)
    return account, token_for(staff_principal(account, institution_id, *roles))


def institution_id_of(institution_id: int) -> str:
    return encode_id("Institution", institution_id)


def staff_member_id(institution_id: int, account: UserAccount) -> str:
    return encode_id("StaffMember", institution_id, account.id)


async def roles_in(institution_id: int, account: UserAccount) -> set[str]:
    return set(
        await StaffMembership.filter(institution_id=institution_id, account_id=account.id).values_list(
            "role", flat=True
        )
    )


def basic(client_id: str, secret: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {encoded}", "Content-Type": "application/x-www-form-urlencoded"}


async def client_credentials(http: httpx.AsyncClient, client_id: str, secret: str) -> httpx.Response:
    return await http.post(
        "/oauth/token", content="grant_type=client_credentials", headers=basic(client_id, secret)
    )


@dataclass(frozen=True)
class Chains:
    """Two chains of our own: `mine` with three institutions, `other` with one."""

    mine: int
    mine_name: str
    institutions: list[int]
    other: int
    other_institution: int


async def provision(chain_name: str) -> int:
    created = await provision_institution(
        NewInstitution(name=f"身份测试院{uuid.uuid4().hex[:6]}", region_code=REGION, chain_name=chain_name)
    )
    return created.id


@pytest.fixture(scope="module")
async def chains(world: World) -> Chains:
    suffix = uuid.uuid4().hex[:6]
    mine = await get_or_create_chain(f"身份测试连锁{suffix}")
    other = await get_or_create_chain(f"身份另一连锁{suffix}")
    institutions = [await provision(mine.name) for _ in range(3)]
    return Chains(mine.id, mine.name, institutions, other.id, await provision(other.name))


@pytest.fixture
async def institution(chains: Chains) -> int:
    """A fresh institution of `chains.mine`, without staff."""
    return await provision(chains.mine_name)


@pytest.fixture
async def throttle(settings: Settings) -> AsyncIterator[LoginThrottle]:
    redis = Redis.from_url(settings.redis_url)
    try:
        yield LoginThrottle(redis, prefix=f"test:{uuid.uuid4().hex}")
    finally:
        await redis.aclose()


# me


async def test_me_for_staff_shows_memberships_and_acting_options(
    client: httpx.AsyncClient, chains: Chains
) -> None:
    home, second, _ = chains.institutions
    account = await new_account(name="吴院长")
    await add_staff_membership(account, home, StaffRole.INSTITUTION_ADMIN)
    await add_staff_membership(account, home, StaffRole.DOCTOR)
    await add_staff_membership(account, second, StaffRole.NURSE)
    token = token_for(staff_principal(account, home, StaffRole.INSTITUTION_ADMIN, StaffRole.DOCTOR))

    me = (await gql(client, ME, token=token))["data"]["me"]
    assert me["kind"] == "STAFF"
    assert me["account"] == {
        "id": encode_id("Account", account.id),
        "login": account.login,
        "displayName": "吴院长",
        "kind": "STAFF",
        "status": "ACTIVE",
    }
    assert me["client"] is None
    assert me["actingIn"]["id"] == institution_id_of(home)
    assert me["roles"] == ["INSTITUTION_ADMIN", "DOCTOR"] and me["chainRoles"] == []
    assert [(m["institution"]["id"], m["roles"]) for m in me["memberships"]] == [
        (institution_id_of(home), ["INSTITUTION_ADMIN", "DOCTOR"]),
        (institution_id_of(second), ["NURSE"]),
    ]
    assert {o["id"] for o in me["actingOptions"]} == {institution_id_of(home), institution_id_of(second)}
    assert me["chainMemberships"] == [] and me["followedResidents"] == []
    assert me["supervisedRegions"] == []
    assert me["secondFactor"] == {"enrolled": False, "required": False}


async def test_me_for_a_chain_director_chain_wide_and_in_an_institution_of_the_chain(
    client: httpx.AsyncClient, chains: Chains
) -> None:
    account = await new_account(name="郑总监")
    await add_chain_membership(account, chains.mine, ChainRole.CHAIN_DIRECTOR)
    token = token_for(
        Principal(
            subject=f"account:{account.id}",
            kind=PrincipalKind.STAFF,
            chain_id=chains.mine,
            chain_roles=frozenset({ChainRole.CHAIN_DIRECTOR}),
        )
    )
    chain_wide = (await gql(client, ME, token=token))["data"]["me"]
    assert chain_wide["actingIn"] is None and chain_wide["roles"] == []
    assert chain_wide["chainRoles"] == ["CHAIN_DIRECTOR"]
    assert chain_wide["chainMemberships"] == [
        {
            "chain": {"id": encode_id("Chain", chains.mine), "name": chains.mine_name},
            "roles": ["CHAIN_DIRECTOR"],
        }
    ]
    assert chain_wide["memberships"] == []
    assert {o["id"] for o in chain_wide["actingOptions"]} >= {
        institution_id_of(i) for i in chains.institutions
    }
    assert institution_id_of(chains.other_institution) not in {o["id"] for o in chain_wide["actingOptions"]}

    target = chains.institutions[1]
    inside = (await gql(client, ME, token=token, institution=target))["data"]["me"]
    assert inside["actingIn"]["id"] == institution_id_of(target)
    assert inside["roles"] == [] and inside["chainRoles"] == ["CHAIN_DIRECTOR"]
    # A chain director sees the staff of the chain's institutions but manages none.
    staff = await gql(client, ALL_STAFF, token=token, institution=target)
    assert "errors" not in staff, staff
    added = await gql(
        client,
        ADD,
        {
            "input": {
                "login": new_login(),
                "displayName": "x",
                "roles": ["NURSE"],
                "initialPassword": PASSWORD,
            }
        },
        token=token,
        institution=target,
    )
    assert codes(added) == ["FORBIDDEN"]

    foreign = await call(client, ME, token=token, institution=chains.other_institution)
    assert foreign.status_code == 404 and codes(foreign.json()) == ["NOT_FOUND"]


async def test_me_for_family_lists_followed_residents_as_ids_only(
    client: httpx.AsyncClient, world: World
) -> None:
    first, second = world.institution_ids[11], world.institution_ids[12]
    account = await new_account(AccountKind.FAMILY, name="陈女士")
    await add_family_link(account, first, family_member_id=1, resident_id=2)
    await add_family_link(account, second, family_member_id=1, resident_id=3)
    token = token_for(Principal(subject=f"account:{account.id}", kind=PrincipalKind.FAMILY))

    response = await call(client, ME, token=token)
    me = response.json()["data"]["me"]
    assert me["kind"] == "FAMILY" and me["account"]["kind"] == "FAMILY"
    assert me["actingIn"] is None  # two institutions: the app names one
    assert me["followedResidents"] == [
        {"institutionId": institution_id_of(first), "residentId": encode_id("Resident", first, 2)},
        {"institutionId": institution_id_of(second), "residentId": encode_id("Resident", second, 3)},
    ]
    for names in (world.resident_names[first], world.resident_names[second]):
        assert not any(name in response.text for name in names)  # no resident data, ids only
    assert {o["id"] for o in me["actingOptions"]} == {institution_id_of(first), institution_id_of(second)}
    assert me["memberships"] == [] and me["roles"] == []
    assert me["secondFactor"] == {"enrolled": False, "required": False}

    inside = (await gql(client, ME, token=token, institution=second))["data"]["me"]
    assert inside["actingIn"]["id"] == institution_id_of(second)
    elsewhere = await call(client, ME, token=token, institution=world.institution_ids[13])
    assert elsewhere.status_code == 404


async def test_me_for_a_supervisor(client: httpx.AsyncClient, world: World) -> None:
    account = await new_account(AccountKind.SUPERVISOR, name="监管员")
    region = await Region.get(code=REGION)
    await add_supervisor_region(account, region.id)
    token = token_for(
        Principal(
            subject=f"account:{account.id}",
            kind=PrincipalKind.SUPERVISOR,
            region_ids=frozenset({region.id}),
        )
    )
    me = (await gql(client, ME, token=token))["data"]["me"]
    assert me["kind"] == "SUPERVISOR" and me["account"]["kind"] == "SUPERVISOR"
    assert me["supervisedRegions"] == [{"code": REGION, "name": region.name}]
    assert me["actingIn"] is None and me["actingOptions"] == [] and me["memberships"] == []
    assert me["followedResidents"] == []


async def test_me_for_an_integrator_client(client: httpx.AsyncClient, chains: Chains) -> None:
    home = chains.institutions[0]
    created = await create_integrator_client(
        "床垫厂商", scopes=["residents:read"], created_by="test", institution_id=home
    )
    issued = await client_credentials(client, created.client_id, created.client_secret)
    assert issued.status_code == 200, issued.text
    token = issued.json()["access_token"]

    me = (await gql(client, ME, token=token))["data"]["me"]
    assert me["kind"] == "INTEGRATOR" and me["account"] is None and me["secondFactor"] is None
    assert me["client"] == {
        "id": encode_id("IntegratorClient", created.client.id),
        "clientId": created.client_id,
        "name": "床垫厂商",
        "scopes": ["residents:read"],
    }
    assert me["scopes"] == ["residents:read"]
    assert me["actingIn"]["id"] == institution_id_of(home)
    assert me["memberships"] == [] and me["actingOptions"] == []

    refused = await gql(
        client,
        CHANGE_PASSWORD,
        {"input": {"currentPassword": "x", "newPassword": "something-long-enough"}},
        token=token,
    )
    assert codes(refused) == ["FORBIDDEN"]
    assert codes(await gql(client, BEGIN_TOTP, token=token)) == ["FORBIDDEN"]
    assert codes(await gql(client, ALL_STAFF, token=token)) == ["FORBIDDEN"]
    assert codes(await gql(client, CLIENTS, token=token)) == ["FORBIDDEN"]


# Staff management


async def test_an_admin_adds_changes_lists_and_removes_staff(
    client: httpx.AsyncClient, institution: int
) -> None:
    admin, token = await staff_in(institution, StaffRole.INSTITUTION_ADMIN, name="吴院长")
    login = new_login()
    added = await gql(
        client,
        ADD,
        {"input": {"login": login, "displayName": "林护士", "roles": ["NURSE"], "initialPassword": PASSWORD}},
        token=token,
    )
    payload = added["data"]["addStaffMember"]
    assert payload["userErrors"] == []
    member = payload["staffMember"]
    assert (member["login"], member["displayName"], member["roles"], member["status"]) == (
        login,
        "林护士",
        ["NURSE"],
        "ACTIVE",
    )
    created = await UserAccount.get(login=login)
    assert created.kind == AccountKind.STAFF and await verify_password(created.password_hash, PASSWORD)
    assert member["id"] == staff_member_id(institution, created)

    # Pages of one, in account order.
    first_page = (await gql(client, STAFF, token=token))["data"]["staffMembers"]
    assert first_page["totalCount"] == 2 and first_page["pageInfo"]["hasNextPage"]
    assert first_page["edges"][0]["node"]["id"] == staff_member_id(institution, admin)
    second_page = (await gql(client, STAFF, {"after": first_page["pageInfo"]["endCursor"]}, token=token))[
        "data"
    ]["staffMembers"]
    assert [e["node"]["login"] for e in second_page["edges"]] == [login]
    assert not second_page["pageInfo"]["hasNextPage"]

    changed = await gql(
        client,
        SET_ROLES,
        {"input": {"staffMemberId": member["id"], "roles": ["NURSE", "HEAD_NURSE"]}},
        token=token,
    )
    assert changed["data"]["setStaffRoles"] == {
        "staffMember": {"id": member["id"], "roles": ["HEAD_NURSE", "NURSE"]},
        "userErrors": [],
    }
    assert await roles_in(institution, created) == {"head_nurse", "nurse"}

    removed = await gql(client, REMOVE, {"input": {"staffMemberId": member["id"]}}, token=token)
    assert removed["data"]["removeStaffMember"] == {"removedStaffMemberId": member["id"], "userErrors": []}
    assert await roles_in(institution, created) == set()
    assert await UserAccount.exists(id=created.id)  # the account stays; it only lost its roles here
    after = (await gql(client, ALL_STAFF, token=token))["data"]["staffMembers"]
    assert after["totalCount"] == 1
    # Removed: its id names nobody here any more.
    again = await gql(client, REMOVE, {"input": {"staffMemberId": member["id"]}}, token=token)
    assert codes(again) == ["NOT_FOUND"]


async def test_adding_an_existing_staff_account_only_adds_roles(
    client: httpx.AsyncClient, institution: int, chains: Chains
) -> None:
    _, token = await staff_in(institution, StaffRole.INSTITUTION_ADMIN)
    elsewhere, _ = await staff_in(chains.other_institution, StaffRole.CAREGIVER, name="老名字")
    before_hash = elsewhere.password_hash
    fresh_login = new_login()

    def spec(login: str) -> dict:
        return {
            "input": {
                "login": login,
                "displayName": "新名字",
                "roles": ["CAREGIVER"],
                "initialPassword": "a-different-password-1",
            }
        }

    existing = (await gql(client, ADD, spec(elsewhere.login), token=token))["data"]["addStaffMember"]
    new = (await gql(client, ADD, spec(fresh_login), token=token))["data"]["addStaffMember"]
    # Same shape either way: nothing says whether the account was there before.
    assert existing["userErrors"] == [] and new["userErrors"] == []
    assert existing["staffMember"].keys() == new["staffMember"].keys()
    assert existing["staffMember"]["roles"] == ["CAREGIVER"]
    # Neither the password nor the name of the existing account changed; its other roles stay.
    reloaded = await UserAccount.get(id=elsewhere.id)
    assert reloaded.password_hash == before_hash and reloaded.display_name == "老名字"
    assert await roles_in(chains.other_institution, elsewhere) == {"caregiver"}
    assert await roles_in(institution, elsewhere) == {"caregiver"}
    # Adding again changes nothing and is not an error.
    twice = (await gql(client, ADD, spec(elsewhere.login), token=token))["data"]["addStaffMember"]
    assert twice["userErrors"] == [] and twice["staffMember"]["roles"] == ["CAREGIVER"]


async def test_the_last_institution_admin_cannot_be_demoted_or_removed(
    client: httpx.AsyncClient, institution: int
) -> None:
    admin, token = await staff_in(institution, StaffRole.INSTITUTION_ADMIN)
    own_id = staff_member_id(institution, admin)
    demoted = await gql(
        client, SET_ROLES, {"input": {"staffMemberId": own_id, "roles": ["NURSE"]}}, token=token
    )
    errors = demoted["data"]["setStaffRoles"]["userErrors"]
    assert [(e["field"], e["code"]) for e in errors] == [("roles", "CONFLICT")]
    assert "机构管理员" in errors[0]["message"]
    removed = await gql(client, REMOVE, {"input": {"staffMemberId": own_id}}, token=token)
    assert removed["data"]["removeStaffMember"]["userErrors"][0]["code"] == "CONFLICT"
    assert await roles_in(institution, admin) == {"institution_admin"}

    # With a second admin, the first may step down.
    second = await gql(
        client,
        ADD,
        {
            "input": {
                "login": new_login(),
                "displayName": "副院长",
                "roles": ["INSTITUTION_ADMIN"],
                "initialPassword": PASSWORD,
            }
        },
        token=token,
    )
    assert second["data"]["addStaffMember"]["userErrors"] == []
    stepped_down = await gql(
        client, SET_ROLES, {"input": {"staffMemberId": own_id, "roles": ["DOCTOR"]}}, token=token
    )
    assert stepped_down["data"]["setStaffRoles"]["userErrors"] == []
    assert await roles_in(institution, admin) == {"doctor"}


async def test_a_staff_member_id_of_another_institution_is_not_found(
    client: httpx.AsyncClient, institution: int, chains: Chains
) -> None:
    _, token = await staff_in(institution, StaffRole.INSTITUTION_ADMIN)
    neighbour = chains.institutions[2]  # same chain
    victim, _ = await staff_in(neighbour, StaffRole.NURSE)
    foreign_id = staff_member_id(neighbour, victim)
    for operation, variables in (
        (SET_ROLES, {"input": {"staffMemberId": foreign_id, "roles": ["CAREGIVER"]}}),
        (REMOVE, {"input": {"staffMemberId": foreign_id}}),
    ):
        body = await gql(client, operation, variables, token=token)
        assert codes(body) == ["NOT_FOUND"] and body["data"] is None
    # The account id with this institution's id: not staff here, so not found either.
    here = await gql(
        client, REMOVE, {"input": {"staffMemberId": staff_member_id(institution, victim)}}, token=token
    )
    assert codes(here) == ["NOT_FOUND"]
    # A chain admin acting in this institution cannot reach the neighbour's staff through it either.
    chain_admin = await new_account()
    await add_chain_membership(chain_admin, chains.mine, ChainRole.CHAIN_ADMIN)
    chain_token = token_for(
        Principal(
            subject=f"account:{chain_admin.id}",
            kind=PrincipalKind.STAFF,
            chain_id=chains.mine,
            chain_roles=frozenset({ChainRole.CHAIN_ADMIN}),
        )
    )
    through = await gql(
        client, REMOVE, {"input": {"staffMemberId": foreign_id}}, token=chain_token, institution=institution
    )
    assert codes(through) == ["NOT_FOUND"]
    assert await roles_in(neighbour, victim) == {"nurse"}
    # Acting in the neighbour, the chain admin may manage it.
    there = await gql(
        client,
        SET_ROLES,
        {"input": {"staffMemberId": foreign_id, "roles": ["HEAD_NURSE"]}},
        token=chain_token,
        institution=neighbour,
    )
    assert there["data"]["setStaffRoles"]["userErrors"] == []
    assert await roles_in(neighbour, victim) == {"head_nurse"}


async def test_roles_without_staff_management_are_forbidden(
    client: httpx.AsyncClient, institution: int
) -> None:
    colleague, _ = await staff_in(institution, StaffRole.NURSE)
    _, caregiver = await staff_in(institution, StaffRole.CAREGIVER)
    _, head_nurse = await staff_in(institution, StaffRole.HEAD_NURSE)
    add = {
        "input": {"login": new_login(), "displayName": "x", "roles": ["NURSE"], "initialPassword": PASSWORD}
    }
    colleague_id = staff_member_id(institution, colleague)
    for token in (caregiver, head_nurse):
        assert codes(await gql(client, ADD, add, token=token)) == ["FORBIDDEN"]
        body = await gql(
            client, SET_ROLES, {"input": {"staffMemberId": colleague_id, "roles": ["DOCTOR"]}}, token=token
        )
        assert codes(body) == ["FORBIDDEN"]
        assert codes(await gql(client, REMOVE, {"input": {"staffMemberId": colleague_id}}, token=token)) == [
            "FORBIDDEN"
        ]
        assert codes(await gql(client, CLIENTS, token=token)) == ["FORBIDDEN"]
    assert codes(await gql(client, ALL_STAFF, token=caregiver)) == ["FORBIDDEN"]
    listed = (await gql(client, ALL_STAFF, token=head_nurse))["data"]["staffMembers"]  # may look
    assert listed["totalCount"] == 3
    assert await roles_in(institution, colleague) == {"nurse"}
    assert not await UserAccount.exists(login=add["input"]["login"])


async def test_bad_staff_input_is_reported_as_user_errors(
    client: httpx.AsyncClient, institution: int
) -> None:
    _, token = await staff_in(institution, StaffRole.INSTITUTION_ADMIN)

    async def add(**fields: object) -> list[dict]:
        spec = {
            "login": new_login(),
            "displayName": "林护士",
            "roles": ["NURSE"],
            "initialPassword": PASSWORD,
        }
        body = await gql(client, ADD, {"input": spec | fields}, token=token)
        payload = body["data"]["addStaffMember"]
        assert payload["staffMember"] is None
        return payload["userErrors"]

    weak = await add(initialPassword="1234567890")
    assert [(e["field"], e["code"]) for e in weak] == [("initialPassword", "BAD_USER_INPUT")]
    assert "密码" in weak[0]["message"]
    short = await add(initialPassword="short")
    assert short[0]["field"] == "initialPassword"
    missing = await add(initialPassword=None)
    assert [e["field"] for e in missing] == ["initialPassword"]
    several = await add(login="not a login", displayName=" ", roles=[])
    assert {e["field"] for e in several} == {"login", "displayName", "roles"}

    family = await new_account(AccountKind.FAMILY)
    not_staff = await add(login=family.login)
    assert [(e["field"], e["code"]) for e in not_staff] == [("login", "BAD_USER_INPUT")]
    assert await StaffMembership.filter(account_id=family.id).count() == 0

    admin_id = (await gql(client, ALL_STAFF, token=token))["data"]["staffMembers"]["edges"][0]["node"]["id"]
    no_roles = await gql(client, SET_ROLES, {"input": {"staffMemberId": admin_id, "roles": []}}, token=token)
    assert no_roles["data"]["setStaffRoles"]["userErrors"][0]["field"] == "roles"
    assert (await gql(client, ALL_STAFF, token=token))["data"]["staffMembers"]["totalCount"] == 1
    not_numbers = base64.urlsafe_b64encode(b"StaffMember:a:b").decode()
    malformed = await gql(client, REMOVE, {"input": {"staffMemberId": not_numbers}}, token=token)
    assert codes(malformed) == ["BAD_USER_INPUT"]


# Integrator clients


async def test_integrator_client_created_used_listed_and_revoked(
    client: httpx.AsyncClient, institution: int, chains: Chains
) -> None:
    _, token = await staff_in(institution, StaffRole.INSTITUTION_ADMIN)
    created = await gql(
        client,
        CREATE_CLIENT,
        {"input": {"name": "体征设备", "scopes": ["vitals:write", "residents:read"]}},
        token=token,
    )
    payload = created["data"]["createIntegratorClient"]
    assert payload["userErrors"] == []
    secret, made = payload["clientSecret"], payload["client"]
    assert len(secret) >= 43 and made["scopes"] == ["residents:read", "vitals:write"]
    assert made["institution"] == {"id": institution_id_of(institution)} and made["chain"] is None
    row = await OAuthClient.get(client_id=made["clientId"])
    assert row.created_by.startswith("account:")

    # Listed, but the secret and its hash appear nowhere again.
    listing = await call(client, CLIENTS, token=token)
    nodes = [e["node"] for e in listing.json()["data"]["integratorClients"]["edges"]]
    assert [n["clientId"] for n in nodes] == [made["clientId"]]
    assert secret not in listing.text
    assert bytes(row.secret_hash or b"").hex() not in listing.text
    fields = set(build_schema()._schema.get_type("IntegratorClient").fields)  # type: ignore[union-attr]
    assert not any("secret" in name.lower() or "hash" in name.lower() for name in fields)

    issued = await client_credentials(client, made["clientId"], secret)
    assert issued.status_code == 200, issued.text
    assert issued.json()["scope"] == "residents:read vitals:write"

    # Another institution's admin can neither see nor revoke it.
    _, stranger = await staff_in(chains.other_institution, StaffRole.INSTITUTION_ADMIN)
    assert made["clientId"] not in (await call(client, CLIENTS, token=stranger)).text
    foreign = await gql(client, REVOKE_CLIENT, {"id": made["id"]}, token=stranger)
    assert codes(foreign) == ["NOT_FOUND"] and foreign["data"] is None
    # Who manages no clients at all gets the same answer for an existing id and a made-up one.
    family = await new_account(AccountKind.FAMILY)
    family_token = token_for(Principal(subject=f"account:{family.id}", kind=PrincipalKind.FAMILY))
    for some_id in (made["id"], encode_id("IntegratorClient", 10**12)):
        assert codes(await gql(client, REVOKE_CLIENT, {"id": some_id}, token=family_token)) == ["FORBIDDEN"]
    assert (await client_credentials(client, made["clientId"], secret)).status_code == 200

    revoked = (await gql(client, REVOKE_CLIENT, {"id": made["id"]}, token=token))["data"][
        "revokeIntegratorClient"
    ]
    assert revoked["userErrors"] == [] and revoked["client"]["revokedAt"] is not None
    refused = await client_credentials(client, made["clientId"], secret)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"

    bad = await gql(
        client, CREATE_CLIENT, {"input": {"name": " ", "scopes": ["residents:delete"]}}, token=token
    )
    assert bad["data"]["createIntegratorClient"]["clientSecret"] is None
    assert bad["data"]["createIntegratorClient"]["userErrors"][0]["code"] == "BAD_USER_INPUT"


async def test_chain_wide_integrator_clients_need_a_chain_admin(
    client: httpx.AsyncClient, institution: int, chains: Chains
) -> None:
    _, admin = await staff_in(institution, StaffRole.INSTITUTION_ADMIN)
    chain_wide = {"input": {"name": "集团ERP", "scopes": ["residents:read"], "chainWide": True}}
    assert codes(await gql(client, CREATE_CLIENT, chain_wide, token=admin)) == ["FORBIDDEN"]

    account = await new_account()
    await add_chain_membership(account, chains.mine, ChainRole.CHAIN_ADMIN)
    chain_admin = token_for(
        Principal(
            subject=f"account:{account.id}",
            kind=PrincipalKind.STAFF,
            chain_id=chains.mine,
            chain_roles=frozenset({ChainRole.CHAIN_ADMIN}),
        )
    )
    made = (await gql(client, CREATE_CLIENT, chain_wide, token=chain_admin))["data"]["createIntegratorClient"]
    assert made["userErrors"] == [] and made["client"]["chain"]["name"] == chains.mine_name
    assert made["client"]["institution"] is None
    assert (await OAuthClient.get(client_id=made["client"]["clientId"])).created_by == f"account:{account.id}"

    # The chain admin lists the chain's clients, chain-wide or from an institution of the chain.
    for acting_in in (None, institution):
        listed = await call(client, CLIENTS, token=chain_admin, institution=acting_in)
        assert made["client"]["clientId"] in listed.text
    # The institution's admin sees the institution's clients only.
    assert made["client"]["clientId"] not in (await call(client, CLIENTS, token=admin)).text
    assert codes(await gql(client, REVOKE_CLIENT, {"id": made["client"]["id"]}, token=admin)) == ["NOT_FOUND"]
    # A chain director (no chain admin) may not manage clients.
    director = token_for(
        Principal(
            subject=f"account:{account.id}",
            kind=PrincipalKind.STAFF,
            chain_id=chains.mine,
            chain_roles=frozenset({ChainRole.CHAIN_DIRECTOR}),
        )
    )
    assert codes(await gql(client, CREATE_CLIENT, chain_wide, token=director)) == ["FORBIDDEN"]
    # Another chain's admin: not found.
    other_admin = token_for(
        Principal(
            subject=f"account:{account.id}",
            kind=PrincipalKind.STAFF,
            chain_id=chains.other,
            chain_roles=frozenset({ChainRole.CHAIN_ADMIN}),
        )
    )
    assert codes(await gql(client, REVOKE_CLIENT, {"id": made["client"]["id"]}, token=other_admin)) == [
        "NOT_FOUND"
    ]
    revoked = await gql(client, REVOKE_CLIENT, {"id": made["client"]["id"]}, token=chain_admin)
    assert revoked["data"]["revokeIntegratorClient"]["client"]["revokedAt"] is not None


# Password and second factor


async def test_change_password(client: httpx.AsyncClient, institution: int, throttle: LoginThrottle) -> None:
    account, token = await staff_in(institution, StaffRole.NURSE)
    new_password = "willow-tea-and-moonlight"

    def change(current: str, new: str) -> dict:
        return {"input": {"currentPassword": current, "newPassword": new}}

    wrong = (await gql(client, CHANGE_PASSWORD, change("not-my-password", new_password), token=token))["data"]
    assert wrong["changePassword"]["account"] is None
    assert [(e["field"], e["code"]) for e in wrong["changePassword"]["userErrors"]] == [
        ("currentPassword", "BAD_USER_INPUT")
    ]
    weak = (await gql(client, CHANGE_PASSWORD, change(PASSWORD, "qwertyuiop"), token=token))["data"]
    assert weak["changePassword"]["userErrors"][0]["field"] == "newPassword"
    assert await authenticate(account.login, PASSWORD, "127.0.0.1", throttle=throttle)

    done = (await gql(client, CHANGE_PASSWORD, change(PASSWORD, new_password), token=token))["data"]
    assert done["changePassword"] == {"account": {"login": account.login}, "userErrors": []}
    signed_in = await authenticate(account.login, new_password, "127.0.0.1", throttle=throttle)
    assert signed_in.id == account.id
    with pytest.raises(LoginFailed):
        await authenticate(account.login, PASSWORD, "127.0.0.1", throttle=throttle)


async def test_change_password_guessing_is_throttled(client: httpx.AsyncClient, institution: int) -> None:
    _, token = await staff_in(institution, StaffRole.NURSE)
    guess = {"input": {"currentPassword": "a-guess", "newPassword": "willow-tea-and-moonlight"}}
    for _ in range(ThrottlePolicy().account_failures):
        answered = (await gql(client, CHANGE_PASSWORD, guess, token=token))["data"]["changePassword"]
        assert answered["userErrors"][0]["field"] == "currentPassword"
    locked = await gql(client, CHANGE_PASSWORD, guess, token=token)
    error = locked["errors"][0]["extensions"]
    assert error["code"] == "RATE_LIMITED" and 0 < error["retryAfter"] <= ThrottlePolicy().lockout_seconds


async def test_totp_enrolment_confirmation_and_disabling(client: httpx.AsyncClient, institution: int) -> None:
    _, token = await staff_in(institution, StaffRole.DOCTOR)
    begun = (await gql(client, BEGIN_TOTP, token=token))["data"]["beginTotpEnrolment"]
    assert begun["userErrors"] == [] and begun["otpauthUri"].startswith("otpauth://totp/")
    authenticator = pyotp.TOTP(begun["secret"])

    window = {authenticator.at(time.time() + seconds) for seconds in (-60, -30, 0, 30, 60)}
    wrong_code = next(
        code for code in ("000000", "111111", "222222", "333333", "444444", "555555") if code not in window
    )
    wrong = await gql(client, CONFIRM_TOTP, {"code": wrong_code}, token=token)
    assert wrong["data"]["confirmTotpEnrolment"]["userErrors"][0]["field"] == "code"
    confirmed = (await gql(client, CONFIRM_TOTP, {"code": authenticator.now()}, token=token))["data"]
    assert confirmed["confirmTotpEnrolment"] == {
        "secondFactor": {"enrolled": True, "required": False},
        "userErrors": [],
    }
    me = (await gql(client, ME, token=token))["data"]["me"]
    assert me["secondFactor"] == {"enrolled": True, "required": False}
    again = (await gql(client, BEGIN_TOTP, token=token))["data"]["beginTotpEnrolment"]
    assert again["secret"] is None and again["userErrors"][0]["code"] == "CONFLICT"

    # The next step's code is in the window and later than the one used to confirm.
    disabled = await gql(client, DISABLE_TOTP, {"code": authenticator.at(time.time() + 30)}, token=token)
    assert disabled["data"]["disableTotp"] == {
        "secondFactor": {"enrolled": False, "required": False},
        "userErrors": [],
    }

    family = await new_account(AccountKind.FAMILY)
    family_token = token_for(Principal(subject=f"account:{family.id}", kind=PrincipalKind.FAMILY))
    refused = (await gql(client, BEGIN_TOTP, token=family_token))["data"]["beginTotpEnrolment"]
    assert refused["userErrors"][0]["code"] == "BAD_USER_INPUT"


async def test_an_admin_requires_a_second_factor_and_a_nurse_may_not(
    client: httpx.AsyncClient, institution: int
) -> None:
    _, admin = await staff_in(institution, StaffRole.INSTITUTION_ADMIN)
    _, nurse = await staff_in(institution, StaffRole.NURSE)
    refused = await gql(client, REQUIRE_TOTP, {"required": True}, token=nurse)
    assert codes(refused) == ["FORBIDDEN"]
    assert not (await Institution.get(id=institution)).requires_totp

    done = (await gql(client, REQUIRE_TOTP, {"required": True}, token=admin))["data"][
        "setInstitutionRequiresTotp"
    ]
    assert done == {
        "institution": {"id": institution_id_of(institution)},
        "requiresTotp": True,
        "userErrors": [],
    }
    assert (await Institution.get(id=institution)).requires_totp
    me = (await gql(client, ME, token=nurse))["data"]["me"]
    assert me["secondFactor"] == {"enrolled": False, "required": True}

    await gql(client, REQUIRE_TOTP, {"required": False}, token=admin)
    assert not (await Institution.get(id=institution)).requires_totp


def test_identity_types_carry_no_secrets() -> None:
    schema = build_schema()._schema
    for name in ("Account", "Viewer", "StaffMember", "IntegratorClient"):
        fields = json.dumps(sorted(schema.get_type(name).fields))  # type: ignore[union-attr]
        assert "hash" not in fields.lower() and "password" not in fields.lower(), name

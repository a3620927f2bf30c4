"""The policy decides from the principal alone: every kind of principal against every kind of place."""

import dataclasses
from pathlib import Path

import pytest

from compliance.policy import (
    PERMISSIONS,
    Action,
    Level,
    Place,
    may,
    permission_table,
    require,
    resident_scope,
    visible_institutions,
)
from compliance.principals import ChainRole, Principal, PrincipalKind, StaffRole
from tenants.errors import Forbidden, NotFound, Unauthenticated

HOME = Place(1, chain_id=10, region_id=100)
SAME_CHAIN = Place(2, chain_id=10, region_id=200)
OTHER_CHAIN = Place(3, chain_id=20, region_id=100)

NURSE = Principal("account:1", PrincipalKind.STAFF, institution_id=1, roles=frozenset({StaffRole.NURSE}))
ADMIN = Principal(
    "account:2", PrincipalKind.STAFF, institution_id=1, roles=frozenset({StaffRole.INSTITUTION_ADMIN})
)
DIRECTOR = Principal(
    "account:3", PrincipalKind.STAFF, chain_id=10, chain_roles=frozenset({ChainRole.CHAIN_DIRECTOR})
)
CHAIN_ADMIN = dataclasses.replace(DIRECTOR, chain_roles=frozenset({ChainRole.CHAIN_ADMIN}))
FAMILY = Principal("account:4", PrincipalKind.FAMILY, institution_id=1, followed_resident_ids=frozenset({7}))
READER = Principal(
    "client:r", PrincipalKind.INTEGRATOR, institution_id=1, scopes=frozenset({"residents:read"})
)
CHAIN_READER = dataclasses.replace(READER, institution_id=None, chain_id=10)
SUPERVISOR = Principal("account:5", PrincipalKind.SUPERVISOR, region_ids=frozenset({100}))
OPERATOR = Principal("account:6", PrincipalKind.OPERATOR)


def refusal(principal: Principal | None, action: Action, **resource: object) -> type[Exception] | None:
    try:
        require(principal, action, **resource)  # type: ignore[arg-type]
    except (Unauthenticated, Forbidden, NotFound) as refused:
        return type(refused)
    return None


def test_staff_roles_act_in_their_institution_only() -> None:
    assert refusal(NURSE, Action.RESIDENT_VIEW) is None
    assert refusal(NURSE, Action.RESIDENT_VIEW, institution=1, resident_id=99) is None
    assert refusal(NURSE, Action.RESIDENT_ADMIT) is Forbidden
    assert refusal(NURSE, Action.RESIDENT_VIEW, institution=2) is NotFound
    assert refusal(NURSE, Action.RESIDENT_VIEW, institution=SAME_CHAIN) is NotFound
    assert refusal(NURSE, Action.STAFF_MANAGE) is Forbidden
    assert refusal(ADMIN, Action.STAFF_MANAGE) is None
    assert refusal(ADMIN, Action.CLIENT_MANAGE, chain_id=10) is NotFound  # not a chain member


def test_chain_roles_reach_the_chain_but_open_no_resident() -> None:
    assert refusal(DIRECTOR, Action.INSTITUTION_VIEW, institution=SAME_CHAIN) is None
    assert refusal(DIRECTOR, Action.INSTITUTION_VIEW, institution=OTHER_CHAIN) is NotFound
    assert refusal(DIRECTOR, Action.STAFF_VIEW, institution=SAME_CHAIN) is None
    assert refusal(DIRECTOR, Action.STAFF_MANAGE, institution=SAME_CHAIN) is Forbidden
    assert refusal(CHAIN_ADMIN, Action.STAFF_MANAGE, institution=SAME_CHAIN) is None
    assert refusal(CHAIN_ADMIN, Action.CLIENT_MANAGE, chain_id=10) is None
    assert refusal(CHAIN_ADMIN, Action.CLIENT_MANAGE, chain_id=20) is NotFound
    acting = dataclasses.replace(DIRECTOR, institution_id=2)  # narrowed by compliance/acting.py
    assert refusal(acting, Action.RESIDENT_VIEW) is Forbidden
    assert refusal(acting, Action.INSTITUTION_VIEW) is None


def test_chain_roles_do_not_lend_staff_roles_of_the_home_institution() -> None:
    both = dataclasses.replace(ADMIN, chain_id=10, chain_roles=frozenset({ChainRole.CHAIN_DIRECTOR}))
    assert refusal(both, Action.STAFF_MANAGE) is None  # at home: institution admin
    assert refusal(both, Action.STAFF_MANAGE, institution=SAME_CHAIN) is Forbidden  # there: director only
    assert refusal(both, Action.RESIDENT_VIEW, institution=SAME_CHAIN) is Forbidden


def test_family_reaches_only_followed_residents() -> None:
    assert refusal(FAMILY, Action.RESIDENT_VIEW, resident_id=7) is None
    assert refusal(FAMILY, Action.RESIDENT_VIEW, institution=1, resident_id=8) is NotFound
    assert refusal(FAMILY, Action.RESIDENT_VIEW, institution=2, resident_id=7) is NotFound
    assert refusal(FAMILY, Action.RESIDENT_UPDATE, resident_id=7) is Forbidden
    assert refusal(FAMILY, Action.STAFF_VIEW) is Forbidden
    assert resident_scope(FAMILY) == {7}
    assert resident_scope(NURSE) is None


def test_integrators_by_scope_within_their_binding() -> None:
    assert refusal(READER, Action.RESIDENT_VIEW) is None
    assert refusal(READER, Action.RESIDENT_UPDATE) is Forbidden
    assert refusal(READER, Action.RESIDENT_VIEW, institution=2) is NotFound
    assert refusal(CHAIN_READER, Action.RESIDENT_VIEW, institution=SAME_CHAIN) is None
    assert refusal(CHAIN_READER, Action.RESIDENT_VIEW, institution=OTHER_CHAIN) is NotFound
    assert refusal(READER, Action.CLIENT_MANAGE) is Forbidden


def test_supervisors_never_reach_a_resident() -> None:
    assert refusal(SUPERVISOR, Action.INSTITUTION_VIEW, institution=HOME) is None
    assert refusal(SUPERVISOR, Action.INSTITUTION_VIEW, institution=SAME_CHAIN) is NotFound  # region 200
    for action, grant in PERMISSIONS.items():
        if grant.level is Level.RESIDENT:
            assert refusal(SUPERVISOR, action, institution=HOME) is Forbidden, action
            assert not grant.supervisor, action  # the data itself says so
    assert visible_institutions(SUPERVISOR).region_ids == {100}


def test_operators_keep_the_registry_and_nothing_inside() -> None:
    assert refusal(OPERATOR, Action.INSTITUTION_PROVISION) is None
    assert refusal(OPERATOR, Action.INSTITUTION_VIEW, institution=OTHER_CHAIN) is None
    assert visible_institutions(OPERATOR).every
    for action, grant in PERMISSIONS.items():
        if grant.level in (Level.INSTITUTION, Level.RESIDENT) and action is not Action.INSTITUTION_VIEW:
            assert refusal(OPERATOR, action) is Forbidden, action


def test_every_person_manages_their_own_account_and_no_client_has_one() -> None:
    for person in (NURSE, DIRECTOR, FAMILY, SUPERVISOR, OPERATOR):
        assert refusal(person, Action.ACCOUNT_SELF) is None, person.kind
    assert refusal(READER, Action.ACCOUNT_SELF) is Forbidden
    assert refusal(CHAIN_READER, Action.ACCOUNT_SELF) is Forbidden


def test_nobody_is_unauthenticated() -> None:
    assert refusal(None, Action.INSTITUTION_VIEW) is Unauthenticated
    assert not may(None, Action.INSTITUTION_VIEW)
    assert may(NURSE, Action.RESIDENT_VIEW)


@pytest.mark.parametrize("action", list(Action))
def test_every_action_has_a_grant(action: Action) -> None:
    assert action in PERMISSIONS


def test_the_table_in_the_security_docs_is_the_policy() -> None:
    docs = (Path(__file__).parents[2] / "docs" / "security.md").read_text()
    assert permission_table() in docs, "docs/security.md: paste compliance.policy.permission_table()"

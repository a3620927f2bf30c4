"""The one place that decides whether a principal may perform an action.

Resolvers and jobs ask `require(...)`; none re-implements a check. The role matrix is data
(`STAFF_PERMISSIONS`), reproduced in docs/security.md. Objects of another institution are reported as
NOT_FOUND, not FORBIDDEN, so that an id reveals nothing about other tenants.
"""

from enum import StrEnum

from compliance.principals import Principal, PrincipalKind, StaffRole
from tenants.errors import Forbidden, NotFound, Unauthenticated


class Action(StrEnum):
    INSTITUTION_VIEW = "institution.view"
    INSTITUTION_PROVISION = "institution.provision"
    RESIDENT_VIEW = "resident.view"
    RESIDENT_ADMIT = "resident.admit"
    RESIDENT_UPDATE = "resident.update"
    RESIDENT_DISCHARGE = "resident.discharge"
    FAMILY_MEMBER_ADD = "family_member.add"


_RESIDENT_READERS = frozenset(StaffRole)
_RESIDENT_INTAKE = frozenset({StaffRole.INSTITUTION_ADMIN, StaffRole.SALES, StaffRole.HEAD_NURSE})

STAFF_PERMISSIONS: dict[Action, frozenset[StaffRole]] = {
    Action.INSTITUTION_VIEW: frozenset(StaffRole),
    Action.RESIDENT_VIEW: _RESIDENT_READERS,
    Action.RESIDENT_ADMIT: _RESIDENT_INTAKE,
    Action.RESIDENT_UPDATE: _RESIDENT_INTAKE | {StaffRole.NURSE, StaffRole.BUTLER},
    Action.RESIDENT_DISCHARGE: _RESIDENT_INTAKE,
    Action.FAMILY_MEMBER_ADD: _RESIDENT_INTAKE | {StaffRole.BUTLER, StaffRole.NURSE},
}

OPERATOR_PERMISSIONS: frozenset[Action] = frozenset({Action.INSTITUTION_VIEW, Action.INSTITUTION_PROVISION})


def authenticated(principal: Principal | None) -> Principal:
    if principal is None:
        raise Unauthenticated("Authentication required.")
    return principal


def require(principal: Principal | None, action: Action, *, institution_id: int | None = None) -> Principal:
    """Raise unless `principal` may do `action` (in `institution_id`, for institution-bound actions)."""
    who = authenticated(principal)
    if who.kind is PrincipalKind.OPERATOR:
        if action in OPERATOR_PERMISSIONS:
            return who
        raise Forbidden("Platform operators have no access to resident data.")
    if institution_id is not None and who.institution_id != institution_id:
        raise NotFound("Not found.")
    if not who.roles & STAFF_PERMISSIONS.get(action, frozenset()):
        raise Forbidden("Your role does not allow this action.")
    return who


def may(principal: Principal | None, action: Action, *, institution_id: int | None = None) -> bool:
    try:
        require(principal, action, institution_id=institution_id)
    except (Unauthenticated, Forbidden, NotFound):
        return False
    return True


def visible_institutions(principal: Principal | None) -> frozenset[int] | None:
    """Institutions whose registry entry `principal` may list: None means all of them."""
    who = require(principal, Action.INSTITUTION_VIEW)
    if who.kind is PrincipalKind.OPERATOR:
        return None
    return frozenset({who.institution_id}) if who.institution_id is not None else frozenset()

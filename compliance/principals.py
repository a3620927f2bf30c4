"""Who is asking: the authenticated principal of a request or job."""

from dataclasses import dataclass
from enum import StrEnum


class PrincipalKind(StrEnum):
    STAFF = "staff"
    OPERATOR = "operator"
    # An OAuth2 client acting for its institution (client credentials): no roles, so the policy grants
    # it nothing until it learns about scopes.
    INTEGRATOR = "integrator"


class StaffRole(StrEnum):
    INSTITUTION_ADMIN = "institution_admin"
    HEAD_NURSE = "head_nurse"
    NURSE = "nurse"
    DOCTOR = "doctor"
    CAREGIVER = "caregiver"
    BUTLER = "butler"
    SALES = "sales"
    FINANCE = "finance"
    LOGISTICS = "logistics"


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str
    kind: PrincipalKind
    institution_id: int | None = None
    roles: frozenset[StaffRole] = frozenset()

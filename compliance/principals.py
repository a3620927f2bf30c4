"""Who is asking: the authenticated principal of a request or job.

A principal is what a verified access token says (compliance/identity/access_tokens.py), narrowed to the
one institution the request acts in (compliance/acting.py). The policy (compliance/policy.py) decides
from it alone, plus, for family accounts, the residents they follow in that institution.
"""

from dataclasses import dataclass
from enum import StrEnum


class PrincipalKind(StrEnum):
    STAFF = "staff"  # staff of institutions and of chains (chain roles)
    FAMILY = "family"
    SUPERVISOR = "supervisor"  # a regional authority: aggregated numbers, never a resident
    OPERATOR = "operator"  # Yiyang's own platform operators
    INTEGRATOR = "integrator"  # an OAuth2 client acting for its institution or chain (client credentials)


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
    # Reads the audit log and residents' access reports (PIPL art. 52's person in charge of personal
    # information protection); opens no health data.
    COMPLIANCE_OFFICER = "compliance_officer"


class ChainRole(StrEnum):
    """Roles across a chain; why these two: see migrations/shared/0003_accounts.sql."""

    CHAIN_DIRECTOR = "chain_director"
    CHAIN_ADMIN = "chain_admin"


@dataclass(frozen=True, slots=True)
class Principal:
    subject: str  # account:<id> or client:<client_id>
    kind: PrincipalKind
    # The institution this request acts in; for a token, its home institution (None: chain-wide,
    # regional, family before choosing, or a platform operator).
    institution_id: int | None = None
    roles: frozenset[StaffRole] = frozenset()  # staff roles in `institution_id`
    chain_id: int | None = None
    chain_roles: frozenset[ChainRole] = frozenset()
    scopes: frozenset[str] = frozenset()  # what an integrator client was granted
    region_ids: frozenset[int] = frozenset()  # a supervisor's regions
    # Residents of `institution_id` a family account follows (read per request, never from the token).
    followed_resident_ids: frozenset[int] = frozenset()
    client_id: str | None = None  # the OAuth2 client the token was issued to

    @property
    def account_id(self) -> int | None:
        prefix, _, number = self.subject.partition(":")
        return int(number) if prefix == "account" and number.isdigit() else None

"""Which institution a request acts in, and as whom there.

The institution comes from the verified token: a staff member's or an institution-bound integrator's
home institution. A principal whose reach is wider than one institution names the one it acts in with
each request (the `Yiyang-Institution` header of the GraphQL endpoint), and the name is checked here:

- chain staff and chain-bound integrators: any active institution of their chain; there the staff
  member holds only the chain roles (staff roles belong to the home institution);
- family accounts: an institution where they follow a resident (read from `shared.family_link` on every
  request, never from the token, so a removed link takes effect at once); the residents they follow
  there travel with the principal for the policy;
- anyone else naming an institution that is not theirs: NOT_FOUND, as for an id of another tenant.

Supervisors and platform operators never act inside an institution: they read the shared schema only.
"""

import dataclasses

from compliance.identity.account_models import FamilyLink
from compliance.principals import Principal, PrincipalKind
from tenants.context import TenantRef
from tenants.errors import Forbidden, NotFound
from tenants.registry import TenantDirectory

NOT_YOURS = "Institution not found or not active."


async def act_in(
    principal: Principal, requested: int | None, directory: TenantDirectory
) -> tuple[Principal, TenantRef | None]:
    """`principal` narrowed to the institution it acts in, and that institution's tenant (or None)."""
    if principal.kind in (PrincipalKind.SUPERVISOR, PrincipalKind.OPERATOR):
        if requested is not None:
            raise Forbidden("This account does not act inside an institution.")
        return principal, None
    if principal.kind is PrincipalKind.FAMILY:
        return await _family_in(principal, requested, directory)
    if requested is None or requested == principal.institution_id:
        home = principal.institution_id
        return principal, (await directory.resolve(home) if home is not None else None)
    if principal.chain_id is None:
        raise NotFound(NOT_YOURS, field="institution")
    tenant = await directory.resolve(requested)
    if tenant.chain_id != principal.chain_id:
        raise NotFound(NOT_YOURS, field="institution")
    return dataclasses.replace(principal, institution_id=requested, roles=frozenset()), tenant


async def _family_in(
    principal: Principal, requested: int | None, directory: TenantDirectory
) -> tuple[Principal, TenantRef | None]:
    account_id = principal.account_id
    links = (
        await FamilyLink.filter(account_id=account_id).values_list("institution_id", "resident_id")
        if account_id is not None
        else []
    )
    institutions = {institution for institution, _ in links}
    if requested is None:
        if len(institutions) != 1:
            return principal, None  # several (or none): the family app names one
        requested = next(iter(institutions))
    elif requested not in institutions:
        raise NotFound(NOT_YOURS, field="institution")
    followed = frozenset(resident for institution, resident in links if institution == requested)
    narrowed = dataclasses.replace(principal, institution_id=requested, followed_resident_ids=followed)
    return narrowed, await directory.resolve(requested)

"""How resolvers reach a resident's data: the policy (compliance/policy.py), then the decision point
(compliance/consent.py), with every outcome on the request's audit trail (written with the work, in
api/graphql.py). Resolvers ask `require_resident_access` (or `resident_to_change` / `part_to_change` for a
mutation's target, `consent_refusals` for a page of residents); none asks the policy or the decision point
for a resident's data on its own, so that no read or write goes unrecorded (tests/compliance/
test_audit_completeness.py walks the schema to check it).

Each event names the operation field it was decided in: when that field's work does not happen after all
(user errors, an error after the decision, a rollback), its permitted events are recorded as failed
(`AuditTrail.fail`, `user_errors`, api/graphql.py)."""

from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Protocol

from compliance import consent as domain
from compliance.audit import Outcome, request_event
from compliance.consent import Category, Purpose
from compliance.policy import Action, require
from compliance.principals import PrincipalKind
from schema.context import YiyangInfo
from schema.ids import decode_id
from tenants.errors import Forbidden, NotFound, Unauthenticated

# What a permit by the policy alone is recorded as: the action touches no data category (consent
# records, data-subject requests), or the principal is not asked for consent (see consent_refusals).
BY_POLICY = domain.Decision(True, domain.DecisionReason.POLICY)


class ResidentNode(Protocol):
    """What the Resident fields need of their parent (schema.residents.ResidentType)."""

    pk: int
    institution_id: int


def recorder(info: YiyangInfo) -> str:
    principal = info.context.principal
    return principal.subject if principal is not None else "-"


def operation_field(info: YiyangInfo) -> str:
    """The root field of the operation (its response key) that `info`'s field is part of."""
    path = info.path
    while path.prev is not None:
        path = path.prev
    return str(path.key)


def _categories(action: Action, categories: Sequence[Category] | None) -> tuple[Category, ...]:
    if categories is not None:
        return tuple(categories)
    category = domain.category_of(action)
    return () if category is None else (category,)


def audit_decision(
    info: YiyangInfo,
    action: Action,
    resident_id: int,
    categories: Sequence[Category],
    purpose: Purpose | None,
    decision: domain.Decision,
) -> None:
    """The event of one decision about one resident, added to the request's audit trail."""
    acted_for = domain.purpose_of(info.context.principal, categories, purpose)
    info.context.audit.decided(
        action,
        resident_id,
        [category.value for category in categories],
        acted_for.value if acted_for is not None else None,
        Outcome.PERMITTED if decision.permit else Outcome.DENIED,
        None if decision.permit else decision.reason.value,
        field=operation_field(info),
    )


def audit_request(
    info: YiyangInfo,
    action: Action,
    *,
    resident_id: int | None = None,
    categories: Sequence[Category] = (),
    outcome: Outcome = Outcome.PERMITTED,
    reason_code: str | None = None,
) -> None:
    """An event of this request that is no decision of the decision point (reading the audit itself, a
    refusal of the policy), on the request's trail under the operation field it belongs to."""
    event = request_event(
        info.context,
        action,
        resident_id=resident_id,
        data_categories=(category.value for category in categories),
        outcome=outcome,
        reason_code=reason_code,
    )
    info.context.audit.add(event, field=operation_field(info))


def _audit_refusal(
    info: YiyangInfo,
    action: Action,
    institution_id: int,
    resident_id: int,
    categories: Sequence[Category],
    refused: Forbidden | NotFound,
) -> None:
    tenant = info.context.tenant
    if tenant is None or tenant.institution_id != institution_id:
        return  # another institution's resident: nothing of this tenant was touched
    audit_request(
        info,
        action,
        resident_id=resident_id,
        categories=categories,
        outcome=Outcome.DENIED,
        reason_code=refused.code.lower(),
    )


async def require_consent(
    info: YiyangInfo,
    action: Action,
    resident_id: int,
    categories: Sequence[Category],
    purpose: Purpose | None = None,
) -> domain.Decision:
    """The decision point's answer for the caller (after the policy) on every one of `categories`,
    written to the audit trail as one event either way: FORBIDDEN unless it permits all. The consents
    come from the request's DataLoader (one query for a page of residents)."""
    principal = info.context.principal
    if principal is None:
        raise Unauthenticated("Authentication required.")
    decided = info.context.decisions
    key = (operation_field(info), resident_id, action, tuple(categories), purpose)
    decision = decided.get(key)
    if decision is None:  # else decided and recorded already in this request
        decision = BY_POLICY
        for category in categories:
            decision = await domain.decide(
                principal,
                action,
                resident_id,
                category,
                purpose,
                consents=info.context.loaders.consent_terms.load,
            )
            if not decision.permit:
                break
        audit_decision(info, action, resident_id, categories, purpose, decision)
        decided[key] = decision
    refused = domain.refusal(decision)
    if refused is not None:
        raise refused
    return decision


async def require_resident_access(
    info: YiyangInfo,
    action: Action,
    institution_id: int,
    resident_id: int,
    categories: Sequence[Category] | None = None,
    purpose: Purpose | None = None,
) -> None:
    """The policy, then the decision point on `categories` (default: the action's own category), for
    the caller to do `action` on the resident; permitted or refused, on the audit trail. NOT_FOUND for
    another institution's resident, FORBIDDEN otherwise."""
    touched = _categories(action, categories)
    try:
        require(info.context.principal, action, institution=institution_id, resident_id=resident_id)
    except (Forbidden, NotFound) as refused:
        _audit_refusal(info, action, institution_id, resident_id, touched, refused)
        raise
    await require_consent(info, action, resident_id, touched, purpose)


async def resident_to_change(
    info: YiyangInfo,
    resident_id: str,
    action: Action,
    *,
    field: str = "residentId",
    categories: Sequence[Category] | None = None,
) -> tuple[int, int]:
    """(institution id, primary key) of a resident of the acting institution the caller may do `action`
    on, else NOT_FOUND/FORBIDDEN (`require_resident_access`)."""
    institution_id, pk = decode_id("Resident", resident_id, 2, field=field)
    tenant = info.context.tenant
    if tenant is None or tenant.institution_id != institution_id:
        # Not a resident of this tenant: the policy's answer (NOT_FOUND, FORBIDDEN) comes first.
        require(info.context.principal, action, institution=institution_id, resident_id=pk)
        if info.context.require_tenant().institution_id != institution_id:
            raise NotFound("Not found.")
    await require_resident_access(info, action, institution_id, pk, categories)
    return institution_id, pk


async def part_to_change(
    info: YiyangInfo,
    type_name: str,
    given_id: str,
    action: Action,
    resident_of: Callable[[int], Awaitable[int]],
    *,
    categories: Sequence[Category] | None = None,
) -> tuple[int, int, int]:
    """(institution id, resident pk, part pk) of a part of a resident's record (an entry, a contact, a
    report…) of the acting institution: NOT_FOUND for another institution's or an unknown one (the
    policy asked first, so that a role without the action learns nothing), FORBIDDEN for a role that
    may not do `action`, the decision on the trail."""
    institution_id, pk = decode_id(type_name, given_id, 2)
    require(info.context.principal, action, institution=institution_id)
    if info.context.require_tenant().institution_id != institution_id:
        raise NotFound("Not found.")
    resident_id = await resident_of(pk)
    await require_resident_access(info, action, institution_id, resident_id, categories)
    return institution_id, resident_id, pk


async def consent_refusals(
    info: YiyangInfo,
    action: Action,
    resident_ids: Iterable[int],
    category: Category,
    *,
    kinds: frozenset[PrincipalKind],
) -> dict[int, Forbidden]:
    """For a page of residents (the policy asked already): the refusal of each resident the caller may
    not see `category` of, when the caller is of one of `kinds` (others are not asked: no query). Every
    resident's read is written to the audit trail, permitted or denied."""
    principal = info.context.principal
    wanted = sorted(set(resident_ids))
    field = operation_field(info)
    decided = info.context.decisions
    if principal is None or principal.kind not in kinds:
        # Not asked (staff under care delivery, decided by the policy alone): still recorded.
        permit = domain.Decision(True, domain.DecisionReason.CARE_DELIVERY)
        for resident_id in wanted:
            audit_decision(info, action, resident_id, (category,), None, permit)
            decided[(field, resident_id, action, (category,), None)] = permit
        return {}
    loaded = await info.context.loaders.consent_terms.load_many(wanted)
    tenant = info.context.require_tenant()
    now = datetime.now(UTC)
    refusals: dict[int, Forbidden] = {}
    for resident_id, terms in zip(wanted, loaded, strict=True):
        decision = domain.decide_with(
            principal,
            action,
            resident_id,
            category,
            None,
            institution_id=tenant.institution_id,
            consents=terms,
            now=now,
        )
        audit_decision(info, action, resident_id, (category,), None, decision)
        decided[(field, resident_id, action, (category,), None)] = decision
        refused = domain.refusal(decision)
        if refused is not None:
            refusals[resident_id] = refused
    return refusals

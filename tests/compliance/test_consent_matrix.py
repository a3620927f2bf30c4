"""The decision point as a table: principal kind × data category × consent state, for reads and writes
(compliance/consent.py `decide_with`, no database: the consents are given as the query returns them).
End-to-end cases through GraphQL: tests/api/test_consents_graphql.py."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum

import pytest

from compliance.consent import (
    Category,
    ConsentStatus,
    ConsentTerms,
    Decision,
    DecisionReason,
    GranteeKind,
    GrantorKind,
    Purpose,
    decide_with,
    refusal,
)
from compliance.policy import Action
from compliance.principals import Principal, PrincipalKind, StaffRole
from tenants.errors import ConsentRequired, Forbidden

HERE, ELSEWHERE = 10, 20
RESIDENT = 7
NOW = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
NAMED_ACCOUNT, OTHER_ACCOUNT = 501, 502
NAMED_CLIENT, OTHER_CLIENT = "client-named-0000001", "client-other-0000002"


class Kind(StrEnum):
    STAFF_HERE = "staff of the institution"
    STAFF_ELSEWHERE = "staff of another institution"
    FAMILY_NAMED = "family member named"
    FAMILY_NOT_NAMED = "family member not named"
    INTEGRATOR_NAMED = "integrator named"
    INTEGRATOR_NOT_NAMED = "integrator not named"
    SUPERVISOR = "supervisor"
    OPERATOR = "operator"


class State(StrEnum):
    NONE = "none"
    ACTIVE = "active"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"
    OTHER_GRANTEE = "other grantee"


PRINCIPALS: dict[Kind, Principal] = {
    Kind.STAFF_HERE: Principal(
        "account:1", PrincipalKind.STAFF, institution_id=HERE, roles=frozenset({StaffRole.NURSE})
    ),
    Kind.STAFF_ELSEWHERE: Principal(
        "account:2", PrincipalKind.STAFF, institution_id=ELSEWHERE, roles=frozenset({StaffRole.NURSE})
    ),
    Kind.FAMILY_NAMED: Principal(
        f"account:{NAMED_ACCOUNT}",
        PrincipalKind.FAMILY,
        institution_id=HERE,
        followed_resident_ids=frozenset({RESIDENT}),
    ),
    # Follows the resident (another relative's account), but no consent names it.
    Kind.FAMILY_NOT_NAMED: Principal(
        f"account:{OTHER_ACCOUNT}",
        PrincipalKind.FAMILY,
        institution_id=HERE,
        followed_resident_ids=frozenset({RESIDENT}),
    ),
    Kind.INTEGRATOR_NAMED: Principal(
        f"client:{NAMED_CLIENT}",
        PrincipalKind.INTEGRATOR,
        institution_id=HERE,
        scopes=frozenset({"residents:read", "vitals:write"}),
        client_id=NAMED_CLIENT,
    ),
    Kind.INTEGRATOR_NOT_NAMED: Principal(
        f"client:{OTHER_CLIENT}",
        PrincipalKind.INTEGRATOR,
        institution_id=HERE,
        scopes=frozenset({"residents:read", "vitals:write"}),
        client_id=OTHER_CLIENT,
    ),
    Kind.SUPERVISOR: Principal("account:3", PrincipalKind.SUPERVISOR, region_ids=frozenset({1})),
    Kind.OPERATOR: Principal("account:4", PrincipalKind.OPERATOR),
}

# A read and a write action of each category (billing has no actions yet: the resident's own).
ACTIONS: dict[Category, tuple[Action, Action]] = {
    Category.IDENTITY: (Action.RESIDENT_VIEW, Action.RESIDENT_UPDATE),
    Category.VITALS: (Action.VITALS_VIEW, Action.VITALS_RECORD),
    Category.MEDICAL_HISTORY: (Action.HEALTH_RECORD_VIEW, Action.HEALTH_RECORD_EDIT),
    Category.MEDICATIONS: (Action.HEALTH_RECORD_VIEW, Action.HEALTH_RECORD_EDIT),
    Category.ASSESSMENTS: (Action.ASSESSMENT_VIEW, Action.ASSESSMENT_RECORD),
    Category.PHOTOS: (Action.RESIDENT_PHOTO_VIEW, Action.RESIDENT_PHOTO_SET),
    Category.BILLING: (Action.RESIDENT_VIEW, Action.RESIDENT_UPDATE),
    Category.DAILY_CARE: (Action.SERVICE_RECORD_VIEW, Action.SERVICE_RECORD_CREATE),
}


def terms(
    consent_id: int,
    category: Category,
    *,
    family_accounts: frozenset[int] = frozenset(),
    client_id: str | None = None,
    status: ConsentStatus = ConsentStatus.ACTIVE,
    end: datetime | None = None,
) -> ConsentTerms:
    family = client_id is None
    return ConsentTerms(
        consent_id=consent_id,
        version=2 if status is ConsentStatus.WITHDRAWN else 1,
        resident_id=RESIDENT,
        grantor_kind=GrantorKind.RESIDENT,
        grantor_family_member_id=None,
        grantee_kind=GranteeKind.FAMILY_MEMBER if family else GranteeKind.INTEGRATOR,
        grantee_family_member_id=31 if family else None,
        grantee_client_id=client_id,
        purposes=frozenset(
            {Purpose.FAMILY_SHARING, Purpose.PHOTOS} if family else {Purpose.THIRD_PARTY_INTEGRATION}
        ),
        categories=frozenset({category}),
        period_start=NOW - timedelta(days=30),
        period_end=end,
        stored_status=status,
        grantee_accounts=family_accounts,
    )


def consents(state: State, category: Category) -> list[ConsentTerms]:
    """The resident's consents in `state`: one for the named family member's account, one for the named
    integrator client (or, for OTHER_GRANTEE, for somebody else)."""
    named_family, named_client = frozenset({NAMED_ACCOUNT}), NAMED_CLIENT
    match state:
        case State.NONE:
            return []
        case State.ACTIVE:
            extra = {}
        case State.WITHDRAWN:
            extra = {"status": ConsentStatus.WITHDRAWN}
        case State.EXPIRED:
            extra = {"end": NOW - timedelta(days=1)}
        case State.OTHER_GRANTEE:
            named_family, named_client, extra = frozenset({999}), "client-somebody-else-3", {}
    return [
        terms(1, category, family_accounts=named_family, **extra),  # type: ignore[arg-type]
        terms(2, category, client_id=named_client, **extra),  # type: ignore[arg-type]
    ]


_BY_STATE = {
    State.ACTIVE: Decision(True, DecisionReason.CONSENT),
    State.WITHDRAWN: Decision(False, DecisionReason.CONSENT_WITHDRAWN),
    State.EXPIRED: Decision(False, DecisionReason.CONSENT_EXPIRED),
    State.NONE: Decision(False, DecisionReason.NO_CONSENT),
    State.OTHER_GRANTEE: Decision(False, DecisionReason.NO_CONSENT),
}


def expected(kind: Kind, state: State, write: bool) -> Decision:
    match kind:
        case Kind.STAFF_HERE:
            return Decision(True, DecisionReason.CARE_DELIVERY)
        case Kind.STAFF_ELSEWHERE:
            return Decision(False, DecisionReason.OTHER_INSTITUTION)
        case Kind.SUPERVISOR | Kind.OPERATOR:
            return Decision(False, DecisionReason.NO_RESIDENT_DATA)
        case Kind.FAMILY_NAMED:
            return Decision(False, DecisionReason.READ_ONLY) if write else _BY_STATE[state]
        case Kind.FAMILY_NOT_NAMED:
            return Decision(False, DecisionReason.READ_ONLY if write else DecisionReason.NO_CONSENT)
        case Kind.INTEGRATOR_NAMED:
            return _BY_STATE[state]
        case Kind.INTEGRATOR_NOT_NAMED:
            return Decision(False, DecisionReason.NO_CONSENT)


CASES = [
    (kind, category, state, write)
    for kind in Kind
    for category in Category
    for state in State
    for write in (False, True)
]


@pytest.mark.parametrize(
    ("kind", "category", "state", "write"),
    CASES,
    ids=[f"{k.name}-{c.value}-{s.name}-{'write' if w else 'read'}" for k, c, s, w in CASES],
)
def test_matrix(kind: Kind, category: Category, state: State, write: bool) -> None:
    action = ACTIONS[category][1 if write else 0]
    decision = decide_with(
        PRINCIPALS[kind],
        action,
        RESIDENT,
        category,
        None,
        institution_id=HERE,
        consents=consents(state, category),
        now=NOW,
    )
    want = expected(kind, state, write)
    assert (decision.permit, decision.reason) == (want.permit, want.reason)
    if decision.permit and decision.reason is DecisionReason.CONSENT:
        named = 1 if PRINCIPALS[kind].kind is PrincipalKind.FAMILY else 2
        assert decision.consent_id == named


def test_the_matrix_is_whole() -> None:
    assert len(CASES) == len(Kind) * len(Category) * len(State) * 2 == 640
    # Every kind of outcome occurs: nothing is decided by one rule alone.
    reasons = {expected(k, s, w).reason for k, _, s, w in CASES}
    assert reasons == set(DecisionReason) - {
        DecisionReason.CONSENT_NOT_STARTED,
        DecisionReason.NOT_FOLLOWED,
        DecisionReason.POLICY,  # no category: not a consent decision
    }


@pytest.mark.parametrize("category", list(Category))
def test_a_consent_for_another_category_does_not_reach(category: Category) -> None:
    other = next(c for c in Category if c is not category)
    for kind in (Kind.FAMILY_NAMED, Kind.INTEGRATOR_NAMED):
        decision = decide_with(
            PRINCIPALS[kind],
            ACTIONS[category][0],
            RESIDENT,
            category,
            None,
            institution_id=HERE,
            consents=consents(State.ACTIVE, other),
            now=NOW,
        )
        assert decision == Decision(False, DecisionReason.NO_CONSENT)


def test_the_purpose_must_be_granted() -> None:
    family, integrator = PRINCIPALS[Kind.FAMILY_NAMED], PRINCIPALS[Kind.INTEGRATOR_NAMED]
    given = consents(State.ACTIVE, Category.VITALS)

    def decide(
        principal: Principal, purpose: Purpose | None, category: Category = Category.VITALS
    ) -> Decision:
        return decide_with(
            principal,
            Action.VITALS_VIEW,
            RESIDENT,
            category,
            purpose,
            institution_id=HERE,
            consents=given,
            now=NOW,
        )

    assert decide(family, None).permit
    assert not decide(family, Purpose.RESEARCH_ANALYTICS).permit
    assert decide(integrator, None).permit
    assert decide(integrator, Purpose.CROSS_BORDER_PAYMENT).reason is DecisionReason.NO_CONSENT
    # Staff beyond care delivery need a consent naming the institution or a programme.
    staff = PRINCIPALS[Kind.STAFF_HERE]
    assert decide(staff, Purpose.RESEARCH_ANALYTICS).reason is DecisionReason.NO_CONSENT
    research = ConsentTerms(
        consent_id=9,
        version=1,
        resident_id=RESIDENT,
        grantor_kind=GrantorKind.RESIDENT,
        grantor_family_member_id=None,
        grantee_kind=GranteeKind.PROGRAMME,
        grantee_family_member_id=None,
        grantee_client_id=None,
        purposes=frozenset({Purpose.RESEARCH_ANALYTICS}),
        categories=frozenset({Category.VITALS}),
        period_start=NOW - timedelta(days=1),
        period_end=None,
        stored_status=ConsentStatus.ACTIVE,
    )
    given = [*given, research]
    assert decide(staff, Purpose.RESEARCH_ANALYTICS) == Decision(True, DecisionReason.CONSENT, 9)


def test_photos_go_by_the_photos_purpose_for_families() -> None:
    family = PRINCIPALS[Kind.FAMILY_NAMED]
    only_sharing = [
        replace(t, purposes=frozenset({Purpose.FAMILY_SHARING}))
        for t in consents(State.ACTIVE, Category.PHOTOS)
    ]
    decision = decide_with(
        family,
        Action.RESIDENT_PHOTO_VIEW,
        RESIDENT,
        Category.PHOTOS,
        None,
        institution_id=HERE,
        consents=only_sharing,
        now=NOW,
    )
    assert decision == Decision(False, DecisionReason.NO_CONSENT)


def test_a_period_not_yet_begun_and_the_boundaries() -> None:
    integrator = PRINCIPALS[Kind.INTEGRATOR_NAMED]
    (_, future) = consents(State.ACTIVE, Category.VITALS)
    later = replace(future, period_start=NOW + timedelta(hours=1))

    def at(given: ConsentTerms, now: datetime) -> Decision:
        return decide_with(
            integrator,
            Action.VITALS_RECORD,
            RESIDENT,
            Category.VITALS,
            None,
            institution_id=HERE,
            consents=[given],
            now=now,
        )

    assert at(later, NOW).reason is DecisionReason.CONSENT_NOT_STARTED
    assert at(later, NOW + timedelta(hours=1)).permit
    ending = replace(future, period_end=NOW)
    assert at(ending, NOW - timedelta(microseconds=1)).permit
    assert at(ending, NOW).reason is DecisionReason.CONSENT_EXPIRED  # the end is exclusive
    assert ending.status_at(NOW) is ConsentStatus.EXPIRED


def test_a_family_account_reaches_only_residents_it_follows_in_its_institution() -> None:
    family = PRINCIPALS[Kind.FAMILY_NAMED]
    given = consents(State.ACTIVE, Category.IDENTITY)
    elsewhere = decide_with(
        family, Action.RESIDENT_VIEW, RESIDENT, Category.IDENTITY, None,
        institution_id=ELSEWHERE, consents=given, now=NOW,
    )  # fmt: skip
    assert elsewhere.reason is DecisionReason.OTHER_INSTITUTION
    unfollowed = decide_with(
        family, Action.RESIDENT_VIEW, RESIDENT + 1, Category.IDENTITY, None,
        institution_id=HERE, consents=given, now=NOW,
    )  # fmt: skip
    assert unfollowed.reason is DecisionReason.NOT_FOLLOWED


def test_refusals_tell_consent_from_role() -> None:
    assert refusal(Decision(True, DecisionReason.CARE_DELIVERY)) is None
    for reason in (
        DecisionReason.NO_CONSENT,
        DecisionReason.CONSENT_WITHDRAWN,
        DecisionReason.CONSENT_EXPIRED,
        DecisionReason.CONSENT_NOT_STARTED,
    ):
        error = refusal(Decision(False, reason))
        assert isinstance(error, ConsentRequired) and error.code == "FORBIDDEN"
        assert error.reason == "CONSENT_REQUIRED"
    for reason in (
        DecisionReason.NO_RESIDENT_DATA,
        DecisionReason.OTHER_INSTITUTION,
        DecisionReason.READ_ONLY,
    ):
        error = refusal(Decision(False, reason))
        assert isinstance(error, Forbidden) and not isinstance(error, ConsentRequired)
        assert error.reason is None

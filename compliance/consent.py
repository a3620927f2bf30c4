"""Consent records of residents and the one decision point for resident data.

Consents are modelled on FHIR Consent (migrations/tenant/0013_consents.sql): a grantor (the resident, or a
guardian with the authority recorded) lets a grantee (a named family member, an integrator client, a
research or analytics programme, or the institution itself) process some data categories of the resident
for some purposes, within a period. Every change is a new version of the consent (`consent_id`,
`version`); a withdrawal is a new version with status withdrawn, who recorded it, when and why. A
consent is expired when its period ended: computed at decision time, never stored.

`decide(principal, action, resident_id, category, purpose)` is the second question every resolver or job
that touches a resident's data asks, after the policy's role check (compliance/policy.py `require`):

- staff of the institution act under care delivery and are permitted (their roles were checked by the
  policy); for another purpose (research, analytics) they need a consent naming the institution or a
  programme for that purpose and category;
- integrator clients: only under an active consent naming their client id, for the purpose (default
  third-party integration) and the category; reads and writes alike;
- family accounts: only for residents they follow, reads only, under an active consent naming a family
  member they are linked to (shared.family_link) for the purpose (family sharing; photos: photos) and
  the category;
- supervisors and platform operators: never resident-level data;
- anything else: denied.

The consents are read in the current unit of work, one query per resident (or per page of residents
through the request's DataLoader, schema/context.py) and never cached beyond the request: a withdrawal
takes effect on the very next request. The decision never opens a ciphertext: what it reads is plain.
"""

import re
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from care.residents import next_ids
from care.sealed_rows import admission_date_of, execute, open_row, padded, seal, text, unpadded, writable
from compliance.audit import AuditEvent, Outcome, RequestFacts, request_event
from compliance.encryption import field_cipher
from compliance.policy import Action
from compliance.principals import Principal, PrincipalKind
from tenants.context import current_tenant
from tenants.errors import Conflict, ConsentRequired, Forbidden, InvalidInput, NotFound, raise_if_any

TABLE = "consent"
SEALED = ("grantee_programme", "note", "withdrawal_reason")
_BLOCK = 64
MAX_PROGRAMME = 200
MAX_NOTE = 2000
MAX_REASON = 1000
MAX_NOTICE_VERSION = 32
NOT_FOUND = "Not found."
CONSENT_REQUIRED = "No active consent allows this use of the resident's data."
NO_RESIDENT_DATA = "Your role does not allow this action."


class Purpose(StrEnum):
    CARE_DELIVERY = "care_delivery"
    FAMILY_SHARING = "family_sharing"
    PHOTOS = "photos"
    THIRD_PARTY_INTEGRATION = "third_party_integration"
    RESEARCH_ANALYTICS = "research_analytics"
    CROSS_BORDER_PAYMENT = "cross_border_payment"


class Category(StrEnum):
    """Data categories; which parts of the record belong to which: docs/security.md ("Consent")."""

    IDENTITY = "identity"  # name, gender, birth date, age, ID-card number, phone; family members
    VITALS = "vitals"  # vital readings and the resident's normal ranges
    MEDICAL_HISTORY = "medical_history"  # diagnoses, allergies, check-up reports
    MEDICATIONS = "medications"
    ASSESSMENTS = "assessments"  # ability assessments, care-level suggestions
    PHOTOS = "photos"  # the resident's photo
    BILLING = "billing"
    DAILY_CARE = "daily_care"  # service timeline, preferences, family log, emergency contacts


class GrantorKind(StrEnum):
    RESIDENT = "resident"
    GUARDIAN = "guardian"


class Authority(StrEnum):
    """What entitles the grantor: the resident themself, or a guardian's authority."""

    SELF = "self"
    LEGAL_GUARDIAN = "legal_guardian"
    POWER_OF_ATTORNEY = "power_of_attorney"
    NEXT_OF_KIN = "next_of_kin"


class GranteeKind(StrEnum):
    FAMILY_MEMBER = "family_member"
    INTEGRATOR = "integrator"
    PROGRAMME = "programme"
    INSTITUTION = "institution"


class RecordingMethod(StrEnum):
    PAPER_SIGNATURE_SCANNED = "paper_signature_scanned"
    IN_APP_CONFIRMATION = "in_app_confirmation"
    VERBAL_WITNESSED = "verbal_witnessed"


class ConsentStatus(StrEnum):
    ACTIVE = "active"
    WITHDRAWN = "withdrawn"
    EXPIRED = "expired"  # computed from the period, never stored


class DecisionReason(StrEnum):
    CARE_DELIVERY = "care_delivery"  # permit: staff of the institution caring for the resident
    CONSENT = "consent"  # permit: an active consent names the principal for the purpose and category
    NO_CONSENT = "no_consent"
    CONSENT_WITHDRAWN = "consent_withdrawn"
    CONSENT_EXPIRED = "consent_expired"
    CONSENT_NOT_STARTED = "consent_not_started"
    OTHER_INSTITUTION = "other_institution"
    NOT_FOLLOWED = "not_followed"  # a family account that does not follow the resident
    READ_ONLY = "read_only"  # family accounts never write resident data
    NO_RESIDENT_DATA = "no_resident_data"  # supervisors and platform operators
    POLICY = "policy"  # permit: no data category is touched, the policy alone decides (compliance/policy.py)


@dataclass(frozen=True, slots=True)
class Decision:
    permit: bool
    reason: DecisionReason
    consent_id: int | None = None  # the consent that permitted it

    @property
    def needs_consent(self) -> bool:
        """A denial a consent could lift (reported as FORBIDDEN with reason CONSENT_REQUIRED)."""
        return not self.permit and self.reason in _CONSENT_REASONS


_CONSENT_REASONS = frozenset(
    {
        DecisionReason.NO_CONSENT,
        DecisionReason.CONSENT_WITHDRAWN,
        DecisionReason.CONSENT_EXPIRED,
        DecisionReason.CONSENT_NOT_STARTED,
    }
)


@dataclass(frozen=True, slots=True)
class Grantor:
    kind: GrantorKind = GrantorKind.RESIDENT
    family_member_id: int | None = None  # a guardian: a family member of the resident
    authority: Authority = Authority.SELF


@dataclass(frozen=True, slots=True)
class Grantee:
    kind: GranteeKind
    family_member_id: int | None = None
    client_id: str | None = None
    programme: str | None = None  # sealed at rest


@dataclass(frozen=True, slots=True)
class NewConsent:
    resident_id: int
    grantor: Grantor
    grantee: Grantee
    purposes: frozenset[Purpose]
    categories: frozenset[Category]
    notice_version: str
    notice_sha256: str  # 64 hex digits: SHA-256 of the notice text shown
    method: RecordingMethod
    period_start: datetime | None = None  # default: now
    period_end: datetime | None = None  # exclusive; None: until withdrawn
    note: str | None = None  # sealed at rest


@dataclass(frozen=True, slots=True)
class ConsentTerms:
    """The plain part of a consent version: what the decision reads, with the family accounts linked to
    its family-member grantor and grantee (shared.family_link, read in the same query)."""

    consent_id: int
    version: int
    resident_id: int
    grantor_kind: GrantorKind
    grantor_family_member_id: int | None
    grantee_kind: GranteeKind
    grantee_family_member_id: int | None
    grantee_client_id: str | None
    purposes: frozenset[Purpose]
    categories: frozenset[Category]
    period_start: datetime
    period_end: datetime | None
    stored_status: ConsentStatus  # ACTIVE or WITHDRAWN
    grantor_accounts: frozenset[int] = frozenset()
    grantee_accounts: frozenset[int] = frozenset()

    def status_at(self, now: datetime) -> ConsentStatus:
        if (
            self.stored_status is ConsentStatus.ACTIVE
            and self.period_end is not None
            and self.period_end <= now
        ):
            return ConsentStatus.EXPIRED
        return self.stored_status

    def names(self, principal: Principal) -> bool:
        """Whether the grantee is `principal` (a family account linked to the grantee member, an
        integrator's client, or the institution / a programme for staff)."""
        match principal.kind:
            case PrincipalKind.FAMILY:
                account = principal.account_id
                return self.grantee_kind is GranteeKind.FAMILY_MEMBER and account in self.grantee_accounts
            case PrincipalKind.INTEGRATOR:
                return self.grantee_kind is GranteeKind.INTEGRATOR and self.grantee_client_id == client_of(
                    principal
                )
            case PrincipalKind.STAFF:
                return self.grantee_kind in (GranteeKind.INSTITUTION, GranteeKind.PROGRAMME)
            case _:
                return False

    def granted_by(self, principal: Principal) -> bool:
        """Whether `principal` is the guardian who granted it (a family account linked to the grantor)."""
        account = principal.account_id
        return (
            principal.kind is PrincipalKind.FAMILY
            and self.grantor_kind is GrantorKind.GUARDIAN
            and account in self.grantor_accounts
        )


@dataclass(frozen=True, slots=True)
class ConsentVersion:
    """One version of a consent as shown: the plain terms plus the opened free texts."""

    id: int  # the row
    terms: ConsentTerms
    grantor_authority: Authority
    grantee_programme: str | None
    notice_version: str
    notice_sha256: str  # hex
    method: RecordingMethod
    note: str | None
    withdrawal_reason: str | None
    recorded_by: str
    recorded_at: datetime


def client_of(principal: Principal) -> str | None:
    if principal.kind is not PrincipalKind.INTEGRATOR:
        return None
    return principal.client_id or principal.subject.removeprefix("client:")


# The decision -------------------------------------------------------------------------------------


_CATEGORY_OF: dict[Action, Category] = {
    Action.RESIDENT_VIEW: Category.IDENTITY,
    Action.RESIDENT_ADMIT: Category.IDENTITY,
    Action.RESIDENT_UPDATE: Category.IDENTITY,
    Action.RESIDENT_DISCHARGE: Category.IDENTITY,
    Action.FAMILY_MEMBER_VIEW: Category.IDENTITY,
    Action.FAMILY_MEMBER_ADD: Category.IDENTITY,
    Action.FAMILY_MEMBER_EDIT: Category.IDENTITY,
    Action.HEALTH_RECORD_VIEW: Category.MEDICAL_HISTORY,
    Action.HEALTH_RECORD_EDIT: Category.MEDICAL_HISTORY,
    Action.VITALS_VIEW: Category.VITALS,
    Action.VITALS_RECORD: Category.VITALS,
    Action.VITAL_RANGES_SET: Category.VITALS,
    Action.ASSESSMENT_VIEW: Category.ASSESSMENTS,
    Action.ASSESSMENT_RECORD: Category.ASSESSMENTS,
    Action.SERVICE_RECORD_VIEW: Category.DAILY_CARE,
    Action.SERVICE_RECORD_CREATE: Category.DAILY_CARE,
    Action.SERVICE_RECORD_CREATE_SOCIAL: Category.DAILY_CARE,
    Action.CHECKUP_REPORT_VIEW: Category.MEDICAL_HISTORY,
    Action.CHECKUP_REPORT_UPLOAD: Category.MEDICAL_HISTORY,
    Action.RESIDENT_PHOTO_VIEW: Category.PHOTOS,
    Action.RESIDENT_PHOTO_SET: Category.PHOTOS,
    Action.PREFERENCES_VIEW: Category.DAILY_CARE,
    Action.PREFERENCES_EDIT: Category.DAILY_CARE,
    Action.EMERGENCY_CONTACTS_VIEW: Category.DAILY_CARE,
    Action.EMERGENCY_CONTACTS_EDIT: Category.DAILY_CARE,
    Action.FAMILY_LOG_VIEW: Category.DAILY_CARE,
    Action.FAMILY_LOG_RECORD: Category.DAILY_CARE,
    Action.CARE_PLAN_VIEW: Category.DAILY_CARE,
    Action.CARE_PLAN_EDIT: Category.DAILY_CARE,
    Action.TASK_VIEW: Category.DAILY_CARE,
    Action.TASK_COMPLETE: Category.DAILY_CARE,
    Action.SOP_STEP_VIEW: Category.DAILY_CARE,
    Action.SOP_STEP_COMPLETE: Category.DAILY_CARE,
    Action.RESIDENT_BUTLER_ASSIGN: Category.DAILY_CARE,
}


def category_of(action: Action) -> Category | None:
    """The data category a resident-level action touches (None: not resident data). Medications are
    part of the health record (`health_record.*`): resolvers of medication fields name MEDICATIONS."""
    return _CATEGORY_OF.get(action)


def is_write(action: Action) -> bool:
    return not action.value.endswith(".view")


def default_purpose(principal: Principal, category: Category) -> Purpose:
    """The purpose a principal acts under when the caller names none."""
    match principal.kind:
        case PrincipalKind.FAMILY:
            return Purpose.PHOTOS if category is Category.PHOTOS else Purpose.FAMILY_SHARING
        case PrincipalKind.INTEGRATOR:
            return Purpose.THIRD_PARTY_INTEGRATION
        case _:
            return Purpose.CARE_DELIVERY


def decide_with(
    principal: Principal,
    action: Action,
    resident_id: int,
    category: Category,
    purpose: Purpose | None,
    *,
    institution_id: int,
    consents: Sequence[ConsentTerms] | None,
    now: datetime,
) -> Decision:
    """The decision, given the current versions of the resident's consents (None: not loaded, for the
    cases that need none). `institution_id` is the institution the resident belongs to."""
    wanted = purpose or default_purpose(principal, category)
    match principal.kind:
        case PrincipalKind.SUPERVISOR | PrincipalKind.OPERATOR:
            return Decision(False, DecisionReason.NO_RESIDENT_DATA)
        case PrincipalKind.STAFF:
            if principal.institution_id != institution_id or not principal.roles:
                return Decision(False, DecisionReason.OTHER_INSTITUTION)
            if wanted is Purpose.CARE_DELIVERY:
                return Decision(True, DecisionReason.CARE_DELIVERY)
        case PrincipalKind.FAMILY:
            if principal.institution_id != institution_id:
                return Decision(False, DecisionReason.OTHER_INSTITUTION)
            if resident_id not in principal.followed_resident_ids:
                return Decision(False, DecisionReason.NOT_FOLLOWED)
            if is_write(action):
                return Decision(False, DecisionReason.READ_ONLY)
        case PrincipalKind.INTEGRATOR:
            pass
    return _by_consent(principal, resident_id, category, wanted, consents or (), now)


def _by_consent(
    principal: Principal,
    resident_id: int,
    category: Category,
    purpose: Purpose,
    consents: Sequence[ConsentTerms],
    now: datetime,
) -> Decision:
    denial = DecisionReason.NO_CONSENT
    for terms in consents:
        if terms.resident_id != resident_id or not terms.names(principal):
            continue
        if category not in terms.categories or purpose not in terms.purposes:
            continue
        status = terms.status_at(now)
        if status is ConsentStatus.ACTIVE and terms.period_start <= now:
            return Decision(True, DecisionReason.CONSENT, terms.consent_id)
        if denial is DecisionReason.NO_CONSENT:
            denial = {
                ConsentStatus.WITHDRAWN: DecisionReason.CONSENT_WITHDRAWN,
                ConsentStatus.EXPIRED: DecisionReason.CONSENT_EXPIRED,
            }.get(status, DecisionReason.CONSENT_NOT_STARTED)
    return Decision(False, denial)


ConsentSource = Callable[[int], Awaitable[Sequence[ConsentTerms]]]


def _needs_consents(principal: Principal, category: Category, purpose: Purpose | None) -> bool:
    if principal.kind in (PrincipalKind.SUPERVISOR, PrincipalKind.OPERATOR):
        return False
    if principal.kind is PrincipalKind.STAFF:
        return (purpose or Purpose.CARE_DELIVERY) is not Purpose.CARE_DELIVERY
    return True


async def decide(
    principal: Principal,
    action: Action,
    resident_id: int,
    category: Category,
    purpose: Purpose | None = None,
    *,
    consents: ConsentSource | None = None,
) -> Decision:
    """Whether `principal` may do `action` on `category` of the resident for `purpose` (default: the
    principal's usual purpose), in the current unit of work. `consents` loads the current versions of a
    resident's consents (a request's DataLoader); default: one query now. Staff under care delivery,
    supervisors and operators are decided without reading consents."""
    loaded: Sequence[ConsentTerms] | None = None
    if _needs_consents(principal, category, purpose):
        loaded = await (consents or current_terms)(resident_id)
    return decide_with(
        principal,
        action,
        resident_id,
        category,
        purpose,
        institution_id=current_tenant().institution_id,
        consents=loaded,
        now=datetime.now(UTC),
    )


def purpose_of(
    principal: Principal | None, categories: Sequence[Category], given: Purpose | None
) -> Purpose | None:
    """The purpose a decision is recorded under: the one given, else the principal's usual one."""
    if given is not None or principal is None or not categories:
        return given
    return default_purpose(principal, categories[0])


def decision_event(
    request: RequestFacts,
    action: Action,
    resident_id: int,
    categories: Sequence[Category],
    purpose: Purpose | None,
    decision: Decision,
) -> AuditEvent:
    """The audit event of one decision about one resident's `categories` (no values: names only), for
    the request `request` (its principal, request id and client address)."""
    acted_for = purpose_of(request.principal, categories, purpose)
    return request_event(
        request,
        action,
        resident_id=resident_id,
        data_categories=(category.value for category in categories),
        purpose=acted_for.value if acted_for is not None else None,
        outcome=Outcome.PERMITTED if decision.permit else Outcome.DENIED,
        reason_code=None if decision.permit else decision.reason.value,
    )


def refusal(decision: Decision) -> Forbidden | None:
    """The error a denial is reported as (FORBIDDEN; reason CONSENT_REQUIRED when a consent would
    lift it), or None for a permit."""
    if decision.permit:
        return None
    if decision.needs_consent:
        return ConsentRequired(CONSENT_REQUIRED)
    return Forbidden(NO_RESIDENT_DATA)


async def require_consent(
    principal: Principal | None,
    action: Action,
    resident_id: int,
    category: Category,
    purpose: Purpose | None = None,
    *,
    consents: ConsentSource | None = None,
) -> Decision:
    """`decide`, raising FORBIDDEN (extensions.reason CONSENT_REQUIRED where a consent would lift the
    denial) unless it permits."""
    if principal is None:
        raise Forbidden(NO_RESIDENT_DATA)
    decision = await decide(principal, action, resident_id, category, purpose, consents=consents)
    error = refusal(decision)
    if error is not None:
        raise error
    return decision


# Reading -----------------------------------------------------------------------------------------

_TERMS_COLUMNS = """c.id, c.consent_id, c.version, c.resident_id, c.grantor_kind, c.grantor_family_member_id,
    c.grantee_kind, c.grantee_family_member_id, c.grantee_client_id, c.purposes, c.categories,
    c.period_start, c.period_end, c.status,
    CASE WHEN c.grantor_family_member_id IS NULL THEN '{}'::bigint[] ELSE
        ARRAY(SELECT fl.account_id FROM shared.family_link fl WHERE fl.institution_id = $2
              AND fl.resident_id = c.resident_id AND fl.family_member_id = c.grantor_family_member_id)
    END AS grantor_accounts,
    CASE WHEN c.grantee_family_member_id IS NULL THEN '{}'::bigint[] ELSE
        ARRAY(SELECT fl.account_id FROM shared.family_link fl WHERE fl.institution_id = $2
              AND fl.resident_id = c.resident_id AND fl.family_member_id = c.grantee_family_member_id)
    END AS grantee_accounts"""
_DETAIL_COLUMNS = """, c.grantor_authority, c.grantee_programme, c.notice_version, c.notice_sha256, c.method,
    c.note, c.withdrawal_reason, c.recorded_by, c.recorded_at"""


def _terms_of(row: Mapping[str, Any]) -> ConsentTerms:
    return ConsentTerms(
        consent_id=row["consent_id"],
        version=row["version"],
        resident_id=row["resident_id"],
        grantor_kind=GrantorKind(row["grantor_kind"]),
        grantor_family_member_id=row["grantor_family_member_id"],
        grantee_kind=GranteeKind(row["grantee_kind"]),
        grantee_family_member_id=row["grantee_family_member_id"],
        grantee_client_id=row["grantee_client_id"],
        purposes=frozenset(Purpose(p) for p in row["purposes"]),
        categories=frozenset(Category(c) for c in row["categories"]),
        period_start=row["period_start"],
        period_end=row["period_end"],
        stored_status=ConsentStatus(row["status"]),
        grantor_accounts=frozenset(row["grantor_accounts"] or ()),
        grantee_accounts=frozenset(row["grantee_accounts"] or ()),
    )


async def terms_of(resident_ids: Iterable[int]) -> dict[int, tuple[ConsentTerms, ...]]:
    """The current versions of the consents of each resident, plain parts only: one query."""
    wanted = sorted(set(resident_ids))
    found: dict[int, list[ConsentTerms]] = {resident_id: [] for resident_id in wanted}
    if wanted:
        rows = await execute(
            f"""SELECT DISTINCT ON (c.consent_id) {_TERMS_COLUMNS} FROM {TABLE} c
                WHERE c.resident_id = ANY($1::bigint[]) ORDER BY c.consent_id, c.version DESC""",
            [wanted, current_tenant().institution_id],
        )
        for row in rows:
            found[row["resident_id"]].append(_terms_of(row))
    return {resident_id: tuple(terms) for resident_id, terms in found.items()}


async def current_terms(resident_id: int) -> tuple[ConsentTerms, ...]:
    return (await terms_of([resident_id]))[resident_id]


async def load_terms(resident_ids: list[int]) -> list[tuple[ConsentTerms, ...]]:
    """DataLoader batch function (schema/context.py): `terms_of` in the order asked."""
    found = await terms_of(resident_ids)
    return [found[resident_id] for resident_id in resident_ids]


async def _versions(rows: Sequence[Mapping[str, Any]]) -> list[ConsentVersion]:
    if not rows:
        return []
    cipher = await field_cipher()
    await cipher.load_data_keys(row["resident_id"] for row in rows)
    versions = []
    for row in rows:
        opened = await open_row(cipher, TABLE, row, SEALED)

        def opened_text(column: str, opened: Mapping[str, bytes | None] = opened) -> str | None:
            value = opened[column]
            return None if value is None else unpadded(value)

        versions.append(
            ConsentVersion(
                id=row["id"],
                terms=_terms_of(row),
                grantor_authority=Authority(row["grantor_authority"]),
                grantee_programme=opened_text("grantee_programme"),
                notice_version=row["notice_version"],
                notice_sha256=bytes(row["notice_sha256"]).hex(),
                method=RecordingMethod(row["method"]),
                note=opened_text("note"),
                withdrawal_reason=opened_text("withdrawal_reason"),
                recorded_by=row["recorded_by"],
                recorded_at=row["recorded_at"],
            )
        )
    return versions


async def consents_of(resident_id: int, *, status: ConsentStatus | None = None) -> list[ConsentVersion]:
    """The current version of each consent of the resident, in the order the consents were recorded,
    optionally only those of one status (at this moment)."""
    rows = await execute(
        f"""SELECT DISTINCT ON (c.consent_id) {_TERMS_COLUMNS}{_DETAIL_COLUMNS} FROM {TABLE} c
            WHERE c.resident_id = $1 ORDER BY c.consent_id, c.version DESC""",
        [resident_id, current_tenant().institution_id],
    )
    versions = await _versions(rows)
    if status is None:
        return versions
    now = datetime.now(UTC)
    return [version for version in versions if version.terms.status_at(now) is status]


async def consent_history(consent_id: int) -> list[ConsentVersion]:
    """Every version of a consent, newest first (NotFound if there is none)."""
    rows = await execute(
        f"""SELECT {_TERMS_COLUMNS}{_DETAIL_COLUMNS} FROM {TABLE} c
            WHERE c.consent_id = $1 ORDER BY c.version DESC""",
        [consent_id, current_tenant().institution_id],
    )
    if not rows:
        raise NotFound(NOT_FOUND)
    return await _versions(rows)


async def current_consent(consent_id: int) -> ConsentVersion:
    return (await consent_history(consent_id))[0]


# Checks ------------------------------------------------------------------------------------------

_HEX64 = re.compile(r"[0-9a-f]{64}")


async def _family_members_of(resident_id: int, ids: set[int]) -> set[int]:
    if not ids:
        return set()
    rows = await execute(
        "SELECT id FROM family_member WHERE resident_id = $1 AND id = ANY($2::bigint[])",
        [resident_id, sorted(ids)],
    )
    return {row["id"] for row in rows}


async def _client_known(client_id: str) -> bool:
    """An integrator client of this institution or of its chain, not revoked."""
    tenant = current_tenant()
    rows = await execute(
        """SELECT 1 FROM shared.oauth_client WHERE client_id = $1 AND kind = 'integrator'
             AND revoked_at IS NULL AND (institution_id = $2 OR (chain_id IS NOT NULL AND chain_id = $3))""",
        [client_id, tenant.institution_id, tenant.chain_id],
    )
    return bool(rows)


async def check_new_consent(given: NewConsent, now: datetime) -> NewConsent:
    """`given` cleaned, or ValidationFailed with every problem at once."""
    problems: list[InvalidInput] = []
    grantor, grantee = given.grantor, given.grantee
    if grantor.kind is GrantorKind.RESIDENT:
        if grantor.family_member_id is not None or grantor.authority is not Authority.SELF:
            problems.append(
                InvalidInput(
                    "A resident grants for themself: no family member, authority SELF.", field="grantor"
                )
            )
    else:
        if grantor.family_member_id is None:
            problems.append(
                InvalidInput("A guardian is a family member of the resident.", field="grantor.familyMemberId")
            )
        if grantor.authority is Authority.SELF:
            problems.append(InvalidInput("Record the guardian's authority.", field="grantor.authority"))
    programme = text(grantee.programme, "grantee.programme", problems, limit=MAX_PROGRAMME)
    client_id = (grantee.client_id or "").strip() or None
    expected = {
        GranteeKind.FAMILY_MEMBER: ("grantee.familyMemberId", grantee.family_member_id is not None),
        GranteeKind.INTEGRATOR: ("grantee.clientId", client_id is not None),
        GranteeKind.PROGRAMME: ("grantee.programme", programme is not None),
    }
    for kind, (name, present) in expected.items():
        if (grantee.kind is kind) != present:
            message = (
                "Required for this kind of grantee."
                if grantee.kind is kind
                else "Only for another kind of grantee."
            )
            problems.append(InvalidInput(message, field=name))
    if not given.purposes:
        problems.append(InvalidInput("Name at least one purpose.", field="purposes"))
    if not given.categories:
        problems.append(InvalidInput("Name at least one data category.", field="categories"))
    start = given.period_start or now
    if start.tzinfo is None:
        problems.append(InvalidInput("A time with its UTC offset.", field="periodStart"))
    elif given.period_end is not None:
        if given.period_end.tzinfo is None:
            problems.append(InvalidInput("A time with its UTC offset.", field="periodEnd"))
        elif given.period_end <= start:
            problems.append(InvalidInput("The period must end after it starts.", field="periodEnd"))
    notice_version = text(
        given.notice_version, "noticeVersion", problems, limit=MAX_NOTICE_VERSION, required=True
    )
    digest = given.notice_sha256.strip().lower()
    if not _HEX64.fullmatch(digest):
        problems.append(
            InvalidInput("The SHA-256 of the notice text: 64 hexadecimal digits.", field="noticeSha256")
        )
    note = text(given.note, "note", problems, limit=MAX_NOTE)
    members = {m for m in (grantor.family_member_id, grantee.family_member_id) if m is not None}
    known = await _family_members_of(given.resident_id, members)
    for name, member in (
        ("grantor.familyMemberId", grantor.family_member_id),
        ("grantee.familyMemberId", grantee.family_member_id),
    ):
        if member is not None and member not in known:
            problems.append(InvalidInput("Not a family member of this resident.", field=name))
    if (
        grantee.kind is GranteeKind.INTEGRATOR
        and client_id is not None
        and not await _client_known(client_id)
    ):
        problems.append(InvalidInput("No integrator client with this id.", field="grantee.clientId"))
    raise_if_any(problems)
    return replace(
        given,
        grantee=replace(grantee, client_id=client_id, programme=programme),
        period_start=start,
        notice_version=notice_version or "",
        notice_sha256=digest,
        note=note,
    )


# Writing -----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Row:
    """What one inserted version holds."""

    consent_id: int
    version: int
    given: NewConsent
    status: ConsentStatus
    withdrawal_reason: str | None


async def _insert(row: _Row, recorded_by: str) -> ConsentVersion:
    given = row.given
    cipher = await field_cipher()
    await writable(cipher, given.resident_id)
    (row_id,) = await next_ids(TABLE, 1)
    consent_id = row.consent_id or row_id

    async def sealed(column: str, value: str | None) -> bytes | None:
        if value is None:
            return None
        return await seal(cipher, TABLE, column, row_id, given.resident_id, padded(value, _BLOCK))

    await execute(
        f"""INSERT INTO {TABLE} (id, consent_id, version, resident_id, grantor_kind,
                grantor_family_member_id, grantor_authority, grantee_kind, grantee_family_member_id,
                grantee_client_id, grantee_programme, purposes, categories, period_start, period_end, status,
                notice_version, notice_sha256, method, note, withdrawal_reason, recorded_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12::text[], $13::text[], $14, $15, $16,
                    $17, $18, $19, $20, $21, $22)""",
        [
            row_id,
            consent_id,
            row.version,
            given.resident_id,
            given.grantor.kind.value,
            given.grantor.family_member_id,
            given.grantor.authority.value,
            given.grantee.kind.value,
            given.grantee.family_member_id,
            given.grantee.client_id,
            await sealed("grantee_programme", given.grantee.programme),
            sorted(p.value for p in given.purposes),
            sorted(c.value for c in given.categories),
            given.period_start,
            given.period_end,
            row.status.value,
            given.notice_version,
            bytes.fromhex(given.notice_sha256),
            given.method.value,
            await sealed("note", given.note),
            await sealed("withdrawal_reason", row.withdrawal_reason),
            recorded_by,
        ],
    )
    return await current_consent(consent_id)


async def record_consent(given: NewConsent, *, recorded_by: str, amends: int | None = None) -> ConsentVersion:
    """Record a consent (version 1), or a new version of consent `amends` of the same resident (a change
    of its terms; a withdrawn consent is not amended: record a new one). ValidationFailed with every
    problem; NotFound; Conflict; Erased."""
    await admission_date_of(given.resident_id, lock=True)  # writers of one resident take turns
    version = 1
    if amends is not None:
        current = await current_consent(amends)
        if current.terms.resident_id != given.resident_id:
            raise NotFound(NOT_FOUND)
        if current.terms.stored_status is ConsentStatus.WITHDRAWN:
            raise Conflict("This consent was withdrawn: record a new one.", field="consentId")
        version = current.terms.version + 1
    checked = await check_new_consent(given, datetime.now(UTC))
    return await _insert(_Row(amends or 0, version, checked, ConsentStatus.ACTIVE, None), recorded_by)


async def withdraw_consent(
    consent_id: int, reason: str, *, recorded_by: str, by: Principal | None = None
) -> ConsentVersion:
    """Withdraw a consent: a new version with status withdrawn, who (`recorded_by`), when and why.
    `by`, a family account, may withdraw only what it granted as guardian (else NOT_FOUND). NotFound,
    Conflict (already withdrawn), ValidationFailed (no reason), Erased."""
    current = await current_consent(consent_id)
    resident_id = current.terms.resident_id
    if by is not None and by.kind is PrincipalKind.FAMILY and not current.terms.granted_by(by):
        raise NotFound(NOT_FOUND)
    problems: list[InvalidInput] = []
    cleaned = text(reason, "reason", problems, limit=MAX_REASON, required=True)
    raise_if_any(problems)
    await admission_date_of(resident_id, lock=True)
    current = await current_consent(consent_id)  # again, under the lock
    if current.terms.stored_status is ConsentStatus.WITHDRAWN:
        raise Conflict("This consent is already withdrawn.", field="id")
    terms = current.terms
    same = NewConsent(
        resident_id=resident_id,
        grantor=Grantor(terms.grantor_kind, terms.grantor_family_member_id, current.grantor_authority),
        grantee=Grantee(
            terms.grantee_kind,
            terms.grantee_family_member_id,
            terms.grantee_client_id,
            current.grantee_programme,
        ),
        purposes=terms.purposes,
        categories=terms.categories,
        notice_version=current.notice_version,
        notice_sha256=current.notice_sha256,
        method=current.method,
        period_start=terms.period_start,
        period_end=terms.period_end,
        note=current.note,
    )
    return await _insert(
        _Row(consent_id, terms.version + 1, same, ConsentStatus.WITHDRAWN, cleaned), recorded_by
    )

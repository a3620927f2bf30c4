"""Consents through GraphQL (compliance/consent.py): `Resident.consents`, `Consent.history`, the mutations
`recordConsent` and `withdrawConsent`. (Other resolvers ask the decision point through
schema/resident_access.py.)

Staff who keep consents (policy: consent.view, consent.record, consent.withdraw) see and change all of a
resident's consents; a family account sees the consents it granted as guardian or that name it, and
withdraws only those it granted. Denials of the decision point are FORBIDDEN errors, with
extensions.reason CONSENT_REQUIRED when a consent would lift them.
"""

from datetime import UTC, datetime

import strawberry

from compliance import consent as domain
from compliance.policy import Action, require
from compliance.principals import Principal, PrincipalKind
from schema.context import YiyangInfo
from schema.ids import decode_id, encode_id
from schema.pagination import Connection, page_request, paginate_loaded
from schema.resident_access import ResidentNode, recorder, require_resident_access, resident_to_change
from schema.user_errors import USER_ERROR_TYPES, UserError, user_errors
from tenants.errors import NotFound

ConsentPurpose = strawberry.enum(domain.Purpose, name="ConsentPurpose")
DataCategory = strawberry.enum(domain.Category, name="DataCategory")
ConsentGrantorKind = strawberry.enum(domain.GrantorKind, name="ConsentGrantorKind")
ConsentAuthority = strawberry.enum(domain.Authority, name="ConsentAuthority")
ConsentGranteeKind = strawberry.enum(domain.GranteeKind, name="ConsentGranteeKind")
ConsentRecordingMethod = strawberry.enum(domain.RecordingMethod, name="ConsentRecordingMethod")
ConsentStatusEnum = strawberry.enum(domain.ConsentStatus, name="ConsentStatus")


# Types -------------------------------------------------------------------------------------------


def _member_id(institution_id: int, member: int | None) -> strawberry.ID | None:
    return None if member is None else strawberry.ID(encode_id("FamilyMember", institution_id, member))


@strawberry.type(name="ConsentGrantor")
class ConsentGrantorType:
    kind: ConsentGrantorKind
    family_member_id: strawberry.ID | None = strawberry.field(description="A guardian: the family member.")
    authority: ConsentAuthority


@strawberry.type(name="ConsentGrantee")
class ConsentGranteeType:
    kind: ConsentGranteeKind
    family_member_id: strawberry.ID | None
    client_id: str | None = strawberry.field(description="An integrator client's client_id.")
    programme: str | None = strawberry.field(description="A research or analytics programme's name.")


@strawberry.type(name="Consent")
class ConsentType:
    """One version of a consent (FHIR Consent): `id` names the consent, `version` the version."""

    id: strawberry.ID
    version: int
    status: ConsentStatusEnum = strawberry.field(description="EXPIRED once the period has ended.")
    grantor: ConsentGrantorType
    grantee: ConsentGranteeType
    purposes: list[ConsentPurpose]
    categories: list[DataCategory]
    period_start: datetime
    period_end: datetime | None = strawberry.field(description="Exclusive; null: until withdrawn.")
    notice_version: str
    notice_sha256: str = strawberry.field(description="SHA-256 of the notice text shown, hex.")
    method: ConsentRecordingMethod
    note: str | None
    withdrawal_reason: str | None
    recorded_by: str = strawberry.field(description="Who recorded this version (a withdrawal: who withdrew).")
    recorded_at: datetime
    consent_pk: strawberry.Private[int]
    institution_id: strawberry.Private[int]

    @classmethod
    def of(cls, row: domain.ConsentVersion, institution_id: int, now: datetime) -> "ConsentType":
        terms = row.terms
        return cls(
            id=strawberry.ID(encode_id("Consent", institution_id, terms.consent_id)),
            version=terms.version,
            status=terms.status_at(now),
            grantor=ConsentGrantorType(
                kind=terms.grantor_kind,
                family_member_id=_member_id(institution_id, terms.grantor_family_member_id),
                authority=row.grantor_authority,
            ),
            grantee=ConsentGranteeType(
                kind=terms.grantee_kind,
                family_member_id=_member_id(institution_id, terms.grantee_family_member_id),
                client_id=terms.grantee_client_id,
                programme=row.grantee_programme,
            ),
            purposes=sorted(terms.purposes),
            categories=sorted(terms.categories),
            period_start=terms.period_start,
            period_end=terms.period_end,
            notice_version=row.notice_version,
            notice_sha256=row.notice_sha256,
            method=row.method,
            note=row.note,
            withdrawal_reason=row.withdrawal_reason,
            recorded_by=row.recorded_by,
            recorded_at=row.recorded_at,
            consent_pk=terms.consent_id,
            institution_id=institution_id,
        )

    @strawberry.field(description="Every version of this consent, newest first.")
    async def history(self, info: YiyangInfo) -> list["ConsentType"]:
        versions = await domain.consent_history(self.consent_pk)
        await _visible_or_not_found(info, self.institution_id, versions[0])
        now = datetime.now(UTC)
        return [ConsentType.of(version, self.institution_id, now) for version in versions]


def _visible(principal: Principal | None, row: domain.ConsentVersion) -> bool:
    """Staff (past the policy) see every consent; a family account those it granted or that name it."""
    if principal is None:
        return False
    if principal.kind is not PrincipalKind.FAMILY:
        return True
    return row.terms.granted_by(principal) or row.terms.names(principal)


async def _visible_or_not_found(info: YiyangInfo, institution_id: int, row: domain.ConsentVersion) -> None:
    await require_resident_access(info, Action.CONSENT_VIEW, institution_id, row.terms.resident_id)
    if not _visible(info.context.principal, row):
        raise NotFound("Not found.")


async def resident_consents(
    root: ResidentNode,
    info: YiyangInfo,
    first: int | None = None,
    after: str | None = None,
    status: ConsentStatusEnum | None = None,
) -> Connection[ConsentType]:
    """The current version of each of the resident's consents, in the order recorded (a family account:
    those it granted as guardian or that name it)."""
    principal = info.context.principal
    await require_resident_access(info, Action.CONSENT_VIEW, root.institution_id, root.pk)
    page = page_request(first, after)
    rows = await domain.consents_of(root.pk, status=None if status is None else domain.ConsentStatus(status))
    now = datetime.now(UTC)
    nodes = [ConsentType.of(row, root.institution_id, now) for row in rows if _visible(principal, row)]
    return paginate_loaded(nodes, page, key=lambda node: node.consent_pk)


# Mutations ---------------------------------------------------------------------------------------


@strawberry.input
class ConsentGrantorInput:
    kind: ConsentGrantorKind = domain.GrantorKind.RESIDENT
    family_member_id: strawberry.ID | None = strawberry.field(
        default=None, description="A guardian: a family member of the resident."
    )
    authority: ConsentAuthority = domain.Authority.SELF


@strawberry.input
class ConsentGranteeInput:
    kind: ConsentGranteeKind
    family_member_id: strawberry.ID | None = None
    client_id: str | None = strawberry.field(default=None, description="An integrator client's client_id.")
    programme: str | None = strawberry.field(default=None, description="A programme's name (sealed).")


@strawberry.input(description="A consent, or with consentId a new version of one (its terms changed).")
class RecordConsentInput:
    resident_id: strawberry.ID
    grantor: ConsentGrantorInput
    grantee: ConsentGranteeInput
    purposes: list[ConsentPurpose]
    categories: list[DataCategory]
    notice_version: str
    notice_sha256: str = strawberry.field(description="SHA-256 of the notice text shown: 64 hex digits.")
    method: ConsentRecordingMethod
    period_start: datetime | None = strawberry.field(default=None, description="Default: now.")
    period_end: datetime | None = strawberry.field(default=None, description="Exclusive; null: open.")
    note: str | None = None
    consent_id: strawberry.ID | None = strawberry.field(
        default=None, description="The consent this is a new version of."
    )


@strawberry.input
class WithdrawConsentInput:
    id: strawberry.ID
    reason: str


@strawberry.type
class ConsentPayload:
    consent: ConsentType | None
    user_errors: list[UserError]


def _forget_terms(info: YiyangInfo, resident_id: int) -> None:
    """Later decisions of this request read the resident's consents afresh."""
    info.context.decisions.clear()
    try:
        info.context.loaders.consent_terms.clear(resident_id)
    except KeyError:  # not loaded in this request
        pass


def _family_member(info: YiyangInfo, value: strawberry.ID | None, field: str) -> int | None:
    if value is None:
        return None
    institution_id, pk = decode_id("FamilyMember", value, 2, field=field)
    if institution_id != info.context.require_tenant().institution_id:
        raise NotFound("Not found.", field=field)
    return pk


def _consent_pk(info: YiyangInfo, value: strawberry.ID, field: str) -> int:
    institution_id, pk = decode_id("Consent", value, 2, field=field)
    if institution_id != info.context.require_tenant().institution_id:
        raise NotFound("Not found.", field=field)
    return pk


@strawberry.type
class ConsentMutations:
    @strawberry.mutation(
        description="Record a resident's consent (institution admins, head nurses, butlers); with "
        "consentId, a new version of an existing consent. Earlier versions are kept."
    )
    async def record_consent(self, info: YiyangInfo, input: RecordConsentInput) -> ConsentPayload:
        institution_id, pk = await resident_to_change(info, input.resident_id, Action.CONSENT_RECORD)
        amends = None if input.consent_id is None else _consent_pk(info, input.consent_id, "consentId")
        given = domain.NewConsent(
            resident_id=pk,
            grantor=domain.Grantor(
                domain.GrantorKind(input.grantor.kind),
                _family_member(info, input.grantor.family_member_id, "grantor.familyMemberId"),
                domain.Authority(input.grantor.authority),
            ),
            grantee=domain.Grantee(
                domain.GranteeKind(input.grantee.kind),
                _family_member(info, input.grantee.family_member_id, "grantee.familyMemberId"),
                input.grantee.client_id,
                input.grantee.programme,
            ),
            purposes=frozenset(domain.Purpose(p) for p in input.purposes),
            categories=frozenset(domain.Category(c) for c in input.categories),
            notice_version=input.notice_version,
            notice_sha256=input.notice_sha256,
            method=domain.RecordingMethod(input.method),
            period_start=input.period_start,
            period_end=input.period_end,
            note=input.note,
        )
        try:
            row = await domain.record_consent(given, recorded_by=recorder(info), amends=amends)
        except USER_ERROR_TYPES as error:
            return ConsentPayload(consent=None, user_errors=user_errors(info, error))
        _forget_terms(info, pk)
        return ConsentPayload(consent=ConsentType.of(row, institution_id, datetime.now(UTC)), user_errors=[])

    @strawberry.mutation(
        description="Withdraw a consent (a new version with status WITHDRAWN): staff who keep consents, "
        "or the guardian who granted it. It takes effect on the next request."
    )
    async def withdraw_consent(self, info: YiyangInfo, input: WithdrawConsentInput) -> ConsentPayload:
        principal = info.context.principal
        institution_of_id, _ = decode_id("Consent", input.id, 2, field="id")
        require(principal, Action.CONSENT_WITHDRAW, institution=institution_of_id)
        pk = _consent_pk(info, input.id, "id")
        current = await domain.current_consent(pk)
        institution_id = info.context.require_tenant().institution_id
        resident_id = current.terms.resident_id
        await require_resident_access(info, Action.CONSENT_WITHDRAW, institution_id, resident_id)
        try:
            row = await domain.withdraw_consent(pk, input.reason, recorded_by=recorder(info), by=principal)
        except USER_ERROR_TYPES as error:
            return ConsentPayload(consent=None, user_errors=user_errors(info, error))
        _forget_terms(info, resident_id)
        return ConsentPayload(consent=ConsentType.of(row, institution_id, datetime.now(UTC)), user_errors=[])

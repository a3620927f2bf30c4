"""Accounts, staff and integrator clients: the caller's own view (`me`), staff management, integrator
clients, password and second factor.

Resolvers stay thin: the policy (compliance/policy.py) decides, compliance/identity/* does the work.
Ids: an account is "Account:<id>"; a staff member is "StaffMember:<institution>:<account>", so that it
names the institution and is refused (NOT_FOUND) anywhere else; an integrator client is
"IntegratorClient:<id>", checked against the institution or chain it is bound to. Secrets and hashes are
never exposed: a client secret is returned once, by the mutation that creates it.
"""

from datetime import datetime

import strawberry

from compliance.identity import clients as client_registry
from compliance.identity import staff as staff_domain
from compliance.identity import totp
from compliance.identity.account_models import AccountKind, AccountStatus, UserAccount
from compliance.identity.accounts import acting_options, change_password
from compliance.identity.client_models import OAuthClient
from compliance.policy import Action, authenticated, may, require
from compliance.principals import ChainRole, Principal, PrincipalKind, StaffRole
from schema.context import YiyangInfo
from schema.ids import decode_id, encode_id
from schema.institutions import ChainType, InstitutionType, RegionType
from schema.pagination import Connection, connection, page_request
from schema.user_errors import USER_ERROR_TYPES, UserError, user_errors
from tenants.errors import Forbidden, NotFound, Unauthenticated
from tenants.models import Chain, Region

PrincipalKindEnum = strawberry.enum(PrincipalKind, name="PrincipalKind")
StaffRoleEnum = strawberry.enum(StaffRole, name="StaffRole")
ChainRoleEnum = strawberry.enum(ChainRole, name="ChainRole")
AccountKindEnum = strawberry.enum(AccountKind, name="AccountKind")
AccountStatusEnum = strawberry.enum(AccountStatus, name="AccountStatus")

CHAIN_ROLE_NEEDED = "Your role does not allow this action."


# Types


@strawberry.type(name="Account")
class AccountType:
    id: strawberry.ID
    login: str
    display_name: str
    kind: AccountKindEnum
    status: AccountStatusEnum

    @classmethod
    def from_model(cls, row: UserAccount) -> "AccountType":
        return cls(
            id=strawberry.ID(encode_id("Account", row.id)),
            login=row.login,
            display_name=row.display_name,
            kind=AccountKind(row.kind),
            status=AccountStatus(row.status),
        )


@strawberry.type(name="StaffMember", description="An account as staff of one institution.")
class StaffMemberType:
    id: strawberry.ID
    display_name: str
    login: str
    roles: list[StaffRoleEnum]
    status: AccountStatusEnum
    account_id: strawberry.Private[int]

    @classmethod
    def from_domain(cls, member: staff_domain.StaffMember) -> "StaffMemberType":
        return cls(
            id=strawberry.ID(encode_id("StaffMember", member.institution_id, member.account_id)),
            display_name=member.display_name,
            login=member.login,
            roles=staff_domain.ordered_roles(member.roles),
            status=member.status,
            account_id=member.account_id,
        )


@strawberry.type(
    name="IntegratorClient",
    description="An OAuth2 client (client credentials) of an integrator, bound to one institution or one "
    "chain. Its secret is shown once, when it is created.",
)
class IntegratorClientType:
    id: strawberry.ID
    client_id: str
    name: str
    scopes: list[str]
    chain: ChainType | None
    created_at: datetime
    revoked_at: datetime | None
    institution_id: strawberry.Private[int | None]

    @classmethod
    def from_model(cls, row: OAuthClient) -> "IntegratorClientType":
        """`row` must come with its chain selected."""
        chain = row.chain
        return cls(
            id=strawberry.ID(encode_id("IntegratorClient", row.id)),
            client_id=row.client_id,
            name=row.name,
            scopes=sorted(row.allowed_scopes),
            chain=ChainType(id=strawberry.ID(encode_id("Chain", chain.id)), name=chain.name)
            if chain is not None
            else None,
            created_at=row.created_at,
            revoked_at=row.revoked_at,
            institution_id=row.institution_id,
        )

    @strawberry.field(description="The institution the client acts for; null for a chain's client.")
    async def institution(self, info: YiyangInfo) -> InstitutionType | None:
        return await _institution(info, self.institution_id)


@strawberry.type(name="StaffMembership")
class StaffMembershipType:
    institution: InstitutionType
    roles: list[StaffRoleEnum]


@strawberry.type(name="ChainMembership")
class ChainMembershipType:
    chain: ChainType
    roles: list[ChainRoleEnum]


@strawberry.type(description="A resident a family account follows: ids only, never the resident's data.")
class FollowedResident:
    institution_id: strawberry.ID
    resident_id: strawberry.ID


@strawberry.type
class SecondFactorStatus:
    enrolled: bool = strawberry.field(description="A TOTP authenticator is set up and confirmed.")
    required: bool = strawberry.field(
        description="An institution where the account holds an admin or clinical role requires one."
    )


@strawberry.type(description="Who is asking: the principal of this request and its account.")
class Viewer:
    kind: PrincipalKindEnum
    roles: list[StaffRoleEnum] = strawberry.field(
        description="Staff roles in the institution the request acts in."
    )
    chain_roles: list[ChainRoleEnum]
    scopes: list[str] = strawberry.field(description="Scopes of an integrator's token.")
    principal: strawberry.Private[Principal]
    account_row: strawberry.Private[UserAccount | None]
    acting_institution_id: strawberry.Private[int | None]

    @strawberry.field(description="Null for integrator clients.")
    def account(self) -> AccountType | None:
        return AccountType.from_model(self.account_row) if self.account_row is not None else None

    @strawberry.field(description="The integrator client of the token; null for accounts.")
    async def client(self) -> IntegratorClientType | None:
        if self.principal.kind is not PrincipalKind.INTEGRATOR or self.principal.client_id is None:
            return None
        row = await OAuthClient.filter(client_id=self.principal.client_id).select_related("chain").first()
        return IntegratorClientType.from_model(row) if row is not None else None

    @strawberry.field(description="The institution this request acts in, if any.")
    async def acting_in(self, info: YiyangInfo) -> InstitutionType | None:
        return await _institution(info, self.acting_institution_id)

    @strawberry.field(description="The account's staff memberships: institutions and its roles there.")
    async def memberships(self, info: YiyangInfo) -> list[StaffMembershipType]:
        if self.account_row is None:
            return []
        found = await staff_domain.staff_memberships_of(self.account_row.id)
        institutions = await info.context.loaders.institution.load_many([i for i, _ in found])
        return [
            StaffMembershipType(
                institution=InstitutionType.from_model(row), roles=staff_domain.ordered_roles(roles)
            )
            for (_, roles), row in zip(found, institutions, strict=True)
            if row is not None
        ]

    @strawberry.field(description="The account's chain roles.")
    async def chain_memberships(self) -> list[ChainMembershipType]:
        if self.account_row is None:
            return []
        found = await staff_domain.chain_memberships_of(self.account_row.id)
        chains = {c.id: c for c in await Chain.filter(id__in=[c for c, _ in found])}
        return [
            ChainMembershipType(
                chain=ChainType(id=strawberry.ID(encode_id("Chain", chain_id)), name=chains[chain_id].name),
                roles=staff_domain.ordered_chain_roles(roles),
            )
            for chain_id, roles in found
            if chain_id in chains
        ]

    @strawberry.field(description="A supervisor's regions (those this request may see).")
    async def supervised_regions(self) -> list[RegionType]:
        if self.principal.kind is not PrincipalKind.SUPERVISOR:
            return []
        regions = await Region.filter(id__in=list(self.principal.region_ids)).order_by("code")
        return [RegionType(code=r.code, name=r.name) for r in regions]

    @strawberry.field(description="Residents a family account follows, as ids.")
    async def followed_residents(self) -> list[FollowedResident]:
        if self.account_row is None or self.account_row.kind != AccountKind.FAMILY:
            return []
        return [
            FollowedResident(
                institution_id=strawberry.ID(encode_id("Institution", institution_id)),
                resident_id=strawberry.ID(encode_id("Resident", institution_id, resident_id)),
            )
            for institution_id, resident_id in await staff_domain.followed_residents_of(self.account_row.id)
        ]

    @strawberry.field(
        description="Institutions the account may act in (name one with the Yiyang-Institution header)."
    )
    async def acting_options(self, info: YiyangInfo) -> list[InstitutionType]:
        account = self.account_row
        if account is None:
            return []
        if account.kind == AccountKind.STAFF:
            ids = [option.institution_id for option in await acting_options(account)]
        elif account.kind == AccountKind.FAMILY:
            ids = await staff_domain.family_acting_options(account.id)
        else:
            return []
        rows = await info.context.loaders.institution.load_many(ids)
        return [InstitutionType.from_model(row) for row in rows if row is not None]

    @strawberry.field(description="Null for integrator clients.")
    async def second_factor(self) -> SecondFactorStatus | None:
        if self.account_row is None:
            return None
        return await _second_factor(self.account_row)


async def _institution(info: YiyangInfo, institution_id: int | None) -> InstitutionType | None:
    if institution_id is None:
        return None
    row = await info.context.loaders.institution.load(institution_id)
    return InstitutionType.from_model(row) if row is not None else None


# Inputs and payloads


@strawberry.input
class AddStaffMemberInput:
    login: str
    display_name: str
    roles: list[StaffRoleEnum]
    initial_password: str | None = strawberry.field(
        default=None, description="Required when no account has this login yet; ignored otherwise."
    )


@strawberry.input
class SetStaffRolesInput:
    staff_member_id: strawberry.ID
    roles: list[StaffRoleEnum]


@strawberry.input
class RemoveStaffMemberInput:
    staff_member_id: strawberry.ID


@strawberry.input
class CreateIntegratorClientInput:
    name: str
    scopes: list[str]
    chain_wide: bool = strawberry.field(
        default=False, description="Bind the client to the caller's chain instead of the institution."
    )


@strawberry.input
class RevokeIntegratorClientInput:
    id: strawberry.ID


@strawberry.input
class ChangePasswordInput:
    current_password: str
    new_password: str


@strawberry.input
class TotpCodeInput:
    code: str


@strawberry.input
class SetInstitutionRequiresTotpInput:
    required: bool


@strawberry.type
class StaffMemberPayload:
    staff_member: StaffMemberType | None
    user_errors: list[UserError]


@strawberry.type
class RemoveStaffMemberPayload:
    removed_staff_member_id: strawberry.ID | None
    user_errors: list[UserError]


@strawberry.type
class CreateIntegratorClientPayload:
    client: IntegratorClientType | None
    client_secret: str | None = strawberry.field(
        description="Shown this once: only a hash is kept. Store it in the integrator's secret store."
    )
    user_errors: list[UserError]


@strawberry.type
class IntegratorClientPayload:
    client: IntegratorClientType | None
    user_errors: list[UserError]


@strawberry.type
class AccountPayload:
    account: AccountType | None
    user_errors: list[UserError]


@strawberry.type
class BeginTotpEnrolmentPayload:
    secret: str | None = strawberry.field(description="Base32, for typing into the app by hand.")
    otpauth_uri: str | None = strawberry.field(description="otpauth:// URI, for a QR code.")
    user_errors: list[UserError]


@strawberry.type
class SecondFactorPayload:
    second_factor: SecondFactorStatus | None
    user_errors: list[UserError]


@strawberry.type
class SetInstitutionRequiresTotpPayload:
    institution: InstitutionType | None
    requires_totp: bool | None
    user_errors: list[UserError]


# Helpers


async def _own_account(info: YiyangInfo) -> UserAccount:
    """The active account behind the principal; integrator clients have none (FORBIDDEN)."""
    principal = require(info.context.principal, Action.ACCOUNT_SELF)
    account = await UserAccount.get_or_none(id=principal.account_id)
    if account is None or account.status != AccountStatus.ACTIVE:
        raise Unauthenticated("Authentication required.")
    return account


async def _second_factor(account: UserAccount) -> SecondFactorStatus:
    state = await totp.second_factor_for(account)
    return SecondFactorStatus(
        enrolled=state is totp.SecondFactor.VERIFY,
        required=await totp.second_factor_required(account),
    )


def _staff_member_key(info: YiyangInfo, staff_member_id: str) -> tuple[int, int]:
    """(institution, account) of a staff member id the caller may manage, else NOT_FOUND/FORBIDDEN."""
    institution_id, account_id = decode_id("StaffMember", staff_member_id, 2, field="staffMemberId")
    require(info.context.principal, Action.STAFF_MANAGE, institution=institution_id)
    if info.context.require_tenant().institution_id != institution_id:
        raise NotFound("Not found.", field="staffMemberId")
    return institution_id, account_id


def _chain_of_caller(info: YiyangInfo) -> int | None:
    """The caller's chain if it may manage the chain's integrator clients."""
    principal = info.context.principal
    if principal is None or principal.chain_id is None:
        return None
    return principal.chain_id if may(principal, Action.CLIENT_MANAGE, chain_id=principal.chain_id) else None


async def _client_to_manage(info: YiyangInfo, client_id: str) -> OAuthClient:
    (pk,) = decode_id("IntegratorClient", client_id, 1)
    # Whether the caller manages clients at all comes first, so that the answer to a caller who does not
    # is the same for every id (existing or not).
    require(info.context.principal, Action.CLIENT_MANAGE)
    row = await client_registry.integrator_client(pk)
    if row is None:
        raise NotFound("Not found.")
    if row.chain_id is not None:
        require(info.context.principal, Action.CLIENT_MANAGE, chain_id=row.chain_id)
    else:
        # An institution's client: only in that institution (a chain admin acts there to manage it).
        require(info.context.principal, Action.CLIENT_MANAGE, institution=row.institution_id)
        tenant = info.context.tenant
        if tenant is None or tenant.institution_id != row.institution_id:
            raise NotFound("Not found.")
    return row


# Queries


@strawberry.type
class IdentityQueries:
    @strawberry.field(description="Who is asking: the principal, its account and where it may act.")
    async def me(self, info: YiyangInfo) -> Viewer:
        principal = authenticated(info.context.principal)
        account = (
            await UserAccount.get_or_none(id=principal.account_id)
            if principal.account_id is not None
            else None
        )
        tenant = info.context.tenant
        return Viewer(
            kind=principal.kind,
            roles=staff_domain.ordered_roles(principal.roles),
            chain_roles=staff_domain.ordered_chain_roles(principal.chain_roles),
            scopes=sorted(principal.scopes),
            principal=principal,
            account_row=account,
            acting_institution_id=tenant.institution_id if tenant is not None else None,
        )

    @strawberry.field(description="Staff of the institution the caller acts in, with their roles there.")
    async def staff_members(
        self, info: YiyangInfo, first: int | None = None, after: str | None = None
    ) -> Connection[StaffMemberType]:
        require(info.context.principal, Action.STAFF_VIEW)
        institution_id = info.context.require_tenant().institution_id
        page = page_request(first, after)
        members = await staff_domain.staff_page(
            institution_id, after_account_id=page.after_key, limit=page.size + 1
        )
        return connection(
            members,
            page,
            key=lambda member: member.account_id,
            node=StaffMemberType.from_domain,
            count_total=lambda: staff_domain.count_staff(institution_id),
        )

    @strawberry.field(
        description="Integrator clients of the institution the caller acts in and, for chain admins, of "
        "their chain; revoked ones too. Never their secrets."
    )
    async def integrator_clients(
        self, info: YiyangInfo, first: int | None = None, after: str | None = None
    ) -> Connection[IntegratorClientType]:
        require(info.context.principal, Action.CLIENT_MANAGE)
        chain_id = _chain_of_caller(info)
        tenant = info.context.tenant
        if tenant is None and chain_id is None:
            info.context.require_tenant()  # says why: name the institution
        institution_id = tenant.institution_id if tenant is not None else None
        page = page_request(first, after)
        rows = await client_registry.integrator_clients_page(
            institution_id=institution_id, chain_id=chain_id, after_id=page.after_key, limit=page.size + 1
        )
        return connection(
            rows,
            page,
            key=lambda row: row.id,
            node=IntegratorClientType.from_model,
            count_total=lambda: client_registry.count_integrator_clients(
                institution_id=institution_id, chain_id=chain_id
            ),
        )


# Mutations


@strawberry.type
class IdentityMutations:
    @strawberry.mutation(
        description="Give someone staff roles in the institution the caller acts in; creates the staff "
        "account (with initialPassword) if no account has the login."
    )
    async def add_staff_member(self, info: YiyangInfo, input: AddStaffMemberInput) -> StaffMemberPayload:
        require(info.context.principal, Action.STAFF_MANAGE)
        institution_id = info.context.require_tenant().institution_id
        spec = staff_domain.NewStaffMember(
            login=input.login,
            display_name=input.display_name,
            roles=input.roles,
            initial_password=input.initial_password,
        )
        try:
            member = await staff_domain.add_staff_member(institution_id, spec)
        except USER_ERROR_TYPES as error:
            return StaffMemberPayload(staff_member=None, user_errors=user_errors(info, error))
        return StaffMemberPayload(staff_member=StaffMemberType.from_domain(member), user_errors=[])

    @strawberry.mutation(description="Replace a staff member's roles in the institution the caller acts in.")
    async def set_staff_roles(self, info: YiyangInfo, input: SetStaffRolesInput) -> StaffMemberPayload:
        institution_id, account_id = _staff_member_key(info, input.staff_member_id)
        try:
            member = await staff_domain.set_staff_roles(institution_id, account_id, input.roles)
        except USER_ERROR_TYPES as error:
            return StaffMemberPayload(staff_member=None, user_errors=user_errors(info, error))
        return StaffMemberPayload(staff_member=StaffMemberType.from_domain(member), user_errors=[])

    @strawberry.mutation(
        description="Take all roles in the institution the caller acts in from a staff member."
    )
    async def remove_staff_member(
        self, info: YiyangInfo, input: RemoveStaffMemberInput
    ) -> RemoveStaffMemberPayload:
        institution_id, account_id = _staff_member_key(info, input.staff_member_id)
        try:
            await staff_domain.remove_staff_member(institution_id, account_id)
        except USER_ERROR_TYPES as error:
            return RemoveStaffMemberPayload(
                removed_staff_member_id=None, user_errors=user_errors(info, error)
            )
        return RemoveStaffMemberPayload(removed_staff_member_id=input.staff_member_id, user_errors=[])

    @strawberry.mutation(
        description="Create an integrator client of the institution the caller acts in (or, with "
        "chainWide, of the caller's chain). The secret is in this answer only."
    )
    async def create_integrator_client(
        self, info: YiyangInfo, input: CreateIntegratorClientInput
    ) -> CreateIntegratorClientPayload:
        principal = authenticated(info.context.principal)
        if input.chain_wide:
            if principal.chain_id is None:
                require(principal, Action.CLIENT_MANAGE)  # no grant at all: FORBIDDEN from the policy
                raise Forbidden(CHAIN_ROLE_NEEDED)  # an institution's role reaches no chain
            require(principal, Action.CLIENT_MANAGE, chain_id=principal.chain_id)
            binding = {"chain_id": principal.chain_id}
        else:
            require(principal, Action.CLIENT_MANAGE)
            binding = {"institution_id": info.context.require_tenant().institution_id}
        try:
            created = await client_registry.create_integrator_client(
                input.name, scopes=input.scopes, created_by=principal.subject, **binding
            )
        except USER_ERROR_TYPES as error:
            return CreateIntegratorClientPayload(
                client=None, client_secret=None, user_errors=user_errors(info, error)
            )
        row = await client_registry.integrator_client(created.client.id)
        assert row is not None
        return CreateIntegratorClientPayload(
            client=IntegratorClientType.from_model(row), client_secret=created.client_secret, user_errors=[]
        )

    @strawberry.mutation(description="Stop an integrator client: it gets no new token from now on.")
    async def revoke_integrator_client(
        self, info: YiyangInfo, input: RevokeIntegratorClientInput
    ) -> IntegratorClientPayload:
        row = await _client_to_manage(info, input.id)
        await client_registry.revoke_client(row.client_id)
        revoked = await client_registry.integrator_client(row.id)
        assert revoked is not None
        return IntegratorClientPayload(client=IntegratorClientType.from_model(revoked), user_errors=[])

    @strawberry.mutation(description="Change the signed-in account's own password.")
    async def change_password(self, info: YiyangInfo, input: ChangePasswordInput) -> AccountPayload:
        account = await _own_account(info)
        try:
            await change_password(
                account,
                input.current_password,
                input.new_password,
                throttle=info.context.require_login_throttle(),
                ip=info.context.client_address,
            )
        except USER_ERROR_TYPES as error:
            return AccountPayload(account=None, user_errors=user_errors(info, error))
        return AccountPayload(account=AccountType.from_model(account), user_errors=[])

    @strawberry.mutation(
        description="Start setting up a TOTP authenticator: the secret (shown this once) and its QR-code "
        "URI. Confirm with confirmTotpEnrolment."
    )
    async def begin_totp_enrolment(self, info: YiyangInfo) -> BeginTotpEnrolmentPayload:
        account = await _own_account(info)
        try:
            enrolment = await totp.begin_enrolment(account)
        except USER_ERROR_TYPES as error:
            return BeginTotpEnrolmentPayload(
                secret=None, otpauth_uri=None, user_errors=user_errors(info, error)
            )
        return BeginTotpEnrolmentPayload(
            secret=enrolment.secret, otpauth_uri=enrolment.otpauth_uri, user_errors=[]
        )

    @strawberry.mutation(description="Confirm the authenticator with a first code from it.")
    async def confirm_totp_enrolment(self, info: YiyangInfo, input: TotpCodeInput) -> SecondFactorPayload:
        account = await _own_account(info)
        try:
            await totp.confirm_enrolment(account, input.code)
        except USER_ERROR_TYPES as error:
            return SecondFactorPayload(second_factor=None, user_errors=user_errors(info, error))
        return SecondFactorPayload(second_factor=await _second_factor(account), user_errors=[])

    @strawberry.mutation(description="Remove the account's authenticator, proven by a current code.")
    async def disable_totp(self, info: YiyangInfo, input: TotpCodeInput) -> SecondFactorPayload:
        account = await _own_account(info)
        try:
            await totp.disable_totp(account, input.code)
        except USER_ERROR_TYPES as error:
            return SecondFactorPayload(second_factor=None, user_errors=user_errors(info, error))
        return SecondFactorPayload(second_factor=await _second_factor(account), user_errors=[])

    @strawberry.mutation(
        description="Require (or stop requiring) a second factor of the admin and clinical staff of the "
        "institution the caller acts in."
    )
    async def set_institution_requires_totp(
        self, info: YiyangInfo, input: SetInstitutionRequiresTotpInput
    ) -> SetInstitutionRequiresTotpPayload:
        require(info.context.principal, Action.INSTITUTION_SECURITY)
        institution_id = info.context.require_tenant().institution_id
        await totp.set_institution_requires_totp(institution_id, input.required)
        return SetInstitutionRequiresTotpPayload(
            institution=await _institution(info, institution_id),
            requires_totp=input.required,
            user_errors=[],
        )

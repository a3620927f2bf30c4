"""The one place that decides whether a principal may perform an action.

Resolvers and jobs ask `require(...)` (or `may`, `visible_institutions`, `resident_scope`); none
re-implements a check. Who may do what is data: `PERMISSIONS`, one `Grant` per action, reproduced as
the table of docs/security.md (`permission_table()` renders it; a test keeps the two equal).

How a grant is read, per kind of principal:
- staff: a staff role in the institution the request acts in, or a chain role when that institution
  belongs to the principal's chain (or the resource is the chain itself);
- integrator clients: a granted scope, in their institution or an institution of their chain;
- family accounts: only for the residents they follow, in the institution the request acts in;
- supervisors: institution-level figures of their regions only; no grant reaches a resident;
- platform operators: the registry of institutions, nothing inside one.

Objects of another institution, chain or region are reported as NOT_FOUND, not FORBIDDEN, so that an id
reveals nothing about other tenants; FORBIDDEN means "yours, but not for your role".
"""

from dataclasses import dataclass
from enum import StrEnum

from compliance.principals import ChainRole, Principal, PrincipalKind, StaffRole
from tenants.errors import Forbidden, NotFound, Unauthenticated


class Action(StrEnum):
    INSTITUTION_VIEW = "institution.view"
    INSTITUTION_PROVISION = "institution.provision"
    INSTITUTION_SECURITY = "institution.security"  # e.g. require a second factor
    RESIDENT_VIEW = "resident.view"
    RESIDENT_ADMIT = "resident.admit"
    RESIDENT_UPDATE = "resident.update"
    RESIDENT_DISCHARGE = "resident.discharge"
    FAMILY_MEMBER_VIEW = "family_member.view"  # a resident's relatives: names, relationship, phones
    FAMILY_MEMBER_ADD = "family_member.add"
    FAMILY_MEMBER_EDIT = "family_member.edit"  # correct or remove a registered relative
    HEALTH_RECORD_VIEW = "health_record.view"  # diagnoses, medications, allergies
    HEALTH_RECORD_EDIT = "health_record.edit"
    VITALS_VIEW = "vitals.view"
    VITALS_RECORD = "vitals.record"
    VITAL_RANGES_SET = "vital_ranges.set"  # a resident's own normal ranges
    VITAL_RULE_VIEW = "vital_rule.view"  # the institution's rules over vitals (care/vital_rules.py)
    VITAL_RULE_EDIT = "vital_rule.edit"  # add, edit (a new version) and retire them
    ASSESSMENT_VIEW = "assessment.view"  # ability assessments (GB/T 42195, Barthel), care-level suggestion
    ASSESSMENT_RECORD = "assessment.record"  # record an assessment, apply its care-level suggestion
    SERVICE_RECORD_VIEW = "service_record.view"  # the service timeline: care, meals, visits, observations
    SERVICE_RECORD_CREATE = "service_record.create"  # care done, meals, the daily observation sheet
    SERVICE_RECORD_CREATE_SOCIAL = "service_record.create_social"  # activities, visitors, outings
    CHECKUP_REPORT_VIEW = "checkup_report.view"  # uploaded check-up reports: list and download
    CHECKUP_REPORT_UPLOAD = "checkup_report.upload"  # upload and remove
    RESIDENT_PHOTO_VIEW = "resident_photo.view"  # the resident's photo (identity): on the card, download
    RESIDENT_PHOTO_SET = "resident_photo.set"  # upload, replace and remove it
    PREFERENCES_VIEW = "preferences.view"  # diet, routine, hobbies, religion, personality, what to avoid
    PREFERENCES_EDIT = "preferences.edit"
    EMERGENCY_CONTACTS_VIEW = "emergency_contacts.view"  # the call list: flagged relatives and others
    EMERGENCY_CONTACTS_EDIT = "emergency_contacts.edit"  # contacts who are not family
    FAMILY_LOG_VIEW = "family_log.view"  # the family communication log
    FAMILY_LOG_RECORD = "family_log.record"
    CARE_PLAN_VIEW = "care_plan.view"  # a resident's care plan: what is done, how often, by whom
    CARE_PLAN_EDIT = "care_plan.edit"  # add, edit and remove plan items (their tasks follow)
    TASK_VIEW = "task.view"  # tasks materialized from the plans: a resident's, one's own of a day
    TASK_COMPLETE = "task.complete"  # check a task off with its result, or mark it not done
    SOP_TEMPLATE_VIEW = "sop_template.view"  # SOP templates of the institution and of its chain
    SOP_TEMPLATE_EDIT = "sop_template.edit"  # create, edit (a new version) and retire them
    SOP_STEP_VIEW = "sop_step.view"  # a resident's SOP instances and steps; one's own steps of a day
    SOP_STEP_COMPLETE = "sop_step.complete"  # complete a step (with its outcome record) or skip it
    RESIDENT_BUTLER_ASSIGN = "resident_butler.assign"  # name the resident's butler
    WORK_ORDER_RAISE = "work_order.raise"  # raise a work order; follow one's own up (comment, close, rate)
    WORK_ORDER_VIEW = "work_order.view"  # the institution's work orders (family accounts: their own)
    WORK_ORDER_HANDLE = "work_order.handle"  # acknowledge, assign, work on, resolve, comment, cancel
    WORK_ORDER_CONFIGURE = "work_order.configure"  # routing rules and SLA policies
    WORK_ORDER_KPI_VIEW = "work_order.kpi_view"  # response and resolution figures per category
    STAFF_VIEW = "staff.view"
    STAFF_MANAGE = "staff.manage"
    CLIENT_MANAGE = "client.manage"  # integrator clients of an institution or chain
    CONSENT_VIEW = "consent.view"  # a resident's consent records and their history
    CONSENT_RECORD = "consent.record"  # record a consent or a new version of one
    CONSENT_WITHDRAW = "consent.withdraw"
    DATA_SUBJECT_EXPORT = "data_subject.export"  # everything held about a resident (PIPL art. 45)
    DATA_SUBJECT_ERASE = "data_subject.erase"  # crypto-shredding a resident (PIPL art. 47)
    AUDIT_VIEW = "audit.view"  # the institution's audit log
    ACCESS_REPORT_VIEW = "access_report.view"  # who accessed a resident's data, when and why
    ACCESS_REPORT_EXPORT = "access_report.export"  # the same report as a CSV file
    ACCOUNT_SELF = "account.self"  # one's own account: password, second factor
    NOTIFICATION_INBOX = "notification.inbox"  # one's own notifications in the acting institution
    DEAD_LETTER_VIEW = "dead_letter.view"  # background jobs that failed for good (workers/dead_letters.py)
    DEAD_LETTER_RETRY = "dead_letter.retry"  # run such a job again
    WEBHOOK_VIEW = "webhook.view"  # integrator webhook endpoints and their delivery log
    WEBHOOK_MANAGE = "webhook.manage"  # register, change, disable them, rotate their secrets


class Level(StrEnum):
    ACCOUNT = "account"  # the caller's own account, wherever it acts
    PLATFORM = "platform"  # the registry itself
    INSTITUTION = "institution"  # an institution (or a chain) as a whole
    RESIDENT = "resident"  # one resident's data


@dataclass(frozen=True, slots=True)
class Grant:
    level: Level
    staff: frozenset[StaffRole] = frozenset()
    chain: frozenset[ChainRole] = frozenset()
    scopes: frozenset[str] = frozenset()
    family: bool = False
    supervisor: bool = False
    operator: bool = False


_ALL_STAFF = frozenset(StaffRole)
_ALL_CHAIN = frozenset(ChainRole)
_INTAKE = frozenset({StaffRole.INSTITUTION_ADMIN, StaffRole.SALES, StaffRole.HEAD_NURSE})
_ADMIN = frozenset({StaffRole.INSTITUTION_ADMIN})
_CLINICAL = frozenset({StaffRole.HEAD_NURSE, StaffRole.NURSE, StaffRole.DOCTOR})
_CHAIN_ADMIN = frozenset({ChainRole.CHAIN_ADMIN})
_CONSENT_KEEPERS = frozenset({StaffRole.INSTITUTION_ADMIN, StaffRole.HEAD_NURSE, StaffRole.BUTLER})
_AUDITORS = frozenset({StaffRole.COMPLIANCE_OFFICER, StaffRole.INSTITUTION_ADMIN})
READ_RESIDENTS, WRITE_RESIDENTS, WRITE_VITALS = "residents:read", "residents:write", "vitals:write"
MANAGE_WEBHOOKS = "webhooks:manage"  # an integrator's own webhook endpoints and their delivery log
_ANY_SCOPE = frozenset({READ_RESIDENTS, WRITE_RESIDENTS, WRITE_VITALS, MANAGE_WEBHOOKS})

PERMISSIONS: dict[Action, Grant] = {
    Action.INSTITUTION_VIEW: Grant(
        Level.INSTITUTION,
        staff=_ALL_STAFF,
        chain=_ALL_CHAIN,
        scopes=_ANY_SCOPE,
        family=True,
        supervisor=True,
        operator=True,
    ),
    Action.INSTITUTION_PROVISION: Grant(Level.PLATFORM, operator=True),
    Action.INSTITUTION_SECURITY: Grant(Level.INSTITUTION, staff=_ADMIN, chain=_CHAIN_ADMIN),
    Action.RESIDENT_VIEW: Grant(
        Level.RESIDENT, staff=_ALL_STAFF, scopes=frozenset({READ_RESIDENTS}), family=True
    ),
    Action.RESIDENT_ADMIT: Grant(Level.RESIDENT, staff=_INTAKE, scopes=frozenset({WRITE_RESIDENTS})),
    Action.RESIDENT_UPDATE: Grant(
        Level.RESIDENT,
        staff=_INTAKE | {StaffRole.NURSE, StaffRole.BUTLER},
        scopes=frozenset({WRITE_RESIDENTS}),
    ),
    Action.RESIDENT_DISCHARGE: Grant(Level.RESIDENT, staff=_INTAKE),
    # Relatives are read with the resident (identity data; consent-bound for family and integrators).
    Action.FAMILY_MEMBER_VIEW: Grant(
        Level.RESIDENT, staff=_ALL_STAFF, scopes=frozenset({READ_RESIDENTS}), family=True
    ),
    Action.FAMILY_MEMBER_ADD: Grant(
        Level.RESIDENT,
        staff=_INTAKE | {StaffRole.BUTLER, StaffRole.NURSE},
        scopes=frozenset({WRITE_RESIDENTS}),
    ),
    # Whoever registers relatives corrects them (a wrong phone) and removes one registered in error;
    # removing also ends the family accounts' following through that relative.
    Action.FAMILY_MEMBER_EDIT: Grant(
        Level.RESIDENT,
        staff=_INTAKE | {StaffRole.BUTLER, StaffRole.NURSE},
        scopes=frozenset({WRITE_RESIDENTS}),
    ),
    # Health data: the clinical roles and caregivers (who measure); what family members and other
    # integrators may see follows consent (the consent issue), not this table.
    Action.HEALTH_RECORD_VIEW: Grant(Level.RESIDENT, staff=_ADMIN | _CLINICAL | {StaffRole.CAREGIVER}),
    Action.HEALTH_RECORD_EDIT: Grant(Level.RESIDENT, staff=_CLINICAL),
    # Family accounts read vitals of the residents they follow only under a consent naming them (the
    # decision point, compliance/consent.py, asked by every vitals resolver after this table).
    Action.VITALS_VIEW: Grant(Level.RESIDENT, staff=_ADMIN | _CLINICAL | {StaffRole.CAREGIVER}, family=True),
    Action.VITALS_RECORD: Grant(
        Level.RESIDENT, staff=_CLINICAL | {StaffRole.CAREGIVER}, scopes=frozenset({WRITE_VITALS})
    ),
    Action.VITAL_RANGES_SET: Grant(Level.RESIDENT, staff=frozenset({StaffRole.HEAD_NURSE, StaffRole.DOCTOR})),
    # Rules over vitals are the institution's configuration (no resident's data): the clinical roles read
    # them, those who set residents' ranges and the admin keep them. A resident's firings are read as vitals.
    Action.VITAL_RULE_VIEW: Grant(Level.INSTITUTION, staff=_ADMIN | _CLINICAL),
    Action.VITAL_RULE_EDIT: Grant(
        Level.INSTITUTION, staff=_ADMIN | frozenset({StaffRole.HEAD_NURSE, StaffRole.DOCTOR})
    ),
    # Assessments: recorded by the clinical roles and the admin (who settles care-level disputes); read
    # by caregivers too, whose daily care follows the assessed level. Family members follow consent.
    Action.ASSESSMENT_VIEW: Grant(Level.RESIDENT, staff=_ADMIN | _CLINICAL | {StaffRole.CAREGIVER}),
    Action.ASSESSMENT_RECORD: Grant(Level.RESIDENT, staff=_ADMIN | _CLINICAL),
    # The service timeline: those who care for the resident day to day read and write it; the butler, who
    # receives visitors and organises activities and outings, writes those kinds only (care, meals and the
    # observation sheet are health data); the admin reads it. Family members follow consent (later).
    Action.SERVICE_RECORD_VIEW: Grant(
        Level.RESIDENT, staff=_ADMIN | _CLINICAL | {StaffRole.CAREGIVER, StaffRole.BUTLER}
    ),
    Action.SERVICE_RECORD_CREATE: Grant(Level.RESIDENT, staff=_CLINICAL | {StaffRole.CAREGIVER}),
    Action.SERVICE_RECORD_CREATE_SOCIAL: Grant(
        Level.RESIDENT, staff=_CLINICAL | {StaffRole.CAREGIVER, StaffRole.BUTLER}
    ),
    # Whole hospital documents (far more than daily care needs): the clinical roles and the admin, not
    # caregivers, who see the health record's summary; family members follow consent (the consent issue).
    Action.CHECKUP_REPORT_VIEW: Grant(Level.RESIDENT, staff=_ADMIN | _CLINICAL),
    Action.CHECKUP_REPORT_UPLOAD: Grant(Level.RESIDENT, staff=_ADMIN | _CLINICAL),
    # The resident's photo is identity, like the name: every staff role that sees residents sees it (a
    # caregiver must recognise whom they serve); those who keep identity data set it (intake, nurses, the
    # butler). Not integrators (a photo is no field they need) nor family accounts (the consent issue).
    Action.RESIDENT_PHOTO_VIEW: Grant(Level.RESIDENT, staff=_ALL_STAFF),
    Action.RESIDENT_PHOTO_SET: Grant(Level.RESIDENT, staff=_INTAKE | {StaffRole.NURSE, StaffRole.BUTLER}),
    # Preferences: everyone who cares for the resident day to day reads them (caregivers serve the meals
    # and keep the routine); intake, nurses and butlers keep them. Family members follow consent (later).
    Action.PREFERENCES_VIEW: Grant(
        Level.RESIDENT, staff=_ADMIN | _CLINICAL | {StaffRole.CAREGIVER, StaffRole.BUTLER}
    ),
    Action.PREFERENCES_EDIT: Grant(Level.RESIDENT, staff=_INTAKE | {StaffRole.NURSE, StaffRole.BUTLER}),
    # The 3 a.m. call list: whoever may be on duty when something happens; kept by those who register
    # relatives (family_member.add), without integrators (third parties' phones are not theirs to write).
    Action.EMERGENCY_CONTACTS_VIEW: Grant(
        Level.RESIDENT, staff=_ADMIN | _CLINICAL | {StaffRole.CAREGIVER, StaffRole.BUTLER}
    ),
    Action.EMERGENCY_CONTACTS_EDIT: Grant(
        Level.RESIDENT, staff=_INTAKE | {StaffRole.NURSE, StaffRole.BUTLER}
    ),
    # The family log: butlers and head nurses keep it; nurses record the calls they make on duty (a fall
    # at night); the admin reads it (complaints). Summaries may discuss health, so not caregivers.
    Action.FAMILY_LOG_VIEW: Grant(
        Level.RESIDENT, staff=_ADMIN | {StaffRole.HEAD_NURSE, StaffRole.NURSE, StaffRole.BUTLER}
    ),
    Action.FAMILY_LOG_RECORD: Grant(
        Level.RESIDENT, staff=frozenset({StaffRole.HEAD_NURSE, StaffRole.NURSE, StaffRole.BUTLER})
    ),
    # Care plans (care/care_plans.py): the clinical roles set them; caregivers, who carry them out, and
    # the admin read them. Tasks are done by caregivers and the clinical roles (whom items are assigned
    # to); the admin reads them (overdue work). Family members and integrators: not in this increment.
    Action.CARE_PLAN_VIEW: Grant(Level.RESIDENT, staff=_ADMIN | _CLINICAL | {StaffRole.CAREGIVER}),
    Action.CARE_PLAN_EDIT: Grant(Level.RESIDENT, staff=_CLINICAL),
    Action.TASK_VIEW: Grant(Level.RESIDENT, staff=_ADMIN | _CLINICAL | {StaffRole.CAREGIVER}),
    Action.TASK_COMPLETE: Grant(Level.RESIDENT, staff=_CLINICAL | {StaffRole.CAREGIVER}),
    # SOPs (care/sops.py): the admin and the head nurse keep the institution's templates, the chain admin the
    # chain's; whoever carries steps out reads them. Steps mostly contact the family (the butler's work,
    # recorded in the family log), so their readers and doers are the family log's; the admin and the
    # head nurse name each resident's butler.
    Action.SOP_TEMPLATE_VIEW: Grant(
        Level.INSTITUTION,
        staff=_ADMIN | {StaffRole.HEAD_NURSE, StaffRole.NURSE, StaffRole.BUTLER},
        chain=_ALL_CHAIN,
    ),
    Action.SOP_TEMPLATE_EDIT: Grant(
        Level.INSTITUTION, staff=_ADMIN | {StaffRole.HEAD_NURSE}, chain=_CHAIN_ADMIN
    ),
    Action.SOP_STEP_VIEW: Grant(
        Level.RESIDENT, staff=_ADMIN | {StaffRole.HEAD_NURSE, StaffRole.NURSE, StaffRole.BUTLER}
    ),
    Action.SOP_STEP_COMPLETE: Grant(
        Level.RESIDENT, staff=frozenset({StaffRole.HEAD_NURSE, StaffRole.NURSE, StaffRole.BUTLER})
    ),
    Action.RESIDENT_BUTLER_ASSIGN: Grant(Level.RESIDENT, staff=_ADMIN | {StaffRole.HEAD_NURSE}),
    # Work orders (care/work_orders.py): anyone on the staff raises one (a broken lamp) and so does a family
    # account, for a resident it follows (schema/work_orders.py narrows what it sees to its own); the
    # departments' roles handle them; the admin sets routing and deadlines and reads the figures with the
    # head nurse and the chain. Work orders about a resident are decided and audited through
    # schema/resident_access.py as well.
    Action.WORK_ORDER_RAISE: Grant(Level.INSTITUTION, staff=_ALL_STAFF, family=True),
    Action.WORK_ORDER_VIEW: Grant(Level.INSTITUTION, staff=_ALL_STAFF, family=True),
    Action.WORK_ORDER_HANDLE: Grant(
        Level.INSTITUTION,
        staff=_ADMIN
        | {
            StaffRole.HEAD_NURSE,
            StaffRole.NURSE,
            StaffRole.CAREGIVER,
            StaffRole.BUTLER,
            StaffRole.FINANCE,
            StaffRole.LOGISTICS,
        },
    ),
    Action.WORK_ORDER_CONFIGURE: Grant(Level.INSTITUTION, staff=_ADMIN, chain=_CHAIN_ADMIN),
    Action.WORK_ORDER_KPI_VIEW: Grant(
        Level.INSTITUTION, staff=_ADMIN | {StaffRole.HEAD_NURSE}, chain=_ALL_CHAIN
    ),
    Action.STAFF_VIEW: Grant(Level.INSTITUTION, staff=_ADMIN | {StaffRole.HEAD_NURSE}, chain=_ALL_CHAIN),
    Action.STAFF_MANAGE: Grant(Level.INSTITUTION, staff=_ADMIN, chain=_CHAIN_ADMIN),
    Action.CLIENT_MANAGE: Grant(Level.INSTITUTION, staff=_ADMIN, chain=_CHAIN_ADMIN),
    # Consents (compliance/consent.py): those who receive the paper or talk to the guardian record and
    # withdraw them; a family account sees and withdraws only what it granted as guardian (the consent
    # module narrows it further than this table).
    Action.CONSENT_VIEW: Grant(Level.RESIDENT, staff=_CONSENT_KEEPERS, family=True),
    Action.CONSENT_RECORD: Grant(Level.RESIDENT, staff=_CONSENT_KEEPERS),
    Action.CONSENT_WITHDRAW: Grant(Level.RESIDENT, staff=_CONSENT_KEEPERS, family=True),
    # The whole record, and its existence: the institution's admin, who answers the request.
    Action.DATA_SUBJECT_EXPORT: Grant(Level.RESIDENT, staff=_ADMIN),
    Action.DATA_SUBJECT_ERASE: Grant(Level.RESIDENT, staff=_ADMIN),
    # The audit log: the compliance officer, whose job it is, and the admin, who answers for the
    # institution (and would otherwise have to appoint an officer to answer a complaint). Not chain roles:
    # the log is the institution's own, like its residents.
    Action.AUDIT_VIEW: Grant(Level.INSTITUTION, staff=_AUDITORS),
    # A resident's access report: the same, and the resident's guardian (the family app); the table lets
    # family accounts through for the residents they follow, compliance/audit/report.py narrows it to
    # those who granted a consent of the resident as guardian.
    Action.ACCESS_REPORT_VIEW: Grant(Level.RESIDENT, staff=_AUDITORS, family=True),
    Action.ACCESS_REPORT_EXPORT: Grant(Level.RESIDENT, staff=_AUDITORS, family=True),
    # Every person with an account; an integrator client has none.
    Action.ACCOUNT_SELF: Grant(
        Level.ACCOUNT, staff=_ALL_STAFF, chain=_ALL_CHAIN, family=True, supervisor=True, operator=True
    ),
    # One's own inbox (care/notifications.py): every staff role of the acting institution, where the
    # notifications live; the rows read are the caller's own. Family accounts come with the family app.
    Action.NOTIFICATION_INBOX: Grant(Level.INSTITUTION, staff=_ALL_STAFF),
    # Failed background jobs (the platform's table): operators all of them (a failure of the platform,
    # e.g. a sweep that could not read the registry, belongs to no institution); an institution's admin
    # those that failed in the institution (its sweep), to retry once the cause is fixed. Ids only.
    Action.DEAD_LETTER_VIEW: Grant(Level.PLATFORM, staff=_ADMIN, operator=True),
    Action.DEAD_LETTER_RETRY: Grant(Level.PLATFORM, staff=_ADMIN, operator=True),
    # Webhooks (care/webhooks.py): whoever manages integrator clients manages their endpoints; an
    # integrator client with the `webhooks:manage` scope manages its own (schema/webhooks.py narrows it
    # to them; `residents:read` alone does not). Events carry ids only, and those about a resident
    # follow consent.
    Action.WEBHOOK_VIEW: Grant(
        Level.INSTITUTION, staff=_ADMIN, chain=_CHAIN_ADMIN, scopes=frozenset({MANAGE_WEBHOOKS})
    ),
    Action.WEBHOOK_MANAGE: Grant(
        Level.INSTITUTION, staff=_ADMIN, chain=_CHAIN_ADMIN, scopes=frozenset({MANAGE_WEBHOOKS})
    ),
}


@dataclass(frozen=True, slots=True)
class Place:
    """An institution as the policy needs it: where it is and whose it is."""

    institution_id: int
    chain_id: int | None = None
    region_id: int | None = None


NOT_FOUND = "Not found."


def authenticated(principal: Principal | None) -> Principal:
    if principal is None:
        raise Unauthenticated("Authentication required.")
    return principal


def require(
    principal: Principal | None,
    action: Action,
    *,
    institution: int | Place | None = None,
    chain_id: int | None = None,
    resident_id: int | None = None,
) -> Principal:
    """Raise unless `principal` may do `action`.

    `institution` is the institution the resource belongs to (an id or, for registry entries, a
    `Place`); None means the institution the request acts in. `chain_id` names a chain-level resource
    (e.g. a chain's integrator clients). `resident_id` is the resident a resident-level action touches,
    which matters for family accounts; without it a family account's reads are limited by
    `resident_scope`.
    """
    who = authenticated(principal)
    grant = PERMISSIONS[action]
    if grant.level is Level.ACCOUNT:
        _check(who.account_id is not None and _names_kind(grant, who.kind))
        return who
    place = Place(institution) if isinstance(institution, int) else institution
    match who.kind:
        case PrincipalKind.OPERATOR:
            _check(grant.operator)
        case PrincipalKind.SUPERVISOR:
            _check(grant.supervisor and grant.level is not Level.RESIDENT)
            if place is None or place.region_id not in who.region_ids:
                raise NotFound(NOT_FOUND)
        case PrincipalKind.FAMILY:
            _check(grant.family)
            _in_acting_institution(who, place, chain_id)
            if resident_id is not None and resident_id not in who.followed_resident_ids:
                raise NotFound(NOT_FOUND)
        case PrincipalKind.INTEGRATOR:
            _within_reach(who, place, chain_id)
            _check(bool(who.scopes & grant.scopes))
        case PrincipalKind.STAFF:
            chain_wide = _within_reach(who, place, chain_id)
            home = not chain_wide and who.institution_id is not None
            _check(bool((home and who.roles & grant.staff) or who.chain_roles & grant.chain))
    return who


def _names_kind(grant: Grant, kind: PrincipalKind) -> bool:
    match kind:
        case PrincipalKind.STAFF:
            return bool(grant.staff or grant.chain)
        case PrincipalKind.INTEGRATOR:
            return bool(grant.scopes)
        case PrincipalKind.FAMILY:
            return grant.family
        case PrincipalKind.SUPERVISOR:
            return grant.supervisor
        case PrincipalKind.OPERATOR:
            return grant.operator


def _check(allowed: bool) -> None:
    if not allowed:
        raise Forbidden("Your role does not allow this action.")


def _in_acting_institution(who: Principal, place: Place | None, chain_id: int | None) -> None:
    if chain_id is not None or (place is not None and place.institution_id != who.institution_id):
        raise NotFound(NOT_FOUND)


def _within_reach(who: Principal, place: Place | None, chain_id: int | None) -> bool:
    """NOT_FOUND unless the resource is in the principal's institution or chain; whether it is reached
    through the chain only (so that staff roles of the home institution do not apply)."""
    if chain_id is not None:
        if chain_id != who.chain_id:
            raise NotFound(NOT_FOUND)
        return True
    if place is None or place.institution_id == who.institution_id:
        return who.institution_id is None
    if who.chain_id is not None and place.chain_id == who.chain_id:
        return True
    raise NotFound(NOT_FOUND)


def may(principal: Principal | None, action: Action, **resource: object) -> bool:
    try:
        require(principal, action, **resource)  # type: ignore[arg-type]
    except (Unauthenticated, Forbidden, NotFound):
        return False
    return True


@dataclass(frozen=True, slots=True)
class InstitutionScope:
    """Which registry entries a principal may list: all, or those matching any of the sets."""

    every: bool = False
    institution_ids: frozenset[int] = frozenset()
    chain_id: int | None = None
    region_ids: frozenset[int] = frozenset()


def visible_institutions(principal: Principal | None) -> InstitutionScope:
    who = authenticated(principal)
    if who.kind is PrincipalKind.OPERATOR:
        return InstitutionScope(every=True)
    if who.kind is PrincipalKind.SUPERVISOR:
        return InstitutionScope(region_ids=who.region_ids)
    home = frozenset({who.institution_id}) if who.institution_id is not None else frozenset()
    reaches_chain = who.chain_roles or who.kind is PrincipalKind.INTEGRATOR
    return InstitutionScope(institution_ids=home, chain_id=who.chain_id if reaches_chain else None)


def resident_scope(principal: Principal | None) -> frozenset[int] | None:
    """Residents of the acting institution `principal` may read: None means all of them."""
    who = authenticated(principal)
    return who.followed_resident_ids if who.kind is PrincipalKind.FAMILY else None


def _family_cell(grant: Grant) -> str:
    if not grant.family:
        return "—"
    if grant.level is Level.ACCOUNT:
        return "yes"
    return "followed residents" if grant.level is Level.RESIDENT else "where they follow a resident"


def _supervisor_cell(grant: Grant) -> str:
    if not grant.supervisor:
        return "—"
    return "yes" if grant.level is Level.ACCOUNT else "own regions"


def permission_table() -> str:
    """PERMISSIONS as the Markdown table of docs/security.md."""
    lines = [
        "| action | level | staff roles | chain roles | integrator scopes | family | supervisor | operator |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for action, grant in PERMISSIONS.items():

        def names(values: frozenset[str], every: frozenset[str]) -> str:
            if values and values == every:
                return "all"
            return ", ".join(sorted(values)) or "—"

        lines.append(
            f"| `{action.value}` | {grant.level.value} | {names(grant.staff, _ALL_STAFF)} "
            f"| {names(grant.chain, _ALL_CHAIN)} | {names(grant.scopes, _ANY_SCOPE)} "
            f"| {_family_cell(grant)} "
            f"| {_supervisor_cell(grant)} | {'yes' if grant.operator else '—'} |"
        )
    return "\n".join(lines) + "\n"

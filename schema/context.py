"""What every resolver receives as `info.context`."""

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from strawberry.dataloader import DataLoader
from strawberry.types import Info

from care.assessment_records import LatestAssessments, latest_assessments_of
from care.emergency_contacts import EmergencyContact, load_contacts
from care.family_log import FamilyCommunicationPage, PageKey, load_first_pages
from care.health_record import HealthRecord, health_records_of
from care.photos import PhotoMeta, photos_of
from care.preferences import ResidentPreferences, load_preferences
from care.reports import ResidentReports, reports_of
from care.residents import FamilyMemberRecord, family_members_of
from care.timeline import LatestKey, ServiceRecord, load_latest_records
from care.uploads import DEFAULT_MAX_FILE_BYTES
from care.vitals import Measure, Reading, load_latest_vitals
from compliance.audit import AuditTrail
from compliance.consent import ConsentTerms, Decision, load_terms
from compliance.identity.login_throttle import LoginThrottle
from compliance.principals import Principal
from tenants.context import TenantRef
from tenants.errors import DomainError, InvalidInput, Unauthenticated
from tenants.models import Institution

if TYPE_CHECKING:
    from schema.rate_limits import RateLimiter


async def _load_institutions(ids: list[int]) -> list[Institution | None]:
    found = {i.id: i for i in await Institution.filter(id__in=ids).select_related("region", "chain")}
    return [found.get(i) for i in ids]


async def _load_health_records(resident_ids: list[int]) -> list[HealthRecord]:
    records = await health_records_of(resident_ids)
    return [records[rid] for rid in resident_ids]


async def _load_checkup_reports(resident_ids: list[int]) -> list[ResidentReports]:
    found = await reports_of(resident_ids)
    return [found[rid] for rid in resident_ids]


async def _load_resident_photos(resident_ids: list[int]) -> list[PhotoMeta | BaseException | None]:
    found = await photos_of(resident_ids)  # an erased resident's entry is its Erased error
    return [found[rid] for rid in resident_ids]


async def _load_latest_assessments(resident_ids: list[int]) -> list[LatestAssessments | BaseException]:
    found = await latest_assessments_of(resident_ids)  # an erased resident's entry is its Erased error
    return [found[rid] for rid in resident_ids]


async def _load_family_members(resident_ids: list[int]) -> list[list[FamilyMemberRecord]]:
    grouped = await family_members_of(resident_ids)
    return [grouped[rid] for rid in resident_ids]


@dataclass
class Loaders:
    """Per-request DataLoaders: one query per kind of object, however many parents ask."""

    institution: DataLoader[int, Institution | None] = field(
        default_factory=lambda: DataLoader(load_fn=_load_institutions)
    )
    family_members: DataLoader[int, list[FamilyMemberRecord]] = field(
        default_factory=lambda: DataLoader(load_fn=_load_family_members)
    )
    health_record: DataLoader[int, HealthRecord] = field(
        default_factory=lambda: DataLoader(load_fn=_load_health_records)
    )
    # (resident, how many, which kinds) -> the latest service records (care/timeline.py)
    latest_services: DataLoader[LatestKey, list[ServiceRecord]] = field(
        default_factory=lambda: DataLoader(load_fn=load_latest_records)
    )
    latest_assessments: DataLoader[int, LatestAssessments] = field(
        default_factory=lambda: DataLoader(load_fn=_load_latest_assessments)
    )
    latest_vitals: DataLoader[int, dict[Measure, Reading]] = field(
        default_factory=lambda: DataLoader(load_fn=load_latest_vitals)
    )
    checkup_reports: DataLoader[int, ResidentReports] = field(
        default_factory=lambda: DataLoader(load_fn=_load_checkup_reports)
    )
    # The photo's metadata, never the image (care/photos.py).
    resident_photo: DataLoader[int, PhotoMeta | None] = field(
        default_factory=lambda: DataLoader(load_fn=_load_resident_photos)
    )
    # Preferences, emergency contacts (not family), the first page of the family log: care/preferences.py,
    # care/emergency_contacts.py, care/family_log.py (an erased resident's entry is its Erased error).
    preferences: DataLoader[int, ResidentPreferences | None] = field(
        default_factory=lambda: DataLoader(load_fn=load_preferences)
    )
    emergency_contacts: DataLoader[int, list[EmergencyContact]] = field(
        default_factory=lambda: DataLoader(load_fn=load_contacts)
    )
    family_communications: DataLoader[PageKey, FamilyCommunicationPage] = field(
        default_factory=lambda: DataLoader(load_fn=load_first_pages)
    )
    # The current versions of residents' consents, plain parts only (compliance/consent.py): what the
    # decision point reads; per request, so that a withdrawal takes effect on the next one.
    consent_terms: DataLoader[int, tuple[ConsentTerms, ...]] = field(
        default_factory=lambda: DataLoader(load_fn=load_terms)
    )


@dataclass
class RequestContext:
    principal: Principal | None
    request_id: str
    locale: str
    tenant: TenantRef | None = None
    tenant_problem: DomainError | None = None
    loaders: Loaders = field(default_factory=Loaders)
    # The decision point's answers in this request (schema/resident_access.py), so that a resident's
    # relatives after their identity on one page are not decided and recorded twice. Never kept longer:
    # a consent withdrawn takes effect on the next request; one changed in this request clears it.
    decisions: "dict[tuple[object, ...], Decision]" = field(default_factory=dict)
    # Charges each operation its cost (schema/rate_limits.py); None: not limited (tests, scripts).
    rate_limiter: "RateLimiter | None" = None
    # Sign-in's throttle, for operations that check a password (api/graphql.py sets both).
    login_throttle: LoginThrottle | None = None
    client_address: str = ""
    # The largest uploaded file (YIYANG_MAX_UPLOAD_BYTES; api/graphql.py sets it from the settings).
    max_upload_bytes: int = DEFAULT_MAX_FILE_BYTES
    # The audit events of this request, written when its unit of work ends (api/graphql.py).
    audit: AuditTrail = field(init=False)

    def __post_init__(self) -> None:
        self.audit = AuditTrail(self)

    def require_login_throttle(self) -> LoginThrottle:
        if self.login_throttle is None:  # the app sets it at start: without it, refuse rather than not count
            raise RuntimeError("no login throttle in the request context")
        return self.login_throttle

    def require_tenant(self) -> TenantRef:
        if self.tenant is not None:
            return self.tenant
        if self.tenant_problem is not None:
            raise self.tenant_problem
        if self.principal is None:
            raise Unauthenticated("Authentication required.")
        raise InvalidInput(
            "Name the institution to act in with the Yiyang-Institution header.", field="Yiyang-Institution"
        )


YiyangInfo = Info[RequestContext, None]

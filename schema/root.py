"""The GraphQL schema: one Query and one Mutation merged from the domain modules."""

import logging

import strawberry
from graphql import GraphQLError
from strawberry.extensions.max_aliases import create_validator as alias_limit_rule
from strawberry.extensions.query_depth_limiter import create_validator as depth_limit_rule
from strawberry.types import ExecutionContext

from schema.assessments import AssessmentMutations, AssessmentQueries
from schema.audit import AuditQueries
from schema.care_plans import CarePlanMutations, CarePlanQueries
from schema.consents import ConsentMutations
from schema.data_requests import DataRequestMutations
from schema.document_limits import DocumentLimits, DocumentLimitsAndCache
from schema.emergency_contacts import EmergencyContactMutations
from schema.execution import YiyangExecutionContext
from schema.family_log import FamilyLogMutations
from schema.health_record import HealthRecordMutations
from schema.identity import IdentityMutations, IdentityQueries
from schema.institutions import InstitutionMutations, InstitutionQueries
from schema.notifications import NotificationMutations, NotificationQueries
from schema.photos import ResidentPhotoMutations
from schema.preferences import PreferencesMutations
from schema.rate_limits import RateLimits
from schema.reports import CheckupReportMutations
from schema.residents import ResidentMutations, ResidentQueries
from schema.sops import SopMutations, SopQueries
from schema.timeline import SERVICE_RECORD_TYPES, TimelineMutations
from schema.vital_rules import VitalRuleMutations, VitalRuleQueries
from schema.vitals import VitalMutations
from schema.webhooks import WebhookMutations, WebhookQueries
from schema.work_orders import WorkOrderMutations, WorkOrderQueries
from schema.workers import WorkerMutations, WorkerQueries
from tenants.errors import DomainError

MAX_DEPTH = 10
MAX_TOKENS = 2_000
MAX_ALIASES = 30

log = logging.getLogger("yiyang.graphql")
LIMIT_RULES = [depth_limit_rule(MAX_DEPTH, None, None), alias_limit_rule(MAX_ALIASES)]


class RequestDocumentLimits(DocumentLimitsAndCache):
    # Clients send the same few documents over and over: parse and validate each once. The validation
    # cache is keyed by the rule classes too, hence the limit rules built once above.
    limits = DocumentLimits(max_tokens=MAX_TOKENS, rules=LIMIT_RULES, cache_size=512)


@strawberry.type
class Query(
    InstitutionQueries,
    ResidentQueries,
    IdentityQueries,
    AssessmentQueries,
    AuditQueries,
    NotificationQueries,
    CarePlanQueries,
    SopQueries,
    VitalRuleQueries,
    WebhookQueries,
    WorkOrderQueries,
    WorkerQueries,
):
    pass


@strawberry.type
class Mutation(
    AssessmentMutations,
    CarePlanMutations,
    CheckupReportMutations,
    ConsentMutations,
    DataRequestMutations,
    EmergencyContactMutations,
    FamilyLogMutations,
    HealthRecordMutations,
    InstitutionMutations,
    NotificationMutations,
    ResidentMutations,
    ResidentPhotoMutations,
    SopMutations,
    IdentityMutations,
    PreferencesMutations,
    TimelineMutations,
    VitalMutations,
    VitalRuleMutations,
    WebhookMutations,
    WorkOrderMutations,
    WorkerMutations,
):
    pass


def is_expected(error: GraphQLError) -> bool:
    """Errors the client caused (bad query, bad input, no access) as opposed to our own faults.

    Errors without a path arise before execution (parsing, validation, variable coercion): the request
    was at fault. Inside execution only our domain errors and GraphQL's own are expected.
    """
    return error.path is None or isinstance(error.original_error, (DomainError, GraphQLError, type(None)))


class YiyangSchema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        # Only our own faults deserve a stack trace in the log; the client sees a masked message.
        for error in errors:
            if not is_expected(error):
                log.error("unexpected error in %s", error.path, exc_info=error.original_error)


def build_schema() -> strawberry.Schema:
    return YiyangSchema(
        query=Query,
        mutation=Mutation,
        execution_context_class=YiyangExecutionContext,
        # The class itself: strawberry constructs a bare instance per request; the caches live in `limits`.
        extensions=[RequestDocumentLimits, RateLimits],
        # Object types reached only through an interface (ServiceRecord: one type per kind).
        types=[*SERVICE_RECORD_TYPES],
    )

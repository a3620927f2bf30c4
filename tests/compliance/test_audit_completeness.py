"""Completeness of the audit trail: every field of the schema that returns a resident's data, found by
introspection, and every mutation that changes it, leaves an event about that resident.

Reads. The resident-data types are those reachable from `Resident` (the institution and page info
aside). Checked: every field of `Query` that returns one; every field of `Resident` (a plain field, read
with the resident, must leave the resident's identity event; a field with a resolver must add an action
of its own to what the query without it leaves — a request's reads of a resident are one event listing
every action); and every field with a resolver on another resident-data
type (reached through the path in `REACH`). Counts of a connection are left out: a number reveals nothing
of a resident and the connection itself is checked. A new field that reads a resident's data without
asking schema/resident_access.py fails here.

Writes. Every mutation is either in `WRITES` (run on this test's resident, in order, each leaving a
write event: permitted when it did its work, failed when it answered with errors) or in
`NOT_RESIDENT_DATA`; a new mutation in neither fails here.
"""

import base64
import binascii
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from graphql import (
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    Undefined,
    build_client_schema,
    get_named_type,
    introspection_from_schema,
    is_interface_type,
    is_leaf_type,
    is_non_null_type,
    is_object_type,
    is_union_type,
)
from strawberry import Schema

from compliance.principals import Principal, PrincipalKind, StaffRole
from schema.ids import encode_id
from schema.root import build_schema
from tenants.context import TenantRef
from tenants.db import default_connection
from tenants.registry import NewInstitution, provision_institution, tenant_ref
from tenants.unit_of_work import run_in_tenant
from tests.api.upload_support import post_file
from tests.conftest import World, gql, token_for

# Reached from Resident but not the resident's data.
NOT_RESIDENT_TYPES = frozenset({"Institution", "PageInfo"})
# How to reach a type other than Resident, inside `resident(id: $id) { … }`; %s is the selection.
REACH = {
    "Consent": "consents { edges { node { id %s } } }",
    "FamilyCommunication": "familyCommunications { edges { node { id %s } } }",
}
EVERY_ROLE = tuple(StaffRole)
# Values of required arguments, by field.
ARGUMENTS = {
    "Resident.vitalSeries": "(measure: HEART_RATE)",
    "Resident.latestServices": "(first: 5)",
    # Tomorrow in the institution (Asia/Shanghai): the care plan below has tasks all day then, whatever
    # the time of the run (today's may all be past in its last quarter hour).
    # Day 3 after the scene's admission (2025-06-01): the default plan's first step, the butler role's.
    "Query.mySopSteps": ', day: "2025-06-04"',
    "Query.myTasks": f', day: "{(datetime.now(ZoneInfo("Asia/Shanghai")) + timedelta(days=1)).date()}"',
}


@cache
def _strawberry_schema() -> Schema:
    return build_schema()


def _schema() -> GraphQLSchema:
    """The API's schema as a client sees it: rebuilt from the answer to an introspection query."""
    return build_client_schema(introspection_from_schema(_strawberry_schema()._schema))


def resident_data_types(schema: GraphQLSchema) -> set[str]:
    found: set[str] = set()
    pending = ["Resident"]
    while pending:
        name = pending.pop()
        if name in found or name in NOT_RESIDENT_TYPES:
            continue
        named = schema.type_map[name]
        if is_union_type(named):
            found.add(name)
            pending.extend(member.name for member in named.types)
        elif is_object_type(named) or is_interface_type(named):
            found.add(name)
            if is_interface_type(named):
                pending.extend(member.name for member in schema.get_possible_types(named))
            pending.extend(get_named_type(f.type).name for f in named.fields.values())
    return found


def _returns(schema: GraphQLSchema, parent: GraphQLObjectType, name: str) -> GraphQLNamedType:
    return get_named_type(parent.fields[name].type)


def _is_connection(named: GraphQLNamedType) -> bool:
    return named.name.endswith(("Connection", "Edge"))


def _has_resolver(type_name: str, field_name: str) -> bool:
    definition = _strawberry_schema().get_type_by_name(type_name)
    assert definition is not None and hasattr(definition, "fields"), type_name
    (found,) = [f for f in definition.fields if f.graphql_name == field_name or _camel(f.name) == field_name]
    return found.base_resolver is not None


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(part.title() for part in rest)


def _selection(named: GraphQLNamedType) -> str:
    return "" if is_leaf_type(named) else "{ __typename }"


@dataclass(frozen=True)
class ReadProbe:
    where: str  # Type.field
    query: str
    baseline: str | None  # the same without the field: it must leave fewer events (None: any event will do)
    plain: bool = False  # a plain field of Resident, read with the resident: its identity event


def read_probes(schema: GraphQLSchema) -> Iterator[ReadProbe]:
    data = resident_data_types(schema)
    query_type = schema.query_type
    assert query_type is not None
    for name, query_field in query_type.fields.items():
        named = get_named_type(query_field.type)
        node = named
        if _is_connection(named):
            edge = get_named_type(named.fields["edges"].type)
            node = get_named_type(edge.fields["node"].type)
        if node.name not in data:
            continue
        if name == "resident":
            yield ReadProbe("Query.resident", "query($id: ID!) { resident(id: $id) { __typename } }", None)
        else:  # a list of residents (or of their tasks): this test's institution holds one resident
            arguments = ARGUMENTS.get(f"Query.{name}", "")
            yield ReadProbe(f"Query.{name}", f"{{ {name}(first: 5{arguments}) {{ __typename }} }}", None)
    resident = schema.type_map["Resident"]
    assert isinstance(resident, GraphQLObjectType)
    baseline = "query($id: ID!) { resident(id: $id) { id } }"
    for name, resident_field in resident.fields.items():
        named = _returns(schema, resident, name)
        if named.name in NOT_RESIDENT_TYPES:
            continue
        required = [
            a
            for a, arg in resident_field.args.items()
            if is_non_null_type(arg.type) and arg.default_value is Undefined
        ]
        arguments = ARGUMENTS.get(f"Resident.{name}", "")
        assert all(a in arguments for a in required), f"Resident.{name}: give {required} in ARGUMENTS"
        query = f"query($id: ID!) {{ resident(id: $id) {{ id {name}{arguments} {_selection(named)} }} }}"
        if _has_resolver("Resident", name):
            yield ReadProbe(f"Resident.{name}", query, baseline)
        else:
            yield ReadProbe(f"Resident.{name}", query, None, plain=True)
    for type_name in sorted(data - {"Resident"}):
        named_type = schema.type_map[type_name]
        if not isinstance(named_type, GraphQLObjectType) or _is_connection(named_type):
            continue
        for name in named_type.fields:
            if not _has_resolver(type_name, name):
                continue
            path = REACH.get(type_name)
            assert path is not None, f"{type_name}.{name} reads data: add a path to it to REACH"
            selected = _selection(_returns(schema, named_type, name))
            yield ReadProbe(
                f"{type_name}.{name}",
                "query($id: ID!) { resident(id: $id) { " + path % f"{name} {selected}" + " } }",
                "query($id: ID!) { resident(id: $id) { " + path % "" + " } }",
            )


# Fields whose decision is their parent's (the same action on the same resident): recorded as the
# parent's event of the request, which the probe checks exists.
SAME_DECISION_AS_PARENT = frozenset({"Consent.history"})


@dataclass(frozen=True)
class Read:
    """What a request left on the audit log about the scene's resident, permitted: actions (a read's
    event lists them all: compliance/audit/events.py) and categories."""

    actions: frozenset[str]
    categories: frozenset[str]


async def read(
    client: httpx.AsyncClient, scene: "Scene", query: str, variables: dict[str, Any]
) -> tuple[dict[str, Any], Read]:
    before = await last_seq(scene)
    body = await gql(client, query, variables, token=scene.token)
    permitted = [e for e in await events_about(scene, before) if e["outcome"] == "permitted"]
    actions = frozenset(part for e in permitted for part in e["action"].split(","))
    return body, Read(actions, frozenset(c for e in permitted for c in e["data_categories"]))


@dataclass
class Scene:
    tenant: TenantRef
    resident_pk: int
    token: str
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def institution_id(self) -> int:
        return self.tenant.institution_id

    @property
    def resident(self) -> str:
        return encode_id("Resident", self.institution_id, self.resident_pk)


async def events_about(scene: Scene, after_seq: int = 0) -> list[dict[str, Any]]:
    async def work() -> list[dict[str, Any]]:
        return await default_connection().execute_query_dict(
            "SELECT seq, action, outcome, reason_code, data_categories FROM audit_event "
            "WHERE resident_id = $1 AND seq > $2 ORDER BY seq",
            [scene.resident_pk, after_seq],
        )

    return await run_in_tenant(scene.tenant, work)


async def last_seq(scene: Scene) -> int:
    async def work() -> int:
        _, rows = await default_connection().execute_query(
            "SELECT coalesce(max(seq), 0) AS seq FROM audit_event"
        )
        return int(rows[0]["seq"])

    return await run_in_tenant(scene.tenant, work)


async def new_scene(client: httpx.AsyncClient, name: str) -> Scene:
    institution = await provision_institution(NewInstitution(name=name, region_code="test-east"))
    # A subject of its own: the test sends many requests, which the rate limit counts per subject.
    token = token_for(
        Principal(
            f"account:{7_000_000 + institution.id}",
            PrincipalKind.STAFF,
            institution_id=institution.id,
            roles=frozenset(EVERY_ROLE),
        )
    )
    admitted = await gql(
        client,
        'mutation { admitResident(input: {name: "审计长者", gender: FEMALE, birthDate: "1936-05-06",'
        ' careLevel: ASSISTED, admissionDate: "2025-06-01"}) { resident { id } userErrors { field } } }',
        token=token,
    )
    resident = admitted["data"]["admitResident"]["resident"]["id"]
    pk = int(base64.urlsafe_b64decode(resident + "=" * (-len(resident) % 4)).decode().split(":")[-1])
    return Scene(tenant_ref(institution), pk, token)


# Reads ---------------------------------------------------------------------------------------------


async def test_every_read_of_resident_data_is_audited(client: httpx.AsyncClient, world: World) -> None:
    assert world.institution_ids
    scene = await new_scene(client, "审计完整性读取")
    # Something to reach below the resident: a consent, a family member and a log entry naming them.
    member = await gql(
        client,
        'mutation($id: ID!) { addFamilyMember(input: {residentId: $id, name: "审计家属", relationship: SON,'
        ' phone: "13800001111"}) { familyMember { id } userErrors { field } } }',
        {"id": scene.resident},
        token=scene.token,
    )
    member_id = member["data"]["addFamilyMember"]["familyMember"]["id"]
    for operation, variables in WRITES_FOR_READS:
        body = await gql(
            client, operation, {"id": scene.resident, "member": member_id, **variables}, token=scene.token
        )
        assert "errors" not in body and not _user_errors(body), body

    probes = list(read_probes(_schema()))
    assert {"Query.resident", "Query.residents", "Resident.healthRecord", "Consent.history"} <= {
        p.where for p in probes
    }
    unaudited: list[str] = []
    for probe in probes:
        variables = {"id": scene.resident} if "$id" in probe.query else {}
        body, found = await read(client, scene, probe.query, variables)
        assert "errors" not in body, (probe.where, body)
        if probe.plain:
            ok = "resident.view" in found.actions and "identity" in found.categories
        elif probe.baseline is not None and probe.where not in SAME_DECISION_AS_PARENT:
            _, parent = await read(client, scene, probe.baseline, {"id": scene.resident})
            ok = bool(found.actions - parent.actions)
        else:
            ok = bool(found.actions)
        if not ok:
            unaudited.append(probe.where)
    assert unaudited == []


WRITES_FOR_READS: list[tuple[str, dict[str, Any]]] = [
    (
        "mutation($id: ID!) { recordConsent(input: {residentId: $id, grantor: {kind: RESIDENT}, grantee:"
        " {kind:"
        ' INSTITUTION}, purposes: [CARE_DELIVERY], categories: [VITALS], noticeVersion: "v1", noticeSha256:'
        ' "' + "ab" * 32 + '", method: VERBAL_WITNESSED}) { consent { id } userErrors { field } } }',
        {},
    ),
    (
        "mutation($id: ID!, $member: ID!) { logFamilyCommunication(input: {residentId: $id, familyMemberId:"
        ' $member, occurredAt: "2026-01-02T10:00:00+08:00", channel: PHONE, direction: TO_FAMILY, summary:'
        ' "入住第三天回访"}) { familyCommunication { id } userErrors { field } } }',
        {},
    ),
    # Tasks of the caregiver role every 15 minutes, for myTasks (asked for tomorrow: ARGUMENTS).
    (
        "mutation($id: ID!) { setCarePlanItem(input: {residentId: $id, kind: OBSERVATION, recurrence:"
        ' "FREQ=MINUTELY;INTERVAL=15", assigneeRole: "caregiver", durationMinutes: 5}) { item { id }'
        " userErrors { field } } }",
        {},
    ),
]


def _user_errors(body: dict[str, Any]) -> list[Any]:
    found: list[Any] = []
    for payload in (body.get("data") or {}).values():
        if isinstance(payload, dict):
            found.extend(payload.get("userErrors") or [])
    return found


# Writes --------------------------------------------------------------------------------------------

# Mutations that touch no resident's data (accounts, clients, institutions).
NOT_RESIDENT_DATA = frozenset(
    {
        "provisionInstitution",
        "addStaffMember",
        "setStaffRoles",
        "removeStaffMember",
        "createIntegratorClient",
        "revokeIntegratorClient",
        "changePassword",
        "beginTotpEnrolment",
        "confirmTotpEnrolment",
        "disableTotp",
        "setInstitutionRequiresTotp",
        "markNotificationsRead",  # the caller's own inbox; a notification names a resident by id only
        "retryDeadLetter",  # a failed background job: ids and an error class, no resident's data
        "setWorkOrderRoutingRule",  # the institution's routing of work orders
        "setWorkOrderSlaPolicy",  # the institution's deadlines of work orders
        "setVitalRule",  # the institution's rules over vitals: configuration, no resident's data
        "retireVitalRule",
        "setSopTemplate",  # SOP templates: the institution's or chain's procedures, no resident's data
        "retireSopTemplate",
        "setChainSopTemplate",
        "retireChainSopTemplate",
        # Integrator webhook endpoints (schema/webhooks.py): the institution's configuration, no resident.
        "registerWebhookEndpoint",
        "updateWebhookEndpoint",
        "disableWebhookEndpoint",
        "rotateWebhookSecret",
    }
)


@dataclass(frozen=True)
class Write:
    mutation: str
    operation: str  # variables: $id (the target's id), $assessment (an assessment id of the institution)
    target: str = "Resident"  # the type of $id: the resident, or a part harvested from an earlier write


PDF = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"

# In order: the adds leave the parts the later writes change; the erasure comes last.
WRITES = [
    Write(
        "addDiagnosis",
        'mutation($id: ID!) { addDiagnosis(input: {residentId: $id, condition: "高血压", icd10: "I10"})'
        " { diagnosis { id } userErrors { field } } }",
    ),
    Write(
        "addMedication",
        'mutation($id: ID!) { addMedication(input: {residentId: $id, drug: "氨氯地平", doseAmount: "5",'
        ' doseUnit: MG, route: ORAL, frequency: ONCE_DAILY, startedOn: "2026-01-01"})'
        " { medication { id } userErrors { field } } }",
    ),
    Write(
        "addAllergy",
        'mutation($id: ID!) { addAllergy(input: {residentId: $id, substance: "青霉素", severity: SEVERE})'
        " { allergy { id } userErrors { field } } }",
    ),
    Write(
        "addFamilyMember",
        'mutation($id: ID!) { addFamilyMember(input: {residentId: $id, name: "审计之子", relationship: SON,'
        ' phone: "13800002222"}) { familyMember { id } userErrors { field } } }',
    ),
    Write(
        "addEmergencyContact",
        'mutation($id: ID!) { addEmergencyContact(input: {residentId: $id, name: "邻居王", role: "邻居",'
        ' phone: "13800003333"}) { emergencyContact { id } userErrors { field } } }',
    ),
    Write(
        "recordService",
        "mutation($id: ID!) { recordService(input: {residentId: $id, details: {care: {item: BATHING}}})"
        " { serviceRecord { id } userErrors { field } } }",
    ),
    Write(
        "recordConsent",
        "mutation($id: ID!) { recordConsent(input: {residentId: $id, grantor: {kind: RESIDENT}, grantee:"
        ' {kind: INSTITUTION}, purposes: [CARE_DELIVERY], categories: [VITALS], noticeVersion: "v1",'
        ' noticeSha256: "'
        + "cd" * 32
        + '", method: VERBAL_WITNESSED}) { consent { id } userErrors { field } } }',
    ),
    Write(
        "uploadCheckupReport",  # a multipart request: $input carries the file
        "mutation($input: UploadCheckupReportInput!) { uploadCheckupReport(input: $input)"
        " { report { id } userErrors { field } } }",
    ),
    Write(
        "setResidentPhoto",  # not a picture: refused with a user error, recorded as failed
        'mutation($id: ID!) { setResidentPhoto(input: {residentId: $id, file: "PNG"})'
        " { photo { id } userErrors { field } } }",
    ),
    Write(
        "recordAssessment",  # no answers: user errors
        "mutation($id: ID!) { recordAssessment(input: {residentId: $id, scale: BARTHEL, assessedOn:"
        ' "2026-01-02",'
        " reason: OTHER, answers: []}) { assessment { id } userErrors { field } } }",
    ),
    Write(
        "applyCareLevelSuggestion",  # an assessment that does not exist: NOT_FOUND after the decision
        "mutation($id: ID!, $assessment: ID!) { applyCareLevelSuggestion(input: {residentId: $id,"
        " assessmentId: $assessment}) { resident { careLevel } userErrors { field } } }",
    ),
    Write(
        "endMedication",
        'mutation($id: ID!) { endMedication(input: {id: $id, endedOn: "2026-02-01"})'
        " { medication { id } userErrors { field } } }",
        "Medication",
    ),
    Write(
        "updateDiagnosis",
        'mutation($id: ID!) { updateDiagnosis(input: {id: $id, note: "控制良好"}) { diagnosis { id }'
        " userErrors { field } } }",
        "Diagnosis",
    ),
    Write(
        "removeDiagnosis",
        "mutation($id: ID!) { removeDiagnosis(input: {id: $id}) { removedId userErrors { field } } }",
        "Diagnosis",
    ),
    Write(
        "removeMedication",
        "mutation($id: ID!) { removeMedication(input: {id: $id}) { removedId userErrors { field } } }",
        "Medication",
    ),
    Write(
        "updateAllergy",
        'mutation($id: ID!) { updateAllergy(input: {id: $id, reaction: "皮疹"}) { allergy { id } userErrors'
        " { field } } }",
        "Allergy",
    ),
    Write(
        "removeAllergy",
        "mutation($id: ID!) { removeAllergy(input: {id: $id}) { removedId userErrors { field } } }",
        "Allergy",
    ),
    Write(
        "logFamilyCommunication",
        "mutation($id: ID!) { logFamilyCommunication(input: {residentId: $id, occurredAt:"
        ' "2026-01-02T10:00:00+08:00", channel: PHONE, direction: TO_FAMILY, summary: "回访"})'
        " { familyCommunication { id } userErrors { field } } }",
    ),
    Write(
        "updateFamilyMember",
        'mutation($id: ID!) { updateFamilyMember(input: {id: $id, phone: "13800004444"})'
        " { familyMember { id } userErrors { field } } }",
        "FamilyMember",
    ),
    Write(
        "removeFamilyMember",
        "mutation($id: ID!) { removeFamilyMember(input: {id: $id}) { removedFamilyMemberId userErrors {"
        " field } } }",
        "FamilyMember",
    ),
    Write(
        "updateEmergencyContact",
        'mutation($id: ID!) { updateEmergencyContact(input: {id: $id, role: "老邻居"})'
        " { emergencyContact { id } userErrors { field } } }",
        "EmergencyContact",
    ),
    Write(
        "removeEmergencyContact",
        "mutation($id: ID!) { removeEmergencyContact(input: {id: $id}) { removedEmergencyContactId"
        " userErrors { field } } }",
        "EmergencyContact",
    ),
    Write(
        "removeCheckupReport",
        "mutation($id: ID!) { removeCheckupReport(input: {id: $id}) { removedId userErrors { field } } }",
        "CheckupReport",
    ),
    Write(
        "endServiceRecord",  # care has no end: a user error
        "mutation($id: ID!) { endServiceRecord(input: {id: $id}) { serviceRecord { id } userErrors { field"
        " } } }",
        "ServiceRecord",
    ),
    Write(
        "removeServiceRecord",
        "mutation($id: ID!) { removeServiceRecord(input: {id: $id}) { removedId userErrors { field } } }",
        "ServiceRecord",
    ),
    Write(
        "withdrawConsent",
        'mutation($id: ID!) { withdrawConsent(input: {id: $id, reason: "本人撤回"}) { consent { id }'
        " userErrors { field } } }",
        "Consent",
    ),
    Write(
        "updateResident",
        'mutation($id: ID!) { updateResident(input: {id: $id, name: "审计长者甲"}) { resident { id }'
        " userErrors { field } } }",
    ),
    Write(
        "recordVitalSign",
        "mutation($id: ID!) { recordVitalSign(input: {residentId: $id, measure: HEART_RATE, value: 72})"
        " { reading { id } userErrors { field } } }",
    ),
    Write(
        "setCarePlanItem",
        "mutation($id: ID!) { setCarePlanItem(input: {residentId: $id, kind: HYGIENE, recurrence:"
        ' "FREQ=DAILY;BYHOUR=9;BYMINUTE=0", assigneeRole: "caregiver", durationMinutes: 15,'
        ' label: "协助洗漱"}) { item { id } tasks { id } userErrors { field } } }',
    ),
    Write(
        "completeTask",
        'mutation($id: ID!) { completeTask(input: {taskId: $id, result: "已完成"}) { task { id }'
        " userErrors { field } } }",
        "CareTask",
    ),
    # The same task, closed already: CONFLICT, recorded as failed.
    Write(
        "markTaskNotDone",
        'mutation($id: ID!) { markTaskNotDone(input: {taskId: $id, reason: "外出就医"}) { task { id }'
        " userErrors { field } } }",
        "CareTask",
    ),
    Write(
        "setCarePlanItem",
        "mutation($id: ID!) { setCarePlanItem(input: {itemId: $id, kind: HYGIENE, recurrence:"
        ' "FREQ=DAILY;BYHOUR=10;BYMINUTE=0", assigneeRole: "caregiver", durationMinutes: 15}) { item { id }'
        " userErrors { field } } }",
        "CarePlanItem",
    ),
    Write(
        "removeCarePlanItem",
        "mutation($id: ID!) { removeCarePlanItem(input: {itemId: $id}) { removedId userErrors { field } } }",
        "CarePlanItem",
    ),
    # The resident's SOP steps (the scene's admission is backdated: its default steps are closed).
    Write(
        "assignResidentButler",
        "mutation($id: ID!) { assignResidentButler(input: {residentId: $id}) { butlerId steps { id }"
        " userErrors { field } } }",
    ),
    Write(
        "completeSopStep",  # closed already: CONFLICT, recorded as failed
        'mutation($id: ID!) { completeSopStep(input: {stepId: $id, outcome: {summary: "回访", channel:'
        " PHONE}}) { step { id } userErrors { field } } }",
        "SopStep",
    ),
    Write(
        "skipSopStep",
        'mutation($id: ID!) { skipSopStep(input: {stepId: $id, reason: "家属出国"}) { step { id }'
        " userErrors { field } } }",
        "SopStep",
    ),
    Write(
        "setVitalRange",
        "mutation($id: ID!) { setVitalRange(input: {residentId: $id, measure: HEART_RATE, low: 50, high: 90})"
        " { range { low } userErrors { field } } }",
    ),
    Write(
        "setResidentPreferences",
        'mutation($id: ID!) { setResidentPreferences(input: {residentId: $id, religion: "佛教"})'
        " { preferences { id } userErrors { field } } }",
    ),
    Write(
        "removeResidentPhoto",
        "mutation($id: ID!) { removeResidentPhoto(input: {residentId: $id}) { removedId userErrors { field"
        " } } }",
    ),
    # Work orders about the resident (schema/work_orders.py): raised, handled, commented, rated.
    Write(
        "raiseWorkOrder",
        'mutation($id: ID!) { raiseWorkOrder(input: {residentId: $id, category: "care", title: "呼叫铃不响"})'
        " { workOrder { id } userErrors { field } } }",
    ),
    Write(
        "assignWorkOrder",
        'mutation($id: ID!) { assignWorkOrder(input: {workOrderId: $id, department: "nursing"})'
        " { workOrder { status } userErrors { field } } }",
        "WorkOrder",
    ),
    Write(
        "changeWorkOrderStatus",
        "mutation($id: ID!) { changeWorkOrderStatus(input: {workOrderId: $id, change: RESOLVE})"
        " { workOrder { status } userErrors { field } } }",
        "WorkOrder",
    ),
    Write(
        "commentOnWorkOrder",
        'mutation($id: ID!) { commentOnWorkOrder(input: {workOrderId: $id, body: "已修好"})'
        " { comment { body } userErrors { field } } }",
        "WorkOrder",
    ),
    Write(
        "rateWorkOrder",
        "mutation($id: ID!) { rateWorkOrder(input: {workOrderId: $id, rating: 5})"
        " { workOrder { rating } userErrors { field } } }",
        "WorkOrder",
    ),
    Write(
        "exportResidentData",
        "mutation($id: ID!) { exportResidentData(input: {residentId: $id}) { export userErrors { field } } }",
    ),
    Write(
        "dischargeResident",
        'mutation($id: ID!) { dischargeResident(input: {id: $id, dischargedOn: "2026-03-01", reason: OTHER})'
        " { resident { id } userErrors { field } } }",
    ),
    Write(
        "eraseResident",
        "mutation($id: ID!) { eraseResident(input: {residentId: $id, reason: DATA_SUBJECT_REQUEST})"
        " { erasure { erasedAt } userErrors { field } } }",
    ),
]

_GLOBAL_ID = re.compile(r"^[A-Za-z0-9_-]{4,}$")


def _harvest(body: Any, into: dict[str, str]) -> None:
    """The global ids in an answer, by the type they name."""
    if isinstance(body, dict):
        for key, value in body.items():
            if key == "id" and isinstance(value, str) and _GLOBAL_ID.match(value):
                try:
                    kind = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode().split(":")[0]
                except (binascii.Error, UnicodeDecodeError):
                    continue
                into.setdefault(kind, value)
            else:
                _harvest(value, into)
    elif isinstance(body, list):
        for item in body:
            _harvest(item, into)


def test_every_mutation_is_classified() -> None:
    mutation = _schema().mutation_type
    assert mutation is not None
    written = {write.mutation for write in WRITES}
    unclassified = set(mutation.fields) - written - NOT_RESIDENT_DATA - {"admitResident"}
    assert unclassified == set(), f"mutations neither in WRITES nor in NOT_RESIDENT_DATA: {unclassified}"
    assert written & NOT_RESIDENT_DATA == set()


async def test_every_write_of_resident_data_is_audited(client: httpx.AsyncClient, world: World) -> None:
    assert world.institution_ids
    scene = await new_scene(client, "审计完整性写入")
    admitted = await events_about(scene)
    assert [(e["action"], e["outcome"]) for e in admitted] == [("resident.admit", "permitted")]

    problems: list[tuple[str, Any]] = []
    for write in WRITES:
        before = await last_seq(scene)
        variables = {
            "id": scene.resident if write.target == "Resident" else scene.ids[write.target],
            "assessment": encode_id("Assessment", scene.institution_id, 987_654),
        }
        if "$input" in write.operation:
            given = {
                "residentId": variables["id"],
                "reportDate": "2026-01-02",
                "title": "年度体检",
                "file": None,
            }
            file = ("report.pdf", PDF, "application/pdf")
            body = (await post_file(client, scene.token, write.operation, {"input": given}, file)).json()
        else:
            used = {name: value for name, value in variables.items() if f"${name}" in write.operation}
            body = await gql(client, write.operation, used, token=scene.token)
        _harvest(body.get("data"), scene.ids)
        did_its_work = "errors" not in body and not _user_errors(body)
        writes = [e for e in await events_about(scene, before) if not e["action"].endswith(".view")]
        expected = "permitted" if did_its_work else "failed"
        if not writes or {e["outcome"] for e in writes} != {expected}:
            problems.append((write.mutation, body, writes))
    assert problems == []

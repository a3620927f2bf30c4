"""Every argument that takes an id, given an id of another institution: NOT_FOUND, and nothing changes."""

import uuid
from collections.abc import Mapping

import httpx
from graphql import GraphQLNonNull, GraphQLObjectType, get_named_type

from compliance.identity.account_models import AccountKind
from compliance.identity.accounts import NewAccount, add_staff_membership, create_account
from compliance.identity.clients import create_integrator_client
from compliance.principals import StaffRole
from schema.ids import encode_id
from schema.root import build_schema
from tests.conftest import World, gql

# Every (operation type, field, argument path) that carries an id, with the operation to probe it.
PROBES: dict[tuple[str, str, str], tuple[str, str]] = {
    ("mutation", "addDiagnosis", "input.residentId"): (
        "Resident",
        'mutation($id: ID!) { addDiagnosis(input: {residentId: $id, condition: "篡改"})'
        " { diagnosis { id } } }",
    ),
    ("mutation", "addMedication", "input.residentId"): (
        "Resident",
        'mutation($id: ID!) { addMedication(input: {residentId: $id, drug: "篡改", doseAmount: "1",'
        ' doseUnit: MG, route: ORAL, frequency: ONCE_DAILY, startedOn: "2026-01-01"})'
        " { medication { id } } }",
    ),
    ("mutation", "endMedication", "input.id"): (
        "Medication",
        'mutation($id: ID!) { endMedication(input: {id: $id, endedOn: "2026-01-02"}) { medication { id } } }',
    ),
    ("mutation", "addAllergy", "input.residentId"): (
        "Resident",
        'mutation($id: ID!) { addAllergy(input: {residentId: $id, substance: "篡改", severity: MILD})'
        " { allergy { id } } }",
    ),
    # Corrections of the health record and of family members.
    ("mutation", "updateDiagnosis", "input.id"): (
        "Diagnosis",
        'mutation($id: ID!) { updateDiagnosis(input: {id: $id, condition: "篡改"}) { diagnosis { id } } }',
    ),
    ("mutation", "removeDiagnosis", "input.id"): (
        "Diagnosis",
        "mutation($id: ID!) { removeDiagnosis(input: {id: $id}) { removedId } }",
    ),
    ("mutation", "removeMedication", "input.id"): (
        "Medication",
        "mutation($id: ID!) { removeMedication(input: {id: $id}) { removedId } }",
    ),
    ("mutation", "updateAllergy", "input.id"): (
        "Allergy",
        'mutation($id: ID!) { updateAllergy(input: {id: $id, substance: "篡改"}) { allergy { id } } }',
    ),
    ("mutation", "removeAllergy", "input.id"): (
        "Allergy",
        "mutation($id: ID!) { removeAllergy(input: {id: $id}) { removedId } }",
    ),
    ("mutation", "updateFamilyMember", "input.id"): (
        "FamilyMember",
        'mutation($id: ID!) { updateFamilyMember(input: {id: $id, phone: "13800000000"})'
        " { familyMember { id } } }",
    ),
    ("mutation", "removeFamilyMember", "input.id"): (
        "FamilyMember",
        "mutation($id: ID!) { removeFamilyMember(input: {id: $id}) { removedFamilyMemberId } }",
    ),
    ("query", "resident", "id"): ("Resident", "query($id: ID!) { resident(id: $id) { name } }"),
    ("query", "institution", "id"): ("Institution", "query($id: ID!) { institution(id: $id) { name } }"),
    ("mutation", "updateResident", "input.id"): (
        "Resident",
        'mutation($id: ID!) { updateResident(input: {id: $id, name: "篡改"}) { resident { name } } }',
    ),
    ("mutation", "dischargeResident", "input.id"): (
        "Resident",
        'mutation($id: ID!) { dischargeResident(input: {id: $id, dischargedOn: "2025-01-01", reason: OTHER})'
        " { resident { name } } }",
    ),
    ("mutation", "addFamilyMember", "input.residentId"): (
        "Resident",
        'mutation($id: ID!) { addFamilyMember(input: {residentId: $id, name: "陌生人", relationship: FRIEND,'
        ' phone: "13800000000"}) { familyMember { name } } }',
    ),
    ("mutation", "recordVitalSign", "input.residentId"): (
        "Resident",
        "mutation($id: ID!) { recordVitalSign(input: {residentId: $id, measure: HEART_RATE, value: 72})"
        " { reading { id } } }",
    ),
    ("mutation", "setVitalRange", "input.residentId"): (
        "Resident",
        "mutation($id: ID!) { setVitalRange(input: {residentId: $id, measure: HEART_RATE, low: 50, high: 90})"
        " { range { low high } } }",
    ),
    ("mutation", "setStaffRoles", "input.staffMemberId"): (
        "StaffMember",
        "mutation($id: ID!) { setStaffRoles(input: {staffMemberId: $id, roles: [INSTITUTION_ADMIN]})"
        " { staffMember { id roles } } }",
    ),
    ("mutation", "removeStaffMember", "input.staffMemberId"): (
        "StaffMember",
        "mutation($id: ID!) { removeStaffMember(input: {staffMemberId: $id}) { removedStaffMemberId } }",
    ),
    ("mutation", "revokeIntegratorClient", "input.id"): (
        "IntegratorClient",
        "mutation($id: ID!) { revokeIntegratorClient(input: {id: $id}) { client { revokedAt } } }",
    ),
    # Preferences, emergency contacts, family log (schema/preferences.py, emergency_contacts.py,
    # family_log.py).
    ("mutation", "setResidentPreferences", "input.residentId"): (
        "Resident",
        'mutation($id: ID!) { setResidentPreferences(input: {residentId: $id, religion: "篡改"})'
        " { preferences { id } } }",
    ),
    ("mutation", "addEmergencyContact", "input.residentId"): (
        "Resident",
        'mutation($id: ID!) { addEmergencyContact(input: {residentId: $id, name: "陌生人", role: "邻居",'
        ' phone: "13800000000"}) { emergencyContact { id } } }',
    ),
    ("mutation", "updateEmergencyContact", "input.id"): (
        "EmergencyContact",
        'mutation($id: ID!) { updateEmergencyContact(input: {id: $id, name: "篡改"})'
        " { emergencyContact { name } } }",
    ),
    ("mutation", "removeEmergencyContact", "input.id"): (
        "EmergencyContact",
        "mutation($id: ID!) { removeEmergencyContact(input: {id: $id}) { removedEmergencyContactId } }",
    ),
    ("mutation", "logFamilyCommunication", "input.residentId"): (
        "Resident",
        "mutation($id: ID!) { logFamilyCommunication(input: {residentId: $id,"
        ' occurredAt: "2026-01-02T10:00:00", channel: PHONE, direction: TO_FAMILY, summary: "篡改"})'
        " { familyCommunication { id } } }",
    ),
    # The family member is checked first (its institution against the acting one): the resident id here
    # names no resident anywhere.
    ("mutation", "logFamilyCommunication", "input.familyMemberId"): (
        "FamilyMember",
        "mutation($id: ID!) { logFamilyCommunication(input: {residentId: "
        f'"{encode_id("Resident", 0, 1)}", familyMemberId: $id, occurredAt: "2026-01-02T10:00:00",'
        ' channel: PHONE, direction: TO_FAMILY, summary: "篡改"}) { familyCommunication { id } } }',
    ),
    # The policy refuses before the file is read: a JSON string stands in for the upload.
    ("mutation", "uploadCheckupReport", "input.residentId"): (
        "Resident",
        'mutation($id: ID!) { uploadCheckupReport(input: {residentId: $id, reportDate: "2026-01-02",'
        ' title: "篡改", file: "%PDF-1.4"}) { report { id } } }',
    ),
    ("mutation", "removeCheckupReport", "input.id"): (
        "CheckupReport",
        "mutation($id: ID!) { removeCheckupReport(input: {id: $id}) { removedId } }",
    ),
    # Residents' photos (schema/photos.py): a JSON string stands in for the upload, as above.
    ("mutation", "setResidentPhoto", "input.residentId"): (
        "Resident",
        'mutation($id: ID!) { setResidentPhoto(input: {residentId: $id, file: "PNG"}) { photo { id } } }',
    ),
    ("mutation", "removeResidentPhoto", "input.residentId"): (
        "Resident",
        "mutation($id: ID!) { removeResidentPhoto(input: {residentId: $id}) { removedId } }",
    ),
    # Data-subject requests (schema/data_requests.py).
    ("mutation", "exportResidentData", "input.residentId"): (
        "Resident",
        "mutation($id: ID!) { exportResidentData(input: {residentId: $id}) { export } }",
    ),
    ("mutation", "eraseResident", "input.residentId"): (
        "Resident",
        "mutation($id: ID!) { eraseResident(input: {residentId: $id, reason: DATA_SUBJECT_REQUEST})"
        " { erasure { erasedAt } } }",
    ),
    # The service timeline (schema/timeline.py).
    ("mutation", "recordService", "input.residentId"): (
        "Resident",
        "mutation($id: ID!) { recordService(input: {residentId: $id, details: {care: {item: BATHING}}})"
        " { serviceRecord { id } } }",
    ),
    ("mutation", "endServiceRecord", "input.id"): (
        "ServiceRecord",
        "mutation($id: ID!) { endServiceRecord(input: {id: $id}) { serviceRecord { id } } }",
    ),
    ("mutation", "removeServiceRecord", "input.id"): (
        "ServiceRecord",
        "mutation($id: ID!) { removeServiceRecord(input: {id: $id}) { removedId } }",
    ),
    # Assessments (schema/assessments.py).
    ("mutation", "recordAssessment", "input.residentId"): (
        "Resident",
        "mutation($id: ID!) { recordAssessment(input: {residentId: $id, scale: BARTHEL,"
        ' assessedOn: "2026-01-02", reason: OTHER, answers: []}) { assessment { id } } }',
    ),
    ("mutation", "applyCareLevelSuggestion", "input.residentId"): (
        "Resident",
        "mutation($id: ID!) { applyCareLevelSuggestion(input: {residentId: $id,"
        f' assessmentId: "{encode_id("Assessment", 0, 1)}"}}) {{ resident {{ careLevel }} }} }}',
    ),
    # The assessment is checked first (its institution against the acting one).
    ("mutation", "applyCareLevelSuggestion", "input.assessmentId"): (
        "Assessment",
        "mutation($id: ID!) { applyCareLevelSuggestion(input: {residentId: "
        f'"{encode_id("Resident", 0, 1)}", assessmentId: $id}}) {{ resident {{ careLevel }} }} }}',
    ),
    # Consents (schema/consents.py).
    ("mutation", "recordConsent", "input.residentId"): (
        "Resident",
        "mutation($id: ID!) { recordConsent(input: {residentId: $id, grantor: {kind: RESIDENT},"
        " grantee: {kind: INSTITUTION}, purposes: [CARE_DELIVERY], categories: [VITALS],"
        ' noticeVersion: "v1",'
        f' noticeSha256: "{"0" * 64}", method: VERBAL_WITNESSED}}) {{ consent {{ id }} }} }}',
    ),
    ("mutation", "recordConsent", "input.consentId"): (
        "Consent",
        "mutation($id: ID!) { recordConsent(input: {residentId: "
        f'"{encode_id("Resident", 0, 1)}", consentId: $id, grantor: {{kind: RESIDENT}},'
        " grantee: {kind: INSTITUTION}, purposes: [CARE_DELIVERY], categories: [VITALS],"
        ' noticeVersion: "v1",'
        f' noticeSha256: "{"0" * 64}", method: VERBAL_WITNESSED}}) {{ consent {{ id }} }} }}',
    ),
    ("mutation", "withdrawConsent", "input.id"): (
        "Consent",
        'mutation($id: ID!) { withdrawConsent(input: {id: $id, reason: "篡改"}) { consent { id } } }',
    ),
    # The audit log (schema/audit.py).
    ("query", "auditEvents", "filter.residentId"): (
        "Resident",
        "query($id: ID!) { auditEvents(filter: {residentId: $id}) { edges { node { action } } } }",
    ),
    # Notifications (schema/notifications.py).
    ("mutation", "markNotificationsRead", "input.ids"): (
        "Notification",
        "mutation($id: ID!) { markNotificationsRead(input: {ids: [$id]}) { userErrors { message } } }",
    ),
    # Webhooks (schema/webhooks.py).
    ("mutation", "registerWebhookEndpoint", "input.clientId"): (
        "IntegratorClient",
        'mutation($id: ID!) { registerWebhookEndpoint(input: {clientId: $id, url: "https://hooks.example.com/x",'
        ' kinds: ["task.overdue"]}) { secret } }',
    ),
    ("mutation", "updateWebhookEndpoint", "input.id"): (
        "WebhookEndpoint",
        'mutation($id: ID!) { updateWebhookEndpoint(input: {id: $id, kinds: ["task.overdue"]})'
        " { endpoint { id } } }",
    ),
    ("mutation", "disableWebhookEndpoint", "input.id"): (
        "WebhookEndpoint",
        "mutation($id: ID!) { disableWebhookEndpoint(input: {id: $id}) { endpoint { id } } }",
    ),
    ("mutation", "rotateWebhookSecret", "input.id"): (
        "WebhookEndpoint",
        "mutation($id: ID!) { rotateWebhookSecret(input: {id: $id}) { secret } }",
    ),
    ("query", "webhookDeliveries", "endpointId"): (
        "WebhookEndpoint",
        "query($id: ID!) { webhookDeliveries(endpointId: $id) { totalCount } }",
    ),
    ("mutation", "setCarePlanItem", "input.residentId"): (
        "Resident",
        "mutation($id: ID!) { setCarePlanItem(input: {residentId: $id, kind: HYGIENE,"
        ' recurrence: "FREQ=DAILY", assigneeRole: "caregiver", durationMinutes: 10}) { item { id } } }',
    ),
    ("mutation", "setCarePlanItem", "input.itemId"): (
        "CarePlanItem",
        "mutation($id: ID!) { setCarePlanItem(input: {itemId: $id, kind: HYGIENE,"
        ' recurrence: "FREQ=DAILY", assigneeRole: "caregiver", durationMinutes: 10}) { item { id } } }',
    ),
    ("mutation", "setCarePlanItem", "input.caregiverId"): (
        "StaffMember",
        "mutation($id: ID!) { setCarePlanItem(input: {residentId: $id, caregiverId: $id, kind: HYGIENE,"
        ' recurrence: "FREQ=DAILY", durationMinutes: 10}) { item { id } } }',
    ),
    ("mutation", "removeCarePlanItem", "input.itemId"): (
        "CarePlanItem",
        "mutation($id: ID!) { removeCarePlanItem(input: {itemId: $id}) { removedId } }",
    ),
    # SOPs (schema/sops.py).
    ("query", "chainSopTemplates", "chainId"): (
        "Chain",
        "query($id: ID!) { chainSopTemplates(chainId: $id) { totalCount } }",
    ),
    ("mutation", "setSopTemplate", "input.templateId"): (
        "SopTemplate",
        'mutation($id: ID!) { setSopTemplate(input: {templateId: $id, name: "篡改", anchor: ADMISSION,'
        ' steps: [{title: "t", dayOffset: 1, assignee: "butler", graceHours: 1}]}) { template { id } } }',
    ),
    ("mutation", "retireSopTemplate", "input.templateId"): (
        "SopTemplate",
        "mutation($id: ID!) { retireSopTemplate(input: {templateId: $id}) { template { id } } }",
    ),
    ("mutation", "setChainSopTemplate", "input.chainId"): (
        "Chain",
        'mutation($id: ID!) { setChainSopTemplate(input: {chainId: $id, name: "篡改", anchor: ADMISSION,'
        ' steps: [{title: "t", dayOffset: 1, assignee: "butler", graceHours: 1}]}) { template { id } } }',
    ),
    ("mutation", "setChainSopTemplate", "input.templateId"): (
        "ChainSopTemplate",
        'mutation($id: ID!) { setChainSopTemplate(input: {templateId: $id, name: "篡改", anchor: ADMISSION,'
        ' steps: [{title: "t", dayOffset: 1, assignee: "butler", graceHours: 1}]}) { template { id } } }',
    ),
    ("mutation", "retireChainSopTemplate", "input.templateId"): (
        "ChainSopTemplate",
        "mutation($id: ID!) { retireChainSopTemplate(input: {templateId: $id}) { template { id } } }",
    ),
    ("mutation", "assignResidentButler", "input.residentId"): (
        "Resident",
        "mutation($id: ID!) { assignResidentButler(input: {residentId: $id}) { butlerId } }",
    ),
    ("mutation", "assignResidentButler", "input.butlerId"): (
        "StaffMember",
        "mutation($id: ID!) { assignResidentButler(input: {residentId: $id, butlerId: $id}) { butlerId } }",
    ),
    ("mutation", "completeSopStep", "input.stepId"): (
        "SopStep",
        'mutation($id: ID!) { completeSopStep(input: {stepId: $id, outcome: {summary: "篡改",'
        " channel: PHONE}}) { step { id } } }",
    ),
    ("mutation", "skipSopStep", "input.stepId"): (
        "SopStep",
        'mutation($id: ID!) { skipSopStep(input: {stepId: $id, reason: "篡改"}) { step { id } } }',
    ),
    # Rules over vitals (schema/vital_rules.py).
    ("mutation", "setVitalRule", "input.ruleId"): (
        "VitalRule",
        'mutation($id: ID!) { setVitalRule(input: {ruleId: $id, name: "篡改", measure: "glucose",'
        ' condition: CONSECUTIVE_DAYS, times: 2, direction: ABOVE, notifyRoles: ["doctor"]})'
        " { rule { id } } }",
    ),
    ("mutation", "retireVitalRule", "input.ruleId"): (
        "VitalRule",
        "mutation($id: ID!) { retireVitalRule(input: {ruleId: $id}) { rule { id } } }",
    ),
    ("mutation", "completeTask", "input.taskId"): (
        "CareTask",
        "mutation($id: ID!) { completeTask(input: {taskId: $id}) { task { id } } }",
    ),
    ("mutation", "markTaskNotDone", "input.taskId"): (
        "CareTask",
        'mutation($id: ID!) { markTaskNotDone(input: {taskId: $id, reason: "篡改"}) { task { id } } }',
    ),
    ("mutation", "retryDeadLetter", "input.id"): (
        "DeadLetter",
        "mutation($id: ID!) { retryDeadLetter(input: {id: $id}) { userErrors { message } } }",
    ),
    # Work orders (schema/work_orders.py).
    ("mutation", "raiseWorkOrder", "input.residentId"): (
        "Resident",
        'mutation($id: ID!) { raiseWorkOrder(input: {residentId: $id, category: "care", title: "篡改"})'
        " { workOrder { id } } }",
    ),
    ("mutation", "changeWorkOrderStatus", "input.workOrderId"): (
        "WorkOrder",
        "mutation($id: ID!) { changeWorkOrderStatus(input: {workOrderId: $id, change: CANCEL})"
        " { workOrder { id } } }",
    ),
    ("mutation", "assignWorkOrder", "input.workOrderId"): (
        "WorkOrder",
        'mutation($id: ID!) { assignWorkOrder(input: {workOrderId: $id, department: "nursing"})'
        " { workOrder { id } } }",
    ),
    ("mutation", "assignWorkOrder", "input.assigneeId"): (
        "StaffMember",
        "mutation($id: ID!) { assignWorkOrder(input: {workOrderId: $id, assigneeId: $id})"
        " { workOrder { id } } }",
    ),
    ("mutation", "commentOnWorkOrder", "input.workOrderId"): (
        "WorkOrder",
        'mutation($id: ID!) { commentOnWorkOrder(input: {workOrderId: $id, body: "篡改"})'
        " { comment { body } } }",
    ),
    ("mutation", "rateWorkOrder", "input.workOrderId"): (
        "WorkOrder",
        "mutation($id: ID!) { rateWorkOrder(input: {workOrderId: $id, rating: 1}) { workOrder { id } } }",
    ),
    ("query", "workOrder", "id"): ("WorkOrder", "query($id: ID!) { workOrder(id: $id) { title } }"),
    ("query", "workOrders", "filter.assigneeId"): (
        "StaffMember",
        "query($id: ID!) { workOrders(filter: {assigneeId: $id}) { totalCount } }",
    ),
}


def foreign_id(type_name: str, institution_id: int, prepared: Mapping[str, str] | None = None) -> str:
    """An id of an object of type `type_name` that exists in institution `institution_id`."""
    if prepared and type_name in prepared:
        return prepared[type_name]
    if type_name == "Institution":
        return encode_id(type_name, institution_id)
    return encode_id(type_name, institution_id, 1)


async def prepared_foreign_ids(institution_id: int) -> dict[str, str]:
    """Ids of real objects of `institution_id` whose id shape does not follow (institution, 1): a staff
    member (an account with a role there) and an integrator client bound to it."""
    account = await create_account(
        NewAccount(
            AccountKind.STAFF, f"bola-{uuid.uuid4().hex[:12]}@example.com", "陌生员工", "bola-probe-password"
        )
    )
    await add_staff_membership(account, institution_id, StaffRole.NURSE)
    created = await create_integrator_client(
        "陌生对接", scopes=["residents:read"], created_by="test", institution_id=institution_id
    )
    return {
        "StaffMember": encode_id("StaffMember", institution_id, account.id),
        "IntegratorClient": encode_id("IntegratorClient", created.client.id),
    }


def id_arguments() -> set[tuple[str, str, str]]:
    """Introspect the schema for every argument (or input field) of type ID."""
    schema = build_schema()._schema
    found: set[tuple[str, str, str]] = set()
    for kind, root in (("query", schema.query_type), ("mutation", schema.mutation_type)):
        assert isinstance(root, GraphQLObjectType)
        for field_name, field in root.fields.items():
            for arg_name, arg in field.args.items():
                named = get_named_type(arg.type)
                if named.name == "ID":
                    found.add((kind, field_name, arg_name))
                elif hasattr(named, "fields"):
                    for input_name, input_field in named.fields.items():
                        inner = (
                            input_field.type.of_type
                            if isinstance(input_field.type, GraphQLNonNull)
                            else input_field.type
                        )
                        if get_named_type(inner).name == "ID":
                            found.add((kind, field_name, f"{arg_name}.{input_name}"))
    return found


def test_every_id_argument_has_a_probe() -> None:
    missing = id_arguments() - PROBES.keys()
    assert not missing, f"id-taking fields without a BOLA probe: {sorted(missing)}"


async def test_ids_of_another_institution_are_not_found(client: httpx.AsyncClient, world: World) -> None:
    mine, theirs = world.institution_ids[0], world.institution_ids[1]
    before = await gql(
        client, "{ residents(first: 50) { edges { node { id name status } } } }", token=world.token(theirs)
    )
    prepared = await prepared_foreign_ids(theirs)
    for (_, field, _), (type_name, operation) in PROBES.items():
        body = await gql(
            client, operation, {"id": foreign_id(type_name, theirs, prepared)}, token=world.token(mine)
        )
        codes = [error["extensions"]["code"] for error in body.get("errors", [])]
        assert codes == ["NOT_FOUND"], (field, body)
        assert body.get("data") is None, (field, body)
    after = await gql(
        client, "{ residents(first: 50) { edges { node { id name status } } } }", token=world.token(theirs)
    )
    assert after == before
    family = await gql(
        client,
        "query($id: ID!) { resident(id: $id) { familyMembers { totalCount } } }",
        {"id": encode_id("Resident", theirs, 1)},
        token=world.token(theirs),
    )
    assert family["data"]["resident"]["familyMembers"]["totalCount"] == 0


async def test_own_resident_with_same_primary_key_is_found(client: httpx.AsyncClient, world: World) -> None:
    mine = world.institution_ids[0]
    body = await gql(
        client,
        "query($id: ID!) { resident(id: $id) { name } }",
        {"id": encode_id("Resident", mine, 1)},
        token=world.token(mine),
    )
    assert body["data"]["resident"]["name"] == world.resident_names[mine][0]

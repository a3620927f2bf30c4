"""What the resolvers of the record's parts share to reach a resident: the id of a resident the caller may
act on (policy first, then the acting institution), and who the caller is for the record's `recorded_by`."""

from typing import Protocol

from compliance.policy import Action, require
from schema.context import YiyangInfo
from schema.ids import decode_id
from tenants.errors import NotFound


class ResidentNode(Protocol):
    """What the Resident fields need of their parent (schema.residents.ResidentType)."""

    pk: int
    institution_id: int


def recorder(info: YiyangInfo) -> str:
    principal = info.context.principal
    return principal.subject if principal is not None else "-"


def resident_to_change(info: YiyangInfo, resident_id: str, action: Action) -> tuple[int, int]:
    """(institution id, primary key) of a resident the caller may change, else NOT_FOUND/FORBIDDEN."""
    institution_id, pk = decode_id("Resident", resident_id, 2, field="residentId")
    require(info.context.principal, action, institution=institution_id, resident_id=pk)
    if info.context.require_tenant().institution_id != institution_id:
        raise NotFound("Not found.")
    return institution_id, pk

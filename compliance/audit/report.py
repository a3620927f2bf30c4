"""Reading the audit log back: the institution's events for its compliance officer, and a resident's
access report (who accessed which categories of their data, when, why, and with what outcome).

Both read the tenant's `audit_event` in the open unit of work, newest first, a page at a time with the
event's `seq` as the keyset (the log is append-only and `seq` gapless, so a cursor never skips or repeats
a row). Who acted is named from the shared schema (an account's display name, an integrator client's
name): one query per page, however many events it holds. Nothing is decrypted: audit rows hold no
health data, only the names of the categories touched.

Who may read what is the policy's (Action.AUDIT_VIEW, Action.ACCESS_REPORT_VIEW and
Action.ACCESS_REPORT_EXPORT) plus, for family accounts, `require_access_report` here: only a guardian of
the resident (the family account linked to the family member who granted one of the resident's consents
as guardian, whatever that consent's status now) sees the report.
"""

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

from compliance.audit.events import ANONYMOUS_KIND, SYSTEM_KIND, Outcome, is_read
from compliance.consent import ConsentTerms
from compliance.policy import Action, require
from compliance.principals import Principal, PrincipalKind
from tenants.db import default_connection
from tenants.errors import Forbidden, InvalidInput

EMPTY_RANGE = "The start of the time range must be before its end."
NOT_A_GUARDIAN = "Only a guardian of the resident may read their access report."
MALFORMED_MOMENT = "Give a date (2026-12-01) or a date and time (2026-12-01T08:00:00+08:00)."
MAX_SUBJECT = 200
SUBJECT_TOO_LONG = "A principal subject is at most {max} characters."
# The reason code of a reading of the report refused to a family account that is no guardian; other
# refusals are recorded with the error's code (forbidden), as the resolvers of the record do.
NOT_GUARDIAN_REASON = "not_guardian"


class AuditPrincipalKind(StrEnum):
    """Who acted, as the log records it: a kind of principal, a scheduled job, or nobody signed in."""

    STAFF = PrincipalKind.STAFF.value
    FAMILY = PrincipalKind.FAMILY.value
    SUPERVISOR = PrincipalKind.SUPERVISOR.value
    OPERATOR = PrincipalKind.OPERATOR.value
    INTEGRATOR = PrincipalKind.INTEGRATOR.value
    SYSTEM = SYSTEM_KIND
    ANONYMOUS = ANONYMOUS_KIND


class Access(StrEnum):
    READ = "read"
    WRITE = "write"


# Actions that disclose without changing anything, besides every `*.view`; `webhook.deliver` is an event
# about the resident sent to an integrator (care/webhooks.py DELIVER_ACTION).
_READ_ACTIONS = frozenset(
    {Action.DATA_SUBJECT_EXPORT.value, Action.ACCESS_REPORT_EXPORT.value, "webhook.deliver"}
)


def access_of(action: str) -> Access:
    return Access.READ if is_read(action) or action in _READ_ACTIONS else Access.WRITE


@dataclass(frozen=True, slots=True)
class EventFilter:
    """Which events: all given conditions hold. `since` is inclusive, `until` exclusive."""

    resident_id: int | None = None
    principal_subject: str | None = None
    action: str | None = None
    outcome: Outcome | None = None
    since: datetime | None = None
    until: datetime | None = None

    def __post_init__(self) -> None:
        check_range(self.since, self.until)
        if self.principal_subject is not None and len(self.principal_subject) > MAX_SUBJECT:
            raise InvalidInput(SUBJECT_TOO_LONG, field="principalSubject", max=MAX_SUBJECT)


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """One row of the log as read back (its chain hashes left out), with the actor's name when known."""

    seq: int
    occurred_at: datetime
    principal_subject: str
    principal_kind: AuditPrincipalKind
    roles: tuple[str, ...]
    client_id: str | None
    action: str
    resident_id: int | None
    data_categories: tuple[str, ...]
    purpose: str | None
    outcome: Outcome
    reason_code: str | None
    request_id: str | None
    client_ip: str | None
    display_name: str | None = None

    @property
    def access(self) -> Access:
        return access_of(self.action)


def check_range(since: datetime | None, until: datetime | None) -> None:
    if since is not None and until is not None and since >= until:
        raise InvalidInput(EMPTY_RANGE, field="until")


def moment(value: str, zone: str, *, end: bool, field: str) -> datetime:
    """A bound of a time range given as text (a query parameter): an ISO date or date and time. A date
    is the start of that day in the institution's zone, or for the end of a range (`end`) the start of
    the next day, so that `until=2026-12-01` includes that day; a time without an offset is local too."""
    local = ZoneInfo(zone)
    try:
        if len(value) == len("2026-12-01"):
            day = date.fromisoformat(value)
            return datetime.combine(day + timedelta(days=1 if end else 0), time(), local)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(MALFORMED_MOMENT, field=field) from None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=local)


_COLUMNS = """seq, occurred_at, principal_subject, principal_kind, roles, client_id, action, resident_id,
    data_categories, purpose, outcome, reason_code, request_id, client_ip"""


def _where(given: EventFilter, before_seq: int | None, up_to_seq: int | None) -> tuple[str, list[object]]:
    conditions: list[str] = []
    parameters: list[object] = []

    def add(condition: str, value: object) -> None:
        parameters.append(value)
        conditions.append(condition.format(f"${len(parameters)}"))

    if given.resident_id is not None:
        add("resident_id = {}", given.resident_id)
    if given.principal_subject is not None:
        add("principal_subject = {}", given.principal_subject)
    if given.action is not None:  # one of a coalesced read's actions (compliance/audit/events.py)
        add("{} = ANY(string_to_array(action, ','))", given.action)
    if given.outcome is not None:
        add("outcome = {}", given.outcome.value)
    if given.since is not None:
        add("occurred_at >= {}", given.since)
    if given.until is not None:
        add("occurred_at < {}", given.until)
    if before_seq is not None:
        add("seq < {}", before_seq)
    if up_to_seq is not None:
        add("seq <= {}", up_to_seq)
    return (" WHERE " + " AND ".join(conditions) if conditions else ""), parameters


def _event(row: dict[str, Any]) -> LoggedEvent:
    return LoggedEvent(
        seq=row["seq"],
        occurred_at=row["occurred_at"],
        principal_subject=row["principal_subject"],
        principal_kind=AuditPrincipalKind(row["principal_kind"]),
        roles=tuple(row["roles"]),
        client_id=row["client_id"],
        action=row["action"],
        resident_id=row["resident_id"],
        data_categories=tuple(row["data_categories"]),
        purpose=row["purpose"],
        outcome=Outcome(row["outcome"]),
        reason_code=row["reason_code"],
        request_id=row["request_id"],
        client_ip=row["client_ip"],
    )


async def events(
    given: EventFilter, *, before_seq: int | None = None, limit: int, up_to_seq: int | None = None
) -> list[LoggedEvent]:
    """Up to `limit` events matching `given`, newest first, older than `before_seq` (the cursor) and not
    newer than `up_to_seq` (a snapshot's end); each named (`names_of`)."""
    where, parameters = _where(given, before_seq, up_to_seq)
    rows = await default_connection().execute_query_dict(
        f"SELECT {_COLUMNS} FROM audit_event{where} ORDER BY seq DESC LIMIT {int(limit)}", parameters
    )
    found = [_event(row) for row in rows]
    names = await names_of(found)
    return [replace(event, display_name=names.get(event.principal_subject)) for event in found]


async def count(given: EventFilter) -> int:
    where, parameters = _where(given, None, None)
    rows = await default_connection().execute_query_dict(
        f"SELECT count(*) AS n FROM audit_event{where}", parameters
    )
    return int(rows[0]["n"])


async def last_seq() -> int:
    """The newest event's number (0: none yet): where a consistent export stops."""
    rows = await default_connection().execute_query_dict(
        "SELECT coalesce(max(seq), 0) AS seq FROM audit_event"
    )
    return int(rows[0]["seq"])


async def names_of(logged: Sequence[LoggedEvent]) -> dict[str, str]:
    """Display names of the accounts and integrator clients among the events' subjects: one query."""
    accounts: set[int] = set()
    clients: set[str] = set()
    for event in logged:
        prefix, _, rest = event.principal_subject.partition(":")
        if prefix == "account" and rest.isdigit():
            accounts.add(int(rest))
        elif prefix == "client" and rest:
            clients.add(rest)
    if not accounts and not clients:
        return {}
    rows = await default_connection().execute_query_dict(
        """SELECT 'account:' || id AS subject, display_name AS name FROM shared.user_account
               WHERE id = ANY($1::bigint[])
           UNION ALL
           SELECT 'client:' || client_id, name FROM shared.oauth_client WHERE client_id = ANY($2::text[])""",
        [sorted(accounts), sorted(clients)],
    )
    return {row["subject"]: row["name"] for row in rows}


async def access_report(
    resident_id: int,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    before_seq: int | None = None,
    up_to_seq: int | None = None,
    limit: int,
) -> list[LoggedEvent]:
    """The resident's access report: every event about the resident, newest first."""
    return await events(
        EventFilter(resident_id=resident_id, since=since, until=until),
        before_seq=before_seq,
        up_to_seq=up_to_seq,
        limit=limit,
    )


async def access_report_size(
    resident_id: int, *, since: datetime | None = None, until: datetime | None = None
) -> int:
    return await count(EventFilter(resident_id=resident_id, since=since, until=until))


class NotAGuardian(Forbidden):
    """A family account that follows the resident but granted none of their consents as guardian."""


async def require_access_report(
    principal: Principal | None,
    action: Action,
    resident_id: int,
    *,
    institution: int | None = None,
    consents: Callable[[int], Awaitable[Sequence[ConsentTerms]]],
) -> Principal:
    """Raise unless `principal` may read the access report of `resident_id`: the policy first (NOT_FOUND,
    FORBIDDEN; `institution` is the resident's, None the acting one), then for a family account whether
    it is a guardian of the resident (`consents` gives the current versions of the resident's consents):
    NotAGuardian if not."""
    who = require(principal, action, institution=institution, resident_id=resident_id)
    if who.kind is PrincipalKind.FAMILY and not any(
        terms.granted_by(who) for terms in await consents(resident_id)
    ):
        raise NotAGuardian(NOT_A_GUARDIAN)
    return who


def refusal_reason(refused: Forbidden) -> str:
    """The reason code of the denied event recording a refused reading of the report."""
    return NOT_GUARDIAN_REASON if isinstance(refused, NotAGuardian) else refused.code.lower()

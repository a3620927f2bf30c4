"""The audit of sign-ins and token issuance: one append-only row per event in `shared.auth_event`.

What is recorded: the kind of event, the grant, the account, client and institution ids, the client
address, the `jti` of an issued access token, the refresh-token family, a short reason. Never a
password, a login name, a code, a TOTP code or a token: the table is read by operators and exported to
log stores, and must not become a source of credentials. The table refuses UPDATE, DELETE and
TRUNCATE (a trigger in migrations/shared/0005_authorization.sql).

Writing an event must not turn a sign-in into an error page: a failed insert is logged and swallowed,
except where the caller awaits `record` inside its own transaction.
"""

import logging

from compliance.identity.authorization_models import AuthEvent, AuthEventKind

log = logging.getLogger(__name__)

_IP_MAX = 64


async def record(
    kind: AuthEventKind,
    *,
    account_id: int | None = None,
    client_id: str | None = None,
    institution_id: int | None = None,
    grant_type: str | None = None,
    family_id: int | None = None,
    ip: str | None = None,
    jti: str | None = None,
    reason: str | None = None,
) -> None:
    try:
        await AuthEvent.create(
            kind=kind,
            account_id=account_id,
            client_id=client_id[:64] if client_id else None,
            institution_id=institution_id,
            grant_type=grant_type[:32] if grant_type else None,
            family_id=family_id,
            ip=ip[:_IP_MAX] if ip else None,
            jti=jti[:64] if jti else None,
            reason=reason[:64] if reason else None,
        )
    except Exception:
        log.exception("auth event %s not recorded", kind.value)

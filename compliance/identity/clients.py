"""OAuth2 clients of integrators: created with a secret shown once, verified in constant time, revoked.

An integrator client acts for exactly one institution or one chain with the scopes granted at creation;
the token endpoint (api/oauth.py) grants at most those. Who may create or revoke a client is for the
caller to ask the policy (compliance/policy.py); these functions only keep the table right.
"""

import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from tortoise.expressions import Q
from tortoise.queryset import QuerySet

from compliance.identity.client_models import ClientKind, OAuthClient
from tenants.errors import InvalidInput, NotFound
from tenants.models import Chain, Institution

# The scopes an integrator can be granted. A first, small set: it grows with the API, issue by issue.
SCOPES: dict[str, str] = {
    "residents:read": "Read the residents of the institution.",
    "residents:write": "Admit residents and update their records.",
    "vitals:write": "Record vital signs measured by devices.",
    "webhooks:manage": "Register and manage the client's own webhook endpoints and read their delivery log.",
}

_SECRET_BYTES = 32  # 256 random bits
_CLIENT_ID_BYTES = 18  # 144 bits, 24 URL-safe characters: unguessable, though it is not a secret


def hash_client_secret(secret: str) -> bytes:
    """SHA-256 of a client secret.

    A slow password hash (argon2id, as for accounts) defends low-entropy secrets against guessing from a
    stolen hash. A client secret is 256 random bits we generated: no guess reaches it, fast hash or not,
    so SHA-256 suffices and keeps the token endpoint cheap (it runs on every token request).
    """
    return hashlib.sha256(secret.encode("utf-8")).digest()


def client_secret_matches(client: OAuthClient, secret: str) -> bool:
    """Whether `secret` is this client's, compared in constant time; never for a client without one."""
    if client.secret_hash is None:
        return False
    return hmac.compare_digest(bytes(client.secret_hash), hash_client_secret(secret))


def check_scopes(scopes: Iterable[str]) -> frozenset[str]:
    wanted = frozenset(scopes)
    unknown = sorted(wanted - SCOPES.keys())
    if unknown:
        raise InvalidInput("Unknown scope: {scope}.", field="scopes", scope=unknown[0])
    return wanted


@dataclass(frozen=True, slots=True)
class CreatedClient:
    """A new client and its secret: the only moment the secret exists outside its holder."""

    client: OAuthClient
    client_secret: str

    @property
    def client_id(self) -> str:
        return self.client.client_id


async def create_integrator_client(
    name: str,
    *,
    scopes: Iterable[str],
    created_by: str,
    institution_id: int | None = None,
    chain_id: int | None = None,
) -> CreatedClient:
    """A confidential client bound to `institution_id` or `chain_id` (exactly one) with `scopes`."""
    if (institution_id is None) == (chain_id is None):
        raise InvalidInput("Choose an institution or a chain.", field="institution")
    name = name.strip()
    if not name:
        raise InvalidInput("Enter a name.", field="name")
    allowed = check_scopes(scopes)
    if institution_id is not None and not await Institution.exists(id=institution_id):
        raise NotFound("Not found.")
    if chain_id is not None and not await Chain.exists(id=chain_id):
        raise NotFound("Not found.")
    secret = secrets.token_urlsafe(_SECRET_BYTES)
    client = await OAuthClient.create(
        client_id=secrets.token_urlsafe(_CLIENT_ID_BYTES),
        name=name[:100],
        kind=ClientKind.INTEGRATOR,
        secret_hash=hash_client_secret(secret),
        institution_id=institution_id,
        chain_id=chain_id,
        allowed_scopes=sorted(allowed),
        created_by=created_by,
    )
    return CreatedClient(client, secret)


async def find_client(client_id: str) -> OAuthClient | None:
    """The client `client_id`, revoked or not (the token endpoint refuses revoked ones itself)."""
    return await OAuthClient.get_or_none(client_id=client_id)


async def revoke_client(client_id: str) -> None:
    """Stop the client: no new token from now. Tokens already issued live out their 5 minutes."""
    updated = await OAuthClient.filter(client_id=client_id, revoked_at__isnull=True).update(
        revoked_at=datetime.now(UTC)
    )
    if not updated and not await OAuthClient.exists(client_id=client_id):
        raise NotFound("Not found.")


def _integrator_clients(institution_id: int | None, chain_id: int | None) -> QuerySet[OAuthClient]:
    bound = [Q(institution_id=institution_id)] if institution_id is not None else []
    bound += [Q(chain_id=chain_id)] if chain_id is not None else []
    if not bound:
        return OAuthClient.filter(id__in=[])
    return OAuthClient.filter(Q(*bound, join_type=Q.OR), kind=ClientKind.INTEGRATOR)


async def integrator_clients_page(
    *, institution_id: int | None, chain_id: int | None, after_id: int | None, limit: int
) -> list[OAuthClient]:
    """Integrator clients bound to the institution or to the chain (revoked ones too), in id order; the
    chain of each is selected."""
    query = _integrator_clients(institution_id, chain_id)
    if after_id is not None:
        query = query.filter(id__gt=after_id)
    return await query.select_related("chain").order_by("id").limit(limit)


async def count_integrator_clients(*, institution_id: int | None, chain_id: int | None) -> int:
    return await _integrator_clients(institution_id, chain_id).count()


async def integrator_client(pk: int) -> OAuthClient | None:
    """The integrator client with primary key `pk`, its chain selected."""
    return await OAuthClient.filter(id=pk, kind=ClientKind.INTEGRATOR).select_related("chain").first()

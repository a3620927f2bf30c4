"""Access tokens (RFC 9068): what is issued, and every forgery and misuse that must be refused."""

import base64
import dataclasses
import hashlib
import hmac
import json
import time

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from compliance.identity.access_tokens import (
    REFUSED_MESSAGE,
    AccessTokenClaims,
    InvalidAccessToken,
    RefusalReason,
    api_audience,
    issue_access_token,
    sign_access_token,
    verify_access_token,
)
from compliance.identity.keys import SigningKeys, root_key_from_environ
from compliance.principals import ChainRole, Principal, PrincipalKind, StaffRole
from tenants.errors import Unauthenticated

ISSUER = "https://yiyang.test"
STAFF = Principal(
    "staff-7", PrincipalKind.STAFF, institution_id=7, roles=frozenset({StaffRole.NURSE, StaffRole.DOCTOR})
)


@pytest.fixture
async def keys(empty_key_table: None) -> SigningKeys:
    keys = SigningKeys(root_key_from_environ({}))
    await keys.ensure_active_key()
    return keys


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def parts(token: str) -> tuple[dict, dict, str]:
    header, payload, signature = token.split(".")
    return json.loads(unb64(header)), json.loads(unb64(payload)), signature


async def good_claims(**changes: object) -> dict[str, object]:
    claims = AccessTokenClaims.for_principal(STAFF, issuer=ISSUER, client_id="spa", scope=["residents:read"])
    return {**claims.to_jwt(), **changes}


async def signed_with_our_key(keys: SigningKeys, claims: dict[str, object], **header: object) -> str:
    """A token signed by our real active key, with whatever header and claims a test needs."""
    active = await keys.signing_key()
    fields = {"alg": "ES256", "typ": "at+jwt", "kid": active.kid, **header}
    given = {name: value for name, value in fields.items() if value is not None}  # None: leave it out
    return jwt.encode(given, claims, active.private_key, algorithms=["ES256"], default_type=None)


async def refusal(token: str, keys: SigningKeys, **options: object) -> RefusalReason:
    with pytest.raises(InvalidAccessToken) as refused:
        await verify_access_token(token, issuer=ISSUER, keys=keys, **options)  # type: ignore[arg-type]
    # One error for the client whatever went wrong.
    assert isinstance(refused.value, Unauthenticated)
    assert refused.value.code == "UNAUTHENTICATED" and refused.value.message == REFUSED_MESSAGE
    return refused.value.reason


async def test_issued_token_is_an_rfc9068_access_token(keys: SigningKeys) -> None:
    now = time.time()
    token = await issue_access_token(
        STAFF, issuer=ISSUER, client_id="spa", scope=["residents:read", "care:write"], keys=keys, now=now
    )
    header, payload, _ = parts(token)
    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": (await keys.signing_key()).kid}
    assert payload["iss"] == ISSUER and payload["aud"] == api_audience(ISSUER) == f"{ISSUER}/graphql"
    assert payload["exp"] - payload["iat"] == 300 and payload["nbf"] == payload["iat"] == int(now)
    assert payload["scope"] == "care:write residents:read" and payload["client_id"] == "spa"
    assert (payload["sub"], payload["kind"], payload["institution_id"]) == ("staff-7", "staff", 7)
    assert payload["roles"] == ["doctor", "nurse"] and len(payload["jti"]) >= 16

    claims = await verify_access_token(token, issuer=ISSUER, keys=keys)
    assert claims.principal() == dataclasses.replace(
        STAFF, scopes=frozenset({"residents:read", "care:write"}), client_id="spa"
    )
    assert claims.scope == {"residents:read", "care:write"} and claims.client_id == "spa"
    other = await issue_access_token(STAFF, issuer=ISSUER, client_id="spa", keys=keys)
    assert parts(other)[1]["jti"] != payload["jti"]


@pytest.mark.parametrize(
    "principal",
    [
        Principal("account:1", PrincipalKind.OPERATOR, client_id="console"),
        Principal("account:2", PrincipalKind.FAMILY, client_id="console"),
        Principal("account:3", PrincipalKind.SUPERVISOR, region_ids=frozenset({4, 5}), client_id="console"),
        Principal(
            "account:4",
            PrincipalKind.STAFF,
            chain_id=2,
            chain_roles=frozenset({ChainRole.CHAIN_DIRECTOR}),
            client_id="console",
        ),
        Principal(
            "client:abc",
            PrincipalKind.INTEGRATOR,
            chain_id=2,
            scopes=frozenset({"residents:read"}),
            client_id="console",
        ),
    ],
    ids=lambda principal: principal.kind.value,
)
async def test_every_kind_of_principal_round_trips(keys: SigningKeys, principal: Principal) -> None:
    token = await issue_access_token(
        principal, issuer=ISSUER, client_id="console", scope=principal.scopes, keys=keys
    )
    assert (await verify_access_token(token, issuer=ISSUER, keys=keys)).principal() == principal


def test_lifetime_is_at_most_ten_minutes() -> None:
    AccessTokenClaims.for_principal(STAFF, issuer=ISSUER, client_id="spa", lifetime_seconds=600)
    for lifetime in (0, 601):
        with pytest.raises(ValueError):
            AccessTokenClaims.for_principal(STAFF, issuer=ISSUER, client_id="spa", lifetime_seconds=lifetime)


async def test_expired_token_is_refused_after_the_leeway(keys: SigningKeys) -> None:
    now = time.time()
    token = await issue_access_token(STAFF, issuer=ISSUER, client_id="spa", keys=keys, now=now)
    await verify_access_token(token, issuer=ISSUER, keys=keys, now=now + 300 + 29)  # clock skew
    assert await refusal(token, keys, now=now + 300 + 30) is RefusalReason.EXPIRED


async def test_token_from_the_future_is_refused_beyond_the_leeway(keys: SigningKeys) -> None:
    now = time.time()
    token = await issue_access_token(STAFF, issuer=ISSUER, client_id="spa", keys=keys, now=now + 30)
    await verify_access_token(token, issuer=ISSUER, keys=keys, now=now)
    later = await issue_access_token(STAFF, issuer=ISSUER, client_id="spa", keys=keys, now=now + 31)
    assert await refusal(later, keys, now=now) is RefusalReason.NOT_YET_VALID
    issued_now_valid_later = await signed_with_our_key(keys, await good_claims(nbf=int(now) + 120))
    assert await refusal(issued_now_valid_later, keys, now=now) is RefusalReason.NOT_YET_VALID


async def test_wrong_audience_and_issuer_are_refused(keys: SigningKeys) -> None:
    token = await issue_access_token(STAFF, issuer=ISSUER, client_id="spa", keys=keys)
    assert await refusal(token, keys, audience="https://payments.yiyang.test") is RefusalReason.WRONG_AUDIENCE
    other_audience = await issue_access_token(
        STAFF, issuer=ISSUER, client_id="spa", audience="https://elsewhere.test", keys=keys
    )
    assert await refusal(other_audience, keys) is RefusalReason.WRONG_AUDIENCE
    foreign = await issue_access_token(STAFF, issuer="https://evil.test", client_id="spa", keys=keys)
    assert await refusal(foreign, keys, audience=api_audience(ISSUER)) is RefusalReason.WRONG_ISSUER


async def test_alg_none_is_refused(keys: SigningKeys) -> None:
    kid = (await keys.signing_key()).kid
    header = b64(json.dumps({"alg": "none", "typ": "at+jwt", "kid": kid}).encode())
    payload = b64(json.dumps(await good_claims()).encode())
    assert await refusal(f"{header}.{payload}.", keys) is RefusalReason.ALGORITHM_NOT_ALLOWED
    header = b64(json.dumps({"alg": "NONE", "typ": "at+jwt", "kid": kid}).encode())
    assert await refusal(f"{header}.{payload}.", keys) is RefusalReason.ALGORITHM_NOT_ALLOWED


async def test_hs256_keyed_with_the_public_key_is_refused(keys: SigningKeys) -> None:
    """Algorithm confusion: the attacker knows the public key and uses it as an HMAC secret."""
    active = await keys.signing_key()
    public_pem = ECKey.import_key(active.private_key.as_dict(private=False)).as_pem(private=False)
    for secret in (public_pem, json.dumps(active.private_key.as_dict(private=False)).encode()):
        header = b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": active.kid}).encode())
        payload = b64(json.dumps(await good_claims(roles=["institution_admin"])).encode())
        mac = hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        assert await refusal(f"{header}.{payload}.{b64(mac)}", keys) is RefusalReason.ALGORITHM_NOT_ALLOWED


async def test_tampered_payload_is_refused(keys: SigningKeys) -> None:
    token = await issue_access_token(STAFF, issuer=ISSUER, client_id="spa", keys=keys)
    header, payload, signature = token.split(".")
    escalated = {**json.loads(unb64(payload)), "institution_id": 8, "roles": ["institution_admin"]}
    forged = f"{header}.{b64(json.dumps(escalated).encode())}.{signature}"
    assert await refusal(forged, keys) is RefusalReason.BAD_SIGNATURE
    raw = bytearray(unb64(payload))
    raw[len(raw) // 2] ^= 0x01
    assert await refusal(f"{header}.{b64(bytes(raw))}.{signature}", keys) is RefusalReason.BAD_SIGNATURE
    raw_signature = bytearray(unb64(signature))
    raw_signature[0] ^= 0x01
    assert (
        await refusal(f"{header}.{payload}.{b64(bytes(raw_signature))}", keys) is RefusalReason.BAD_SIGNATURE
    )


async def test_keys_not_ours_are_refused(keys: SigningKeys) -> None:
    attacker = ECKey.generate_key("P-256", private=True)
    claims = await good_claims()
    unknown = jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": attacker.thumbprint()}, claims, attacker)
    assert await refusal(unknown, keys) is RefusalReason.UNKNOWN_KEY
    no_kid = jwt.encode({"alg": "ES256", "typ": "at+jwt"}, claims, attacker)
    assert await refusal(no_kid, keys) is RefusalReason.UNKNOWN_KEY
    # Our kid, the attacker's signature, and the attacker's key offered in the header: never used.
    kid = (await keys.signing_key()).kid
    embedded = jwt.encode(
        {"alg": "ES256", "typ": "at+jwt", "kid": kid, "jwk": attacker.as_dict(private=False)},
        claims,
        attacker,
    )
    assert await refusal(embedded, keys) is RefusalReason.BAD_SIGNATURE


async def test_wrong_type_is_refused(keys: SigningKeys) -> None:
    claims = await good_claims()
    for typ in ("JWT", "id_token+jwt", None):
        token = await signed_with_our_key(keys, claims, typ=typ)
        assert await refusal(token, keys) is RefusalReason.WRONG_TYPE
    accepted = await signed_with_our_key(keys, claims, typ="application/AT+JWT")
    assert (await verify_access_token(accepted, issuer=ISSUER, keys=keys)).subject == "staff-7"


@pytest.mark.parametrize("claim", ["iss", "sub", "aud", "exp", "iat", "jti", "client_id", "kind"])
async def test_missing_required_claims_are_refused(keys: SigningKeys, claim: str) -> None:
    claims = await good_claims()
    del claims[claim]
    assert await refusal(await signed_with_our_key(keys, claims), keys) is RefusalReason.MISSING_CLAIM


async def test_ill_formed_claims_are_refused(keys: SigningKeys) -> None:
    for changes in (
        {"kind": "root"},
        {"roles": ["superuser"]},
        {"institution_id": "7"},
        {"institution_id": True},
        {"exp": "soon"},
        {"scope": ["residents:read"]},
        {"sub": ""},
    ):
        token = await signed_with_our_key(keys, await good_claims(**changes))
        assert await refusal(token, keys) is RefusalReason.INVALID_CLAIM, changes
    staff_of_nowhere = await good_claims()
    del staff_of_nowhere["institution_id"]
    token = await signed_with_our_key(keys, staff_of_nowhere)
    assert await refusal(token, keys) is RefusalReason.INVALID_CLAIM
    too_long = await good_claims()
    too_long["exp"] = too_long["iat"] + 3600  # type: ignore[operator]
    assert await refusal(await signed_with_our_key(keys, too_long), keys) is RefusalReason.LIFETIME_TOO_LONG


async def test_malformed_tokens_are_refused(keys: SigningKeys) -> None:
    for token in ("", "abc", "a.b", "a.b.c.d", "%%%.e30.", "W10.e30.sig"):
        assert await refusal(token, keys) is RefusalReason.MALFORMED, token


async def test_a_chain_bound_token_keeps_its_chain_in_the_principal(keys: SigningKeys) -> None:
    claims = AccessTokenClaims.for_principal(STAFF, issuer=ISSUER, client_id="erp")
    chain = AccessTokenClaims(
        **{
            **{f: getattr(claims, f) for f in claims.__dataclass_fields__},
            "chain_id": 3,
            "chain_roles": frozenset({ChainRole.CHAIN_DIRECTOR}),
        }
    )
    verified = await verify_access_token(await sign_access_token(chain, keys=keys), issuer=ISSUER, keys=keys)
    principal = verified.principal()
    assert principal.chain_id == 3 and principal.chain_roles == {ChainRole.CHAIN_DIRECTOR}
    assert principal.institution_id == STAFF.institution_id and principal.client_id == "erp"


async def test_claims_a_kind_of_principal_cannot_hold_are_refused(keys: SigningKeys) -> None:
    for changes in (
        {"kind": "family"},  # a family account bound to an institution by the token
        {"kind": "supervisor"},
        {"kind": "operator"},
        {"region_ids": [1]},  # regions on a staff token
        {"chain_roles": ["chain_director"]},  # chain roles without a chain
        {"chain_roles": ["emperor"], "chain_id": 1},
        {"kind": "integrator"},  # roles on an integrator token
        {"region_ids": "1"},
    ):
        token = await signed_with_our_key(keys, await good_claims(**changes))
        assert await refusal(token, keys) is RefusalReason.INVALID_CLAIM, changes

"""Helpers of the authorization-code tests: PKCE pairs, accounts, and a browser-style sign-in."""

import base64
import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from html import unescape
from urllib.parse import parse_qs, urlsplit

import httpx

from compliance.identity.account_models import AccountKind, UserAccount
from compliance.identity.accounts import NewAccount, add_staff_membership, create_account
from compliance.principals import StaffRole

AUTHORIZE = "/oauth/authorize"
TOKEN = "/oauth/token"
REVOKE = "/oauth/revoke"
PASSWORD = "lanterns-over-the-river"
REDIRECT = "https://app.yiyang.test/callback"


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def unique_login() -> str:
    return f"oauth-{uuid.uuid4().hex[:12]}@example.com"


async def staff_account(*institutions: int, role: StaffRole = StaffRole.NURSE) -> UserAccount:
    account = await create_account(NewAccount(AccountKind.STAFF, unique_login(), "李护士", PASSWORD))
    for institution in institutions:
        await add_staff_membership(account, institution, role)
    return account


def transaction_of(html: str) -> str:
    found = re.search(r'name="transaction" value="([^"]+)"', html)
    assert found, html
    return unescape(found.group(1))


def alert_of(html: str) -> str:
    found = re.search(r'<div id="form-errors" class="alert" role="alert">(.*?)</div>', html, re.S)
    assert found, html
    return unescape(found.group(1))


def query_of(location: str) -> dict[str, str]:
    return {name: values[0] for name, values in parse_qs(urlsplit(location).query).items()}


@dataclass
class Authorization:
    client_id: str
    redirect_uri: str = REDIRECT
    state: str = "state-1"

    def params(self, challenge: str | None, method: str | None = "S256", **extra: str) -> dict[str, str]:
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self.redirect_uri,
            "state": self.state,
        }
        if challenge is not None:
            params["code_challenge"] = challenge
        if method is not None:
            params["code_challenge_method"] = method
        return {**params, **extra}


async def post_step(http: httpx.AsyncClient, transaction: str, **fields: str) -> httpx.Response:
    return await http.post(AUTHORIZE, data={"transaction": transaction, **fields})


async def sign_in(
    http: httpx.AsyncClient,
    params: dict[str, str],
    login: str,
    password: str = PASSWORD,
    *,
    institution: int | None = None,
) -> httpx.Response:
    """GET the page and POST the password (and the institution when asked); the last response."""
    page = await http.get(AUTHORIZE, params=params)
    assert page.status_code == 200, page.text
    response = await post_step(http, transaction_of(page.text), login=login, password=password)
    if institution is not None and response.status_code == 200 and 'name="institution"' in response.text:
        response = await post_step(http, transaction_of(response.text), institution=str(institution))
    return response


async def code_for(http: httpx.AsyncClient, params: dict[str, str], login: str, **kwargs: object) -> str:
    response = await sign_in(http, params, login, **kwargs)  # type: ignore[arg-type]
    assert response.status_code == 302, response.text
    query = query_of(response.headers["location"])
    assert query.get("state") == params.get("state")
    return query["code"]


async def exchange(
    http: httpx.AsyncClient, client_id: str, code: str, verifier: str | None, redirect_uri: str = REDIRECT
) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": redirect_uri,
        "client_id": client_id,
    }
    if verifier is not None:
        form["code_verifier"] = verifier
    return await http.post(TOKEN, data=form)


async def refresh(http: httpx.AsyncClient, client_id: str, token: str) -> httpx.Response:
    return await http.post(
        TOKEN, data={"grant_type": "refresh_token", "refresh_token": token, "client_id": client_id}
    )

"""The sign-in page of the authorization endpoint, `GET/POST /oauth/authorize` (RFC 6749 §3.1, PKCE).

`GET` validates the authorization request with authlib (client, exact redirect URI, `response_type=code`,
an S256 `code_challenge`; api/oauth.py) and shows the sign-in form. Each `POST` is one step: password,
then the second factor (a code, or enrolment where an institution requires it), then the institution
for a staff account that may act in several; the last step issues the code and redirects to the client.

No server-side session: the state between steps travels in the form as a *transaction*, sealed with
AES-256-GCM under a key derived from the root key (YIYANG_ROOT_KEY), so it can be neither read nor
changed by the browser. It holds the authorization request parameters (a POST acts on exactly the
request that was validated, never on form fields), the step reached, the account once the password
was right, an expiry (10 minutes), and a hash of a random browser cookie (`yiyang_signin`, HttpOnly,
SameSite=Lax). The cookie binding is what makes the POST safe against cross-site request forgery: a
page on another site can make a browser post a transaction it obtained itself, but not send that
browser's cookie value with it, nor read it. The last step spends the transaction (a Redis key), so a
replayed final POST issues no second code.

Everything the user reads goes through the message catalogs (schema/i18n.py): Simplified Chinese unless
`ui_locales` or Accept-Language prefers English. The page needs no JavaScript and loads nothing
external (a Content-Security-Policy says so): one `<form>`, labelled inputs, errors in a `role="alert"`
region announced by screen readers, a visible focus outline.
"""

import base64
import hashlib
import hmac
import json
import logging
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from html import escape
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from authlib.oauth2.rfc6749.errors import OAuth2Error
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from api import oauth
from api.settings import Settings
from compliance.identity import auth_events, totp
from compliance.identity.account_models import AccountStatus, UserAccount
from compliance.identity.accounts import (
    LoginFailed,
    acting_options,
    authenticate,
    principal_for,
)
from compliance.identity.authorization_models import AuthEventKind
from compliance.identity.keys import root_key_from_environ
from compliance.identity.login_throttle import Lockout, LoginThrottle
from schema.i18n import negotiate_locale, translate
from tenants.errors import DomainError, InvalidInput

log = logging.getLogger(__name__)

TRANSACTION_SECONDS = 600
COOKIE_NAME = "yiyang_signin"
_COOKIE_MAX_AGE = 30 * 24 * 3600
_FORM_TYPE = "application/x-www-form-urlencoded"
_MAX_QUERY = 4096
_TRANSACTION_KEY_LABEL = b"yiyang/authorize-transaction/v1"

# Strings of the page: English msgids of schema/locale/zh_CN.po.
TITLE = "Sign in to Yiyang"
LOGIN_LABEL = "Mobile number or e-mail"
PASSWORD_LABEL = "Password"
SIGN_IN = "Sign in"
CONTINUE = "Continue"
MISSING_CREDENTIALS = "Enter your login and your password."
LOCKED_OUT = "Too many failed attempts. Try again in {minutes} minutes."
CODE_TITLE = "Two-step verification"
CODE_HINT = "Enter the 6-digit code from your authenticator app."
CODE_LABEL = "Verification code"
ENROL_TITLE = "Set up two-step verification"
ENROL_HINT = (
    "Your institution requires two-step verification. Add this key to an authenticator app, then enter"
    " the code the app shows."
)
KEY_LABEL = "Key"
CHOOSE_TITLE = "Choose an institution"
CHOOSE_HINT = "Choose an institution."
ACCOUNT_LINE = "Account: {name}"
NOWHERE_TO_ACT = "This account has no institution to act in. Ask your administrator."
TRANSACTION_INVALID = "This sign-in page has expired or is not valid. Return to the app and start again."
REQUEST_INVALID = "This sign-in link is not valid. Return to the app and start again."
SERVER_FAILED = "Something went wrong. Please try again later."
LANGUAGE_SWITCH = "Language"
_STRINGS = (
    TITLE,
    LOGIN_LABEL,
    PASSWORD_LABEL,
    SIGN_IN,
    CONTINUE,
    MISSING_CREDENTIALS,
    LOCKED_OUT,
    CODE_TITLE,
    CODE_HINT,
    CODE_LABEL,
    ENROL_TITLE,
    ENROL_HINT,
    KEY_LABEL,
    CHOOSE_TITLE,
    CHOOSE_HINT,
    ACCOUNT_LINE,
    NOWHERE_TO_ACT,
    TRANSACTION_INVALID,
    REQUEST_INVALID,
    SERVER_FAILED,
    LANGUAGE_SWITCH,
)


class Stage:
    PASSWORD = "password"
    SECOND_FACTOR = "second_factor"
    ENROL = "enrol"
    INSTITUTION = "institution"


@dataclass(frozen=True)
class Transaction:
    """The sealed state of one sign-in, carried in the form between steps."""

    params: list[tuple[str, str]]  # the validated authorization request
    browser: str  # SHA-256 of the browser's cookie (hex, first 32)
    expires: int
    nonce: str
    locale: str
    stage: str = Stage.PASSWORD
    account_id: int | None = None
    # Enrolment only: the key being set up, shown again if the first code is wrong.
    enrol_secret: str | None = None
    enrol_uri: str | None = None


def _transaction_key() -> bytes:
    return hmac.new(root_key_from_environ(), _TRANSACTION_KEY_LABEL, hashlib.sha256).digest()


def seal_transaction(transaction: Transaction) -> str:
    nonce = secrets.token_bytes(12)
    plaintext = json.dumps(asdict(transaction), separators=(",", ":")).encode()
    sealed = nonce + AESGCM(_transaction_key()).encrypt(nonce, plaintext, _TRANSACTION_KEY_LABEL)
    return base64.urlsafe_b64encode(sealed).decode().rstrip("=")


def open_transaction(token: str, browser: str, *, now: float) -> Transaction | None:
    """The transaction, if it was sealed by us, for this browser, and is not expired; None otherwise."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        plaintext = AESGCM(_transaction_key()).decrypt(raw[:12], raw[12:], _TRANSACTION_KEY_LABEL)
        data = json.loads(plaintext)
        data["params"] = [(str(name), str(value)) for name, value in data["params"]]
        transaction = Transaction(**data)
    except (InvalidTag, ValueError, TypeError, KeyError):
        return None
    if transaction.expires <= now or not hmac.compare_digest(transaction.browser, browser):
        return None
    return transaction


def _browser_hash(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()[:32]


def _locale(params: Sequence[tuple[str, str]], accept_language: str | None) -> str:
    for name, value in params:
        if name == "ui_locales":  # RFC-style space-separated preference list (OpenID Connect)
            for tag in value.split():
                lowered = tag.lower()
                if lowered.startswith("zh"):
                    return "zh_CN"
                if lowered.startswith("en"):
                    return "en"
    return negotiate_locale(accept_language)


# --- rendering -----------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,-apple-system,"PingFang SC","Microsoft YaHei",sans-serif;margin:0;
background:#f6f7f9;color:#1a1a1a;font-size:1.125rem;line-height:1.5}
main{max-width:26rem;margin:2rem auto;padding:1.5rem;background:#fff;border-radius:.5rem;
box-shadow:0 1px 3px rgba(0,0,0,.15)}
h1{font-size:1.5rem;margin:0 0 1rem}
label,legend{display:block;font-weight:600;margin:1rem 0 .25rem}
input[type=text],input[type=password],input[type=email]{box-sizing:border-box;width:100%;
padding:.6rem;font-size:1.125rem;border:2px solid #555;border-radius:.25rem}
fieldset{border:0;padding:0;margin:0}
fieldset label{font-weight:400;margin:.5rem 0}
button{margin-top:1.25rem;width:100%;padding:.75rem;font-size:1.125rem;font-weight:600;color:#fff;
background:#0b5cad;border:0;border-radius:.25rem;cursor:pointer}
:focus-visible{outline:3px solid #d35400;outline-offset:2px}
.alert:empty{display:none}
.alert{border:2px solid #b00020;background:#fdecee;color:#8a0019;padding:.75rem;border-radius:.25rem}
.key{font-family:ui-monospace,monospace;font-size:1.25rem;letter-spacing:.1em;word-break:break-all}
nav{margin-top:1.5rem;font-size:1rem}
a{color:#0b5cad}
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; base-uri 'none'"


def _t(message: str, locale: str, **params: object) -> str:
    return escape(translate(message, locale, params or None))


@dataclass(frozen=True)
class Page:
    title: str
    body: str
    error: str = ""
    status: int = 200


def _document(page: Page, locale: str, switch_href: str | None = None) -> str:
    lang = "zh-CN" if locale == "zh_CN" else "en"
    nav = ""
    if switch_href is not None:
        other_lang, label = ("en", "English") if locale == "zh_CN" else ("zh-CN", "中文")
        nav = (
            f'<nav aria-label="{_t(LANGUAGE_SWITCH, locale)}">'
            f'<a href="{escape(switch_href)}" lang="{other_lang}" hreflang="{other_lang}">{label}</a></nav>'
        )
    error = escape(page.error)
    return (
        f'<!doctype html>\n<html lang="{lang}">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(page.title)} · {_t('Yiyang', locale)}</title>\n<style>{_STYLE}</style>\n</head>\n"
        f"<body>\n<main>\n<h1>{escape(page.title)}</h1>\n"
        f'<div id="form-errors" class="alert" role="alert">{error}</div>\n'
        f"{page.body}\n{nav}\n</main>\n</body>\n</html>\n"
    )


def _response(page: Page, locale: str, *, switch_href: str | None = None) -> HTMLResponse:
    response = HTMLResponse(
        _document(page, locale, switch_href),
        status_code=page.status,
        headers={
            "Cache-Control": "no-store",
            "Pragma": "no-cache",
            "Content-Security-Policy": _CSP,
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "no-referrer",
            "Content-Language": "zh-CN" if locale == "zh_CN" else "en",
        },
    )
    return response


def _hidden(transaction: Transaction) -> str:
    return f'<input type="hidden" name="transaction" value="{escape(seal_transaction(transaction))}">'


def _described(error: str) -> str:
    return ' aria-describedby="form-errors" aria-invalid="true"' if error else ""


def _password_page(transaction: Transaction, *, login: str = "", error: str = "", status: int = 200) -> Page:
    locale = transaction.locale
    body = (
        f'<form method="post" action="{oauth.AUTHORIZE_PATH}" novalidate>\n{_hidden(transaction)}\n'
        f'<label for="login">{_t(LOGIN_LABEL, locale)}</label>\n'
        f'<input type="text" id="login" name="login" value="{escape(login)}" autocomplete="username"'
        f' inputmode="email" autocapitalize="none" spellcheck="false" required'
        f"{'' if login else ' autofocus'}{_described(error)}>\n"
        f'<label for="password">{_t(PASSWORD_LABEL, locale)}</label>\n'
        f'<input type="password" id="password" name="password" autocomplete="current-password" required'
        f"{' autofocus' if login else ''}{_described(error)}>\n"
        f'<button type="submit">{_t(SIGN_IN, locale)}</button>\n</form>'
    )
    return Page(translate(TITLE, locale), body, error, status)


def _account_line(account: UserAccount, locale: str) -> str:
    return f"<p>{_t(ACCOUNT_LINE, locale, name=account.display_name)}</p>\n"


def _code_page(transaction: Transaction, account: UserAccount, *, error: str = "", status: int = 200) -> Page:
    locale = transaction.locale
    enrol = transaction.stage == Stage.ENROL
    intro = f"<p>{_t(ENROL_HINT if enrol else CODE_HINT, locale)}</p>\n"
    if enrol and transaction.enrol_secret:
        intro += (
            f"<p>{_t(KEY_LABEL, locale)}: "
            f'<span class="key">{escape(_grouped(transaction.enrol_secret))}</span></p>\n'
            f'<p><a href="{escape(transaction.enrol_uri or "")}">otpauth://</a></p>\n'
        )
    body = (
        f"{_account_line(account, locale)}{intro}"
        f'<form method="post" action="{oauth.AUTHORIZE_PATH}" novalidate>\n{_hidden(transaction)}\n'
        f'<label for="code">{_t(CODE_LABEL, locale)}</label>\n'
        f'<input type="text" id="code" name="code" autocomplete="one-time-code" inputmode="numeric"'
        f' pattern="[0-9]*" maxlength="6" required autofocus{_described(error)}>\n'
        f'<button type="submit">{_t(CONTINUE, locale)}</button>\n</form>'
    )
    return Page(translate(ENROL_TITLE if enrol else CODE_TITLE, locale), body, error, status)


def _grouped(secret: str) -> str:
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


async def _institution_page(
    transaction: Transaction, account: UserAccount, *, error: str = "", status: int = 200
) -> Page:
    locale = transaction.locale
    options = await acting_options(account)
    if not options:
        return Page(translate(CHOOSE_TITLE, locale), "", translate(NOWHERE_TO_ACT, locale), 403)
    choices = "\n".join(
        f'<label><input type="radio" name="institution" value="{option.institution_id}"'
        f"{' required' if n == 0 else ''}{' autofocus' if n == 0 else ''}> "
        f"{escape(option.institution_name)}"
        f"{' · ' + escape(option.chain_name) if option.chain_name else ''}</label>"
        for n, option in enumerate(options)
    )
    body = (
        f"{_account_line(account, locale)}"
        f'<form method="post" action="{oauth.AUTHORIZE_PATH}" novalidate>\n{_hidden(transaction)}\n'
        f"<fieldset{_described(error)}>\n<legend>{_t(CHOOSE_HINT, locale)}</legend>\n{choices}\n</fieldset>\n"
        f'<button type="submit">{_t(CONTINUE, locale)}</button>\n</form>'
    )
    return Page(translate(CHOOSE_TITLE, locale), body, error, status)


def _message_page(message: str, locale: str, status: int, detail: str | None = None) -> Page:
    body = f'<p lang="en"><code>{escape(detail)}</code></p>' if detail else ""
    return Page(translate(TITLE, locale), body, translate(message, locale), status)


# --- the endpoint --------------------------------------------------------------------------------


def _throttle(request: Request) -> LoginThrottle:
    throttle: LoginThrottle = request.app.state.login_throttle  # api/app.py, shared with GraphQL
    return throttle


def _lockout_text(lockout: Lockout, locale: str) -> str:
    minutes = max(1, -(-lockout.retry_after_seconds // 60))
    return translate(LOCKED_OUT, locale, {"minutes": minutes})


def _with_cookie(response: Response, cookie: str, settings: Settings, fresh: bool) -> Response:
    if fresh:
        response.set_cookie(
            COOKIE_NAME,
            cookie,
            max_age=_COOKIE_MAX_AGE,
            path=oauth.AUTHORIZE_PATH,
            httponly=True,
            samesite="lax",
            secure=urlsplit(settings.issuer).scheme == "https",
        )
    return response


async def authorize_endpoint(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    locale = negotiate_locale(request.headers.get("accept-language"))
    try:
        if request.method == "GET":
            return await _show(request, settings)
        return await _step(request, settings)
    except Exception:
        log.exception("authorization endpoint failed")
        return _response(_message_page(SERVER_FAILED, locale, 500), locale)


def _validate(
    settings: Settings, request: Request, params: Sequence[tuple[str, str]], clients: dict
) -> tuple[Any, Any, Any]:
    """(server, authlib request, grant) of a valid authorization request; raises OAuth2Error."""
    server = oauth.authorization_server(settings.issuer, clients)
    oauth_request = oauth.authorization_request(settings.issuer, request.headers, params)
    grant = server.get_consent_grant(oauth_request)
    return server, oauth_request, grant


async def _validated(
    request: Request, settings: Settings, params: Sequence[tuple[str, str]], locale: str
) -> tuple[Any, Any, Any] | Response:
    client_ids = {value for name, value in params if name == "client_id"}
    clients = await oauth.load_clients(client_ids) if len(client_ids) == 1 else {}
    try:
        return _validate(settings, request, params, clients)
    except OAuth2Error as error:
        if error.redirect_uri:  # the client and its redirect URI are known: tell the client (§4.1.2.1)
            server = oauth.authorization_server(settings.issuer, clients)
            return server.handle_error_response(None, error)  # type: ignore[arg-type]
        log.info("authorization request refused: %s", error.error)
        return _response(_message_page(REQUEST_INVALID, locale, 400, error.error), locale)
    except ValueError:  # authlib refuses to put non-ASCII text in an error description
        return _response(_message_page(REQUEST_INVALID, locale, 400, "invalid_request"), locale)


def _switch_href(params: Sequence[tuple[str, str]], locale: str) -> str:
    other = "en" if locale == "zh_CN" else "zh-CN"
    kept = [(name, value) for name, value in params if name != "ui_locales"]
    return f"{oauth.AUTHORIZE_PATH}?{urlencode([*kept, ('ui_locales', other)])}"


async def _show(request: Request, settings: Settings) -> Response:
    query = request.url.query
    params = parse_qsl(query, keep_blank_values=True) if len(query) <= _MAX_QUERY else []
    locale = _locale(params, request.headers.get("accept-language"))
    if len(query) > _MAX_QUERY:
        return _response(_message_page(REQUEST_INVALID, locale, 400, "invalid_request"), locale)
    validated = await _validated(request, settings, params, locale)
    if isinstance(validated, Response):
        return validated
    cookie = request.cookies.get(COOKIE_NAME, "")
    fresh = len(cookie) < 32 or len(cookie) > 64
    if fresh:
        cookie = secrets.token_urlsafe(32)
    transaction = Transaction(
        params=list(params),
        browser=_browser_hash(cookie),
        expires=int(time.time()) + TRANSACTION_SECONDS,
        nonce=secrets.token_urlsafe(16),
        locale=locale,
    )
    page = _password_page(transaction)
    response = _response(page, locale, switch_href=_switch_href(params, locale))
    return _with_cookie(response, cookie, settings, fresh)


async def _read_form(request: Request) -> dict[str, str] | None:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != _FORM_TYPE:
        return None
    try:
        pairs = parse_qsl((await request.body()).decode("utf-8"), keep_blank_values=True)
    except (UnicodeDecodeError, ValueError):
        return None
    form: dict[str, str] = {}
    for name, value in pairs:
        if name in form:
            return None
        form[name] = value
    return form


async def _step(request: Request, settings: Settings) -> Response:
    fallback = negotiate_locale(request.headers.get("accept-language"))
    form = await _read_form(request)
    cookie = request.cookies.get(COOKIE_NAME, "")
    transaction = (
        open_transaction(form.get("transaction", ""), _browser_hash(cookie), now=time.time())
        if form is not None and cookie
        else None
    )
    if form is None or transaction is None:
        log.info("sign-in step refused: no valid transaction for this browser")
        return _response(_message_page(TRANSACTION_INVALID, fallback, 400), fallback)
    locale = transaction.locale
    validated = await _validated(request, settings, transaction.params, locale)
    if isinstance(validated, Response):
        return validated
    server, oauth_request, grant = validated
    flow = _Flow(request, settings, transaction, server, oauth_request, grant)
    if transaction.stage == Stage.PASSWORD:
        return await flow.password(form.get("login", ""), form.get("password", ""))
    account = await UserAccount.get_or_none(id=transaction.account_id or 0, status=AccountStatus.ACTIVE)
    if account is None:
        return _response(_message_page(TRANSACTION_INVALID, locale, 400), locale)
    if transaction.stage in (Stage.SECOND_FACTOR, Stage.ENROL):
        return await flow.second_factor(account, form.get("code", ""))
    if transaction.stage == Stage.INSTITUTION:
        return await flow.institution(account, form.get("institution", ""))
    return _response(_message_page(TRANSACTION_INVALID, locale, 400), locale)


class _Flow:
    """One POST of the sign-in: the transaction it continues and the validated authorization request."""

    def __init__(
        self,
        request: Request,
        settings: Settings,
        transaction: Transaction,
        server: Any,
        oauth_request: Any,
        grant: Any,
    ) -> None:
        self.request = request
        self.settings = settings
        self.transaction = transaction
        self.server = server
        self.oauth_request = oauth_request
        self.grant = grant
        self.locale = transaction.locale
        self.ip = oauth.client_address(request) or "unknown"
        self.client_id = dict(transaction.params).get("client_id")

    def _page(self, page: Page) -> Response:
        return _response(page, self.locale)

    async def password(self, login: str, password: str) -> Response:
        if not login.strip() or not password:
            page = _password_page(
                self.transaction, login=login, error=translate(MISSING_CREDENTIALS, self.locale)
            )
            return self._page(page)
        try:
            account = await authenticate(login, password, self.ip, throttle=_throttle(self.request))
        except LoginFailed as failed:
            locked = failed.lockout is not None
            await auth_events.record(
                AuthEventKind.LOGIN_LOCKED_OUT if locked else AuthEventKind.LOGIN_FAILED,
                client_id=self.client_id,
                ip=self.ip,
                reason=failed.lockout.scope.value if failed.lockout is not None else None,
            )
            message = (
                _lockout_text(failed.lockout, self.locale)
                if failed.lockout is not None
                else translate(str(failed.message), self.locale)
            )
            return self._page(_password_page(self.transaction, login=login, error=message))
        await auth_events.record(
            AuthEventKind.LOGIN_SUCCEEDED, account_id=account.id, client_id=self.client_id, ip=self.ip
        )
        return await self._after_password(account)

    async def _after_password(self, account: UserAccount) -> Response:
        needed = await totp.second_factor_for(account)
        if needed is totp.SecondFactor.VERIFY:
            return self._page(_code_page(self._next(Stage.SECOND_FACTOR, account), account))
        if needed is totp.SecondFactor.ENROL:
            enrolment = await totp.begin_enrolment(account)
            step = self._next(Stage.ENROL, account, secret=enrolment.secret, uri=enrolment.otpauth_uri)
            return self._page(_code_page(step, account))
        return await self._after_second_factor(account)

    def _next(
        self, stage: str, account: UserAccount, *, secret: str | None = None, uri: str | None = None
    ) -> Transaction:
        return replace(
            self.transaction, stage=stage, account_id=account.id, enrol_secret=secret, enrol_uri=uri
        )

    async def second_factor(self, account: UserAccount, code: str) -> Response:
        throttle = _throttle(self.request)
        attempt = await throttle.reserve(account.login, self.ip)
        if isinstance(attempt, Lockout):
            await self._second_factor_failed(account, attempt.scope.value)
            return self._page(
                _code_page(self.transaction, account, error=_lockout_text(attempt, self.locale))
            )
        try:
            if self.transaction.stage == Stage.ENROL:
                await totp.confirm_enrolment(account, code)
                accepted = True
            else:
                accepted = await totp.verify_code(account, code)
        except InvalidInput:
            accepted = False
        if not accepted:
            lockout = await throttle.failed(attempt)
            await self._second_factor_failed(account, lockout.scope.value if lockout else None)
            message = (
                _lockout_text(lockout, self.locale) if lockout else translate(totp.WRONG_CODE, self.locale)
            )
            return self._page(_code_page(self.transaction, account, error=message))
        await throttle.succeeded(attempt)
        if self.transaction.stage == Stage.ENROL:
            await auth_events.record(
                AuthEventKind.SECOND_FACTOR_ENROLLED,
                account_id=account.id,
                client_id=self.client_id,
                ip=self.ip,
            )
        return await self._after_second_factor(account)

    async def _second_factor_failed(self, account: UserAccount, reason: str | None) -> None:
        await auth_events.record(
            AuthEventKind.SECOND_FACTOR_FAILED,
            account_id=account.id,
            client_id=self.client_id,
            ip=self.ip,
            reason=reason,
        )

    async def _after_second_factor(self, account: UserAccount) -> Response:
        try:
            principal = await principal_for(account, None)
        except InvalidInput:  # "Choose an institution."
            step = self._next(Stage.INSTITUTION, account)
            return self._page(await _institution_page(step, account))
        except DomainError:
            return self._page(_message_page(NOWHERE_TO_ACT, self.locale, 403))
        return await self._finish(account, principal.institution_id)

    async def institution(self, account: UserAccount, chosen: str) -> Response:
        institution_id = int(chosen) if chosen.isdigit() and len(chosen) < 19 else None
        try:
            if institution_id is None:
                raise InvalidInput(CHOOSE_HINT, field="institution")
            principal = await principal_for(account, institution_id)
        except DomainError:
            page = await _institution_page(
                self.transaction, account, error=translate(CHOOSE_HINT, self.locale), status=400
            )
            return self._page(page)
        return await self._finish(account, principal.institution_id)

    async def _finish(self, account: UserAccount, institution_id: int | None) -> Response:
        # A transaction ends once: a replayed final POST issues no second code.
        redis = self.request.app.state.redis
        first = await redis.set(
            f"{self.settings.redis_namespace}:authorize:spent:{self.transaction.nonce}",
            b"1",
            nx=True,
            ex=TRANSACTION_SECONDS,
        )
        if not first:
            return self._page(_message_page(TRANSACTION_INVALID, self.locale, 400))
        user = oauth.SignedIn(account_id=account.id, institution_id=institution_id)
        response = self.server.create_authorization_response(
            self.oauth_request, grant_user=user, grant=self.grant
        )
        await oauth.store_pending_codes(self.server)
        return response


def strings() -> Iterable[str]:
    """Every msgid of the page (tests check that each has a translation)."""
    return (*_STRINGS, "Yiyang")
